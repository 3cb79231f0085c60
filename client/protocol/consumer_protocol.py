"""The "consumer" group protocol type's embedded formats.

Consumer groups carry two opaque byte strings through the group coordinator, which never
looks inside them: each member's subscription (JoinGroup protocol metadata) and each
member's assignment (SyncGroup assignment, written by the leader). Every Kafka client
encodes them the same way, following Kafka's ConsumerProtocolSubscription and
ConsumerProtocolAssignment message definitions:

    Subscription (versions 0-3, never flexible)
      Version          int16
      Topics           [string]
      UserData         nullable bytes
      OwnedPartitions  [Topic string, Partitions [int32]]   v1+  (KIP-429)
      GenerationId     int32, -1 when unknown               v2+  (KIP-792)
      RackId           nullable string                      v3+  (KIP-881)

    Assignment (versions 0-3, the same layout at every version)
      Version             int16
      AssignedPartitions  [Topic string, Partitions [int32]]
      UserData            nullable bytes

Kafka's compatibility rule for both: a newer version only appends fields, so a reader
parses a version above the highest it knows with the highest layout it knows and ignores
what follows (librdkafka or a newer Java client may send versions we have not seen).
Trailing bytes after the known fields are ignored at every version, as Kafka's own readers
do. A negative version is corrupt.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import F, Field, Message, StructCodec

CONSUMER_PROTOCOL_TYPE = "consumer"
"""The JoinGroup `ProtocolType` of consumer groups."""

SUBSCRIPTION_VERSION_MAX = 3
ASSIGNMENT_VERSION_MAX = 3


class TopicPartitions(NamedTuple):
    """One topic and some of its partition indexes, as both formats group them on the wire."""

    topic: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConsumerProtocolSubscription:
    """A member's subscription: what it wants to consume and what it owns right now.

    Fields a version does not carry take their defaults when decoded and are left out when
    encoded: `owned_partitions` is empty before v1, `generation_id` is -1 before v2 and
    `rack_id` is None before v3.
    """

    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: tuple[TopicPartitions, ...] = ()
    generation_id: int = -1
    rack_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumerProtocolAssignment:
    """The partitions the leader assigned to one member, and the leader's user data."""

    assigned_partitions: tuple[TopicPartitions, ...] = ()
    user_data: bytes | None = None


