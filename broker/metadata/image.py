"""The metadata image: the one place every "who leads what" answer comes from.

`MetadataImage` is an immutable value: the cluster id, the controller, the registered
brokers (endpoints per listener, epoch, incarnation, fencing), each topic with its
partitions' replicas, ISR, leader and epochs, the finalized feature levels, the next
producer id block and the configs of other resources. It changes only by `apply(record)`,
which returns a new image and leaves the old one intact, so a reader holding an image sees
one consistent state. The records are Kafka's metadata record types (`records.py`); on a
single node the topic manager writes them, with a controller quorum its metadata log will.

Records are applied as Kafka's controller replays them (ClusterControlManager,
ReplicationControlManager, ...), refusing with MetadataError what Kafka refuses:

- RegisterBrokerRecord adds or replaces a broker, fenced unless it says otherwise; Fence /
  Unfence / BrokerRegistrationChange / UnregisterBrokerRecord need a registered broker
  with the same broker epoch. BrokerRegistrationChange's `fenced` is -1 unfence, 0 keep,
  1 fence; `in_controlled_shutdown` 0 keep, 1 set; non-empty `log_dirs` replace them.
- PartitionChangeRecord: a leader other than NO_LEADER_CHANGE bumps the leader epoch; every
  change bumps the partition epoch.
- ConfigRecord of a topic needs the topic (its configs live with it and go with it); other
  resource types are kept in `resource_configs`.
- FeatureLevelRecord sets a feature's finalized level; level 0 removes it.
- ProducerIdsRecord moves `next_producer_id` (the first id of the next block to hand out)
  strictly forward.
- NoOpRecord changes nothing but the offset.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from tidelog.broker.metadata.records import (
    NO_LEADER_CHANGE,
    NO_LEADER_RECOVERY_STATE_CHANGE,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ControlledShutdownChange,
    Endpoint,
    FeatureLevelRecord,
    FenceBrokerRecord,
    FencingChange,
    LeaderRecoveryState,
    MetadataRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
)
from tidelog.client.protocol.configs import ConfigResourceType
from tidelog.client.protocol.primitives import ZERO_UUID

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})

_EMPTY: Mapping[str, str] = MappingProxyType({})
_EMPTY_FEATURES: Mapping[str, int] = MappingProxyType({})
_EMPTY_RESOURCE_CONFIGS: Mapping[tuple[int, str], Mapping[str, str]] = MappingProxyType({})


class MetadataError(Exception):
    """A record that does not apply to the image (e.g. a partition of an unknown topic):
    the writer's bug, never the client's."""


@dataclass(frozen=True, slots=True)
class BrokerNode:
    """A registered broker (Kafka's BrokerRegistration)."""

    node_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None = None
    broker_epoch: int = 0
    incarnation_id: uuid.UUID = ZERO_UUID
    fenced: bool = True
    in_controlled_shutdown: bool = False
    features: tuple[BrokerFeature, ...] = ()
    log_dirs: tuple[uuid.UUID, ...] = ()

    def endpoint(self, listener_name: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.name == listener_name:
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
    removing_replicas: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()
    leader_recovery_state: int = LeaderRecoveryState.RECOVERED
    directories: tuple[uuid.UUID, ...] = ()
    eligible_leader_replicas: tuple[int, ...] = ()
    last_known_elr: tuple[int, ...] = ()


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
    features: Mapping[str, int] = field(default_factory=lambda: _EMPTY_FEATURES)
    """Finalized feature levels by feature name (metadata.version, kraft.version, ...)."""
    next_producer_id: int = -1
    """The first producer id of the next block to hand out; -1 before any (Kafka's
    ProducerIdsImage.EMPTY)."""
    resource_configs: Mapping[tuple[int, str], Mapping[str, str]] = field(
        default_factory=lambda: _EMPTY_RESOURCE_CONFIGS
    )
    """Configs of resources other than topics, by (ConfigResource type, name): broker
    configs (name "" for the cluster default), broker loggers, client metrics, groups."""

    @classmethod
    def empty(cls, cluster_id: str, controller_id: int) -> MetadataImage:
        return cls(cluster_id, controller_id, _frozen({}), _frozen({}), _frozen({}))

    # -- reads

    def brokers(self) -> list[BrokerNode]:
        """Registered brokers by node id."""
        return [self.brokers_by_id[node_id] for node_id in sorted(self.brokers_by_id)]

    def reachable_brokers(
        self, listener_name: str, *, include_fenced: bool = False
    ) -> Iterator[tuple[BrokerNode, Endpoint]]:
        """Brokers with an endpoint on `listener_name` (what clients on that listener can
        reach), by node id; fenced ones only when asked (Kafka shows clients live brokers)."""
        for node in self.brokers():
            endpoint = node.endpoint(listener_name)
            if endpoint is not None and (include_fenced or not node.fenced):
                yield node, endpoint

    def controller_for_clients(self, listener_name: str, this_node: int) -> int:
        """The ControllerId that Metadata and DescribeCluster give clients: a live broker
        they can reach, since every broker forwards admin requests to the active
        controller (KRaft's rule). This node when it is live (the client just reached it,
        while a controller that died is still registered until fenced), else the active
        controller, else the lowest; -1 when no broker is live."""
        live = [node.node_id for node, _ in self.reachable_brokers(listener_name)]
        for preferred in (this_node, self.controller_id):
            if preferred in live:
                return preferred
        return live[0] if live else -1

    def broker(self, node_id: int) -> BrokerNode | None:
        return self.brokers_by_id.get(node_id)

    def unfenced_brokers(self) -> list[BrokerNode]:
        """Registered brokers that are not fenced, by node id (Kafka's usable brokers)."""
        return [node for node in self.brokers() if not node.fenced]

    def feature_level(self, name: str) -> int:
        """A feature's finalized level; 0 when it is not finalized (off)."""
        return self.features.get(name, 0)

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
        self.features = dict(base.features)
        self.next_producer_id = base.next_producer_id
        self.resource_configs = dict(base.resource_configs)
        self.applied = 0

    def image(self) -> MetadataImage:
        return MetadataImage(
            self.base.cluster_id,
            self.base.controller_id,
            _frozen(self.brokers),
            _frozen(self.by_name),
            _frozen(self.by_id),
            self.base.offset + self.applied,
            _frozen(self.features),
            self.next_producer_id,
            _frozen(self.resource_configs),
        )

    def apply(self, record: MetadataRecord) -> None:
        self.applied += 1
        match record:
            case RegisterBrokerRecord():
                self.brokers[record.broker_id] = BrokerNode(
                    node_id=record.broker_id,
                    endpoints=record.end_points,
                    rack=record.rack,
                    broker_epoch=record.broker_epoch,
                    incarnation_id=record.incarnation_id,
                    fenced=record.fenced,
                    in_controlled_shutdown=record.in_controlled_shutdown,
                    features=record.features,
                    log_dirs=record.log_dirs,
                )
            case UnregisterBrokerRecord():
                self._broker(record.broker_id, record.broker_epoch, "unregister")
                del self.brokers[record.broker_id]
            case FenceBrokerRecord():
                node = self._broker(record.id, record.epoch, "fence")
                self.brokers[node.node_id] = dataclasses.replace(node, fenced=True)
            case UnfenceBrokerRecord():
                node = self._broker(record.id, record.epoch, "unfence")
                self.brokers[node.node_id] = dataclasses.replace(node, fenced=False)
            case BrokerRegistrationChangeRecord():
                self._change_broker(record)
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
                    removing_replicas=record.removing_replicas,
                    adding_replicas=record.adding_replicas,
                    leader_recovery_state=record.leader_recovery_state,
                    directories=record.directories,
                    eligible_leader_replicas=record.eligible_leader_replicas or (),
                    last_known_elr=record.last_known_elr or (),
                )
                self._put(dataclasses.replace(topic, partitions=(*topic.partitions, partition)))
            case PartitionChangeRecord():
                self._change_partition(record)
            case ConfigRecord():
                self._config(record)
            case RemoveTopicRecord():
                topic = self._topic_of(record.topic_id)
                del self.by_name[topic.name], self.by_id[topic.topic_id]
            case FeatureLevelRecord():
                if record.feature_level == 0:
                    self.features.pop(record.name, None)
                else:
                    self.features[record.name] = record.feature_level
            case ProducerIdsRecord():
                if record.next_producer_id <= self.next_producer_id:
                    raise MetadataError(
                        f"next producer id {record.next_producer_id} is not above the "
                        f"current {self.next_producer_id}"
                    )
                self.next_producer_id = record.next_producer_id
            case NoOpRecord():
                pass
            case _:
                raise MetadataError(f"unknown metadata record {record!r}")

    def _broker(self, broker_id: int, epoch: int, action: str) -> BrokerNode:
        """The registered broker `broker_id` at broker epoch `epoch` (Kafka's
        ClusterDelta.getBrokerOrThrow)."""
        node = self.brokers.get(broker_id)
        if node is None:
            raise MetadataError(f"cannot {action} broker {broker_id}: it is not registered")
        if node.broker_epoch != epoch:
            raise MetadataError(
                f"cannot {action} broker {broker_id}: epoch {epoch} is not its current "
                f"epoch {node.broker_epoch}"
            )
        return node

    def _change_broker(self, record: BrokerRegistrationChangeRecord) -> None:
        node = self._broker(record.broker_id, record.broker_epoch, "change")
        if record.fenced not in tuple(FencingChange):
            raise MetadataError(f"broker {node.node_id}: unknown fencing change {record.fenced}")
        if record.in_controlled_shutdown not in tuple(ControlledShutdownChange):
            raise MetadataError(
                f"broker {node.node_id}: unknown controlled shutdown change "
                f"{record.in_controlled_shutdown}"
            )
        fenced = {FencingChange.FENCE: True, FencingChange.UNFENCE: False}.get(
            FencingChange(record.fenced), node.fenced
        )
        shutdown = node.in_controlled_shutdown or (
            record.in_controlled_shutdown == ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN
        )
        self.brokers[node.node_id] = dataclasses.replace(
            node,
            fenced=fenced,
            in_controlled_shutdown=shutdown,
            log_dirs=record.log_dirs or node.log_dirs,
        )

    def _change_partition(self, record: PartitionChangeRecord) -> None:
        """Kafka's PartitionRegistration.merge."""
        topic = self._topic_of(record.topic_id)
        current = topic.partition(record.partition_id)
        if current is None:
            raise MetadataError(f"topic {topic.name}: no partition {record.partition_id}")
        new_leader = record.leader != NO_LEADER_CHANGE
        recovery = record.leader_recovery_state
        changed = dataclasses.replace(
            current,
            leader_id=record.leader if new_leader else current.leader_id,
            leader_epoch=current.leader_epoch + new_leader,
            isr=_or(record.isr, current.isr),
            replicas=_or(record.replicas, current.replicas),
            partition_epoch=current.partition_epoch + 1,
            removing_replicas=_or(record.removing_replicas, current.removing_replicas),
            adding_replicas=_or(record.adding_replicas, current.adding_replicas),
            leader_recovery_state=(
                current.leader_recovery_state
                if recovery == NO_LEADER_RECOVERY_STATE_CHANGE
                else recovery
            ),
            directories=_or(record.directories, current.directories),
            eligible_leader_replicas=_or(
                record.eligible_leader_replicas, current.eligible_leader_replicas
            ),
            last_known_elr=_or(record.last_known_elr, current.last_known_elr),
        )
        partitions = list(topic.partitions)
        partitions[record.partition_id] = changed
        self._put(dataclasses.replace(topic, partitions=tuple(partitions)))

    def _config(self, record: ConfigRecord) -> None:
        if record.resource_type == ConfigResourceType.TOPIC:
            existing = self.by_name.get(record.resource_name)
            if existing is None:
                raise MetadataError(f"config of unknown topic {record.resource_name}")
            configs = _with_config(existing.configs, record)
            self._put(dataclasses.replace(existing, configs=configs))
            return
        key = (record.resource_type, record.resource_name)
        configs = _with_config(self.resource_configs.get(key, _EMPTY), record)
        if configs:
            self.resource_configs[key] = configs
        else:
            self.resource_configs.pop(key, None)

    def _topic_of(self, topic_id: uuid.UUID) -> TopicMetadata:
        topic = self.by_id.get(topic_id)
        if topic is None:
            raise MetadataError(f"no topic with id {topic_id}")
        return topic

    def _put(self, topic: TopicMetadata) -> None:
        self.by_name[topic.name] = topic
        self.by_id[topic.topic_id] = topic


T = TypeVar("T")


def _or(change: T | None, current: T) -> T:
    """A PartitionChangeRecord field: None keeps the current value."""
    return current if change is None else change


def _with_config(configs: Mapping[str, str], record: ConfigRecord) -> Mapping[str, str]:
    changed = dict(configs)
    if record.value is None:
        changed.pop(record.name, None)
    else:
        changed[record.name] = record.value
    return _frozen(changed)


K = TypeVar("K")
V = TypeVar("V")


def _frozen(mapping: dict[K, V]) -> Mapping[K, V]:
    return MappingProxyType(mapping)
