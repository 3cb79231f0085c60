"""Framing and headers: frames come out whole however the stream is split; the size limit and
negative sizes are refused before buffering; request header v1/v2, response header v0/v1,
and ApiVersions answered with response header v0 at every version."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocol.strategies import DETERMINISTIC, api_versions
from tidelog.client.protocol.apis import (
    ALL_APIS,
    API_BY_KEY,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response_header,
)
from tidelog.client.protocol.errors import CorruptMessageError, FrameTooLargeError, ProtocolError
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Reader, Writer, encode_uvarint
from tidelog.client.protocol.schema import Api

API_VERSIONS_KEY = 18


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def drain(decoder: FrameDecoder) -> list[bytes]:
    """Every whole frame buffered in `decoder` (at most one per buffered byte)."""
    frames: list[bytes] = []
    for _ in range(decoder.buffered_bytes + 1):
        frame = decoder.next_frame()
        if frame is NEED_DATA:
            return frames
        assert isinstance(frame, bytes)
        frames.append(frame)
    raise AssertionError("decoder produced more frames than it had bytes")


payloads = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


def test_need_data_until_the_frame_is_complete() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    assert decoder.next_frame() is NEED_DATA
    stream = framed(b"hello") + framed(b"") + framed(b"world!")
    for i, byte in enumerate(stream):
        decoder.receive_data(bytes((byte,)))
        frame = decoder.next_frame()
        if i == 8:
            assert frame == b"hello"
            assert decoder.next_frame() is NEED_DATA
        elif i == 12:
            assert frame == b""
        elif i == len(stream) - 1:
            assert frame == b"world!"
        else:
            assert frame is NEED_DATA
    assert decoder.buffered_bytes == 0


@DETERMINISTIC
@given(payloads)
def test_byte_by_byte(frames: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=40)
    got: list[bytes] = []
    for byte in b"".join(framed(p) for p in frames):
        decoder.receive_data(bytes((byte,)))
        got.extend(drain(decoder))
    assert got == frames
    assert decoder.buffered_bytes == 0


@DETERMINISTIC
@given(payloads, st.data())
def test_random_splits(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(framed(p) for p in frames)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(max_frame_bytes=40)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(memoryview(stream)[start:end])
        got.extend(drain(decoder))
    assert got == frames


@DETERMINISTIC
@given(payloads)
def test_several_frames_in_one_chunk(frames: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=40)
    decoder.receive_data(b"".join(framed(p) for p in frames) + b"\x00\x00")
    assert drain(decoder) == frames
    assert decoder.buffered_bytes == 2
    assert decoder.pending_frame_bytes() is None


def test_buffer_is_compacted_over_a_long_stream() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    frame = framed(bytes(1000))
    chunk = frame * 100 + frame[:10]
    for _ in range(5):
        decoder.receive_data(chunk)
        assert len(drain(decoder)) >= 100
        chunk = frame[10:] + frame * 99 + frame[:10]
        # What is retained never grows beyond the partial frame plus what was just fed.
        assert decoder.buffered_bytes == 10


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.receive_data(framed(bytes(16)))
    assert decoder.next_frame() == bytes(16)


def test_frame_over_the_limit_is_refused_from_its_prefix() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.receive_data((17).to_bytes(4, "big"))
    assert decoder.pending_frame_bytes() == 17
    with pytest.raises(FrameTooLargeError) as info:
        decoder.next_frame()
    assert (info.value.size_bytes, info.value.max_bytes) == (17, 16)


def test_huge_declared_size_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_bytes=100 * 1024 * 1024)
    decoder.receive_data(b"\x7f\xff\xff\xff\x00")
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


@pytest.mark.parametrize("prefix", [b"\xff\xff\xff\xff", b"\x80\x00\x00\x00"])
def test_negative_size_is_refused(prefix: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(prefix + bytes(8))
    with pytest.raises(CorruptMessageError):
        decoder.next_frame()


def test_negative_max_frame_bytes_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_bytes=-1)


# --- headers ------------------------------------------------------------------------------


def flexible_versions(apis: tuple[Api, ...]) -> list[tuple[Api, int]]:
    return [(api, v) for api, v in api_versions(apis) if api.is_flexible(v)]


def classic_versions(apis: tuple[Api, ...]) -> list[tuple[Api, int]]:
    return [(api, v) for api, v in api_versions(apis) if not api.is_flexible(v)]


def _ids(pairs: list[tuple[Api, int]]) -> list[str]:
    return [f"{api.name}-v{v}" for api, v in pairs]


def test_header_versions_follow_flexibility() -> None:
    for api, version in api_versions(ALL_APIS):
        flexible = api.is_flexible(version)
        if api.key != 7:  # ControlledShutdown v0 alone uses request header v0
            assert api.request_header_version(version) == (2 if flexible else 1)
        expected_response = 0 if api.key == API_VERSIONS_KEY else (1 if flexible else 0)
        assert api.response_header_version(version) == expected_response


@pytest.mark.parametrize(
    ("api", "version"), classic_versions(ALL_APIS), ids=_ids(classic_versions(ALL_APIS))
)
def test_request_header_v1_layout(api: Api, version: int) -> None:
    frame = encode_request(api.key, version, 0x01020304, "cli", {})
    body = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(body)
    # api key, api version, correlation id, then client id as an int16-length string.
    assert body[:13] == (
        api.key.to_bytes(2, "big") + version.to_bytes(2, "big") + b"\x01\x02\x03\x04\x00\x03cli"
    )
    header, r = decode_request_header(body)
    assert header.client_id == "cli"
    assert r.pos == 13


@pytest.mark.parametrize(
    ("api", "version"), flexible_versions(ALL_APIS), ids=_ids(flexible_versions(ALL_APIS))
)
def test_request_header_v2_layout(api: Api, version: int) -> None:
    frame = encode_request(api.key, version, 7, None, {})
    body = frame[4:]
    # The client id stays a classic nullable string (null = -1) even in header v2, and the
    # header ends with its own (empty) tagged fields.
    assert body[8:11] == b"\xff\xff\x00"
    header, r = decode_request_header(body)
    assert header.client_id is None
    assert r.pos == 11


@pytest.mark.parametrize(
    ("api", "version"), flexible_versions(ALL_APIS), ids=_ids(flexible_versions(ALL_APIS))
)
def test_request_header_v2_unknown_tags_are_skipped(api: Api, version: int) -> None:
    plain = encode_request(api.key, version, 9, "c", {})[4:]
    # Header tagged fields: two unknown tags, 3 and 1000, with 2 and 0 bytes of data.
    tags = b"\x02\x03\x02zz" + encode_uvarint(1000) + b"\x00"
    with_tags = plain[:11] + tags + plain[12:]
    header, r = decode_request_header(with_tags)
    assert header.correlation_id == 9
    assert bytes(r.buf[r.pos :]) == plain[12:]


def test_request_header_of_an_unknown_api_still_parses() -> None:
    body = (0x7ABC).to_bytes(2, "big") + b"\x00\x05\x00\x00\x00\x2a\x00\x01x" + b"junk"
    header, r = decode_request_header(body)
    assert (header.api_key, header.api_version, header.correlation_id) == (0x7ABC, 5, 42)
    assert header.client_id == "x"
    assert r.remaining == 4


def test_request_header_of_an_unsupported_version_still_parses() -> None:
    api = API_BY_KEY[API_VERSIONS_KEY]
    version = api.valid.highest + 1
    w = Writer()
    w.int16(api.key)
    w.int16(version)
    w.int32(77)
    w.string("librdkafka", compact=False)
    w.raw(b"\x00rest")
    header, r = decode_request_header(w.getvalue())
    assert (header.api_version, header.correlation_id) == (version, 77)
    # Nothing beyond the v1 fields is consumed for a version the codec does not know.
    assert r.remaining == 5


@pytest.mark.parametrize("body", [b"", b"\x00\x12\x00", b"\x00\x12\x00\x03\x00\x00\x00\x01\x00"])
def test_truncated_request_header(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request_header(body)


@pytest.mark.parametrize(
    ("api", "version"), api_versions(ALL_APIS), ids=_ids(api_versions(ALL_APIS))
)
def test_response_header_layout(api: Api, version: int) -> None:
    w = Writer()
    encode_response_header(w, api, version, 0x0A0B0C0D)
    header = w.getvalue()
    if api.key == API_VERSIONS_KEY or not api.is_flexible(version):
        assert header == b"\x0a\x0b\x0c\x0d"
    else:
        assert header == b"\x0a\x0b\x0c\x0d\x00"


@pytest.mark.parametrize(
    ("api", "version"), flexible_versions(ALL_APIS), ids=_ids(flexible_versions(ALL_APIS))
)
def test_response_header_v1_unknown_tags_are_skipped(api: Api, version: int) -> None:
    w = Writer()
    api.encode_response(w, {}, version)
    body = w.getvalue()
    if api.key == API_VERSIONS_KEY:
        frame = b"\x00\x00\x00\x05" + body
    else:
        frame = b"\x00\x00\x00\x05" + b"\x01\x05\x03abc" + body
    correlation_id, decoded = decode_response(api, version, frame)
    assert correlation_id == 5
    assert decoded == {f.name: f.default() for f in api.response}


API_VERSIONS_FLEXIBLE = [v for api, v in flexible_versions((API_BY_KEY[API_VERSIONS_KEY],))]


@pytest.mark.parametrize("version", API_VERSIONS_FLEXIBLE)
@settings(DETERMINISTIC, max_examples=10)
@given(st.integers(-(2**31), 2**31 - 1))
def test_api_versions_response_header_is_v0_even_when_flexible(
    version: int, correlation_id: int
) -> None:
    api = API_BY_KEY[API_VERSIONS_KEY]
    msg = {"error_code": 0, "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}]}
    w = Writer()
    encode_response_header(w, api, version, correlation_id)
    api.encode_response(w, msg, version)
    frame = w.getvalue()
    # correlation id, then directly the body's error code: no header tagged fields.
    assert frame[4:6] == b"\x00\x00"
    got_id, decoded = decode_response(api, version, frame)
    assert got_id == correlation_id
    assert decoded["api_keys"] == msg["api_keys"]
    assert Reader(frame[4:]).int16() == 0
