"""Wire primitives: varints and zigzag at their edges, compact forms, null versus empty."""

from __future__ import annotations

import io
import uuid
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.protocol.strategies import DETERMINISTIC
from tidelog.client.protocol.apis import API_BY_KEY
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.primitives import Reader, Writer, encode_uvarint, encode_varint

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's resource loading
    from kafka.protocol.schemas.fields.codecs.types import (
        UnsignedVarInt32,
        VarInt32,
        VarInt64,
    )

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGE_INT32 = [0, -1, 1, -2, 2, 63, -64, 64, -65, INT32_MIN, INT32_MAX, INT32_MIN + 1]
EDGE_INT64 = [*EDGE_INT32, INT64_MIN, INT64_MAX, INT64_MIN + 1, 2**32, -(2**32)]


def written(fill: object) -> bytes:
    w = Writer()
    assert callable(fill)
    fill(w)
    return w.getvalue()


# --- varints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_uvarint_wire_form(value: int, wire: bytes) -> None:
    assert encode_uvarint(value) == wire
    r = Reader(wire)
    assert r.uvarint() == value
    assert r.remaining == 0


@pytest.mark.parametrize(
    ("value", "zigzag"),
    [(0, 0), (-1, 1), (1, 2), (-2, 3), (2, 4), (INT32_MAX, 2**32 - 2), (INT32_MIN, 2**32 - 1)],
)
def test_varint_zigzag_mapping(value: int, zigzag: int) -> None:
    wire = written(lambda w: w.varint(value))
    assert wire == encode_uvarint(zigzag)
    assert Reader(wire).varint() == value


@pytest.mark.parametrize(
    ("value", "zigzag"),
    [(0, 0), (-1, 1), (1, 2), (INT64_MAX, 2**64 - 2), (INT64_MIN, 2**64 - 1)],
)
def test_varlong_zigzag_mapping(value: int, zigzag: int) -> None:
    wire = written(lambda w: w.varlong(value))
    assert wire == encode_uvarint(zigzag) == encode_varint(value)
    assert Reader(wire).varlong() == value
    assert len(wire) <= 10


@pytest.mark.parametrize("value", EDGE_INT32)
def test_varint_edges_round_trip(value: int) -> None:
    wire = written(lambda w: w.varint(value))
    assert len(wire) <= 5
    r = Reader(wire)
    assert r.varint() == value
    assert r.remaining == 0
    # The record layout's 64-bit zigzag gives the same bytes for every 32-bit value.
    assert encode_varint(value) == wire


@DETERMINISTIC
@given(st.integers(INT32_MIN, INT32_MAX))
def test_varint_matches_kafka_python(value: int) -> None:
    wire = written(lambda w: w.varint(value))
    assert wire == VarInt32.encode(value)
    assert VarInt32.decode(io.BytesIO(wire)) == value
    assert Reader(VarInt32.encode(value)).varint() == value


@DETERMINISTIC
@given(st.integers(INT64_MIN, INT64_MAX))
def test_varlong_matches_kafka_python(value: int) -> None:
    wire = written(lambda w: w.varlong(value))
    assert wire == VarInt64.encode(value)
    assert Reader(VarInt64.encode(value)).varlong() == value


@DETERMINISTIC
@given(st.integers(0, 2**32 - 1))
def test_uvarint_matches_kafka_python(value: int) -> None:
    assert encode_uvarint(value) == UnsignedVarInt32.encode(value)
    assert Reader(UnsignedVarInt32.encode(value)).uvarint() == value


def test_over_long_varints_are_rejected() -> None:
    with pytest.raises(CorruptMessageError):
        Reader(b"\x80" * 5 + b"\x00").uvarint()
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff" * 6).varint()
    with pytest.raises(CorruptMessageError):
        Reader(b"\x80" * 10 + b"\x00").varlong()
    # The longest legal forms still decode.
    assert Reader(b"\x80" * 4 + b"\x00").uvarint() == 0
    assert Reader(b"\x80" * 9 + b"\x00").varlong() == 0