def group_partitions(partitions: Iterable[tuple[str, int]]) -> tuple[TopicPartitions, ...]:
    """(topic, partition) pairs grouped by topic, topics and partitions in ascending order."""
    by_topic: dict[str, set[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, set()).add(partition)
    return tuple(
        TopicPartitions(topic, tuple(sorted(by_topic[topic]))) for topic in sorted(by_topic)
    )


def flatten_partitions(groups: Iterable[TopicPartitions]) -> list[tuple[str, int]]:
    """The (topic, partition) pairs of grouped partitions, in wire order."""
    return [(group.topic, partition) for group in groups for partition in group.partitions]


_TOPIC_PARTITION_FIELDS = (
    F("Topic", "string"),
    F("Partitions", "[]int32"),
)

_SUBSCRIPTION_FIELDS = (
    F("Topics", "[]string"),
    F("UserData", "bytes", nullable="0+", default=None),
    F("OwnedPartitions", "[]TopicPartition", "1+", fields=_TOPIC_PARTITION_FIELDS),
    F("GenerationId", "int32", "2+", default=-1),
    F("RackId", "string", "3+", nullable="3+", default=None),
)  # fmt: skip

_ASSIGNMENT_FIELDS = (
    F("AssignedPartitions", "[]TopicPartition", fields=_TOPIC_PARTITION_FIELDS),
    F("UserData", "bytes", nullable="0+", default=None),
)  # fmt: skip


def _codec(fields: tuple[Field, ...], version: int, highest: int, what: str) -> StructCodec:
    if not 0 <= version <= highest:
        raise ValueError(f"{what} version {version} is outside 0-{highest}")
    return StructCodec.build(fields, version, flexible=False)


def _read_version(data: bytes | bytearray | memoryview, what: str) -> tuple[Reader, int]:
    reader = Reader(data)
    version = reader.int16()
    if version < 0:
        raise CorruptMessageError(f"{what} has negative version {version}")
    return reader, version


def _decode_struct(codec: StructCodec, reader: Reader, what: str) -> Message:
    try:
        return codec.decode_from(reader)
    except (struct.error, IndexError, ValueError) as exc:
        raise CorruptMessageError(f"malformed {what}: {exc}") from None


def _groups(decoded: list[Message]) -> tuple[TopicPartitions, ...]:
    return tuple(TopicPartitions(g["topic"], tuple(g["partitions"])) for g in decoded)


def _encode_groups(groups: Iterable[TopicPartitions]) -> list[Message]:
    return [{"topic": g.topic, "partitions": list(g.partitions)} for g in groups]


def encode_subscription(
    subscription: ConsumerProtocolSubscription, version: int = SUBSCRIPTION_VERSION_MAX
) -> bytes:
    """The JoinGroup protocol metadata bytes of `subscription` at `version` (0-3)."""
    codec = _codec(_SUBSCRIPTION_FIELDS, version, SUBSCRIPTION_VERSION_MAX, "subscription")
    writer = Writer()
    writer.int16(version)
    codec.encode_into(
        writer,
        {
            "topics": list(subscription.topics),
            "user_data": subscription.user_data,
            "owned_partitions": _encode_groups(subscription.owned_partitions),
            "generation_id": subscription.generation_id,
            "rack_id": subscription.rack_id,
        },
    )
    return writer.getvalue()


def decode_subscription(data: bytes | bytearray | memoryview) -> ConsumerProtocolSubscription:
    """Parse JoinGroup protocol metadata of the consumer protocol, of any version.

    Raises CorruptMessageError for a truncated or malformed encoding.
    """
    reader, version = _read_version(data, "subscription")
    known = min(version, SUBSCRIPTION_VERSION_MAX)
    codec = _codec(_SUBSCRIPTION_FIELDS, known, SUBSCRIPTION_VERSION_MAX, "subscription")
    msg = _decode_struct(codec, reader, "subscription")
    return ConsumerProtocolSubscription(
        topics=tuple(msg["topics"]),
        user_data=msg["user_data"],
        owned_partitions=_groups(msg["owned_partitions"]),
        generation_id=msg["generation_id"],
        rack_id=msg["rack_id"],
    )


def encode_assignment(
    assignment: ConsumerProtocolAssignment, version: int = ASSIGNMENT_VERSION_MAX
) -> bytes:
    """The SyncGroup assignment bytes of `assignment` at `version` (0-3)."""
    codec = _codec(_ASSIGNMENT_FIELDS, version, ASSIGNMENT_VERSION_MAX, "assignment")
    writer = Writer()
    writer.int16(version)
    codec.encode_into(
        writer,
        {
            "assigned_partitions": _encode_groups(assignment.assigned_partitions),
            "user_data": assignment.user_data,
        },
    )
    return writer.getvalue()


def decode_assignment(data: bytes | bytearray | memoryview) -> ConsumerProtocolAssignment:
    """Parse a SyncGroup assignment of the consumer protocol, of any version.

    Zero bytes decode as an empty assignment: the coordinator hands a member empty bytes
    when the leader gave it nothing (or a follower's SyncGroup ended in an error). Raises
    CorruptMessageError for a truncated or malformed encoding.
    """
    if len(data) == 0:
        return ConsumerProtocolAssignment()
    reader, version = _read_version(data, "assignment")
    known = min(version, ASSIGNMENT_VERSION_MAX)
    codec = _codec(_ASSIGNMENT_FIELDS, known, ASSIGNMENT_VERSION_MAX, "assignment")
    msg = _decode_struct(codec, reader, "assignment")
    return ConsumerProtocolAssignment(
        assigned_partitions=_groups(msg["assigned_partitions"]),
        user_data=msg["user_data"],
    )
