"""Hostile input: whatever the bytes, decoding raises only `ProtocolError` subclasses, and it
allocates little more than the bytes received (no length prefix is trusted before it is
checked against what remains).

Corruptions are aimed at real structure: a writer that records where it put each length
prefix lets the tests rewrite exactly those prefixes (huge, negative, over-long varints) and
the string contents after them (invalid UTF-8), for every API, version and direction.
"""

from __future__ import annotations

import functools
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import cramjam
import pytest
import xxhash
import zstandard
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocol.strategies import (
    CODEC_SETTINGS,
    DETERMINISTIC,
    Kind,
    api_versions,
    carried,
    message,
)
from tidelog.client.protocol.apis import ALL_APIS, API_BY_KEY, decode_request_header, encode_request
from tidelog.client.protocol.compression import Compression, compress
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    DecompressionLimitError,
    FrameTooLargeError,
    ProtocolError,
)
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Reader, Writer, encode_uvarint
from tidelog.client.protocol.records import RecordInput, decode_batch, encode_batch, validate_batch
from tidelog.client.protocol.schema import Api, Message

CASES = [
    pytest.param(api, version, kind, id=f"{api.name}-v{version}-{kind}")
    for api, version in api_versions(ALL_APIS)
    for kind in ("request", "response")
]

MALFORMED_SETTINGS = settings(CODEC_SETTINGS, max_examples=4)

ALLOCATION_SLACK_BYTES = 256 * 1024
"""Fixed allowance for the decoder's own bookkeeping (codec caches, exception objects)."""

ALLOCATION_PER_INPUT_BYTE = 128
"""Decoded objects are bigger than their wire form, by a constant factor: the worst is an
array of minimal structs, where a 2-byte element (an empty string) becomes a dict of its
fields' values, about 92 bytes of dict per wire byte. A trusted hostile length would blow
far past this."""


@dataclass(frozen=True)
class LengthPrefix:
    """Where an encoder wrote a length: offset of the prefix, the length, and its form."""

    offset: int
    length: int
    compact: bool
    is_string: bool

    @property
    def prefix_bytes(self) -> int:
        if self.compact:
            return len(encode_uvarint(self.length + 1))
        return 2 if self.is_string else 4


class RecordingWriter(Writer):
    """A Writer that notes the position of every string, bytes and array length it writes
    (those of the top-level buffer; tagged fields are encoded by nested writers)."""

    __slots__ = ("prefixes",)

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: list[LengthPrefix] = []

    def _length(self, n: int, compact: bool, wide: bool) -> None:
        self.prefixes.append(LengthPrefix(self.nbytes, n, compact, not wide))
        super()._length(n, compact, wide)


def encode_recorded(api: Api, version: int, kind: Kind, msg: Message) -> RecordingWriter:
    w = RecordingWriter()
    if kind == "request":
        api.encode_request(w, msg, version)
    else:
        api.encode_response(w, msg, version)
    return w


def decode_body(api: Api, version: int, kind: Kind, data: bytes) -> Message:
    r = Reader(data)
    if kind == "request":
        return api.decode_request(r, version)
    return api.decode_response(r, version)


def decode_request_frame(frame: bytes) -> Message:
    header, r = decode_request_header(frame)
    return API_BY_KEY[header.api_key].decode_request(r, header.api_version)


