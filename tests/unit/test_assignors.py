"""Partition assignors: range and roundrobin as the Java client defines them (checked
against kafka-python's independent implementation too), and cooperative-sticky's balance,
stickiness and two-phase hand-over, driven through whole cooperative rebalances."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from tidelog.client.assignors import (
    ASSIGNORS,
    Assignment,
    Assignor,
    CooperativeStickyAssignor,
    RangeAssignor,
    RebalanceProtocol,
    RoundRobinAssignor,
    Subscription,
    assignor_for_name,
    common_rebalance_protocol,
    member_generation,
)
from tidelog.client.protocol.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from tidelog.client.structs import TopicPartition as TP

ALL_ASSIGNORS: list[Assignor] = [RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor()]


def sub(
    *topics: str,
    owned: Iterable[TP] = (),
    generation: int = -1,
    instance: str | None = None,
    user_data: bytes | None = None,
) -> Subscription:
    return Subscription(
        topics=frozenset(topics),
        owned_partitions=frozenset(owned),
        generation_id=generation,
        group_instance_id=instance,
        user_data=user_data,
    )


def tps(topic: str, *partitions: int) -> list[TP]:
    return [TP(topic, p) for p in partitions]


def as_lists(result: Mapping[str, Assignment]) -> dict[str, list[TP]]:
    return {member: list(a.partitions) for member, a in result.items()}


def expected_partitions(
    partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
) -> set[TP]:
    """Every partition of every topic that some member subscribes to and that exists."""
    subscribed = set().union(*(s.topics for s in members.values())) if members else set()
    return {
        TP(t, p)
        for t in subscribed
        if t in partitions_per_topic
        for p in range(partitions_per_topic[t])
    }


def check_valid(
    result: Mapping[str, Assignment],
    partitions_per_topic: Mapping[str, int],
    members: Mapping[str, Subscription],
    *,
    complete: bool = True,
) -> None:
    """Every member has an entry; nothing goes to a member that does not subscribe to its
    topic or to nobody's topic; no partition twice; all of them when `complete`."""
    assert set(result) == set(members)
    everything = Counter(tp for a in result.values() for tp in a.partitions)
    assert all(n == 1 for n in everything.values()), everything
    for member, assignment in result.items():
        assert list(assignment.partitions) == sorted(assignment.partitions)
        for tp in assignment.partitions:
            assert tp.topic in members[member].topics
    wanted = expected_partitions(partitions_per_topic, members)
    assert set(everything) <= wanted
    if complete:
        assert set(everything) == wanted


def sizes(result: Mapping[str, Assignment]) -> list[int]:
    return [len(a.partitions) for a in result.values()]


def locally_balanced(result: Mapping[str, Assignment], members: Mapping[str, Subscription]) -> bool:
    """No partition sits with a member that holds two or more partitions more than another
    member subscribed to its topic."""
    count = {m: len(a.partitions) for m, a in result.items()}
    for member, assignment in result.items():
        for tp in assignment.partitions:
            for other, s in members.items():
                if tp.topic in s.topics and count[other] <= count[member] - 2:
                    return False
    return True


# --- strategies ----------------------------------------------------------------------------

TOPICS = ["a", "b", "c", "d"]


@st.composite
def groups(draw: st.DrawFn, equal: bool = False) -> tuple[dict[str, int], dict[str, Subscription]]:
    """Cluster partition counts (some subscribed topics unknown to it) and members."""
    partitions_per_topic = {
        t: draw(st.integers(0, 12)) for t in draw(st.sets(st.sampled_from(TOPICS), min_size=1))
    }
    member_ids = draw(
        st.lists(st.text("mnopq", min_size=1, max_size=3), min_size=1, max_size=7, unique=True)
    )
    shared = draw(st.sets(st.sampled_from([*TOPICS, "unknown"]), min_size=1))
    members = {}
    for member_id in member_ids:
        topics = shared if equal else draw(st.sets(st.sampled_from([*TOPICS, "unknown"])))
        members[member_id] = sub(*topics)
    return partitions_per_topic, members


