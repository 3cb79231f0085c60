"""Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete, DeleteGroups, retention. No I/O.

- Commit. Accepted from a member of the current generation while the group is Stable or
  preparing a rebalance (eager consumers commit while they rejoin); REBALANCE_IN_PROGRESS
  while CompletingRebalance. Generation -1 with no member id is a client that manages its
  own partitions: accepted while the group is Empty, and it creates the group (a "simple"
  group, without protocol type) when there is none. Otherwise an unknown group is
  ILLEGAL_GENERATION (GROUP_ID_NOT_FOUND from OffsetCommit v9). Metadata longer than
  `offset_metadata_max_bytes` is OFFSET_METADATA_TOO_LARGE for that partition only.
  Offsets become visible once their records are durable; the response waits for that.
- Fetch returns -1 (offset and leader epoch) and "" for partitions without a commit; null
  topics (v2+) mean every committed partition; v8+ asks for several groups at once, each with
  its own error.
- OffsetDelete removes offsets of an Empty group, or of topics a "consumer" group's members
  do not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC for the others).
- DeleteGroups removes Empty groups with their offsets (tombstones for both); a group with
  members is NON_EMPTY_GROUP. The group is Dead while the tombstones are written.
- Retention (Kafka's rules): once a group with a protocol type has been Empty for
  `offsets.retention.minutes`, its offsets expire; a simple group's offsets expire that long
  after their commit; a Stable "consumer" group's offsets of topics nobody subscribes to
  expire that long after their commit; an explicit expiry (OffsetCommit v2-4's retention
  time) wins. An Empty group left without offsets is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.effects import (
    Effects,
    RequestId,
    group_append_error,
    offset_append_error,
)
from tidelog.broker.groups.group import (
    CONSUMER_PROTOCOL_TYPE,
    UNKNOWN_MEMBER_ID,
    Group,
    GroupState,
    TopicPartition,
)
from tidelog.broker.groups.rebalance import Rebalancer
from tidelog.broker.groups.records import (
    NO_LEADER_EPOCH,
    CoordinatorRecord,
    OffsetAndMetadata,
    group_metadata_record,
    offset_commit_record,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

NO_OFFSET = -1
NO_METADATA = ""
DEFAULT_RETENTION_TIME_MS = -1
FIRST_GROUP_ID_NOT_FOUND_COMMIT_VERSION = 9
FIRST_TOP_LEVEL_ERROR_FETCH_VERSION = 2
FIRST_MULTI_GROUP_FETCH_VERSION = 8
COMMIT_RETENTION_VERSIONS = range(2, 5)

CoordinatorCheck = Callable[[str], ErrorCode]
"""group id -> NONE if this coordinator serves the group now, else the error to answer."""


class Offsets:
    """The offsets half of the coordinator, over the shared table of loaded groups."""

    def __init__(
        self,
        config: GroupConfig,
        groups: dict[str, Group],
        effects: Effects,
        rebalancer: Rebalancer,
    ) -> None:
        self._config = config
        self._groups = groups
        self._fx = effects
        self._rebalancer = rebalancer

    # --- OffsetCommit ---------------------------------------------------------------------

    def commit(self, request_id: RequestId, request: Message, version: int, partition: int) -> None:
        group_id: str = request["group_id"]
        generation_id: int = request["generation_id_or_member_epoch"]
        group = self._groups.get(group_id)
        if group is None:
            if generation_id >= 0:
                error = (
                    ErrorCode.GROUP_ID_NOT_FOUND
                    if version >= FIRST_GROUP_ID_NOT_FOUND_COMMIT_VERSION
                    else ErrorCode.ILLEGAL_GENERATION
                )
                self._fx.respond(request_id, commit_error_response(request, error))
                return
            group = Group(group_id, partition, state_timestamp_ms=self._fx.now_ms)
        error = _commit_error(group, request)
        if error is not ErrorCode.NONE:
            self._fx.respond(request_id, commit_error_response(request, error))
            return
        member = group.members.get(request["member_id"])
        if member is not None:
            self._rebalancer.touch(group, member)
        now = self._fx.now_ms
        retention_ms: int = request["retention_time_ms"]
        expire_ms = (
            now + retention_ms
            if version in COMMIT_RETENTION_VERSIONS and retention_ms != DEFAULT_RETENTION_TIME_MS
            else None
        )
        response_topics: list[Message] = []
        written: list[tuple[TopicPartition, OffsetAndMetadata, Message]] = []
        for topic in request["topics"]:
            partitions: list[Message] = []
            response_topics.append({"name": topic["name"], "partitions": partitions})
            for p in topic["partitions"]:
                entry = {"partition_index": p["partition_index"], "error_code": 0}
                partitions.append(entry)
                metadata: str = p["committed_metadata"] or NO_METADATA
                if len(metadata) > self._config.offset_metadata_max_bytes:
                    entry["error_code"] = int(ErrorCode.OFFSET_METADATA_TOO_LARGE)
                    continue
                value = OffsetAndMetadata(
                    offset=p["committed_offset"],
                    leader_epoch=p["committed_leader_epoch"],
                    metadata=metadata,
                    commit_timestamp_ms=now,
                    expire_timestamp_ms=expire_ms,
                )
                written.append(((topic["name"], p["partition_index"]), value, entry))
        response = {"throttle_time_ms": 0, "topics": response_topics}
        if not written:
            self._fx.respond(request_id, response)
            return
        self._groups.setdefault(group_id, group)
        for tp, _, _ in written:
            group.pending_commits[tp] = group.pending_commits.get(tp, 0) + 1

        def stored(error: ErrorCode) -> None:
            for tp, value, entry in written:
                count = group.pending_commits.pop(tp) - 1
                if count:
                    group.pending_commits[tp] = count
                if error is ErrorCode.NONE:
                    group.offsets[tp] = value
                else:
                    entry["error_code"] = int(offset_append_error(error))
            self._fx.respond(request_id, response)

        records = [offset_commit_record(group_id, tp[0], tp[1], value) for tp, value, _ in written]
        self._fx.append(group.partition, records, stored)

    # --- OffsetFetch ----------------------------------------------------------------------

    def fetch(self, request: Message, version: int, check: CoordinatorCheck) -> Message:
        if version >= FIRST_MULTI_GROUP_FETCH_VERSION:
            results = []
            for entry in request["groups"]:
                group_id: str = entry["group_id"]
                error = check(group_id)
                topics = (
                    [] if error is not ErrorCode.NONE else self._fetch(group_id, entry["topics"])
                )
                results.append({"group_id": group_id, "topics": topics, "error_code": int(error)})
            return {"throttle_time_ms": 0, "groups": results}
        group_id = request["group_id"]
        requested: list[Message] | None = request["topics"]
        error = check(group_id)
        if error is ErrorCode.NONE:
            topics = self._fetch(group_id, requested)
        elif version >= FIRST_TOP_LEVEL_ERROR_FETCH_VERSION:
            topics = []
        else:
            # v1 has no top-level error: every requested partition carries it.
            topics = [
                {
                    "name": t["name"],
                    "partitions": [_fetched(i, None, error) for i in t["partition_indexes"]],
                }
                for t in requested or []
            ]
        return {"throttle_time_ms": 0, "topics": topics, "error_code": int(error)}

    def _fetch(self, group_id: str, requested: list[Message] | None) -> list[Message]:
        group = self._groups.get(group_id)
        offsets = group.offsets if group is not None and not group.is_in(GroupState.DEAD) else {}
        if requested is None:
            by_topic: dict[str, list[Message]] = {}
            for (topic, index), value in sorted(offsets.items()):
                by_topic.setdefault(topic, []).append(_fetched(index, value))
            return [{"name": topic, "partitions": parts} for topic, parts in by_topic.items()]
        return [
            {
                "name": t["name"],
                "partitions": [
                    _fetched(i, offsets.get((t["name"], i))) for i in t["partition_indexes"]
                ],
            }
            for t in requested
        ]

    # --- OffsetDelete ---------------------------------------------------------------------

    def delete_offsets(self, request_id: RequestId, request: Message) -> None:
        group = self._groups.get(request["group_id"])
        if group is None or group.is_in(GroupState.DEAD):
            self._fx.respond(request_id, offset_delete_error(ErrorCode.GROUP_ID_NOT_FOUND))
            return
        by_subscription = not group.is_in(GroupState.EMPTY)
        if by_subscription and group.protocol_type != CONSUMER_PROTOCOL_TYPE:
            self._fx.respond(request_id, offset_delete_error(ErrorCode.NON_EMPTY_GROUP))
            return
        response_topics: list[Message] = []
        deleted: list[tuple[TopicPartition, Message]] = []
        for topic in request["topics"]:
            name: str = topic["name"]
            subscribed = by_subscription and group.is_subscribed_to(name)
            partitions: list[Message] = []
            response_topics.append({"name": name, "partitions": partitions})
            for p in topic["partitions"]:
                index: int = p["partition_index"]
                entry = {"partition_index": index, "error_code": 0}
                partitions.append(entry)
                if subscribed:
                    entry["error_code"] = int(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC)
                elif (name, index) in group.offsets or (name, index) in group.pending_commits:
                    deleted.append(((name, index), entry))
        response = {"error_code": 0, "throttle_time_ms": 0, "topics": response_topics}
        if not deleted:
            self._fx.respond(request_id, response)
            return

        def stored(error: ErrorCode) -> None:
            for tp, entry in deleted:
                if error is ErrorCode.NONE:
                    group.offsets.pop(tp, None)
                else:
                    entry["error_code"] = int(offset_append_error(error))
            self._fx.respond(request_id, response)

        tombstones = [offset_commit_record(group.group_id, t, i, None) for (t, i), _ in deleted]
        self._fx.append(group.partition, tombstones, stored)

    # --- DeleteGroups ---------------------------------------------------------------------

    def delete_groups(
        self, request_id: RequestId, request: Message, check: CoordinatorCheck
    ) -> None:
        gather = _Gather(request_id)
        for group_id in request["groups_names"]:
            result = {"group_id": group_id, "error_code": 0}
            gather.results.append(result)
            error = check(group_id)
            group = self._groups.get(group_id)
            if error is not ErrorCode.NONE:
                result["error_code"] = int(error)
            elif group is None or group.is_in(GroupState.DEAD):
                result["error_code"] = int(ErrorCode.GROUP_ID_NOT_FOUND)
            elif not group.is_in(GroupState.EMPTY):
                result["error_code"] = int(ErrorCode.NON_EMPTY_GROUP)
            else:
                self._delete_group(group, result, gather)
        gather.finish(self._fx)

    def _delete_group(self, group: Group, result: Message, gather: _Gather) -> None:
        previous_state, previous_timestamp = group.state, group.state_timestamp_ms
        group.transition(GroupState.DEAD, self._fx.now_ms)
        gather.waiting += 1

        def stored(error: ErrorCode) -> None:
            if error is ErrorCode.NONE:
                self._remove_group(group)
            else:
                group.revive_after_failed_delete(previous_state, previous_timestamp)
                result["error_code"] = int(group_append_error(error))
            gather.waiting -= 1
            gather.finish(self._fx)

        keys = set(group.offsets) | set(group.pending_commits)
        records = [offset_commit_record(group.group_id, t, i, None) for t, i in sorted(keys)]
        records.append(group_metadata_record(group.group_id, None))
        self._fx.append(group.partition, records, stored)

    def _remove_group(self, group: Group) -> None:
        if self._groups.get(group.group_id) is group:
            del self._groups[group.group_id]
            self._rebalancer.forget(group)

    # --- retention ------------------------------------------------------------------------

    def expire(self) -> None:
        """Drop expired offsets and groups left with nothing; write their tombstones."""
        now = self._fx.now_ms
        by_partition: dict[int, list[CoordinatorRecord]] = {}
        for group in list(self._groups.values()):
            if group.is_in(GroupState.DEAD):
                continue
            records = by_partition.setdefault(group.partition, [])
            for topic, index in self._expired(group, now):
                del group.offsets[(topic, index)]
                records.append(offset_commit_record(group.group_id, topic, index, None))
            if (
                group.is_in(GroupState.EMPTY)
                and group.is_empty
                and not (group.offsets or group.pending_commits)
            ):
                group.transition(GroupState.DEAD, now)
                self._remove_group(group)
                records.append(group_metadata_record(group.group_id, None))
        for partition, records in by_partition.items():
            if records:
                # Not durable is acceptable: the offsets simply expire again after a reload.
                self._fx.append(partition, records)

    def _expired(self, group: Group, now_ms: int) -> list[TopicPartition]:
        retention_ms = self._config.offsets_retention_ms
        unsubscribed_only = False
        base_ms: int | None = None  # None: each offset's own commit time
        if group.protocol_type is not None:
            if group.is_in(GroupState.EMPTY):
                base_ms = group.state_timestamp_ms
            elif (
                group.protocol_type == CONSUMER_PROTOCOL_TYPE
                and group.is_in(GroupState.STABLE)
                and group.subscribed_topics is not None
            ):
                unsubscribed_only = True
            else:
                return []
        expired = []
        for tp, value in group.offsets.items():
            if tp in group.pending_commits:
                continue
            if unsubscribed_only and group.is_subscribed_to(tp[0]):
                continue
            if value.expire_timestamp_ms is not None:
                due = now_ms >= value.expire_timestamp_ms
            else:
                since_ms = value.commit_timestamp_ms if base_ms is None else base_ms
                due = now_ms - since_ms >= retention_ms
            if due:
                expired.append(tp)
        return expired


@dataclass
class _Gather:
    """A response that waits for several appends."""

    request_id: RequestId
    results: list[Message] = field(default_factory=list)
    waiting: int = 0
    sent: bool = False

    def finish(self, effects: Effects) -> None:
        if self.waiting == 0 and not self.sent:
            self.sent = True
            effects.respond(self.request_id, {"throttle_time_ms": 0, "results": self.results})


def _commit_error(group: Group, request: Message) -> ErrorCode:
    """Kafka's rules for a (non-transactional) commit to an existing group."""
    member_id: str = request["member_id"]
    instance_id: str | None = request["group_instance_id"]
    generation_id: int = request["generation_id_or_member_epoch"]
    if group.is_in(GroupState.DEAD):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if generation_id < 0 and group.is_in(GroupState.EMPTY):
        return ErrorCode.NONE  # offsets of a client that assigns its own partitions
    if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or instance_id is not None:
        error = group.validate_member(member_id, instance_id)
        if error is not ErrorCode.NONE:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
    elif not group.is_in(GroupState.EMPTY):
        return ErrorCode.UNKNOWN_MEMBER_ID
    if group.is_in(GroupState.COMPLETING_REBALANCE):
        # The member has its new generation but not its assignment yet: let it sync first.
        return ErrorCode.REBALANCE_IN_PROGRESS
    return ErrorCode.NONE


def _fetched(
    index: int, value: OffsetAndMetadata | None, error: ErrorCode = ErrorCode.NONE
) -> Message:
    if value is None:
        return {
            "partition_index": index,
            "committed_offset": NO_OFFSET,
            "committed_leader_epoch": NO_LEADER_EPOCH,
            "metadata": NO_METADATA,
            "error_code": int(error),
        }
    return {
        "partition_index": index,
        "committed_offset": value.offset,
        "committed_leader_epoch": value.leader_epoch,
        "metadata": value.metadata,
        "error_code": int(error),
    }


def commit_error_response(request: Message, error: ErrorCode) -> Message:
    """An OffsetCommit response with `error` for every requested partition."""
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {"partition_index": p["partition_index"], "error_code": int(error)}
                    for p in t["partitions"]
                ],
            }
            for t in request["topics"]
        ],
    }


def offset_delete_error(error: ErrorCode) -> Message:
    return {"error_code": int(error), "throttle_time_ms": 0, "topics": []}
