"""The client's view of the cluster: brokers, controller, topics, partition leaders. No I/O.

`ClusterMetadata.update` folds in a Metadata response. A partition whose reported leader
epoch is older than the one already known keeps the newer information (KIP-320: a lagging
broker's metadata must not move a client back to a deposed leader).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A broker as Metadata or DescribeCluster describes it. `fenced`: registered but not
    serving (only DescribeCluster v2 lists fenced brokers; False wherever it cannot say)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition's placement. `leader` is -1 while it has none."""

    topic: str
    partition: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...]
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic and its partitions by index."""

    name: str
    topic_id: uuid.UUID
    is_internal: bool
    partitions: Mapping[int, PartitionInfo]


class ClusterMetadata:
    """The latest metadata, and the errors reported for topics that could not be described."""

    def __init__(self) -> None:
        self.brokers: dict[int, BrokerInfo] = {}
        self.controller_id = -1
        self.cluster_id: str | None = None
        self.topics: dict[str, TopicInfo] = {}
        self.topic_errors: dict[str, int] = {}
        """Error code per requested topic that came back without usable partitions."""
        self.version = 0
        """Incremented by every update."""
        self.updated_at = float("-inf")
        """Trio clock time of the last update."""

    def update(self, response: Message, now: float, requested: Collection[str] | None) -> None:
        """Fold in a Metadata response to a request for `requested` topics (None: all)."""
        self.brokers = {
            b["node_id"]: BrokerInfo(b["node_id"], b["host"], b["port"], b.get("rack"))
            for b in response["brokers"]
        }
        self.controller_id = response.get("controller_id", -1)
        self.cluster_id = response.get("cluster_id")
        seen: set[str] = set()
        for topic in response["topics"]:
            name = topic["name"]
            if name is None:
                continue
            seen.add(name)
            error = topic["error_code"]
            if error != ErrorCode.NONE and not topic["partitions"]:
                self.topic_errors[name] = error
                if error != ErrorCode.LEADER_NOT_AVAILABLE:
                    self.topics.pop(name, None)
                continue
            self.topic_errors.pop(name, None)
            self.topics[name] = self._topic_info(topic, self.topics.get(name))
        if requested is None:
            for name in list(self.topics):
                if name not in seen:
                    del self.topics[name]
        else:
            for name in requested:
                if name not in seen:
                    self.topic_errors[name] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    self.topics.pop(name, None)
        self.version += 1
        self.updated_at = now

    @staticmethod
    def _topic_info(topic: Message, known: TopicInfo | None) -> TopicInfo:
        name = topic["name"]
        partitions: dict[int, PartitionInfo] = {}
        for p in topic["partitions"]:
            index = p["partition_index"]
            info = PartitionInfo(
                topic=name,
                partition=index,
                leader=p["leader_id"],
                leader_epoch=p.get("leader_epoch", -1),
                replicas=tuple(p["replica_nodes"]),
                isr=tuple(p["isr_nodes"]),
                offline_replicas=tuple(p.get("offline_replicas") or ()),
                error_code=p["error_code"],
            )
            previous = known.partitions.get(index) if known is not None else None
            if (
                previous is not None
                and previous.leader_epoch >= 0
                and 0 <= info.leader_epoch < previous.leader_epoch
            ):
                info = previous
            partitions[index] = info
        return TopicInfo(
            name=name,
            topic_id=topic.get("topic_id") or uuid.UUID(int=0),
            is_internal=bool(topic.get("is_internal", False)),
            partitions=partitions,
        )

    def leader_for(self, tp: TopicPartition) -> int | None:
        """The leader's node id, if the partition has one that we know how to reach."""
        topic = self.topics.get(tp.topic)
        if topic is None:
            return None
        info = topic.partitions.get(tp.partition)
        if info is None or info.leader < 0 or info.leader not in self.brokers:
            return None
        return info.leader

    def leader_epoch(self, tp: TopicPartition) -> int:
        topic = self.topics.get(tp.topic)
        info = topic.partitions.get(tp.partition) if topic is not None else None
        return -1 if info is None else info.leader_epoch

    def partition_count(self, topic: str) -> int | None:
        info = self.topics.get(topic)
        return None if info is None or not info.partitions else len(info.partitions)

    def available_partitions(self, topic: str) -> list[int]:
        """Partitions of `topic` that have a reachable leader."""
        info = self.topics.get(topic)
        if info is None:
            return []
        return [
            p.partition
            for p in info.partitions.values()
            if p.leader >= 0 and p.leader in self.brokers
        ]

    def invalidate_leader(self, tp: TopicPartition) -> None:
        """Forget a partition's leader after it refused to lead (until the next update)."""
        topic = self.topics.get(tp.topic)
        info = topic.partitions.get(tp.partition) if topic is not None else None
        if topic is None or info is None or info.leader < 0:
            return
        partitions = dict(topic.partitions)
        partitions[tp.partition] = PartitionInfo(
            info.topic, info.partition, -1, info.leader_epoch,
            info.replicas, info.isr, info.offline_replicas, info.error_code,
        )  # fmt: skip
        self.topics[tp.topic] = TopicInfo(topic.name, topic.topic_id, topic.is_internal, partitions)