# --- range -----------------------------------------------------------------------------------


def test_range_matches_the_documented_example() -> None:
    members = {"C0": sub("t0", "t1"), "C1": sub("t0", "t1")}
    result = RangeAssignor().assign({"t0": 3, "t1": 3}, members)
    assert as_lists(result) == {
        "C0": tps("t0", 0, 1) + tps("t1", 0, 1),
        "C1": tps("t0", 2) + tps("t1", 2),
    }


def test_range_gives_the_extra_partitions_to_the_first_members_per_topic() -> None:
    members = {"m3": sub("t"), "m1": sub("t"), "m2": sub("t", "u")}
    result = RangeAssignor().assign({"t": 8, "u": 2}, members)
    # t: 8 over 3 members -> 3, 3, 2 in member-id order; u: only m2 subscribes.
    assert as_lists(result) == {
        "m1": tps("t", 0, 1, 2),
        "m2": tps("t", 3, 4, 5) + tps("u", 0, 1),
        "m3": tps("t", 6, 7),
    }


def test_range_orders_static_members_first_by_instance_id() -> None:
    members = {
        "a-dynamic": sub("t"),
        "z-member": sub("t", instance="i1"),
        "b-member": sub("t", instance="i2"),
    }
    result = RangeAssignor().assign({"t": 3}, members)
    assert as_lists(result) == {
        "z-member": tps("t", 0),
        "b-member": tps("t", 1),
        "a-dynamic": tps("t", 2),
    }


@given(groups())
def test_range_follows_its_definition(
    group: tuple[dict[str, int], dict[str, Subscription]],
) -> None:
    partitions_per_topic, members = group
    result = RangeAssignor().assign(partitions_per_topic, members)
    check_valid(result, partitions_per_topic, members)
    for topic, count in partitions_per_topic.items():
        subscribers = sorted(m for m, s in members.items() if topic in s.topics)
        if not subscribers or count == 0:
            continue
        shares = [
            [tp.partition for tp in result[m].partitions if tp.topic == topic] for m in subscribers
        ]
        # Contiguous ranges in member order, lengths non-increasing and within one.
        assert [p for share in shares for p in share] == list(range(count))
        lengths = [len(share) for share in shares]
        assert lengths == sorted(lengths, reverse=True)
        assert max(lengths) - min(lengths) <= 1


# --- roundrobin ------------------------------------------------------------------------------


def test_roundrobin_matches_the_documented_examples() -> None:
    equal = {"C0": sub("t0", "t1"), "C1": sub("t0", "t1")}
    assert as_lists(RoundRobinAssignor().assign({"t0": 3, "t1": 3}, equal)) == {
        "C0": tps("t0", 0, 2) + tps("t1", 1),
        "C1": tps("t0", 1) + tps("t1", 0, 2),
    }
    unequal = {"C0": sub("t0"), "C1": sub("t0", "t1"), "C2": sub("t0", "t1", "t2")}
    assert as_lists(RoundRobinAssignor().assign({"t0": 1, "t1": 2, "t2": 3}, unequal)) == {
        "C0": tps("t0", 0),
        "C1": tps("t1", 0),
        "C2": tps("t1", 1) + tps("t2", 0, 1, 2),
    }


def test_roundrobin_orders_static_members_first() -> None:
    members = {"a": sub("t"), "b": sub("t", instance="x"), "c": sub("t", instance="w")}
    assert as_lists(RoundRobinAssignor().assign({"t": 4}, members)) == {
        "c": tps("t", 0, 3),
        "b": tps("t", 1),
        "a": tps("t", 2),
    }


@given(groups(equal=True))
def test_roundrobin_balances_equal_subscriptions(
    group: tuple[dict[str, int], dict[str, Subscription]],
) -> None:
    partitions_per_topic, members = group
    result = RoundRobinAssignor().assign(partitions_per_topic, members)
    check_valid(result, partitions_per_topic, members)
    assert max(sizes(result)) - min(sizes(result)) <= 1


