"""The broker: storage, metadata, listeners and connections under one trio nursery.

    broker = Broker(config, network=TcpNetwork(), fs=OsFileSystem(), now_ms=wall_clock_ms,
                    random=random.Random())
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)      # returns once every listener is bound
        host, port = broker.bound_addresses["PLAINTEXT"]
        ...
        broker.request_shutdown()              # serve() returns after a clean shutdown

Everything outside the process is reached through the injected objects, so the same broker
runs over `MemoryNetwork` + `MemoryFileSystem` with a seeded `random.Random`, a fake clock
and `run_blocking=run_inline` (no threads) in tests and simulations.

The parts: this node's member of the controller quorum, which replays the metadata log
into the publisher and its image; on controller nodes the controller, which writes that log
while this node leads the quorum; the topic manager (topic changes, wherever the active
controller is); the replica manager that follows the image (one `Partition` per local
replica); the broker lifecycle (registration and heartbeats); the group service; and the
connections. Handlers see the broker only through `BrokerContext`.

Lifecycle of `serve`:
1. startup (synchronous): meta.properties (cluster id), the metadata log opened, partition
   logs recovered (`open_node_state`);
2. the quorum runs and the controller listeners are bound; once the node has applied what
   the quorum has committed (a quorum of one: at once), topic files of an older data dir
   are migrated into the metadata log and logs no partition owns are deleted;
3. the client listeners are bound, the broker registers with the active controller with
   their advertised endpoints and heartbeats until it is unfenced; background services
   start (`_background_services`), then `task_status.started()`;
4. on `request_shutdown()`: stop accepting clients; a controlled shutdown moves this
   broker's leaderships to other brokers (bounded by `shutdown_timeout_ms`, and given up
   when the quorum has no leader); background services stop; every client connection stops
   reading and finishes the requests it has (bounded by `shutdown_timeout_ms`); a leading
   quorum member resigns (EndQuorumEpoch), then the quorum and the controller listeners'
   connections stop, logs are flushed, checkpoints written and files closed. Cancelling
   `serve` from outside skips the draining but still closes storage.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random as random_module
import time
from collections.abc import Awaitable, Callable

import trio

from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.connection import Connection
from tidelog.broker.controller.channel import ControllerChannel
from tidelog.broker.controller.controller import QuorumController
from tidelog.broker.controller.quorum import MetadataQuorum
from tidelog.broker.groups.service import GroupService
from tidelog.broker.handlers import CONTROLLER_ROUTES, ROUTES
from tidelog.broker.isr import IsrManager
from tidelog.broker.legacy_topics import load_legacy_topics, remove_legacy_topic_files
from tidelog.broker.lifecycle import BrokerLifecycle
from tidelog.broker.log_context import node_logging
from tidelog.broker.meta_properties import MetadataStoreError
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import Endpoint, MetadataRecord, SecurityProtocol
from tidelog.broker.network import Network, server_ssl_context, stream_peer
from tidelog.broker.node_state import NodeState, open_node_state
from tidelog.broker.producer_ids import ProducerIdAllocator
from tidelog.broker.replica_manager import ReplicaManager
from tidelog.broker.router import Router
from tidelog.broker.runner import BlockingRunner, run_in_thread
from tidelog.broker.topics import TopicManager
from tidelog.storage.cleaner import compact, dirty_ratio
from tidelog.storage.errors import StorageError
from tidelog.storage.filesystem import FileSystem

FLUSH_CHECK_INTERVAL_MS = 1000
"""How often the flush ticker looks at the logs' flush policies."""
JOIN_LOG_INTERVAL_S = 5
"""How often a node waiting for its controller quorum says so."""

log = logging.getLogger(__name__)


