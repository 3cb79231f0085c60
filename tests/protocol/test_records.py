"""RecordBatch v2: header parsing and validation (the broker's path), encoding and decoding
(the client's), control records.

The byte layout is checked against an independent implementation, kafka-python's
DefaultRecordBatchBuilder / DefaultRecordBatch: batches either side builds decode the same on
the other, and uncompressed batches built from the same records are byte-identical.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder

from tests.protocol import kafka_python_codecs
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    DecompressionLimitError,
    ProtocolError,
    UnsupportedCompressionError,
    UnsupportedMagicError,
)
from tidelog.client.protocol.primitives import encode_varint
from tidelog.client.protocol.records import (
    BATCH_HEADER_BYTES,
    BATCH_LOG_OVERHEAD,
    BatchHeader,
    Compression,
    ControlRecordType,
    Record,
    RecordInput,
    TimestampType,
    assign_offsets,
    control_record_type,
    decode_batch,
    decode_batches,
    decode_end_transaction_marker,
    encode_batch,
    end_transaction_marker_record,
    iter_batches,
    parse_batch_header,
    validate_batch,
)

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Field positions from the protocol guide's RecordBatch layout.
CRC_POS = 17
ATTRIBUTES_POS = 21
RECORDS_COUNT_POS = 57
LAST_OFFSET_DELTA_POS = 23


@pytest.fixture(scope="module", autouse=True)
def _kafka_python_snappy_and_lz4() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        kafka_python_codecs.install(monkeypatch)
        yield


def sample_records(n: int, start_ms: int = 1_700_000_000_000) -> list[RecordInput]:
    return [
        RecordInput(
            value=b"value-%d" % i if i % 5 else None,
            key=b"key-%d" % i if i % 2 else None,
            headers=(("trace", b"t%d" % i), ("empty", None)) if i % 3 == 0 else (),
            timestamp_ms=start_ms + 7 * i,
        )
        for i in range(n)
    ]


def recompute_crc(batch: bytearray, pos: int = 0) -> None:
    """Make the CRC match after a test rewrote fields under it (CRC-32C of attributes..end)."""
    (batch_length,) = struct.unpack_from(">i", batch, pos + 8)
    end = pos + BATCH_LOG_OVERHEAD + batch_length
    struct.pack_into(">I", batch, pos + CRC_POS, crc32c(bytes(batch[pos + ATTRIBUTES_POS : end])))


def kafka_python_batch(
    records: Sequence[RecordInput],
    compression: int = 0,
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        2, compression, is_transactional, producer_id, producer_epoch, base_sequence, 2**30
    )
    for offset, record in enumerate(records):
        builder.append(offset, record.timestamp_ms, record.key, record.value, list(record.headers))
    return bytes(builder.build())


def kafka_python_read(batch: bytes) -> tuple[DefaultRecordBatch, list[tuple[Any, ...]]]:
    parsed = DefaultRecordBatch(bytearray(batch))
    assert parsed.validate_crc()
    records = [
        (
            r.offset,
            r.timestamp,
            None if r.key is None else bytes(r.key),
            None if r.value is None else bytes(r.value),
            tuple((k, None if v is None else bytes(v)) for k, v in r.headers),
        )
        for r in parsed
    ]
    return parsed, records


def as_tuples(records: Sequence[Record]) -> list[tuple[Any, ...]]:
    return [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in records]


def expected_tuples(records: Sequence[RecordInput], base_offset: int = 0) -> list[tuple[Any, ...]]:
    return [
        (base_offset + i, r.timestamp_ms, r.key, r.value, tuple(r.headers))
        for i, r in enumerate(records)
    ]


# -- header and validation: the broker's path -------------------------------------------------


def test_header_fields_match_an_independent_reader() -> None:
    batch = kafka_python_batch(
        sample_records(10),
        producer_id=77,
        producer_epoch=3,
        base_sequence=40,
        is_transactional=True,
    )
    header = parse_batch_header(batch)
    theirs = DefaultRecordBatch(bytearray(batch))
    assert header.base_offset == theirs.base_offset
    assert header.partition_leader_epoch == theirs.leader_epoch
    assert header.magic == 2
    assert header.crc == theirs.crc
    assert header.attributes == theirs.attributes
    assert header.last_offset_delta == theirs.last_offset_delta == 9
    assert header.base_timestamp == theirs.first_timestamp
    assert header.max_timestamp == theirs.max_timestamp
    assert (header.producer_id, header.producer_epoch) == (77, 3)
    assert header.base_sequence == 40
    assert header.last_sequence == theirs.last_sequence == 49
    assert header.records_count == theirs.records_count == 10
    assert header.total_bytes == len(batch) == header.batch_length + BATCH_LOG_OVERHEAD
    assert header.is_transactional and not header.is_control
    assert header.compression is Compression.NONE
    assert header.timestamp_type is TimestampType.CREATE_TIME
    assert (header.last_offset, header.next_offset) == (9, 10)
    assert validate_batch(batch) == header


def test_header_offsets_follow_base_offset() -> None:
    header = validate_batch(encode_batch(sample_records(4), base_offset=1000))
    assert (header.base_offset, header.last_offset, header.next_offset) == (1000, 1003, 1004)


def test_last_sequence_wraps_past_int32_max_like_kafka() -> None:
    batch = kafka_python_batch(
        sample_records(3), producer_id=5, producer_epoch=0, base_sequence=2**31 - 2
    )
    assert (
        parse_batch_header(batch).last_sequence
        == DefaultRecordBatch(bytearray(batch)).last_sequence
    )
    assert parse_batch_header(batch).last_sequence == 0
    assert parse_batch_header(encode_batch(sample_records(3))).last_sequence == -1


def test_header_reads_at_a_position_in_a_larger_buffer() -> None:
    batch = encode_batch(sample_records(2), base_offset=42)
    buf = memoryview(b"\xee" * 13 + batch + b"\xee" * 5)
    assert parse_batch_header(buf, 13) == validate_batch(buf, 13) == validate_batch(batch)
    assert validate_batch(buf, 13).base_offset == 42


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_message_formats_are_refused_clearly(magic: int) -> None:
    builder = LegacyRecordBatchBuilder(magic, 0, 2**20)
    builder.append(0, 1_700_000_000_000 if magic else None, b"k", b"v")
    legacy = bytes(builder.build())
    for call in (parse_batch_header, validate_batch, decode_batch):
        with pytest.raises(UnsupportedMagicError, match=f"legacy message format v{magic}"):
            call(legacy)
    with pytest.raises(UnsupportedMagicError):
        list(iter_batches(legacy))


@pytest.mark.parametrize("magic", [3, 0x7F, -1])
def test_unknown_magic_is_corrupt_not_legacy(magic: int) -> None:
    batch = bytearray(encode_batch(sample_records(1)))
    struct.pack_into(">b", batch, 16, magic)
    with pytest.raises(CorruptMessageError, match="magic") as raised:
        parse_batch_header(batch)
    assert not isinstance(raised.value, UnsupportedMagicError)


@pytest.mark.parametrize("batch_length", [-1, 0, 48])
def test_batch_length_shorter_than_the_header_is_corrupt(batch_length: int) -> None:
    batch = bytearray(encode_batch(sample_records(1)))
    struct.pack_into(">i", batch, 8, batch_length)
    with pytest.raises(CorruptMessageError, match="batchLength"):
        parse_batch_header(batch)


def test_short_header_is_corrupt() -> None:
    batch = encode_batch(sample_records(1))
    for size in range(BATCH_HEADER_BYTES):
        with pytest.raises(CorruptMessageError):
            parse_batch_header(batch[:size])


@pytest.mark.parametrize("codec", list(Compression))
def test_truncation_at_every_byte_is_corrupt(codec: Compression) -> None:
    batch = encode_batch(sample_records(6), compression=codec)
    for size in range(len(batch)):
        with pytest.raises(CorruptMessageError):
            validate_batch(batch[:size])
        with pytest.raises(CorruptMessageError):
            decode_batch(batch[:size], verify_crc=False)


def test_crc_catches_a_change_at_any_byte_under_it() -> None:
    batch = encode_batch(sample_records(8), producer_id=1, producer_epoch=0, base_sequence=0)
    for pos in range(CRC_POS, len(batch)):  # the CRC field itself, then attributes .. end
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(batch)
            corrupted[pos] ^= flip
            with pytest.raises(CorruptMessageError):
                validate_batch(corrupted)


def test_base_offset_and_leader_epoch_are_outside_the_crc() -> None:
    batch = bytearray(encode_batch(sample_records(2)))
    struct.pack_into(">q", batch, 0, 123456)
    struct.pack_into(">i", batch, 12, 9)
    header = validate_batch(batch)  # no CRC recomputed
    assert (header.base_offset, header.partition_leader_epoch) == (123456, 9)


def test_negative_records_count_is_corrupt() -> None:
    batch = bytearray(encode_batch(sample_records(2)))
    struct.pack_into(">i", batch, RECORDS_COUNT_POS, -1)
    recompute_crc(batch)
    with pytest.raises(CorruptMessageError, match="recordsCount"):
        validate_batch(batch)


def test_records_count_beyond_last_offset_delta_is_corrupt() -> None:
    batch = bytearray(encode_batch(sample_records(3)))
    struct.pack_into(">i", batch, LAST_OFFSET_DELTA_POS, 1)  # 3 records in 2 offsets
    recompute_crc(batch)
    with pytest.raises(CorruptMessageError, match="lastOffsetDelta"):
        validate_batch(batch)
    struct.pack_into(">i", batch, LAST_OFFSET_DELTA_POS, -1)
    recompute_crc(batch)
    with pytest.raises(CorruptMessageError, match="lastOffsetDelta"):
        validate_batch(batch)


def test_records_count_that_cannot_fit_the_bytes_is_refused_without_decoding() -> None:
    batch = bytearray(encode_batch(sample_records(3)))
    struct.pack_into(">i", batch, LAST_OFFSET_DELTA_POS, 2**31 - 1)
    struct.pack_into(">i", batch, RECORDS_COUNT_POS, 2**31 - 1)
    recompute_crc(batch)
    with pytest.raises(CorruptMessageError, match="records"):
        validate_batch(batch)


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codec_is_refused(codec: int) -> None:
    batch = bytearray(encode_batch(sample_records(2)))
    struct.pack_into(">h", batch, ATTRIBUTES_POS, codec)
    recompute_crc(batch)
    with pytest.raises(UnsupportedCompressionError):
        validate_batch(batch)
    with pytest.raises(UnsupportedCompressionError):
        parse_batch_header(batch).compression  # noqa: B018 - the property raises


def test_iter_batches_walks_batches_laid_end_to_end() -> None:
    batches = [
        encode_batch(sample_records(n), base_offset=base, compression=codec)
        for n, base, codec in [
            (3, 0, Compression.NONE),
            (1, 3, Compression.ZSTD),
            (5, 4, Compression.GZIP),
        ]
    ]
    joined = b"".join(batches)
    headers = list(iter_batches(joined))
    assert [h.base_offset for h in headers] == [0, 3, 4]
    assert [h.next_offset for h in headers] == [3, 4, 9]
    assert sum(h.total_bytes for h in headers) == len(joined)
    assert list(iter_batches(b"")) == []


def test_iter_batches_refuses_a_trailing_partial_batch_unless_allowed() -> None:
    first = encode_batch(sample_records(3))
    second = encode_batch(sample_records(4), base_offset=3)
    joined = first + second
    for cut in range(len(first) + 1, len(joined)):
        with pytest.raises(CorruptMessageError):
            list(iter_batches(joined[:cut]))
        assert [h.base_offset for h in iter_batches(joined[:cut], allow_partial_tail=True)] == [0]
        assert [
            h.base_offset for h, _ in decode_batches(joined[:cut], allow_partial_tail=True)
        ] == [0]


def test_partial_tail_must_still_look_like_a_v2_batch() -> None:
    builder = LegacyRecordBatchBuilder(1, 0, 2**20)
    builder.append(0, 1, b"k", b"v" * 100)
    legacy = bytes(builder.build())
    with pytest.raises(UnsupportedMagicError):
        list(iter_batches(encode_batch(sample_records(1)) + legacy[:40], allow_partial_tail=True))


def test_validation_never_decodes_records() -> None:
    """The broker's path checks the batch as a unit: records the CRC covers are not parsed,
    so a batch whose records section is garbage (but whose CRC matches) validates, and only
    decoding finds the garbage."""
    batch = batch_with_records_section(b"\xff" * 70, records_count=10)
    assert validate_batch(batch).records_count == 10
    assert [h.records_count for h in iter_batches(batch)] == [10]
    with pytest.raises(CorruptMessageError):
        decode_batch(batch)


# -- assign_offsets ------------------------------------------------------------------------


def test_assign_offsets_patches_the_base_offset_in_place() -> None:
    original = encode_batch(sample_records(5), compression=Compression.LZ4)
    buf = bytearray(b"\x00" * 7 + original)
    assign_offsets(buf, 7, 5000)
    header = validate_batch(buf, 7)
    assert header.base_offset == 5000
    assert bytes(buf[7 + 8 :]) == original[8:]  # nothing else changed: the CRC still holds
    _, records = decode_batch(buf, 7)
    assert [r.offset for r in records] == [5000, 5001, 5002, 5003, 5004]


def test_assign_offsets_with_log_append_time_stamps_the_batch() -> None:
    buf = bytearray(encode_batch(sample_records(4, start_ms=1000)))
    assign_offsets(memoryview(buf), 0, 10, log_append_time_ms=1_800_000_000_000)
    header = validate_batch(buf)  # CRC recomputed
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == 1_800_000_000_000
    _, records = decode_batch(buf)
    assert [r.timestamp_ms for r in records] == [1_800_000_000_000] * 4
    theirs, their_records = kafka_python_read(bytes(buf))
    assert theirs.timestamp_type == 1
    assert [r[1] for r in their_records] == [1_800_000_000_000] * 4
    assert [r[0] for r in their_records] == [10, 11, 12, 13]


def test_assign_offsets_refuses_a_truncated_batch() -> None:
    buf = bytearray(encode_batch(sample_records(4)))
    with pytest.raises(CorruptMessageError):
        assign_offsets(buf[:-1], 0, 7)


# -- encoding and decoding -------------------------------------------------------------------

header_values = st.none() | st.binary(max_size=12)
record_inputs = st.builds(
    RecordInput,
    value=st.none() | st.binary(max_size=80),
    key=st.none() | st.binary(max_size=20),
    headers=st.lists(st.tuples(st.text(max_size=8), header_values), max_size=3).map(tuple),
    timestamp_ms=st.integers(-1, 2**45),
)
record_lists = st.lists(record_inputs, min_size=1, max_size=20)


@PROPERTY_SETTINGS
@given(
    records=record_lists,
    codec=st.sampled_from(Compression),
    base_offset=st.integers(0, 2**62),
    producer=st.tuples(
        st.integers(-1, 2**63 - 1), st.integers(-1, 2**15 - 1), st.integers(-1, 2**31 - 1)
    ),
    is_transactional=st.booleans(),
    is_control=st.booleans(),
    partition_leader_epoch=st.integers(-1, 2**31 - 1),
)
def test_round_trip(
    records: list[RecordInput],
    codec: Compression,
    base_offset: int,
    producer: tuple[int, int, int],
    is_transactional: bool,
    is_control: bool,
    partition_leader_epoch: int,
) -> None:
    producer_id, producer_epoch, base_sequence = producer
    batch = encode_batch(
        records,
        base_offset=base_offset,
        compression=codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=is_transactional,
        is_control=is_control,
        partition_leader_epoch=partition_leader_epoch,
    )
    header, decoded = decode_batch(batch)
    assert header == validate_batch(batch)
    assert as_tuples(decoded) == expected_tuples(records, base_offset)
    assert header.compression is codec
    assert header.is_transactional is is_transactional
    assert header.is_control is is_control
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.partition_leader_epoch == partition_leader_epoch
    assert header.records_count == len(records) == header.last_offset_delta + 1
    assert header.base_timestamp == records[0].timestamp_ms
    assert header.max_timestamp == max(r.timestamp_ms for r in records)


@PROPERTY_SETTINGS
@given(
    records=record_lists,
    producer=st.tuples(
        st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(0, 2**31 - 1)
    ),
    is_transactional=st.booleans(),
)
def test_uncompressed_bytes_identical_to_an_independent_encoder(
    records: list[RecordInput], producer: tuple[int, int, int], is_transactional: bool
) -> None:
    producer_id, producer_epoch, base_sequence = producer
    theirs = kafka_python_batch(
        records,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=is_transactional,
    )
    ours = encode_batch(
        records,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        is_transactional=is_transactional,
        partition_leader_epoch=0,  # kafka-python leaves the broker's field at 0
    )
    assert ours == theirs


@PROPERTY_SETTINGS
@given(records=record_lists, codec=st.sampled_from(Compression))
def test_batches_an_independent_encoder_builds_decode_identically(
    records: list[RecordInput], codec: Compression
) -> None:
    batch = kafka_python_batch(records, codec.value)
    _header, decoded = decode_batch(batch)
    _, theirs = kafka_python_read(batch)
    assert as_tuples(decoded) == theirs == expected_tuples(records)


@PROPERTY_SETTINGS
@given(records=record_lists, codec=st.sampled_from(Compression), base_offset=st.integers(0, 2**40))
def test_batches_we_build_decode_identically_in_an_independent_decoder(
    records: list[RecordInput], codec: Compression, base_offset: int
) -> None:
    batch = encode_batch(records, compression=codec, base_offset=base_offset)
    theirs_batch, theirs = kafka_python_read(batch)
    assert theirs_batch.compression_type == codec.value
    assert theirs == expected_tuples(records, base_offset)


@pytest.mark.parametrize("codec", [c for c in Compression if c is not Compression.NONE])
def test_compressed_batches_compress(codec: Compression) -> None:
    records = [RecordInput(value=b"the same value again " * 8) for _ in range(50)]
    plain = encode_batch(records)
    compressed = encode_batch(records, compression=codec)
    assert len(compressed) < len(plain) // 4
    assert as_tuples(decode_batch(compressed)[1]) == as_tuples(decode_batch(plain)[1])


def test_compression_level_is_passed_to_the_codec() -> None:
    records = [RecordInput(value=bytes(range(256)) * 4, key=b"%d" % i) for i in range(40)]
    fast = encode_batch(records, compression=Compression.ZSTD, compression_level=1)
    strong = encode_batch(records, compression=Compression.ZSTD, compression_level=19)
    assert len(strong) <= len(fast)
    assert decode_batch(fast)[1] == decode_batch(strong)[1]


def test_log_append_time_batch_reports_the_batch_timestamp_for_every_record() -> None:
    records = sample_records(3, start_ms=500)
    batch = encode_batch(records, timestamp_type=TimestampType.LOG_APPEND_TIME)
    header, decoded = decode_batch(batch)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert [r.timestamp_ms for r in decoded] == [header.max_timestamp] * 3 == [514] * 3


def test_negative_timestamp_deltas_round_trip() -> None:
    records = [RecordInput(value=b"x", timestamp_ms=ts) for ts in (1000, 10, 5000, -1)]
    header, decoded = decode_batch(encode_batch(records))
    assert [r.timestamp_ms for r in decoded] == [1000, 10, 5000, -1]
    assert (header.base_timestamp, header.max_timestamp) == (1000, 5000)


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        encode_batch([])


def test_decode_batches_decodes_each_batch() -> None:
    joined = encode_batch(sample_records(2)) + encode_batch(
        sample_records(3), base_offset=2, compression=Compression.SNAPPY
    )
    decoded = list(decode_batches(joined))
    assert [[r.offset for r in records] for _, records in decoded] == [[0, 1], [2, 3, 4]]


def test_decompressed_size_is_limited() -> None:
    records = [RecordInput(value=bytes(10_000)) for _ in range(20)]
    batch = encode_batch(records, compression=Compression.GZIP)
    assert len(decode_batch(batch, max_decompressed_bytes=300_000)[1]) == 20
    with pytest.raises(DecompressionLimitError):
        decode_batch(batch, max_decompressed_bytes=100_000)


def test_decode_skips_the_crc_only_when_asked() -> None:
    batch = bytearray(encode_batch(sample_records(2)))
    batch[-2] ^= 0x01  # the last byte of the last record's value
    with pytest.raises(CorruptMessageError, match="CRC"):
        decode_batch(batch)
    _, records = decode_batch(batch, verify_crc=False)
    assert len(records) == 2


# -- hostile records sections -------------------------------------------------------------------


def batch_with_records_section(
    section: bytes, records_count: int, codec: int = 0, last_offset_delta: int | None = None
) -> bytearray:
    """A batch with a valid header and CRC around an arbitrary records section."""
    header = struct.pack(
        ">qiibIhiqqqhii",
        0,
        BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD + len(section),
        0,
        2,
        0,
        codec,
        max(records_count - 1, 0) if last_offset_delta is None else last_offset_delta,
        0,
        0,
        -1,
        -1,
        -1,
        records_count,
    )
    batch = bytearray(header + section)
    recompute_crc(batch)
    return batch


def record_bytes(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return encode_varint(len(body)) + body


GOOD_RECORD = record_bytes(
    b"\x00",
    encode_varint(0),
    encode_varint(0),
    encode_varint(-1),
    encode_varint(1),
    b"v",
    encode_varint(0),
)


def test_a_hand_built_record_decodes() -> None:
    _, records = decode_batch(batch_with_records_section(GOOD_RECORD * 2, 2))
    assert [(r.key, r.value, r.headers) for r in records] == [(None, b"v", ())] * 2


@pytest.mark.parametrize("declared", [1, 3, 4])
def test_records_count_that_disagrees_with_the_bytes_is_corrupt(declared: int) -> None:
    with pytest.raises(CorruptMessageError):
        decode_batch(batch_with_records_section(GOOD_RECORD * 2, declared))


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\x00", encode_varint(2**30), b"k", b"\x02v", b"\x00"),
            id="huge-key",
        ),
        pytest.param(
            record_bytes(
                b"\x00", b"\x00", b"\x00", b"\x01", encode_varint(2**31 - 1), b"v", b"\x00"
            ),
            id="huge-value",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\x00", encode_varint(-2), b"\x02v", b"\x00"),
            id="negative-key",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\x00", b"\x01", b"\x02v", encode_varint(2**31 - 1)),
            id="huge-header-count",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\x00", b"\x01", b"\x02v", encode_varint(-1)),
            id="negative-header-count",
        ),
        pytest.param(
            record_bytes(
                b"\x00",
                b"\x00",
                b"\x00",
                b"\x01",
                b"\x02v",
                b"\x02",
                encode_varint(2**20),
                b"h",
                b"\x01",
            ),
            id="huge-header-key",
        ),
        pytest.param(
            record_bytes(
                b"\x00", b"\x00", b"\x00", b"\x01", b"\x02v", b"\x02", b"\x02", b"\xff\xfe", b"\x01"
            ),
            id="header-key-not-utf8",
        ),
        pytest.param(
            record_bytes(
                b"\x00",
                b"\x00",
                b"\x00",
                b"\x01",
                b"\x02v",
                b"\x02",
                b"\x02",
                b"hk",
                encode_varint(-3),
            ),
            id="bad-header-value-length",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\xff" * 11, b"\x00", b"\x01", b"\x01", b"\x00"),
            id="overlong-varlong",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\xff\xff\xff\xff\x7f", b"\x01", b"\x01", b"\x00"),
            id="varint-over-32-bits",
        ),
        pytest.param(
            record_bytes(b"\x00", b"\x00", b"\x00", b"\x01", b"\x02v", b"\x00", b"extra"),
            id="bytes-after-fields",
        ),
        pytest.param(encode_varint(20) + b"\x00\x00\x00\x01\x01\x00", id="length-past-end"),
        pytest.param(encode_varint(3) + b"\x00\x00\x00", id="length-below-minimum"),
    ],
)
def test_malformed_records_are_corrupt(record: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        decode_batch(batch_with_records_section(record, 1))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        list(decode_batches(data))


@settings(max_examples=300, deadline=None)
@given(
    section=st.binary(max_size=200),
    records_count=st.integers(-2, 40),
    codec=st.integers(0, 7),
)
def test_random_records_sections_raise_only_codec_errors(
    section: bytes, records_count: int, codec: int
) -> None:
    batch = batch_with_records_section(section, records_count, codec)
    with contextlib.suppress(ProtocolError):
        decode_batch(batch)


@settings(max_examples=300, deadline=None)
@given(
    codec=st.sampled_from(Compression),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_batches_raise_only_codec_errors(
    codec: Compression, edits: list[tuple[int, int]]
) -> None:
    batch = bytearray(encode_batch(sample_records(6), compression=codec))
    for pos, value in edits:
        batch[pos % len(batch)] = value
    with contextlib.suppress(ProtocolError):
        decode_batch(batch, verify_crc=False)


# -- control records ----------------------------------------------------------------------------


@pytest.mark.parametrize("marker_type", list(ControlRecordType))
def test_transaction_markers_round_trip_and_match_an_independent_reader(
    marker_type: ControlRecordType,
) -> None:
    batch = encode_batch(
        [end_transaction_marker_record(marker_type, coordinator_epoch=17, timestamp_ms=99)],
        base_offset=40,
        producer_id=1234,
        producer_epoch=2,
        is_transactional=True,
        is_control=True,
    )
    header, (record,) = decode_batch(batch)
    assert header.is_control and header.is_transactional
    assert control_record_type(record) == marker_type
    marker = decode_end_transaction_marker(record)
    assert marker.type is marker_type
    assert marker.coordinator_epoch == 17
    assert marker.committed is (marker_type is ControlRecordType.COMMIT)

    theirs = DefaultRecordBatch(bytearray(batch))
    assert theirs.is_control_batch
    (their_record,) = list(theirs)
    assert their_record.commit is (marker_type is ControlRecordType.COMMIT)
    assert their_record.abort is (marker_type is ControlRecordType.ABORT)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, b"\x00\x00\x00\x00\x00\x01"),
        (b"\x00\x00", b"\x00\x00\x00\x00\x00\x01"),
        (b"\xff\xff\x00\x01", b"\x00\x00\x00\x00\x00\x01"),
        (b"\x00\x00\x00\x02", b"\x00\x00\x00\x00\x00\x01"),  # leader change: not a marker
        (b"\x00\x00\x00\x01", None),
        (b"\x00\x00\x00\x01", b"\x00\x00\x00"),
    ],
)
def test_malformed_transaction_markers_are_corrupt(key: bytes | None, value: bytes | None) -> None:
    record = Record(offset=0, timestamp_ms=0, key=key, value=value, headers=())
    with pytest.raises(CorruptMessageError):
        decode_end_transaction_marker(record)


def test_control_record_type_passes_unknown_types_through() -> None:
    record = Record(offset=0, timestamp_ms=0, key=b"\x00\x00\x00\x05", value=None, headers=())
    assert control_record_type(record) == 5


def test_batch_header_is_immutable() -> None:
    header: BatchHeader = validate_batch(encode_batch(sample_records(1)))
    with pytest.raises(AttributeError):
        header.base_offset = 5  # type: ignore[misc]
