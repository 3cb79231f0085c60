"""One classic consumer group: members, generation, chosen protocol, offsets. No I/O.

States and transitions (Kafka's classic protocol):

    Empty --join--> PreparingRebalance --all joined or timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup stored--> Stable
    Stable / CompletingRebalance --join, leave, expiry--> PreparingRebalance
    PreparingRebalance --no member left--> Empty
    any --DeleteGroups, offsets all expired--> Dead

The group keeps its members in join order; the first member becomes the leader, and when the
leader goes the next remaining member takes over. A static member (`group.instance.id`) is
also indexed by its instance id. Members awaiting a JoinGroup or SyncGroup response carry
the parked request (`PendingRequest`); the coordinator answers it later.

`to_metadata` / `from_metadata` convert to and from the `GroupMetadataValue` record: a
group loaded with members is Stable, without members Empty.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tidelog.broker.groups.effects import RequestId
from tidelog.broker.groups.records import GroupMetadata, MemberMetadata, OffsetAndMetadata
from tidelog.client.protocol.errors import CorruptMessageError, ErrorCode
from tidelog.client.protocol.primitives import Reader

CONSUMER_PROTOCOL_TYPE = "consumer"
UNKNOWN_MEMBER_ID = ""

TopicPartition = tuple[str, int]
Protocol = tuple[str, bytes]
"""(protocol name, member metadata for it), as listed in JoinGroup."""


class GroupState(enum.Enum):
    """Kafka's state names, as DescribeGroups and ListGroups report them."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A JoinGroup or SyncGroup parked until the group can answer it."""

    request_id: RequestId
    version: int


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[Protocol, ...]
    """In the member's order of preference."""
    assignment: bytes = b""
    join_request: PendingRequest | None = None
    sync_request: PendingRequest | None = None
    is_new: bool = False
    """Joined during the current rebalance and never received a generation."""

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    def metadata(self, protocol_name: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        raise AssertionError(f"member {self.member_id} does not support {protocol_name}")

    def matches(self, protocols: Sequence[Protocol]) -> bool:
        return tuple(protocols) == self.protocols

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among `candidates`."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise AssertionError(f"member {self.member_id} supports none of {candidates}")


@dataclass(slots=True)
class InitialDelay:
    """The first rebalance of an empty group: waits `delay_ms` at a time, `remaining_ms` more
    at most, and only extends while new members keep arriving."""

    delay_ms: int
    remaining_ms: int
    new_member_added: bool = False


@dataclass(eq=False, slots=True)
class Group:
    group_id: str
    partition: int
    state: GroupState = GroupState.EMPTY
    previous_state: GroupState = GroupState.EMPTY
    state_timestamp_ms: int | None = None
    """When the group entered its current state; None when loaded from a record without one."""
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    """group.instance.id -> member id."""
    pending_members: set[str] = field(default_factory=set)
    """Member ids handed out with MEMBER_ID_REQUIRED (KIP-394) and not yet used to join."""
    pending_sync: set[str] = field(default_factory=set)
    """Members of the current generation that have not sent SyncGroup yet."""
    protocol_support: dict[str, int] = field(default_factory=dict)
    """Protocol name -> how many members list it."""
    awaiting_join_count: int = 0
    """Members with a parked JoinGroup."""
    initial_delay: InitialDelay | None = None
    assignment_in_flight: bool = False
    """The leader's assignment is being stored; a repeated leader SyncGroup stores nothing."""
    subscribed_topics: frozenset[str] | None = None
    """Topics the members subscribe to (consumer protocol only); None when unknown."""
    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    pending_commits: dict[TopicPartition, int] = field(default_factory=dict)
    """Commits written but not yet acknowledged, counted per partition."""

    # --- state ----------------------------------------------------------------------------

    def is_in(self, *states: GroupState) -> bool:
        return self.state in states

    def transition(self, state: GroupState, now_ms: int) -> None:
        assert self.state in _VALID_PREVIOUS[state], f"{self.state} -> {state}"
        self.previous_state = self.state
        self.state = state
        self.state_timestamp_ms = now_ms

    def revive_after_failed_delete(self, previous: GroupState, timestamp_ms: int | None) -> None:
        """Undo the transition to Dead of a deletion whose tombstones were not written."""
        assert self.state is GroupState.DEAD
        self.state = previous
        self.state_timestamp_ms = timestamp_ms

    @property
    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    @property
    def is_empty(self) -> bool:
        """No members and no member ids handed out."""
        return not self.members and not self.pending_members

    # --- members --------------------------------------------------------------------------

    def add_member(self, member: Member) -> None:
        assert member.member_id not in self.members
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        self._count_protocols(member.protocols, 1)
        if member.join_request is not None:
            self.awaiting_join_count += 1
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id

    def remove_member(self, member_id: str) -> Member:
        member = self.members.pop(member_id)
        self._count_protocols(member.protocols, -1)
        if member.join_request is not None:
            self.awaiting_join_count -= 1
        if member.group_instance_id is not None:
            self.static_members.pop(member.group_instance_id, None)
        self.pending_sync.discard(member_id)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        """Give the static member `old_id` the new id `new_id`; it keeps everything else."""
        member = self.members.pop(old_id)
        assert member.group_instance_id == instance_id
        member.member_id = new_id
        self.members[new_id] = member
        self.static_members[instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        return member

    def validate_member(self, member_id: str, group_instance_id: str | None) -> ErrorCode:
        """Kafka's rule: a known instance id with another member id is fenced."""
        if group_instance_id is not None:
            known = self.static_members.get(group_instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def park_join(self, member: Member, request: PendingRequest | None) -> PendingRequest | None:
        """Set (or, with None, clear) the member's parked JoinGroup; returns the previous one."""
        previous = member.join_request
        self.awaiting_join_count += (request is not None) - (previous is not None)
        member.join_request = request
        return previous

    def set_protocols(self, member: Member, protocols: tuple[Protocol, ...]) -> None:
        self._count_protocols(member.protocols, -1)
        member.protocols = protocols
        self._count_protocols(protocols, 1)

    def _count_protocols(self, protocols: Iterable[Protocol], delta: int) -> None:
        support = self.protocol_support
        for name in {name for name, _ in protocols}:
            count = support.get(name, 0) + delta
            if count:
                support[name] = count
            else:
                del support[name]

    def all_members_joined(self) -> bool:
        return self.awaiting_join_count == len(self.members) and not self.pending_members

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def elect_joined_leader(self) -> bool:
        """Keep the leader if it rejoined, else pick a member that did; False if none did."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.join_request is not None:
            return True
        for member in self.members.values():
            if member.join_request is not None:
                self.leader_id = member.member_id
                return True
        return False

    # --- protocols ------------------------------------------------------------------------

    def supports_protocols(
        self, protocol_type: str, protocol_names: Iterable[str], member_id: str | None = None
    ) -> bool:
        """Whether a member (re)joining with these protocols fits the other members."""
        names = set(protocol_names)
        member = self.members.get(member_id) if member_id is not None else None
        others = len(self.members) - (member is not None)
        if not others:
            return bool(protocol_type) and bool(names)
        if protocol_type != self.protocol_type:
            return False
        own = {name for name, _ in member.protocols} if member is not None else set()
        support = self.protocol_support
        return any(support.get(name, 0) - (name in own) == others for name in names)

    def select_protocol(self) -> str:
        """A protocol every member supports, chosen by one vote per member (its favourite).

        Ties go to the protocol that received a vote first, in member join order.
        """
        everyone = len(self.members)
        candidates = {name for name, count in self.protocol_support.items() if count == everyone}
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])

    def compute_subscribed_topics(self) -> frozenset[str] | None:
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return frozenset()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            parsed = subscription_topics(member.metadata(self.protocol_name))
            if parsed is None:
                return None
            topics.update(parsed)
        return frozenset(topics)

    def is_subscribed_to(self, topic: str) -> bool:
        """True when unknown: never drop offsets a member may still be reading."""
        return self.subscribed_topics is None or topic in self.subscribed_topics

    # --- records --------------------------------------------------------------------------

    def to_metadata(self, assignments: dict[str, bytes] | None = None) -> GroupMetadata:
        """The group's record; `assignments` replaces the members' current assignments."""
        protocol = self.protocol_name
        members = tuple(
            MemberMetadata(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms,
                subscription=m.metadata(protocol) if protocol is not None else b"",
                assignment=(
                    m.assignment if assignments is None else assignments.get(m.member_id, b"")
                ),
            )
            for m in self.members.values()
        )
        return GroupMetadata(
            protocol_type=self.protocol_type or "",
            generation_id=self.generation_id,
            protocol_name=protocol,
            leader_id=self.leader_id,
            current_state_timestamp_ms=self.state_timestamp_ms,
            members=members,
        )

    @classmethod
    def from_metadata(cls, group_id: str, partition: int, record: GroupMetadata) -> Group:
        protocol_type = record.protocol_type or None
        group = cls(
            group_id=group_id,
            partition=partition,
            state=GroupState.STABLE if record.members else GroupState.EMPTY,
            state_timestamp_ms=record.current_state_timestamp_ms,
            generation_id=record.generation_id,
            protocol_type=protocol_type,
            protocol_name=record.protocol_name,
        )
        for m in record.members:
            protocols = ((record.protocol_name, m.subscription),) if record.protocol_name else ()
            group.add_member(
                Member(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    session_timeout_ms=m.session_timeout_ms,
                    protocol_type=protocol_type or "",
                    protocols=protocols,
                    assignment=m.assignment,
                )
            )
        if record.leader_id in group.members:
            group.leader_id = record.leader_id
        group.protocol_type = protocol_type
        group.subscribed_topics = group.compute_subscribed_topics()
        return group


def subscription_topics(metadata: bytes) -> list[str] | None:
    """The topics of a "consumer" protocol subscription, or None if it cannot be parsed.

    Every version of ConsumerProtocolSubscription starts with int16 version, then the topics
    as an int32-counted array of int16-length strings; the rest is not needed here.
    """
    try:
        r = Reader(metadata)
        r.int16()
        count = r.array_length(compact=False)
        if count < 0:
            return None
        return [r.string() for _ in range(count)]
    except CorruptMessageError:
        return None
