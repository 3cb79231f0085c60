"""The rebalance lifecycle of a classic group: completing joins, SyncGroup, Heartbeat,
LeaveGroup, session and sync expiry. No I/O. (JoinGroup itself is in `join`.)

- Completion of the join phase: when every member (and every KIP-394 pending member id) has
  rejoined, or at the rebalance timeout (the largest of the members'). Dynamic members that
  did not rejoin are dropped, static ones stay. The first rebalance of an Empty group waits
  `group_initial_rebalance_delay_ms` first, and again while new members keep coming, up to
  the rebalance timeout. The generation increments; the protocol is chosen by vote among
  those every member supports; each parked join is answered, the leader's with every
  member's metadata. A group left without members becomes Empty and its memberless
  metadata is written.
- Sync: followers park until the leader's SyncGroup; its assignment is written as the
  group's metadata record and, once durable, every parked sync gets its assignment and the
  group is Stable (if the write fails, they get the error and the group rebalances).
  Members that have not synced within the rebalance timeout are dropped and the group
  rebalances. In Stable, a sync answers the current assignment.
- Heartbeats keep members alive for their session timeout and answer REBALANCE_IN_PROGRESS
  while the group prepares a rebalance. A member with a parked join or sync is alive by
  definition, except a new member whose first join has waited longer than
  `group_new_member_join_timeout_ms`. An expired member is removed and the group
  rebalances.
- LeaveGroup removes members by id, or (v3+, administrators) static members by instance id.
- A sync or heartbeat of another generation gets ILLEGAL_GENERATION; of an unknown member
  UNKNOWN_MEMBER_ID; of an instance id now held by another member id FENCED_INSTANCE_ID.

Every parked request is answered exactly once: a member removed while parked learns
UNKNOWN_MEMBER_ID, one replaced by its static successor FENCED_INSTANCE_ID, and a request
superseded by a newer one of the same member (a client that retried on another connection)
REBALANCE_IN_PROGRESS.
"""

from __future__ import annotations

from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.effects import Effects, RequestId, group_append_error
from tidelog.broker.groups.group import (
    UNKNOWN_MEMBER_ID,
    Group,
    GroupState,
    InitialDelay,
    Member,
    PendingRequest,
)
from tidelog.broker.groups.records import group_metadata_record
from tidelog.broker.groups.responses import generation_response, join_response, sync_response
from tidelog.broker.groups.timers import TimerKey, Timers
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

FIRST_LEAVE_BATCH_VERSION = 3


def join_key(group_id: str) -> TimerKey:
    return ("join", group_id)


def sync_key(group_id: str) -> TimerKey:
    return ("sync", group_id)


def session_key(group_id: str, member_id: str) -> TimerKey:
    return ("session", group_id, member_id)


def pending_member_key(group_id: str, member_id: str) -> TimerKey:
    return ("pending", group_id, member_id)


