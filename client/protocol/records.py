"""Kafka's RecordBatch (message format v2): header parsing, validation, encoding, decoding.

A batch on the wire and on disk (all integers big-endian)::

    offset  size  field
         0     8  baseOffset            first offset in the batch
         8     4  batchLength           bytes after this field (total size - 12)
        12     4  partitionLeaderEpoch
        16     1  magic                 2 (0 and 1 are the legacy formats; their magic
                                        byte sits at the same offset)
        17     4  crc                   CRC-32C (Castagnoli) of bytes 21 .. end, unsigned
        21     2  attributes            bits 0-2 codec, 3 timestamp type (1 = log append
                                        time), 4 transactional, 5 control
        23     4  lastOffsetDelta
        27     8  baseTimestamp
        35     8  maxTimestamp
        43     8  producerId
        51     2  producerEpoch
        53     4  baseSequence
        57     4  recordsCount
        61     -  records, compressed as one unit by the codec in the attributes

baseOffset and partitionLeaderEpoch sit outside the CRC, so a broker assigns offsets and
stamps the leader epoch without recomputing it.

Each record (varints are zigzag LEB128, `varint` 32-bit, `varlong` 64-bit)::

    length varint (bytes after this field), attributes int8 (unused),
    timestampDelta varlong, offsetDelta varint,
    keyLength varint (-1 = null), key, valueLength varint (-1 = null), value,
    headerCount varint, then per header:
        keyLength varint, key (UTF-8), valueLength varint (-1 = null), value

A control batch (transaction markers) holds records whose key is
`version int16, type int16` (0 abort, 1 commit) and whose value is
`version int16, coordinatorEpoch int32`.

`parse_batch_header`, `validate_batch`, `iter_batches` and `assign_offsets` are the broker's
path: constant Python work per batch, the CRC computed in C, records never decoded.
Record-level encoding and decoding is for clients; decoding bounds every declared length
and count by the bytes that remain, and decompression by `max_decompressed_bytes`.
Bad input raises only `CorruptMessageError` and its subclasses.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from crc32c import crc32c

from tidelog.client.protocol.compression import Compression, compress, decompress
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    UnsupportedCompressionError,
    UnsupportedMagicError,
)

MAGIC = 2
BATCH_HEADER_BYTES = 61
"""Bytes from baseOffset through recordsCount."""
BATCH_LOG_OVERHEAD = 12
"""baseOffset + batchLength: the bytes that batchLength does not count."""
BATCH_LENGTH_MIN = BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD

_MAGIC_POS = 16
_CRC_POS = 17
_ATTRIBUTES_POS = 21
_MAX_TIMESTAMP_POS = 35
_LEGACY_HEADER_BYTES = _MAGIC_POS + 1

_HEADER = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == BATCH_HEADER_BYTES
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")

_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20

_INT32_MAX = 2**31 - 1

RECORD_BYTES_MIN = 7
"""The smallest record: one byte each for length, attributes, timestampDelta, offsetDelta,
keyLength, valueLength and headerCount."""

Buffer = bytes | bytearray | memoryview


class TimestampType(enum.IntEnum):
    """Attributes bit 3: whether timestamps are the producer's or the broker's append time."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class BatchHeader(NamedTuple):
    """The 61 fixed bytes at the start of a batch, as read; nothing here is validated.

    A NamedTuple rather than a frozen dataclass: it is built once per batch on the
    broker's append path, and tuple construction is several times cheaper."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> Compression:
        """The codec; `UnsupportedCompressionError` for codec numbers 5-7."""
        codec = self.attributes & _CODEC_MASK
        if codec > Compression.ZSTD:
            raise UnsupportedCompressionError(f"unknown compression codec {codec}")
        return Compression(codec)

    @property
    def timestamp_type(self) -> TimestampType:
        if self.attributes & _TIMESTAMP_TYPE_BIT:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def total_bytes(self) -> int:
        """The batch's size on the wire, log overhead included."""
        return self.batch_length + BATCH_LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        """The producer sequence of the last record (-1 without one); wraps past int32 max to 0."""
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) % (_INT32_MAX + 1)


def parse_batch_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """The header of the batch at `buf[pos:]`, without checking the CRC or the records.

    Raises `UnsupportedMagicError` for the legacy formats (magic 0/1) and
    `CorruptMessageError` for a short buffer, any other magic, or a batchLength too small
    to hold the header.
    """
    available = len(buf) - pos
    if pos < 0 or available < BATCH_HEADER_BYTES:
        if available >= _LEGACY_HEADER_BYTES:
            _check_magic(buf[pos + _MAGIC_POS], pos)
        raise CorruptMessageError(
            f"record batch header needs {BATCH_HEADER_BYTES} bytes at position {pos}, "
            f"{max(available, 0)} remain"
        )
    header = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    _check_magic(header.magic, pos)
    if header.batch_length < BATCH_LENGTH_MIN:
        raise CorruptMessageError(
            f"record batch at position {pos} declares batchLength {header.batch_length}, "
            f"less than the {BATCH_LENGTH_MIN}-byte header"
        )
    return header


