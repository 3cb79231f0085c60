"""This broker's life as the active controller sees it: registration, heartbeats, controlled
shutdown, and producer id blocks.

`BrokerLifecycle` sends BrokerRegistration, BrokerHeartbeat, AllocateProducerIds and
AlterPartition to the active controller: in-process when that is this node, else through
the `ControllerChannel`; every call is retried until some controller answers it. The flow
is Kafka's:

1. `register(endpoints)` once the listeners are bound: the controller answers the broker
   epoch. Another incarnation with a live session makes it retry until that session ends;
   another cluster's controller is fatal (`LifecycleError`).
2. `serve()` heartbeats every `broker.heartbeat.interval.ms` with the metadata offset this
   node has applied; `unfenced` is set once the controller has unfenced it. A heartbeat
   refused as stale or unregistered (the controller lost or replaced this registration)
   registers again.
3. `controlled_shutdown(timeout_ms)` heartbeats asking to shut down until the controller
   says the broker's leaderships are moved, the timeout passes, or the quorum has had no
   leader for an election timeout (the whole cluster is stopping).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.channel import RETRY_BACKOFF_MS, ControllerChannel
from tidelog.broker.controller.controller import QuorumController
from tidelog.broker.controller.quorum import MetadataQuorum, NotControllerError
from tidelog.broker.metadata.records import Endpoint
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.cluster import (
    ALLOCATE_PRODUCER_IDS,
    ALTER_PARTITION,
    BROKER_HEARTBEAT,
    BROKER_REGISTRATION,
)
from tidelog.client.protocol.schema import Api, Message

log = logging.getLogger(__name__)

CALL_TIMEOUT_MS = 30_000


class LifecycleError(Exception):
    """The controller refused this broker for good (another cluster)."""


class BrokerLifecycle:
    """See the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        quorum: MetadataQuorum,
        controller: QuorumController | None,
        channel: ControllerChannel,
        incarnation_id: uuid.UUID,
    ) -> None:
        self.config = config
        self._quorum = quorum
        self._controller = controller
        self._channel = channel
        self.incarnation_id = incarnation_id
        self.broker_epoch = -1
        self.registered = trio.Event()
        """Set once the first registration is answered (the broker epoch is known)."""
        self.unfenced = trio.Event()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._want_shut_down = False

    async def _call(self, api: Api, body: Message) -> Message:
        local: dict[int, Callable[[Message], Awaitable[Message]]] = {}
        if self._controller is not None:
            local = {
                BROKER_REGISTRATION.key: self._controller.broker_registration,
                BROKER_HEARTBEAT.key: self._controller.heartbeat,
                ALLOCATE_PRODUCER_IDS.key: self._controller.allocate_producer_ids,
                ALTER_PARTITION.key: self._controller.alter_partition,
            }
        while True:
            if self._quorum.is_active and api.key in local:
                try:
                    return await local[api.key](body)
                except (NotControllerError, trio.TooSlowError) as exc:
                    log.info("%s: %s; retrying", api.name, exc)
                    await trio.sleep(RETRY_BACKOFF_MS / 1000)
                    continue
            try:
                answer = await self._channel.call(
                    api.key, body, version=api.valid.highest, timeout_ms=CALL_TIMEOUT_MS
                )
            except trio.TooSlowError:
                log.warning("%s: no active controller answered; still trying", api.name)
                continue
            if answer is not None:
                return answer

    async def register(self, endpoints: tuple[Endpoint, ...]) -> int:
        """Register with these endpoints; the broker epoch (module docstring)."""
        self._endpoints = endpoints
        body: Message = {
            "broker_id": self.config.node_id,
            "cluster_id": self._quorum.cluster_id,
            "incarnation_id": self.incarnation_id,
            "listeners": [
                {
                    "name": e.name,
                    "host": e.host,
                    "port": e.port,
                    "security_protocol": e.security_protocol,
                }
                for e in endpoints
            ],
            "features": [],
            "rack": self.config.rack,
            "is_migrating_zk_broker": False,
            "log_dirs": [],
            "previous_broker_epoch": self.broker_epoch,
        }
        while True:
            answer = await self._call(BROKER_REGISTRATION, body)
            error = ErrorCode(answer["error_code"])
            if error is ErrorCode.NONE:
                self.broker_epoch = answer["broker_epoch"]
                self.registered.set()
                return self.broker_epoch
            if error is ErrorCode.INCONSISTENT_CLUSTER_ID:
                raise LifecycleError(
                    f"the controller belongs to another cluster than {self._quorum.cluster_id}"
                )
            log.info("registration refused (%s); retrying", error.name)
            await trio.sleep(self.config.broker_heartbeat_interval_ms / 1000)

    async def heartbeat(self) -> Message:
        """Send one heartbeat and act on its answer; the answer."""
        answer = await self._call(
            BROKER_HEARTBEAT,
            {
                "broker_id": self.config.node_id,
                "broker_epoch": self.broker_epoch,
                "current_metadata_offset": self._quorum.image.offset,
                "want_fence": False,
                "want_shut_down": self._want_shut_down,
                "offline_log_dirs": [],
            },
        )
        error = ErrorCode(answer["error_code"])
        if error in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED):
            log.warning("heartbeat refused (%s): registering again", error.name)
            self.unfenced = trio.Event()
            await self.register(self._endpoints)
        elif error is ErrorCode.NONE and not answer["is_fenced"]:
            self.unfenced.set()
        return answer

    async def serve(self) -> None:
        """Heartbeat until cancelled (module docstring)."""
        while True:
            answer = await self.heartbeat()
            if answer["is_fenced"] and answer["is_caught_up"] is False:
                # Not caught up yet: try again as soon as more metadata is applied.
                with trio.move_on_after(self.config.broker_heartbeat_interval_ms / 1000):
                    await self._quorum.wait_changed()
                continue
            await trio.sleep(self.config.broker_heartbeat_interval_ms / 1000)

    async def controlled_shutdown(self, timeout_ms: int) -> bool:
        """Ask the controller to move this broker's leaderships away; whether it said done
        within `timeout_ms`."""
        self._want_shut_down = True
        with trio.move_on_after(timeout_ms / 1000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._abandon_without_leader, nursery.cancel_scope)
                while True:
                    answer = await self.heartbeat()
                    if answer["error_code"] == ErrorCode.NONE and answer["should_shut_down"]:
                        nursery.cancel_scope.cancel()
                        return True
                    await trio.sleep(RETRY_BACKOFF_MS / 1000)
        return False

    async def _abandon_without_leader(self, shutdown: trio.CancelScope) -> None:
        """Cancel `shutdown` once the quorum has had no leader for an election timeout: no
        controller is left to move anything (the rest of the cluster is stopping too)."""
        patience_ms = self.config.controller_quorum_election_timeout_ms
        patience_s = patience_ms / 1000
        leaderless_since: float | None = None
        while True:
            now = trio.current_time()
            if self._quorum.has_leader(within_ms=patience_ms):
                leaderless_since = None
            elif leaderless_since is None:
                leaderless_since = now
            elif now - leaderless_since >= patience_s:
                log.warning("controlled shutdown: the controller quorum has no leader; stopping")
                shutdown.cancel()
                return
            await trio.sleep(RETRY_BACKOFF_MS / 1000)

    async def alter_partition(self, request: Message) -> Message:
        """Send a partition leader's AlterPartition (`isr`); the controller's answer."""
        return await self._call(ALTER_PARTITION, request)

    async def allocate_producer_ids(self) -> tuple[int, int]:
        """A block of producer ids: (first id, count); waits for the registration first (the
        controller hands blocks to registered brokers only)."""
        await self.registered.wait()
        while True:
            answer = await self._call(
                ALLOCATE_PRODUCER_IDS,
                {"broker_id": self.config.node_id, "broker_epoch": self.broker_epoch},
            )
            if answer["error_code"] == ErrorCode.NONE:
                return answer["producer_id_start"], answer["producer_id_len"]
            log.warning(
                "AllocateProducerIds refused (%s); retrying",
                ErrorCode(answer["error_code"]).name,
            )
            await trio.sleep(RETRY_BACKOFF_MS / 1000)
