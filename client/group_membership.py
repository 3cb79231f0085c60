"""Consumer-group membership (the classic JoinGroup/SyncGroup protocol) as a pure state
machine: no I/O, no trio, time passed in as `now` (seconds on any monotonic clock).

The driver (`client.group_coordinator`) runs two loops over one `GroupMembership`:

- the main loop asks `next_action(now)` and carries the action out, then reports back
  with the matching method: `FindCoordinator` -> `coordinator_found` /
  `coordinator_lookup_failed`; `SendJoinGroup` -> `join_response` / `request_failed`;
  `Assign` (this member leads) -> `assign`; `SendSyncGroup` -> `sync_response` /
  `request_failed`; `Revoke` -> `revoked`; `ApplyAssignment` -> `assignment_applied`;
  `SendLeaveGroup` -> `left`. `Wait(until)` means nothing to do before `until` unless an
  input arrives. `Fail(error)` means the membership cannot go on (fenced, not authorised,
  an inconsistent group): the consumer raises it.
- the heartbeat loop asks `heartbeat_action(now)`: `SendHeartbeat` -> `heartbeat_response`
  / `heartbeat_failed`, or `Wait`.

Other inputs, any time: `set_subscription`, `metadata_updated` (partition counts, checked
by the leader), `poll_started` / `poll_finished` (the application's calls, for
`max_poll_interval_ms`), `commit_failed` (an OffsetCommit error that says something about
the membership), `coordinator_lost`.

Member states: UNJOINED (no generation), JOINING (JoinGroup in flight), SYNCING (joined:
assigning as leader, or SyncGroup in flight), STABLE (assignment received). A STABLE member
that must rejoin stays STABLE, with its generation, until its JoinGroup goes out, so that it
keeps heartbeating while its callbacks run.

Rebalance protocols (the highest every configured assignor supports):

- eager: before every JoinGroup the member revokes everything it owns (`Revoke`; the driver
  commits first), then joins owning nothing;
- cooperative (KIP-429): the member joins with what it owns and keeps consuming it; the new
  assignment's difference is revoked afterwards (`ApplyAssignment.revoked`), and when that
  is non-empty the member rejoins at once so that the partitions can be handed on.

A member whose generation is gone (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, or a poll timeout)
has lost its partitions: `Revoke(lost=True)`, without a commit, before it rejoins.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tidelog.client.assignors import (
    Assignment,
    Assignor,
    RebalanceProtocol,
    Subscription,
    common_rebalance_protocol,
)
from tidelog.client.errors import (
    IncompatibleBrokerError,
    KafkaError,
    KafkaProtocolError,
    error_for_code,
)
from tidelog.client.group_offsets import error_code
from tidelog.client.protocol.consumer_protocol import (
    ASSIGNMENT_VERSION_MAX,
    CONSUMER_PROTOCOL_TYPE,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from tidelog.client.protocol.errors import CorruptMessageError, ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition

log = logging.getLogger(__name__)

NO_GENERATION = -1
UNKNOWN_MEMBER_ID = ""
JOIN_GROUP_EXTRA_TIMEOUT_MS = 5_000
"""A JoinGroup (and SyncGroup) may be parked for the whole rebalance timeout; the request
timeout is that plus this margin (the Java client's choice)."""

# Errors after which this member's generation (and with it its partitions) is gone.
_GENERATION_ERRORS = frozenset({ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION})
_COORDINATOR_ERRORS = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE})


class MemberState(enum.Enum):
    UNJOINED = "unjoined"
    JOINING = "joining"
    SYNCING = "syncing"
    STABLE = "stable"


@dataclass(frozen=True, slots=True)
class FindCoordinator:
    """Look up the group coordinator (FindCoordinator, key type 0)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until `until` (trio clock seconds; inf: until some input)."""

    until: float


@dataclass(frozen=True, slots=True)
class Revoke:
    """Give up `partitions`: commit them first unless `lost` (another member may own them
    already), run the revoke (or lost) callback, stop fetching them."""

    partitions: frozenset[TopicPartition]
    lost: bool


@dataclass(frozen=True, slots=True)
class SendJoinGroup:
    request: Message
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Assign:
    """This member leads: find the partition counts of `topics` and call `assign`."""

    topics: frozenset[str]