@contextmanager
def allocation_bound(input_bytes: int) -> Iterator[None]:
    """Fail if the block's peak traced allocation exceeds the bound for `input_bytes`."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = ALLOCATION_SLACK_BYTES + ALLOCATION_PER_INPUT_BYTE * input_bytes
    assert peak - before <= bound, f"decoding {input_bytes} bytes allocated {peak - before}"


def must_reject(decode: Callable[[bytes], object], data: bytes) -> ProtocolError:
    """Decode `data`, which is invalid, and return the ProtocolError it raised."""
    try:
        decode(data)
    except ProtocolError as exc:
        return exc
    raise AssertionError(f"decoding {data[:64]!r}... succeeded")


def survives(decode: Callable[[bytes], object], data: bytes) -> None:
    """Decode `data`; success and ProtocolError are both fine, nothing else is."""
    with suppress(ProtocolError):
        decode(data)


def replace(data: bytes, offset: int, old_size: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + old_size :]


# --- hostile variants of valid bodies ------------------------------------------------------


def check_truncations(decode: Callable[[bytes], object], body: bytes) -> None:
    # Parsing is deterministic and a whole encoding is consumed exactly, so every strict
    # prefix must run out of bytes somewhere.
    for cut in range(len(body)):
        must_reject(decode, body[:cut])


def check_corrupted_lengths(
    decode: Callable[[bytes], object], body: bytes, prefixes: list[LengthPrefix]
) -> None:
    for p in prefixes:
        size = p.prefix_bytes
        if p.compact:
            huge = encode_uvarint(2**31)
            must_reject(decode, replace(body, p.offset, size, b"\x80" * 5 + b"\x01"))  # over-long
        elif p.is_string:
            huge = (0x7FFF).to_bytes(2, "big")
            must_reject(decode, replace(body, p.offset, size, (-2).to_bytes(2, "big", signed=True)))
        else:
            huge = (2**31 - 1).to_bytes(4, "big")
            must_reject(decode, replace(body, p.offset, size, (-2).to_bytes(4, "big", signed=True)))
        if len(body) - p.offset - size < int.from_bytes(huge, "big"):
            must_reject(decode, replace(body, p.offset, size, huge))


def check_invalid_utf8(
    decode: Callable[[bytes], object], body: bytes, prefixes: list[LengthPrefix]
) -> None:
    for p in prefixes:
        if p.is_string and p.length >= 1:
            content = p.offset + p.prefix_bytes
            exc = must_reject(decode, replace(body, content, 1, b"\xff"))
            assert isinstance(exc, CorruptMessageError)


@pytest.mark.parametrize(("api", "version", "kind"), CASES)
@MALFORMED_SETTINGS
@given(data=st.data())
def test_hostile_variants_of_valid_bodies(
    api: Api, version: int, kind: Kind, data: st.DataObject
) -> None:
    """Truncated at every byte, each length prefix made negative, huge or an over-long varint,
    each string's first byte made invalid UTF-8: all rejected; random byte edits: rejected
    or decoded. Never more memory than the bound for the body's size."""
    encoded = encode_recorded(api, version, kind, data.draw(message(api, version, kind)))
    body = encoded.getvalue()

    def decode(b: bytes) -> Message:
        return decode_body(api, version, kind, b)

    decode(body)  # valid as it stands; also builds the codec before memory is measured
    check_truncations(decode, body)
    with allocation_bound(len(body)):
        check_corrupted_lengths(decode, body, encoded.prefixes)
        check_invalid_utf8(decode, body, encoded.prefixes)
    if body:
        edits = data.draw(
            st.lists(st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)), max_size=4)
        )
        mutated = bytearray(body)
        for offset, value in edits:
            mutated[offset] = value
        with allocation_bound(len(mutated)):
            survives(decode, bytes(mutated))


@pytest.mark.parametrize(
    ("api", "version"),
    api_versions(ALL_APIS),
    ids=[f"{a.name}-v{v}" for a, v in api_versions(ALL_APIS)],
)
@MALFORMED_SETTINGS
@given(data=st.data())
def test_truncated_request_frames(api: Api, version: int, data: st.DataObject) -> None:
    frame = encode_request(api.key, version, 1, "c", data.draw(message(api, version, "request")))
    for cut in range(len(frame)):
        decoder = FrameDecoder(max_frame_bytes=len(frame))
        decoder.receive_data(frame[:cut])
        assert decoder.next_frame() is NEED_DATA
    for cut in range(4, len(frame)):
        must_reject(decode_request_frame, frame[4:cut])


def test_corruption_targets_exist() -> None:
    """The recording writer sees length prefixes, so the tests above are not vacuous."""
    api = API_BY_KEY[18]
    encoded = encode_recorded(
        api, 3, "request", {"client_software_name": "x", "client_software_version": ""}
    )
    assert [(p.length, p.is_string, p.compact) for p in encoded.prefixes] == [
        (1, True, True),
        (0, True, True),
    ]


# --- the classic denial-of-service shapes --------------------------------------------------


def _first_field_is_array(api: Api, version: int, kind: Kind) -> bool:
    fields = api.request if kind == "request" else api.response
    on_wire = [f for f in fields if version in f.versions and f.tag is None]
    return bool(on_wire) and on_wire[0].is_array


ARRAY_FIRST = [c for c in CASES if _first_field_is_array(*c.values)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("api", "version", "kind"), ARRAY_FIRST)
def test_array_of_2_pow_31_minus_1_in_a_20_byte_body(api: Api, version: int, kind: Kind) -> None:
    if api.is_flexible(version):
        body = encode_uvarint(2**31) + bytes(15)
    else:
        body = (2**31 - 1).to_bytes(4, "big") + bytes(16)
    with allocation_bound(len(body)):
        must_reject(lambda b: decode_body(api, version, kind, b), body)


