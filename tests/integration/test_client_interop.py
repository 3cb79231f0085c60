"""Interop with librdkafka (confluent-kafka), both ways, per codec; and keyed partitioning
that agrees with librdkafka's Java-compatible murmur2.

Each test runs through the real broker and through the scripted peer, which stores batches
byte for byte, so librdkafka reads exactly what our producer wrote and the other way round
(see `tests.integration.client_support.start_target`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from tests.integration.client_support import StartTarget, Target
from tidelog.client.consumer import Consumer
from tidelog.client.partitioner import murmur2
from tidelog.client.producer import Producer
from tidelog.client.protocol.records import parse_batch_header
from tidelog.client.structs import TopicPartition

confluent_kafka = pytest.importorskip("confluent_kafka")

TIMEOUT_S = 60
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def confluent_config(broker: Target, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4", **extra}


def confluent_produce(
    broker: Target,
    topic: str,
    records: list[tuple[bytes, bytes]],
    *,
    partition: int | None = None,
    settings: dict[str, str] | None = None,
) -> list[int]:
    """Produce (key, value) pairs with librdkafka (to `partition`, or where its partitioner
    puts them); returns each record's partition."""
    partitions: list[int] = [-1] * len(records)
    errors: list[object] = []
    producer = confluent_kafka.Producer(confluent_config(broker, **(settings or {})))
    for index, (key, value) in enumerate(records):

        def report(err: object, msg: Any, index: int = index) -> None:
            if err is not None:
                errors.append(err)
            else:
                partitions[index] = msg.partition()

        placement = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, key=key, on_delivery=report, **placement)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    assert remaining == 0 and not errors, errors
    return partitions


def confluent_consume(broker: Target, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = confluent_kafka.Consumer(
        confluent_config(broker, **{"group.id": "tidelog-interop", "enable.auto.commit": False})
    )
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)]
        )
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(out) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            out.append((message.key(), message.value()))
        return out
    finally:
        consumer.close()


def sample(codec: str) -> list[tuple[bytes, bytes]]:
    return [(b"key-%d" % i, (b"%s-%d " % (codec.encode(), i)) * 30) for i in range(300)]


@pytest.mark.parametrize("codec", CODECS)
async def test_librdkafka_producer_to_our_consumer(start_target: StartTarget, codec: str) -> None:
    target = await start_target()
    topic = f"from-rdkafka-{codec}"
    records = sample(codec)
    with trio.fail_after(TIMEOUT_S):
        await trio.to_thread.run_sync(
            lambda: confluent_produce(
                target, topic, records, partition=0, settings={"compression.type": codec}
            )
        )
        async with Consumer(bootstrap_servers=target.bootstrap, auto_offset_reset="earliest") as c:
            c.assign([TopicPartition(topic, 0)])
            got = [await c.getone() for _ in records]
    assert [(r.key, r.value) for r in got] == records
    assert [r.offset for r in got] == list(range(len(records)))
    if target.scripted is not None:  # librdkafka really used the codec
        batches = target.scripted.batches[TopicPartition(topic, 0)]
        assert {parse_batch_header(b).compression.name.lower() for b in batches} == {codec}


@pytest.mark.parametrize("codec", CODECS)
async def test_our_producer_to_librdkafka_consumer(start_target: StartTarget, codec: str) -> None:
    target = await start_target()
    topic = f"to-rdkafka-{codec}"
    records = sample(codec)
    with trio.fail_after(TIMEOUT_S):
        async with Producer(bootstrap_servers=target.bootstrap, compression_type=codec) as p:
            for key, value in records:
                await p.send(topic, value, key=key, partition=0)
        got = await trio.to_thread.run_sync(lambda: confluent_consume(target, topic, len(records)))
    assert got == records
    if target.scripted is not None:
        batches = target.scripted.batches[TopicPartition(topic, 0)]
        assert {parse_batch_header(b).compression.name.lower() for b in batches} == {codec}


async def test_keyed_records_land_where_librdkafka_murmur2_puts_them(
    start_target: StartTarget,
) -> None:
    target = await start_target(num_partitions=12)
    keys = [b"user-%d" % i for i in range(200)] + [b"", b"\xff\x00\x01", b"k" * 300]
    records = [(key, b"v") for key in keys]
    with trio.fail_after(TIMEOUT_S):
        theirs = await trio.to_thread.run_sync(
            lambda: confluent_produce(
                target, "keyed", records, settings={"partitioner": "murmur2_random"}
            )
        )
        async with Producer(bootstrap_servers=target.bootstrap) as p:
            futures = [await p.send("keyed", value, key=key) for key, value in records]
            ours = [(await f).partition for f in futures]
    java = [(murmur2(key) & 0x7FFFFFFF) % 12 for key in keys]
    assert ours == java
    # librdkafka maps an empty key like a missing one (random); compare the others.
    assert [p for k, p in zip(keys, theirs, strict=True) if k] == [
        p for k, p in zip(keys, ours, strict=True) if k
    ]
    assert len(set(ours)) > 6
