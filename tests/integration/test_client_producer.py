"""Our producer over TCP (against the real broker and the scripted peer, see
`client_support.start_target`): order, idempotent retries across dropped connections,
backpressure, flush, every codec."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from tests.integration.client_support import DroppingConnector, StartTarget, Target
from tidelog.client.consumer import Consumer
from tidelog.client.producer import Producer, RecordFuture
from tidelog.client.structs import ConsumerRecord, TopicPartition

TIMEOUT_S = 30


def producer(broker: Target, **config: Any) -> Producer:
    config.setdefault("linger_ms", 2)
    return Producer(bootstrap_servers=broker.bootstrap, rng=random.Random(7), **config)


async def read_all(
    broker: Target, partitions: list[TopicPartition], count: int
) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    async with Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest") as c:
        c.assign(partitions)
        with trio.fail_after(TIMEOUT_S):
            while len(out) < count:
                for records in (await c.getmany(timeout_ms=1000)).values():
                    out.extend(records)
    return out


async def test_records_keep_their_order_per_partition(start_target: StartTarget) -> None:
    broker = await start_target()
    sent: dict[int, list[bytes]] = {}
    futures: list[tuple[bytes, RecordFuture]] = []
    with trio.fail_after(TIMEOUT_S):
        async with producer(broker, batch_size=512) as p:
            for i in range(2000):
                value = b"%05d" % i
                futures.append((value, await p.send("ordered", value, key=b"k%d" % (i % 7))))
        for value, future in futures:
            metadata = future.result()
            sent.setdefault(metadata.partition, []).append(value)
    records = await read_all(broker, [TopicPartition("ordered", 0)], 2000)
    assert [r.value for r in records] == sent[0]
    assert [r.offset for r in records] == list(range(2000))


async def test_idempotent_retries_after_dropped_connections_leave_no_duplicates(
    start_target: StartTarget,
) -> None:
    broker = await start_target()
    connector = DroppingConnector(drop_after_produce_requests=[3, 10, 25, 40])
    values = [b"record-%05d" % i for i in range(3000)]
    with trio.fail_after(TIMEOUT_S):
        async with Producer(
            bootstrap_servers=broker.bootstrap,
            connector=connector,
            linger_ms=0,
            batch_size=1024,
            retry_backoff_ms=5,
        ) as p:
            futures = [await p.send("drops", v) for v in values]
            offsets = [(await f).offset for f in futures]
    assert connector.drops == 4
    assert connector.connections >= 5
    records = await read_all(broker, [TopicPartition("drops", 0)], len(values))
    assert [r.value for r in records] == values
    assert offsets == list(range(len(values)))


async def test_backpressure_bounds_memory(start_target: StartTarget) -> None:
    broker = await start_target()
    buffer_memory = 64 * 1024
    high_water = 0
    with trio.fail_after(TIMEOUT_S):
        async with producer(broker, buffer_memory=buffer_memory, batch_size=8 * 1024) as p:
            for i in range(5000):
                await p.send("bounded", b"%d" % i + b"x" * 200)
                high_water = max(high_water, p.buffered_bytes)
    assert 0 < high_water <= buffer_memory
    assert len(await read_all(broker, [TopicPartition("bounded", 0)], 5000)) == 5000


async def test_flush_returns_when_everything_is_acknowledged(start_target: StartTarget) -> None:
    broker = await start_target()
    with trio.fail_after(TIMEOUT_S):
        async with producer(broker, linger_ms=60_000) as p:
            futures = [await p.send("flushed", b"%d" % i) for i in range(100)]
            assert not any(f.done() for f in futures)
            await p.flush()
            assert all(f.done() for f in futures)
            assert [f.result().offset for f in futures] == list(range(100))


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_every_codec_roundtrips(start_target: StartTarget, codec: str) -> None:
    broker = await start_target()
    topic = f"codec-{codec}"
    values = [b"%d-" % i + b"compressible " * 20 for i in range(500)]
    with trio.fail_after(TIMEOUT_S):
        async with producer(broker, compression_type=codec) as p:
            for v in values:
                await p.send(topic, v, key=b"key", headers=[("codec", codec.encode())])
            await p.flush()
    records = await read_all(broker, [TopicPartition(topic, 0)], len(values))
    assert [r.value for r in records] == values
    assert {(r.key, tuple(r.headers)) for r in records} == {(b"key", (("codec", codec.encode()),))}