@pytest.mark.parametrize("wire", [b"", b"\x80", b"\xff\xff", b"\x80\x80\x80\x80"])
def test_truncated_varint_is_rejected(wire: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        Reader(wire).uvarint()


def test_negative_uvarint_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_uvarint(-1)


# --- fixed-width ints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "value", "wire"),
    [
        ("int8", -128, b"\x80"),
        ("int16", -2, b"\xff\xfe"),
        ("uint16", 65535, b"\xff\xff"),
        ("int32", INT32_MIN, b"\x80\x00\x00\x00"),
        ("uint32", 2**32 - 1, b"\xff\xff\xff\xff"),
        ("int64", INT64_MAX, b"\x7f" + b"\xff" * 7),
        ("boolean", True, b"\x01"),
        ("float64", 1.5, b"\x3f\xf8" + b"\x00" * 6),
    ],
)
def test_fixed_width_big_endian(method: str, value: object, wire: bytes) -> None:
    w = Writer()
    getattr(w, method)(value)
    assert w.getvalue() == wire
    r = Reader(wire)
    assert getattr(r, method)() == value
    assert r.remaining == 0


def test_any_nonzero_byte_is_true() -> None:
    assert Reader(b"\x02").boolean() is True
    assert Reader(b"\x00").boolean() is False


@pytest.mark.parametrize(
    ("method", "width"),
    [("int8", 1), ("int16", 2), ("int32", 4), ("int64", 8), ("uint32", 4), ("uuid", 16)],
)
def test_short_fixed_width_read_is_rejected(method: str, width: int) -> None:
    with pytest.raises(CorruptMessageError):
        getattr(Reader(bytes(width - 1)), method)()


def test_uuid_round_trip() -> None:
    value = uuid.UUID("0d3c4a6e-2b1f-4c5d-9e8f-7a6b5c4d3e2f")
    wire = written(lambda w: w.uuid(value))
    assert wire == value.bytes
    assert Reader(wire).uuid() == value


# --- strings and bytes: null versus empty, compact versus classic --------------------------


def test_null_and_empty_strings_classic() -> None:
    assert written(lambda w: w.string(None, compact=False)) == b"\xff\xff"
    assert written(lambda w: w.string("", compact=False)) == b"\x00\x00"
    assert Reader(b"\xff\xff").nullable_string() is None
    assert Reader(b"\x00\x00").nullable_string() == ""
    assert Reader(b"\x00\x00").string() == ""
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff\xff").string()


def test_null_and_empty_strings_compact() -> None:
    assert written(lambda w: w.string(None, compact=True)) == b"\x00"
    assert written(lambda w: w.string("", compact=True)) == b"\x01"
    assert Reader(b"\x00").compact_nullable_string() is None
    assert Reader(b"\x01").compact_nullable_string() == ""
    assert Reader(b"\x01").compact_string() == ""
    with pytest.raises(CorruptMessageError):
        Reader(b"\x00").compact_string()


@DETERMINISTIC
@given(st.text(max_size=300))
def test_strings_round_trip_in_both_forms(text: str) -> None:
    data = text.encode("utf-8")
    classic = written(lambda w: w.string(text, compact=False))
    assert classic == len(data).to_bytes(2, "big") + data
    assert Reader(classic).string() == text
    compact = written(lambda w: w.string(text, compact=True))
    assert compact == encode_uvarint(len(data) + 1) + data
    assert Reader(compact).compact_string() == text


def test_classic_string_length_limit() -> None:
    w = Writer()
    w.string("x" * 0x7FFF, compact=False)
    assert len(w.getvalue()) == 2 + 0x7FFF
    with pytest.raises(ValueError):
        Writer().string("x" * 0x8000, compact=False)


def test_negative_string_lengths_other_than_null_are_rejected() -> None:
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff\xfe").nullable_string()
    with pytest.raises(CorruptMessageError):
        Reader(b"\x80\x00").string()


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(CorruptMessageError):
        Reader(b"\x00\x02\xc3\x28").string()
    with pytest.raises(CorruptMessageError):
        Reader(b"\x03\xed\xa0").compact_string()  # a UTF-16 surrogate half


