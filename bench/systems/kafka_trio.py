"""tidelog's own trio client against the tidelog broker, the same workloads as
`bench.systems.kafka_confluent`.

- produce: `await producer.send(...)` in a loop, one task (and one `Producer`) per producer.
  Latency is sampled: every 32nd record's future is awaited by a small task that records
  the time from `send` to acknowledgement with a weight of 32 (a task per record would cost
  more than the send itself).
- consume: `Consumer.assign` with `auto_offset_reset="earliest"`, `getmany` in a loop until
  the end offsets seen before the clock started, one task per consumer.
- e2e: paced producer tasks and consumer tasks in one trio run.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import trio

from bench.histogram import Histogram
from bench.processes import Server
from bench.workload import (
    FLUSH_GRACE_S,
    SETUP_TIMEOUT_S,
    STAMP_BYTES,
    Job,
    Outcome,
    Pacer,
    latency_ns,
    partitions_of,
    split,
    stamped,
)

if TYPE_CHECKING:
    from tidelog.client import Consumer, Producer, RecordFuture

LATENCY_SAMPLE_EVERY = 32
WARMUP_VALUE = bytes(STAMP_BYTES)
"""An e2e value stamped 0, sent to each partition before the clock starts; not counted."""
CONSUME_BATCH = 10_000
PROGRESS_EVERY = 1_000
BUFFER_MEMORY_BYTES = 256 * 1024 * 1024


class TidelogClient:
    name = "tidelog-client"
    modules = ("client",)

    def produce(self, server: Server, job: Job) -> Outcome:
        return trio.run(_produce, server, job)

    def consume(self, server: Server, job: Job) -> Outcome:
        return trio.run(_consume, server, job)

    def e2e(self, server: Server, job: Job) -> Outcome:
        return trio.run(_e2e, server, job)


def _producer(server: Server, job: Job) -> Producer:
    from tidelog.client import Producer

    workload = job.workload
    acks: Any = "all" if workload.acks == "all" else int(workload.acks)
    return Producer(
        bootstrap_servers=server.address,
        acks=acks,
        compression_type=workload.compression,
        linger_ms=workload.linger_ms,
        batch_size=workload.batch_bytes,
        buffer_memory=BUFFER_MEMORY_BYTES,
        delivery_timeout_ms=int((workload.duration_s + FLUSH_GRACE_S) * 1000),
    )


def _consumer(server: Server, job: Job) -> Consumer:
    from tidelog.client import Consumer

    return Consumer(
        bootstrap_servers=server.address,
        auto_offset_reset="earliest",
        max_poll_records=CONSUME_BATCH,
        fetch_max_wait_ms=100 if job.workload.kind == "e2e" else 500,
    )


async def _produce(server: Server, job: Job) -> Outcome:
    from tidelog.client import KafkaError

    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None
    futures: list[RecordFuture] = []

    async def watch(future: RecordFuture, sent_ns: int) -> None:
        with contextlib.suppress(KafkaError):  # failures are counted from `futures`
            await future
            histogram.record(time.monotonic_ns() - sent_ns, LATENCY_SAMPLE_EVERY)

    async def produce_share(producer: Producer, count: int, nursery: trio.Nursery) -> None:
        values, keys, topic = job.values, job.keys, job.stream
        value_count, key_count = len(values), len(keys)
        deadline = trio.current_time() + workload.duration_s
        send = producer.send
        keep = futures.append
        sent = 0
        while sent < count:
            if sent % PROGRESS_EVERY == 0:
                if trio.current_time() > deadline:
                    break
                job.progress.advance(PROGRESS_EVERY if sent else 0)
            key = keys[sent % key_count] if key_count else None
            future = await send(topic, values[sent % value_count], key)
            keep(future)
            if sent % LATENCY_SAMPLE_EVERY == 0:
                nursery.start_soon(watch, future, time.monotonic_ns())
            sent += 1
        with trio.move_on_after(FLUSH_GRACE_S):
            await producer.flush()

    async with contextlib.AsyncExitStack() as stack:
        producers = [_producer(server, job) for _ in range(workload.producers)]
        for producer in producers:
            await stack.enter_async_context(producer)
        with trio.fail_after(SETUP_TIMEOUT_S):
            partitions = len(await producers[0].partitions_for(job.stream))
        shares = split(workload.records, workload.producers)
        job.meter.start()
        async with trio.open_nursery() as nursery:
            for producer, share in zip(producers, shares, strict=True):
                nursery.start_soon(produce_share, producer, share, nursery)
        job.meter.stop()
    outcome.records = _count_deliveries(futures, outcome)
    outcome.payload_bytes = outcome.records * workload.value_bytes
    if partitions != workload.partitions:
        outcome.notes.append(f"topic has {partitions} partitions")
    return outcome


def _count_deliveries(futures: list[RecordFuture], outcome: Outcome) -> int:
    """How many of `futures` were acknowledged; the others count as `outcome` failures."""
    from tidelog.client import KafkaError

    delivered = 0
    for future in futures:
        if not future.done():
            outcome.fail("not acknowledged in time")
            continue
        try:
            future.result()
        except KafkaError as exc:
            outcome.fail(exc)
        else:
            delivered += 1
    return delivered


async def _consumers_with_shares(
    server: Server, job: Job, stack: contextlib.AsyncExitStack
) -> list[tuple[Consumer, list[Any], int]]:
    """Entered consumers (closed with `stack`), each with its share of the partitions and
    how many records those hold now."""
    from tidelog.client import TopicPartition

    workload = job.workload
    consumers = [
        _consumer(server, job) for _ in range(min(workload.consumers, workload.partitions))
    ]
    for consumer in consumers:
        await stack.enter_async_context(consumer)
    with trio.fail_after(SETUP_TIMEOUT_S):
        async with _producer(server, job) as probe:  # learns (or creates) the topic
            partitions = len(await probe.partitions_for(job.stream))
    shares = []
    for index, consumer in enumerate(consumers):
        assigned = [
            TopicPartition(job.stream, p) for p in partitions_of(index, len(consumers), partitions)
        ]
        with trio.fail_after(SETUP_TIMEOUT_S):
            beginning = await consumer.beginning_offsets(assigned)
            end = await consumer.end_offsets(assigned)
        shares.append((consumer, assigned, sum(end[tp] - beginning[tp] for tp in assigned)))
    return shares


async def _consume(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0)
    last_record_at = 0.0

    async def consume_share(consumer: Consumer, assigned: list[Any], expected: int) -> None:
        nonlocal last_record_at
        consumer.assign(assigned)
        deadline = trio.current_time() + workload.duration_s
        consumed = payload_bytes = 0
        while consumed < expected and trio.current_time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            received = 0
            for records in batches.values():
                received += len(records)
                for record in records:
                    payload_bytes += len(record.value or b"")
            if received:
                consumed += received
                job.progress.advance(received)
                last_record_at = time.perf_counter()
        outcome.records += consumed
        outcome.payload_bytes += payload_bytes

    async with contextlib.AsyncExitStack() as stack:
        shares = await _consumers_with_shares(server, job, stack)
        job.meter.start()
        async with trio.open_nursery() as nursery:
            for share in shares:
                nursery.start_soon(consume_share, *share)
        job.meter.stop(at=last_record_at or None)
    return outcome


async def _e2e(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None
    tails = [value[STAMP_BYTES:] for value in job.values]
    futures: list[RecordFuture] = []
    producing_done = trio.Event()
    all_received = trio.Event()
    warmed_up = trio.Event()
    warmups_seen = 0
    last_record_at = 0.0

    async def consume_share(consumer: Consumer, assigned: list[Any], partitions: int) -> None:
        nonlocal warmups_seen, last_record_at
        consumer.assign(assigned)
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now_ns = time.monotonic_ns()
            received = 0
            for records in batches.values():
                for record in records:
                    value = record.value or WARMUP_VALUE
                    if value[:STAMP_BYTES] == WARMUP_VALUE:
                        warmups_seen += 1
                        if warmups_seen == partitions:
                            warmed_up.set()
                        continue
                    histogram.record(latency_ns(value, now_ns))
                    outcome.payload_bytes += len(value)
                    received += 1
            if received:
                outcome.records += received
                job.progress.advance(received)
                last_record_at = time.perf_counter()
            if producing_done.is_set() and outcome.records >= (outcome.produced or 0):
                all_received.set()
                return

    async def produce_share(producer: Producer, count: int, rate: float) -> None:
        pacer = Pacer(rate, count, time.perf_counter())
        deadline = time.perf_counter() + workload.duration_s
        tail_count = len(tails)
        while not pacer.done:
            now = time.perf_counter()
            if now > deadline:
                break
            for _ in range(pacer.due(now)):
                futures.append(
                    await producer.send(job.stream, stamped(tails[pacer.sent % tail_count]))
                )
                pacer.sent += 1
            await trio.sleep(pacer.wait_s(time.perf_counter()))
        with trio.move_on_after(FLUSH_GRACE_S):
            await producer.flush()

    async with contextlib.AsyncExitStack() as stack:
        shares = await _consumers_with_shares(server, job, stack)
        producers = [_producer(server, job) for _ in range(workload.producers)]
        for producer in producers:
            await stack.enter_async_context(producer)
        with trio.fail_after(SETUP_TIMEOUT_S):
            partitions = len(await producers[0].partitions_for(job.stream))
        async with trio.open_nursery() as consumers:
            for consumer, assigned, _ in shares:
                consumers.start_soon(consume_share, consumer, assigned, partitions)
            with trio.fail_after(SETUP_TIMEOUT_S):
                for partition in range(partitions):
                    await producers[0].send(job.stream, WARMUP_VALUE, partition=partition)
                await producers[0].flush()
                await warmed_up.wait()
            job.meter.start()
            records_per_producer = split(workload.records, workload.producers)
            rate = workload.rate_per_s / workload.producers
            async with trio.open_nursery() as nursery:
                for producer, count in zip(producers, records_per_producer, strict=True):
                    nursery.start_soon(produce_share, producer, count, rate)
            outcome.produced = _count_deliveries(futures, outcome)
            producing_done.set()
            with trio.move_on_after(FLUSH_GRACE_S):
                await all_received.wait()
            consumers.cancel_scope.cancel()
        job.meter.stop(at=last_record_at or None)
    return outcome