# --- agreement with kafka-python's range and roundrobin ----------------------------------------


class _Cluster:
    def __init__(self, partitions_per_topic: Mapping[str, int]) -> None:
        self.partitions_per_topic = partitions_per_topic

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions_per_topic.get(topic, 0)
        return set(range(count)) if count else None


class _Metadata(NamedTuple):
    topics: list[str]


class _Member(NamedTuple):
    member_id: str
    group_instance_id: str | None
    metadata: _Metadata


def kafka_python_assign(
    assignor: Any, partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
) -> dict[str, set[TP]]:
    kp_members = [
        _Member(m, s.group_instance_id, _Metadata(sorted(s.topics))) for m, s in members.items()
    ]
    result = assignor.assign(_Cluster(partitions_per_topic), kp_members)
    return {m: {TP(t, p) for t, ps in a.assigned_partitions for p in ps} for m, a in result.items()}


def with_static_ids(members: Mapping[str, Subscription]) -> dict[str, Subscription]:
    """The same members made static, instance ids ordered unlike their member ids."""
    return {m: Subscription(s.topics, group_instance_id=f"i-{m[::-1]}") for m, s in members.items()}


def agree(
    ours: Assignor,
    theirs: type,
    partitions_per_topic: Mapping[str, int],
    members: Mapping[str, Subscription],
) -> None:
    expected = kafka_python_assign(theirs, partitions_per_topic, members)
    result = ours.assign(partitions_per_topic, members)
    assert {m: set(a.partitions) for m, a in result.items() if a.partitions} == {
        m: ps for m, ps in expected.items() if ps
    }


@given(group=groups(), static=st.booleans())
def test_range_agrees_with_kafka_python(
    group: tuple[dict[str, int], dict[str, Subscription]], static: bool
) -> None:
    partitions_per_topic, members = group
    members = with_static_ids(members) if static else members
    agree(RangeAssignor(), RangePartitionAssignor, partitions_per_topic, members)


# kafka-python's roundrobin fails with KeyError when it has to skip a member that is not
# subscribed to a topic, so it is an oracle only for equal subscriptions.
@given(group=groups(equal=True), static=st.booleans())
def test_roundrobin_agrees_with_kafka_python(
    group: tuple[dict[str, int], dict[str, Subscription]], static: bool
) -> None:
    partitions_per_topic, members = group
    members = with_static_ids(members) if static else members
    agree(RoundRobinAssignor(), RoundRobinPartitionAssignor, partitions_per_topic, members)


# --- every assignor --------------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ALL_ASSIGNORS, ids=lambda a: a.name)
@settings(max_examples=60)
@given(group=groups())
def test_every_partition_goes_to_exactly_one_subscriber(
    assignor: Assignor, group: tuple[dict[str, int], dict[str, Subscription]]
) -> None:
    partitions_per_topic, members = group
    check_valid(assignor.assign(partitions_per_topic, members), partitions_per_topic, members)


@pytest.mark.parametrize("assignor", ALL_ASSIGNORS, ids=lambda a: a.name)
def test_members_without_topics_get_empty_assignments(assignor: Assignor) -> None:
    members = {"m1": sub("t"), "m2": sub(), "m3": sub("gone")}
    result = assignor.assign({"t": 2}, members)
    assert as_lists(result) == {"m1": tps("t", 0, 1), "m2": [], "m3": []}


def test_assignors_by_name_and_protocol() -> None:
    assert set(ASSIGNORS) == {"range", "roundrobin", "cooperative-sticky"}
    for name in ASSIGNORS:
        assert assignor_for_name(name).name == name
    with pytest.raises(ValueError, match="sticky-ish"):
        assignor_for_name("sticky-ish")
    sticky, rng = assignor_for_name("cooperative-sticky"), assignor_for_name("range")
    assert common_rebalance_protocol([sticky]) is RebalanceProtocol.COOPERATIVE
    assert common_rebalance_protocol([sticky, rng]) is RebalanceProtocol.EAGER
    with pytest.raises(ValueError):
        common_rebalance_protocol([])