def _check_magic(magic: int, pos: int) -> None:
    if magic == MAGIC:
        return
    if magic in (0, 1):
        raise UnsupportedMagicError(
            f"legacy message format v{magic} at position {pos} is not accepted; "
            "only record batches (magic 2, Kafka 0.11+) are"
        )
    raise CorruptMessageError(f"unknown record batch magic {magic} at position {pos}")


def validate_batch(buf: Buffer, pos: int = 0) -> BatchHeader:
    """The header of the batch at `buf[pos:]`, after checking the batch as a whole.

    Checks, beyond `parse_batch_header`: the whole batch lies in `buf`; its CRC-32C matches;
    the codec exists; recordsCount >= 0; lastOffsetDelta >= 0 and leaves room for
    recordsCount distinct offsets; an uncompressed records section can hold recordsCount
    records. Never decodes records: O(1) Python work, the CRC runs in C.
    """
    return _check_batch(buf, pos, verify_crc=True)


def _check_batch(buf: Buffer, pos: int, verify_crc: bool) -> BatchHeader:
    header = parse_batch_header(buf, pos)
    end = pos + header.total_bytes
    if end > len(buf):
        raise CorruptMessageError(
            f"record batch at position {pos} needs {header.total_bytes} bytes, "
            f"{len(buf) - pos} remain"
        )
    crc = crc32c(memoryview(buf)[pos + _ATTRIBUTES_POS : end]) if verify_crc else header.crc
    if crc != header.crc:
        raise CorruptMessageError(
            f"record batch at position {pos} has CRC {header.crc:#010x}, "
            f"its contents give {crc:#010x}"
        )
    codec = header.compression
    count = header.records_count
    if count < 0:
        raise CorruptMessageError(f"record batch at position {pos} has recordsCount {count}")
    if header.last_offset_delta < 0 or count > header.last_offset_delta + 1:
        raise CorruptMessageError(
            f"record batch at position {pos} has lastOffsetDelta {header.last_offset_delta} "
            f"for {count} records"
        )
    records_bytes = header.batch_length - BATCH_LENGTH_MIN
    if codec is Compression.NONE and count * RECORD_BYTES_MIN > records_bytes:
        raise CorruptMessageError(
            f"record batch at position {pos} declares {count} records in {records_bytes} bytes"
        )
    return header


def iter_batches(buf: Buffer, *, allow_partial_tail: bool = False) -> Iterator[BatchHeader]:
    """`validate_batch` for each batch laid end to end in `buf`.

    A trailing partial batch raises `CorruptMessageError`, unless `allow_partial_tail`: a
    fetch response may end in a batch cut at the fetch size, which readers skip. The cut
    batch must still be a v2 batch as far as its header is present.
    """
    pos = 0
    size = len(buf)
    while pos < size:
        if allow_partial_tail and _is_partial_tail(buf, pos):
            return
        header = validate_batch(buf, pos)
        yield header
        pos += header.total_bytes


def _is_partial_tail(buf: Buffer, pos: int) -> bool:
    available = len(buf) - pos
    if available < _LEGACY_HEADER_BYTES:
        return True
    _check_magic(buf[pos + _MAGIC_POS], pos)
    if available < BATCH_HEADER_BYTES:
        return True
    return parse_batch_header(buf, pos).total_bytes > available


def assign_offsets(
    batch: bytearray | memoryview,
    pos: int,
    base_offset: int,
    log_append_time_ms: int | None = None,
) -> None:
    """Rewrite, in place, the batch at `batch[pos:]` to start at `base_offset`.

    baseOffset is outside the CRC. With `log_append_time_ms`, the batch also gets timestamp
    type LOG_APPEND_TIME and that maxTimestamp (readers then use it as every record's
    timestamp), and its CRC is recomputed, as Kafka's broker does for topics with
    `message.timestamp.type=LogAppendTime`. `batch` must be writable and hold the whole batch.
    """
    header = parse_batch_header(batch, pos)
    end = pos + header.total_bytes
    if end > len(batch):
        raise CorruptMessageError(
            f"record batch at position {pos} needs {header.total_bytes} bytes, "
            f"{len(batch) - pos} remain"
        )
    _I64.pack_into(batch, pos, base_offset)
    if log_append_time_ms is None:
        return
    _I16.pack_into(batch, pos + _ATTRIBUTES_POS, header.attributes | _TIMESTAMP_TYPE_BIT)
    _I64.pack_into(batch, pos + _MAX_TIMESTAMP_POS, log_append_time_ms)
    _U32.pack_into(batch, pos + _CRC_POS, crc32c(memoryview(batch)[pos + _ATTRIBUTES_POS : end]))


