"""Consumer behaviour against the scripted in-memory broker (tests/unit/client_fake_broker)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from tests.unit.client_fake_broker import FakeBroker
from tidelog.client.consumer import Consumer
from tidelog.client.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from tidelog.client.protocol.records import Compression, RecordInput, encode_batch
from tidelog.client.structs import ConsumerRecord, TopicPartition

TIMEOUT_S = 10
P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBroker:
    broker = FakeBroker(topics={"t": 2})
    await nursery.start(broker.serve)
    return broker


def consumer(fake: FakeBroker, **config: Any) -> Consumer:
    config.setdefault("bootstrap_servers", f"{fake.host}:{fake.port}")
    config.setdefault("fetch_max_wait_ms", 100)
    return Consumer(connector=fake.connect, rng=random.Random(1), **config)


def append(fake: FakeBroker, tp: TopicPartition, values: list[bytes], **kwargs: Any) -> None:
    records = [RecordInput(v, key=b"k", timestamp_ms=1_000) for v in values]
    fake.append_batch(tp, encode_batch(records, **kwargs))


async def take(c: Consumer, count: int) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    with trio.fail_after(TIMEOUT_S):
        while len(out) < count:
            out.append(await c.getone())
    return out


async def test_reads_every_partition_from_the_beginning_in_order(fake: FakeBroker) -> None:
    for i in range(5):
        append(fake, P0, [b"p0-%d-%d" % (i, j) for j in range(3)], compression=Compression.GZIP)
        append(fake, P1, [b"p1-%d" % i])
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([P0, P1])
        records = await take(c, 20)
        assert await c.position(P0) == 15 and await c.position(P1) == 5
        assert c.highwater(P0) == 15
    by_partition = {tp: [r.value for r in records if r.topic_partition == tp] for tp in (P0, P1)}
    assert by_partition[P0] == [b"p0-%d-%d" % (i, j) for i in range(5) for j in range(3)]
    assert by_partition[P1] == [b"p1-%d" % i for i in range(5)]
    assert [r.offset for r in records if r.partition == 0] == list(range(15))


async def test_latest_starts_at_the_end_and_sees_new_records(fake: FakeBroker) -> None:
    append(fake, P0, [b"old"])
    async with consumer(fake) as c:
        c.assign([P0])
        with trio.fail_after(TIMEOUT_S):
            assert await c.position(P0) == 1
        append(fake, P0, [b"new"])
        (record,) = await take(c, 1)
    assert (record.value, record.offset) == (b"new", 1)


async def test_seek_and_seek_to_end(fake: FakeBroker) -> None:
    append(fake, P0, [b"%d" % i for i in range(10)])
    async with consumer(fake) as c:
        c.assign([P0])
        c.seek(P0, 7)
        assert [r.value for r in await take(c, 3)] == [b"7", b"8", b"9"]
        c.seek(P0, 2)
        assert (await take(c, 1))[0].value == b"2"
        c.seek_to_beginning()
        assert (await take(c, 1))[0].offset == 0
        c.seek_to_end(P0)
        with trio.fail_after(TIMEOUT_S):
            assert await c.position(P0) == 10
        assert await c.beginning_offsets([P0, P1]) == {P0: 0, P1: 0}
        assert await c.end_offsets([P0]) == {P0: 10}


async def test_no_reset_policy_raises_for_a_partition_without_position(fake: FakeBroker) -> None:
    async with consumer(fake, auto_offset_reset="none") as c:
        c.assign([P0])
        with trio.fail_after(TIMEOUT_S), pytest.raises(NoOffsetForPartitionError):
            await c.getmany(timeout_ms=5_000)


async def test_out_of_range_resets_or_raises(fake: FakeBroker) -> None:
    append(fake, P0, [b"a", b"b"])
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([P0])
        c.seek(P0, 1000)
        assert [r.value for r in await take(c, 2)] == [b"a", b"b"]
    async with consumer(fake, auto_offset_reset="none") as c:
        c.assign([P0])
        c.seek(P0, 1000)
        with trio.fail_after(TIMEOUT_S), pytest.raises(OffsetOutOfRangeError):
            await c.getmany(timeout_ms=5_000)
        c.seek(P0, 1)  # a seek clears the error
        assert [r.value for r in await take(c, 1)] == [b"b"]


async def test_fetches_ahead_while_the_handler_is_busy_within_the_memory_bound(
    fake: FakeBroker,
) -> None:
    batch_values = [[b"%03d" % (10 * i + j) * 30 for j in range(10)] for i in range(20)]
    for values in batch_values:
        append(fake, P0, values)
    batch_bytes = len(fake.batches[P0][0])
    limit = 2 * batch_bytes
    async with consumer(fake, auto_offset_reset="earliest", max_partition_fetch_bytes=limit) as c:
        c.assign([P0])
        await take(c, 1)
        # While the application holds the rest of the first response, the next one is
        # fetched already, but no more than that.
        with trio.fail_after(TIMEOUT_S):
            while len(fake.fetch_sizes) < 2:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert len(fake.fetch_sizes) == 2
        state = c._subscription.state(P0)
        assert state.buffered_bytes <= 2 * limit
        got = await take(c, 199)
    assert [r.value for r in got] == [v for values in batch_values for v in values][1:]
    assert max(fake.fetch_sizes) <= limit


async def test_read_committed_is_sent_and_aborted_records_are_dropped(fake: FakeBroker) -> None:
    append(fake, P0, [b"aborted"], producer_id=9, producer_epoch=0, base_sequence=0,
           is_transactional=True)  # fmt: skip
    fake.aborted[P0] = [(9, 0)]
    append(fake, P0, [b"visible"])
    async with consumer(fake, auto_offset_reset="earliest",
                        isolation_level="read_committed") as c:  # fmt: skip
        c.assign([P0])
        (record,) = await take(c, 1)
    assert record.value == b"visible"
    fetches = [body for key, _, body in fake.requests if key == 1]
    assert fetches and all(body["isolation_level"] == 1 for body in fetches)


async def test_getmany_limits_and_async_iteration(fake: FakeBroker) -> None:
    append(fake, P0, [b"%d" % i for i in range(10)])
    async with consumer(fake, auto_offset_reset="earliest", max_poll_records=4) as c:
        c.assign([P0])
        with trio.fail_after(TIMEOUT_S):
            batch: dict[TopicPartition, list[ConsumerRecord]] = {}
            while not batch:
                batch = await c.getmany(timeout_ms=1_000)
            assert len(batch[P0]) == 4
            seen = []
            async for record in c:
                seen.append(record.offset)
                if record.offset == 9:
                    break
        assert seen == list(range(4, 10))
        assert await c.getmany(P1, timeout_ms=10) == {}
