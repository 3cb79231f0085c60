"""The active controller's pure rules: broker fencing, unfencing, controlled shutdown and
unregistration, and where new replicas go. Each rule reads an image and returns records;
the tests apply those records and check the image they make."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller import brokers as rules
from tidelog.broker.controller.topics import (
    TopicError,
    assign_replicas,
    create_partitions,
    create_topic,
    placement_brokers,
)
from tidelog.broker.metadata.image import MetadataImage, PartitionMetadata
from tidelog.broker.metadata.records import (
    NO_LEADER,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ControlledShutdownChange,
    LeaderRecoveryState,
    MetadataRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
    unfenced_registration,
)
from tidelog.client.protocol.configs import ConfigResourceType
from tidelog.client.protocol.errors import ErrorCode

TOPIC = "t"
TOPIC_ID = uuid.UUID(int=1)

Partition = tuple[tuple[int, ...], tuple[int, ...], int]
"""(replicas, isr, leader)"""


def epoch_of(broker_id: int) -> int:
    return 100 + broker_id


def cluster(
    partitions: Sequence[Partition] = (),
    *,
    brokers: Sequence[int] = (0, 1, 2),
    fenced: Sequence[int] = (),
    shutting_down: Sequence[int] = (),
    racks: Mapping[int, str] | None = None,
    configs: Mapping[str, str] | None = None,
) -> MetadataImage:
    """Unfenced `brokers` (but `fenced`, registered fenced, and `shutting_down`, in
    controlled shutdown) and topic TOPIC with `partitions`."""
    racks = racks or {}
    records: list[MetadataRecord] = []
    for b in brokers:
        incarnation = uuid.UUID(int=1000 + b)
        if b in fenced:
            records.append(
                RegisterBrokerRecord(
                    b, rack=racks.get(b), broker_epoch=epoch_of(b), incarnation_id=incarnation
                )
            )
        else:
            records.extend(unfenced_registration(b, epoch_of(b), incarnation, rack=racks.get(b)))
        if b in shutting_down:
            records.append(
                BrokerRegistrationChangeRecord(
                    b,
                    epoch_of(b),
                    in_controlled_shutdown=ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN,
                )
            )
    if partitions:
        records.append(TopicRecord(TOPIC, TOPIC_ID))
        for index, (replicas, isr, leader) in enumerate(partitions):
            records.append(PartitionRecord(TOPIC_ID, index, replicas, isr, leader))
        for name, value in (configs or {}).items():
            records.append(ConfigRecord(ConfigResourceType.TOPIC, TOPIC, name, value))
    return MetadataImage.empty("cluster", controller_id=0).apply_all(records)


def partition(image: MetadataImage, index: int = 0) -> PartitionMetadata:
    p = image.partition(TOPIC, index)
    assert p is not None
    return p


def leaders_and_isrs(image: MetadataImage) -> list[tuple[int, tuple[int, ...]]]:
    topic = image.topic(TOPIC)
    assert topic is not None
    return [(p.leader_id, p.isr) for p in topic.partitions]


# -- usable brokers and elections


def test_usable_brokers_are_the_unfenced_ones_not_shutting_down() -> None:
    image = cluster(brokers=(0, 1, 2, 3), fenced=(1,), shutting_down=(2,))
    assert rules.usable_brokers(image) == {0, 3}


def test_elect_leader_takes_the_first_usable_in_sync_replica_in_assignment_order() -> None:
    image = cluster([((2, 0, 1), (0, 1, 2), 0)])
    topic = image.topic(TOPIC)
    assert topic is not None
    p = partition(image)
    assert rules.elect_leader(topic, p, {0, 1, 2}) == 2  # assignment order, not ISR order
    assert rules.elect_leader(topic, p, {0, 1}) == 0
    assert rules.elect_leader(topic, p, set()) == NO_LEADER


# -- ElectLeaders


def test_a_preferred_election_gives_the_lead_back_to_the_first_replica_in_sync() -> None:
    image = cluster(
        [
            ((0, 1, 2), (0, 1, 2), 1),  # 0 is in sync: it takes over
            ((1, 2, 0), (0, 2), 2),  # 1 is out of sync: not available
            ((2, 0, 1), (0, 1, 2), 2),  # leads already
        ]
    )
    records, results = rules.elect_leaders(image, rules.PREFERRED_ELECTION, None)
    assert [code for code, _ in results.values()] == [
        ErrorCode.NONE,
        ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE,
    ]
    assert list(results) == [(TOPIC, 0), (TOPIC, 1)]  # not-needed ones left out
    after = image.apply_all(records)
    assert leaders_and_isrs(after) == [(0, (0, 1, 2)), (2, (0, 2)), (2, (0, 1, 2))]
    assert partition(after, 0).leader_epoch == partition(image, 0).leader_epoch + 1
    # Named partitions are all answered, unknown ones too.
    _, named = rules.elect_leaders(after, rules.PREFERRED_ELECTION, [(TOPIC, 2), ("x", 0)])
    assert named[(TOPIC, 2)][0] is ErrorCode.ELECTION_NOT_NEEDED
    assert named[("x", 0)][0] is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_a_preferred_replica_that_is_fenced_is_not_elected() -> None:
    image = cluster([((0, 1), (0, 1), 1)], fenced=(0,))
    records, results = rules.elect_leaders(image, rules.PREFERRED_ELECTION, [(TOPIC, 0)])
    assert records == []
    assert results[(TOPIC, 0)][0] is ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE


def test_an_unclean_election_elects_out_of_sync_only_when_no_in_sync_replica_lives() -> None:
    image = cluster(
        [
            ((0, 1, 2), (0,), NO_LEADER),  # 0, the last in sync, is fenced: 1 unclean
            ((1, 2), (1, 2), 1),  # has a leader
            ((0,), (0,), NO_LEADER),  # nobody alive
        ],
        fenced=(0,),
    )
    targets = [(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)]
    records, results = rules.elect_leaders(image, rules.UNCLEAN_ELECTION, targets)
    assert [results[t][0] for t in targets] == [
        ErrorCode.NONE,
        ErrorCode.ELECTION_NOT_NEEDED,
        ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE,
    ]
    after = image.apply_all(records)
    p = partition(after, 0)
    assert (p.leader_id, p.isr) == (1, (1,))
    assert p.leader_recovery_state is LeaderRecoveryState.RECOVERING


# -- fencing


def test_fencing_a_leader_moves_leadership_to_the_next_in_sync_replica() -> None:
    # Broker 1 is next in the assignment but out of sync: broker 2 leads.
    image = cluster([((0, 1, 2), (0, 2), 0)])
    after = image.apply_all(rules.fence(image, 0))
    p = partition(after)
    assert (p.leader_id, p.isr) == (2, (2,))
    assert p.leader_epoch == partition(image).leader_epoch + 1
    broker = after.broker(0)
    assert broker is not None and broker.fenced


def test_fencing_a_follower_takes_it_out_of_the_isr_and_keeps_the_leader() -> None:
    image = cluster([((1, 0, 2), (1, 0, 2), 1)])
    after = image.apply_all(rules.fence(image, 0))
    p = partition(after)
    assert (p.leader_id, p.isr, p.leader_epoch) == (1, (1, 2), partition(image).leader_epoch)


def test_fencing_the_last_in_sync_replica_keeps_it_in_the_isr_without_a_leader() -> None:
    image = cluster([((0, 1), (0,), 0)])
    after = image.apply_all(rules.fence(image, 0))
    assert leaders_and_isrs(after) == [(NO_LEADER, (0,))]


def test_fencing_changes_no_partition_the_broker_neither_leads_nor_is_in_sync_for() -> None:
    image = cluster([((1, 2), (1, 2), 1), ((0, 1), (1,), 1)])
    assert rules.fence(image, 0)[1:] == []


def test_without_unclean_election_no_usable_isr_member_means_no_leader() -> None:
    # Broker 1 is usable but out of sync.
    image = cluster([((0, 1), (0,), 0)], configs={rules.UNCLEAN_LEADER_ELECTION: "false"})
    after = image.apply_all(rules.fence(image, 0))
    assert partition(after).leader_id == NO_LEADER


def test_with_unclean_election_a_usable_out_of_sync_replica_leads() -> None:
    image = cluster([((0, 1, 2), (0,), 0)], configs={rules.UNCLEAN_LEADER_ELECTION: "true"})
    after = image.apply_all(rules.fence(image, 0))
    unclean = partition(after)
    # Kafka's unclean election: the new leader is the whole ISR, the partition recovering.
    assert (unclean.leader_id, unclean.isr) == (1, (1,))
    assert unclean.leader_recovery_state == LeaderRecoveryState.RECOVERING


# -- unfencing


def test_unfence_elects_the_returning_broker_where_it_can_lead() -> None:
    image = cluster(
        [
            ((1, 0), (0,), NO_LEADER),  # the last in-sync replica is back: it leads
            ((0, 1), (0, 1), 1),  # led already: unchanged
            ((1, 2), (1,), NO_LEADER),  # not a replica of it: not its to elect
            ((0, 2), (2,), NO_LEADER),  # out of sync, no unclean election
        ],
        fenced=(0, 2),
    )
    after = image.apply_all(rules.unfence(image, 0))
    broker = after.broker(0)
    assert broker is not None and not broker.fenced
    assert [leader for leader, _isr in leaders_and_isrs(after)] == [0, 1, NO_LEADER, NO_LEADER]
    assert partition(after, 0).leader_epoch == partition(image, 0).leader_epoch + 1
    assert partition(after, 1).leader_epoch == partition(image, 1).leader_epoch


# -- controlled shutdown


def shutdown_cluster() -> MetadataImage:
    """Broker 0 leads three partitions: one another usable ISR member can take over, one
    it is alone in, one whose other ISR member (broker 2) is fenced; and follows one."""
    return cluster(
        [
            ((0, 1), (0, 1), 0),
            ((0, 1), (0,), 0),
            ((0, 2), (0, 2), 0),
            ((1, 0), (1, 0), 1),
        ],
        fenced=(2,),
    )


def test_controlled_shutdown_moves_leadership_only_where_another_isr_replica_is_usable() -> None:
    image = shutdown_cluster()
    after = image.apply_all(rules.begin_controlled_shutdown(image, 0))
    broker = after.broker(0)
    assert broker is not None and broker.in_controlled_shutdown and not broker.fenced
    assert leaders_and_isrs(after) == [(1, (1,)), (0, (0,)), (0, (0, 2)), (1, (1,))]


def test_controlled_shutdown_is_done_once_nothing_movable_is_left() -> None:
    image = shutdown_cluster()
    assert not rules.controlled_shutdown_done(image, 0)
    after = image.apply_all(rules.begin_controlled_shutdown(image, 0))
    assert rules.controlled_shutdown_done(after, 0)
    # Asking again changes nothing.
    assert rules.begin_controlled_shutdown(after, 0) == []


def test_controlled_shutdown_of_a_follower_is_not_done_until_it_leaves_the_isr() -> None:
    image = cluster([((1, 0), (1, 0), 1)])
    assert not rules.controlled_shutdown_done(image, 0)
    after = image.apply_all(rules.begin_controlled_shutdown(image, 0))
    assert leaders_and_isrs(after) == [(1, (1,))]
    assert rules.controlled_shutdown_done(after, 0)


def test_a_broker_in_controlled_shutdown_is_not_elected() -> None:
    image = cluster([((0, 1, 2), (0, 1, 2), 0)], shutting_down=(1,))
    after = image.apply_all(rules.fence(image, 0))
    assert partition(after).leader_id == 2


def test_leave_partitions_keep_unmovable_skips_what_no_other_replica_can_lead() -> None:
    image = shutdown_cluster()
    moved = {c.partition_id for c in rules.leave_partitions(image, 0, keep_unmovable=True)}
    every = {c.partition_id for c in rules.leave_partitions(image, 0)}
    assert (moved, every) == ({0, 3}, {0, 1, 2, 3})


# -- unregistering


def test_unregister_moves_leadership_away_and_removes_the_broker() -> None:
    image = cluster([((0, 1), (0, 1), 0)])
    after = image.apply_all(rules.unregister(image, 0))
    assert after.broker(0) is None
    assert leaders_and_isrs(after) == [(1, (1,))]


# -- placement


SIX_BROKERS_THREE_RACKS = [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]


@pytest.mark.parametrize("seed", range(5))
def test_rack_aware_assignment_puts_a_partitions_replicas_on_distinct_racks(seed: int) -> None:
    rack_of = dict(SIX_BROKERS_THREE_RACKS)
    placement = assign_replicas(SIX_BROKERS_THREE_RACKS, 12, 3, random.Random(seed))
    assert len(placement) == 12
    for replicas in placement:
        assert len(set(replicas)) == 3
        assert len({rack_of[r] for r in replicas}) == 3, replicas


def test_rack_aware_assignment_uses_every_rack_before_repeating_one() -> None:
    brokers = [(0, "a"), (1, "a"), (2, "b"), (3, "b")]
    for replicas in assign_replicas(brokers, 8, 3, random.Random(0)):
        assert len(set(replicas)) == 3
        assert {dict(brokers)[r] for r in replicas} == {"a", "b"}


@pytest.mark.parametrize("seed", range(5))
def test_assignment_spreads_leaders_evenly_over_brokers(seed: int) -> None:
    placement = assign_replicas(SIX_BROKERS_THREE_RACKS, 12, 3, random.Random(seed))
    leaders = Counter(replicas[0] for replicas in placement)
    assert leaders == Counter({b: 2 for b, _rack in SIX_BROKERS_THREE_RACKS})


def test_assignment_without_racks_spreads_leaders_evenly() -> None:
    brokers: list[tuple[int, str | None]] = [(b, None) for b in range(4)]
    placement = assign_replicas(brokers, 8, 2, random.Random(3))
    assert Counter(replicas[0] for replicas in placement) == Counter({0: 2, 1: 2, 2: 2, 3: 2})
    assert all(len(set(replicas)) == 2 for replicas in placement)


def test_replication_factor_above_the_available_brokers_is_refused() -> None:
    image = cluster(brokers=(0, 1, 2), fenced=(2,))
    config = BrokerConfig()
    with pytest.raises(TopicError) as refused:
        create_topic(image, config, random.Random(0), "x", num_partitions=1, replication_factor=3)
    assert refused.value.error_code is ErrorCode.INVALID_REPLICATION_FACTOR
    records = create_topic(
        image, config, random.Random(0), "x", num_partitions=1, replication_factor=2
    )
    topic = image.apply_all(records).topic("x")
    assert topic is not None and set(topic.partitions[0].replicas) == {0, 1}


def test_new_partitions_beyond_the_available_brokers_are_refused() -> None:
    image = cluster([((0, 1, 2), (0, 1, 2), 0)], shutting_down=(2,))
    with pytest.raises(TopicError) as refused:
        create_partitions(image, random.Random(0), TOPIC, 2)
    assert refused.value.error_code is ErrorCode.INVALID_REPLICATION_FACTOR


def test_fenced_or_shutting_down_brokers_get_no_new_replicas() -> None:
    image = cluster(brokers=(0, 1, 2, 3), fenced=(1,), shutting_down=(2,), racks={0: "a", 3: "b"})
    assert placement_brokers(image) == [(0, "a"), (3, "b")]
    records = create_topic(
        image, BrokerConfig(), random.Random(0), "x", num_partitions=6, replication_factor=2
    )
    topic = image.apply_all(records).topic("x")
    assert topic is not None
    assert {r for p in topic.partitions for r in p.replicas} == {0, 3}
    assert all(p.leader_id in (0, 3) and p.isr == p.replicas for p in topic.partitions)
    created = image.apply_all(records)
    grown = created.apply_all(create_partitions(created, random.Random(1), "x", 9)).topic("x")
    assert grown is not None and len(grown.partitions) == 9
    assert {r for p in grown.partitions for r in p.replicas} == {0, 3}
