"""The metadata image: the one place every "who leads what" answer comes from.

`MetadataImage` is an immutable value: the cluster id, the controller, the registered
brokers with their endpoints per listener, and each topic with its partitions' replicas,
ISR, leader and epochs. It changes only by `apply(record)`, which returns a new image and
leaves the old one intact, so a reader holding an image sees one consistent state. The
records are Kafka's metadata record types (`records.py`); on a single node the topic
manager writes them, with a controller quorum its metadata log will.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from tidelog.broker.metadata.records import (
    ConfigRecord,
    Endpoint,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnregisterBrokerRecord,
)

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})

_EMPTY: Mapping[str, str] = MappingProxyType({})


class MetadataError(Exception):
    """A record that does not apply to the image (e.g. a partition of an unknown topic):
    the writer's bug, never the client's."""


@dataclass(frozen=True, slots=True)
class BrokerNode:
    """A registered broker."""

    node_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None = None

    def endpoint(self, listener_name: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.listener_name == listener_name:
                return endpoint
        return None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    """One partition's placement and leadership. `leader_id` is -1 while it has no leader."""

    partition_index: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()
    partition_epoch: int = 0


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """A topic: `partitions[i].partition_index == i`; `configs` are its overrides only
    (Kafka's topic config names, string values as given)."""

    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionMetadata, ...]
    is_internal: bool = False
    configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def partition(self, index: int) -> PartitionMetadata | None:
        if 0 <= index < len(self.partitions):
            return self.partitions[index]
        return None


@dataclass(frozen=True, slots=True)
class MetadataImage:
    """See the module docstring. Build the first one with `MetadataImage.empty`."""

    cluster_id: str
    controller_id: int
    brokers_by_id: Mapping[int, BrokerNode]
    topics_by_name: Mapping[str, TopicMetadata]
    topics_by_id: Mapping[uuid.UUID, TopicMetadata]
    offset: int = 0
    """How many records made this image (the metadata offset once there is a log)."""

    @classmethod
    def empty(cls, cluster_id: str, controller_id: int) -> MetadataImage:
        return cls(cluster_id, controller_id, _frozen({}), _frozen({}), _frozen({}))

    # -- reads

    def brokers(self) -> list[BrokerNode]:
        """Registered brokers by node id."""
        return [self.brokers_by_id[node_id] for node_id in sorted(self.brokers_by_id)]

    def reachable_brokers(self, listener_name: str) -> Iterator[tuple[BrokerNode, Endpoint]]:
        """Brokers with an endpoint on `listener_name` (what clients on that listener can
        reach), by node id."""
        for node in self.brokers():
            endpoint = node.endpoint(listener_name)
            if endpoint is not None:
                yield node, endpoint

    def broker(self, node_id: int) -> BrokerNode | None:
        return self.brokers_by_id.get(node_id)

    def topic(self, name: str) -> TopicMetadata | None:
        return self.topics_by_name.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        return self.topics_by_id.get(topic_id)

    def topics(self) -> Iterator[TopicMetadata]:
        """Every topic, by name."""
        for name in sorted(self.topics_by_name):
            yield self.topics_by_name[name]

    def topic_names(self) -> list[str]:
        return sorted(self.topics_by_name)

    def partition(self, topic: str, index: int) -> PartitionMetadata | None:
        metadata = self.topics_by_name.get(topic)
        return metadata.partition(index) if metadata is not None else None

    def __len__(self) -> int:
        return len(self.topics_by_name)

    # -- changes

    def apply(self, record: MetadataRecord) -> MetadataImage:
        """The image with `record` applied; MetadataError if it does not fit."""
        return self.apply_all((record,))

    def apply_all(self, records: Iterable[MetadataRecord]) -> MetadataImage:
        """The image with `records` applied in order (one copy of the maps for all of
        them); MetadataError if one does not fit, and then this image is unchanged."""
        builder = _Builder(self)
        for record in records:
            builder.apply(record)
        return builder.image()


