"""The consumer protocol's embedded subscription and assignment formats: byte agreement
with kafka-python's encoder, round trips at every version, Kafka's forward-compatibility
rule for newer versions, and corrupt input rejected without large allocations."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment as KafkaPythonAssignment,
)
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolSubscription as KafkaPythonSubscription,
)

from tidelog.client.protocol.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
    TopicPartitions,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    flatten_partitions,
    group_partitions,
)
from tidelog.client.protocol.errors import CorruptMessageError

names = st.text(min_size=0, max_size=12)
partition_lists = st.lists(st.integers(0, 2**31 - 1), max_size=6).map(tuple)
groups = st.lists(st.builds(TopicPartitions, names, partition_lists), max_size=4).map(tuple)
user_data = st.none() | st.binary(max_size=16)

subscriptions = st.builds(
    ConsumerProtocolSubscription,
    topics=st.lists(names, max_size=5).map(tuple),
    user_data=user_data,
    owned_partitions=groups,
    generation_id=st.integers(-1, 2**31 - 1),
    rack_id=st.none() | names,
)
assignments = st.builds(ConsumerProtocolAssignment, assigned_partitions=groups, user_data=user_data)


def at_version(sub: ConsumerProtocolSubscription, version: int) -> ConsumerProtocolSubscription:
    """What survives an encoding at `version`: later fields fall back to their defaults."""
    return ConsumerProtocolSubscription(
        topics=sub.topics,
        user_data=sub.user_data,
        owned_partitions=sub.owned_partitions if version >= 1 else (),
        generation_id=sub.generation_id if version >= 2 else -1,
        rack_id=sub.rack_id if version >= 3 else None,
    )


def kafka_python_subscription(sub: ConsumerProtocolSubscription, version: int) -> bytes:
    tp = KafkaPythonSubscription.TopicPartition
    return bytes(
        KafkaPythonSubscription(
            version=version,
            topics=list(sub.topics),
            user_data=sub.user_data,
            owned_partitions=[
                tp(topic=g.topic, partitions=list(g.partitions)) for g in sub.owned_partitions
            ],
            generation_id=sub.generation_id,
            rack_id=sub.rack_id,
        ).encode()
    )


def kafka_python_assignment(assignment: ConsumerProtocolAssignment, version: int) -> bytes:
    tp = KafkaPythonAssignment.TopicPartition
    return bytes(
        KafkaPythonAssignment(
            version=version,
            assigned_partitions=[
                tp(topic=g.topic, partitions=list(g.partitions))
                for g in assignment.assigned_partitions
            ],
            user_data=assignment.user_data,
        ).encode()
    )


@given(subscriptions, st.integers(0, 3))
def test_subscription_bytes_agree_with_kafka_python(
    sub: ConsumerProtocolSubscription, version: int
) -> None:
    ours = encode_subscription(sub, version)
    theirs = kafka_python_subscription(sub, version)
    assert ours == theirs
    assert decode_subscription(theirs) == at_version(sub, version)


@given(assignments, st.integers(0, 3))
def test_assignment_bytes_agree_with_kafka_python(
    assignment: ConsumerProtocolAssignment, version: int
) -> None:
    ours = encode_assignment(assignment, version)
    assert ours == kafka_python_assignment(assignment, version)
    assert decode_assignment(ours) == assignment


@given(subscriptions)
def test_kafka_python_decodes_our_subscription(sub: ConsumerProtocolSubscription) -> None:
    decoded = KafkaPythonSubscription.decode(encode_subscription(sub))
    assert tuple(decoded.topics) == sub.topics
    assert decoded.user_data == sub.user_data
    assert decoded.generation_id == sub.generation_id
    assert decoded.rack_id == sub.rack_id
    assert [(g.topic, tuple(g.partitions)) for g in decoded.owned_partitions] == [
        tuple(g) for g in sub.owned_partitions
    ]


def test_v0_subscription_layout_from_the_definition() -> None:
    # int16 version, [string] topics (int32 count, int16 length + UTF-8), nullable bytes.
    data = encode_subscription(ConsumerProtocolSubscription(topics=("ab", "c")), 0)
    assert data == b"\x00\x00" + b"\x00\x00\x00\x02\x00\x02ab\x00\x01c" + b"\xff\xff\xff\xff"


def test_v3_subscription_layout_from_the_definition() -> None:
    sub = ConsumerProtocolSubscription(
        topics=("t",),
        user_data=b"\x07",
        owned_partitions=(TopicPartitions("t", (1, 2)),),
        generation_id=9,
        rack_id=None,
    )
    expected = (
        b"\x00\x03"
        + b"\x00\x00\x00\x01\x00\x01t"  # topics
        + b"\x00\x00\x00\x01\x07"  # user data
        + b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02"  # owned
        + b"\x00\x00\x00\x09"  # generation
        + b"\xff\xff"  # null rack
    )
    assert encode_subscription(sub) == expected


@given(subscriptions, st.integers(4, 0x7FFF), st.binary(max_size=20))
def test_newer_subscription_versions_parse_the_known_prefix(
    sub: ConsumerProtocolSubscription, version: int, appended: bytes
) -> None:
    v3 = encode_subscription(sub, 3)
    assert decode_subscription(struct.pack(">h", version) + v3[2:] + appended) == sub


@given(assignments, st.integers(4, 0x7FFF), st.binary(max_size=20))
def test_newer_assignment_versions_parse_the_known_prefix(
    assignment: ConsumerProtocolAssignment, version: int, appended: bytes
) -> None:
    v3 = encode_assignment(assignment, 3)
    assert decode_assignment(struct.pack(">h", version) + v3[2:] + appended) == assignment


@given(subscriptions, st.integers(0, 3), st.data())
def test_truncated_subscription_is_corrupt(
    sub: ConsumerProtocolSubscription, version: int, data: st.DataObject
) -> None:
    full = encode_subscription(sub, version)
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(CorruptMessageError):
        decode_subscription(full[:cut])


@given(assignments, st.data())
def test_truncated_assignment_is_corrupt(
    assignment: ConsumerProtocolAssignment, data: st.DataObject
) -> None:
    full = encode_assignment(assignment)
    cut = data.draw(st.integers(1, len(full) - 1))
    with pytest.raises(CorruptMessageError):
        decode_assignment(full[:cut])


def test_empty_assignment_bytes_mean_no_partitions() -> None:
    assert decode_assignment(b"") == ConsumerProtocolAssignment((), None)


def test_negative_versions_are_corrupt() -> None:
    with pytest.raises(CorruptMessageError):
        decode_subscription(b"\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff")
    with pytest.raises(CorruptMessageError):
        decode_assignment(b"\x80\x00\x00\x00\x00\x00\xff\xff\xff\xff")


def test_hostile_counts_are_rejected_before_allocating() -> None:
    huge_topics = b"\x00\x00" + b"\x7f\xff\xff\xff"
    with pytest.raises(CorruptMessageError):
        decode_subscription(huge_topics)
    huge_partitions = b"\x00\x00" + b"\x00\x00\x00\x01\x00\x01t" + b"\x7f\xff\xff\xff"
    with pytest.raises(CorruptMessageError):
        decode_assignment(huge_partitions)


def test_null_topic_list_is_corrupt() -> None:
    with pytest.raises(CorruptMessageError):
        decode_subscription(b"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff")


def test_invalid_utf8_topic_is_corrupt() -> None:
    with pytest.raises(CorruptMessageError):
        decode_subscription(b"\x00\x00\x00\x00\x00\x01\x00\x01\xff\xff\xff\xff\xff")


def test_encoding_at_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_subscription(ConsumerProtocolSubscription(topics=("t",)), 4)
    with pytest.raises(ValueError):
        encode_assignment(ConsumerProtocolAssignment(), -1)


@given(st.lists(st.tuples(names, st.integers(0, 50)), max_size=30))
def test_grouping_partitions_keeps_every_pair_once_in_order(pairs: list[tuple[str, int]]) -> None:
    grouped = group_partitions(pairs)
    assert flatten_partitions(grouped) == sorted(set(pairs))
    assert [g.topic for g in grouped] == sorted({topic for topic, _ in pairs})
