"""RabbitMQ streams: `rabbitmq-server` with the stream plugin, client rstream.

Server: a node of its own (`RABBITMQ_NODENAME`, ports, mnesia and log directories, enabled
plugins file and config file under the work directory, `HOME` there too for the Erlang
cookie), with an `epmd` of its own on its own port, started first and stopped last by pid,
so that nothing outlives the benchmark. The config opens AMQP and the stream protocol on
127.0.0.1 only. Streams write their segment files in the page cache without an fsync per
write (osiris' default); a publish confirm means the stream stored the message.

A partition is a stream (`<stream>-<p>`). Before the clock starts, each producer publishes
one warm-up record (8 zero bytes, skipped by consumers) to each partition, since rstream sets
up a publisher on its first send.
- produce: `Producer.send_batch` of the workload's batch bytes (within the 1 MiB frame)
  with a confirm callback, up to 100,000 unconfirmed; latency from the batch send to the
  confirm, sampled (see `_Confirms`).
- consume: `Consumer.subscribe` from the first offset, one subscription per partition,
  until the records produced have arrived.
- e2e: a paced producer (a batch per tick) and subscriptions, in one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.histogram import Histogram
from bench.processes import Server, executable, free_port, running, wait_for_port
from bench.systems import AsyncioAdapter
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

DEBIAN_SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""Debian's package puts a wrapper on PATH that switches to the rabbitmq user (which could
not write our data directory); the script it wraps starts the node as the current user."""
BATCH_RECORDS_MAX = 10_000
LATENCY_SAMPLE_EVERY = 32
FRAME_BYTES = 1024 * 1024
CONFIRM_WINDOW = 100_000
WARMUP_VALUE = bytes(STAMP_BYTES)
START_TIMEOUT_S = 60.0
PROGRESS_EVERY = 1_000
USERNAME = PASSWORD = "guest"


def stream_name(stream: str, partition: int) -> str:
    return f"{stream}-{partition}"


def server_script() -> str | None:
    override = os.environ.get("TIDELOG_BENCH_RABBITMQ_SERVER")
    if override:
        return override
    if DEBIAN_SERVER_SCRIPT.is_file():
        return str(DEBIAN_SERVER_SCRIPT)
    return executable("rabbitmq-server")