class _Builder:
    """Mutable copies of an image's maps, applied to record by record, frozen once."""

    def __init__(self, base: MetadataImage) -> None:
        self.base = base
        self.brokers = dict(base.brokers_by_id)
        self.by_name = dict(base.topics_by_name)
        self.by_id = dict(base.topics_by_id)
        self.applied = 0

    def image(self) -> MetadataImage:
        return MetadataImage(
            self.base.cluster_id,
            self.base.controller_id,
            _frozen(self.brokers),
            _frozen(self.by_name),
            _frozen(self.by_id),
            self.base.offset + self.applied,
        )

    def apply(self, record: MetadataRecord) -> None:
        self.applied += 1
        match record:
            case RegisterBrokerRecord():
                node = BrokerNode(record.broker_id, record.endpoints, record.rack)
                self.brokers[node.node_id] = node
            case UnregisterBrokerRecord():
                self.brokers.pop(record.broker_id, None)
            case TopicRecord():
                if record.name in self.by_name or record.topic_id in self.by_id:
                    raise MetadataError(f"topic {record.name} ({record.topic_id}) exists")
                self._put(
                    TopicMetadata(record.name, record.topic_id, (), record.name in INTERNAL_TOPICS)
                )
            case PartitionRecord():
                topic = self._topic_of(record.topic_id)
                if record.partition_id != len(topic.partitions):
                    raise MetadataError(
                        f"topic {topic.name}: partition {record.partition_id} added after "
                        f"{len(topic.partitions)} partitions"
                    )
                partition = PartitionMetadata(
                    partition_index=record.partition_id,
                    leader_id=record.leader,
                    leader_epoch=record.leader_epoch,
                    replicas=record.replicas,
                    isr=record.isr,
                    partition_epoch=record.partition_epoch,
                )
                self._put(dataclasses.replace(topic, partitions=(*topic.partitions, partition)))
            case PartitionChangeRecord():
                topic = self._topic_of(record.topic_id)
                current = topic.partition(record.partition_id)
                if current is None:
                    raise MetadataError(f"topic {topic.name}: no partition {record.partition_id}")
                changed = dataclasses.replace(
                    current,
                    leader_id=current.leader_id if record.leader is None else record.leader,
                    leader_epoch=current.leader_epoch + (record.leader is not None),
                    isr=current.isr if record.isr is None else record.isr,
                    replicas=current.replicas if record.replicas is None else record.replicas,
                    partition_epoch=current.partition_epoch + 1,
                )
                partitions = list(topic.partitions)
                partitions[record.partition_id] = changed
                self._put(dataclasses.replace(topic, partitions=tuple(partitions)))
            case ConfigRecord():
                existing = self.by_name.get(record.topic)
                if existing is None:
                    raise MetadataError(f"config of unknown topic {record.topic}")
                configs = dict(existing.configs)
                if record.value is None:
                    configs.pop(record.name, None)
                else:
                    configs[record.name] = record.value
                self._put(dataclasses.replace(existing, configs=_frozen(configs)))
            case RemoveTopicRecord():
                topic = self._topic_of(record.topic_id)
                del self.by_name[topic.name], self.by_id[topic.topic_id]
            case _:
                raise MetadataError(f"unknown metadata record {record!r}")

    def _topic_of(self, topic_id: uuid.UUID) -> TopicMetadata:
        topic = self.by_id.get(topic_id)
        if topic is None:
            raise MetadataError(f"no topic with id {topic_id}")
        return topic

    def _put(self, topic: TopicMetadata) -> None:
        self.by_name[topic.name] = topic
        self.by_id[topic.topic_id] = topic


K = TypeVar("K")
V = TypeVar("V")


def _frozen(mapping: dict[K, V]) -> Mapping[K, V]:
    return MappingProxyType(mapping)