def test_null_and_empty_bytes() -> None:
    assert written(lambda w: w.bytes_(None, compact=False)) == b"\xff\xff\xff\xff"
    assert written(lambda w: w.bytes_(b"", compact=False)) == b"\x00\x00\x00\x00"
    assert written(lambda w: w.bytes_(None, compact=True)) == b"\x00"
    assert written(lambda w: w.bytes_(b"", compact=True)) == b"\x01"
    assert Reader(b"\xff\xff\xff\xff").nullable_bytes_view() is None
    assert Reader(b"\x00\x00\x00\x00").nullable_bytes_view() == b""
    assert Reader(b"\x00").compact_bytes_view() is None
    assert Reader(b"\x01").compact_bytes_view() == b""
    assert Reader(b"\x00\x00\x00\x00").bytes_() == b""
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff\xff\xff\xff").bytes_()
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff\xff\xff\xfe").nullable_bytes_view()


def test_bytes_views_do_not_copy() -> None:
    buf = bytearray(b"\x00\x00\x00\x03abcXYZ")
    view = Reader(buf).nullable_bytes_view()
    assert view is not None
    assert view == b"abc"
    buf[4] = ord("z")
    assert view == b"zbc"


def test_reader_window() -> None:
    r = Reader(b"\x00\x01\x00\x02\x00\x03", pos=2, end=4)
    assert r.remaining == 2
    assert r.int16() == 2
    with pytest.raises(CorruptMessageError):
        r.int8()


# --- arrays -------------------------------------------------------------------------------


def test_array_lengths_null_and_empty() -> None:
    assert written(lambda w: w.array_length(None, compact=False)) == b"\xff\xff\xff\xff"
    assert written(lambda w: w.array_length(0, compact=False)) == b"\x00\x00\x00\x00"
    assert written(lambda w: w.array_length(None, compact=True)) == b"\x00"
    assert written(lambda w: w.array_length(0, compact=True)) == b"\x01"
    assert Reader(b"\xff\xff\xff\xff").array_length(compact=False) == -1
    assert Reader(b"\x00").array_length(compact=True) == -1
    assert Reader(b"\x01").array_length(compact=True) == 0


def test_array_length_is_checked_against_remaining_bytes() -> None:
    assert Reader(b"\x00\x00\x00\x02\x00\x00").array_length(compact=False) == 2
    with pytest.raises(CorruptMessageError):
        Reader(b"\x7f\xff\xff\xff" + bytes(16)).array_length(compact=False)
    with pytest.raises(CorruptMessageError):
        Reader(b"\x04\x00\x00").array_length(compact=True)
    with pytest.raises(CorruptMessageError):
        Reader(b"\xff\xff\xff\xfe").array_length(compact=False)


# --- spliced output -----------------------------------------------------------------------


class _Region:
    """Stands in for a file range that the broker would send without copying."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def test_splice_keeps_the_value_out_of_the_buffer() -> None:
    region = _Region(1000)
    w = Writer()
    w.int16(7)
    w.bytes_(region, compact=True)
    w.int8(1)
    chunks = w.chunks()
    assert chunks[0] == b"\x00\x07" + encode_uvarint(1001)
    assert chunks[1] is region
    assert chunks[2] == b"\x01"
    assert w.nbytes == 2 + len(encode_uvarint(1001)) + 1000 + 1
    with pytest.raises(ValueError):
        w.getvalue()


def test_unspliced_chunks_are_one_bytes_object() -> None:
    w = Writer()
    assert w.chunks() == [b""]
    w.int32(5)
    assert w.chunks() == [b"\x00\x00\x00\x05"]
    assert w.nbytes == 4


def test_array_element_budget_spans_every_array_of_a_message() -> None:
    metadata = API_BY_KEY[3]
    w = Writer()
    metadata.encode_request(w, {"topics": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, 1)
    body = w.getvalue()
    assert len(metadata.decode_request(Reader(body, array_elements_max=3), 1)["topics"]) == 3
    with pytest.raises(CorruptMessageError, match="element budget"):
        metadata.decode_request(Reader(body, array_elements_max=2), 1)
    # Budgets are shared across nested arrays: 2 topics x 2 partitions = 2 + 4 elements.
    delete_records = API_BY_KEY[21]
    w = Writer()
    delete_records.encode_request(
        w,
        {
            "topics": [
                {"name": t, "partitions": [{"partition_index": p, "offset": 0} for p in (0, 1)]}
                for t in ("x", "y")
            ],
            "timeout_ms": 1,
        },
        0,
    )
    nested = w.getvalue()
    delete_records.decode_request(Reader(nested, array_elements_max=6), 0)
    with pytest.raises(CorruptMessageError):
        delete_records.decode_request(Reader(nested, array_elements_max=5), 0)
