"""Records of the `__consumer_offsets` topic, byte for byte as Kafka writes them.

Every record has a key and a value, each beginning with a big-endian int16 version. The key's
version says which kind of record it is:

- 0 and 1: an offset commit. Key {group string, topic string, partition int32}.
  Value (OffsetCommitValue) by version: 0 {offset int64, metadata string, commitTimestamp
  int64}; 1 adds expireTimestamp int64 at the end; 2 is 0 again; 3 {offset int64,
  leaderEpoch int32, metadata string, commitTimestamp int64}; 4 is 3 in the flexible encoding
  (compact strings, tagged fields).
- 2: group metadata. Key {group string}. Value (GroupMetadataValue) by version: {protocolType
  string, generation int32, protocol nullable string, leader nullable string,
  currentStateTimestamp int64 (2+), members [memberId string, groupInstanceId nullable string
  (3+), clientId string, clientHost string, rebalanceTimeout int32 (1+), sessionTimeout int32,
  subscription bytes, assignment bytes]}; 4 is 3 in the flexible encoding.
- 3 and above: Kafka's records for its newer group types (KIP-848 consumer, share and streams
  groups). tidelog writes none of them; `decode_key` returns None for them so that replay
  skips them.

Strings and bytes use the classic encoding (int16 / int32 length, -1 for null). A null value
is a tombstone: the offset, or the group's metadata, is deleted (log compaction keeps only the
newest record per key). tidelog writes key version 1 with value version 3 for offsets (value
version 1 when a commit carries an expiry time, from OffsetCommit v2-4's RetentionTimeMs) and
key version 2 with value version 3 for groups, as Kafka does.

Groups are spread over the topic's partitions by Java's `String.hashCode` of the group id:
partition = Utils.abs(hash) % partition count, where Utils.abs maps Integer.MIN_VALUE to 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import F, Field, Message, StructCodec

OFFSET_COMMIT_KEY_VERSIONS = (0, 1)
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_KEY_VERSION = 1
OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_METADATA_VALUE_VERSION = 3
_HIGHEST_VALUE_VERSION = 4
_FIRST_FLEXIBLE_VALUE_VERSION = 4

NO_LEADER_EPOCH = -1
NO_TIMESTAMP = -1

_OFFSET_COMMIT_KEY = (
    F("group", "string"),
    F("topic", "string"),
    F("partition", "int32"),
)
_OFFSET_COMMIT_VALUE = (
    F("offset", "int64"),
    F("leaderEpoch", "int32", "3+", default=NO_LEADER_EPOCH),
    F("metadata", "string"),
    F("commitTimestamp", "int64"),
    F("expireTimestamp", "int64", "1", default=NO_TIMESTAMP),
)
_GROUP_METADATA_KEY = (F("group", "string"),)
_GROUP_METADATA_VALUE = (
    F("protocolType", "string"),
    F("generation", "int32"),
    F("protocol", "string", nullable="0+"),
    F("leader", "string", nullable="0+"),
    F("currentStateTimestamp", "int64", "2+", default=NO_TIMESTAMP),
    F("members", "[]MemberMetadata", fields=(
        F("memberId", "string"),
        F("groupInstanceId", "string", "3+", nullable="3+", default=None),
        F("clientId", "string"),
        F("clientHost", "string"),
        F("rebalanceTimeout", "int32", "1+", default=-1),
        F("sessionTimeout", "int32"),
        F("subscription", "bytes"),
        F("assignment", "bytes"),
    )),
)  # fmt: skip


class CoordinatorRecord(NamedTuple):
    """One record of `__consumer_offsets`: key bytes and value bytes (None: a tombstone)."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed offset. `expire_timestamp_ms` is None unless the commit set a retention."""

    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MemberMetadata:
    """A member as stored: `subscription` is its metadata for the group's chosen protocol."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """A group's generation as stored. `protocol_type` is "" for a group without one."""

    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    current_state_timestamp_ms: int | None
    members: tuple[MemberMetadata, ...]


# --- encoding -------------------------------------------------------------------------------


def _encode_key(fields: tuple[Field, ...], version: int, body: Message) -> bytes:
    """`version` as int16, then `body`. A key has one layout; its version names its kind."""
    w = Writer()
    w.int16(version)
    StructCodec.build(fields, 0, False).encode_into(w, body)
    return w.getvalue()


def _encode_value(fields: tuple[Field, ...], version: int, body: Message) -> bytes:
    """`version` as int16, then `body` in the layout of that version."""
    w = Writer()
    w.int16(version)
    flexible = version >= _FIRST_FLEXIBLE_VALUE_VERSION
    StructCodec.build(fields, version, flexible).encode_into(w, body)
    return w.getvalue()


def offset_commit_key(group_id: str, topic: str, partition: int) -> bytes:
    return _encode_key(
        _OFFSET_COMMIT_KEY,
        OFFSET_COMMIT_KEY_VERSION,
        {"group": group_id, "topic": topic, "partition": partition},
    )


def group_metadata_key(group_id: str) -> bytes:
    return _encode_key(_GROUP_METADATA_KEY, GROUP_METADATA_KEY_VERSION, {"group": group_id})


def offset_commit_value(value: OffsetAndMetadata) -> bytes:
    """Version 3, or version 1 when the commit carries an expiry time."""
    if value.expire_timestamp_ms is None:
        version = OFFSET_COMMIT_VALUE_VERSION
        expire_timestamp_ms = NO_TIMESTAMP
    else:
        version = OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY
        expire_timestamp_ms = value.expire_timestamp_ms
    body = {
        "offset": value.offset,
        "leader_epoch": value.leader_epoch,
        "metadata": value.metadata,
        "commit_timestamp": value.commit_timestamp_ms,
        "expire_timestamp": expire_timestamp_ms,
    }
    return _encode_value(_OFFSET_COMMIT_VALUE, version, body)