DECOMPRESSED_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
"""How much a compressed batch may expand to, unless the caller says otherwise."""

RecordHeader = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class RecordInput:
    """A record to encode; its offset is its position in the batch."""

    value: bytes | None
    key: bytes | None = None
    headers: Sequence[RecordHeader] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded record; `timestamp_ms` is the batch's maxTimestamp under LOG_APPEND_TIME."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[RecordHeader, ...]


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MASK = 2**64 - 1
_TABLED_VARINTS = 8192
"""Zigzag encodings of 0..8191 (one or two bytes) are precomputed: record lengths, offset
deltas and small timestamp deltas, the bulk of a batch's varints."""


def _zigzag_uncached(v: int) -> bytes:
    z = ((v << 1) ^ (v >> 63)) & _UINT64_MASK
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_VARINTS = tuple(_zigzag_uncached(v) for v in range(_TABLED_VARINTS))
_NULL_LENGTH = b"\x01"  # zigzag(-1)
_ATTRIBUTES_ZERO = b"\x00"


def _zigzag(v: int) -> bytes:
    """Zigzag LEB128 bytes of a signed 64-bit int; 0..8191 come from a table."""
    if 0 <= v < _TABLED_VARINTS:
        return _SMALL_VARINTS[v]
    return _zigzag_uncached(v)


