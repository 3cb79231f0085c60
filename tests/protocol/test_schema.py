"""The schema DSL and its struct codecs, checked against bytes worked out by hand from the
protocol's encoding rules (big-endian ints, int16/int32 or unsigned-varint lengths, tagged
fields as count, then tag, size and value in increasing tag order)."""

from __future__ import annotations

import pytest

from tidelog.client.protocol.errors import CorruptMessageError, UnsupportedVersionError
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import MAX_VERSION, Api, F, Message, Versions, snake_case

# v0 is non-flexible, v1 flexible. Epoch and Note exist from v1, Note as a tagged field.
EXAMPLE = Api(
    key=30000,
    name="Example",
    valid=Versions.parse("0-1"),
    flexible=1,
    request=(
        F("Id", "int32"),
        F("Epoch", "int32", "1+", default=-1),
        F("Name", "string", nullable="1+"),
        F("Items", "[]int32", nullable="1+"),
        F("Note", "string", "1+", nullable="1+", tag=0, default=None),
        F("Weight", "int32", "1+", tag=3, default=-1),
    ),
    response=(),
)  # fmt: skip


def encode(msg: Message, version: int) -> bytes:
    w = Writer()
    EXAMPLE.encode_request(w, msg, version)
    return w.getvalue()


def decode(data: bytes, version: int) -> Message:
    r = Reader(data)
    msg = EXAMPLE.decode_request(r, version)
    assert r.remaining == 0
    return msg


def int32(v: int) -> bytes:
    return v.to_bytes(4, "big", signed=True)


# Id 7, Epoch 2, Name "ab", Items [5] at v1, ahead of the tagged-field section.
V1_HEAD = int32(7) + int32(2) + b"\x03ab" + b"\x02" + int32(5)
V1_HEAD_MSG = {"id": 7, "epoch": 2, "name": "ab", "items": [5]}


@pytest.mark.parametrize(
    ("kafka_name", "name"),
    [
        ("ThrottleTimeMs", "throttle_time_ms"),
        ("timeoutMs", "timeout_ms"),
        ("IsrNodes", "isr_nodes"),
        ("TopicId", "topic_id"),
        ("Id", "id"),
        ("SASLMechanism", "sasl_mechanism"),
    ],
)
def test_snake_case_names(kafka_name: str, name: str) -> None:
    assert snake_case(kafka_name) == name
    assert F(kafka_name, "int32").name == name


def test_versions_parse_kafka_notation() -> None:
    assert Versions.parse("3+") == Versions(3, MAX_VERSION)
    assert Versions.parse("0-4") == Versions(0, 4)
    assert Versions.parse("5") == Versions(5, 5)
    for spec in ("none", ""):
        assert Versions.parse(spec).empty
        assert 0 not in Versions.parse(spec)
    four = Versions.parse("0-4")
    assert 0 in four and 4 in four and 5 not in four and -1 not in four
    assert "1" not in four


def test_tagged_fields_encode_in_tag_order_after_regular_fields() -> None:
    msg = {**V1_HEAD_MSG, "note": "hi", "weight": 9}
    expected = V1_HEAD + b"\x02" + b"\x00\x03\x03hi" + b"\x03\x04" + int32(9)
    assert encode(msg, 1) == expected
    assert decode(expected, 1) == msg


def test_tagged_fields_at_their_defaults_are_not_sent() -> None:
    msg = {**V1_HEAD_MSG, "note": None, "weight": -1}
    assert encode(msg, 1) == V1_HEAD + b"\x00"
    assert decode(V1_HEAD + b"\x00", 1) == msg


def test_unknown_tags_are_skipped() -> None:
    data = V1_HEAD + b"\x03" + b"\x00\x03\x03hi" + b"\x01\x02\xab\xcd" + b"\x03\x04" + int32(9)
    assert decode(data, 1) == {**V1_HEAD_MSG, "note": "hi", "weight": 9}