# --- cooperative-sticky ----------------------------------------------------------------------

STICKY = CooperativeStickyAssignor()


def test_user_data_is_the_generation_as_a_java_int32() -> None:
    assert STICKY.subscription_user_data(5) == b"\x00\x00\x00\x05"
    assert STICKY.subscription_user_data(-1) == b"\xff\xff\xff\xff"
    assert RangeAssignor().subscription_user_data(5) is None


def test_member_generation_sources() -> None:
    assert member_generation(sub("t", generation=7, user_data=b"\x00\x00\x00\x03")) == 7
    assert member_generation(sub("t", user_data=b"\x00\x00\x00\x03")) == 3
    # librdkafka's StickyAssignorUserData v1: [topic [partition]] then the generation.
    sticky_v1 = (
        b"\x00\x00\x00\x01"
        + b"\x00\x01t"
        + b"\x00\x00\x00\x02"
        + b"\x00\x00\x00\x00\x00\x00\x00\x01"
    ) + b"\x00\x00\x00\x0b"
    assert member_generation(sub("t", user_data=sticky_v1)) == 11
    # StickyAssignorUserData v0 has no generation; junk has none either.
    assert member_generation(sub("t", user_data=sticky_v1[:-4])) == -1
    assert member_generation(sub("t", user_data=b"\x01\x02\x03")) == -1
    assert member_generation(sub("t")) == -1


def test_fresh_assignment_is_balanced() -> None:
    members = {f"m{i}": sub("a", "b") for i in range(5)}
    result = STICKY.assign({"a": 7, "b": 6}, members)
    check_valid(result, {"a": 7, "b": 6}, members)
    assert sorted(sizes(result)) == [2, 2, 3, 3, 3]


def test_owners_keep_their_partitions_when_balanced() -> None:
    members = {
        "m1": sub("t", owned=tps("t", 5, 0), generation=3),
        "m2": sub("t", owned=tps("t", 1, 4), generation=3),
        "m3": sub("t", owned=tps("t", 2, 3), generation=3),
    }
    assert as_lists(STICKY.assign({"t": 6}, members)) == {
        "m1": tps("t", 0, 5),
        "m2": tps("t", 1, 4),
        "m3": tps("t", 2, 3),
    }


def test_a_moving_partition_is_revoked_before_it_is_reassigned() -> None:
    owners = {"m1": tps("t", 0, 1, 2), "m2": tps("t", 3, 4, 5)}
    members = {m: sub("t", owned=ps, generation=1) for m, ps in owners.items()}
    members["m3"] = sub("t")
    first = STICKY.assign({"t": 6}, members)
    # m3 gets nothing yet; each old owner gives up exactly one partition.
    assert first["m3"].partitions == ()
    revoked = {tp for m, ps in owners.items() for tp in ps if tp not in first[m].partitions}
    assert len(revoked) == 2
    assert all(len(first[m].partitions) == 2 for m in owners)
    # After the revocation the follow-up rebalance hands exactly those to m3.
    members = {m: sub("t", owned=first[m].partitions, generation=2) for m in owners}
    members["m3"] = sub("t", generation=2)
    second = STICKY.assign({"t": 6}, members)
    assert set(second["m3"].partitions) == revoked
    assert all(second[m].partitions == first[m].partitions for m in owners)


def test_highest_generation_wins_a_conflicting_claim() -> None:
    members = {
        "old": sub("t", owned=tps("t", 0, 1), generation=4),
        "new": sub("t", owned=tps("t", 1, 2), generation=5),
    }
    result = STICKY.assign({"t": 4}, members)
    # t-1 stays with the newer claim; t-3 (unowned) balances "old" without a hand-over.
    assert as_lists(result) == {"old": tps("t", 0, 3), "new": tps("t", 1, 2)}


