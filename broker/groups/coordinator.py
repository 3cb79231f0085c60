"""The group coordinator core: every consumer-group API, driven by calls, with no I/O.

A thin driver owns one `GroupCoordinator` and calls it from one task at a time:

    out = coordinator.join_group(request_id, request, version, client_id, client_host, now_ms)

Each call takes the decoded request body (the codec's dict), its API version and the
current wall-clock time in ms, and returns an `Output` (see `effects`): responses to send
now, possibly to earlier requests; appends for `__consumer_offsets`, to write in order and
report with `append_completed`; the deadline for the next `tick`. Every call first runs the
timers that are due, so a request arriving late sees the state it would after a timely tick.
Time is taken to be non-decreasing; a `now_ms` earlier than a previous call's counts as the
latter. Records carry the same clock (commit and state timestamps), as Kafka's do.

Ownership of groups follows `__consumer_offsets` partitions (`partition_for`). A partition
is served once loaded: `begin_load`, then `replay` its records in log order (any number of
calls), then `complete_load`; `load` does all three. Until then its groups answer
COORDINATOR_LOAD_IN_PROGRESS, and groups of partitions never loaded NOT_COORDINATOR.
`unload` gives a partition up: parked requests and those awaiting an append are answered
NOT_COORDINATOR at once, and outcomes reported later for its appends are ignored.

Versions: every API at the codec's versions, except OffsetCommit v10 and OffsetFetch v10,
which name topics by id (`SUPPORTED_VERSIONS`). Throttle times are always 0. FindCoordinator
needs the cluster's metadata and lives in `find_coordinator`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.effects import Effects, Output, RequestId
from tidelog.broker.groups.group import Group, GroupState, TopicPartition
from tidelog.broker.groups.join import Joiner, JoinParams
from tidelog.broker.groups.offsets import Offsets, commit_error_response, offset_delete_error
from tidelog.broker.groups.rebalance import Rebalancer
from tidelog.broker.groups.records import (
    GroupMetadata,
    GroupMetadataKey,
    OffsetAndMetadata,
    OffsetCommitKey,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    partition_for_group,
)
from tidelog.broker.groups.responses import join_response, sync_response
from tidelog.broker.groups.timers import Timers
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages import groups as apis
from tidelog.client.protocol.schema import Message, Versions

SUPPORTED_VERSIONS: dict[int, Versions] = {
    apis.OFFSET_COMMIT.key: Versions(2, 9),
    apis.OFFSET_FETCH.key: Versions(1, 9),
    **{
        api.key: api.valid
        for api in (
            apis.JOIN_GROUP,
            apis.SYNC_GROUP,
            apis.HEARTBEAT,
            apis.LEAVE_GROUP,
            apis.LIST_GROUPS,
            apis.DESCRIBE_GROUPS,
            apis.DELETE_GROUPS,
            apis.OFFSET_DELETE,
        )
    },
}
"""API key -> the versions this core answers correctly."""

GROUP_TYPE_CLASSIC = "classic"
AUTHORIZED_OPERATIONS_OMITTED = -(1 << 31)
GROUP_AUTHORIZED_OPERATIONS = sum(1 << op for op in (3, 6, 8, 10, 11))
"""READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: every operation on a group, as
Kafka reports without an authorizer."""
FIRST_AUTHORIZED_OPERATIONS_VERSION = 3
FIRST_GROUP_ID_NOT_FOUND_DESCRIBE_VERSION = 6
FIRST_STATES_FILTER_VERSION = 4
FIRST_TYPES_FILTER_VERSION = 5
CLEANUP_KEY = ("cleanup",)


class GroupCoordinator:
    """Consumer groups of the `__consumer_offsets` partitions this node leads."""

    def __init__(self, config: GroupConfig | None = None, *, rng: random.Random | None = None):
        self.config = config or GroupConfig()
        self._groups: dict[str, Group] = {}
        self._loaded: set[int] = set()
        self._loading: dict[int, _Replay] = {}
        self._now_ms = 0
        self._fx = Effects()
        self._timers = Timers()
        self._rebalancer = Rebalancer(self.config, self._groups, self._fx, self._timers)
        self._joiner = Joiner(
            self.config,
            self._groups,
            self._fx,
            self._timers,
            self._rebalancer,
            rng or random.Random(),
        )
        self._offsets = Offsets(self.config, self._groups, self._fx, self._rebalancer)

    # --- partitions -----------------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return partition_for_group(group_id, self.config.offsets_topic_num_partitions)

    def is_loaded(self, partition: int) -> bool:
        return partition in self._loaded

    def is_loading(self, partition: int) -> bool:
        return partition in self._loading

    def begin_load(self, partition: int) -> None:
        """This node now leads `partition`; its groups wait for `complete_load`."""
        assert 0 <= partition < self.config.offsets_topic_num_partitions, partition
        assert partition not in self._loaded, f"partition {partition} is already loaded"
        self._loading[partition] = _Replay(partition, self.config.offsets_topic_num_partitions)

    def replay(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply (key, value) records of the partition, in log order.

        Raises CorruptMessageError for a record that is not a valid coordinator record.
        """
        staging = self._loading[partition]
        for key, value in records:
            staging.apply(key, value)

    def complete_load(self, partition: int, now_ms: int) -> Output:
        self._advance(now_ms)
        staging = self._loading.pop(partition)
        for group in staging.build():
            self._groups[group.group_id] = group
            self._rebalancer.adopt(group)
        self._loaded.add(partition)
        if self._timers.deadline(CLEANUP_KEY) is None:
            self._schedule_cleanup()
        return self._output()

    def load(
        self, partition: int, records: Iterable[tuple[bytes, bytes | None]], now_ms: int
    ) -> Output:
        self.begin_load(partition)
        self.replay(partition, records)
        return self.complete_load(partition, now_ms)

    def unload(self, partition: int, now_ms: int) -> Output:
        """Stop serving `partition` (leadership moved, or shutdown)."""
        self._advance(now_ms)
        self._loading.pop(partition, None)
        if partition in self._loaded:
            for append_id in self._fx.in_flight(partition):
                self._fx.complete(append_id, ErrorCode.NOT_LEADER_OR_FOLLOWER)
            for group in [g for g in self._groups.values() if g.partition == partition]:
                self._rebalancer.abandon(group, ErrorCode.NOT_COORDINATOR)
                del self._groups[group.group_id]
            self._loaded.discard(partition)
        return self._output()

    # --- time and appends -----------------------------------------------------------------

    def tick(self, now_ms: int) -> Output:
        self._advance(now_ms)
        return self._output()

    def append_completed(self, append_id: int, error: ErrorCode, now_ms: int) -> Output:
        """The outcome of an `Append`: ErrorCode.NONE once durable, else why it failed."""
        self._advance(now_ms)
        self._fx.complete(append_id, error)
        return self._output()

    # --- membership APIs ------------------------------------------------------------------

    def join_group(
        self,
        request_id: RequestId,
        request: Message,
        version: int,
        client_id: str,
        client_host: str,
        now_ms: int,
    ) -> Output:
        self._begin(apis.JOIN_GROUP.key, version, now_ms)
        params = JoinParams.parse(request_id, request, version, client_id, client_host)
        error = self._check(params.group_id)
        if error is ErrorCode.NONE:
            self._joiner.join(params, self.partition_for(params.group_id))
        else:
            self._fx.respond(
                request_id, join_response(version, error=error, member_id=params.member_id)
            )
        return self._output()

    def sync_group(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.SYNC_GROUP.key, version, now_ms)
        error = self._check(request["group_id"])
        if error is ErrorCode.NONE:
            self._rebalancer.sync(request_id, request, version)
        else:
            self._fx.respond(request_id, sync_response(error=error))
        return self._output()

    def heartbeat(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.HEARTBEAT.key, version, now_ms)
        error = self._check(request["group_id"])
        if error is ErrorCode.NONE:
            error = self._rebalancer.heartbeat(request)
        self._fx.respond(request_id, {"throttle_time_ms": 0, "error_code": int(error)})
        return self._output()

    def leave_group(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.LEAVE_GROUP.key, version, now_ms)
        error = self._check(request["group_id"])
        if error is ErrorCode.NONE:
            response = self._rebalancer.leave(request, version)
        else:
            response = {"throttle_time_ms": 0, "error_code": int(error), "members": []}
        self._fx.respond(request_id, response)
        return self._output()

    # --- offsets APIs ---------------------------------------------------------------------

    def commit_offsets(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.OFFSET_COMMIT.key, version, now_ms)
        group_id: str = request["group_id"]
        error = self._check(group_id, allow_empty_id=True)
        if error is ErrorCode.NONE:
            self._offsets.commit(request_id, request, version, self.partition_for(group_id))
        else:
            self._fx.respond(request_id, commit_error_response(request, error))
        return self._output()

    def fetch_offsets(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.OFFSET_FETCH.key, version, now_ms)
        response = self._offsets.fetch(
            request, version, lambda group_id: self._check(group_id, allow_empty_id=True)
        )
        self._fx.respond(request_id, response)
        return self._output()

    def delete_offsets(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.OFFSET_DELETE.key, version, now_ms)
        error = self._check(request["group_id"])
        if error is ErrorCode.NONE:
            self._offsets.delete_offsets(request_id, request)
        else:
            self._fx.respond(request_id, offset_delete_error(error))
        return self._output()

    def delete_groups(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        self._begin(apis.DELETE_GROUPS.key, version, now_ms)
        self._offsets.delete_groups(
            request_id, request, lambda group_id: self._check(group_id, allow_empty_id=True)
        )
        return self._output()

    # --- listing --------------------------------------------------------------------------

    def list_groups(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        """Groups of every loaded partition; COORDINATOR_LOAD_IN_PROGRESS (with the groups
        known so far) while a partition is loading."""
        self._begin(apis.LIST_GROUPS.key, version, now_ms)
        states = types = None
        if version >= FIRST_STATES_FILTER_VERSION and request["states_filter"]:
            states = {s.lower() for s in request["states_filter"]}
        if version >= FIRST_TYPES_FILTER_VERSION and request["types_filter"]:
            types = {t.lower() for t in request["types_filter"]}
        listed = []
        if types is None or GROUP_TYPE_CLASSIC in types:
            for group_id in sorted(self._groups):
                group = self._groups[group_id]
                if group.is_in(GroupState.DEAD):
                    continue
                if states is not None and group.state.value.lower() not in states:
                    continue
                listed.append(
                    {
                        "group_id": group_id,
                        "protocol_type": group.protocol_type or "",
                        "group_state": group.state.value,
                        "group_type": GROUP_TYPE_CLASSIC,
                    }
                )
        error = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if self._loading else ErrorCode.NONE
        self._fx.respond(
            request_id, {"throttle_time_ms": 0, "error_code": int(error), "groups": listed}
        )
        return self._output()

    def describe_groups(
        self, request_id: RequestId, request: Message, version: int, now_ms: int
    ) -> Output:
        """Members' metadata and assignments are shown only while the group is Stable."""
        self._begin(apis.DESCRIBE_GROUPS.key, version, now_ms)
        operations = AUTHORIZED_OPERATIONS_OMITTED
        if (
            version >= FIRST_AUTHORIZED_OPERATIONS_VERSION
            and request["include_authorized_operations"]
        ):
            operations = GROUP_AUTHORIZED_OPERATIONS
        described = []
        for group_id in request["groups"]:
            entry = self._describe(group_id, version)
            entry["authorized_operations"] = operations
            described.append(entry)
        self._fx.respond(request_id, {"throttle_time_ms": 0, "groups": described})
        return self._output()

    def _describe(self, group_id: str, version: int) -> Message:
        entry: Message = {
            "error_code": 0,
            "error_message": None,
            "group_id": group_id,
            "group_state": "",
            "protocol_type": "",
            "protocol_data": "",
            "members": [],
        }
        error = self._check(group_id, allow_empty_id=True)
        group = self._groups.get(group_id)
        if error is not ErrorCode.NONE:
            entry["error_code"] = int(error)
        elif group is None or group.is_in(GroupState.DEAD):
            entry["group_state"] = GroupState.DEAD.value
            if version >= FIRST_GROUP_ID_NOT_FOUND_DESCRIBE_VERSION:
                entry["error_code"] = int(ErrorCode.GROUP_ID_NOT_FOUND)
                entry["error_message"] = f"Group {group_id} not found."
        else:
            protocol = group.protocol_name if group.is_in(GroupState.STABLE) else None
            entry["group_state"] = group.state.value
            entry["protocol_type"] = group.protocol_type or ""
            entry["protocol_data"] = protocol or ""
            entry["members"] = [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_metadata": m.metadata(protocol) if protocol is not None else b"",
                    "member_assignment": m.assignment if protocol is not None else b"",
                }
                for m in group.members.values()
            ]
        return entry

    # --- internals ------------------------------------------------------------------------

    def _begin(self, api_key: int, version: int, now_ms: int) -> None:
        assert version in SUPPORTED_VERSIONS[api_key], f"API {api_key} v{version}"
        self._advance(now_ms)

    def _advance(self, now_ms: int) -> None:
        self._now_ms = max(self._now_ms, now_ms)
        self._fx.now_ms = self._now_ms
        # Handlers only schedule deadlines after now (at least 1 ms ahead), so this ends.
        while (key := self._timers.pop_due(self._now_ms)) is not None:
            if key == CLEANUP_KEY:
                self._offsets.expire()
                self._schedule_cleanup()
                continue
            group = self._groups.get(key[1])
            if group is None:
                continue
            kind = key[0]
            if kind == "join":
                self._rebalancer.on_join_deadline(group)
            elif kind == "sync":
                self._rebalancer.on_sync_deadline(group)
            elif kind == "session":
                self._rebalancer.on_session_expired(group, key[2])
            else:
                assert kind == "pending", key
                self._rebalancer.on_pending_member_expired(group, key[2])

    def _schedule_cleanup(self) -> None:
        interval_ms = max(self.config.offsets_retention_check_interval_ms, 1)
        self._timers.schedule(CLEANUP_KEY, self._now_ms + interval_ms)

    def _check(self, group_id: str, *, allow_empty_id: bool = False) -> ErrorCode:
        """NONE if this coordinator serves `group_id` now, else the error to answer.

        Kafka accepts an empty group id for OffsetCommit, OffsetFetch, DescribeGroups and
        DeleteGroups only.
        """
        if not group_id and not allow_empty_id:
            return ErrorCode.INVALID_GROUP_ID
        partition = self.partition_for(group_id)
        if partition in self._loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        if partition not in self._loaded:
            return ErrorCode.NOT_COORDINATOR
        return ErrorCode.NONE

    def _output(self) -> Output:
        return self._fx.take(self._timers.next_deadline())


@dataclass
class _Replay:
    """The state of a partition being loaded, record by record, newest record winning."""

    partition: int
    partition_count: int
    groups: dict[str, GroupMetadata | None] = field(default_factory=dict)
    offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = field(default_factory=dict)

    def apply(self, key: bytes, value: bytes | None) -> None:
        decoded = decode_key(key)
        if isinstance(decoded, OffsetCommitKey):
            tp = (decoded.topic, decoded.partition)
            if value is None:
                self.offsets.get(decoded.group_id, {}).pop(tp, None)
            else:
                offsets = self.offsets.setdefault(decoded.group_id, {})
                offsets[tp] = decode_offset_commit_value(value)
        elif isinstance(decoded, GroupMetadataKey):
            self.groups[decoded.group_id] = (
                None if value is None else decode_group_metadata_value(value)
            )

    def build(self) -> list[Group]:
        """The loaded groups: those with metadata, and offset-only ("simple") groups.

        Records of groups that hash to another partition (written with another partition
        count) are unreachable here and left out.
        """
        built = []
        for group_id in dict.fromkeys([*self.groups, *self.offsets]):  # log order: deterministic
            if partition_for_group(group_id, self.partition_count) != self.partition:
                continue
            metadata = self.groups.get(group_id)
            offsets = self.offsets.get(group_id, {})
            if metadata is None and not offsets:
                continue
            if metadata is None:
                group = Group(group_id, self.partition)
            else:
                group = Group.from_metadata(group_id, self.partition, metadata)
            group.offsets.update(offsets)
            built.append(group)
        return built
