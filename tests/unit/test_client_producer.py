"""Producer behaviour against the scripted in-memory broker (tests/unit/client_fake_broker)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from tests.unit.client_fake_broker import FakeBroker, Fault
from tidelog.client.errors import (
    ClientClosedError,
    IncompatibleBrokerError,
    KafkaTimeoutError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.partitioner import murmur2_partition
from tidelog.client.producer import Producer, RecordFuture
from tidelog.client.structs import TopicPartition

TIMEOUT_S = 10


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBroker:
    broker = FakeBroker(topics={"t": 3, "one": 1})
    await nursery.start(broker.serve)
    return broker


def producer(fake: FakeBroker, **config: Any) -> Producer:
    config.setdefault("bootstrap_servers", f"{fake.host}:{fake.port}")
    config.setdefault("linger_ms", 0)
    return Producer(connector=fake.connect, rng=random.Random(1), **config)


def produce_requests(fake: FakeBroker) -> list[dict[str, Any]]:
    return [body for key, _, body in fake.requests if key == 0]


async def test_records_arrive_in_order_with_their_offsets(fake: FakeBroker) -> None:
    futures: list[tuple[bytes, RecordFuture]] = []
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, linger_ms=5) as p:
            for i in range(300):
                key = f"key-{i % 17}".encode()
                futures.append((key, await p.send("t", f"v{i}".encode(), key=key)))
            results = [(key, await future) for key, future in futures]
    for (key, metadata), i in zip(results, range(300), strict=True):
        assert metadata.partition == murmur2_partition(key, 3)
        tp = TopicPartition("t", metadata.partition)
        assert fake.logs[tp][metadata.offset].value == f"v{i}".encode()
    for partition in range(3):
        values = fake.values(TopicPartition("t", partition))
        sent = [
            f"v{i}".encode()
            for i in range(300)
            if murmur2_partition(f"key-{i % 17}".encode(), 3) == partition
        ]
        assert values == sent


async def test_init_producer_id_is_retried_after_a_backoff(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    # COORDINATOR_NOT_AVAILABLE (15) is retriable: the producer backs off between attempts
    # (sleeping, not spinning) and then sends with the id it gets.
    fake.init_producer_id_faults.extend([15, 15])
    start = trio.current_time()
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, retry_backoff_ms=100) as p:
            metadata = await p.send_and_wait("one", b"v")
    attempts = [body for key, _, body in fake.requests if key == 22]
    assert len(attempts) == 3
    assert trio.current_time() - start >= 0.1  # at least one backoff was waited out
    assert fake.values(TopicPartition("one", metadata.partition)) == [b"v"]


async def test_linger_collects_records_into_one_request(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with producer(fake, linger_ms=50) as p:
        futures = [await p.send("one", b"x%d" % i) for i in range(20)]
        await trio.sleep(0.01)
        assert not any(f.done() for f in futures)  # still lingering
        for f in futures:
            await f
    (request,) = produce_requests(fake)
    assert request["acks"] == -1
    assert fake.values(TopicPartition("one", 0)) == [b"x%d" % i for i in range(20)]


async def test_flush_returns_only_when_everything_is_acknowledged(fake: FakeBroker) -> None:
    fake.produce_faults.append(Fault.HOLD)
    async with producer(fake, linger_ms=60_000) as p:
        futures = [await p.send("one", b"%d" % i) for i in range(5)]
        flushed = trio.Event()

        async def flush() -> None:
            await p.flush()
            flushed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            with trio.fail_after(TIMEOUT_S):
                while not produce_requests(fake):
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert not flushed.is_set() and not any(f.done() for f in futures)
            fake.release.set()
        assert all(f.done() for f in futures)
        assert [(await f).offset for f in futures] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fault", [Fault.DROP_AFTER_APPEND, Fault.DROP_BEFORE_APPEND])
async def test_idempotent_retry_after_a_dropped_connection_writes_each_record_once(
    fake: FakeBroker, fault: Fault
) -> None:
    fake.produce_faults.extend([None, fault, None, fault])  # type: ignore[list-item]
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, batch_size=200, retry_backoff_ms=1) as p:
            futures = [await p.send("one", b"record-%03d" % i) for i in range(200)]
            offsets = [(await f).offset for f in futures]
    assert fake.values(TopicPartition("one", 0)) == [b"record-%03d" % i for i in range(200)]
    assert offsets == list(range(200))
    assert fake.connections >= 3  # bootstrap, then reconnects after each drop


async def test_without_idempotence_a_lost_response_duplicates(fake: FakeBroker) -> None:
    fake.produce_faults.append(Fault.DROP_AFTER_APPEND)
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, enable_idempotence=False, retry_backoff_ms=1) as p:
            await p.send_and_wait("one", b"only-once?")
    assert fake.values(TopicPartition("one", 0)) == [b"only-once?", b"only-once?"]


async def test_not_leader_refreshes_metadata_and_retries(fake: FakeBroker) -> None:
    fake.produce_faults.extend([Fault.NOT_LEADER, Fault.NOT_LEADER])
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, retry_backoff_ms=1) as p:
            metadata = await p.send_and_wait("one", b"v")
    assert metadata.offset == 0
    metadata_requests = [1 for key, _, _ in fake.requests if key == 3]
    assert len(metadata_requests) >= 2
    assert len(produce_requests(fake)) == 3


async def test_backpressure_bounds_buffered_memory(fake: FakeBroker) -> None:
    fake.produce_faults.append(Fault.HOLD)
    value = b"x" * 1000
    async with producer(fake, buffer_memory=8 * 1024, batch_size=1024) as p:
        sent: list[RecordFuture] = []
        blocked = trio.Event()

        async def send_many() -> None:
            for _ in range(40):
                sent.append(await p.send("one", value))
            blocked.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_many)
            await trio.testing.wait_all_tasks_blocked()
            assert not blocked.is_set()
            assert 0 < len(sent) < 10
            assert p.buffered_bytes <= 8 * 1024
            fake.release.set()
            with trio.fail_after(TIMEOUT_S):
                await blocked.wait()
        for future in sent:
            await future
    assert len(fake.values(TopicPartition("one", 0))) == 40


async def test_send_gives_up_after_max_block_ms_when_memory_stays_full(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    fake.produce_faults.append(Fault.HOLD)
    async with producer(fake, buffer_memory=4096, max_block_ms=3_000) as p:
        await p.send("one", b"x" * 3000)
        started = trio.current_time()
        with pytest.raises(KafkaTimeoutError):
            await p.send("one", b"y" * 3000)
        assert trio.current_time() - started == pytest.approx(3.0)
        fake.release.set()


async def test_acks_zero_resolves_without_offsets(fake: FakeBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake, acks=0) as p:
            metadata = await p.send_and_wait("one", b"v")
    assert metadata.offset == -1
    assert fake.values(TopicPartition("one", 0)) == [b"v"]


async def test_close_flushes_and_refuses_further_sends(fake: FakeBroker) -> None:
    p = producer(fake, linger_ms=60_000)
    with trio.fail_after(TIMEOUT_S):
        async with p:
            future = await p.send("one", b"v")
    assert future.done() and future.result().offset == 0
    with pytest.raises(ClientClosedError):
        await p.send("one", b"late")


async def test_leaving_with_an_exception_fails_pending_records_and_keeps_the_exception(
    fake: FakeBroker,
) -> None:
    fake.produce_faults.append(Fault.HOLD)
    futures: list[RecordFuture] = []
    with pytest.raises(LookupError, match="body failed"), trio.fail_after(TIMEOUT_S):
        async with producer(fake) as p:
            futures.append(await p.send("one", b"v"))
            raise LookupError("body failed")
    with pytest.raises(ClientClosedError):
        futures[0].result()


async def test_unknown_topic_times_out_and_bad_partition_is_refused(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with producer(fake, max_block_ms=2_000) as p:
        with pytest.raises(KafkaTimeoutError, match="missing"):
            await p.send("missing", b"v")
        with pytest.raises(UnknownTopicOrPartitionError):
            await p.send("one", b"v", partition=1)
        with pytest.raises(RecordTooLargeError):
            await p.send("one", b"v" * 2_000_000)
        assert await p.partitions_for("t") == [0, 1, 2]


async def test_explicit_partition_headers_and_timestamp_are_kept(fake: FakeBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with producer(fake) as p:
            metadata = await p.send_and_wait(
                "t",
                b"v",
                key=b"k",
                headers=[("h", b"1"), ("n", None)],
                partition=2,
                timestamp_ms=1_600_000_000_000,
            )
    assert (metadata.partition, metadata.offset, metadata.timestamp_ms) == (
        2,
        0,
        1_600_000_000_000,
    )
    (record,) = fake.logs[TopicPartition("t", 2)]
    assert (record.key, record.headers, record.timestamp_ms) == (
        b"k",
        (("h", b"1"), ("n", None)),
        1_600_000_000_000,
    )


async def test_broker_without_idempotence_support(nursery: trio.Nursery) -> None:
    fake = FakeBroker(topics={"one": 1})
    del fake.api_versions[22]
    await nursery.start(fake.serve)
    with trio.fail_after(TIMEOUT_S):
        # On by default: turned off, records still delivered (without producer ids).
        async with producer(fake) as p:
            assert (await p.send_and_wait("one", b"v")).offset == 0
        # Asked for explicitly: the producer fails instead.
        async with producer(fake, enable_idempotence=True) as p:
            future = await p.send("one", b"w")
            with pytest.raises(IncompatibleBrokerError, match="InitProducerId"):
                await future
            with pytest.raises(IncompatibleBrokerError):
                await p.send("one", b"x")
    assert fake.values(TopicPartition("one", 0)) == [b"v"]


async def test_records_fail_after_delivery_timeout_when_the_broker_is_gone(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with producer(fake, delivery_timeout_ms=40_000, request_timeout_ms=10_000) as p:
        await p.send_and_wait("one", b"first")
        fake.refuse_connections = True
        await fake.drop_connections()
        started = trio.current_time()
        future = await p.send("one", b"lost")
        with pytest.raises(KafkaTimeoutError, match="delivery_timeout_ms"):
            await future
        assert 40.0 <= trio.current_time() - started <= 41.0
        fake.refuse_connections = False
        # The producer recovers once the broker is back.
        assert (await p.send_and_wait("one", b"back")).offset == 1
    assert fake.values(TopicPartition("one", 0)) == [b"first", b"back"]


async def test_bad_records_are_refused_at_send(fake: FakeBroker) -> None:
    async with producer(fake) as p:
        with pytest.raises(TypeError):
            await p.send("one", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await p.send("one", b"v", headers=[("h", "not bytes")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            await p.send("one", b"v", headers=[(b"key", b"v")])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            await p.send("one", b"v", timestamp_ms=-5)
        assert (await p.send_and_wait("one", b"fine")).offset == 0