def test_generation_from_user_data_decides_a_conflict() -> None:
    members = {
        "java-old": sub("t", owned=tps("t", 0), user_data=struct.pack(">i", 2)),
        "java-new": sub("t", owned=tps("t", 0), user_data=struct.pack(">i", 3)),
    }
    result = STICKY.assign({"t": 2}, members)
    # t-0 stays with the newer claim; the free t-1 balances the other member.
    assert as_lists(result) == {"java-old": tps("t", 1), "java-new": tps("t", 0)}


def test_tied_claims_are_withheld_from_everyone_until_revoked() -> None:
    members = {
        "m1": sub("t", owned=tps("t", 0), generation=6),
        "m2": sub("t", owned=tps("t", 0), generation=6),
    }
    first = STICKY.assign({"t": 2}, members)
    assert TP("t", 0) not in {tp for a in first.values() for tp in a.partitions}
    assert sorted(sizes(first)) == [0, 1]
    members = {m: sub("t", owned=first[m].partitions, generation=7) for m in members}
    second = STICKY.assign({"t": 2}, members)
    check_valid(second, {"t": 2}, members)
    assert sizes(second) == [1, 1]


def test_partition_of_an_unsubscribed_topic_waits_for_its_revocation() -> None:
    members = {
        "leaving-t": sub("u", owned=tps("t", 0), generation=2),
        "joining-t": sub("t", generation=2),
    }
    first = STICKY.assign({"t": 1, "u": 1}, members)
    assert as_lists(first) == {"leaving-t": tps("u", 0), "joining-t": []}
    members = {
        "leaving-t": sub("u", owned=tps("u", 0), generation=3),
        "joining-t": sub("t", generation=3),
    }
    assert as_lists(STICKY.assign({"t": 1, "u": 1}, members)) == {
        "leaving-t": tps("u", 0),
        "joining-t": tps("t", 0),
    }


def test_claims_on_vanished_partitions_are_ignored() -> None:
    members = {"m1": sub("t", owned=tps("t", 5) + tps("gone", 0), generation=1), "m2": sub("t")}
    result = STICKY.assign({"t": 2}, members)
    check_valid(result, {"t": 2}, members)
    assert sizes(result) == [1, 1]


def brute_force_minimum_loss(
    partitions_per_topic: Mapping[str, int], members: Mapping[str, Subscription]
) -> int:
    """Fewest owned partitions lost over every complete, locally balanced assignment."""
    every = sorted(expected_partitions(partitions_per_topic, members))
    choices = [[m for m, s in members.items() if tp.topic in s.topics] for tp in every]
    best = None
    for combo in itertools.product(*choices):
        placed: dict[str, list[TP]] = {m: [] for m in members}
        for tp, member in zip(every, combo, strict=True):
            placed[member].append(tp)
        result = {m: Assignment(tuple(ps)) for m, ps in placed.items()}
        if locally_balanced(result, members):
            loss = sum(len(s.owned_partitions - set(placed[m])) for m, s in members.items())
            best = loss if best is None else min(best, loss)
    assert best is not None
    return best


def test_unequal_subscriptions_give_up_fresh_partitions_before_owned_ones() -> None:
    counts = {"a": 4, "b": 5, "c": 3}
    members = {
        "m0": sub("c", generation=1),
        "m1": sub("a", "b", "c", owned=tps("a", 0, 1) + tps("b", 0, 1), generation=1),
        "m2": sub("a", "c", owned=tps("c", 0, 1, 2), generation=1),
        "m3": sub("a", "b", owned=tps("b", 2), generation=1),
    }
    result = STICKY.assign(counts, members)
    check_valid(result, counts, members, complete=False)  # hand-overs are withheld
    loss = sum(len(s.owned_partitions - set(result[m].partitions)) for m, s in members.items())
    assert loss == brute_force_minimum_loss(counts, members) == 2


