"""A metadata image as the records that rebuild it (PURE): the content of a metadata
snapshot, as Kafka's controller writes one (features, brokers, producer ids, configs,
topics with their partitions).

`image_records(image)` applied in order to `MetadataImage.empty(cluster_id, controller_id)`
gives back `image` (its `offset` aside, which the snapshot id carries).
"""

from __future__ import annotations

from collections.abc import Iterator

from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import (
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    TopicRecord,
)
from tidelog.client.protocol.configs import ConfigResourceType

NO_BROKER = -1


def image_records(image: MetadataImage) -> Iterator[MetadataRecord]:
    for name, level in sorted(image.features.items()):
        yield FeatureLevelRecord(name, level)
    for broker in sorted(image.brokers_by_id.values(), key=lambda b: b.node_id):
        yield RegisterBrokerRecord(
            broker.node_id,
            broker.endpoints,
            broker.rack,
            broker.broker_epoch,
            broker.incarnation_id,
            broker.features,
            broker.fenced,
            broker.in_controlled_shutdown,
            log_dirs=broker.log_dirs,
        )
    if image.next_producer_id >= 0:
        yield ProducerIdsRecord(NO_BROKER, -1, image.next_producer_id)
    for (resource_type, resource_name), configs in sorted(image.resource_configs.items()):
        for key, value in sorted(configs.items()):
            yield ConfigRecord(resource_type, resource_name, key, value)
    for topic in sorted(image.topics_by_name.values(), key=lambda t: t.name):
        yield TopicRecord(topic.name, topic.topic_id)
        for p in topic.partitions:
            yield PartitionRecord(
                topic.topic_id,
                p.partition_index,
                p.replicas,
                p.isr,
                p.leader_id,
                p.leader_epoch,
                p.partition_epoch,
                p.removing_replicas,
                p.adding_replicas,
                p.leader_recovery_state,
                p.directories,
                p.eligible_leader_replicas or None,
                p.last_known_elr or None,
            )
        for key, value in sorted(topic.configs.items()):
            yield ConfigRecord(ConfigResourceType.TOPIC, topic.name, key, value)
