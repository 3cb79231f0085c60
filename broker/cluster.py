"""The cluster metadata image: the one place Metadata (and every "who leads what") answers
come from.

`Cluster` is a read model: cluster id, the brokers with their advertised endpoints per
listener, the controller, and each topic with its partitions' leader, leader epoch,
replicas, ISR and offline replicas. It holds immutable snapshots (`TopicMetadata`,
`PartitionMetadata`) that writers replace whole. Today the writer is the single-node
`TopicManager`; with replication and a Raft controller, the controller's metadata log
drives the same `put_topic` / `remove_topic` / `put_broker` calls, and readers do not change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where clients reach a broker on one listener."""

    listener_name: str
    host: str
    port: int


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


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """A topic: `partitions[i].partition_index == i`; `configs` are its overrides only
    (Kafka's topic config names, string values as given at creation)."""

    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionMetadata, ...]
    is_internal: bool = False
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def partition(self, index: int) -> PartitionMetadata | None:
        if 0 <= index < len(self.partitions):
            return self.partitions[index]
        return None


class Cluster:
    """The current metadata image. Mutated only by its writer (see module docstring)."""

    def __init__(self, cluster_id: str, controller_id: int) -> None:
        self.cluster_id = cluster_id
        self.controller_id = controller_id
        self._brokers: dict[int, BrokerNode] = {}
        self._topics: dict[str, TopicMetadata] = {}
        self._topics_by_id: dict[uuid.UUID, TopicMetadata] = {}

    # -- reads

    def brokers(self) -> list[BrokerNode]:
        """Registered brokers by node id."""
        return [self._brokers[node_id] for node_id in sorted(self._brokers)]

    def reachable_brokers(self, listener_name: str) -> Iterator[tuple[BrokerNode, Endpoint]]:
        """Brokers with an endpoint on `listener_name` (what clients on that listener can
        reach), by node id."""
        for node in self.brokers():
            endpoint = node.endpoint(listener_name)
            if endpoint is not None:
                yield node, endpoint

    def broker(self, node_id: int) -> BrokerNode | None:
        return self._brokers.get(node_id)

    def topic(self, name: str) -> TopicMetadata | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        return self._topics_by_id.get(topic_id)

    def topics(self) -> Iterator[TopicMetadata]:
        """Every topic, by name."""
        for name in sorted(self._topics):
            yield self._topics[name]

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def __len__(self) -> int:
        return len(self._topics)

    # -- writes

    def put_broker(self, node: BrokerNode) -> None:
        self._brokers[node.node_id] = node

    def remove_broker(self, node_id: int) -> None:
        self._brokers.pop(node_id, None)

    def put_topic(self, topic: TopicMetadata) -> None:
        """Add or replace a topic; a name keeps its id for as long as the topic exists."""
        existing = self._topics.get(topic.name)
        if existing is not None and existing.topic_id != topic.topic_id:
            raise ValueError(
                f"topic {topic.name} exists with id {existing.topic_id}, not {topic.topic_id}"
            )
        if topic.topic_id in self._topics_by_id and existing is None:
            raise ValueError(f"topic id {topic.topic_id} already names another topic")
        for i, partition in enumerate(topic.partitions):
            if partition.partition_index != i:
                raise ValueError(
                    f"topic {topic.name}: partition {i} has index {partition.partition_index}"
                )
        self._topics[topic.name] = topic
        self._topics_by_id[topic.topic_id] = topic

    def remove_topic(self, name: str) -> TopicMetadata | None:
        topic = self._topics.pop(name, None)
        if topic is not None:
            del self._topics_by_id[topic.topic_id]
        return topic