def test_removing_a_member_moves_only_its_partitions() -> None:
    owners = {f"m{i}": tps("t", *range(i * 4, i * 4 + 4)) for i in range(4)}
    members = {m: sub("t", owned=ps, generation=9) for m, ps in owners.items() if m != "m2"}
    result = STICKY.assign({"t": 16}, members)
    check_valid(result, {"t": 16}, members)
    for member in members:
        assert set(owners[member]) <= set(result[member].partitions)
    assert sorted(sizes(result)) == [5, 5, 6]


def test_large_group_assigns() -> None:
    members = {f"member-{i:03d}": sub("a", "b", "c") for i in range(100)}
    counts = {"a": 500, "b": 300, "c": 200}
    result = STICKY.assign(counts, members)
    check_valid(result, counts, members)
    assert set(sizes(result)) == {10}
    # One member joins: in the first round nobody else gains anything, owners give up ~P/M.
    members = {m: sub("a", "b", "c", owned=a.partitions, generation=1) for m, a in result.items()}
    members["member-new"] = sub("a", "b", "c", generation=1)
    joined = STICKY.assign(counts, members)
    lost = sum(len(set(result[m].partitions) - set(joined[m].partitions)) for m in result)
    assert lost == 9  # 1000 over 101 members: the newcomer's share is 9
    assert joined["member-new"].partitions == ()


# --- cooperative rebalances, simulated -----------------------------------------------------


class Group:
    """Members running the cooperative protocol: each rebalance, every member reports what it
    owns; after the assignment it revokes what it lost and, if it lost anything, the group
    rebalances again."""

    def __init__(self, partitions_per_topic: Mapping[str, int]) -> None:
        self.partitions_per_topic = dict(partitions_per_topic)
        self.topics: dict[str, frozenset[str]] = {}
        self.owned: dict[str, frozenset[TP]] = {}
        self.generation = 0

    def subscriptions(self) -> dict[str, Subscription]:
        # Through the wire format and back, as the leader would see them.
        out = {}
        for m in self.topics:
            proto = Subscription(
                topics=self.topics[m],
                owned_partitions=self.owned[m],
                generation_id=self.generation,
                user_data=STICKY.subscription_user_data(self.generation),
            ).to_protocol()
            out[m] = Subscription.from_protocol(decode_subscription(encode_subscription(proto)))
        return out

    def rebalance(self) -> tuple[int, dict[str, Assignment]]:
        """Rebalance until nobody revokes; returns (owned partitions lost, final result)."""
        lost_total = 0
        for _ in range(4):
            members = self.subscriptions()
            result = STICKY.assign(self.partitions_per_topic, members)
            result = {
                m: Assignment.from_protocol(decode_assignment(encode_assignment(a.to_protocol())))
                for m, a in result.items()
            }
            check_valid(result, self.partitions_per_topic, members, complete=False)
            for m, assignment in result.items():
                for tp in assignment.partitions:
                    # The cooperative rule: never handed a partition someone else still owns.
                    assert all(tp not in self.owned[o] for o in self.owned if o != m), (tp, m)
            self.generation += 1
            revoked = False
            for m, assignment in result.items():
                lost = self.owned[m] - set(assignment.partitions)
                lost_total += len(lost)
                revoked = revoked or bool(lost)
                self.owned[m] = frozenset(assignment.partitions)
            if not revoked:
                return lost_total, result
        raise AssertionError("cooperative rebalances did not settle")

    def join(self, member: str, topics: Iterable[str]) -> None:
        self.topics[member] = frozenset(topics)
        self.owned[member] = frozenset()

    def leave(self, member: str) -> None:
        del self.topics[member], self.owned[member]


def minimum_loss(owned_counts: list[int], total: int, members: int) -> int:
    """Fewest owned partitions that must change hands for a balanced result with equal
    subscriptions: each member keeps at most its share (total // members), and only
    total % members members can keep one more."""
    share, extra = divmod(total, members)
    kept = sum(min(c, share) for c in owned_counts)
    kept += min(extra, sum(1 for c in owned_counts if c > share))
    return sum(owned_counts) - kept


