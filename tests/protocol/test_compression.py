"""The compression codecs: formats other Kafka clients read and write, bounded decompression,
and corrupt input reported as `CorruptMessageError` only.

Independent implementations check the formats: Python's gzip module, kafka-python's xerial
framing, the zstandard library, and frames built by cramjam's own defaults.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.codec import snappy_decode, snappy_encode

from tests.protocol import kafka_python_codecs
from tidelog.client.protocol.compression import (
    XERIAL_BLOCK_BYTES,
    XERIAL_MAGIC,
    Compression,
    compress,
    decompress,
)
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    DecompressionLimitError,
    UnsupportedCompressionError,
)

CODECS = [c for c in Compression if c is not Compression.NONE]
LIMIT_BYTES = 64 * 1024 * 1024
BOMB_BYTES = 1024 * 1024 * 1024
_MIB = 1024 * 1024

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module", autouse=True)
def _kafka_python_snappy() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        kafka_python_codecs.install(monkeypatch)
        yield


# Compressible data of any size without drawing every byte: a drawn pattern repeated.
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda pattern, n: pattern * n, st.binary(min_size=1, max_size=40), st.integers(1, 5000)
    ),
)


@PROPERTY_SETTINGS
@given(data=payloads, codec=st.sampled_from(Compression))
def test_round_trip(data: bytes, codec: Compression) -> None:
    assert decompress(codec, compress(codec, data), len(data)) == data


@pytest.mark.parametrize(
    ("codec", "level"),
    [
        (Compression.GZIP, 1),
        (Compression.GZIP, 9),
        (Compression.LZ4, 9),
        (Compression.ZSTD, 1),
        (Compression.ZSTD, 19),
    ],
)
def test_levels_round_trip(codec: Compression, level: int) -> None:
    data = b"".join(b"record %d of the batch;" % i for i in range(3000))
    assert decompress(codec, compress(codec, data, level), len(data)) == data


@pytest.mark.parametrize("codec", list(Compression))
def test_limit_allows_exactly_max_bytes(codec: Compression) -> None:
    data = bytes(range(256)) * 1000
    compressed = compress(codec, data)
    assert decompress(codec, compressed, len(data)) == data
    with pytest.raises(DecompressionLimitError):
        decompress(codec, compressed, len(data) - 1)


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(UnsupportedCompressionError):
        compress(5, b"x")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedCompressionError):
        decompress(7, b"x", 100)  # type: ignore[arg-type]


# -- gzip ---------------------------------------------------------------------------------------


def test_gzip_is_a_gzip_stream() -> None:
    data = b"gzip me " * 1000
    assert gzip.decompress(compress(Compression.GZIP, data)) == data


def test_gzip_reads_other_writers_and_multiple_members() -> None:
    data = b"abc" * 5000
    with_name = bytearray()
    with gzip.GzipFile(filename="records.bin", mode="wb", fileobj=_Sink(with_name), mtime=7) as f:
        f.write(data)
    assert decompress(Compression.GZIP, bytes(with_name), len(data)) == data
    two_members = gzip.compress(data[:100]) + gzip.compress(data[100:])
    assert decompress(Compression.GZIP, two_members, len(data)) == data


def test_gzip_garbage_after_the_stream_is_corrupt() -> None:
    with pytest.raises(CorruptMessageError, match="garbage"):
        decompress(Compression.GZIP, gzip.compress(b"abc") + b"junk", 100)


class _Sink:
    def __init__(self, out: bytearray) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out += data
        return len(data)

    def flush(self) -> None:
        pass


# -- snappy -------------------------------------------------------------------------------------


def test_snappy_is_xerial_framed_in_java_sized_blocks() -> None:
    data = bytes(range(256)) * 600  # 150 KiB: several 32 KiB blocks
    compressed = compress(Compression.SNAPPY, data)
    assert compressed.startswith(XERIAL_MAGIC + struct.pack(">ii", 1, 1))
    assert snappy_decode(compressed) == data  # kafka-python's xerial reader
    # Walk the framing with the format's own rules: big-endian length, raw block.
    pos, blocks = 16, []
    while pos < len(compressed):
        (length,) = struct.unpack_from(">i", compressed, pos)
        blocks.append(bytes(cramjam.snappy.decompress_raw(compressed[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    assert [len(b) for b in blocks[:-1]] == [XERIAL_BLOCK_BYTES] * (len(blocks) - 1)
    assert b"".join(blocks) == data


def test_snappy_reads_other_xerial_writers_and_raw_blocks() -> None:
    data = b"snappy " * 20_000
    assert decompress(Compression.SNAPPY, snappy_encode(data), len(data)) == data
    assert (
        decompress(Compression.SNAPPY, snappy_encode(data, xerial_blocksize=4096), len(data))
        == data
    )
    raw = bytes(cramjam.snappy.compress_raw(data))
    assert decompress(Compression.SNAPPY, raw, len(data)) == data


def test_snappy_xerial_version_fields_are_not_checked() -> None:
    data = b"little-endian versions " * 100
    framed = compress(Compression.SNAPPY, data)
    other_byte_order = XERIAL_MAGIC + struct.pack("<ii", 1, 1) + framed[16:]
    assert decompress(Compression.SNAPPY, other_byte_order, len(data)) == data


@pytest.mark.parametrize(
    "framed",
    [
        pytest.param(XERIAL_MAGIC + b"\x00\x00\x00\x01", id="short-header"),
        pytest.param(XERIAL_MAGIC + bytes(8) + b"\x00\x00", id="short-length"),
        pytest.param(XERIAL_MAGIC + bytes(8) + b"\xff\xff\xff\xff", id="negative-length"),
        pytest.param(XERIAL_MAGIC + bytes(8) + b"\x00\x00\x10\x00abc", id="length-past-end"),
    ],
)
def test_snappy_broken_framing_is_corrupt(framed: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        decompress(Compression.SNAPPY, framed, 1000)


def test_snappy_raw_block_declaring_a_huge_size_is_refused_before_allocating() -> None:
    declares_a_gib = bytes(cramjam.snappy.compress_raw(b"x"))
    declares_a_gib = bytes([0x80, 0x80, 0x80, 0x80, 0x04]) + declares_a_gib[1:]
    with pytest.raises(DecompressionLimitError):
        decompress(Compression.SNAPPY, declares_a_gib, LIMIT_BYTES)


# -- lz4 ----------------------------------------------------------------------------------------

LZ4_MAGIC = b"\x04\x22\x4d\x18"


def test_lz4_frames_use_independent_blocks_as_java_requires() -> None:
    compressed = compress(Compression.LZ4, b"lz4 " * 50_000)
    assert compressed.startswith(LZ4_MAGIC)
    flags = compressed[4]
    assert flags >> 6 == 0b01  # frame format version
    assert flags & 0x20  # block independence


def test_lz4_reads_linked_blocks_checksums_and_concatenated_frames() -> None:
    data = bytes(range(200)) * 2000
    linked = cramjam.lz4.Compressor(content_checksum=True, block_linked=True)
    linked.compress(data)
    frame = bytes(linked.finish())
    assert not frame[4] & 0x20
    assert decompress(Compression.LZ4, frame, len(data)) == data
    assert decompress(Compression.LZ4, frame + frame, 2 * len(data)) == data + data


def test_lz4_content_size_over_the_limit_is_refused_up_front() -> None:
    data = b"z" * 10_000
    frame = bytes(cramjam.lz4.compress(data))
    # Declare a content size: set the flag, insert 8 bytes, fix the header checksum byte.
    descriptor = bytes([frame[4] | 0x08, frame[5]]) + struct.pack("<Q", 2**40)
    header_checksum = (_xxh32(descriptor) >> 8) & 0xFF
    with_size = LZ4_MAGIC + descriptor + bytes([header_checksum]) + frame[7:]
    with pytest.raises(DecompressionLimitError):
        decompress(Compression.LZ4, with_size, LIMIT_BYTES)


def _xxh32(data: bytes) -> int:
    return int(xxhash.xxh32_intdigest(data))


# -- zstd ---------------------------------------------------------------------------------------


def test_zstd_is_read_by_zstandard() -> None:
    data = b"zstd " * 30_000
    assert zstandard.ZstdDecompressor().decompress(compress(Compression.ZSTD, data)) == data


def test_zstd_reads_streaming_frames_without_content_size() -> None:
    data = b"streamed " * 40_000
    streamer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = streamer.compress(data) + streamer.flush()
    assert zstandard.frame_content_size(frame) == -1
    assert decompress(Compression.ZSTD, frame, len(data)) == data
    with pytest.raises(DecompressionLimitError):
        decompress(Compression.ZSTD, frame, len(data) - 1)


def test_zstd_reads_concatenated_and_skippable_frames() -> None:
    one = zstandard.ZstdCompressor().compress(b"first ")
    two = zstandard.ZstdCompressor().compress(b"second")
    skippable = struct.pack("<II", 0x184D2A50, 3) + b"abc"
    assert decompress(Compression.ZSTD, one + skippable + two, 100) == b"first second"


# -- corrupt input ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_truncation_is_corrupt(codec: Compression) -> None:
    data = b"".join(b"truncate me %d " % i for i in range(2000))
    compressed = compress(codec, data)
    for size in range(0, len(compressed), max(1, len(compressed) // 300)):
        if codec is Compression.SNAPPY:
            # xerial framing has no end marker: a cut at a block boundary is a shorter stream.
            with contextlib.suppress(CorruptMessageError):
                assert data.startswith(decompress(codec, compressed[:size], len(data)))
        else:
            with pytest.raises(CorruptMessageError):
                decompress(codec, compressed[:size], len(data))


@settings(max_examples=200, deadline=None)
@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=200))
def test_random_bytes_raise_only_corrupt_message(codec: Compression, data: bytes) -> None:
    with contextlib.suppress(CorruptMessageError):
        decompress(codec, data, 10_000)


@settings(max_examples=200, deadline=None)
@given(
    codec=st.sampled_from(CODECS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_data_raises_only_corrupt_message(
    codec: Compression, edits: list[tuple[int, int]]
) -> None:
    compressed = bytearray(compress(codec, b"".join(b"mutate %d " % i for i in range(500))))
    for pos, value in edits:
        compressed[pos % len(compressed)] = value
    with contextlib.suppress(CorruptMessageError):
        decompress(codec, bytes(compressed), 1_000_000)


# -- decompression bombs ------------------------------------------------------------------------


def gzip_of_zeros(total_bytes: int, chunk_bytes: int = _MIB) -> bytes:
    """A single-member gzip stream of `total_bytes` zeros, built without holding them.

    After a full flush deflate starts over with an empty window, so every later chunk
    compresses to the same bytes; the trailer's CRC-32 and size are computed separately.
    """
    chunk = bytes(chunk_bytes)
    chunks = total_bytes // chunk_bytes
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    final_block = compressor.flush()[:-8]
    crc = 0
    for _ in range(chunks):
        crc = zlib.crc32(chunk, crc)
    trailer = struct.pack("<II", crc, total_bytes & 0xFFFFFFFF)
    return first + repeated * (chunks - 1) + final_block + trailer


def snappy_of_zeros(total_bytes: int, chunk_bytes: int = _MIB) -> bytes:
    block = bytes(cramjam.snappy.compress_raw(bytes(chunk_bytes)))
    framed_block = struct.pack(">i", len(block)) + block
    return XERIAL_MAGIC + struct.pack(">ii", 1, 1) + framed_block * (total_bytes // chunk_bytes)


def lz4_of_zeros(total_bytes: int, chunk_bytes: int = _MIB) -> bytes:
    frame = cramjam.lz4.Compressor(block_linked=False)
    chunk = bytes(chunk_bytes)
    parts = []
    for _ in range(total_bytes // chunk_bytes):
        frame.compress(chunk)
        parts.append(bytes(frame.flush()))
    parts.append(bytes(frame.finish()))
    return b"".join(parts)


def zstd_of_zeros(total_bytes: int, chunk_bytes: int = _MIB) -> bytes:
    """A streaming zstd frame: no content size in its header to refuse it by."""
    streamer = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    chunk = bytes(chunk_bytes)
    parts = [streamer.compress(chunk) for _ in range(total_bytes // chunk_bytes)]
    parts.append(streamer.flush())
    return b"".join(parts)


BOMB_BUILDERS = {
    Compression.GZIP: gzip_of_zeros,
    Compression.SNAPPY: snappy_of_zeros,
    Compression.LZ4: lz4_of_zeros,
    Compression.ZSTD: zstd_of_zeros,
}


@pytest.mark.parametrize("codec", CODECS)
def test_bomb_builders_make_what_they_say(codec: Compression) -> None:
    small = BOMB_BUILDERS[codec](4 * _MIB, chunk_bytes=_MIB)
    assert decompress(codec, small, 4 * _MIB) == bytes(4 * _MIB)


@pytest.fixture(scope="module")
def bombs() -> dict[Compression, bytes]:
    """1 GiB of zeros per codec, compressed."""
    return {codec: build(BOMB_BYTES) for codec, build in BOMB_BUILDERS.items()}


@pytest.mark.parametrize("codec", CODECS)
def test_bomb_stops_at_the_limit_holding_at_most_the_limit(
    codec: Compression, bombs: dict[Compression, bytes]
) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionLimitError):
            decompress(codec, bombs[codec], LIMIT_BYTES)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < LIMIT_BYTES + LIMIT_BYTES // 4


def test_bombs_leave_peak_rss_bounded(tmp_path: Path, bombs: dict[Compression, bytes]) -> None:
    """Native allocations too (tracemalloc sees only Python's): decompressing every bomb in
    a fresh process raises its peak RSS by about the limit, nowhere near the 1 GiB."""
    for codec, bomb in bombs.items():
        (tmp_path / codec.name).write_bytes(bomb)
    script = """
import resource, sys
from pathlib import Path
from tidelog.client.protocol.compression import Compression, decompress
from tidelog.client.protocol.errors import DecompressionLimitError
bombs = {c: (Path(sys.argv[1]) / c.name).read_bytes() for c in Compression if c.value}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for codec, bomb in bombs.items():
    try:
        decompress(codec, bomb, int(sys.argv[2]))
    except DecompressionLimitError:
        pass
    else:
        raise SystemExit(f"{codec.name}: no limit error")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(LIMIT_BYTES)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    growth_bytes = int(result.stdout.strip()) * 1024  # ru_maxrss is in KiB on Linux
    assert growth_bytes < 3 * LIMIT_BYTES
