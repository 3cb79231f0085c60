"""kafka-python against a tidelog broker process: its producer with every acks setting and
codec, its consumer by manual assignment (no group), and a cross-check reading what
confluent-kafka (librdkafka) wrote.

Every record read back is compared field by field with what was sent: partition, offset,
order within the partition, key, value, headers, timestamp. kafka-python compresses snappy
only with python-snappy and lz4 only with the lz4 package; a codec whose library is not
installed is skipped, naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from tests.interop.conftest import BrokerProcess, SampleRecord, sample_records
from tidelog.client.protocol.records import Compression

kafka = pytest.importorskip("kafka")
kafka_codec = pytest.importorskip("kafka.codec")

RECORD_COUNT = 12
CLIENT_TIMEOUT_MS = 10_000
POLL_TIMEOUT_MS = 200
POLLS_MAX = 100

CODEC_LIBRARIES = {  # gzip comes with Python
    "snappy": (kafka_codec.has_snappy, "python-snappy"),
    "lz4": (kafka_codec.has_lz4, "lz4"),
    "zstd": (kafka_codec.has_zstd, "zstandard"),
}


def stored_codec(codec: str | None) -> Compression:
    return Compression.NONE if codec is None else Compression[codec.upper()]


def require_codec(codec: str | None) -> None:
    if codec not in CODEC_LIBRARIES:
        return
    available, library = CODEC_LIBRARIES[codec]
    if not available():
        pytest.skip(f"kafka-python needs the {library} package for {codec}; not installed")


Received = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]
"""(partition, offset, key, value, headers, timestamp_ms) as a consumer returned it."""


def expected(records: Sequence[SampleRecord]) -> dict[int, list[Received]]:
    by_partition: dict[int, list[Received]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(
            (r.partition, r.offset, r.key, r.value, r.headers, r.timestamp_ms)
        )
    return by_partition


@contextmanager
def kafka_python_consumer(broker: BrokerProcess) -> Iterator[Any]:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=CLIENT_TIMEOUT_MS,
    )
    try:
        yield consumer
    finally:
        consumer.close()


def consume(
    broker: BrokerProcess,
    topic: str,
    counts: dict[int, int],
    *,
    start_offset: int | None = None,
) -> dict[int, list[Received]]:
    """Assign the partitions in `counts`, seek to the beginning (or to `start_offset`), and
    poll until each partition has given `counts[partition]` records; then the partition's end
    offset (ListOffsets) must be where the consumer stopped: nothing more is there."""
    partitions = [kafka.TopicPartition(topic, p) for p in sorted(counts)]
    received: dict[int, list[Received]] = {p: [] for p in counts}
    with kafka_python_consumer(broker) as consumer:
        consumer.assign(partitions)
        if start_offset is None:
            consumer.seek_to_beginning()
        else:
            for tp in partitions:
                consumer.seek(tp, start_offset)
        for _ in range(POLLS_MAX):
            if all(len(received[p]) >= n for p, n in counts.items()):
                break
            for tp, messages in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).items():
                for m in messages:
                    assert m.topic == topic and m.partition == tp.partition
                    assert m.timestamp_type == 0  # CreateTime, as the producer set it
                    received[tp.partition].append(
                        (m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp)
                    )
        end_offsets = consumer.end_offsets(partitions)
        positions = {tp.partition: consumer.position(tp) for tp in partitions}
    assert {tp.partition: end for tp, end in end_offsets.items()} == positions
    return received


def kafka_python_produce(
    broker: BrokerProcess,
    topic: str,
    records: Sequence[SampleRecord],
    *,
    acks: int | str,
    codec: str | None,
) -> list[tuple[int, int]]:
    """Send `records` in order with explicit partitions; (partition, offset) the producer
    reports for each."""
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks=acks,
        # Idempotence needs acks=all; with the other settings say so rather than have the
        # producer turn it off with a warning.
        enable_idempotence=acks == "all",
        compression_type=codec,
        linger_ms=50,  # one batch per partition, so a compressed batch holds several records
        request_timeout_ms=CLIENT_TIMEOUT_MS,
        max_block_ms=CLIENT_TIMEOUT_MS,
    )
    try:
        futures = [
            producer.send(
                topic,
                key=r.key,
                value=r.value,
                headers=list(r.headers),
                partition=r.partition,
                timestamp_ms=r.timestamp_ms,
            )
            for r in records
        ]
        producer.flush(timeout=CLIENT_TIMEOUT_MS / 1000)
        metadata = [f.get(timeout=CLIENT_TIMEOUT_MS / 1000) for f in futures]
    finally:
        producer.close(timeout=CLIENT_TIMEOUT_MS / 1000)
    return [(m.partition, m.offset) for m in metadata]


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_producer_and_consumer_round_trip(
    tidelog_broker: BrokerProcess, unique_topic: str, acks: int | str, codec: str | None
) -> None:
    require_codec(codec)
    records = sample_records(RECORD_COUNT, tidelog_broker.partitions)

    acknowledged = kafka_python_produce(
        tidelog_broker, unique_topic, records, acks=acks, codec=codec
    )

    if acks == 0:
        # No answer from the broker, so the offsets the producer reports mean nothing.
        assert [partition for partition, _ in acknowledged] == [r.partition for r in records]
    else:
        assert acknowledged == [(r.partition, r.offset) for r in records]
    want = expected(records)
    assert consume(tidelog_broker, unique_topic, {p: len(rs) for p, rs in want.items()}) == want
    for partition in want:
        batches = tidelog_broker.stored_batches(unique_topic, partition)
        assert [b.compression for b in batches] == [stored_codec(codec)] * len(batches)
        # An idempotent producer stamps its producer id (from InitProducerId) on every batch.
        assert all((b.producer_id >= 0) == (acks == "all") for b in batches)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_consumer_seeks_into_the_middle_of_a_compressed_batch(
    tidelog_broker: BrokerProcess, unique_topic: str, codec: str
) -> None:
    require_codec(codec)
    records = sample_records(RECORD_COUNT, tidelog_broker.partitions)
    kafka_python_produce(tidelog_broker, unique_topic, records, acks="all", codec=codec)
    for partition in range(tidelog_broker.partitions):
        # The seek target lies inside the partition's first (compressed) batch: a fetch from
        # offset 2 returns that whole batch and the client drops the records before 2.
        first = tidelog_broker.stored_batches(unique_topic, partition)[0]
        assert first.base_offset == 0 and first.last_offset >= 2

    start_offset = 2
    want = {p: [r for r in rs if r[1] >= start_offset] for p, rs in expected(records).items()}
    received = consume(
        tidelog_broker,
        unique_topic,
        {p: len(rs) for p, rs in want.items()},
        start_offset=start_offset,
    )
    assert received == want


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_consumer_reads_what_librdkafka_wrote(
    tidelog_broker: BrokerProcess, unique_topic: str, codec: str
) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    require_codec(codec)
    records = sample_records(RECORD_COUNT, tidelog_broker.partitions)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": tidelog_broker.bootstrap,
            "broker.address.family": "v4",
            "compression.type": codec,
            "linger.ms": 50,
            "enable.idempotence": True,
            "message.timeout.ms": CLIENT_TIMEOUT_MS,
        }
    )
    delivered: list[tuple[int, int]] = []

    def on_delivery(error: Any, message: Any) -> None:
        assert error is None, error
        delivered.append((message.partition(), message.offset()))

    for r in records:
        producer.produce(
            unique_topic,
            key=r.key,
            value=r.value,
            headers=list(r.headers),
            partition=r.partition,
            timestamp=r.timestamp_ms,
            on_delivery=on_delivery,
        )
    assert producer.flush(CLIENT_TIMEOUT_MS / 1000) == 0, "records left undelivered"
    assert sorted(delivered) == sorted((r.partition, r.offset) for r in records)

    want = expected(records)
    assert consume(tidelog_broker, unique_topic, {p: len(rs) for p, rs in want.items()}) == want
    for partition in want:
        batches = tidelog_broker.stored_batches(unique_topic, partition)
        assert {b.compression for b in batches} == {
            stored_codec(None if codec == "none" else codec)
        }
