"""The __consumer_offsets record formats and the group -> partition hash."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.broker.groups.records import (
    GroupMetadata,
    GroupMetadataKey,
    MemberMetadata,
    OffsetAndMetadata,
    OffsetCommitKey,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    group_metadata_key,
    group_metadata_record,
    group_metadata_value,
    java_string_hash,
    offset_commit_key,
    offset_commit_record,
    offset_commit_value,
    partition_for_group,
)
from tidelog.client.protocol.errors import CorruptMessageError


def _s(text: str | None) -> bytes:
    """A classic (int16-length) string, -1 for null."""
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _b(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def test_offset_commit_key_is_version_1_group_topic_partition() -> None:
    assert offset_commit_key("grp", "orders", 7) == (
        struct.pack(">h", 1) + _s("grp") + _s("orders") + struct.pack(">i", 7)
    )
    # Kafka's older key version 0 has the same layout.
    legacy = struct.pack(">h", 0) + _s("grp") + _s("orders") + struct.pack(">i", 7)
    assert decode_key(legacy) == OffsetCommitKey("grp", "orders", 7)


def test_group_metadata_key_is_version_2_group() -> None:
    assert group_metadata_key("grp") == struct.pack(">h", 2) + _s("grp")
    assert decode_key(group_metadata_key("grp")) == GroupMetadataKey("grp")


def test_offset_commit_value_is_version_3() -> None:
    value = OffsetAndMetadata(offset=42, leader_epoch=5, metadata="m", commit_timestamp_ms=1000)
    assert offset_commit_value(value) == (
        struct.pack(">hqi", 3, 42, 5) + _s("m") + struct.pack(">q", 1000)
    )
    assert decode_offset_commit_value(offset_commit_value(value)) == value


def test_a_commit_with_an_expiry_uses_value_version_1() -> None:
    value = OffsetAndMetadata(42, 5, "m", 1000, expire_timestamp_ms=9000)
    encoded = offset_commit_value(value)
    assert encoded == struct.pack(">hq", 1, 42) + _s("m") + struct.pack(">qq", 1000, 9000)
    # Version 1 has no leader epoch.
    assert decode_offset_commit_value(encoded) == OffsetAndMetadata(42, -1, "m", 1000, 9000)


@pytest.mark.parametrize("version", [0, 2])
def test_offset_commit_values_of_versions_0_and_2_decode(version: int) -> None:
    encoded = struct.pack(">hq", version, 42) + _s("meta") + struct.pack(">q", 1000)
    assert decode_offset_commit_value(encoded) == OffsetAndMetadata(42, -1, "meta", 1000)


def test_offset_commit_value_version_4_is_flexible() -> None:
    # compact string: length + 1 as a varint; empty tagged fields at the end
    encoded = struct.pack(">hqi", 4, 42, 3) + b"\x02m" + struct.pack(">q", 1000) + b"\x00"
    assert decode_offset_commit_value(encoded) == OffsetAndMetadata(42, 3, "m", 1000)


def _group_value() -> GroupMetadata:
    return GroupMetadata(
        protocol_type="consumer",
        generation_id=3,
        protocol_name="range",
        leader_id="m1",
        current_state_timestamp_ms=5000,
        members=(
            MemberMetadata("m1", "i1", "client", "/10.0.0.1", 30000, 10000, b"sub", b"asg"),
            MemberMetadata("m2", None, "client", "/10.0.0.2", 30000, 10000, b"", b""),
        ),
    )


def test_group_metadata_value_is_version_3() -> None:
    expected = (
        struct.pack(">h", 3)
        + _s("consumer")
        + struct.pack(">i", 3)
        + _s("range")
        + _s("m1")
        + struct.pack(">q", 5000)
        + struct.pack(">i", 2)
        + _s("m1") + _s("i1") + _s("client") + _s("/10.0.0.1")
        + struct.pack(">ii", 30000, 10000) + _b(b"sub") + _b(b"asg")
        + _s("m2") + _s(None) + _s("client") + _s("/10.0.0.2")
        + struct.pack(">ii", 30000, 10000) + _b(b"") + _b(b"")
    )  # fmt: skip
    assert group_metadata_value(_group_value()) == expected
    assert decode_group_metadata_value(expected) == _group_value()


def test_group_metadata_version_0_uses_the_session_timeout_as_rebalance_timeout() -> None:
    encoded = (
        struct.pack(">h", 0) + _s("consumer") + struct.pack(">i", 1) + _s(None) + _s(None)
        + struct.pack(">i", 1) + _s("m") + _s("c") + _s("h") + struct.pack(">i", 6000)
        + _b(b"") + _b(b"")
    )  # fmt: skip
    decoded = decode_group_metadata_value(encoded)
    assert decoded.current_state_timestamp_ms is None
    assert decoded.protocol_name is None and decoded.leader_id is None
    (member,) = decoded.members
    assert (member.rebalance_timeout_ms, member.session_timeout_ms) == (6000, 6000)
    assert member.group_instance_id is None


def test_tombstones_have_the_key_and_no_value() -> None:
    assert offset_commit_record("g", "t", 1, None) == (offset_commit_key("g", "t", 1), None)
    assert group_metadata_record("g", None) == (group_metadata_key("g"), None)


def test_keys_of_newer_group_types_are_skipped_and_garbage_is_corrupt() -> None:
    assert decode_key(struct.pack(">h", 3) + b"anything") is None
    with pytest.raises(CorruptMessageError):
        decode_key(struct.pack(">h", -1))
    with pytest.raises(CorruptMessageError):
        decode_key(struct.pack(">h", 1) + _s("g"))  # truncated
    with pytest.raises(CorruptMessageError):
        decode_offset_commit_value(struct.pack(">h", 9) + b"\x00" * 30)


def _java_hash_by_definition(text: str) -> int:
    units = [
        int.from_bytes(text.encode("utf-16-be")[i : i + 2], "big")
        for i in range(0, len(text.encode("utf-16-be")), 2)
    ]
    n = len(units)
    total = sum(u * 31 ** (n - 1 - i) for i, u in enumerate(units)) % (1 << 32)
    return total - (1 << 32) if total >= 1 << 31 else total


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("ab", 97 * 31 + 98),
        ("hello", 99162322),
        ("polygenelubricants", -(1 << 31)),
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # a surrogate pair: two UTF-16 units
        ("a-long-consumer-group", _java_hash_by_definition("a-long-consumer-group")),
    ],
)  # fmt: skip
def test_java_string_hash(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected


@given(st.text(max_size=40))
def test_java_string_hash_matches_its_definition(text: str) -> None:
    assert java_string_hash(text) == _java_hash_by_definition(text)


def test_partition_for_group_is_kafkas_abs_hash_modulo() -> None:
    assert partition_for_group("hello", 50) == 99162322 % 50
    # Utils.abs(Integer.MIN_VALUE) is 0, not Integer.MIN_VALUE.
    assert partition_for_group("polygenelubricants", 50) == 0
    negative = next(
        name
        for i in range(100)
        if _java_hash_by_definition(name := f"consumer-{i}-of-the-orders-service") < 0
    )
    assert partition_for_group(negative, 50) == -_java_hash_by_definition(negative) % 50
    with pytest.raises(ValueError):
        partition_for_group("g", 0)


_text = st.text(max_size=20)
_optional_text = st.none() | _text
_int32 = st.integers(-(1 << 31), (1 << 31) - 1)
_int64 = st.integers(-(1 << 63), (1 << 63) - 1)


@given(
    st.builds(
        OffsetAndMetadata,
        offset=_int64,
        leader_epoch=_int32,
        metadata=_text,
        commit_timestamp_ms=_int64,
        expire_timestamp_ms=st.none() | st.integers(0, 1 << 62),
    )
)
def test_offset_values_round_trip(value: OffsetAndMetadata) -> None:
    decoded = decode_offset_commit_value(offset_commit_value(value))
    if value.expire_timestamp_ms is not None:
        value = OffsetAndMetadata(
            value.offset, -1, value.metadata, value.commit_timestamp_ms, value.expire_timestamp_ms
        )
    assert decoded == value


@given(
    st.builds(
        GroupMetadata,
        protocol_type=_text,
        generation_id=_int32,
        protocol_name=_optional_text,
        leader_id=_optional_text,
        current_state_timestamp_ms=st.none() | st.integers(0, 1 << 62),
        members=st.lists(
            st.builds(
                MemberMetadata,
                member_id=_text,
                group_instance_id=_optional_text,
                client_id=_text,
                client_host=_text,
                rebalance_timeout_ms=st.integers(0, (1 << 31) - 1),
                session_timeout_ms=_int32,
                subscription=st.binary(max_size=20),
                assignment=st.binary(max_size=20),
            ),
            max_size=4,
        ).map(tuple),
    )
)
def test_group_values_round_trip(value: GroupMetadata) -> None:
    assert decode_group_metadata_value(group_metadata_value(value)) == value


@given(_text, _text, _int32)
def test_keys_round_trip(group_id: str, topic: str, partition: int) -> None:
    assert decode_key(offset_commit_key(group_id, topic, partition)) == OffsetCommitKey(
        group_id, topic, partition
    )
    assert decode_key(group_metadata_key(group_id)) == GroupMetadataKey(group_id)
