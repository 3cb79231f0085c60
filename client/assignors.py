"""Consumer-group partition assignors: "range", "roundrobin" and "cooperative-sticky".

The group leader runs one assignor over every member's subscription and sends each member
its share in SyncGroup; the coordinator only relays the bytes. In a group of mixed clients
any member may lead, so the names and rules are Kafka's: range and roundrobin give exactly
what the Java client and librdkafka give for the same input, and cooperative-sticky keeps
the cooperative protocol's hand-over rule that the other clients' members rely on.

All three follow the Java client's ordering of members: static members (with a
group.instance.id) first, ordered by instance id, then dynamic members ordered by member
id. Topics without partition metadata (or with none) are left out; a member whose topics
have no partitions gets an empty assignment. Every member in the input gets an entry in
the output.

- range: per topic, that topic's subscribers in member order; the partitions split into
  contiguous ranges, the first (partitions % subscribers) members one longer.
- roundrobin: every partition of every subscribed topic, sorted by (topic, partition),
  dealt to the members in member order, skipping members not subscribed to its topic.
- cooperative-sticky (KIP-429): a balanced assignment that keeps as many partitions with
  their current owners as balance allows, for the cooperative rebalance protocol. A
  partition that moves from member A to member B is withheld from B in the rebalance
  where A still owns it; A sees it missing from its assignment, revokes it and rejoins,
  and the follow-up rebalance hands it to B.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tidelog.client.protocol.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
    flatten_partitions,
    group_partitions,
)
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.primitives import Reader
from tidelog.client.structs import TopicPartition

UNKNOWN_GENERATION = -1


class RebalanceProtocol(enum.IntEnum):
    """How members give up partitions in a rebalance (Kafka's ids for the two modes).

    EAGER: every member revokes all its partitions before it rejoins. COOPERATIVE (KIP-429):
    members keep their partitions through the rebalance and revoke only those the new
    assignment takes away, then rejoin so that they can be handed on.
    """

    EAGER = 0
    COOPERATIVE = 1


@dataclass(frozen=True, slots=True)
class Subscription:
    """What the leader knows about one member when it assigns.

    `owned_partitions` and `generation_id` (the generation in which the member got them,
    -1 if unknown) come from the member's ConsumerProtocolSubscription v1+/v2+;
    `group_instance_id` comes from the JoinGroup response (v5+), not from the subscription.
    """

    topics: frozenset[str]
    owned_partitions: frozenset[TopicPartition] = frozenset()
    generation_id: int = UNKNOWN_GENERATION
    user_data: bytes | None = None
    rack_id: str | None = None
    group_instance_id: str | None = None

    @classmethod
    def from_protocol(
        cls, subscription: ConsumerProtocolSubscription, group_instance_id: str | None = None
    ) -> Subscription:
        return cls(
            topics=frozenset(subscription.topics),
            owned_partitions=frozenset(
                TopicPartition(topic, partition)
                for topic, partition in flatten_partitions(subscription.owned_partitions)
            ),
            generation_id=subscription.generation_id,
            user_data=subscription.user_data,
            rack_id=subscription.rack_id,
            group_instance_id=group_instance_id,
        )

    def to_protocol(self) -> ConsumerProtocolSubscription:
        """The wire form a member sends in JoinGroup (topics sorted)."""
        return ConsumerProtocolSubscription(
            topics=tuple(sorted(self.topics)),
            user_data=self.user_data,
            owned_partitions=group_partitions(self.owned_partitions),
            generation_id=self.generation_id,
            rack_id=self.rack_id,
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """The partitions assigned to one member, sorted by (topic, partition)."""

    partitions: tuple[TopicPartition, ...] = ()
    user_data: bytes | None = None

    @classmethod
    def from_protocol(cls, assignment: ConsumerProtocolAssignment) -> Assignment:
        return cls(
            partitions=tuple(
                sorted(
                    TopicPartition(topic, partition)
                    for topic, partition in flatten_partitions(assignment.assigned_partitions)
                )
            ),
            user_data=assignment.user_data,
        )

    def to_protocol(self) -> ConsumerProtocolAssignment:
        return ConsumerProtocolAssignment(
            assigned_partitions=group_partitions(self.partitions), user_data=self.user_data
        )


class Assignor(Protocol):
    """A partition assignment strategy, named as in `partition.assignment.strategy`."""

    name: str
    supported_protocols: tuple[RebalanceProtocol, ...]
    """The rebalance protocols this assignor works under, the preferred one first."""

    def subscription_user_data(self, generation_id: int) -> bytes | None:
        """The UserData a member puts in its subscription, given its current generation."""
        ...

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        """Each member's assignment, given each topic's partition count (topics the
        cluster does not know are absent) and every member's subscription."""
        ...


def member_order(members: Mapping[str, Subscription]) -> list[str]:
    """Member ids in the Java client's order: static members by group.instance.id first,
    then dynamic members by member id."""
    static = sorted(
        (sub.group_instance_id, member_id)
        for member_id, sub in members.items()
        if sub.group_instance_id is not None
    )
    dynamic = sorted(
        member_id for member_id, sub in members.items() if sub.group_instance_id is None
    )
    return [member_id for _, member_id in static] + dynamic


def _subscribers_by_topic(
    partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, list[str]]:
    """Topic -> its subscribers in member order, for subscribed topics with partitions,
    topics in name order."""
    subscribers: dict[str, list[str]] = {}
    for member_id in member_order(members):
        for topic in members[member_id].topics:
            if partitions_per_topic.get(topic, 0) > 0:
                subscribers.setdefault(topic, []).append(member_id)
    return {topic: subscribers[topic] for topic in sorted(subscribers)}


def _result(
    members: Mapping[str, Subscription], partitions: Mapping[str, Iterable[TopicPartition]]
) -> dict[str, Assignment]:
    return {
        member_id: Assignment(tuple(sorted(partitions.get(member_id, ())))) for member_id in members
    }


class RangeAssignor:
    """Per topic, contiguous ranges of partitions to the topic's subscribers."""

    name: str = "range"
    supported_protocols: tuple[RebalanceProtocol, ...] = (RebalanceProtocol.EAGER,)

    def subscription_user_data(self, generation_id: int) -> bytes | None:
        return None

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        assigned: dict[str, list[TopicPartition]] = {}
        for topic, subscribers in _subscribers_by_topic(partitions_per_topic, members).items():
            per_member, with_extra = divmod(partitions_per_topic[topic], len(subscribers))
            start = 0
            for index, member_id in enumerate(subscribers):
                length = per_member + (1 if index < with_extra else 0)
                assigned.setdefault(member_id, []).extend(
                    TopicPartition(topic, p) for p in range(start, start + length)
                )
                start += length
        return _result(members, assigned)


class RoundRobinAssignor:
    """All partitions, sorted, dealt in turn to the members subscribed to their topics."""

    name: str = "roundrobin"
    supported_protocols: tuple[RebalanceProtocol, ...] = (RebalanceProtocol.EAGER,)

    def subscription_user_data(self, generation_id: int) -> bytes | None:
        return None

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        ordered = member_order(members)
        assigned: dict[str, list[TopicPartition]] = {}
        cursor = 0
        for topic in _subscribers_by_topic(partitions_per_topic, members):
            for partition in range(partitions_per_topic[topic]):
                for _ in range(len(ordered)):
                    if topic in members[ordered[cursor]].topics:
                        break
                    cursor = (cursor + 1) % len(ordered)
                else:
                    raise AssertionError(f"no subscriber of {topic} in the ring")
                assigned.setdefault(ordered[cursor], []).append(TopicPartition(topic, partition))
                cursor = (cursor + 1) % len(ordered)
        return _result(members, assigned)


def member_generation(subscription: Subscription) -> int:
    """The generation in which a member got its owned partitions, -1 if it does not say.

    Subscription v2+ carries it in GenerationId. Older members put it in UserData: the
    Java cooperative-sticky assignor as a lone int32; librdkafka's sticky assignors in
    StickyAssignorUserData v1 (previous assignment [topic [partition]], then int32).
    """
    if subscription.generation_id >= 0:
        return subscription.generation_id
    data = subscription.user_data
    if data is None:
        return UNKNOWN_GENERATION
    if len(data) == 4:
        return int(struct.unpack(">i", data)[0])
    reader = Reader(data)
    try:
        for _ in range(reader.array_length(compact=False)):
            reader.string()
            for _ in range(reader.array_length(compact=False)):
                reader.int32()
        generation = reader.int32()
    except CorruptMessageError:
        return UNKNOWN_GENERATION
    return generation if reader.remaining == 0 else UNKNOWN_GENERATION


class CooperativeStickyAssignor:
    """Balanced and sticky, for the cooperative rebalance protocol (KIP-429).

    Ownership: among the members that claim a partition that still exists, the claim with
    the highest generation wins; the winner owns it if it is still subscribed to its
    topic. A tie at the highest generation leaves the partition without an owner.

    Balance: every partition of a subscribed topic goes to one of its subscribers, and no
    partition sits with a member that has two or more partitions more than some other
    subscriber of its topic; with equal subscriptions, member sizes differ by at most one.

    Stickiness: owners keep their partitions unless balance takes them away. With equal
    subscriptions they lose exactly the minimum that balance requires; with unequal ones
    the choice of what moves is greedy (partitions placed fresh in this rebalance move
    before owned ones) and may lose a partition or two more than the minimum.

    Cooperation: a partition is withheld from its new member while any other member of the
    group still claims it, unless the new member is its owner.
    """

    name: str = "cooperative-sticky"
    supported_protocols: tuple[RebalanceProtocol, ...] = (
        RebalanceProtocol.COOPERATIVE,
        RebalanceProtocol.EAGER,
    )

    def subscription_user_data(self, generation_id: int) -> bytes | None:
        # The Java assignor's UserData, read by leaders that predate GenerationId (v2).
        return struct.pack(">i", generation_id)

    def assign(
        self, partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
    ) -> dict[str, Assignment]:
        subscribers = _subscribers_by_topic(partitions_per_topic, members)
        rank = {member_id: i for i, member_id in enumerate(member_order(members))}
        claimants, owners = self._ownership(partitions_per_topic, members)
        plan = _StickyPlan(subscribers, rank, owners)
        plan.place_unowned(partitions_per_topic)
        plan.balance()
        granted: dict[str, list[TopicPartition]] = {}
        for member_id, tps in plan.assignment().items():
            granted[member_id] = [
                tp
                for tp in tps
                if owners.get(tp) == member_id
                or not any(other != member_id for other in claimants.get(tp, ()))
            ]
        return _result(members, granted)

    @staticmethod
    def _ownership(
        partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
    ) -> tuple[dict[TopicPartition, list[str]], dict[TopicPartition, str]]:
        """(every claimant of each existing partition, each partition's valid owner)."""
        claimants: dict[TopicPartition, list[str]] = {}
        best: dict[TopicPartition, tuple[int, list[str]]] = {}
        for member_id, sub in members.items():
            generation = member_generation(sub)
            for tp in sub.owned_partitions:
                if not 0 <= tp.partition < partitions_per_topic.get(tp.topic, 0):
                    continue
                claimants.setdefault(tp, []).append(member_id)
                current = best.get(tp)
                if current is None or generation > current[0]:
                    best[tp] = (generation, [member_id])
                elif generation == current[0]:
                    current[1].append(member_id)
        owners = {
            tp: ids[0]
            for tp, (_, ids) in best.items()
            if len(ids) == 1 and tp.topic in members[ids[0]].topics
        }
        return claimants, owners


class _StickyPlan:
    """The cooperative-sticky assignor's working state: partitions per member per topic.

    A partition a member holds but did not validly own before this rebalance is "fresh"
    to it: moving a fresh partition costs no stickiness, moving an owned one does.
    """

    def __init__(
        self,
        subscribers: dict[str, list[str]],
        rank: dict[str, int],
        owners: dict[TopicPartition, str],
    ) -> None:
        self.subscribers = subscribers
        self.rank = rank
        self.owners = owners
        self.held: dict[str, dict[str, set[int]]] = {member_id: {} for member_id in rank}
        self.owned_held: dict[str, dict[str, int]] = {member_id: {} for member_id in rank}
        self.count: dict[str, int] = dict.fromkeys(rank, 0)
        for tp, member_id in owners.items():
            self._add(member_id, tp.topic, tp.partition)

    def _is_owner(self, member_id: str, topic: str, partition: int) -> bool:
        return self.owners.get(TopicPartition(topic, partition)) == member_id

    def _add(self, member_id: str, topic: str, partition: int) -> None:
        self.held[member_id].setdefault(topic, set()).add(partition)
        self.count[member_id] += 1
        if self._is_owner(member_id, topic, partition):
            owned = self.owned_held[member_id]
            owned[topic] = owned.get(topic, 0) + 1

    def _remove(self, member_id: str, topic: str, partition: int) -> None:
        partitions = self.held[member_id][topic]
        partitions.remove(partition)
        if not partitions:
            del self.held[member_id][topic]
        self.count[member_id] -= 1
        if self._is_owner(member_id, topic, partition):
            self.owned_held[member_id][topic] -= 1

    def _least_loaded(self, topic: str) -> str:
        return min(self.subscribers[topic], key=lambda m: (self.count[m], self.rank[m]))

    def place_unowned(self, partitions_per_topic: Mapping[str, int]) -> None:
        """Each partition without a valid owner to its least-loaded subscriber; partitions
        with the fewest possible members first, so that constrained ones find room."""
        unowned = [
            TopicPartition(topic, partition)
            for topic in self.subscribers
            for partition in range(partitions_per_topic[topic])
            if TopicPartition(topic, partition) not in self.owners
        ]
        unowned.sort(key=lambda tp: (len(self.subscribers[tp.topic]), tp))
        for tp in unowned:
            self._add(self._least_loaded(tp.topic), tp.topic, tp.partition)

    def balance(self) -> None:
        """Move partitions from a member to a subscriber of their topic holding two or
        more fewer, until no such move exists. Each move lowers the sum of squared member
        sizes by at least two, which bounds the loop."""
        moves_max = sum(n * n for n in self.count.values()) // 2 + 1
        for _ in range(moves_max):
            move = self._next_move()
            if move is None:
                return
            source, destination, topic, partition = move
            self._remove(source, topic, partition)
            self._add(destination, topic, partition)
        raise AssertionError("sticky balancing did not converge")

    def _next_move(self) -> tuple[str, str, str, int] | None:
        """The best move that improves balance, or None when the plan is balanced.

        Moves of fresh partitions come first: they cost nothing. Only when none is left
        does an owner give up a partition it owned, the largest member first, since
        members above their share lose partitions whatever happens.
        """
        least = {topic: self._least_loaded(topic) for topic in self.subscribers}
        best: tuple[tuple[bool, int, int, int, int, str], str, str, str] | None = None
        for source, topics in self.held.items():
            size = self.count[source]
            for topic, partitions in topics.items():
                destination = least[topic]
                if self.count[destination] > size - 2:
                    continue
                only_owned = self.owned_held[source].get(topic, 0) == len(partitions)
                key = (
                    only_owned,
                    -size,
                    self.count[destination],
                    self.rank[source],
                    self.rank[destination],
                    topic,
                )
                if best is None or key < best[0]:
                    best = (key, source, destination, topic)
        if best is None:
            return None
        _, source, destination, topic = best
        candidates = sorted(self.held[source][topic])
        fresh = [p for p in candidates if not self._is_owner(source, topic, p)]
        return source, destination, topic, (fresh or candidates)[-1]

    def assignment(self) -> dict[str, list[TopicPartition]]:
        return {
            member_id: [
                TopicPartition(topic, partition)
                for topic, partitions in topics.items()
                for partition in partitions
            ]
            for member_id, topics in self.held.items()
        }


ASSIGNORS: Mapping[str, type[RangeAssignor | RoundRobinAssignor | CooperativeStickyAssignor]] = {
    RangeAssignor.name: RangeAssignor,
    RoundRobinAssignor.name: RoundRobinAssignor,
    CooperativeStickyAssignor.name: CooperativeStickyAssignor,
}
"""The assignors by their `partition.assignment.strategy` names."""


def assignor_for_name(name: str) -> Assignor:
    """A new assignor by its Kafka name ("range", "roundrobin", "cooperative-sticky")."""
    try:
        return ASSIGNORS[name]()
    except KeyError:
        known = ", ".join(ASSIGNORS)
        raise ValueError(
            f"unknown partition assignment strategy {name!r} (known: {known})"
        ) from None


def common_rebalance_protocol(assignors: Iterable[Assignor]) -> RebalanceProtocol:
    """The rebalance protocol a consumer configured with `assignors` uses: the highest
    that every one of them supports (the Java client's rule). Raises ValueError if they
    share none, or if `assignors` is empty."""
    common: set[RebalanceProtocol] | None = None
    for assignor in assignors:
        supported = set(assignor.supported_protocols)
        common = supported if common is None else common & supported
    if not common:
        raise ValueError("the assignors share no rebalance protocol")
    return max(common)