def test_array_of_2_pow_31_minus_1_in_a_20_byte_frame() -> None:
    candidates = [c for c in ARRAY_FIRST if c.values[2] == "request"]
    assert candidates
    for case in candidates:
        api, version, _ = case.values
        assert isinstance(api, Api) and isinstance(version, int)
        header = encode_request(api.key, version, 1, "", {})[4 : 4 + 10]
        header += b"\x00" if api.is_flexible(version) else b""
        count = encode_uvarint(2**31) if api.is_flexible(version) else b"\x7f\xff\xff\xff"
        frame_body = header + count
        frame_body += bytes(20 - len(frame_body))
        stream = len(frame_body).to_bytes(4, "big") + frame_body
        decoder = FrameDecoder(max_frame_bytes=1024)
        decoder.receive_data(stream)
        frame = decoder.next_frame()
        assert isinstance(frame, bytes)
        assert len(frame) == 20
        with allocation_bound(len(frame)):
            must_reject(decode_request_frame, frame)


MINIMAL_ELEMENTS = 300


@pytest.mark.parametrize(("api", "version", "kind"), CASES)
def test_decoded_size_is_proportional_to_input(api: Api, version: int, kind: Kind) -> None:
    """The densest input there is, arrays of structs whose fields all hold their (smallest)
    defaults, decodes within ALLOCATION_PER_INPUT_BYTE of its size."""
    fields = api.request if kind == "request" else api.response
    flexible = api.is_flexible(version)
    for f in fields:
        if not (f.is_array and f.is_struct and carried(f, version, flexible)):
            continue
        element = {g.name: g.default() for g in f.fields}
        body = encode_recorded(api, version, kind, {f.name: [element] * MINIMAL_ELEMENTS})
        data = body.getvalue()
        decode_body(api, version, kind, data)  # builds the codec before memory is measured
        tracemalloc.start()
        try:
            decoded = decode_body(api, version, kind, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(decoded[f.name]) == MINIMAL_ELEMENTS
        assert peak <= ALLOCATION_PER_INPUT_BYTE * len(data) + 16 * 1024, (f.name, peak)


def test_frame_larger_than_the_limit_is_refused_without_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024 * 1024)
    with allocation_bound(8):
        decoder.receive_data((1024 * 1024 + 1).to_bytes(4, "big") + b"\x00\x12")
        with pytest.raises(FrameTooLargeError):
            decoder.next_frame()


@pytest.mark.parametrize(
    "header",
    [
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xfe",  # client id of length -2
        b"\x00\x12\x00\x03\x00\x00\x00\x01\x7f\xff",  # client id longer than the frame
        b"\x00\x12\x00\x03\x00\x00\x00\x01\x00\x01\xff",  # client id not UTF-8
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff" + b"\x80" * 6,  # over-long tag count
        b"\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff\x01\x00\x7f",  # tag overruns the frame
    ],
)
def test_malformed_request_headers(header: bytes) -> None:
    with allocation_bound(len(header)):
        must_reject(decode_request_frame, header)


# --- random and mutated bytes -------------------------------------------------------------

ALL_CASES = [c.values for c in CASES]


@settings(DETERMINISTIC, max_examples=400)
@given(st.sampled_from(ALL_CASES), st.binary(max_size=200))
def test_random_bodies(case: tuple[Api, int, Kind], data: bytes) -> None:
    api, version, kind = case
    survives(lambda b: decode_body(api, version, kind, b), data)


@settings(DETERMINISTIC, max_examples=300)
@given(st.binary(max_size=200))
def test_random_request_frames(data: bytes) -> None:
    survives(decode_request_frame, data)


@settings(DETERMINISTIC, max_examples=200)
@given(st.sampled_from([c for c in ALL_CASES if c[2] == "request"]), st.binary(max_size=120))
def test_random_bodies_behind_valid_headers(case: tuple[Api, int, Kind], tail: bytes) -> None:
    api, version, _ = case
    frame = encode_request(api.key, version, 3, "x", {})[4:]
    header_size = 10 + (1 if api.is_flexible(version) else 0)
    survives(decode_request_frame, frame[:header_size] + tail)


# --- decompression bombs ------------------------------------------------------------------

BOMB_LIMIT_BYTES = 1024 * 1024
BOMB_RECORDS_BYTES = 32 * 1024 * 1024
"""Each bomb's records section inflates to 32x the decoder's limit."""

_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")


def batch_around(section: bytes, codec: Compression, records_count: int = 1) -> bytes:
    """A v2 record batch (header laid out per the protocol, CRC-32C included) whose records
    section is `section`, already in `codec`'s format."""
    header = bytearray(_BATCH_HEADER.size)
    _BATCH_HEADER.pack_into(
        header, 0, 0, _BATCH_HEADER.size - 12 + len(section), -1, 2, 0, int(codec),
        records_count - 1, 0, 0, -1, -1, -1, records_count,
    )  # fmt: skip
    batch = header + section
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


