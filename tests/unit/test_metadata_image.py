"""The metadata image: immutable, changed only by records; deltas per node; the publisher."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from tidelog.broker.metadata.delta import LocalChanges
from tidelog.broker.metadata.image import MetadataError, MetadataImage
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.metadata.records import (
    NO_LEADER,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ControlledShutdownChange,
    Endpoint,
    FeatureLevelRecord,
    FenceBrokerRecord,
    FencingChange,
    LeaderRecoveryState,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
    unfenced_registration,
)
from tidelog.client.protocol.configs import ConfigResourceType

TOPIC_ID = uuid.UUID(int=7)
TOPIC = ConfigResourceType.TOPIC


def with_topic(replicas: tuple[tuple[int, ...], ...] = ((0, 1), (1, 0))) -> MetadataImage:
    image = MetadataImage.empty("cluster", controller_id=0)
    return image.apply_all(
        [
            RegisterBrokerRecord(0, (Endpoint("PLAINTEXT", "h0", 9092),)),
            RegisterBrokerRecord(1, (), rack="r1"),
            TopicRecord("orders", TOPIC_ID),
            *(
                PartitionRecord(TOPIC_ID, index, r, r, leader=r[0])
                for index, r in enumerate(replicas)
            ),
            ConfigRecord(TOPIC, "orders", "retention.ms", "1000"),
        ]
    )


def test_applying_records_builds_a_new_image_and_leaves_the_old_one() -> None:
    empty = MetadataImage.empty("cluster", controller_id=0)
    image = with_topic()
    assert len(empty) == 0 and empty.brokers() == []
    topic = image.topic("orders")
    assert topic is not None and image.topic_by_id(TOPIC_ID) is topic
    assert [p.leader_id for p in topic.partitions] == [0, 1]
    assert dict(topic.configs) == {"retention.ms": "1000"}
    assert [b.node_id for b in image.brokers()] == [0, 1]
    # Broker 1 has no PLAINTEXT endpoint; broker 0, registered fenced, is shown on request.
    assert list(image.reachable_brokers("PLAINTEXT")) == []
    assert [n.node_id for n, _ in image.reachable_brokers("PLAINTEXT", include_fenced=True)] == [0]
    assert image.offset == 6
    with pytest.raises(TypeError):
        image.topics_by_name["x"] = topic  # type: ignore[index]


def test_partition_change_bumps_epochs_as_kafka_does() -> None:
    image = with_topic()
    isr_only = image.apply(PartitionChangeRecord(TOPIC_ID, 0, isr=(0,)))
    p = isr_only.partition("orders", 0)
    assert p is not None and (p.leader_id, p.leader_epoch, p.partition_epoch, p.isr) == (
        0, 0, 1, (0,),
    )  # fmt: skip
    moved = isr_only.apply(PartitionChangeRecord(TOPIC_ID, 0, leader=1))
    p = moved.partition("orders", 0)
    assert p is not None and (p.leader_id, p.leader_epoch, p.partition_epoch) == (1, 1, 2)


def test_records_that_do_not_fit_are_refused_and_change_nothing() -> None:
    image = with_topic()
    for record in (
        TopicRecord("orders", uuid.UUID(int=8)),
        PartitionRecord(TOPIC_ID, 5, (0,), (0,), 0),
        PartitionChangeRecord(uuid.UUID(int=9), 0, leader=0),
        ConfigRecord(TOPIC, "absent", "retention.ms", "1"),
    ):
        # The batch fails whole: the config change before the bad record is not applied either.
        with pytest.raises(MetadataError):
            image.apply_all([ConfigRecord(TOPIC, "orders", "retention.ms", "5"), record])
        topic = image.topic("orders")
        assert topic is not None and dict(topic.configs) == {"retention.ms": "1000"}


def test_config_record_with_no_value_removes_the_override() -> None:
    image = with_topic().apply(ConfigRecord(TOPIC, "orders", "retention.ms", None))
    topic = image.topic("orders")
    assert topic is not None and dict(topic.configs) == {}


def test_local_changes_say_what_each_node_must_do() -> None:
    before = MetadataImage.empty("cluster", controller_id=0)
    after = with_topic()
    for node_id, leads, follows in ((0, [0], [1]), (1, [1], [0]), (2, [], [])):
        changes = LocalChanges.between(before, after, node_id)
        assert [c.partition.partition_index for c in changes.leaders] == leads
        assert [c.partition.partition_index for c in changes.followers] == follows
        assert changes.removed == ()
    unchanged = after.apply(RegisterBrokerRecord(2, ()))
    assert LocalChanges.between(after, unchanged, 0).empty
    moved = after.apply(PartitionChangeRecord(TOPIC_ID, 1, leader=0, isr=(0,)))
    changes = LocalChanges.between(after, moved, 0)
    assert [c.key for c in changes.leaders] == [("orders", 1)] and changes.followers == ()
    reconfigured = after.apply(ConfigRecord(TOPIC, "orders", "segment.ms", "5"))
    assert [t.name for t in LocalChanges.between(after, reconfigured, 1).configs_changed] == [
        "orders"
    ]
    gone = after.apply(RemoveTopicRecord(TOPIC_ID))
    assert LocalChanges.between(after, gone, 1).removed == (("orders", 0), ("orders", 1))
    away = after.apply(PartitionChangeRecord(TOPIC_ID, 0, replicas=(0,), isr=(0,)))
    assert LocalChanges.between(after, away, 1).removed == (("orders", 0),)


def test_publisher_tells_subscribers_in_order_and_keeps_the_image_on_error() -> None:
    seen: list[tuple[str, int]] = []

    class Subscriber:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_metadata_update(self, changes: LocalChanges, image: MetadataImage) -> None:
            seen.append((self.name, len(changes.leaders)))

    publisher = MetadataPublisher(MetadataImage.empty("cluster", 0), node_id=0)
    publisher.subscribe(Subscriber("replicas"))
    publisher.subscribe(Subscriber("groups"))
    changes = publisher.publish(
        [TopicRecord("t", TOPIC_ID), PartitionRecord(TOPIC_ID, 0, (0,), (0,), 0)]
    )
    assert [c.key for c in changes.leaders] == [("t", 0)]
    assert seen == [("replicas", 1), ("groups", 1)]
    image = publisher.image
    with pytest.raises(MetadataError):
        publisher.publish([TopicRecord("t", TOPIC_ID)])
    assert publisher.image is image and len(seen) == 2


def test_brokers_register_fenced_and_change_only_at_their_epoch() -> None:
    incarnation = uuid.UUID(int=42)
    image = MetadataImage.empty("cluster", 0).apply(
        RegisterBrokerRecord(3, (), broker_epoch=10, incarnation_id=incarnation)
    )
    node = image.broker(3)
    assert node is not None and node.fenced and (node.broker_epoch, node.incarnation_id) == (
        10, incarnation,
    )  # fmt: skip
    assert image.unfenced_brokers() == []
    unfenced = image.apply(UnfenceBrokerRecord(3, 10))
    assert [b.node_id for b in unfenced.unfenced_brokers()] == [3]
    fenced = unfenced.apply(FenceBrokerRecord(3, 10))
    assert fenced.broker(3) == node
    for wrong in (
        UnfenceBrokerRecord(3, 9),
        FenceBrokerRecord(4, 10),
        BrokerRegistrationChangeRecord(3, 11, fenced=FencingChange.UNFENCE),
        BrokerRegistrationChangeRecord(3, 10, fenced=2),
        BrokerRegistrationChangeRecord(3, 10, in_controlled_shutdown=5),
        UnregisterBrokerRecord(3, 9),
        UnregisterBrokerRecord(4, 10),
    ):
        with pytest.raises(MetadataError):
            image.apply(wrong)
    assert unfenced.apply(UnregisterBrokerRecord(3, 10)).brokers() == []
    # Re-registration replaces the broker: a new epoch, fenced again.
    again = unfenced.apply(RegisterBrokerRecord(3, (), broker_epoch=20))
    node = again.broker(3)
    assert node is not None and node.fenced and node.broker_epoch == 20


def test_broker_registration_change_fences_unfences_and_sets_controlled_shutdown() -> None:
    register, unfence = unfenced_registration(1, 5, uuid.UUID(int=1), rack="r")
    image = MetadataImage.empty("cluster", 0).apply_all([register, unfence])
    node = image.broker(1)
    assert register.fenced and node is not None and not node.fenced and node.rack == "r"
    log_dir = uuid.UUID(int=77)
    changed = image.apply(
        BrokerRegistrationChangeRecord(
            1, 5, fenced=FencingChange.FENCE,
            in_controlled_shutdown=ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN,
            log_dirs=(log_dir,),
        )
    )  # fmt: skip
    node = changed.broker(1)
    assert node is not None and node.fenced and node.in_controlled_shutdown
    assert node.log_dirs == (log_dir,)
    kept = changed.apply(BrokerRegistrationChangeRecord(1, 5))  # all "no change"
    assert kept.broker(1) == node


def test_feature_levels_producer_ids_and_no_ops() -> None:
    image = MetadataImage.empty("cluster", 0)
    assert image.feature_level("metadata.version") == 0 and image.next_producer_id == -1
    image = image.apply_all(
        [
            FeatureLevelRecord("metadata.version", 27),
            FeatureLevelRecord("kraft.version", 1),
            FeatureLevelRecord("kraft.version", 0),  # level 0: the feature is off
            ProducerIdsRecord(broker_id=0, broker_epoch=3, next_producer_id=1000),
        ]
    )
    assert dict(image.features) == {"metadata.version": 27}
    assert image.next_producer_id == 1000
    with pytest.raises(MetadataError):
        image.apply(ProducerIdsRecord(0, 3, 1000))  # must move forward
    after = image.apply(NoOpRecord())
    assert after.offset == image.offset + 1
    assert dataclasses.replace(after, offset=image.offset) == image


def test_configs_of_other_resources_are_kept_apart_from_topics() -> None:
    broker = ConfigResourceType.BROKER
    image = with_topic().apply_all(
        [
            ConfigRecord(broker, "0", "log.retention.ms", "5"),
            ConfigRecord(broker, "", "log.retention.ms", "9"),
        ]
    )
    assert {k: dict(v) for k, v in image.resource_configs.items()} == {
        (broker, "0"): {"log.retention.ms": "5"},
        (broker, ""): {"log.retention.ms": "9"},
    }
    removed = image.apply(ConfigRecord(broker, "0", "log.retention.ms", None))
    assert list(removed.resource_configs) == [(broker, "")]
    topic = removed.topic("orders")
    assert topic is not None and dict(topic.configs) == {"retention.ms": "1000"}


def test_partition_change_merges_every_field_as_kafka_does() -> None:
    image = with_topic()
    changed = image.apply(
        PartitionChangeRecord(
            TOPIC_ID, 0, leader=NO_LEADER, removing_replicas=(1,), adding_replicas=(2,),
            leader_recovery_state=LeaderRecoveryState.RECOVERING,
            eligible_leader_replicas=(1,), last_known_elr=(0,),
        )
    )  # fmt: skip
    p = changed.partition("orders", 0)
    assert p is not None
    assert (p.leader_id, p.leader_epoch, p.partition_epoch) == (NO_LEADER, 1, 1)
    assert (p.removing_replicas, p.adding_replicas) == ((1,), (2,))
    assert p.leader_recovery_state == LeaderRecoveryState.RECOVERING
    assert (p.eligible_leader_replicas, p.last_known_elr) == ((1,), (0,))
    assert (p.replicas, p.isr) == ((0, 1), (0, 1))
    kept = changed.apply(PartitionChangeRecord(TOPIC_ID, 0))  # nothing but the epoch
    q = kept.partition("orders", 0)
    assert q is not None and dataclasses.replace(q, partition_epoch=1) == p


def test_clients_are_given_a_live_broker_as_controller() -> None:
    def endpoint(i: int) -> tuple[Endpoint, ...]:
        return (Endpoint("PLAINTEXT", f"h{i}", 9092),)

    image = MetadataImage.empty("cluster", controller_id=3).apply_all(
        [
            record
            for i in (1, 2, 3)
            for record in unfenced_registration(i, i, uuid.UUID(int=i), endpoint(i))
        ]
    )
    assert image.controller_for_clients("PLAINTEXT", this_node=2) == 2
    assert image.controller_for_clients("PLAINTEXT", this_node=9) == 3  # a controller-only node
    fenced = image.apply_all([FenceBrokerRecord(3, 3)])
    assert fenced.controller_for_clients("PLAINTEXT", this_node=9) == 1  # the lowest live one
    assert fenced.controller_for_clients("OTHER", this_node=2) == -1  # none reachable there
