"""The metadata image: immutable, changed only by records; deltas per node; the publisher."""

from __future__ import annotations

import uuid

import pytest

from tidelog.broker.metadata.delta import LocalChanges
from tidelog.broker.metadata.image import MetadataError, MetadataImage
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.metadata.records import (
    ConfigRecord,
    Endpoint,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
)

TOPIC_ID = uuid.UUID(int=7)


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
            ConfigRecord("orders", "retention.ms", "1000"),
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
    assert [n.node_id for n, _ in image.reachable_brokers("PLAINTEXT")] == [0]
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
        ConfigRecord("absent", "retention.ms", "1"),
    ):
        # The batch fails whole: the config change before the bad record is not applied either.
        with pytest.raises(MetadataError):
            image.apply_all([ConfigRecord("orders", "retention.ms", "5"), record])
        topic = image.topic("orders")
        assert topic is not None and dict(topic.configs) == {"retention.ms": "1000"}


def test_config_record_with_no_value_removes_the_override() -> None:
    image = with_topic().apply(ConfigRecord("orders", "retention.ms", None))
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
    reconfigured = after.apply(ConfigRecord("orders", "segment.ms", "5"))
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