def lz4_with_declared_size(frame: bytes, declared: int) -> bytes:
    """`frame` (an lz4 frame that declares no content size) claiming `declared` bytes."""
    assert frame[:4] == b"\x04\x22\x4d\x18" and not frame[4] & 0x08
    descriptor = bytes((frame[4] | 0x08, frame[5])) + declared.to_bytes(8, "little")
    checksum = (xxhash.xxh32_intdigest(descriptor) >> 8) & 0xFF
    return frame[:4] + descriptor + bytes((checksum,)) + frame[7:]


def zstd_with_declared_size(frame: bytes, declared: int) -> bytes:
    """`frame` (a zstd frame with a 4-byte content size field) claiming `declared` bytes."""
    descriptor = frame[4]
    assert descriptor >> 6 == 2 and not descriptor & 0x20 and not descriptor & 0x03
    return frame[:6] + declared.to_bytes(4, "little") + frame[10:]


@functools.cache
def bomb_records() -> bytes:
    """A records section of one record whose value is BOMB_RECORDS_BYTES of zeros."""
    return encode_batch([RecordInput(value=bytes(BOMB_RECORDS_BYTES))])[_BATCH_HEADER.size :]


def _lz4(data: bytes) -> bytes:
    return bytes(cramjam.lz4.compress(data))


def _zstd(data: bytes, sized: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_content_size=sized).compress(data)


BombBuilder = Callable[[bytes], bytes]

BOMBS: dict[str, tuple[Compression, BombBuilder]] = {
    "gzip": (Compression.GZIP, lambda r: compress(Compression.GZIP, r, 1)),
    "gzip-second-member": (
        Compression.GZIP,
        lambda r: compress(Compression.GZIP, r[:1]) + compress(Compression.GZIP, r[1:], 1),
    ),
    "snappy-xerial": (Compression.SNAPPY, lambda r: compress(Compression.SNAPPY, r)),
    "snappy-raw": (Compression.SNAPPY, lambda r: bytes(cramjam.snappy.compress_raw(r))),
    "lz4-unsized": (Compression.LZ4, _lz4),
    "lz4-sized": (Compression.LZ4, lambda r: lz4_with_declared_size(_lz4(r), len(r))),
    "zstd-sized": (Compression.ZSTD, _zstd),
    "zstd-unsized": (Compression.ZSTD, lambda r: _zstd(r, sized=False)),
}
"""Honest bombs: each inflates to BOMB_RECORDS_BYTES, well past the decoder's limit."""

LYING_BOMBS: dict[str, tuple[Compression, BombBuilder]] = {
    "lz4-claims-1000-bytes": (Compression.LZ4, lambda r: lz4_with_declared_size(_lz4(r), 1000)),
    "zstd-claims-1000-bytes": (
        Compression.ZSTD,
        lambda r: zstd_with_declared_size(_zstd(r), 1000),
    ),
}
"""Bombs whose frame header declares a small content size."""


def bomb_allocation_bound(batch_bytes: int) -> int:
    # Output buffers up to the limit and one copy of them, plus the input and its views.
    return 3 * BOMB_LIMIT_BYTES + 4 * batch_bytes + ALLOCATION_SLACK_BYTES


def _decode_bomb(codec: Compression, section: bytes) -> tuple[ProtocolError, int]:
    batch = batch_around(section, codec)
    assert len(batch) < BOMB_RECORDS_BYTES // 16, "not much of a bomb"
    validate_batch(batch)  # a well-formed batch: only its size is hostile
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            decode_batch(batch, max_decompressed_bytes=BOMB_LIMIT_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= bomb_allocation_bound(len(batch)), f"peak {peak} bytes"
    return info.value, len(batch)


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bomb_hits_the_limit(name: str) -> None:
    codec, build = BOMBS[name]
    error, _ = _decode_bomb(codec, build(bomb_records()))
    assert isinstance(error, DecompressionLimitError)


@pytest.mark.parametrize("name", LYING_BOMBS)
def test_decompression_bomb_with_a_false_size_is_refused(name: str) -> None:
    codec, build = LYING_BOMBS[name]
    error, _ = _decode_bomb(codec, build(bomb_records()))
    assert isinstance(error, CorruptMessageError)


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_payloads_are_valid_under_a_large_enough_limit(name: str) -> None:
    """The bombs are real compressed data: with room for them they decode to the record."""
    codec, build = BOMBS[name]
    small = encode_batch([RecordInput(value=bytes(4096), key=b"k")])[_BATCH_HEADER.size :]
    _, records = decode_batch(batch_around(build(small), codec), max_decompressed_bytes=8192)
    assert [(r.key, r.value) for r in records] == [(b"k", bytes(4096))]
