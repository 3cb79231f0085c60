"""OffsetCommit and OffsetFetch bodies and results, across versions. No I/O.

Request bodies carry every version's fields; the codec writes those of the version sent.
OffsetFetch v8+ batches groups (`groups`), v1-7 name one group at the top level; both
layouts are filled, and `offset_fetch_results` reads whichever the response has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import OffsetAndMetadata, TopicPartition

OFFSET_COMMIT_MAX_VERSION = 9
"""v10 names topics by id."""
OFFSET_FETCH_MAX_VERSION = 9
"""v10 names topics by id."""


def offset_commit_request(
    group_id: str,
    generation_id: int,
    member_id: str,
    group_instance_id: str | None,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
) -> Message:
    topics: dict[str, list[Message]] = {}
    for tp, committed in sorted(offsets.items()):
        topics.setdefault(tp.topic, []).append({
            "partition_index": tp.partition,
            "committed_offset": committed.offset,
            "committed_leader_epoch": committed.leader_epoch,
            "commit_timestamp": -1,
            "committed_metadata": committed.metadata,
        })  # fmt: skip
    return {
        "group_id": group_id,
        "generation_id_or_member_epoch": generation_id,
        "member_id": member_id,
        "group_instance_id": group_instance_id,
        "retention_time_ms": -1,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


def offset_commit_errors(
    response: Message, sent: Iterable[TopicPartition]
) -> dict[TopicPartition, ErrorCode]:
    """The error code per partition sent (UNKNOWN_SERVER_ERROR for a partition the
    response leaves out)."""
    out = dict.fromkeys(sent, ErrorCode.UNKNOWN_SERVER_ERROR)
    for topic in response["topics"]:
        for partition in topic["partitions"]:
            tp = TopicPartition(topic["name"], partition["partition_index"])
            if tp in out:
                out[tp] = error_code(partition["error_code"])
    return out


def offset_fetch_request(
    group_id: str, partitions: Iterable[TopicPartition], *, require_stable: bool
) -> Message:
    by_topic: dict[str, list[int]] = {}
    for tp in sorted(set(partitions)):
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    topics = [{"name": name, "partition_indexes": parts} for name, parts in by_topic.items()]
    return {
        "group_id": group_id,
        "topics": topics,
        "groups": [{"group_id": group_id, "member_id": None, "member_epoch": -1, "topics": topics}],
        "require_stable": require_stable,
    }


def offset_fetch_results(
    response: Message, group_id: str
) -> tuple[ErrorCode, dict[TopicPartition, OffsetAndMetadata | ErrorCode | None]]:
    """(the group-level error code, per partition: its committed offset, None when the
    group has none for it, or its error code)."""
    groups = response.get("groups") or []
    if groups:
        group = next((g for g in groups if g["group_id"] == group_id), None)
        if group is None:
            return ErrorCode.UNKNOWN_SERVER_ERROR, {}
        top_error = group["error_code"]
        topics = group["topics"]
    else:
        top_error = response.get("error_code", 0)
        topics = response["topics"]
    out: dict[TopicPartition, OffsetAndMetadata | ErrorCode | None] = {}
    for topic in topics:
        for p in topic["partitions"]:
            tp = TopicPartition(topic["name"], p["partition_index"])
            code = error_code(p["error_code"])
            if code is not ErrorCode.NONE:
                out[tp] = code
            elif p["committed_offset"] < 0:
                out[tp] = None
            else:
                out[tp] = OffsetAndMetadata(
                    p["committed_offset"], p["metadata"] or "", p.get("committed_leader_epoch", -1)
                )
    return error_code(top_error), out


def error_code(value: int) -> ErrorCode:
    """The `ErrorCode` of a wire value (UNKNOWN_SERVER_ERROR for a code we do not know)."""
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR
