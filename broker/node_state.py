"""A broker's local state, opened from its data dir: the metadata publisher, the topic
manager that writes it (single node) and the replica manager that follows it.

`open_node_state` recovers the log directory, reads the topic files, publishes this node's
registration and every stored topic (leaders chosen among the live brokers: this one), and
deletes the logs of partitions no topic owns any more. The registration is Kafka's pair: a
fenced RegisterBrokerRecord, then the BrokerRegistrationChangeRecord that unfences it (a
single node has nothing to catch up on), at broker epoch = the registration's metadata
offset, as Kafka's controller assigns it, with a random incarnation id per process start.
`close` flushes, checkpoints and closes every log.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tidelog.broker.config import BrokerConfig
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.metadata.records import MetadataRecord, unfenced_registration
from tidelog.broker.replica_manager import ReplicaManager
from tidelog.broker.topic_config import log_config
from tidelog.broker.topic_store import TopicStore, load_cluster_identity
from tidelog.broker.topics import TopicManager
from tidelog.storage.filesystem import FileSystem
from tidelog.storage.log_directory import LogDirectory


@dataclass
class NodeState:
    publisher: MetadataPublisher
    topics: TopicManager
    replicas: ReplicaManager
    incarnation_id: uuid.UUID
    """This process's broker incarnation (Kafka's RegisterBrokerRecord IncarnationId)."""

    @property
    def log_directory(self) -> LogDirectory:
        return self.replicas.log_directory

    def close(self) -> None:
        """Flush every log, write the checkpoints, close the files. Idempotent."""
        self.replicas.log_directory.close()


def open_node_state(
    config: BrokerConfig, fs: FileSystem, rng: random.Random, now_ms: Callable[[], int]
) -> NodeState:
    """See the module docstring."""
    cluster_id = load_cluster_identity(fs, config.data_dir, config, rng)
    store = TopicStore(fs, config.data_dir)
    stored = store.load()
    configs = {topic.name: topic.configs for topic in stored}
    log_directory = LogDirectory.open(
        config.data_dir,
        fs,
        now_ms,
        config_for=lambda name: log_config(config, configs.get(name, {})),
    )
    publisher = MetadataPublisher(MetadataImage.empty(cluster_id, config.node_id), config.node_id)
    replicas = ReplicaManager(config, log_directory)
    publisher.subscribe(replicas)
    live = {config.node_id}
    incarnation_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    records: list[MetadataRecord] = list(
        unfenced_registration(
            config.node_id, publisher.image.offset, incarnation_id, rack=config.rack
        )
    )
    for topic in stored:
        records.extend(topic.records(live))
    publisher.publish(records)
    replicas.delete_strays(publisher.image)
    topics = TopicManager(config=config, store=store, publisher=publisher, rng=rng)
    return NodeState(publisher, topics, replicas, incarnation_id)