@settings(max_examples=60, deadline=None)
@given(
    partitions=st.integers(0, 40),
    initial=st.integers(1, 6),
    changes=st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=1, max_size=5),
)
def test_equal_subscriptions_move_the_minimum(
    partitions: int, initial: int, changes: list[tuple[bool, int]]
) -> None:
    group = Group({"t": partitions})
    for i in range(initial):
        group.join(f"m{i:02d}", ["t"])
    group.rebalance()
    next_id = initial
    for joins, pick in changes:
        if joins or len(group.topics) == 1:
            group.join(f"m{next_id:02d}", ["t"])
            next_id += 1
        else:
            group.leave(sorted(group.topics)[pick % len(group.topics)])
        owned_counts = [len(ps) for ps in group.owned.values()]
        still_owned = sum(owned_counts)
        lost, result = group.rebalance()
        assert lost == minimum_loss(owned_counts, partitions, len(group.topics))
        assert lost <= still_owned
        check_valid(result, group.partitions_per_topic, group.subscriptions())
        assert max(sizes(result)) - min(sizes(result)) <= 1


@settings(max_examples=60, deadline=None)
@given(
    counts=st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 10), min_size=1),
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(0, 20), st.sets(st.sampled_from(TOPICS), min_size=1)),
        min_size=1,
        max_size=6,
    ),
)
def test_any_subscriptions_settle_complete_and_balanced(
    counts: dict[str, int], steps: list[tuple[bool, int, set[str]]]
) -> None:
    group = Group(counts)
    for n, (joins, pick, topics) in enumerate(steps):
        if joins or not group.topics:
            group.join(f"m{n}", topics)
        else:
            group.leave(sorted(group.topics)[pick % len(group.topics)])
        if not group.topics:
            continue
        _, result = group.rebalance()
        members = group.subscriptions()
        check_valid(result, counts, members)
        assert locally_balanced(result, members)


@st.composite
def claimed_groups(draw: st.DrawFn) -> tuple[dict[str, int], dict[str, Subscription]]:
    """Members with arbitrary, possibly conflicting or stale, ownership claims."""
    partitions_per_topic, members = draw(groups())
    everything = [TP(t, p) for t in [*TOPICS, "unknown"] for p in range(13)]
    return partitions_per_topic, {
        m: sub(
            *s.topics,
            owned=draw(st.sets(st.sampled_from(everything), max_size=8)),
            generation=draw(st.integers(-1, 3)),
        )
        for m, s in members.items()
    }


@settings(max_examples=100, deadline=None)
@given(claimed_groups())
def test_nothing_is_handed_over_while_another_member_claims_it(
    group: tuple[dict[str, int], dict[str, Subscription]],
) -> None:
    partitions_per_topic, members = group
    result = STICKY.assign(partitions_per_topic, members)
    check_valid(result, partitions_per_topic, members, complete=False)
    assigned = {tp: m for m, a in result.items() for tp in a.partitions}
    for tp, member in assigned.items():
        rivals = [m for m, s in members.items() if m != member and tp in s.owned_partitions]
        if rivals:
            mine = members[member]
            assert tp in mine.owned_partitions
            assert all(members[r].generation_id < mine.generation_id for r in rivals)
    # Whatever is held back is claimed by someone: unclaimed partitions are never withheld.
    claimed = {tp for s in members.values() for tp in s.owned_partitions}
    assert expected_partitions(partitions_per_topic, members) - set(assigned) <= claimed


@settings(max_examples=100, deadline=None)
@given(groups())
def test_fresh_sticky_assignment_is_balanced(
    group: tuple[dict[str, int], dict[str, Subscription]],
) -> None:
    partitions_per_topic, members = group
    result = STICKY.assign(partitions_per_topic, members)
    check_valid(result, partitions_per_topic, members)
    assert locally_balanced(result, members)
    if len({s.topics for s in members.values()}) == 1:
        assert max(sizes(result)) - min(sizes(result)) <= 1
