"""Redis Streams: `redis-server` with redis-py (hiredis parser).

Server: `redis-server --port P --bind 127.0.0.1 --dir <work> --save "" --appendonly yes
--appendfsync no`: every XADD is appended to the append-only file in the page cache and not
fsynced per write, which is what tidelog (no flush policy), RabbitMQ streams and JetStream
(fsync every 2 minutes) do by default; RDB snapshots are off so none runs during a
measurement. The stream itself is held in memory, as Redis always does.

A partition is a stream key (`<stream>:<p>`); a record is an entry with one field `v`.
- produce: pipelines of XADD (the workload's batch bytes, at most 10,000 records; no MULTI);
  latency is each pipeline's round trip, counted for every record in it.
- consume: XREAD COUNT 10000 over the consumer's keys from id 0, until XLEN before the
  clock.
- e2e: a paced producer thread (a pipeline per tick) and XREAD BLOCK consumer threads.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from bench.histogram import Histogram
from bench.processes import Server, executable, free_port, running, wait_for_port
from bench.systems import command_version
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
    run_paced_producers,
    run_threads,
    split,
    stamped,
)

PIPELINE_RECORDS_MAX = 10_000
READ_COUNT = 10_000
WARMUP_VALUE = bytes(STAMP_BYTES)
START_TIMEOUT_S = 30.0


def stream_key(stream: str, partition: int) -> str:
    return f"{stream}:{partition}"


class RedisStreams:
    name = "redis-streams"
    durability = (
        "stream in memory + append-only file in the page cache (appendfsync no), "
        "RDB snapshots off; XADD reply: in memory and written to the AOF buffer"
    )

    def __init__(self) -> None:
        self.clients = (RedisPy(),)

    def missing(self) -> str | None:
        return None if executable("redis-server") else "redis-server is not installed"

    def version(self) -> str | None:
        binary = executable("redis-server")
        text = None if binary is None else command_version([binary, "--version"])
        found = re.search(r"v=(\S+)", text or "")
        return found.group(1) if found else text

    @contextlib.contextmanager
    def start(self, work_dir: Path, partitions: int) -> Iterator[Server]:
        binary = executable("redis-server")
        assert binary is not None
        data_dir = work_dir / "redis"
        data_dir.mkdir()
        port = free_port()
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "no",
            "--protected-mode", "no", "--daemonize", "no",
        ]  # fmt: skip
        log_path = work_dir / "redis.log"
        with running("redis-server", argv, log_path) as process:
            wait_for_port(process, "127.0.0.1", port, START_TIMEOUT_S, log_path)
            yield Server("127.0.0.1", port, process.pid, data_dir)


def _connect(server: Server) -> Any:
    import redis

    return redis.Redis(
        host=server.host, port=server.port, socket_timeout=SETUP_TIMEOUT_S + FLUSH_GRACE_S
    )


class RedisPy:
    name = "redis-py"
    modules = ("redis", "hiredis")

    def produce(self, server: Server, job: Job) -> Outcome:
        workload = job.workload
        outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
        lock = threading.Lock()
        connections = [_connect(server) for _ in range(workload.producers)]
        try:
            connections[0].ping()
            counts = split(workload.records, workload.producers)
            starts = [sum(counts[:index]) for index in range(len(counts))]

            chunk = max(1, min(PIPELINE_RECORDS_MAX, workload.batch_bytes // workload.value_bytes))

            def produce_share(connection: Any, start: int, count: int) -> None:
                histogram = Histogram()
                delivered = 0
                deadline = time.perf_counter() + workload.duration_s
                pipeline = connection.pipeline(transaction=False)
                for partition, values in record_chunks(job, start, count, chunk):
                    if time.perf_counter() > deadline:
                        break
                    key = stream_key(job.stream, partition)
                    for value in values:
                        pipeline.xadd(key, {"v": value})
                    sent_ns = time.monotonic_ns()
                    replies = pipeline.execute(raise_on_error=False)
                    histogram.record(time.monotonic_ns() - sent_ns, len(values))
                    errors = [reply for reply in replies if isinstance(reply, Exception)]
                    delivered += len(replies) - len(errors)
                    job.progress.advance(len(values))
                    if errors:
                        with lock:
                            outcome.fail(errors[0], len(errors))
                with lock:
                    assert outcome.latency is not None
                    outcome.latency.merge(histogram)
                    outcome.records += delivered

            job.meter.start()
            run_threads(
                [
                    partial(produce_share, connection, start, count)
                    for connection, start, count in zip(connections, starts, counts, strict=True)
                ]
            )
            job.meter.stop()
        finally:
            for connection in connections:
                connection.close()
        outcome.payload_bytes = outcome.records * workload.value_bytes
        return outcome

    def consume(self, server: Server, job: Job) -> Outcome:
        workload = job.workload
        outcome = Outcome(records=0, payload_bytes=0)
        lock = threading.Lock()
        consumer_count = min(workload.consumers, workload.partitions)
        connections = [_connect(server) for _ in range(consumer_count)]
        last_record_at = [0.0]
        try:
            plans = []
            for index, connection in enumerate(connections):
                keys = [
                    stream_key(job.stream, p)
                    for p in partitions_of(index, consumer_count, workload.partitions)
                ]
                plans.append((connection, keys, sum(connection.xlen(key) for key in keys)))

            def consume_share(connection: Any, keys: list[str], expected: int) -> None:
                positions: dict[str, bytes | str] = dict.fromkeys(keys, "0-0")
                deadline = time.perf_counter() + workload.duration_s
                consumed = payload_bytes = 0
                while consumed < expected and time.perf_counter() < deadline:
                    reply = connection.xread(positions, count=READ_COUNT, block=200)
                    for key, entries in reply or ():
                        for _, fields in entries:
                            payload_bytes += len(fields[b"v"])
                        positions[key.decode()] = entries[-1][0]
                        consumed += len(entries)
                        job.progress.advance(len(entries))
                    if reply:
                        last_record_at[0] = time.perf_counter()
                with lock:
                    outcome.records += consumed
                    outcome.payload_bytes += payload_bytes

            job.meter.start()
            run_threads([partial(consume_share, *plan) for plan in plans])
            job.meter.stop(at=last_record_at[0] or None)
        finally:
            for connection in connections:
                connection.close()
        return outcome

    def e2e(self, server: Server, job: Job) -> Outcome:
        workload = job.workload
        outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
        lock = threading.Lock()
        consumer_count = min(workload.consumers, workload.partitions)
        producers = [_connect(server) for _ in range(workload.producers)]
        consumers = [_connect(server) for _ in range(consumer_count)]
        tails = [value[STAMP_BYTES:] for value in job.values]
        producing_done = threading.Event()
        warmed_up = threading.Semaphore(0)
        hard_deadline = time.perf_counter() + workload.duration_s + FLUSH_GRACE_S + 10.0
        last_record_at = [0.0]

        def consume_share(connection: Any, keys: list[str]) -> None:
            positions: dict[str, bytes | str] = dict.fromkeys(keys, "0-0")
            while time.perf_counter() < hard_deadline:
                reply = connection.xread(positions, count=READ_COUNT, block=50)
                now_ns = time.monotonic_ns()
                histogram = Histogram()
                received = payload_bytes = 0
                for key, entries in reply or ():
                    positions[key.decode()] = entries[-1][0]
                    for _, fields in entries:
                        value = fields[b"v"]
                        if value[:STAMP_BYTES] == WARMUP_VALUE:
                            warmed_up.release()
                            continue
                        histogram.record(latency_ns(value, now_ns))
                        received += 1
                        payload_bytes += len(value)
                with lock:
                    if received:
                        outcome.records += received
                        outcome.payload_bytes += payload_bytes
                        assert outcome.latency is not None
                        outcome.latency.merge(histogram)
                        last_record_at[0] = time.perf_counter()
                    assert outcome.produced is not None
                    if producing_done.is_set() and outcome.records >= outcome.produced:
                        return
                job.progress.advance(received)

        def produce_share(connection: Any, count: int, rate: float) -> None:
            pacer = Pacer(rate, count, time.perf_counter())
            deadline = time.perf_counter() + workload.duration_s
            pipeline = connection.pipeline(transaction=False)
            tail_count = len(tails)
            delivered = 0
            first_error = None
            while not pacer.done and time.perf_counter() <= deadline:
                due = pacer.due(time.perf_counter())
                for _ in range(due):
                    partition = pacer.sent % workload.partitions
                    value = stamped(tails[pacer.sent % tail_count])
                    pipeline.xadd(stream_key(job.stream, partition), {"v": value})
                    pacer.sent += 1
                if due:
                    replies = pipeline.execute(raise_on_error=False)
                    for reply in replies:
                        if isinstance(reply, Exception):
                            first_error = first_error or reply
                        else:
                            delivered += 1
                time.sleep(pacer.wait_s(time.perf_counter()))
            with lock:
                assert outcome.produced is not None
                outcome.produced += delivered
                if first_error is not None:
                    outcome.fail(first_error, pacer.sent - delivered)

        threads = [
            threading.Thread(
                target=consume_share,
                args=(
                    connection,
                    [
                        stream_key(job.stream, p)
                        for p in partitions_of(index, consumer_count, workload.partitions)
                    ],
                ),
            )
            for index, connection in enumerate(consumers)
        ]
        try:
            for thread in threads:
                thread.start()
            try:
                for partition in range(workload.partitions):
                    producers[0].xadd(stream_key(job.stream, partition), {"v": WARMUP_VALUE})
                for _ in range(workload.partitions):
                    if not warmed_up.acquire(timeout=SETUP_TIMEOUT_S):
                        raise RuntimeError("consumers did not see the warm-up records")
                run_paced_producers(job, producers, produce_share)
            finally:
                producing_done.set()
                for thread in threads:
                    thread.join()
            job.meter.stop(at=last_record_at[0] or None)
        finally:
            for connection in [*producers, *consumers]:
                connection.close()
        return outcome
