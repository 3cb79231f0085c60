"""A node's local state, opened from its data dir: its member of the controller quorum and
the metadata it replays, the active controller (on controller nodes), and the partition
logs that follow the metadata.

`open_node_state` (synchronous, before anything listens) checks meta.properties, opens the
metadata log (`MetadataQuorum`), and recovers the partition logs with the topic configs of
the stored metadata (committed or not: the best guess there is before the quorum answers;
the committed configs replace them as they are applied). Nothing is published yet: the
quorum replays what is committed once it runs (`Broker.serve`).

`close` flushes, checkpoints and closes every partition log (the metadata log closes when
the quorum stops).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.channel import ControllerChannel
from tidelog.broker.controller.controller import WRITE_TIMEOUT_MS, QuorumController
from tidelog.broker.controller.quorum import METADATA_LOG_DIR, MetadataQuorum, quorum_addresses
from tidelog.broker.controller.raft.transport import WireTransport
from tidelog.broker.isr import IsrManager
from tidelog.broker.lifecycle import BrokerLifecycle
from tidelog.broker.meta_properties import ensure_dir, load_cluster_identity
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.network import Network
from tidelog.broker.producer_ids import ProducerIdAllocator
from tidelog.broker.replica_fetcher import ReplicaFetchers
from tidelog.broker.replica_manager import ReplicaManager
from tidelog.broker.runner import BlockingRunner
from tidelog.broker.topic_config import log_config
from tidelog.broker.topics import TopicManager
from tidelog.storage.filesystem import FileSystem
from tidelog.storage.log_directory import LogDirectory


@dataclass
class NodeState:
    publisher: MetadataPublisher
    quorum: MetadataQuorum
    transport: WireTransport
    """The quorum's requests to the other voters."""
    channel_transport: WireTransport
    """This node's requests to the active controller (see `WireTransport`)."""
    controller: QuorumController | None
    """The controller of a controller node (active while its quorum member leads)."""
    channel: ControllerChannel
    topics: TopicManager
    replicas: ReplicaManager
    lifecycle: BrokerLifecycle
    producer_ids: ProducerIdAllocator
    isr: IsrManager
    fetchers: ReplicaFetchers
    """Followers' fetching from their leaders."""

    @property
    def log_directory(self) -> LogDirectory:
        return self.replicas.log_directory

    def close(self) -> None:
        """Flush every log, write the checkpoints, close the files. Idempotent."""
        self.replicas.log_directory.close()


def open_node_state(
    config: BrokerConfig,
    *,
    fs: FileSystem,
    network: Network,
    rng: random.Random,
    wall_clock_ms: Callable[[], int],
    run_blocking: BlockingRunner,
) -> NodeState:
    """See the module docstring."""
    ensure_dir(fs, config.data_dir)
    cluster_id = load_cluster_identity(fs, config.data_dir, config, rng)
    publisher = MetadataPublisher(MetadataImage.empty(cluster_id, -1), config.node_id)
    transport = WireTransport(
        network,
        quorum_addresses(config),
        node_id=config.node_id,
        cluster_id=cluster_id,
        request_timeout_ms=config.controller_quorum_request_timeout_ms,
    )
    channel_transport = WireTransport(
        network,
        quorum_addresses(config),
        node_id=config.node_id,
        cluster_id=cluster_id,
        request_timeout_ms=WRITE_TIMEOUT_MS + config.controller_quorum_request_timeout_ms,
        client_name="controller-channel",
    )
    quorum = MetadataQuorum(
        config,
        cluster_id=cluster_id,
        fs=fs,
        publisher=publisher,
        transport=transport,
        run_blocking=run_blocking,
        rng=rng,
        wall_clock_ms=wall_clock_ms,
    )
    stored = quorum.tentative_image()
    log_directory = LogDirectory.open(
        config.data_dir,
        fs,
        wall_clock_ms,
        config_for=lambda name: log_config(config, _configs_of(stored, name)),
        reserved=frozenset({METADATA_LOG_DIR}),
    )
    incarnation_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    replicas = ReplicaManager(
        config, log_directory, now_ms=wall_clock_ms, incarnation_id=incarnation_id
    )
    publisher.subscribe(replicas)
    fetchers = ReplicaFetchers(
        config, replicas, network, image=lambda: publisher.image, run_blocking=run_blocking
    )
    publisher.subscribe(fetchers)
    controller = QuorumController(quorum, config, rng) if config.is_controller else None
    channel = ControllerChannel(quorum, channel_transport, node_id=config.node_id)
    lifecycle = BrokerLifecycle(
        config,
        quorum=quorum,
        controller=controller,
        channel=channel,
        incarnation_id=incarnation_id,
    )
    return NodeState(
        publisher=publisher,
        quorum=quorum,
        transport=transport,
        channel_transport=channel_transport,
        controller=controller,
        channel=channel,
        topics=TopicManager(quorum=quorum, controller=controller, channel=channel),
        replicas=replicas,
        lifecycle=lifecycle,
        producer_ids=ProducerIdAllocator(lifecycle.allocate_producer_ids),
        isr=IsrManager(
            config, replicas, lifecycle, image=lambda: publisher.image, now_ms=wall_clock_ms
        ),
        fetchers=fetchers,
    )


def _configs_of(image: MetadataImage, topic: str) -> dict[str, str]:
    metadata = image.topic(topic)
    return dict(metadata.configs) if metadata is not None else {}
