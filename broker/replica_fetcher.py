"""Followers copy their leaders' logs: one fetcher task per leader broker.

`ReplicaFetchers` follows the metadata image (it subscribes to the publisher after the
`ReplicaManager`, so the local replicas exist when it hears of them): every partition this
broker follows, with an elected leader, is fetched by the fetcher of that leader; a
partition that this broker now leads, or no longer holds, or whose leader is gone, leaves
its fetcher, and a fetcher with no partitions ends.

A fetcher sends one Fetch (v12, with this broker's id as ReplicaId) for all its
partitions that are not backing off, to the leader's endpoint on the inter-broker listener
(`BrokerConfig.inter_broker_listener`), and waits at most `replica_fetch_wait_max_ms` at
the leader for new data. The rules for each partition's answer are the pure
`partition.follower`; this module carries them out: appends go to the log as they are,
truncations and restarts run off the event loop (they fsync). An answer is acted on only if
the partition is still a follower of the same leader epoch as when the request went out. A
partition that cannot be fetched now (or whose log fails) waits `replica_fetch_backoff_ms`
(`METADATA_LAG_BACKOFF_MS` when the leader has only not caught up with the metadata yet);
an unreachable leader puts all its partitions on backoff, and the connection is made again.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from tidelog.broker.config import BrokerConfig, TlsConfig
from tidelog.broker.metadata.delta import LocalChanges, PartitionKey
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.network import Network
from tidelog.broker.partition.follower import (
    Append,
    FetchTarget,
    Retry,
    StartAt,
    Step,
    Truncate,
    fetch_request,
    next_step,
)
from tidelog.broker.replica_manager import Partition, ReplicaManager
from tidelog.broker.runner import BlockingRunner
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import KafkaError
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.data import FETCH
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

log = logging.getLogger(__name__)

FETCH_VERSION = 12
"""The first Fetch version with LastFetchedEpoch/DivergingEpoch (and the highest served)."""
REPLICA_SOCKET_TIMEOUT_MS = 30_000
"""Kafka's replica.socket.timeout.ms: connecting, and answering beyond the fetch wait."""
METADATA_LAG_BACKOFF_MS = 50
"""The backoff after an answer that only says the leader and this broker have not applied
the same metadata yet (it has not taken the leadership, or knows another leader epoch):
that settles within milliseconds, and a full `replica_fetch_backoff_ms` would hold every
new partition's first commits back for a second."""
METADATA_LAG_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.FENCED_LEADER_EPOCH,
    }
)


@dataclass(slots=True)
class _Assigned:
    leader_epoch: int
    retry_at: float = 0.0
    """trio time before which the partition is not fetched (backoff after an error)."""