class RabbitMqStreams:
    name = "rabbitmq-streams"
    durability = (
        "stream segments in the page cache, no fsync per write (osiris default); "
        "publish confirm: the stream stored it"
    )

    def __init__(self) -> None:
        self.clients = (RSTREAM,)
        self._version: str | None = None

    def version(self) -> str | None:
        return self._version

    def missing(self) -> str | None:
        if server_script() is None:
            return "rabbitmq-server is not installed"
        if executable("epmd") is None:
            return "epmd (Erlang) is not installed"
        return None

    @contextlib.contextmanager
    def start(self, work_dir: Path, partitions: int) -> Iterator[Server]:
        script, epmd = server_script(), executable("epmd")
        assert script is not None and epmd is not None
        base = work_dir / "rabbitmq"
        for name in ("mnesia", "log", "home"):
            (base / name).mkdir(parents=True)
        epmd_port, amqp_port, stream_port, dist_port = (free_port() for _ in range(4))
        (base / "enabled_plugins").write_text("[rabbitmq_stream].\n")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
            f"stream.listeners.tcp.default = 127.0.0.1:{stream_port}\n"
        )
        (base / "rabbitmq-env.conf").write_text("")
        env = {
            **os.environ,
            "HOME": str(base / "home"),
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_NODENAME": f"tidelog-bench-{stream_port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }
        epmd_argv = [epmd, "-port", str(epmd_port), "-address", "127.0.0.1"]
        epmd_log = work_dir / "epmd.log"
        with running("epmd", epmd_argv, epmd_log, env=env) as epmd_process:
            wait_for_port(epmd_process, "127.0.0.1", epmd_port, START_TIMEOUT_S, epmd_log)
            log_path = work_dir / "rabbitmq.log"
            with running("rabbitmq-server", [script], log_path, env=env, cwd=base) as process:
                wait_for_port(process, "127.0.0.1", stream_port, START_TIMEOUT_S, log_path)
                found = re.search(r"RabbitMQ (\d+\.\d+\.\d+)", log_path.read_text(errors="replace"))
                self._version = found.group(1) if found else None
                yield Server("127.0.0.1", stream_port, process.pid, base / "mnesia")


def _batch_records(value_bytes: int, batch_bytes: int) -> int:
    """Records per publish frame: `batch_bytes` worth, within the frame size (12 bytes of
    framing per message: publishing id and length; 1 KiB left for the frame header)."""
    limit_bytes = min(batch_bytes, FRAME_BYTES - 1024)
    return max(1, min(BATCH_RECORDS_MAX, limit_bytes // (value_bytes + 12)))


@contextlib.asynccontextmanager
async def _producer(server: Server, job: Job) -> Any:
    """A producer whose streams exist and whose publishers are set up: a warm-up record
    (`WARMUP_VALUE`, which consumers skip) has been published to every partition."""
    from rstream import Producer

    producer = Producer(
        server.host, server.port, username=USERNAME, password=PASSWORD, frame_max=FRAME_BYTES
    )
    async with producer:
        for partition in range(job.workload.partitions):
            name = stream_name(job.stream, partition)
            await producer.create_stream(name, exists_ok=True)
            await producer.send_wait(name, WARMUP_VALUE, timeout=int(SETUP_TIMEOUT_S))
        yield producer


class _Confirms:
    """Publish confirms of one producer: counts, sampled latency, and a window of
    unconfirmed records that `wait_for_room` keeps below CONFIRM_WINDOW. Every 32nd record's
    latency is recorded with a weight of 32: the callback runs once per record, and a
    histogram update each time would be a fifth of the client's work."""

    def __init__(self, histogram: Histogram | None) -> None:
        self.sent_ns: dict[int, int] = {}
        self.sent = 0
        self.confirmed = 0
        self.failed = 0
        self.first_error: str | None = None
        self._histogram = histogram
        self._room = asyncio.Event()
        self._room.set()

    @property
    def unconfirmed(self) -> int:
        return self.sent - self.confirmed - self.failed

    def track(self, publishing_ids: list[int], sent_ns: int) -> None:
        self.sent += len(publishing_ids)
        if self._histogram is not None:
            for publishing_id in publishing_ids:
                if publishing_id % LATENCY_SAMPLE_EVERY == 0:
                    self.sent_ns[publishing_id] = sent_ns
        if self.unconfirmed >= CONFIRM_WINDOW:
            self._room.clear()

    def on_confirm(self, status: Any) -> None:
        if status.is_confirmed:
            self.confirmed += 1
            if status.message_id % LATENCY_SAMPLE_EVERY == 0 and self._histogram is not None:
                sent_ns = self.sent_ns.pop(status.message_id, None)
                if sent_ns is not None:
                    self._histogram.record(time.monotonic_ns() - sent_ns, LATENCY_SAMPLE_EVERY)
        else:
            self.failed += 1
            self.first_error = self.first_error or f"publish error {status.response_code}"
        if self.unconfirmed < CONFIRM_WINDOW:
            self._room.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def wait_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.unconfirmed > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # confirms arrive on rstream's reader task


async def _produce(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
    batch_records = _batch_records(workload.value_bytes, workload.batch_bytes)

    async def produce_share(producer: Any, start: int, count: int) -> _Confirms:
        confirms = _Confirms(outcome.latency)
        deadline = time.perf_counter() + workload.duration_s
        for partition, values in record_chunks(job, start, count, batch_records):
            if time.perf_counter() > deadline:
                break
            await confirms.wait_for_room()
            sent_ns = time.monotonic_ns()
            ids = await producer.send_batch(
                stream_name(job.stream, partition), values, on_publish_confirm=confirms.on_confirm
            )
            confirms.track(ids, sent_ns)
            job.progress.advance(len(values))
        await confirms.wait_all(FLUSH_GRACE_S)
        return confirms

    async with contextlib.AsyncExitStack() as stack:
        producers = [
            await stack.enter_async_context(_producer(server, job))
            for _ in range(workload.producers)
        ]
        counts = split(workload.records, workload.producers)
        starts = [sum(counts[:index]) for index in range(len(counts))]
        job.meter.start()
        results = await asyncio.gather(
            *(
                produce_share(producer, start, count)
                for producer, start, count in zip(producers, starts, counts, strict=True)
            )
        )
        job.meter.stop()
    for confirms in results:
        outcome.records += confirms.confirmed
        if confirms.failed:
            outcome.fail(confirms.first_error, confirms.failed)
    outcome.payload_bytes = outcome.records * workload.value_bytes
    return outcome


async def _subscribe(
    server: Server, job: Job, stack: contextlib.AsyncExitStack, on_message: Any
) -> None:
    """A consumer per `consumers`, subscribed from the first offset to its partitions."""
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType

    workload = job.workload
    consumer_count = min(workload.consumers, workload.partitions)
    for index in range(consumer_count):
        consumer = Consumer(
            server.host, server.port, username=USERNAME, password=PASSWORD, frame_max=FRAME_BYTES
        )
        await stack.enter_async_context(consumer)
        for partition in partitions_of(index, consumer_count, workload.partitions):
            await consumer.subscribe(
                stream_name(job.stream, partition),
                on_message,
                offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
            )


async def _consume(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0)
    done = asyncio.Event()
    last_record_at = 0.0

    def on_message(message: bytes, context: Any) -> None:
        nonlocal last_record_at
        if message == WARMUP_VALUE:
            return
        outcome.records += 1
        outcome.payload_bytes += len(message)
        if outcome.records % PROGRESS_EVERY == 0:
            job.progress.advance(PROGRESS_EVERY)
        if outcome.records >= job.expected:
            last_record_at = time.perf_counter()
            done.set()

    async with contextlib.AsyncExitStack() as stack:
        job.meter.start()
        await _subscribe(server, job, stack, on_message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), workload.duration_s)
        job.meter.stop(at=last_record_at or None)
    return outcome


async def _e2e(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None
    tails = [value[STAMP_BYTES:] for value in job.values]
    warmups_seen = 0
    warmed_up = asyncio.Event()
    producing_done = False
    all_received = asyncio.Event()
    last_record_at = 0.0

    def on_message(message: bytes, context: Any) -> None:
        nonlocal warmups_seen, last_record_at
        if message == WARMUP_VALUE:
            warmups_seen += 1
            if warmups_seen == workload.partitions * workload.producers:
                warmed_up.set()
            return
        histogram.record(latency_ns(message, time.monotonic_ns()))
        outcome.records += 1
        outcome.payload_bytes += len(message)
        last_record_at = time.perf_counter()
        if outcome.records % PROGRESS_EVERY == 0:
            job.progress.advance(PROGRESS_EVERY)
        if producing_done and outcome.records >= (outcome.produced or 0):
            all_received.set()

    async def produce_share(producer: Any, count: int, rate: float) -> _Confirms:
        confirms = _Confirms(None)
        pacer = Pacer(rate, count, time.perf_counter())
        deadline = time.perf_counter() + workload.duration_s
        tail_count = len(tails)
        while not pacer.done and time.perf_counter() <= deadline:
            due = pacer.due(time.perf_counter())
            by_partition: dict[int, list[bytes]] = {}
            for _ in range(due):
                by_partition.setdefault(pacer.sent % workload.partitions, []).append(
                    stamped(tails[pacer.sent % tail_count])
                )
                pacer.sent += 1
            for partition, values in by_partition.items():
                ids = await producer.send_batch(
                    stream_name(job.stream, partition),
                    values,
                    on_publish_confirm=confirms.on_confirm,
                )
                confirms.track(ids, 0)
            await asyncio.sleep(pacer.wait_s(time.perf_counter()))
        await confirms.wait_all(FLUSH_GRACE_S)
        return confirms

    async with contextlib.AsyncExitStack() as stack:
        producers = [
            await stack.enter_async_context(_producer(server, job))
            for _ in range(workload.producers)
        ]
        await _subscribe(server, job, stack, on_message)
        await asyncio.wait_for(warmed_up.wait(), SETUP_TIMEOUT_S)
        counts = split(workload.records, workload.producers)
        rate = workload.rate_per_s / workload.producers
        job.meter.start()
        results = await asyncio.gather(
            *(
                produce_share(producer, count, rate)
                for producer, count in zip(producers, counts, strict=True)
            )
        )
        for confirms in results:
            outcome.produced = (outcome.produced or 0) + confirms.confirmed
            if confirms.failed:
                outcome.fail(confirms.first_error, confirms.failed)
        producing_done = True
        if outcome.records >= (outcome.produced or 0):
            all_received.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), FLUSH_GRACE_S)
        job.meter.stop(at=last_record_at or None)
    return outcome


RSTREAM = AsyncioAdapter("rstream", ("rstream",), _produce, _consume, _e2e)
