"""Broker lifecycle and partition leadership rules of the active controller (PURE): the
current image in, metadata records out, as Kafka's ClusterControlManager and
ReplicationControlManager decide them.

- A broker is *usable* as a leader when it is registered, unfenced and not shutting down.
- Fencing a broker (its session expired) moves the leadership of every partition it leads
  to another usable in-sync replica and takes it out of each ISR it is in, unless it is the
  last member: the last in-sync replica stays in the ISR (KIP-841), so that it can lead
  again once it is back, and the partition has no leader meanwhile.
- A controlled shutdown does the same for the partitions that another usable in-sync
  replica can lead, and leaves the others as they are: it is done when nothing is left
  that could move (a broker that shuts down alone keeps its partitions until it is back).
- Unfencing a broker elects a leader for each leaderless partition that it can lead.
- A leader is the first usable replica of the assignment that is in sync; with the topic's
  `unclean.leader.election.enable` and no usable in-sync replica, the first usable replica,
  which then is the whole ISR, its partition RECOVERING (KIP-704), as in Kafka.
- ElectLeaders (`elect_leaders`, KIP-460): a *preferred* election gives the lead back to
  the first replica of the assignment when it is usable and in sync (ELECTION_NOT_NEEDED if
  it leads already, PREFERRED_LEADER_NOT_AVAILABLE if it cannot); an *unclean* one elects
  a leader only for a partition that has none, from the ISR if it can, else the first usable
  replica (ELECTION_NOT_NEEDED if it has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE if no
  replica is usable). Asked for every partition (None), only the partitions where an
  election was needed are answered, as Kafka's controller does. The periodic leader
  rebalance is a preferred election of every partition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from tidelog.broker.metadata.image import MetadataImage, PartitionMetadata, TopicMetadata
from tidelog.broker.metadata.records import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    NO_LEADER_RECOVERY_STATE_CHANGE,
    BrokerRegistrationChangeRecord,
    ControlledShutdownChange,
    FencingChange,
    LeaderRecoveryState,
    MetadataRecord,
    PartitionChangeRecord,
    UnregisterBrokerRecord,
)
from tidelog.client.protocol.errors import ErrorCode

UNCLEAN_LEADER_ELECTION = "unclean.leader.election.enable"
PREFERRED_ELECTION = 0
UNCLEAN_ELECTION = 1

ElectionResult = tuple[ErrorCode, str | None]


def usable_brokers(image: MetadataImage) -> set[int]:
    return {b.node_id for b in image.brokers() if not b.fenced and not b.in_controlled_shutdown}


def elect_leader(
    topic: TopicMetadata, partition: PartitionMetadata, usable: Collection[int]
) -> int:
    """The replica that should lead (NO_LEADER if none can), as the module docstring says."""
    for replica in partition.replicas:
        if replica in usable and replica in partition.isr:
            return replica
    if topic.configs.get(UNCLEAN_LEADER_ELECTION, "false").lower() == "true":
        for replica in partition.replicas:
            if replica in usable:
                return replica
    return NO_LEADER


def elect_leaders(
    image: MetadataImage, election_type: int, targets: Collection[tuple[str, int]] | None
) -> tuple[list[MetadataRecord], dict[tuple[str, int], ElectionResult]]:
    """The records of an ElectLeaders request and each partition's result (module
    docstring); `targets` None means every partition."""
    usable = usable_brokers(image)
    records: list[MetadataRecord] = []
    results: dict[tuple[str, int], ElectionResult] = {}
    wanted = (
        [(t.name, p.partition_index) for t in image.topics() for p in t.partitions]
        if targets is None
        else list(dict.fromkeys(targets))
    )
    for name, index in wanted:
        topic = image.topic(name)
        partition = topic.partition(index) if topic is not None else None
        if topic is None or partition is None:
            results[(name, index)] = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None)
            continue
        if election_type == PREFERRED_ELECTION:
            result, leader = _preferred(partition, usable)
        else:
            result, leader = _unclean(topic, partition, usable)
        if leader != NO_LEADER:
            records.append(_election(topic, partition, leader, partition.isr))
        if targets is not None or result[0] is not ErrorCode.ELECTION_NOT_NEEDED:
            results[(name, index)] = result
    return records, results


def _preferred(partition: PartitionMetadata, usable: Collection[int]) -> tuple[ElectionResult, int]:
    preferred = partition.replicas[0] if partition.replicas else NO_LEADER
    if preferred == partition.leader_id:
        return (ErrorCode.ELECTION_NOT_NEEDED, "the preferred replica leads already"), NO_LEADER
    if preferred not in usable or preferred not in partition.isr:
        message = f"the preferred replica {preferred} is not alive and in sync"
        return (ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, message), NO_LEADER
    return (ErrorCode.NONE, None), preferred


def _unclean(
    topic: TopicMetadata, partition: PartitionMetadata, usable: Collection[int]
) -> tuple[ElectionResult, int]:
    if partition.leader_id != NO_LEADER:
        return (ErrorCode.ELECTION_NOT_NEEDED, "the partition has a leader"), NO_LEADER
    leader = elect_leader(topic, partition, usable)
    if leader == NO_LEADER:
        leader = next((r for r in partition.replicas if r in usable), NO_LEADER)
    if leader == NO_LEADER:
        message = "no replica of the partition is alive"
        return (ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE, message), NO_LEADER
    return (ErrorCode.NONE, None), leader


def unfence(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    """Unfence a registered, fenced broker and elect it where a partition has no leader."""
    broker = image.broker(broker_id)
    assert broker is not None and broker.fenced
    records: list[MetadataRecord] = [
        BrokerRegistrationChangeRecord(broker_id, broker.broker_epoch, fenced=FencingChange.UNFENCE)
    ]
    usable = usable_brokers(image) | {broker_id}
    for topic in image.topics():
        for partition in topic.partitions:
            if partition.leader_id != NO_LEADER or broker_id not in partition.replicas:
                continue
            leader = elect_leader(topic, partition, usable)
            if leader != NO_LEADER:
                records.append(_election(topic, partition, leader, partition.isr))
    return records


def _election(
    topic: TopicMetadata, partition: PartitionMetadata, leader: int, isr: tuple[int, ...]
) -> PartitionChangeRecord:
    """The change that makes `leader` lead with `isr` (an unclean one: see the module
    docstring); the ISR field is left out when it does not change."""
    recovery = NO_LEADER_RECOVERY_STATE_CHANGE
    if leader not in (NO_LEADER, NO_LEADER_CHANGE) and leader not in isr:
        isr, recovery = (leader,), LeaderRecoveryState.RECOVERING
    return PartitionChangeRecord(
        topic.topic_id,
        partition.partition_index,
        leader=leader,
        isr=isr if isr != partition.isr else None,
        leader_recovery_state=recovery,
    )


def fence(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    """Fence a registered broker and move its leaderships and ISR memberships away."""
    broker = image.broker(broker_id)
    assert broker is not None
    records: list[MetadataRecord] = [
        BrokerRegistrationChangeRecord(broker_id, broker.broker_epoch, fenced=FencingChange.FENCE)
    ]
    records.extend(leave_partitions(image, broker_id))
    return records


def begin_controlled_shutdown(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    broker = image.broker(broker_id)
    assert broker is not None
    records: list[MetadataRecord] = []
    if not broker.in_controlled_shutdown:
        records.append(
            BrokerRegistrationChangeRecord(
                broker_id,
                broker.broker_epoch,
                in_controlled_shutdown=ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN,
            )
        )
    records.extend(leave_partitions(image, broker_id, keep_unmovable=True))
    return records


def controlled_shutdown_done(image: MetadataImage, broker_id: int) -> bool:
    """Whether a controlled shutdown has nothing left to move (module docstring)."""
    return not leave_partitions(image, broker_id, keep_unmovable=True)


def unregister(image: MetadataImage, broker_id: int) -> list[MetadataRecord]:
    broker = image.broker(broker_id)
    assert broker is not None
    records: list[MetadataRecord] = list(leave_partitions(image, broker_id))
    records.append(UnregisterBrokerRecord(broker_id, broker.broker_epoch))
    return records


def leave_partitions(
    image: MetadataImage, broker_id: int, *, keep_unmovable: bool = False
) -> list[PartitionChangeRecord]:
    """The changes that take `broker_id` out of leadership and (but for the last member) out
    of the ISR of every partition (module docstring); with `keep_unmovable`, of those only
    where another replica can lead."""
    usable = usable_brokers(image) - {broker_id}
    changes = []
    for topic in image.topics():
        for partition in topic.partitions:
            in_isr = broker_id in partition.isr
            if partition.leader_id != broker_id and not (in_isr and len(partition.isr) > 1):
                continue
            isr = partition.isr
            if in_isr and len(isr) > 1:
                isr = tuple(r for r in isr if r != broker_id)
            shrunk = partition if isr == partition.isr else _with_isr(partition, isr)
            leader = NO_LEADER_CHANGE
            if partition.leader_id == broker_id:
                leader = elect_leader(topic, shrunk, usable)
                if leader == NO_LEADER and keep_unmovable:
                    continue
            changes.append(_election(topic, partition, leader, isr))
    return changes


def _with_isr(partition: PartitionMetadata, isr: tuple[int, ...]) -> PartitionMetadata:
    return dataclasses.replace(partition, isr=isr)