def encode_batch(
    records: Sequence[RecordInput],
    *,
    base_offset: int = 0,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = -1,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    compression_level: int | None = None,
) -> bytes:
    """One record batch holding `records` at offsets `base_offset`, `base_offset + 1`, ...

    baseTimestamp is the first record's timestamp and maxTimestamp the largest, as Kafka's
    producer writes them. Raises ValueError for an empty `records` or a timestamp spread
    beyond int64.
    """
    if not records:
        raise ValueError("a record batch holds at least one record")
    compression = Compression(compression)
    base_timestamp = records[0].timestamp_ms
    max_timestamp = base_timestamp
    zigzag = _zigzag
    parts: list[bytes] = []
    append = parts.append
    for offset_delta, record in enumerate(records):
        timestamp = record.timestamp_ms
        if timestamp > max_timestamp:
            max_timestamp = timestamp
        timestamp_delta = timestamp - base_timestamp
        if not _INT64_MIN <= timestamp_delta <= _INT64_MAX:
            raise ValueError(f"timestamp {timestamp} is too far from the first, {base_timestamp}")
        key = record.key
        value = record.value
        body = [
            _ATTRIBUTES_ZERO,
            zigzag(timestamp_delta),
            zigzag(offset_delta),
            _NULL_LENGTH if key is None else zigzag(len(key)),
            b"" if key is None else key,
            _NULL_LENGTH if value is None else zigzag(len(value)),
            b"" if value is None else value,
            zigzag(len(record.headers)),
        ]
        for header_key, header_value in record.headers:
            key_bytes = header_key.encode("utf-8")
            body.append(zigzag(len(key_bytes)))
            body.append(key_bytes)
            if header_value is None:
                body.append(_NULL_LENGTH)
            else:
                body.append(zigzag(len(header_value)))
                body.append(header_value)
        encoded = b"".join(body)
        append(zigzag(len(encoded)))
        append(encoded)
    records_section = b"".join(parts)
    if compression is not Compression.NONE:
        records_section = compress(compression, records_section, compression_level)
    attributes = compression.value
    if timestamp_type is TimestampType.LOG_APPEND_TIME:
        attributes |= _TIMESTAMP_TYPE_BIT
    if is_transactional:
        attributes |= _TRANSACTIONAL_BIT
    if is_control:
        attributes |= _CONTROL_BIT
    out = bytearray(BATCH_HEADER_BYTES)
    out += records_section
    _HEADER.pack_into(
        out,
        0,
        base_offset,
        len(out) - BATCH_LOG_OVERHEAD,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        len(records) - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    _U32.pack_into(out, _CRC_POS, crc32c(memoryview(out)[_ATTRIBUTES_POS:]))
    return bytes(out)


def decode_batch(
    buf: Buffer,
    pos: int = 0,
    *,
    max_decompressed_bytes: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
    verify_crc: bool = True,
) -> tuple[BatchHeader, list[Record]]:
    """The header and records of the batch at `buf[pos:]`.

    Checks everything `validate_batch` does (the CRC only with `verify_crc`), decompresses
    at most `max_decompressed_bytes`, and requires the records section to hold exactly
    recordsCount well-formed records. Raises `CorruptMessageError` (or a subclass) otherwise.
    """
    header = _check_batch(buf, pos, verify_crc)
    section = memoryview(buf)[pos + BATCH_HEADER_BYTES : pos + header.total_bytes]
    codec = header.compression
    if codec is Compression.NONE:
        data = bytes(section)
    else:
        data = decompress(codec, section, max_decompressed_bytes)
    return header, _decode_records(data, header)


def decode_batches(
    buf: Buffer,
    *,
    max_decompressed_bytes: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
    verify_crc: bool = True,
    allow_partial_tail: bool = False,
) -> Iterator[tuple[BatchHeader, list[Record]]]:
    """`decode_batch` for each batch laid end to end in `buf` (see `iter_batches`)."""
    pos = 0
    size = len(buf)
    while pos < size:
        if allow_partial_tail and _is_partial_tail(buf, pos):
            return
        header, records = decode_batch(
            buf, pos, max_decompressed_bytes=max_decompressed_bytes, verify_crc=verify_crc
        )
        yield header, records
        pos += header.total_bytes


_ZIGZAG_BYTE = tuple((b >> 1) ^ -(b & 1) for b in range(0x80))
"""The value of each single-byte zigzag varint."""


def _read_varint(data: bytes, pos: int, bits: int) -> tuple[int, int]:
    """The zigzag varint of at most `bits` bits at `data[pos:]`, and the position after it.

    Raises IndexError past the end of `data` (the caller reports it as corruption).
    """
    b = data[pos]
    if b < 0x80:
        return _ZIGZAG_BYTE[b], pos + 1
    result = b & 0x7F
    b = data[pos + 1]
    if b < 0x80:
        result |= b << 7
        return (result >> 1) ^ -(result & 1), pos + 2
    end = pos + (bits + 6) // 7
    shift = 7
    pos += 1
    while True:
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            break
        if pos >= end:
            raise CorruptMessageError(f"varint longer than {bits} bits")
        b = data[pos]
        shift += 7
    if result >> bits:
        raise CorruptMessageError(f"varint value exceeds {bits} bits")
    return (result >> 1) ^ -(result & 1), pos


def _decode_records(data: bytes, header: BatchHeader) -> list[Record]:
    """The records of an uncompressed records section, bounded by its length."""
    count = header.records_count
    end = len(data)
    if count * RECORD_BYTES_MIN > end:
        raise CorruptMessageError(f"{count} records declared in {end} bytes")
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    log_append_time = header.attributes & _TIMESTAMP_TYPE_BIT
    append_timestamp = header.max_timestamp
    read_varint = _read_varint
    zigzag_byte = _ZIGZAG_BYTE
    records: list[Record] = []
    append = records.append
    pos = 0
    # Single-byte varints (most lengths and deltas) are decoded inline: this loop is the
    # client's per-record cost.
    try:
        for _ in range(count):
            b = data[pos]
            if b < 0x80:
                length = zigzag_byte[b]
                pos += 1
            else:
                length, pos = read_varint(data, pos, 32)
            record_end = pos + length
            if length < RECORD_BYTES_MIN - 1 or record_end > end:
                raise CorruptMessageError(
                    f"record of {length} bytes at position {pos}, {end - pos} bytes remain"
                )
            # pos + 1: the record attributes byte defines no bits.
            timestamp_delta, pos = read_varint(data, pos + 1, 64)
            b = data[pos]
            if b < 0x80:
                offset_delta = zigzag_byte[b]
                pos += 1
            else:
                offset_delta, pos = read_varint(data, pos, 32)

            b = data[pos]
            if b < 0x80:
                n = zigzag_byte[b]
                pos += 1
            else:
                n, pos = read_varint(data, pos, 32)
            if n >= 0:
                if pos + n > record_end:
                    raise CorruptMessageError(f"record key of {n} bytes overruns its record")
                key: bytes | None = data[pos : pos + n]
                pos += n
            elif n == -1:
                key = None
            else:
                raise CorruptMessageError(f"record key length {n}")

            b = data[pos]
            if b < 0x80:
                n = zigzag_byte[b]
                pos += 1
            else:
                n, pos = read_varint(data, pos, 32)
            if n >= 0:
                if pos + n > record_end:
                    raise CorruptMessageError(f"record value of {n} bytes overruns its record")
                value: bytes | None = data[pos : pos + n]
                pos += n
            elif n == -1:
                value = None
            else:
                raise CorruptMessageError(f"record value length {n}")

            if data[pos] == 0:
                headers: tuple[RecordHeader, ...] = ()
                pos += 1
            else:
                header_count, pos = read_varint(data, pos, 32)
                headers, pos = _decode_headers(data, pos, record_end, header_count)

            if pos != record_end:
                raise CorruptMessageError(
                    f"record declares {length} bytes but its fields end {pos - record_end:+d} "
                    "bytes from there"
                )
            append(
                Record(
                    base_offset + offset_delta,
                    append_timestamp if log_append_time else base_timestamp + timestamp_delta,
                    key,
                    value,
                    headers,
                )
            )
    except IndexError:
        raise CorruptMessageError("records section ends inside a record") from None
    if pos != end:
        raise CorruptMessageError(
            f"{end - pos} bytes remain after the {count} records the batch declares"
        )
    return records


def _decode_headers(
    data: bytes, pos: int, record_end: int, count: int
) -> tuple[tuple[RecordHeader, ...], int]:
    # Each header takes at least two bytes (two lengths): bounds the count before the loop.
    if count < 0 or 2 * count > record_end - pos:
        raise CorruptMessageError(f"record header count {count} in {record_end - pos} bytes")
    headers: list[RecordHeader] = []
    for _ in range(count):
        n, pos = _read_varint(data, pos, 32)
        if n < 0 or pos + n > record_end:
            raise CorruptMessageError(f"record header key of length {n} overruns its record")
        try:
            name = str(data[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptMessageError(f"record header key is not UTF-8: {exc}") from None
        pos += n
        n, pos = _read_varint(data, pos, 32)
        if n < -1 or pos + n > record_end:
            raise CorruptMessageError(f"record header value of length {n} overruns its record")
        if n == -1:
            headers.append((name, None))
        else:
            headers.append((name, data[pos : pos + n]))
            pos += n
    return tuple(headers), pos


class ControlRecordType(enum.IntEnum):
    """The type in a control record's key; other numbers are control records (KRaft's)
    that transactions do not use."""

    ABORT = 0
    COMMIT = 1


CONTROL_RECORD_VERSION = 0
_CONTROL_KEY = struct.Struct(">hh")
_END_TXN_VALUE = struct.Struct(">hi")


@dataclass(frozen=True, slots=True)
class EndTransactionMarker:
    """The control record that commits or aborts a producer's transaction in a partition."""

    type: ControlRecordType
    coordinator_epoch: int

    @property
    def committed(self) -> bool:
        return self.type is ControlRecordType.COMMIT


def control_record_type(record: Record) -> int:
    """The type number in the key of a record from a control batch (see ControlRecordType)."""
    key = record.key
    if key is None or len(key) < _CONTROL_KEY.size:
        raise CorruptMessageError("control record key is missing or shorter than 4 bytes")
    version, type_ = _CONTROL_KEY.unpack_from(key)
    if version < 0:
        raise CorruptMessageError(f"control record key version {version}")
    return int(type_)


def decode_end_transaction_marker(record: Record) -> EndTransactionMarker:
    """The commit/abort marker in a record from a control batch.

    Raises `CorruptMessageError` when the record is another kind of control record or its
    value is malformed. Fields that later value versions append are ignored.
    """
    type_ = control_record_type(record)
    if type_ not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        raise CorruptMessageError(f"control record of type {type_} is not a transaction marker")
    value = record.value
    if value is None or len(value) < _END_TXN_VALUE.size:
        raise CorruptMessageError("transaction marker value is missing or shorter than 6 bytes")
    version, coordinator_epoch = _END_TXN_VALUE.unpack_from(value)
    if version < 0:
        raise CorruptMessageError(f"transaction marker value version {version}")
    return EndTransactionMarker(ControlRecordType(type_), int(coordinator_epoch))


def end_transaction_marker_record(
    type_: ControlRecordType, coordinator_epoch: int, timestamp_ms: int
) -> RecordInput:
    """The record of a commit/abort marker, for `encode_batch(..., is_control=True,
    is_transactional=True)` with the producer's id and epoch."""
    return RecordInput(
        key=_CONTROL_KEY.pack(CONTROL_RECORD_VERSION, type_),
        value=_END_TXN_VALUE.pack(CONTROL_RECORD_VERSION, coordinator_epoch),
        timestamp_ms=timestamp_ms,
    )
