"""What changed between two metadata images, for one node.

`LocalChanges.between(old, new, node_id)` answers what the replica manager and the group
service need to act on:

- `leaders`: partitions this node now leads whose leadership is new or changed (new
  partition, new leader epoch, or new partition epoch: an ISR or replica change);
- `followers`: likewise for partitions where this node is a replica but not the leader (or
  no leader is elected: it keeps its log and serves neither produce nor fetch);
- `removed`: partitions this node held a replica of in `old` and does not in `new` (the
  topic was deleted, or the replica moved away): their logs are to be deleted;
- `configs_changed`: topics this node hosts whose config overrides differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidelog.broker.metadata.image import MetadataImage, PartitionMetadata, TopicMetadata

PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LocalPartitionChange:
    topic: TopicMetadata
    partition: PartitionMetadata

    @property
    def key(self) -> PartitionKey:
        return (self.topic.name, self.partition.partition_index)


@dataclass(frozen=True, slots=True)
class LocalChanges:
    """See the module docstring."""

    leaders: tuple[LocalPartitionChange, ...]
    followers: tuple[LocalPartitionChange, ...]
    removed: tuple[PartitionKey, ...]
    configs_changed: tuple[TopicMetadata, ...]

    @property
    def empty(self) -> bool:
        return not (self.leaders or self.followers or self.removed or self.configs_changed)

    @classmethod
    def between(cls, old: MetadataImage, new: MetadataImage, node_id: int) -> LocalChanges:
        leaders: list[LocalPartitionChange] = []
        followers: list[LocalPartitionChange] = []
        removed: list[PartitionKey] = []
        configs_changed: list[TopicMetadata] = []
        for topic in new.topics():
            before = old.topic_by_id(topic.topic_id)
            hosted = False
            for partition in topic.partitions:
                if node_id not in partition.replicas:
                    continue
                hosted = True
                previous = before.partition(partition.partition_index) if before else None
                if previous == partition:
                    continue
                change = LocalPartitionChange(topic, partition)
                (leaders if partition.leader_id == node_id else followers).append(change)
            if hosted and before is not None and before.configs != topic.configs:
                configs_changed.append(topic)
        for topic in old.topics():
            after = new.topic_by_id(topic.topic_id)
            for partition in topic.partitions:
                if node_id not in partition.replicas:
                    continue
                now = after.partition(partition.partition_index) if after else None
                if now is None or node_id not in now.replicas:
                    removed.append((topic.name, partition.partition_index))
        return cls(tuple(leaders), tuple(followers), tuple(removed), tuple(configs_changed))