class _Fetcher:
    """The partitions fetched from one leader (see the module docstring)."""

    def __init__(self, leader_id: int) -> None:
        self.leader_id = leader_id
        self.partitions: dict[PartitionKey, _Assigned] = {}
        self.changed = trio.Event()
        self.connection: BrokerConnection | None = None
        self.started = False
        self.nursery: trio.Nursery | None = None
        """Runs the connection's reader while the fetcher runs."""

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class ReplicaFetchers:
    """See the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        replicas: ReplicaManager,
        network: Network,
        *,
        image: Callable[[], MetadataImage],
        run_blocking: BlockingRunner,
    ) -> None:
        self._config = config
        self._replicas = replicas
        self._network = network
        self._image = image
        self._run_blocking = run_blocking
        self._listener = config.inter_broker_listener
        self._ssl_context = _client_ssl_context(self._listener.tls)
        self._fetchers: dict[int, _Fetcher] = {}
        self._fetchers_changed = trio.Event()

    # -- following the image

    def on_metadata_update(self, changes: LocalChanges, image: MetadataImage) -> None:
        for key in changes.removed:
            self._unassign(key)
        for change in changes.leaders:
            self._unassign(change.key)
        for change in changes.followers:
            leader = change.partition.leader_id
            if leader < 0 or leader == self._config.node_id:
                self._unassign(change.key)
            else:
                self._assign(change.key, leader, change.partition.leader_epoch)

    def _assign(self, key: PartitionKey, leader_id: int, leader_epoch: int) -> None:
        for fetcher in self._fetchers.values():
            if fetcher.leader_id != leader_id and key in fetcher.partitions:
                del fetcher.partitions[key]
                fetcher.poke()
        target = self._fetchers.get(leader_id)
        if target is None:
            target = self._fetchers[leader_id] = _Fetcher(leader_id)
            self._fetchers_changed.set()
        target.partitions[key] = _Assigned(leader_epoch)
        target.poke()

    def _unassign(self, key: PartitionKey) -> None:
        for fetcher in self._fetchers.values():
            if fetcher.partitions.pop(key, None) is not None:
                fetcher.poke()

    # -- running

    async def serve(self) -> None:
        """Run a fetcher task for every leader with partitions, until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                for fetcher in list(self._fetchers.values()):
                    if not fetcher.started:
                        fetcher.started = True
                        nursery.start_soon(self._run, fetcher)
                await self._fetchers_changed.wait()
                self._fetchers_changed = trio.Event()

    async def _run(self, fetcher: _Fetcher) -> None:
        try:
            async with trio.open_nursery() as nursery:
                fetcher.nursery = nursery
                while fetcher.partitions:
                    now = trio.current_time()
                    ready = {k: a for k, a in fetcher.partitions.items() if a.retry_at <= now}
                    if not ready:
                        wake_at = min(a.retry_at for a in fetcher.partitions.values())
                        with trio.move_on_at(wake_at):
                            await fetcher.changed.wait()
                        continue
                    await self._fetch(fetcher, ready)
                # Retire before the next checkpoint, so that no partition is assigned to a
                # fetcher that is ending.
                self._retire(fetcher)
                nursery.cancel_scope.cancel()
        finally:
            self._retire(fetcher)
            if fetcher.connection is not None:
                fetcher.connection.close()

    def _retire(self, fetcher: _Fetcher) -> None:
        if self._fetchers.get(fetcher.leader_id) is fetcher:
            del self._fetchers[fetcher.leader_id]

    async def _fetch(self, fetcher: _Fetcher, ready: dict[PartitionKey, _Assigned]) -> None:
        targets: list[tuple[FetchTarget, Partition]] = []
        for key, assigned in ready.items():
            partition = self._replicas.partition(*key)
            if partition is None or partition.state.is_leader:
                fetcher.partitions.pop(key, None)
                continue
            target = FetchTarget(key[0], key[1], assigned.leader_epoch, partition)
            targets.append((target, partition))
        if not targets:
            return
        config = self._config
        request = fetch_request(
            config.node_id,
            (target for target, _ in targets),
            max_wait_ms=config.replica_fetch_wait_max_ms,
            min_bytes=config.replica_fetch_min_bytes,
            max_bytes=config.replica_fetch_response_max_bytes,
            partition_max_bytes=config.replica_fetch_max_bytes,
        )
        answer = await self._send(fetcher, request)
        if answer is None:
            self._back_off(fetcher, (target for target, _ in targets))
            return
        answered: dict[PartitionKey, Message] = {
            (topic["topic"], p["partition_index"]): p
            for topic in answer["responses"]
            for p in topic["partitions"]
        }
        for target, partition in targets:
            key = (target.topic, target.partition)
            current = fetcher.partitions.get(key)
            if current is None or current.leader_epoch != target.leader_epoch:
                continue  # moved on while the fetch was out
            result = answered.get(key)
            if result is None:
                self._back_off(fetcher, (target,))
                continue
            await self._carry_out(fetcher, target, partition, next_step(result, partition))

    async def _carry_out(
        self, fetcher: _Fetcher, target: FetchTarget, partition: Partition, step: Step
    ) -> None:
        try:
            match step:
                case Append(records, high_watermark, leader_log_start):
                    if records is not None:
                        partition.append_as_follower(records)
                    partition.on_leader_high_watermark(high_watermark)
                    if partition.log_start_offset < leader_log_start <= partition.log_end_offset:
                        await self._run_blocking(
                            functools.partial(partition.log.delete_records, leader_log_start)
                        )
                case Truncate(offset):
                    log.info(
                        "%s-%d diverged from leader %d: truncating from %d to %d",
                        *partition.key,
                        fetcher.leader_id,
                        partition.log_end_offset,
                        offset,
                    )
                    await self._run_blocking(functools.partial(partition.log.truncate_to, offset))
                    partition.after_truncation()
                case StartAt(offset):
                    log.info(
                        "%s-%d is behind leader %d's log start: restarting the log at %d",
                        *partition.key,
                        fetcher.leader_id,
                        offset,
                    )
                    await self._run_blocking(
                        functools.partial(partition.log.truncate_fully_and_start_at, offset)
                    )
                    partition.after_truncation()
                case Retry(error):
                    log.debug(
                        "%s-%d from leader %d: %s", *partition.key, fetcher.leader_id, error.name
                    )
                    lagging = error in METADATA_LAG_ERRORS
                    self._back_off(fetcher, (target,), METADATA_LAG_BACKOFF_MS if lagging else None)
        except StorageError as exc:
            log.error(
                "%s-%d: replicating from %d failed: %s", *partition.key, fetcher.leader_id, exc
            )
            self._back_off(fetcher, (target,))

    def _back_off(
        self, fetcher: _Fetcher, targets: Iterable[FetchTarget], backoff_ms: int | None = None
    ) -> None:
        """Fetch `targets` again after `backoff_ms` (default `replica_fetch_backoff_ms`)."""
        if backoff_ms is None:
            backoff_ms = self._config.replica_fetch_backoff_ms
        retry_at = trio.current_time() + backoff_ms / 1000
        for target in targets:
            assigned = fetcher.partitions.get((target.topic, target.partition))
            if assigned is not None:
                assigned.retry_at = retry_at

    async def _send(self, fetcher: _Fetcher, request: Message) -> Message | None:
        connection = await self._connection(fetcher)
        if connection is None:
            return None
        timeout_s = (self._config.replica_fetch_wait_max_ms + REPLICA_SOCKET_TIMEOUT_MS) / 1000
        try:
            return await connection.request(
                FETCH.key, request, version=FETCH_VERSION, timeout_s=timeout_s
            )
        except KafkaError as exc:
            log.info("fetching from leader %d failed: %s", fetcher.leader_id, exc)
            connection.close()
            fetcher.connection = None
            return None

    async def _connection(self, fetcher: _Fetcher) -> BrokerConnection | None:
        existing = fetcher.connection
        if existing is not None and not existing.closed:
            return existing
        node = self._image().broker(fetcher.leader_id)
        endpoint = node.endpoint(self._listener.name) if node is not None else None
        if endpoint is None:
            log.info(
                "leader %d has no %s endpoint to fetch from", fetcher.leader_id, self._listener.name
            )
            return None
        try:
            with trio.fail_after(REPLICA_SOCKET_TIMEOUT_MS / 1000):
                stream = await self._network.connect(
                    endpoint.host,
                    endpoint.port,
                    ssl_context=self._ssl_context,
                    server_hostname=endpoint.host if self._ssl_context is not None else None,
                )
        except (OSError, trio.TooSlowError) as exc:
            log.info("cannot reach leader %d to fetch from it: %s", fetcher.leader_id, exc)
            return None
        connection = BrokerConnection(
            stream,
            node_id=fetcher.leader_id,
            host=endpoint.host,
            port=endpoint.port,
            client_id=f"replica-fetcher-{self._config.node_id}",
            request_timeout_s=REPLICA_SOCKET_TIMEOUT_MS / 1000,
            max_frame_bytes=self._config.socket_request_max_bytes,
        )
        assert fetcher.nursery is not None
        await fetcher.nursery.start(connection.serve)
        fetcher.connection = connection
        return connection


def _client_ssl_context(tls: TlsConfig | None) -> ssl.SSLContext | None:
    """How a follower connects to a TLS listener: trusting the listener's `cafile` and,
    for mutual TLS, presenting this broker's own certificate."""
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certfile, tls.keyfile)
    return context
