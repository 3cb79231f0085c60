"""Our consumer over TCP (against the real broker and the scripted peer, see
`client_support.start_target`): positions, seeks, resets, isolation, and a slow handler
that does not hold back the other partitions."""

from __future__ import annotations

import pytest
import trio

from tests.integration.client_support import StartTarget, Target
from tidelog.client.consumer import Consumer
from tidelog.client.errors import OffsetOutOfRangeError
from tidelog.client.producer import Producer
from tidelog.client.structs import ConsumerRecord, TopicPartition

TIMEOUT_S = 30
TP = TopicPartition("consumed", 0)


async def produce(broker: Target, tp: TopicPartition, values: list[bytes]) -> None:
    async with Producer(bootstrap_servers=broker.bootstrap, linger_ms=1) as p:
        for value in values:
            await p.send(tp.topic, value, partition=tp.partition)


async def take(consumer: Consumer, count: int) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    with trio.fail_after(TIMEOUT_S):
        while len(out) < count:
            out.append(await consumer.getone())
    return out


@pytest.mark.parametrize("isolation_level", ["read_uncommitted", "read_committed"])
async def test_positions_seeks_and_resets(start_target: StartTarget, isolation_level: str) -> None:
    broker = await start_target()
    await produce(broker, TP, [b"%d" % i for i in range(50)])
    async with Consumer(
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        # A seek waits for the fetch in flight, which waits up to this long at the end of
        # the log: keep it short so the test is quick.
        fetch_max_wait_ms=50,
    ) as c:
        c.assign([TP])
        assert [r.value for r in await take(c, 50)] == [b"%d" % i for i in range(50)]
        assert await c.position(TP) == 50
        assert c.highwater(TP) == 50
        assert c.last_stable_offset(TP) == 50  # no transactions: the high watermark
        c.seek(TP, 45)
        assert [r.offset for r in await take(c, 5)] == [45, 46, 47, 48, 49]
        c.seek_to_beginning(TP)
        assert (await take(c, 1))[0].offset == 0
        c.seek_to_end(TP)
        with trio.fail_after(TIMEOUT_S):
            assert await c.position(TP) == 50
        assert await c.end_offsets([TP]) == {TP: 50}
        assert await c.beginning_offsets([TP]) == {TP: 0}
        # Records produced now arrive at the consumer that waits at the end.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, broker, TP, [b"late"])
            (late,) = await take(c, 1)
        assert (late.offset, late.value) == (50, b"late")


async def test_out_of_range_without_reset_policy(start_target: StartTarget) -> None:
    broker = await start_target()
    await produce(broker, TP, [b"a"])
    async with Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="none") as c:
        c.assign([TP])
        c.seek(TP, 999)
        with trio.fail_after(TIMEOUT_S), pytest.raises(OffsetOutOfRangeError):
            await c.getmany(timeout_ms=10_000)


async def test_a_slow_partition_does_not_hold_back_the_others(start_target: StartTarget) -> None:
    broker = await start_target(num_partitions=2)
    slow, fast = TopicPartition("mixed", 0), TopicPartition("mixed", 1)
    await produce(broker, slow, [b"s" * 1000] * 200)
    await produce(broker, fast, [b"f%d" % i for i in range(500)])
    async with Consumer(
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4096,
    ) as c:
        c.assign([slow, fast])
        with trio.fail_after(TIMEOUT_S):
            while c.highwater(slow) is None:  # the slow partition was fetched
                await c.getmany(fast, timeout_ms=100)
        # Read only the fast partition: its records keep coming although the slow one's
        # buffer is full and nobody reads it.
        fast_offsets: list[int] = []
        with trio.fail_after(TIMEOUT_S):
            while not fast_offsets or fast_offsets[-1] < 499:
                batch = await c.getmany(fast, timeout_ms=1000)
                fast_offsets.extend(r.offset for r in batch.get(fast, []))
        assert fast_offsets == list(range(fast_offsets[0], 500))
        assert await c.position(slow) == 0