class Rebalancer:
    """Moves groups through their generations; shared by `join.Joiner` and `offsets`."""

    def __init__(
        self,
        config: GroupConfig,
        groups: dict[str, Group],
        effects: Effects,
        timers: Timers,
    ) -> None:
        self._config = config
        self._groups = groups
        self._fx = effects
        self._timers = timers

    def rebalance_or_complete_join(self, group: Group) -> None:
        if group.can_rebalance:
            self.prepare_rebalance(group)
        else:
            self.maybe_complete_join(group)

    def prepare_rebalance(self, group: Group) -> None:
        if group.is_in(COMPLETING):
            self._reset_and_propagate(group, ErrorCode.REBALANCE_IN_PROGRESS)
        group.pending_sync.clear()
        group.assignment_in_flight = False
        self._timers.cancel(sync_key(group.group_id))
        now = self._fx.now_ms
        initial = group.is_in(EMPTY)
        group.transition(PREPARING, now)
        if initial:
            delay_ms = self._config.group_initial_rebalance_delay_ms
            group.initial_delay = InitialDelay(
                delay_ms, max(group.rebalance_timeout_ms - delay_ms, 0)
            )
            self.schedule(join_key(group.group_id), delay_ms)
        elif group.all_members_joined():
            self._complete_join(group)
        else:
            self.schedule(join_key(group.group_id), group.rebalance_timeout_ms)

    def maybe_complete_join(self, group: Group) -> None:
        if group.is_in(PREPARING) and group.initial_delay is None and group.all_members_joined():
            self._complete_join(group)

    def on_join_deadline(self, group: Group) -> None:
        if not group.is_in(PREPARING):
            return
        delay = group.initial_delay
        if delay is not None and delay.new_member_added and delay.remaining_ms > 0:
            next_delay_ms = min(self._config.group_initial_rebalance_delay_ms, delay.remaining_ms)
            group.initial_delay = InitialDelay(
                next_delay_ms, max(delay.remaining_ms - delay.delay_ms, 0)
            )
            self.schedule(join_key(group.group_id), next_delay_ms)
            return
        self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        self._timers.cancel(join_key(group.group_id))
        group.initial_delay = None
        for member in list(group.members.values()):
            if member.join_request is None and not member.is_static:
                self.remove_member(group, member.member_id)
        if group.members and not group.elect_joined_leader():
            # Only static members that have not rejoined remain: wait for them, or for their
            # sessions to expire.
            self.schedule(join_key(group.group_id), group.rebalance_timeout_ms)
            return
        now = self._fx.now_ms
        group.generation_id += 1
        if not group.members:
            group.protocol_name = None
            group.subscribed_topics = group.compute_subscribed_topics()
            group.transition(EMPTY, now)
            record = group_metadata_record(group.group_id, group.to_metadata())
            # Not durable is acceptable: the last stored generation has no live member either.
            self._fx.append(group.partition, [record])
            return
        group.protocol_name = group.select_protocol()
        group.subscribed_topics = group.compute_subscribed_topics()
        group.transition(COMPLETING, now)
        for member in group.members.values():
            request = group.park_join(member, None)
            if request is not None:
                self._fx.respond(
                    request.request_id,
                    generation_response(
                        group,
                        member,
                        request.version,
                        with_members=group.is_leader(member.member_id),
                    ),
                )
            self.touch(group, member)
            member.is_new = False
            group.pending_sync.add(member.member_id)
        self.schedule(sync_key(group.group_id), group.rebalance_timeout_ms)

    def on_sync_deadline(self, group: Group) -> None:
        if not group.is_in(COMPLETING, STABLE) or not group.pending_sync:
            return
        for member_id in [m for m in group.members if m in group.pending_sync]:
            self.remove_member(group, member_id)
        self.prepare_rebalance(group)

    def _reset_and_propagate(self, group: Group, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate(group, error)

    def _propagate(self, group: Group, error: ErrorCode) -> None:
        for member in group.members.values():
            request = member.sync_request
            if request is None:
                continue
            member.sync_request = None
            if error is ErrorCode.NONE:
                response = sync_response(
                    member.assignment, group.protocol_type, group.protocol_name
                )
            else:
                response = sync_response(error=error)
            self._fx.respond(request.request_id, response)
            self.touch(group, member)

    def sync(self, request_id: RequestId, request: Message, version: int) -> None:
        group = self._groups.get(request["group_id"])
        member_id: str = request["member_id"]
        error = self._sync_error(group, request)
        if error is not ErrorCode.NONE or group is None:
            self._fx.respond(request_id, sync_response(error=error))
            return
        member = group.members[member_id]
        self.touch(group, member)
        self._sync_received(group, member_id)
        if group.is_in(STABLE):
            self._fx.respond(
                request_id,
                sync_response(member.assignment, group.protocol_type, group.protocol_name),
            )
            return
        assert group.is_in(COMPLETING), group.state
        if member.sync_request is not None:
            self._fx.respond(
                member.sync_request.request_id,
                sync_response(error=ErrorCode.REBALANCE_IN_PROGRESS),
            )
        member.sync_request = PendingRequest(request_id, version)
        if group.is_leader(member_id) and not group.assignment_in_flight:
            given = {a["member_id"]: a["assignment"] for a in request["assignments"]}
            assignments = {mid: given.get(mid, b"") for mid in group.members}
            generation_id = group.generation_id
            group.assignment_in_flight = True

            def stored(error: ErrorCode) -> None:
                self._assignment_stored(group, generation_id, assignments, error)

            record = group_metadata_record(group.group_id, group.to_metadata(assignments))
            self._fx.append(group.partition, [record], stored)

    @staticmethod
    def _sync_error(group: Group | None, request: Message) -> ErrorCode:
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_in(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = group.validate_member(request["member_id"], request["group_instance_id"])
        if error is not ErrorCode.NONE:
            return error
        if request["generation_id"] != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if _inconsistent(request["protocol_type"], group.protocol_type) or _inconsistent(
            request["protocol_name"], group.protocol_name
        ):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if group.is_in(PREPARING):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def _sync_received(self, group: Group, member_id: str) -> None:
        group.pending_sync.discard(member_id)
        if not group.pending_sync:
            self._timers.cancel(sync_key(group.group_id))

    def _assignment_stored(
        self, group: Group, generation_id: int, assignments: dict[str, bytes], error: ErrorCode
    ) -> None:
        # A rebalance or an unload since then answered every parked sync already.
        if self._groups.get(group.group_id) is not group:
            return
        if not group.is_in(COMPLETING) or group.generation_id != generation_id:
            return
        group.assignment_in_flight = False
        if error is ErrorCode.NONE:
            for member in group.members.values():
                member.assignment = assignments.get(member.member_id, b"")
            self._propagate(group, ErrorCode.NONE)
            group.transition(STABLE, self._fx.now_ms)
        else:
            self._reset_and_propagate(group, group_append_error(error))
            self.rebalance_or_complete_join(group)

    def heartbeat(self, request: Message) -> ErrorCode:
        group = self._groups.get(request["group_id"])
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_in(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        member_id: str = request["member_id"]
        error = group.validate_member(member_id, request["group_instance_id"])
        if error is not ErrorCode.NONE:
            return error
        if request["generation_id"] != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        self.touch(group, group.members[member_id])
        if group.is_in(PREPARING):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(self, request: Message, version: int) -> Message:
        """The LeaveGroup response: per member for v3+, one top-level error before."""
        group = self._groups.get(request["group_id"])
        if group is None or group.is_in(DEAD):
            code = (
                ErrorCode.UNKNOWN_MEMBER_ID
                if group is None
                else ErrorCode.COORDINATOR_NOT_AVAILABLE
            )
            return {"throttle_time_ms": 0, "error_code": int(code), "members": []}
        if version < FIRST_LEAVE_BATCH_VERSION:
            identities = [{"member_id": request["member_id"], "group_instance_id": None}]
        else:
            identities = request["members"]
        results = []
        removed = False
        for identity in identities:
            member_id: str = identity["member_id"]
            instance_id: str | None = identity["group_instance_id"]
            error = ErrorCode.NONE
            if member_id == UNKNOWN_MEMBER_ID:
                # An administrator removing a static member by its instance id.
                static_id = group.static_members.get(instance_id) if instance_id else None
                if static_id is None:
                    error = ErrorCode.UNKNOWN_MEMBER_ID
                else:
                    self.remove_member(group, static_id)
            elif member_id in group.pending_members:
                group.pending_members.discard(member_id)
                self._timers.cancel(pending_member_key(group.group_id, member_id))
            else:
                error = group.validate_member(member_id, instance_id)
                if error is ErrorCode.NONE:
                    self.remove_member(group, member_id)
            removed = removed or error is ErrorCode.NONE
            results.append(
                {"member_id": member_id, "group_instance_id": instance_id, "error_code": int(error)}
            )
        if removed:
            self.after_removal(group)
        if version < FIRST_LEAVE_BATCH_VERSION:
            return {"throttle_time_ms": 0, "error_code": results[0]["error_code"], "members": []}
        return {"throttle_time_ms": 0, "error_code": 0, "members": results}

    def on_session_expired(self, group: Group, member_id: str) -> None:
        member = group.members.get(member_id)
        if member is None:
            return
        parked = member.join_request is not None or member.sync_request is not None
        if parked and not member.is_new:
            self.touch(group, member)  # waiting on us, so alive
            return
        self.remove_member(group, member_id)
        self.after_removal(group)

    def on_pending_member_expired(self, group: Group, member_id: str) -> None:
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self.maybe_complete_join(group)

    def adopt(self, group: Group) -> None:
        """Start the clocks of a group just loaded from its records."""
        for member in group.members.values():
            self.touch(group, member)
        if len(group.members) > self._config.group_max_size:
            self.prepare_rebalance(group)  # max size lowered: shed members that do not rejoin

    def abandon(self, group: Group, error: ErrorCode) -> None:
        """Answer every parked request with `error` and stop the group's clocks."""
        for member in group.members.values():
            if (request := group.park_join(member, None)) is not None:
                self.join_error(request, error, member.member_id)
            if member.sync_request is not None:
                self._fx.respond(member.sync_request.request_id, sync_response(error=error))
                member.sync_request = None
        self.forget(group)

    def forget(self, group: Group) -> None:
        """Cancel every timer of a group leaving the coordinator."""
        group_id = group.group_id
        self._timers.cancel(join_key(group_id))
        self._timers.cancel(sync_key(group_id))
        for member_id in group.members:
            self._timers.cancel(session_key(group_id, member_id))
        for member_id in group.pending_members:
            self._timers.cancel(pending_member_key(group_id, member_id))

    def touch(self, group: Group, member: Member) -> None:
        """Restart the session clock of a member that proved it is alive."""
        self.schedule(session_key(group.group_id, member.member_id), member.session_timeout_ms)

    def schedule(self, key: TimerKey, delay_ms: int) -> None:
        # At least 1 ms, so that a zero timeout cannot make a tick loop on itself.
        self._timers.schedule(key, self._fx.now_ms + max(delay_ms, 1))

    def fence(self, group: Group, member: Member) -> None:
        """Answer the parked requests of a member replaced by its static successor."""
        if (request := group.park_join(member, None)) is not None:
            self.join_error(request, ErrorCode.FENCED_INSTANCE_ID, member.member_id)
        if member.sync_request is not None:
            self._fx.respond(
                member.sync_request.request_id,
                sync_response(error=ErrorCode.FENCED_INSTANCE_ID),
            )
            member.sync_request = None

    def remove_member(self, group: Group, member_id: str) -> None:
        """Drop a member; its parked requests learn it is gone (UNKNOWN_MEMBER_ID)."""
        member = group.remove_member(member_id)
        self._timers.cancel(session_key(group.group_id, member_id))
        if member.join_request is not None:
            self.join_error(member.join_request, ErrorCode.UNKNOWN_MEMBER_ID)
        if member.sync_request is not None:
            self._fx.respond(
                member.sync_request.request_id,
                sync_response(error=ErrorCode.UNKNOWN_MEMBER_ID),
            )

    def after_removal(self, group: Group) -> None:
        if group.is_in(STABLE, COMPLETING):
            self.rebalance_or_complete_join(group)
        else:
            self.maybe_complete_join(group)

    def join_error(self, request: PendingRequest, error: ErrorCode, member_id: str = "") -> None:
        self._fx.respond(
            request.request_id,
            join_response(request.version, error=error, member_id=member_id),
        )


def _inconsistent(requested: str | None, current: str | None) -> bool:
    """SyncGroup v5+ names the protocol it expects; null means "any"."""
    return requested is not None and current is not None and requested != current
