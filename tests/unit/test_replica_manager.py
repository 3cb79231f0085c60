"""The replica manager following the image, over a real log directory in memory: a
restarted broker leads nothing until the image registers its own incarnation, and a
follower's last fetched epoch is that of its last batch."""

from __future__ import annotations

import uuid

from tidelog.broker.config import BrokerConfig
from tidelog.broker.metadata.delta import LocalChanges
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import (
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
    unfenced_registration,
)
from tidelog.broker.replica_manager import ReplicaManager
from tidelog.client.protocol.records import RecordInput, encode_batch
from tidelog.storage.filesystem import MemoryFileSystem
from tidelog.storage.log_directory import LogDirectory

TOPIC = "t"
TOPIC_ID = uuid.UUID(int=1)
OLD_PROCESS = uuid.UUID(int=10)
THIS_PROCESS = uuid.UUID(int=11)


def manager(incarnation_id: uuid.UUID | None = THIS_PROCESS) -> ReplicaManager:
    fs = MemoryFileSystem(seed=0)
    directory = LogDirectory.open("/data", fs, lambda: 0)
    config = BrokerConfig(node_id=1, data_dir="/data")
    return ReplicaManager(config, directory, now_ms=lambda: 0, incarnation_id=incarnation_id)


def publish(
    replicas: ReplicaManager, old: MetadataImage, records: list[MetadataRecord]
) -> MetadataImage:
    new = old.apply_all(records)
    replicas.on_metadata_update(LocalChanges.between(old, new, replicas.node_id), new)
    return new


def led_by_node_1(incarnation: uuid.UUID) -> list[MetadataRecord]:
    """Brokers 1 and 2 unfenced (1 as `incarnation`); partition 0 led by 1 in epoch 3."""
    return [
        *unfenced_registration(1, 5, incarnation),
        *unfenced_registration(2, 6, uuid.UUID(int=20)),
        TopicRecord(TOPIC, TOPIC_ID),
        PartitionRecord(TOPIC_ID, 0, (1, 2), (1, 2), leader=1, leader_epoch=3),
    ]


def test_a_restart_does_not_lead_the_old_process_epoch_until_its_own_registration() -> None:
    replicas = manager()
    empty = MetadataImage.empty("cluster", controller_id=1)
    # The replayed metadata log: the previous process leads partition 0 in epoch 3.
    replayed = publish(replicas, empty, led_by_node_1(OLD_PROCESS))
    partition = replicas.partition(TOPIC, 0)
    assert partition is not None
    assert not partition.state.is_leader and partition.state.leader_id == -1
    assert partition.state.leader_epoch == 3
    # This process registers: the controller moves the leadership to 2 (epoch 4) ...
    registered = publish(
        replicas,
        replayed,
        [
            RegisterBrokerRecord(1, broker_epoch=40, incarnation_id=THIS_PROCESS, fenced=True),
            PartitionChangeRecord(TOPIC_ID, 0, leader=2, isr=(2,)),
        ],
    )
    assert partition.state.leader_id == 2 and partition.state.leader_epoch == 4
    # ... and gives it back once it is in sync again, in a new epoch that it does lead.
    publish(replicas, registered, [PartitionChangeRecord(TOPIC_ID, 0, leader=1, isr=(2, 1))])
    assert partition.state.is_leader and partition.state.leader_epoch == 5


def test_leaderships_of_the_registered_process_are_taken_even_if_unchanged() -> None:
    replicas = manager()
    empty = MetadataImage.empty("cluster", controller_id=1)
    replayed = publish(replicas, empty, led_by_node_1(THIS_PROCESS)[2:])
    partition = replicas.partition(TOPIC, 0)
    assert partition is not None and not partition.state.is_leader
    # The registration (of this process) arrives in an image where the partition did not
    # change: it is led now, withheld until then.
    publish(replicas, replayed, list(led_by_node_1(THIS_PROCESS)[:4]))
    assert partition.state.is_leader and partition.state.leader_epoch == 3


def test_without_an_incarnation_leaderships_are_taken_as_the_image_gives_them() -> None:
    replicas = manager(incarnation_id=None)
    publish(replicas, MetadataImage.empty("cluster", controller_id=1), led_by_node_1(OLD_PROCESS))
    partition = replicas.partition(TOPIC, 0)
    assert partition is not None and partition.state.is_leader


def test_an_epoch_taken_at_the_log_end_without_a_batch_is_not_the_last_fetched_epoch() -> None:
    replicas = manager(incarnation_id=None)
    image = publish(
        replicas, MetadataImage.empty("cluster", controller_id=1), led_by_node_1(OLD_PROCESS)
    )
    partition = replicas.partition(TOPIC, 0)
    assert partition is not None
    partition.log.append(encode_batch([RecordInput(value=b"a")]), leader_epoch=3)
    assert partition.latest_epoch == 3
    # Leader again in epoch 4 (its epoch starts at the log end) and gone before any append:
    image = publish(replicas, image, [PartitionChangeRecord(TOPIC_ID, 0, leader=2)])
    image = publish(replicas, image, [PartitionChangeRecord(TOPIC_ID, 0, leader=1)])
    image = publish(replicas, image, [PartitionChangeRecord(TOPIC_ID, 0, leader=2)])
    assert partition.log.latest_epoch == 5 and partition.log.log_end_offset == 1
    # Its last batch is of epoch 3: that is what it fetches with, which the new leader
    # (which never had epoch 5) finds consistent, instead of a divergence at the log end.
    assert partition.latest_epoch == 3
