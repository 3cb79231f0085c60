"""JoinGroup: admitting members into a classic group. No I/O.

- A member without an id gets one: `<group.instance.id or client id>-<uuid4>`. A dynamic
  member joining with JoinGroup v4+ is first answered MEMBER_ID_REQUIRED with that id
  (KIP-394); the id stays reserved ("pending") for a session timeout, and a rebalance waits
  for it. Older versions join at once.
- Joins park until the rebalance completes (`rebalance`). The group accepts
  `group_max_size` members; more get GROUP_MAX_SIZE_REACHED.
- A known member rejoining a Stable group with unchanged metadata gets the current
  generation at once, without a rebalance, unless it is the leader (the leader rejoins to
  make the group reassign); changed metadata starts a rebalance. While CompletingRebalance,
  an unchanged rejoin is a retry and gets the same answer again.
- Static membership: a known `group.instance.id` joining without a member id takes over
  the old member, which is fenced (FENCED_INSTANCE_ID for its parked and later requests). In
  Stable, when the chosen protocol would not change, the new member id is written and the
  member gets the current generation without a rebalance; JoinGroup v9+ tells a replaced
  leader that it leads, with SkipAssignment (KIP-814), while older versions are given the
  old leader id so that they do not assign. If that write fails the old id is restored.
- Protocols: the group's members must share the protocol type and at least one protocol.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.effects import Effects, RequestId, group_append_error
from tidelog.broker.groups.group import (
    UNKNOWN_MEMBER_ID,
    Group,
    GroupState,
    Member,
    PendingRequest,
    Protocol,
)
from tidelog.broker.groups.rebalance import Rebalancer, pending_member_key, session_key
from tidelog.broker.groups.records import group_metadata_record
from tidelog.broker.groups.responses import generation_response
from tidelog.broker.groups.timers import Timers
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

FIRST_MEMBER_ID_REQUIRED_VERSION = 4
FIRST_SKIP_ASSIGNMENT_VERSION = 9


@dataclass(frozen=True, slots=True)
class JoinParams:
    """A JoinGroup request, normalised across versions."""

    request: PendingRequest
    group_id: str
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[Protocol, ...]

    @classmethod
    def parse(
        cls,
        request_id: RequestId,
        request: Message,
        version: int,
        client_id: str,
        client_host: str,
    ) -> JoinParams:
        session_timeout_ms: int = request["session_timeout_ms"]
        rebalance_timeout_ms: int = request["rebalance_timeout_ms"]
        if version == 0 or rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms  # v0 has no rebalance timeout
        return cls(
            request=PendingRequest(request_id, version),
            group_id=request["group_id"],
            member_id=request["member_id"],
            group_instance_id=request["group_instance_id"],
            client_id=client_id,
            client_host=client_host,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=request["protocol_type"],
            protocols=tuple((p["name"], p["metadata"]) for p in request["protocols"]),
        )

    @property
    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]


class Joiner:
    """Handles JoinGroup over the shared table of loaded groups."""

    def __init__(
        self,
        config: GroupConfig,
        groups: dict[str, Group],
        effects: Effects,
        timers: Timers,
        rebalancer: Rebalancer,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._groups = groups
        self._fx = effects
        self._timers = timers
        self._rebalancer = rebalancer
        self._rng = rng

    def join(self, p: JoinParams, partition: int) -> None:
        config = self._config
        if not (
            config.group_min_session_timeout_ms
            <= p.session_timeout_ms
            <= config.group_max_session_timeout_ms
        ):
            self._rebalancer.join_error(p.request, ErrorCode.INVALID_SESSION_TIMEOUT, p.member_id)
            return
        is_new_member = p.member_id == UNKNOWN_MEMBER_ID
        group = self._groups.get(p.group_id)
        if group is None:
            if not is_new_member:
                self._rebalancer.join_error(p.request, ErrorCode.UNKNOWN_MEMBER_ID, p.member_id)
                return
            group = Group(p.group_id, partition, state_timestamp_ms=self._fx.now_ms)
            self._groups[p.group_id] = group
        if not self._accepts_joining_member(group, p.member_id):
            if p.member_id in group.members:
                self._rebalancer.remove_member(group, p.member_id)
                self._rebalancer.after_removal(group)
            self._rebalancer.join_error(p.request, ErrorCode.GROUP_MAX_SIZE_REACHED)
        elif is_new_member:
            self._join_new_member(group, p)
        else:
            self._join_known_member(group, p)
        if (
            group.is_in(EMPTY)
            and group.is_empty
            and group.generation_id == 0
            and not (group.offsets or group.pending_commits)
        ):
            del self._groups[p.group_id]  # created by a join that did not stick

    def _accepts_joining_member(self, group: Group, member_id: str) -> bool:
        max_size = self._config.group_max_size
        if member_id == UNKNOWN_MEMBER_ID:
            return len(group.members) + len(group.pending_members) < max_size
        if group.is_in(EMPTY, DEAD):
            return True
        member = group.members.get(member_id)
        if group.is_in(PREPARING):
            # Counting parked joins (not members) lets the last to rejoin be the ones shed.
            awaiting = member is not None and member.join_request is not None
            return awaiting or group.awaiting_join_count < max_size
        return member is not None or len(group.members) < max_size

    def _join_new_member(self, group: Group, p: JoinParams) -> None:
        if group.is_in(DEAD):
            self._rebalancer.join_error(p.request, ErrorCode.COORDINATOR_NOT_AVAILABLE)
            return
        if not group.supports_protocols(p.protocol_type, p.protocol_names):
            self._rebalancer.join_error(p.request, ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            return
        prefix = p.group_instance_id if p.group_instance_id is not None else p.client_id
        member_id = f"{prefix}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        if p.group_instance_id is not None:
            existing = group.static_members.get(p.group_instance_id)
            if existing is not None:
                self._replace_static_member(group, p, existing, member_id)
            else:
                self._add_member_and_rebalance(group, p, member_id)
        elif p.request.version >= FIRST_MEMBER_ID_REQUIRED_VERSION:
            group.pending_members.add(member_id)
            self._rebalancer.schedule(
                pending_member_key(group.group_id, member_id), p.session_timeout_ms
            )
            self._rebalancer.join_error(p.request, ErrorCode.MEMBER_ID_REQUIRED, member_id)
        else:
            self._add_member_and_rebalance(group, p, member_id)

    def _join_known_member(self, group: Group, p: JoinParams) -> None:
        if group.is_in(DEAD):
            self._rebalancer.join_error(p.request, ErrorCode.COORDINATOR_NOT_AVAILABLE, p.member_id)
            return
        if not group.supports_protocols(p.protocol_type, p.protocol_names, p.member_id):
            self._rebalancer.join_error(
                p.request, ErrorCode.INCONSISTENT_GROUP_PROTOCOL, p.member_id
            )
            return
        if p.member_id in group.pending_members:
            if p.group_instance_id is not None:
                # Pending ids are handed to dynamic members only.
                self._rebalancer.join_error(p.request, ErrorCode.UNKNOWN_MEMBER_ID, p.member_id)
                return
            group.pending_members.discard(p.member_id)
            self._timers.cancel(pending_member_key(group.group_id, p.member_id))
            self._add_member_and_rebalance(group, p, p.member_id)
            return
        error = group.validate_member(p.member_id, p.group_instance_id)
        if error is not ErrorCode.NONE:
            self._rebalancer.join_error(p.request, error, p.member_id)
            return
        member = group.members[p.member_id]
        if group.is_in(PREPARING):
            self._update_member(group, member, p)
            self._rebalancer.maybe_complete_join(group)
        elif group.is_in(COMPLETING):
            if member.matches(p.protocols):
                # A retry of a join whose answer was lost: the same answer again.
                self._fx.respond(
                    p.request.request_id,
                    generation_response(
                        group, member, p.request.version, with_members=group.is_leader(p.member_id)
                    ),
                )
            else:
                self._update_member(group, member, p)
                self._rebalancer.rebalance_or_complete_join(group)
        elif group.is_in(STABLE):
            if group.is_leader(p.member_id) or not member.matches(p.protocols):
                # The leader rejoins to make the group reassign (e.g. topic metadata changed).
                self._update_member(group, member, p)
                self._rebalancer.rebalance_or_complete_join(group)
            else:
                self._fx.respond(
                    p.request.request_id,
                    generation_response(group, member, p.request.version, with_members=False),
                )
        else:
            self._rebalancer.join_error(p.request, ErrorCode.UNKNOWN_MEMBER_ID, p.member_id)

    def _update_member(self, group: Group, member: Member, p: JoinParams) -> None:
        group.set_protocols(member, p.protocols)
        member.rebalance_timeout_ms = p.rebalance_timeout_ms
        member.session_timeout_ms = p.session_timeout_ms
        superseded = group.park_join(member, p.request)
        if superseded is not None:
            self._rebalancer.join_error(
                superseded, ErrorCode.REBALANCE_IN_PROGRESS, member.member_id
            )

    def _add_member_and_rebalance(self, group: Group, p: JoinParams, member_id: str) -> None:
        member = Member(
            member_id=member_id,
            group_instance_id=p.group_instance_id,
            client_id=p.client_id,
            client_host=p.client_host,
            rebalance_timeout_ms=p.rebalance_timeout_ms,
            session_timeout_ms=p.session_timeout_ms,
            protocol_type=p.protocol_type,
            protocols=p.protocols,
            join_request=p.request,
            is_new=True,
        )
        if group.initial_delay is not None:
            group.initial_delay.new_member_added = True
        group.add_member(member)
        # A parked new member cannot heartbeat, and a client that gave up on its join leaves
        # a defunct member behind: bound how long its first join may wait.
        self._rebalancer.schedule(
            session_key(group.group_id, member_id), self._config.group_new_member_join_timeout_ms
        )
        self._rebalancer.rebalance_or_complete_join(group)

    def _replace_static_member(self, group: Group, p: JoinParams, old_id: str, new_id: str) -> None:
        assert p.group_instance_id is not None
        instance_id = p.group_instance_id
        previous_leader = group.leader_id
        old = group.members[old_id]
        self._rebalancer.fence(group, old)
        self._timers.cancel(session_key(group.group_id, old_id))
        saved = (old.protocols, old.rebalance_timeout_ms, old.session_timeout_ms)
        member = group.replace_static_member(instance_id, old_id, new_id)
        self._update_member(group, member, p)
        self._rebalancer.touch(group, member)
        if group.is_in(STABLE):
            if group.protocol_name != group.select_protocol():
                self._rebalancer.rebalance_or_complete_join(group)
                return

            def stored(error: ErrorCode) -> None:
                self._static_member_stored(
                    group, instance_id, old_id, new_id, saved, previous_leader, p.request, error
                )

            record = group_metadata_record(group.group_id, group.to_metadata())
            self._fx.append(group.partition, [record], stored)
        elif group.is_in(COMPLETING):
            # The leader may be assigning to the old id: only a new rebalance gets it right.
            self._rebalancer.prepare_rebalance(group)
        else:
            assert group.is_in(PREPARING), group.state
            self._rebalancer.maybe_complete_join(group)

    def _static_member_stored(
        self,
        group: Group,
        instance_id: str,
        old_id: str,
        new_id: str,
        saved: tuple[tuple[Protocol, ...], int, int],
        previous_leader: str | None,
        request: PendingRequest,
        error: ErrorCode,
    ) -> None:
        if self._groups.get(group.group_id) is not group:
            return  # unloaded: its parked requests were answered then
        member = group.members.get(new_id)
        if member is None or member.join_request != request:
            return  # replaced, removed or swept into a rebalance meanwhile; answered there
        group.park_join(member, None)
        version = request.version
        if error is not ErrorCode.NONE:
            # Not durable: the old member id stays the group's.
            protocols, member.rebalance_timeout_ms, member.session_timeout_ms = saved
            group.set_protocols(member, protocols)
            self._timers.cancel(session_key(group.group_id, new_id))
            group.replace_static_member(instance_id, new_id, old_id)
            self._rebalancer.touch(group, member)
            response = generation_response(group, member, version, with_members=False)
            response.update(
                error_code=int(group_append_error(error)),
                member_id=UNKNOWN_MEMBER_ID,
                leader=previous_leader or "",
            )
        elif version >= FIRST_SKIP_ASSIGNMENT_VERSION:
            leads = group.is_leader(new_id)
            response = generation_response(group, member, version, with_members=leads)
            response["skip_assignment"] = leads
        else:
            response = generation_response(group, member, version, with_members=False)
            response["leader"] = previous_leader or ""
        self._fx.respond(request.request_id, response)