@pytest.mark.parametrize(
    "tagged_section",
    [
        pytest.param(b"\x02" + b"\x03\x04" + int32(9) + b"\x00\x03\x03hi", id="descending"),
        pytest.param(b"\x02" + b"\x00\x03\x03hi" + b"\x00\x03\x03hi", id="repeated"),
        pytest.param(b"\x01" + b"\x03\x09" + int32(9), id="overruns"),
        pytest.param(b"\x01" + b"\x03\x05" + int32(9) + b"\x00", id="trailing-bytes"),
    ],
)
def test_malformed_tagged_sections_are_rejected(tagged_section: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        decode(V1_HEAD + tagged_section, 1)


def test_fields_absent_at_a_version_decode_as_defaults() -> None:
    data = int32(7) + b"\x00\x02ab" + int32(1) + int32(5)
    assert decode(data, 0) == {
        "id": 7, "epoch": -1, "name": "ab", "items": [5], "note": None, "weight": -1,
    }  # fmt: skip


def test_missing_keys_encode_as_defaults() -> None:
    # Epoch -1, Name "" and Items [] (compact lengths 1 and 1), no tagged fields.
    assert encode({"id": 7}, 1) == int32(7) + int32(-1) + b"\x01" + b"\x01" + b"\x00"
    assert encode({"id": 7}, 0) == int32(7) + b"\x00\x00" + int32(0)


def test_keys_a_version_lacks_are_not_encoded() -> None:
    assert encode({"id": 7, "epoch": 2, "weight": 9}, 0) == int32(7) + b"\x00\x00" + int32(0)


def test_nulls_in_nullable_versions() -> None:
    # Compact encodings write length + 1, so null is 0 for both the string and the array.
    msg = {"id": 7, "epoch": 2, "name": None, "items": None}
    data = int32(7) + int32(2) + b"\x00" + b"\x00" + b"\x00"
    assert encode(msg, 1) == data
    assert decode(data, 1) == {**msg, "note": None, "weight": -1}


@pytest.mark.parametrize("msg", [{"name": None}, {"items": None}], ids=["string", "array"])
def test_null_is_refused_where_a_version_is_not_nullable(msg: Message) -> None:
    with pytest.raises(ValueError, match="not nullable"):
        encode({"id": 7, **msg}, 0)


@pytest.mark.parametrize(
    "data",
    [int32(7) + b"\xff\xff" + int32(0), int32(7) + b"\x00\x00" + int32(-1)],
    ids=["string", "array"],
)
def test_null_on_the_wire_is_corrupt_where_a_version_is_not_nullable(data: bytes) -> None:
    with pytest.raises(CorruptMessageError):
        decode(data, 0)


@pytest.mark.parametrize(
    ("version", "count_prefix"),
    [(0, int32(2**31 - 1)), (1, b"\x80\x80\x80\x80\x08")],  # the varint holds 2**31 = count + 1
    ids=["int32-count", "compact-count"],
)
def test_hostile_array_count_fails_before_reading_an_element(
    version: int, count_prefix: bytes
) -> None:
    # 2**31-1 int32 elements declared in a 20-byte message: the count is checked against
    # what remains, so not one element is read (the reader stops right after the count).
    head = int32(7) + int32(2) + b"\x03ab" if version == 1 else int32(7) + b"\x00\x02ab"
    head += count_prefix
    r = Reader(head + bytes(20 - len(head)))
    with pytest.raises(CorruptMessageError):
        EXAMPLE.decode_request(r, version)
    assert r.pos == len(head)


def test_versions_outside_the_valid_range_are_unsupported() -> None:
    with pytest.raises(UnsupportedVersionError):
        EXAMPLE.decode_request(Reader(int32(7)), 2)
    with pytest.raises(UnsupportedVersionError):
        encode({"id": 7}, 2)


def test_struct_fields_default_to_their_fields_defaults() -> None:
    leader = F("CurrentLeader", "LeaderIdAndEpoch", "1+", tag=0, fields=(
        F("LeaderId", "int32", "1+", default=-1),
        F("LeaderEpoch", "int32", "1+", default=-1),
    ))  # fmt: skip
    assert leader.default() == {"leader_id": -1, "leader_epoch": -1}
    assert leader.default() is not leader.default()


def test_a_struct_type_without_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="declares no fields"):
        F("CurrentLeader", "LeaderIdAndEpoch")