@dataclass(frozen=True, slots=True)
class SendSyncGroup:
    request: Message
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class ApplyAssignment:
    """The rebalance completed with `assigned`: give up `revoked` (commit, callback) and
    start `added` (committed offsets, callback); the rest is kept as it is."""

    assigned: frozenset[TopicPartition]
    added: frozenset[TopicPartition]
    revoked: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class SendLeaveGroup:
    """Leave the group; `request` is None for a static member, which only stops
    heartbeating (the coordinator keeps its place until its session times out)."""

    request: Message | None
    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    error: KafkaError


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    request: Message


Action = (
    FindCoordinator
    | Wait
    | Revoke
    | SendJoinGroup
    | Assign
    | SendSyncGroup
    | ApplyAssignment
    | SendLeaveGroup
    | Fail
)


@dataclass(frozen=True, slots=True)
class CommitIdentity:
    """What an OffsetCommit names this member by."""

    generation_id: int
    member_id: str
    group_instance_id: str | None


@dataclass(frozen=True, slots=True)
class _Member:
    subscription: Subscription
    version: int
    """The member's subscription version; its assignment is encoded at no higher one."""


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    group_id: str
    group_instance_id: str | None
    session_timeout_ms: int
    rebalance_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    retry_backoff_ms: int


class GroupMembership:
    """One consumer's membership of one group; see the module docstring."""

    def __init__(self, config: MembershipConfig, assignors: Sequence[Assignor]) -> None:
        if not assignors:
            raise ValueError("at least one assignor is needed")
        self.config = config
        self.assignors = {assignor.name: assignor for assignor in assignors}
        self.rebalance_protocol = common_rebalance_protocol(assignors)
        self.state = MemberState.UNJOINED
        self.member_id = UNKNOWN_MEMBER_ID
        self.generation_id = NO_GENERATION
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.owned: frozenset[TopicPartition] = frozenset()
        """The partitions this member consumes (as applied by the driver)."""
        self.subscription: frozenset[str] | None = None
        """Topics subscribed to; None when not subscribed (no membership wanted)."""
        self.fatal_error: KafkaError | None = None
        self.coordinator_known = False
        self.coordinator_epoch = 0
        """Counts coordinator lookups: reports of failures against an older coordinator
        are ignored."""
        self._request_epoch = 0
        self._lookup_failures = 0
        self._lookup_retry_at = float("-inf")
        self._busy = False
        """An action is being carried out; its report has not come yet."""
        self._request_in_flight = False
        """A JoinGroup or SyncGroup is out: the member is alive without heartbeats."""
        self._joined_subscription: frozenset[str] | None = None
        self._join_sent_subscription: frozenset[str] = frozenset()
        self._rejoin_reason: str | None = "initial join"
        self._join_retry_at = float("-inf")
        self._join_failures = 0
        self._lost = False
        """The generation was reset while partitions were owned: revoke them as lost."""
        self._members: dict[str, _Member] | None = None
        """The leader's view of the group, between JoinGroup and `assign`."""
        self._sync_request: Message | None = None
        self._pending_assignment: ApplyAssignment | None = None
        self._assignment_snapshot: dict[str, int] | None = None
        """The leader's partition counts at its last assignment."""
        # Heartbeats.
        self._heartbeat_in_flight = False
        self._heartbeat_generation = NO_GENERATION
        self._heartbeat_epoch = 0
        self._next_heartbeat_at = float("inf")
        self._session_reset_at = 0.0
        # The application's polls.
        self._polls_active = 0
        self._last_poll_at = 0.0
        self._waiting_for_poll = False
        """Left the group after a poll timeout: rejoin on the next poll."""

    # --- queries -------------------------------------------------------------------------

    @property
    def subscribed(self) -> bool:
        return self.subscription is not None

    @property
    def has_generation(self) -> bool:
        return self.generation_id != NO_GENERATION

    def commit_identity(self) -> CommitIdentity | None:
        """The generation and member id to commit with; None while a rebalance is between
        JoinGroup and the assignment (the coordinator refuses commits then), or while
        subscribed without a generation. A consumer that is not subscribed (manual
        assignment) commits as a non-member."""
        if not self.subscribed:
            return CommitIdentity(NO_GENERATION, UNKNOWN_MEMBER_ID, None)
        if not self.has_generation or self.state is MemberState.SYNCING:
            return None
        return CommitIdentity(self.generation_id, self.member_id, self.config.group_instance_id)

    def group_topics(self) -> frozenset[str]:
        """Topics whose metadata this member needs: its own, and as the group's leader
        every member's (it watches their partition counts)."""
        topics = set(self.subscription or ())
        if self._assignment_snapshot is not None:
            topics |= self._assignment_snapshot.keys()
        if self._members is not None:
            for member in self._members.values():
                topics |= member.subscription.topics
        return frozenset(topics)

    @property
    def lookup_retry_at(self) -> float:
        """When the next coordinator lookup may go out (after failed ones)."""
        return self._lookup_retry_at

    @property
    def waiting_for_poll(self) -> bool:
        """Left the group after a poll timeout; the next poll rejoins."""
        return self._waiting_for_poll

    @property
    def rebalance_in_progress(self) -> bool:
        return self.state in (MemberState.JOINING, MemberState.SYNCING) or (
            self.subscribed and self.state is MemberState.STABLE and self._needs_rejoin()
        )

    # --- inputs --------------------------------------------------------------------------

    def set_subscription(self, topics: frozenset[str] | None, now: float) -> None:
        """Subscribe to `topics` (None: unsubscribe). A change rejoins the group."""
        if topics == self.subscription:
            return
        was_subscribed = self.subscribed
        self.subscription = topics
        if topics is not None and not was_subscribed:
            self._last_poll_at = now
            self._request_rejoin("subscribed")

    def coordinator_found(self) -> None:
        self.coordinator_known = True
        self.coordinator_epoch += 1
        self._lookup_failures = 0

    def coordinator_lookup_failed(self, now: float, error: KafkaError) -> None:
        if not error.retriable:
            self.fatal_error = error
            return
        self._lookup_failures += 1
        self._lookup_retry_at = now + self._backoff_s(self._lookup_failures)

    def coordinator_lost(self, now: float, reason: str, epoch: int | None = None) -> None:
        """The coordinator moved, or its connection broke: find it again. The generation
        stays; a JoinGroup or SyncGroup that was under way is retried. A report about the
        coordinator of an older `epoch` is ignored."""
        if epoch is not None and epoch != self.coordinator_epoch:
            return
        if self.coordinator_known:
            log.info("group %s: coordinator lost (%s)", self.config.group_id, reason)
        self.coordinator_known = False
        self._lookup_retry_at = max(self._lookup_retry_at, now + self._backoff_s(1))

    def poll_started(self, now: float) -> None:
        """The application is waiting in a poll call (getone/getmany)."""
        self._polls_active += 1
        self._last_poll_at = now
        self._waiting_for_poll = False

    def poll_finished(self, now: float) -> None:
        self._polls_active -= 1
        assert self._polls_active >= 0
        self._last_poll_at = now

    def metadata_updated(self, partitions_per_topic: Mapping[str, int]) -> None:
        """New metadata: the leader rejoins when a subscribed topic's partition count
        changed (or the topic appeared or went) since it assigned."""
        snapshot = self._assignment_snapshot
        if snapshot is None or self.state is not MemberState.STABLE:
            return
        current = {t: partitions_per_topic[t] for t in snapshot if t in partitions_per_topic}
        known = {t: n for t, n in snapshot.items() if n > 0}
        if {t: n for t, n in current.items() if n > 0} != known:
            self._request_rejoin("partition counts changed")

    def commit_failed(self, code: ErrorCode, identity: CommitIdentity) -> None:
        """An OffsetCommit sent with `identity` failed with `code`."""
        if identity.generation_id != self.generation_id or identity.member_id != self.member_id:
            return  # about an older generation: already dealt with
        if code is ErrorCode.FENCED_INSTANCE_ID:
            self.fatal_error = error_for_code(code, "committing offsets")
        elif code in _GENERATION_ERRORS:
            self._reset_generation(code)
        elif code is ErrorCode.REBALANCE_IN_PROGRESS and self.state is MemberState.STABLE:
            self._request_rejoin("commit found a rebalance in progress")

    # --- the main loop -------------------------------------------------------------------

    def next_action(self, now: float) -> Action:
        assert not self._busy, "the previous action was not reported"
        if self.fatal_error is not None:
            return Fail(self.fatal_error)
        action = self._next_action(now)
        if not isinstance(action, (Wait, FindCoordinator)):
            self._busy = True
            self._request_in_flight = isinstance(action, (SendJoinGroup, SendSyncGroup))
            self._request_epoch = self.coordinator_epoch
        return action

    def _next_action(self, now: float) -> Action:
        if self._lost and self.owned:
            return Revoke(self.owned, lost=True)
        self._lost = False
        if self._poll_expired(now):
            log.warning(
                "group %s: no poll for max_poll_interval_ms (%d ms); leaving the group",
                self.config.group_id,
                self.config.max_poll_interval_ms,
            )
            self._waiting_for_poll = True
            return self._leave("max_poll_interval_ms passed without a poll")
        if not self.subscribed:
            if self.owned:
                return Revoke(self.owned, lost=False)
            if self.has_generation or self.member_id:
                return self._leave("unsubscribed")
            return Wait(float("inf"))
        if self._waiting_for_poll:
            return Wait(float("inf"))
        if not self.coordinator_known:
            if now < self._lookup_retry_at:
                return Wait(self._lookup_retry_at)
            return FindCoordinator()
        if self.state is MemberState.SYNCING:
            if self._sync_request is None:
                assert self._members is not None
                return Assign(self.group_topics())
            return SendSyncGroup(self._sync_request, self._join_timeout_ms())
        if self._pending_assignment is not None:
            return self._pending_assignment
        if self.state is MemberState.UNJOINED or self._needs_rejoin():
            to_revoke = self._revoke_before_join()
            if to_revoke:
                return Revoke(to_revoke, lost=False)
            if now < self._join_retry_at:
                return Wait(self._join_retry_at)
            return self._join_group()
        return Wait(self._poll_deadline())

    def _needs_rejoin(self) -> bool:
        return self._rejoin_reason is not None or self._joined_subscription != self.subscription

    def _revoke_before_join(self) -> frozenset[TopicPartition]:
        if self.rebalance_protocol is RebalanceProtocol.EAGER:
            return self.owned
        subscription = self.subscription or frozenset()
        return frozenset(tp for tp in self.owned if tp.topic not in subscription)

    def _join_group(self) -> SendJoinGroup:
        assert self.subscription is not None
        reason = self._rejoin_reason or "subscription changed"
        self._join_sent_subscription = self.subscription
        self._rejoin_reason = None
        self.state = MemberState.JOINING
        protocols = []
        for assignor in self.assignors.values():
            subscription = Subscription(
                topics=self.subscription,
                owned_partitions=self.owned,
                generation_id=self.generation_id,
                user_data=assignor.subscription_user_data(self.generation_id),
            )
            protocols.append(
                {"name": assignor.name, "metadata": encode_subscription(subscription.to_protocol())}
            )
        log.info("group %s: joining (%s)", self.config.group_id, reason)
        request = {
            "group_id": self.config.group_id,
            "session_timeout_ms": self.config.session_timeout_ms,
            "rebalance_timeout_ms": self.config.rebalance_timeout_ms,
            "member_id": self.member_id,
            "group_instance_id": self.config.group_instance_id,
            "protocol_type": CONSUMER_PROTOCOL_TYPE,
            "protocols": protocols,
            "reason": reason,
        }
        return SendJoinGroup(request, self._join_timeout_ms())

    def _join_timeout_ms(self) -> int:
        return self.config.rebalance_timeout_ms + JOIN_GROUP_EXTRA_TIMEOUT_MS

    # --- reports -------------------------------------------------------------------------

    def join_response(self, response: Message, now: float) -> None:
        """The JoinGroup response (any version)."""
        self._done()
        assert self.state is MemberState.JOINING
        code = error_code(response["error_code"])
        if code is not ErrorCode.NONE:
            self.state = MemberState.UNJOINED if not self.has_generation else MemberState.STABLE
            self._join_error(code, response, now)
            return
        protocol_type = response.get("protocol_type")
        protocol_name = response["protocol_name"]
        if (protocol_type is not None and protocol_type != CONSUMER_PROTOCOL_TYPE) or (
            protocol_name not in self.assignors
        ):
            self.fatal_error = error_for_code(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                f"the group chose protocol {protocol_type}/{protocol_name}",
            )
            return
        self._join_failures = 0
        self.member_id = response["member_id"]
        self.generation_id = response["generation_id"]
        self.protocol_name = protocol_name
        self.leader_id = response["leader"]
        self._joined_subscription = self._join_sent_subscription
        self.state = MemberState.SYNCING
        self._session_reset_at = now
        self._next_heartbeat_at = now + self.config.heartbeat_interval_ms / 1000
        log.info(
            "group %s: joined generation %d as %s (%s, %s)",
            self.config.group_id,
            self.generation_id,
            self.member_id,
            "leader" if self.leader_id == self.member_id else "follower",
            protocol_name,
        )
        if self.leader_id == self.member_id and not response.get("skip_assignment", False):
            self._members = {
                member["member_id"]: _decode_member(member) for member in response["members"]
            }
            self._sync_request = None
        else:
            self._members = None
            self._assignment_snapshot = None
            self._sync_request = self._sync_body([])

    def _join_error(self, code: ErrorCode, response: Message, now: float) -> None:
        if code is ErrorCode.MEMBER_ID_REQUIRED:
            # KIP-394: the coordinator gave us an id to join with.
            self.member_id = response["member_id"]
            self._request_rejoin("member id assigned")
        elif code in _GENERATION_ERRORS:
            self._reset_generation(code)
        elif code in _COORDINATOR_ERRORS:
            self.coordinator_lost(now, code.name, self._request_epoch)
            self._request_rejoin(f"JoinGroup: {code.name}")
        elif code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS) or (
            code.retriable
        ):
            self._retry_join_later(now, f"JoinGroup: {code.name}")
        else:
            self.fatal_error = error_for_code(code, f"joining group {self.config.group_id!r}")

    def assign(self, partitions_per_topic: Mapping[str, int]) -> None:
        """As the leader: run the group's assignor over every member's subscription, given
        the partition counts of their topics (unknown topics absent)."""
        self._done()
        assert self.state is MemberState.SYNCING and self._members is not None
        assert self.protocol_name is not None
        members = self._members
        assignor = self.assignors[self.protocol_name]
        result = assignor.assign(
            partitions_per_topic, {m: member.subscription for m, member in members.items()}
        )
        self._assignment_snapshot = {
            topic: partitions_per_topic.get(topic, 0)
            for member in members.values()
            for topic in member.subscription.topics
        }
        assignments = [
            {
                "member_id": member_id,
                "assignment": encode_assignment(
                    result.get(member_id, Assignment()).to_protocol(),
                    min(member.version, ASSIGNMENT_VERSION_MAX),
                ),
            }
            for member_id, member in sorted(members.items())
        ]
        self._members = None
        self._sync_request = self._sync_body(assignments)

    def _sync_body(self, assignments: list[Message]) -> Message:
        return {
            "group_id": self.config.group_id,
            "generation_id": self.generation_id,
            "member_id": self.member_id,
            "group_instance_id": self.config.group_instance_id,
            "protocol_type": CONSUMER_PROTOCOL_TYPE,
            "protocol_name": self.protocol_name,
            "assignments": assignments,
        }

    def sync_response(self, response: Message, now: float) -> None:
        """The SyncGroup response (any version)."""
        self._done()
        assert self.state is MemberState.SYNCING
        self._sync_request = None
        code = error_code(response["error_code"])
        if code is not ErrorCode.NONE:
            self._sync_error(code, now)
            return
        protocol_name = response.get("protocol_name")
        if protocol_name is not None and protocol_name != self.protocol_name:
            self.fatal_error = error_for_code(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL,
                f"SyncGroup names protocol {protocol_name}, JoinGroup {self.protocol_name}",
            )
            return
        try:
            decoded = Assignment.from_protocol(decode_assignment(response["assignment"]))
        except CorruptMessageError as exc:
            self.fatal_error = KafkaProtocolError(f"the group leader sent a bad assignment: {exc}")
            return
        subscription = self.subscription or frozenset()
        assigned = frozenset(tp for tp in decoded.partitions if tp.topic in subscription)
        if len(assigned) != len(decoded.partitions):
            self._request_rejoin("assignment holds topics no longer subscribed")
        # Eager members own nothing here (they revoked everything before joining).
        revoked = self.owned - assigned
        if revoked:
            self._request_rejoin("partitions revoked: hand them on")
        self._join_failures = 0
        self.state = MemberState.STABLE
        self._session_reset_at = now
        self._next_heartbeat_at = now + self.config.heartbeat_interval_ms / 1000
        self._pending_assignment = ApplyAssignment(assigned, assigned - self.owned, revoked)
        log.info(
            "group %s: generation %d assigned %d partitions (%d added, %d revoked)",
            self.config.group_id,
            self.generation_id,
            len(assigned),
            len(assigned - self.owned),
            len(revoked),
        )

    def _sync_error(self, code: ErrorCode, now: float) -> None:
        self.state = MemberState.STABLE if self.has_generation else MemberState.UNJOINED
        if code in _GENERATION_ERRORS:
            self._reset_generation(code)
        elif code in _COORDINATOR_ERRORS:
            self.coordinator_lost(now, code.name, self._request_epoch)
            self._request_rejoin(f"SyncGroup: {code.name}")
        elif code is ErrorCode.REBALANCE_IN_PROGRESS:
            self._request_rejoin("SyncGroup: REBALANCE_IN_PROGRESS")
        elif code.retriable:
            self._retry_join_later(now, f"SyncGroup: {code.name}")
        else:
            self.fatal_error = error_for_code(code, f"syncing group {self.config.group_id!r}")

    def request_failed(self, now: float, error: KafkaError) -> None:
        """The JoinGroup or SyncGroup could not be sent or got no response: the coordinator
        (or its connection) is gone; join again once it is found."""
        self._done()
        assert self.state in (MemberState.JOINING, MemberState.SYNCING)
        self.state = MemberState.STABLE if self.has_generation else MemberState.UNJOINED
        self._sync_request = None
        self._members = None
        if isinstance(error, IncompatibleBrokerError):
            self.fatal_error = error
            return
        self.coordinator_lost(now, str(error), self._request_epoch)
        self._request_rejoin("the previous attempt failed")

    def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """The driver gave up `partitions` (after a `Revoke`)."""
        self._done()
        self.owned -= partitions

    def assignment_applied(self) -> None:
        self._done()
        pending = self._pending_assignment
        assert pending is not None
        self._pending_assignment = None
        self.owned = pending.assigned

    def left(self) -> None:
        """The LeaveGroup went out (or could not: the coordinator forgets us in time)."""
        self._done()

    def _leave(self, reason: str) -> SendLeaveGroup:
        request: Message | None = None
        if self.config.group_instance_id is None and self.member_id:
            request = {
                "group_id": self.config.group_id,
                "member_id": self.member_id,
                "members": [
                    {
                        "member_id": self.member_id,
                        "group_instance_id": None,
                        "reason": reason,
                    }
                ],
            }
        log.info("group %s: leaving (%s)", self.config.group_id, reason)
        self._reset_generation(None)
        self.member_id = UNKNOWN_MEMBER_ID
        return SendLeaveGroup(request, reason)

    def leave_on_close(self) -> SendLeaveGroup | None:
        """The last action of a closing consumer (its main loop stopped; its partitions
        revoked): leave the group if in it. Needs no report."""
        self._busy = False
        self._request_in_flight = False
        if not self.subscribed or not (self.has_generation or self.member_id):
            return None
        return self._leave("the consumer is closing")

    # --- heartbeats ----------------------------------------------------------------------

    def heartbeat_action(self, now: float) -> SendHeartbeat | Wait:
        """A heartbeat to send now, or when to ask again. A coordinator that has not
        answered a heartbeat for `session_timeout_ms` is taken to be gone."""
        if (
            not self.coordinator_known
            or not self.has_generation
            or self._request_in_flight
            or self.fatal_error is not None
            or self._heartbeat_in_flight
        ):
            return Wait(float("inf"))
        session_expires_at = self._session_reset_at + self.config.session_timeout_ms / 1000
        if now >= session_expires_at:
            self.coordinator_lost(now, "no heartbeat response within session_timeout_ms")
            self._session_reset_at = now
            return Wait(float("inf"))
        if now < self._next_heartbeat_at:
            return Wait(min(self._next_heartbeat_at, session_expires_at))
        self._heartbeat_in_flight = True
        self._heartbeat_generation = self.generation_id
        self._heartbeat_epoch = self.coordinator_epoch
        self._next_heartbeat_at = now + self.config.heartbeat_interval_ms / 1000
        return SendHeartbeat(
            {
                "group_id": self.config.group_id,
                "generation_id": self.generation_id,
                "member_id": self.member_id,
                "group_instance_id": self.config.group_instance_id,
            }
        )

    def heartbeat_response(self, code_value: int, now: float) -> None:
        """The Heartbeat response's error code."""
        self._heartbeat_in_flight = False
        code = error_code(code_value)
        if code in _COORDINATOR_ERRORS:
            self.coordinator_lost(now, f"Heartbeat: {code.name}", self._heartbeat_epoch)
            return
        self._session_reset_at = now
        if self._heartbeat_generation != self.generation_id:
            return  # the answer is about a generation we no longer have
        if code is ErrorCode.NONE:
            return
        if code is ErrorCode.REBALANCE_IN_PROGRESS:
            if self.state is MemberState.STABLE:
                self._request_rejoin("the group is rebalancing")
        elif code in _GENERATION_ERRORS:
            self._reset_generation(code)
        elif code.retriable:
            self._next_heartbeat_at = now + self._backoff_s(1)
        else:
            self.fatal_error = error_for_code(code, f"heartbeat to group {self.config.group_id!r}")

    def heartbeat_failed(self, now: float, error: KafkaError) -> None:
        """The heartbeat got no response (connection lost, timed out)."""
        self._heartbeat_in_flight = False
        self.coordinator_lost(now, f"Heartbeat failed: {error}", self._heartbeat_epoch)

    # --- helpers -------------------------------------------------------------------------

    def _done(self) -> None:
        assert self._busy, "a report without an action"
        self._busy = False
        self._request_in_flight = False

    def _request_rejoin(self, reason: str) -> None:
        if self._rejoin_reason is None:
            self._rejoin_reason = reason

    def _retry_join_later(self, now: float, reason: str) -> None:
        self._join_failures += 1
        self._join_retry_at = now + self._backoff_s(self._join_failures)
        self._request_rejoin(reason)

    def _reset_generation(self, code: ErrorCode | None) -> None:
        if code is not None:
            log.info(
                "group %s: generation %d is gone (%s)",
                self.config.group_id,
                self.generation_id,
                code.name,
            )
        if code is ErrorCode.UNKNOWN_MEMBER_ID:
            self.member_id = UNKNOWN_MEMBER_ID
        self.generation_id = NO_GENERATION
        self.state = MemberState.UNJOINED
        self._joined_subscription = None
        self._assignment_snapshot = None
        self._members = None
        self._sync_request = None
        self._pending_assignment = None
        self._lost = bool(self.owned)
        self._request_rejoin(f"generation reset ({code.name if code else 'left'})")

    def _poll_deadline(self) -> float:
        if self._polls_active or not self.has_generation:
            return float("inf")
        return self._last_poll_at + self.config.max_poll_interval_ms / 1000

    def _poll_expired(self, now: float) -> bool:
        return self.subscribed and self.has_generation and now >= self._poll_deadline()

    def _backoff_s(self, attempt: int) -> float:
        # Doubling from retry_backoff_ms up to 32 times it; the driver adds no jitter here
        # because retries are triggered per member, not in lockstep.
        factor: int = 2 ** min(max(attempt - 1, 0), 5)
        return self.config.retry_backoff_ms * factor / 1000


def _decode_member(member: Message) -> _Member:
    metadata = member["metadata"]
    try:
        subscription = decode_subscription(metadata)
        version = int.from_bytes(bytes(metadata[:2]), "big", signed=True)
    except CorruptMessageError as exc:
        log.warning("member %s sent a bad subscription (%s): assigning it nothing",
                    member["member_id"], exc)  # fmt: skip
        return _Member(Subscription(frozenset()), 0)
    instance_id = member.get("group_instance_id")
    return _Member(Subscription.from_protocol(subscription, instance_id), version)