class Broker:
    """One tidelog broker node (see module docstring)."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        network: Network,
        fs: FileSystem,
        now_ms: Callable[[], int],
        random: random_module.Random,
        router: Router | None = None,
        run_blocking: BlockingRunner = run_in_thread,
    ) -> None:
        self.config = config
        self.network = network
        self.fs = fs
        self.now_ms = now_ms
        """Wall-clock milliseconds, for record timestamps and time-based retention."""
        self.random = random
        self.run_blocking = run_blocking
        """Where fsync, checkpoints and compaction run (a thread; inline in simulation)."""
        self.router = router if router is not None else Router(ROUTES)
        """The client listeners' APIs."""
        self.controller_router = Router(CONTROLLER_ROUTES)
        """The controller listeners' APIs."""
        self.bound_addresses: dict[str, tuple[str, int]] = {}
        """Listener name -> (bind host, bound port), filled before `serve` reports started."""
        self._tombstones_due_ms: dict[tuple[str, int], int | None] = {}
        self.groups = GroupService(self)
        """The group coordinator's driver (FindCoordinator, JoinGroup, OffsetCommit...)."""
        self._node: NodeState | None = None
        self._shutdown_requested = trio.Event()
        self._stopping = False
        self._connections: set[Connection] = set()
        self._connection_ended = trio.Event()
        self._connection_numbers = itertools.count()

    # -- what handlers use

    @property
    def node(self) -> NodeState:
        if self._node is None:
            raise RuntimeError("the broker has not started")
        return self._node

    @property
    def image(self) -> MetadataImage:
        """The current metadata image."""
        return self.node.publisher.image

    @property
    def topics(self) -> TopicManager:
        return self.node.topics

    @property
    def quorum(self) -> MetadataQuorum:
        return self.node.quorum

    @property
    def controller(self) -> QuorumController | None:
        return self.node.controller

    @property
    def channel(self) -> ControllerChannel:
        return self.node.channel

    @property
    def lifecycle(self) -> BrokerLifecycle:
        return self.node.lifecycle

    @property
    def producer_ids(self) -> ProducerIdAllocator:
        return self.node.producer_ids

    @property
    def replicas(self) -> ReplicaManager:
        return self.node.replicas

    @property
    def isr(self) -> IsrManager:
        return self.node.isr

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- lifecycle

    def request_shutdown(self) -> None:
        """Begin a clean shutdown; `serve` returns when it is done. Idempotent."""
        self._shutdown_requested.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker until `request_shutdown()` (see module docstring). Every log line
        of its tasks carries its node id."""
        with node_logging(self.config.node_id):
            await self._serve(task_status)

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self._start_storage()
        node = self.node
        try:
            async with trio.open_nursery() as quorum:
                await quorum.start(node.transport.serve)
                await quorum.start(node.channel_transport.serve)
                await quorum.start(node.quorum.serve)
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as services:
                        await self._start_listeners(services, connections, controller=True)
                        await self._join_cluster()
                        if self.config.is_broker:
                            await self._start_listeners(services, connections, controller=False)
                            await self._register(services)
                        if node.controller is not None:
                            services.start_soon(node.controller.serve)
                        for service in self._background_services():
                            services.start_soon(service)
                        log.info(
                            "node %d of cluster %s listening on %s",
                            self.config.node_id,
                            self.image.cluster_id,
                            ", ".join(
                                f"{name} {host}:{port}"
                                for name, (host, port) in self.bound_addresses.items()
                            ),
                        )
                        task_status.started()
                        await self._shutdown_requested.wait()
                        log.info("shutting down: no new connections")
                        self._stopping = True
                        if self.config.is_broker:
                            await node.lifecycle.controlled_shutdown(
                                self.config.shutdown_timeout_ms
                            )
                        services.cancel_scope.cancel()
                    # Parked JoinGroup/SyncGroup requests would hold the drain until its
                    # timeout: answer them NOT_COORDINATOR now, as a coordinator moving away
                    # does.
                    self.groups.stop_coordinating()
                    await self._drain_connections()
                    await node.quorum.resign()
                    connections.cancel_scope.cancel()
                quorum.cancel_scope.cancel()
        finally:
            self._stopping = True
            self._close_storage()
        log.info("node %d stopped", self.config.node_id)

    def _start_storage(self) -> None:
        self._node = open_node_state(
            self.config,
            fs=self.fs,
            network=self.network,
            rng=self.random,
            wall_clock_ms=self.now_ms,
            run_blocking=self.run_blocking,
        )
        self.node.publisher.subscribe(self.groups)

    def _close_storage(self) -> None:
        if self._node is not None:
            self._node.close()

    async def _join_cluster(self) -> None:
        """Wait until this node has applied what the quorum has committed; then migrate an
        older data dir's topic files and delete the logs no partition owns."""
        quorum = self.node.quorum
        while True:
            with trio.move_on_after(JOIN_LOG_INTERVAL_S):
                await quorum.caught_up.wait()
                break
            log.warning(
                "waiting for the controller quorum %s (leader %d, epoch %d)",
                self.config.controller_quorum_voters or "of this node",
                quorum.leader_id,
                quorum.epoch,
            )
        await self._migrate_topic_files()
        self.node.replicas.delete_strays(self.image)

    async def _migrate_topic_files(self) -> None:
        """Commit the topics of a data dir from before the metadata log, then remove their
        files (see `legacy_topics`)."""
        legacy = load_legacy_topics(self.fs, self.config.data_dir)
        if not legacy:
            return
        controller = self.node.controller
        if controller is None or not self.node.quorum.is_active:
            raise MetadataStoreError(
                f"{self.config.data_dir}: topic files from a single-node tidelog can only be "
                f"migrated by a node that is its own controller quorum"
            )
        missing = [topic for topic in legacy if self.image.topic(topic.name) is None]
        if missing:
            records: list[MetadataRecord] = []
            for topic in missing:
                records.extend(topic.records(live_brokers=()))
            await controller.commit(records)
            log.info("migrated %d topics into the metadata log", len(missing))
        remove_legacy_topic_files(self.fs, self.config.data_dir)

    async def _register(self, services: trio.Nursery) -> None:
        """Register with the active controller and heartbeat until unfenced."""
        lifecycle = self.node.lifecycle
        await lifecycle.register(self.advertised_endpoints())
        services.start_soon(lifecycle.serve)
        await lifecycle.unfenced.wait()
        node_id = self.config.node_id
        # Ready once this node's own Metadata lists it (the unfencing is applied here too).
        await self.node.quorum.wait_for(
            lambda image: (broker := image.broker(node_id)) is not None and not broker.fenced
        )

    async def _start_listeners(
        self, services: trio.Nursery, connections: trio.Nursery, *, controller: bool
    ) -> None:
        """Bind the controller listeners (of a controller node), or the client listeners."""
        for listener in self.config.listeners:
            if self.config.is_controller_listener(listener.name) != controller:
                continue
            if controller and not self.config.is_controller:
                continue
            context = server_ssl_context(listener.tls) if listener.tls is not None else None
            router = self.controller_router if controller else self.router
            handler = functools.partial(self._on_connection, listener, router)
            port: int = await services.start(
                functools.partial(
                    self.network.serve_tcp,
                    handler,
                    listener.host,
                    listener.port,
                    ssl_context=context,
                    handler_nursery=connections,
                )
            )
            self.bound_addresses[listener.name] = (listener.host, port)

    def advertised_endpoints(self) -> tuple[Endpoint, ...]:
        """Where clients reach this broker, per client listener in config order (once
        serving)."""
        return tuple(
            Endpoint(
                listener.name,
                listener.advertised_host or listener.host,
                listener.advertised_port or self.bound_addresses[listener.name][1],
                SecurityProtocol.SSL if listener.tls is not None else SecurityProtocol.PLAINTEXT,
            )
            for listener in self.config.client_listeners
        )

    def _background_services(self) -> list[Callable[[], Awaitable[None]]]:
        """The broker's periodic services: each runs until cancelled at shutdown, after the
        listeners are up."""
        services: list[Callable[[], Awaitable[None]]] = [
            self._run_retention,
            self._run_flush,
            self._run_cleaner,
            self.groups.serve,
        ]
        if self.config.is_broker:
            services += [self.isr.serve, self.node.fetchers.serve]
        return services

    async def _run_retention(self) -> None:
        """Every `log_retention_check_interval_ms`, delete expired segments of every log."""
        while True:
            await trio.sleep(self.config.log_retention_check_interval_ms / 1000)
            self.enforce_retention()

    def enforce_retention(self) -> int:
        """Apply every log's retention.ms / retention.bytes now; return segments deleted.

        Runs on the event loop: the storage layer allows only flush and checkpoint in a worker
        thread, and deleting whole segments costs one directory fsync at most."""
        now_ms = self.now_ms()
        deleted = 0
        for key, partition_log in list(self.replicas.logs()):
            try:
                deleted += partition_log.enforce_retention(now_ms)
            except StorageError as exc:  # one failed log must not stop the others or the broker
                log.error("retention of %s-%d failed: %s", *key, exc)
        return deleted

    async def _run_cleaner(self) -> None:
        """Every `log_cleaner_backoff_ms`, compact the logs whose cleanup.policy asks for it."""
        while True:
            await trio.sleep(self.config.log_cleaner_backoff_ms / 1000)
            await self.compact_due_logs()

    async def compact_due_logs(self) -> int:
        """Compact, off the event loop, every compacted log that is dirty enough or holds
        tombstones now due for removal, below its high watermark; return how many passes
        committed."""
        committed = 0
        for partition in list(self.replicas.partitions()):
            key, partition_log = partition.key, partition.log
            config = partition_log.config
            if not config.compaction_enabled:
                continue
            now_ms = self.now_ms()
            tombstones_due = self._tombstones_due_ms.get(key)
            high_watermark = partition.high_watermark
            due = (tombstones_due is not None and now_ms >= tombstones_due) or dirty_ratio(
                partition_log, max_offset=high_watermark
            ) >= config.min_cleanable_dirty_ratio
            if not due:
                continue
            try:
                result = await self.run_blocking(
                    functools.partial(
                        compact,
                        partition_log,
                        now_ms,
                        config.delete_retention_ms,
                        max_offset=high_watermark,
                    )
                )
            except (StorageError, OSError) as exc:  # e.g. the topic was deleted meanwhile
                log.warning("compaction of %s-%d failed: %s", *key, exc)
                continue
            if result.committed:
                committed += 1
                self._tombstones_due_ms[key] = result.next_tombstone_due_ms
        return committed

    async def _run_flush(self) -> None:
        """Check the flush policy (`flush.ms`, `flush.messages`) of every log once a second,
        or more often when `log_flush_interval_ms` asks for it."""
        interval_ms = min(
            FLUSH_CHECK_INTERVAL_MS, self.config.log_flush_interval_ms or FLUSH_CHECK_INTERVAL_MS
        )
        while True:
            await trio.sleep(interval_ms / 1000)
            await self.flush_due_logs()

    async def flush_due_logs(self) -> int:
        """fsync, off the event loop, every log whose flush policy is due, then write the
        recovery-point checkpoint; return how many logs were flushed."""
        now_ms = self.now_ms()
        due = [(key, plog) for key, plog in self.replicas.logs() if plog.flush_due(now_ms)]
        flushed = 0
        for key, partition_log in due:
            try:
                await self.run_blocking(partition_log.flush)
                flushed += 1
            except StorageError as exc:  # the log is offline; it reports itself
                log.error("flush of %s-%d failed: %s", *key, exc)
        if flushed:
            await self.run_blocking(self.node.log_directory.checkpoint)
        return flushed

    def _client_connections(self) -> list[Connection]:
        return [
            c
            for c in self._connections
            if not self.config.is_controller_listener(c.info.listener_name)
        ]

    async def _drain_connections(self) -> None:
        """Answer what the clients' connections have sent, reading no more. The controller
        listeners' connections (the other nodes') are left open: they close with the
        quorum, last, since every node of a cluster stopping at once waits on them."""
        for connection in self._client_connections():
            connection.stop_reading()
        with trio.move_on_after(self.config.shutdown_timeout_ms / 1000) as scope:
            while self._client_connections():
                self._connection_ended = trio.Event()
                await self._connection_ended.wait()
        if scope.cancelled_caught:
            log.warning(
                "shutdown: %d connections still busy after %d ms; closing them",
                len(self._client_connections()),
                self.config.shutdown_timeout_ms,
            )

    async def _on_connection(
        self, listener: ListenerConfig, router: Router, stream: trio.abc.Stream
    ) -> None:
        if self._stopping and not self.config.is_controller_listener(listener.name):
            return  # the quorum's traffic flows until the quorum stops, last
        if len(self._connections) >= self.config.max_connections:
            log.warning(
                "refusing a connection on %s: max_connections (%d) reached",
                listener.name,
                self.config.max_connections,
            )
            return
        try:
            peer = stream_peer(stream)
        except OSError:  # the peer left before we asked who it is
            return
        connection = Connection(
            stream,
            connection_number=next(self._connection_numbers),
            listener_name=listener.name,
            local=self.bound_addresses[listener.name],
            peer=peer,
            router=router,
            broker=self,
            max_frame_bytes=self.config.socket_request_max_bytes,
            max_inflight=self.config.max_inflight_requests_per_connection,
            idle_timeout_ms=self.config.connections_max_idle_ms,
        )
        self._connections.add(connection)
        try:
            await connection.serve()
        except Exception:
            # Connection.serve handles the peer's faults itself; anything else is our bug,
            # which must not take the other connections down with it.
            log.exception("%s: connection failed", connection.info.connection_id)
        finally:
            self._connections.discard(connection)
            self._connection_ended.set()


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, the `now_ms` a production broker uses."""
    return time.time_ns() // 1_000_000
