"""The record batch compression codecs, with decompression bounded by the caller's limit.

Formats, as Kafka clients write them:

- GZIP: a gzip stream (RFC 1952), possibly several members back to back.
- SNAPPY: Java's xerial framing: the magic ``b"\\x82SNAPPY\\x00"``, two int32 version fields
  (not checked: writers disagree on their byte order), then blocks of big-endian int32
  length + raw snappy block. A raw snappy block without framing is read too. Compression
  writes xerial framing in 32 KiB blocks, as the Java client does; librdkafka and
  kafka-python read it.
- LZ4: the LZ4 frame format; written with independent 64 KiB blocks, which Java's reader
  requires.
- ZSTD: zstd frames, with or without a declared content size.

`decompress` never holds more than `max_bytes` of output: it raises `DecompressionLimitError`
as soon as the output would pass the limit, and `CorruptMessageError` for anything that is
not valid compressed data of the codec. gzip is inflated a chunk at a time; snappy blocks
declare their size, checked before each block; lz4 and zstd frames are decoded by cramjam
into a buffer of fixed size, at which the decoder stops (zstandard's streaming reader is
not used to decode: it reports a truncated frame as a clean end of data).
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable

import cramjam
import zstandard

from tidelog.client.protocol.errors import (
    CorruptMessageError,
    DecompressionLimitError,
    UnsupportedCompressionError,
)

Buffer = bytes | bytearray | memoryview


class Compression(enum.IntEnum):
    """The codec in record batch attributes bits 0-2; it compresses the records section."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_HEADER_BYTES = len(_XERIAL_HEADER)
XERIAL_BLOCK_BYTES = 32 * 1024
_I32 = struct.Struct(">i")

ZSTD_LEVEL_DEFAULT = 3
_LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
_LZ4_CONTENT_SIZE_FLAG = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS

_OUTPUT_CHUNK_BYTES = 1024 * 1024
"""Output produced per step by the incremental decompressors (gzip)."""
_INITIAL_CAPACITY_BYTES = 64 * 1024
_EXPANSION_GUESS = 8
"""Output buffer for lz4/zstd frames that do not declare their size, as a multiple of the
input; it quadruples (up to the limit) when the output does not fit."""
_OUTPUT_FULL_MESSAGE = "failed to write whole buffer"
"""cramjam's error text when decompressed output does not fit the buffer it was given."""


def compress(codec: Compression, data: Buffer, level: int | None = None) -> bytes:
    """`data` compressed with `codec`, in the format Kafka clients read (see module doc).

    `level` is the codec's own level; None picks the codec's default (gzip 6, lz4 fast,
    zstd 3; snappy has none).
    """
    codec = _codec(codec)
    if codec is Compression.NONE:
        return bytes(data)
    if codec is Compression.GZIP:
        compressor = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION if level is None else level, zlib.DEFLATED, _GZIP_WBITS
        )
        return compressor.compress(data) + compressor.flush()
    if codec is Compression.SNAPPY:
        return _xerial_compress(data)
    if codec is Compression.LZ4:
        frame = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
        frame.compress(bytes(data))
        return bytes(frame.finish())
    if codec is Compression.ZSTD:
        return zstandard.ZstdCompressor(
            level=ZSTD_LEVEL_DEFAULT if level is None else level
        ).compress(data)
    raise AssertionError(f"codec {codec!r} has no compressor")


def decompress(codec: Compression, data: Buffer, max_bytes: int) -> bytes:
    """`data` decompressed with `codec`, at most `max_bytes` of it.

    Raises `DecompressionLimitError` when the output would exceed `max_bytes` (having held
    at most `max_bytes` of it), `CorruptMessageError` when `data` is not valid for the codec.
    """
    codec = _codec(codec)
    if codec is Compression.NONE:
        if len(data) > max_bytes:
            raise _limit_error(max_bytes)
        return bytes(data)
    if codec is Compression.GZIP:
        return _gzip_decompress(data, max_bytes)
    if codec is Compression.SNAPPY:
        if data[:8] == XERIAL_MAGIC:
            return _xerial_decompress(data, max_bytes)
        return _snappy_raw_decompress(data, max_bytes)
    if codec is Compression.LZ4:
        return _decompress_into_buffer(
            cramjam.lz4.decompress_into, "lz4", data, _lz4_content_size(data), max_bytes
        )
    if codec is Compression.ZSTD:
        return _decompress_into_buffer(
            cramjam.zstd.decompress_into, "zstd", data, _zstd_content_size(data), max_bytes
        )
    raise AssertionError(f"codec {codec!r} has no decompressor")


def _codec(codec: int) -> Compression:
    try:
        return Compression(codec)
    except ValueError:
        raise UnsupportedCompressionError(f"unknown compression codec {codec}") from None


def _limit_error(max_bytes: int) -> DecompressionLimitError:
    return DecompressionLimitError(f"decompressed records exceed the limit of {max_bytes} bytes")


