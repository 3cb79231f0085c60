"""confluent-kafka (librdkafka) against the tidelog broker.

- produce: `Producer.produce` as fast as the local queue takes records (linger and batch
  size from the workload, a queue that holds the whole run), one thread per producer.
  Latency is librdkafka's own per-record figure, from `produce()` to the acknowledgement: at
  saturation that is mostly time queued behind earlier records, as in Kafka's
  producer-perf-test without a throttle.
- consume: `Consumer.assign` from offset 0 (the broker does not serve groups yet: `group.id`
  is there because librdkafka wants one; nothing is committed), one thread per consumer, each
  with its round-robin share of the partitions, until it has read up to the high watermarks.
- e2e: paced producer threads and consumer threads at once; see `bench.workload`.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

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
    run_paced_producers,
    run_threads,
    split,
    stamped,
)

WARMUP_VALUE = bytes(STAMP_BYTES)
"""An e2e value stamped 0: sent to every partition before the clock starts, so that the
consumers are fetching when it does; not counted."""
CONSUME_BATCH = 10_000
POLL_EVERY = 1_000
PROGRESS_EVERY = 1_000


class ConfluentKafka:
    name = "confluent-kafka"
    modules = ("confluent_kafka",)

    def produce(self, server: Server, job: Job) -> Outcome:
        import confluent_kafka

        workload = job.workload
        producers = [_producer(server, job) for _ in range(workload.producers)]
        outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
        try:
            partitions = _partition_count(producers[0], job.stream)
            lock = threading.Lock()
            values, keys, topic = job.values, job.keys, job.stream

            def produce_share(producer: confluent_kafka.Producer, count: int) -> None:
                histogram = Histogram()
                errors: list[str] = []
                record = histogram.record

                def on_delivery(error: Any, message: Any) -> None:
                    if error is None:
                        record(int(message.latency() * 1e9))
                    else:
                        errors.append(str(error))

                produce = producer.produce
                poll = producer.poll
                deadline = time.perf_counter() + workload.duration_s
                value_count, key_count = len(values), len(keys)
                produced = 0
                while produced < count:
                    if produced % POLL_EVERY == 0:
                        if time.perf_counter() > deadline:
                            break
                        poll(0)
                        job.progress.advance(POLL_EVERY if produced else 0)
                    key = keys[produced % key_count] if key_count else None
                    try:
                        produce(topic, values[produced % value_count], key, on_delivery=on_delivery)
                    except BufferError:  # the local queue is full: let deliveries drain it
                        poll(0.01)
                        continue
                    produced += 1
                unsent = producer.flush(FLUSH_GRACE_S)
                with lock:
                    assert outcome.latency is not None
                    outcome.latency.merge(histogram)
                    outcome.records += histogram.count
                    for error in errors:
                        outcome.fail(error)
                    if unsent:
                        outcome.fail("flush timed out", unsent)

            shares = split(workload.records, workload.producers)
            job.meter.start()
            run_threads(
                [
                    partial(produce_share, producer, share)
                    for producer, share in zip(producers, shares, strict=True)
                ]
            )
            job.meter.stop()
        finally:
            for producer in producers:
                producer.flush(0)
        outcome.payload_bytes = outcome.records * workload.value_bytes
        if partitions != workload.partitions:
            outcome.notes.append(f"topic has {partitions} partitions")
        return outcome

    def consume(self, server: Server, job: Job) -> Outcome:
        import confluent_kafka

        workload = job.workload
        consumers = [_consumer(server) for _ in range(min(workload.consumers, workload.partitions))]
        outcome = Outcome(records=0, payload_bytes=0)
        lock = threading.Lock()
        last_record_at = [0.0]
        try:
            partitions = _partition_count(consumers[0], job.stream)
            plans: list[tuple[confluent_kafka.Consumer, list[Any], int]] = []
            for index, consumer in enumerate(consumers):
                assigned = [
                    confluent_kafka.TopicPartition(job.stream, p, 0)
                    for p in partitions_of(index, len(consumers), partitions)
                ]
                expected = 0
                for tp in assigned:
                    low, high = consumer.get_watermark_offsets(tp, timeout=SETUP_TIMEOUT_S)
                    expected += high - low
                plans.append((consumer, assigned, expected))

            def consume_share(
                consumer: confluent_kafka.Consumer, assigned: list[Any], expected: int
            ) -> None:
                deadline = time.perf_counter() + workload.duration_s
                consumer.assign(assigned)
                consumed = payload_bytes = errors = 0
                first_error = None
                while consumed < expected and time.perf_counter() < deadline:
                    messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2)
                    for message in messages:
                        if message.error() is not None:
                            errors += 1
                            first_error = first_error or str(message.error())
                            continue
                        payload_bytes += len(message.value() or b"")
                        consumed += 1
                    if messages:
                        job.progress.advance(len(messages))
                        with lock:
                            last_record_at[0] = max(last_record_at[0], time.perf_counter())
                with lock:
                    outcome.records += consumed
                    outcome.payload_bytes += payload_bytes
                    if errors:
                        outcome.fail(first_error, errors)

            job.meter.start()
            run_threads([partial(consume_share, *plan) for plan in plans])
            job.meter.stop(at=last_record_at[0] or None)
        finally:
            for consumer in consumers:
                consumer.close()
        return outcome

    def e2e(self, server: Server, job: Job) -> Outcome:
        import confluent_kafka

        workload = job.workload
        producers = [_producer(server, job) for _ in range(workload.producers)]
        consumers = [_consumer(server) for _ in range(min(workload.consumers, workload.partitions))]
        outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
        lock = threading.Lock()
        producing_done = threading.Event()
        tails = [value[STAMP_BYTES:] for value in job.values]
        try:
            partitions = _partition_count(producers[0], job.stream)
            assignments = [
                [
                    confluent_kafka.TopicPartition(job.stream, p, 0)
                    for p in partitions_of(index, len(consumers), partitions)
                ]
                for index in range(len(consumers))
            ]
            warmed_up = threading.Semaphore(0)
            hard_deadline = time.perf_counter() + workload.duration_s + FLUSH_GRACE_S + 10.0
            last_record_at = [0.0]

            def consume_share(consumer: confluent_kafka.Consumer, assigned: list[Any]) -> None:
                # `poll` returns as soon as a record is there; `consume(n, timeout)` would
                # wait for n records or the whole timeout, which is latency of its own.
                consumer.assign(assigned)
                poll = consumer.poll
                histogram = Histogram()
                received = payload_bytes = 0
                while time.perf_counter() < hard_deadline:
                    message = poll(0.05)
                    now_ns = time.monotonic_ns()
                    if message is not None:
                        value = message.value()
                        if message.error() is not None or value is None:
                            with lock:
                                outcome.fail(message.error())
                        elif value[:STAMP_BYTES] == WARMUP_VALUE:
                            warmed_up.release()
                        else:
                            histogram.record(latency_ns(value, now_ns))
                            received += 1
                            payload_bytes += len(value)
                    if received >= PROGRESS_EVERY or (message is None and received):
                        job.progress.advance(received)
                        last_record_at[0] = time.perf_counter()
                        with lock:
                            outcome.records += received
                            outcome.payload_bytes += payload_bytes
                            assert outcome.latency is not None
                            outcome.latency.merge(histogram)
                        histogram = Histogram()
                        received = payload_bytes = 0
                    if message is None and producing_done.is_set():
                        with lock:
                            assert outcome.produced is not None
                            if outcome.records >= outcome.produced:
                                break

            def produce_share(producer: confluent_kafka.Producer, count: int, rate: float) -> None:
                errors: list[str] = []
                delivered = [0]

                def on_delivery(error: Any, message: Any) -> None:
                    if error is None:
                        delivered[0] += 1
                    else:
                        errors.append(str(error))

                pacer = Pacer(rate, count, time.perf_counter())
                deadline = time.perf_counter() + workload.duration_s
                tail_count = len(tails)
                while not pacer.done:
                    now = time.perf_counter()
                    if now > deadline:
                        break
                    for _ in range(pacer.due(now)):
                        value = stamped(tails[pacer.sent % tail_count])
                        producer.produce(job.stream, value, on_delivery=on_delivery)
                        pacer.sent += 1
                    producer.poll(0)
                    time.sleep(pacer.wait_s(time.perf_counter()))
                unsent = producer.flush(FLUSH_GRACE_S)
                with lock:
                    assert outcome.produced is not None
                    outcome.produced += delivered[0]
                    for error in errors:
                        outcome.fail(error)
                    if unsent:
                        outcome.fail("flush timed out", unsent)

            consumer_threads = [
                threading.Thread(target=consume_share, args=(consumer, assigned))
                for consumer, assigned in zip(consumers, assignments, strict=True)
            ]
            for thread in consumer_threads:
                thread.start()
            try:
                for partition in range(partitions):
                    producers[0].produce(job.stream, WARMUP_VALUE, partition=partition)
                producers[0].flush(SETUP_TIMEOUT_S)
                for _ in range(partitions):
                    if not warmed_up.acquire(timeout=SETUP_TIMEOUT_S):
                        raise RuntimeError("consumers did not see the warm-up records")
                run_paced_producers(job, producers, produce_share)
            finally:
                producing_done.set()
                for thread in consumer_threads:
                    thread.join()
            job.meter.stop(at=last_record_at[0] or None)
        finally:
            for consumer in consumers:
                consumer.close()
        return outcome


def _client_config(server: Server) -> dict[str, Any]:
    return {"bootstrap.servers": server.address, "broker.address.family": "v4"}


def _producer(server: Server, job: Job) -> Any:
    import confluent_kafka

    workload = job.workload
    return confluent_kafka.Producer(
        {
            **_client_config(server),
            "acks": workload.acks,
            "compression.type": workload.compression,
            "linger.ms": workload.linger_ms,
            "batch.size": workload.batch_bytes,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
            "enable.idempotence": False,
            "message.timeout.ms": int((workload.duration_s + FLUSH_GRACE_S) * 1000),
        }
    )


def _consumer(server: Server) -> Any:
    import confluent_kafka

    return confluent_kafka.Consumer(
        {
            **_client_config(server),
            "group.id": "tidelog-bench-unused",
            "enable.auto.commit": False,
            # Once the local queue holds queued.min.messages, librdkafka pauses fetching for
            # this long (1 s by default), which would measure the pause, not the broker.
            "fetch.queue.backoff.ms": 10,
            # An e2e consumer waits for each record; its fetch returns as soon as one is there.
            "fetch.wait.max.ms": 100,
        }
    )


def _partition_count(client: Any, topic: str) -> int:
    """Ask for `topic`'s metadata (which auto-creates it) and return its partition count."""
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        metadata = client.list_topics(topic, timeout=SETUP_TIMEOUT_S)
        topic_metadata = metadata.topics.get(topic)
        if (
            topic_metadata is not None
            and topic_metadata.error is None
            and topic_metadata.partitions
        ):
            return len(topic_metadata.partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} has no usable metadata: {topic_metadata}")
        time.sleep(0.05)  # the broker is still creating the topic; ask again