def group_metadata_value(value: GroupMetadata) -> bytes:
    body = {
        "protocol_type": value.protocol_type,
        "generation": value.generation_id,
        "protocol": value.protocol_name,
        "leader": value.leader_id,
        "current_state_timestamp": (
            NO_TIMESTAMP
            if value.current_state_timestamp_ms is None
            else value.current_state_timestamp_ms
        ),
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "rebalance_timeout": m.rebalance_timeout_ms,
                "session_timeout": m.session_timeout_ms,
                "subscription": m.subscription,
                "assignment": m.assignment,
            }
            for m in value.members
        ],
    }
    return _encode_value(_GROUP_METADATA_VALUE, GROUP_METADATA_VALUE_VERSION, body)


def offset_commit_record(
    group_id: str, topic: str, partition: int, value: OffsetAndMetadata | None
) -> CoordinatorRecord:
    """The record of a commit, or its tombstone when `value` is None."""
    return CoordinatorRecord(
        offset_commit_key(group_id, topic, partition),
        None if value is None else offset_commit_value(value),
    )


def group_metadata_record(group_id: str, value: GroupMetadata | None) -> CoordinatorRecord:
    """The record of a group's metadata, or its tombstone when `value` is None."""
    return CoordinatorRecord(
        group_metadata_key(group_id), None if value is None else group_metadata_value(value)
    )


# --- decoding -------------------------------------------------------------------------------


def _decode_value(fields: tuple[Field, ...], data: bytes, kind: str) -> tuple[int, Message]:
    r = Reader(data)
    version = r.int16()
    if not 0 <= version <= _HIGHEST_VALUE_VERSION:
        raise CorruptMessageError(f"{kind} value version {version} is unknown")
    codec = StructCodec.build(fields, version, version >= _FIRST_FLEXIBLE_VALUE_VERSION)
    return version, codec.decode_from(r)


def decode_key(data: bytes) -> OffsetCommitKey | GroupMetadataKey | None:
    """The key of a record; None for record kinds tidelog does not keep (versions 3+).

    Raises CorruptMessageError for bytes that are not a key of a known kind.
    """
    r = Reader(data)
    version = r.int16()
    if version in OFFSET_COMMIT_KEY_VERSIONS:
        body = StructCodec.build(_OFFSET_COMMIT_KEY, 0, False).decode_from(r)
        return OffsetCommitKey(body["group"], body["topic"], body["partition"])
    if version == GROUP_METADATA_KEY_VERSION:
        body = StructCodec.build(_GROUP_METADATA_KEY, 0, False).decode_from(r)
        return GroupMetadataKey(body["group"])
    if version > GROUP_METADATA_KEY_VERSION:
        return None
    raise CorruptMessageError(f"record key version {version} is invalid")


def decode_offset_commit_value(data: bytes) -> OffsetAndMetadata:
    version, body = _decode_value(_OFFSET_COMMIT_VALUE, data, "offset commit")
    expire: int = body["expire_timestamp"]
    return OffsetAndMetadata(
        offset=body["offset"],
        leader_epoch=body["leader_epoch"],
        metadata=body["metadata"],
        commit_timestamp_ms=body["commit_timestamp"],
        expire_timestamp_ms=expire if version == 1 and expire != NO_TIMESTAMP else None,
    )


def decode_group_metadata_value(data: bytes) -> GroupMetadata:
    _, body = _decode_value(_GROUP_METADATA_VALUE, data, "group metadata")
    timestamp: int = body["current_state_timestamp"]
    members = []
    for m in body["members"]:
        session_timeout_ms: int = m["session_timeout"]
        rebalance_timeout_ms: int = m["rebalance_timeout"]
        members.append(
            MemberMetadata(
                member_id=m["member_id"],
                group_instance_id=m["group_instance_id"],
                client_id=m["client_id"],
                client_host=m["client_host"],
                # Version 0 has no rebalance timeout; the session timeout stood in for it.
                rebalance_timeout_ms=(
                    session_timeout_ms if rebalance_timeout_ms == -1 else rebalance_timeout_ms
                ),
                session_timeout_ms=session_timeout_ms,
                subscription=m["subscription"],
                assignment=m["assignment"],
            )
        )
    return GroupMetadata(
        protocol_type=body["protocol_type"],
        generation_id=body["generation"],
        protocol_name=body["protocol"],
        leader_id=body["leader"],
        current_state_timestamp_ms=None if timestamp == NO_TIMESTAMP else timestamp,
        members=tuple(members),
    )


# --- partitioning ---------------------------------------------------------------------------

_INT32_MIN = -(1 << 31)


def java_string_hash(text: str) -> int:
    """Java's `String.hashCode()`: s[0]*31^(n-1) + ... + s[n-1] over UTF-16 code units, int32."""
    h = 0
    for (unit,) in struct.iter_unpack(">H", text.encode("utf-16-be", "surrogatepass")):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group_id: str, partition_count: int) -> int:
    """The `__consumer_offsets` partition that holds `group_id` (Kafka's assignment)."""
    if partition_count <= 0:
        raise ValueError(f"partition count must be positive, not {partition_count}")
    h = java_string_hash(group_id)
    return (0 if h == _INT32_MIN else abs(h)) % partition_count