def _gzip_decompress(data: Buffer, max_bytes: int) -> bytes:
    out = bytearray()
    pending = bytes(data)
    if not pending.startswith(_GZIP_MAGIC):
        raise CorruptMessageError("gzip data does not start with the gzip magic")
    # Every step produces output (bounded by the limit) or consumes input (bounded by its
    # length), else the data ended inside a member: the loops are bounded.
    while pending:
        member = zlib.decompressobj(_GZIP_WBITS)
        while not member.eof:
            room = max_bytes + 1 - len(out)
            try:
                chunk = member.decompress(pending, min(room, _OUTPUT_CHUNK_BYTES))
            except zlib.error as exc:
                raise CorruptMessageError(f"corrupt gzip data: {exc}") from None
            out += chunk
            if len(out) > max_bytes:
                raise _limit_error(max_bytes)
            if not chunk and len(member.unconsumed_tail) == len(pending) and not member.eof:
                raise CorruptMessageError("gzip data ends inside a member")
            pending = member.unconsumed_tail
        pending = member.unused_data
        if pending and not pending.startswith(_GZIP_MAGIC):
            raise CorruptMessageError(f"{len(pending)} bytes of garbage after gzip data")
    return bytes(out)


def _xerial_compress(data: Buffer) -> bytes:
    view = memoryview(data)
    parts = [_XERIAL_HEADER]
    for start in range(0, len(view), XERIAL_BLOCK_BYTES):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + XERIAL_BLOCK_BYTES]))
        parts.append(_I32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _xerial_decompress(data: Buffer, max_bytes: int) -> bytes:
    view = memoryview(data)
    if len(view) < _XERIAL_HEADER_BYTES:
        raise CorruptMessageError("snappy xerial header is truncated")
    blocks: list[bytes] = []
    total = 0
    pos = _XERIAL_HEADER_BYTES
    end = len(view)
    # Each iteration consumes at least the 4-byte block length.
    while pos < end:
        if end - pos < _I32.size:
            raise CorruptMessageError("snappy xerial block length is truncated")
        (length,) = _I32.unpack_from(view, pos)
        pos += _I32.size
        if length < 0 or length > end - pos:
            raise CorruptMessageError(
                f"snappy xerial block of {length} bytes, {end - pos} bytes remain"
            )
        block = _snappy_raw_decompress(view[pos : pos + length], max_bytes - total)
        total += len(block)
        blocks.append(block)
        pos += length
    return b"".join(blocks)


def _snappy_raw_decompress(data: Buffer, max_bytes: int) -> bytes:
    try:
        # The block's preamble declares its exact output size: checked before allocating.
        if cramjam.snappy.decompress_raw_len(data) > max_bytes:
            raise _limit_error(max_bytes)
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise CorruptMessageError(f"corrupt snappy data: {exc}") from None


def _lz4_content_size(data: Buffer) -> int | None:
    """The content size an lz4 frame header declares, if it declares one."""
    if len(data) >= 14 and data[:4] == _LZ4_FRAME_MAGIC and data[4] & _LZ4_CONTENT_SIZE_FLAG:
        return int.from_bytes(data[6:14], "little")
    return None


def _zstd_content_size(data: Buffer) -> int | None:
    """The content size a zstd frame header declares, if it declares one."""
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return None  # the decoder reports what is wrong with the header
    return size if size >= 0 else None


def _decompress_into_buffer(
    decompress_into: Callable[[Buffer, bytearray], int],
    codec_name: str,
    data: Buffer,
    declared_size: int | None,
    max_bytes: int,
) -> bytes:
    """Decompress with a cramjam `decompress_into`, which stops when its buffer is full.

    The buffer starts at the frame's declared size (a hint the decoder verifies) or a guess,
    and grows up to `max_bytes`; output that does not fit `max_bytes` is over the limit.
    """
    if declared_size is not None and declared_size > max_bytes:
        raise _limit_error(max_bytes)
    if declared_size is not None:
        capacity = declared_size
    else:
        capacity = min(max_bytes, max(_INITIAL_CAPACITY_BYTES, _EXPANSION_GUESS * len(data)))
    # Capacity at least quadruples per retry and stops at max_bytes: a few iterations.
    while True:
        out = bytearray(capacity)
        try:
            size = decompress_into(data, out)
        except cramjam.DecompressionError as exc:
            if _OUTPUT_FULL_MESSAGE not in str(exc):
                raise CorruptMessageError(f"corrupt {codec_name} data: {exc}") from None
            if capacity >= max_bytes:
                raise _limit_error(max_bytes) from None
            capacity = min(max_bytes, max(capacity * 4, _INITIAL_CAPACITY_BYTES))
            del out  # before allocating the next buffer: at most one is held
            continue
        return bytes(memoryview(out)[:size])
