"""The active controller: every metadata change of the cluster, through the metadata log.

`QuorumController` runs on every controller node and acts while its `MetadataQuorum` is the
active controller. Each operation, one at a time (a lock), reads the applied image (which
then holds everything committed), computes the records with the pure rules
(`controller.topics`, `controller.brokers`), commits them as one entry and returns once
they are applied. A node that is not the active controller raises `NotControllerError`
(answered NOT_CONTROLLER; brokers retry at the new one).

Broker lifecycle, the way Kafka's controller keeps it:

- BrokerRegistration: refused for another cluster (INCONSISTENT_CLUSTER_ID) or while the id
  has a live session of another incarnation (DUPLICATE_BROKER_REGISTRATION). The broker is
  registered fenced, at broker epoch = the metadata offset of its registration. A new
  incarnation of a registered broker (it restarted, perhaps losing what it had not
  fsynced) also leaves its partitions as a fenced broker does (`brokers.leave_partitions`):
  it leads nothing, and is in no ISR but as the last member, until it has caught up again
  (Kafka's unclean-shutdown handling); a partition it leads again gets a new leader epoch.
- BrokerHeartbeat: refused for an unknown broker (BROKER_ID_NOT_REGISTERED) or a stale
  broker epoch (STALE_BROKER_EPOCH). It renews the broker's session; a fenced broker whose
  metadata offset has reached its registration is unfenced (unless it asks to stay fenced);
  `want_shut_down` starts a controlled shutdown (its leaderships move away) and is answered
  `should_shut_down` once it leads nothing another replica could lead; the broker is fenced
  in that same commit (it is about to exit).
- Sessions live in the active controller's memory: a broker without a heartbeat for
  `broker.session.timeout.ms` is fenced (`controller.brokers.fence`). A newly active
  controller starts every unfenced broker's session afresh, but only a broker it has heard
  from since blocks a new incarnation's registration (after a whole cluster restarts, the
  brokers' old registrations are replaced at once, not after a session timeout).
- AllocateProducerIds hands out blocks of `PRODUCER_ID_BLOCK_SIZE` ids (ProducerIdsRecord).
- AlterPartition commits a partition leader's ISR change (`controller.partitions`).
- ElectLeaders and the periodic leader rebalance: `controller.brokers.elect_leaders`.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller import brokers as lifecycle
from tidelog.broker.controller import partitions
from tidelog.broker.controller import topics as rules
from tidelog.broker.controller.quorum import MetadataQuorum, NotControllerError
from tidelog.broker.controller.raft.driver import now_ms
from tidelog.broker.metadata.image import MetadataImage, TopicMetadata
from tidelog.broker.metadata.records import (
    BrokerFeature,
    Endpoint,
    MetadataRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)

T = TypeVar("T")

PRODUCER_ID_BLOCK_SIZE = 1000
"""Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE."""
WRITE_TIMEOUT_MS = 30_000
"""How long an operation waits for its records to commit (Kafka's request.timeout.ms)."""


class QuorumController:
    """See the module docstring."""

    def __init__(self, quorum: MetadataQuorum, config: BrokerConfig, rng: random.Random) -> None:
        self.quorum = quorum
        self.config = config
        self._rng = rng
        self._lock = trio.Lock()
        self._sessions_ms: dict[int, int] = {}
        """Broker id -> the trio-clock time of its last heartbeat (active controller only)."""
        self._heard: set[int] = set()
        """Brokers that registered or heartbeated since this controller became active."""
        self._sessions_epoch = -1

    @property
    def image(self) -> MetadataImage:
        return self.quorum.image

    async def _write(self, compute: Callable[[MetadataImage], tuple[list[MetadataRecord], T]]) -> T:
        """Run one operation (module docstring): `compute(image)` gives its records and
        its result."""
        async with self._lock:
            if not self.quorum.is_active:
                raise NotControllerError(self.quorum.leader_id)
            self._start_sessions()
            records, result = compute(self.image)
            if records:
                await self.quorum.commit(records, timeout_ms=WRITE_TIMEOUT_MS)
            return result

    # -- topics

    async def create_topic(
        self,
        name: str,
        *,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str | None] | None = None,
        assignments: Sequence[Sequence[int]] | None = None,
        validate_only: bool = False,
    ) -> TopicMetadata:
        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], TopicMetadata]:
            records = rules.create_topic(
                image,
                self.config,
                self._rng,
                name,
                num_partitions=num_partitions,
                replication_factor=replication_factor,
                configs=configs,
                assignments=assignments,
            )
            return _outcome(image, records, name, validate_only)

        topic = await self._write(compute)
        if not validate_only:
            log.info(
                "created topic %s (%s) with %d partitions, replication factor %d",
                name,
                topic.topic_id,
                len(topic.partitions),
                len(topic.partitions[0].replicas),
            )
        return topic

    async def delete_topic(self, name: str) -> TopicMetadata:
        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], TopicMetadata]:
            return rules.delete_topic(image, name), rules.existing_topic(image, name)

        topic = await self._write(compute)
        log.info("deleted topic %s (%s)", name, topic.topic_id)
        return topic

    async def create_partitions(
        self, name: str, count: int, *, validate_only: bool = False
    ) -> TopicMetadata:
        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], TopicMetadata]:
            records = rules.create_partitions(image, self._rng, name, count)
            return _outcome(image, records, name, validate_only)

        return await self._write(compute)

    async def alter_configs(
        self, name: str, overrides: Mapping[str, str | None], *, validate_only: bool = False
    ) -> TopicMetadata:
        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], TopicMetadata]:
            records = rules.alter_configs(image, self.config, name, overrides)
            return _outcome(image, records, name, validate_only)

        return await self._write(compute)

    async def commit(self, records: list[MetadataRecord]) -> None:
        """Commit records computed elsewhere (a data dir's migration) as one operation."""
        await self._write(lambda image: (records, None))

    # -- brokers

    def _start_sessions(self) -> None:
        """A newly active controller gives every unfenced broker a fresh session."""
        if self._sessions_epoch == self.quorum.epoch:
            return
        self._sessions_epoch = self.quorum.epoch
        now = now_ms()
        self._sessions_ms = {b.node_id: now for b in self.image.brokers() if not b.fenced}
        self._heard = set()

    async def broker_registration(self, request: Message) -> Message:
        """A BrokerRegistration's response body (module docstring)."""
        broker_id: int = request["broker_id"]
        incarnation_id: uuid.UUID = request["incarnation_id"]

        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], tuple[ErrorCode, int]]:
            if request["cluster_id"] != image.cluster_id:
                return [], (ErrorCode.INCONSISTENT_CLUSTER_ID, -1)
            existing = image.broker(broker_id)
            if (
                existing is not None
                and existing.incarnation_id != incarnation_id
                and not existing.fenced
                and broker_id in self._heard
                and self._session_alive(broker_id)
            ):
                return [], (ErrorCode.DUPLICATE_BROKER_REGISTRATION, -1)
            epoch = self.quorum.next_offset
            record = RegisterBrokerRecord(
                broker_id,
                tuple(
                    Endpoint(e["name"], e["host"], e["port"], e["security_protocol"])
                    for e in request["listeners"]
                ),
                request["rack"],
                broker_epoch=epoch,
                incarnation_id=incarnation_id,
                features=tuple(
                    BrokerFeature(f["name"], f["min_supported_version"], f["max_supported_version"])
                    for f in request["features"]
                ),
                fenced=True,
            )
            records: list[MetadataRecord] = [record]
            if existing is not None and existing.incarnation_id != incarnation_id:
                records += lifecycle.leave_partitions(image, broker_id)
            return records, (ErrorCode.NONE, epoch)

        error, epoch = await self._write(compute)
        if error is ErrorCode.NONE:
            self._sessions_ms[broker_id] = now_ms()
            self._heard.add(broker_id)
            log.info("broker %d registered at broker epoch %d", broker_id, epoch)
        return {"throttle_time_ms": 0, "error_code": int(error), "broker_epoch": epoch}

    def _session_alive(self, broker_id: int) -> bool:
        last = self._sessions_ms.get(broker_id)
        return last is not None and now_ms() - last < self.config.broker_session_timeout_ms

    async def heartbeat(self, request: Message) -> Message:
        """A BrokerHeartbeat's response body (module docstring)."""
        broker_id: int = request["broker_id"]

        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], Message]:
            broker = image.broker(broker_id)
            if broker is None:
                return [], _heartbeat_response(ErrorCode.BROKER_ID_NOT_REGISTERED)
            if broker.broker_epoch != request["broker_epoch"]:
                return [], _heartbeat_response(ErrorCode.STALE_BROKER_EPOCH)
            self._sessions_ms[broker_id] = now_ms()
            self._heard.add(broker_id)
            caught_up = request["current_metadata_offset"] >= broker.broker_epoch
            records: list[MetadataRecord] = []
            fenced = broker.fenced
            if request["want_shut_down"]:
                records = lifecycle.begin_controlled_shutdown(image, broker_id)
                after = image.apply_all(records)
                done = lifecycle.controlled_shutdown_done(after, broker_id)
                if done and not fenced:
                    # It is about to exit: fence it now rather than after its session
                    # expires, so that clients stop being sent to it and its next start
                    # registers at once.
                    records += lifecycle.fence(after, broker_id)
                    fenced = True
                    log.info("broker %d completed its controlled shutdown: fenced", broker_id)
                return records, _heartbeat_response(
                    ErrorCode.NONE, caught_up=caught_up, fenced=fenced, shut_down=done
                )
            if fenced and caught_up and not request["want_fence"]:
                records = lifecycle.unfence(image, broker_id)
                fenced = False
                log.info("broker %d is caught up: unfenced", broker_id)
            elif not fenced and request["want_fence"]:
                records = lifecycle.fence(image, broker_id)
                fenced = True
            return records, _heartbeat_response(ErrorCode.NONE, caught_up=caught_up, fenced=fenced)

        return await self._write(compute)

    async def unregister_broker(self, request: Message) -> Message:
        broker_id: int = request["broker_id"]

        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], ErrorCode]:
            if image.broker(broker_id) is None:
                return [], ErrorCode.BROKER_ID_NOT_REGISTERED
            return lifecycle.unregister(image, broker_id), ErrorCode.NONE

        error = await self._write(compute)
        self._sessions_ms.pop(broker_id, None)
        message = None if error is ErrorCode.NONE else f"broker {broker_id} is not registered"
        return {"throttle_time_ms": 0, "error_code": int(error), "error_message": message}

    async def fence_expired(self) -> list[int]:
        """Fence every unfenced broker whose session expired; their ids."""
        fenced: list[int] = []
        while True:
            expired = self._expired()
            if not expired:
                return fenced
            broker_id = expired[0]

            def compute(
                image: MetadataImage, b: int = broker_id
            ) -> tuple[list[MetadataRecord], bool]:
                broker = image.broker(b)
                if broker is None or broker.fenced or self._session_alive(b):
                    return [], False  # it heartbeated (or left) while this waited
                return lifecycle.fence(image, b), True

            if not await self._write(compute):
                continue
            self._sessions_ms.pop(broker_id, None)
            log.warning(
                "broker %d missed heartbeats for %d ms: fenced",
                broker_id,
                self.config.broker_session_timeout_ms,
            )
            fenced.append(broker_id)

    def _expired(self) -> list[int]:
        if not self.quorum.is_active:
            return []
        self._start_sessions()
        return [
            b.node_id
            for b in self.image.brokers()
            if not b.fenced and not self._session_alive(b.node_id)
        ]

    async def serve(self) -> None:
        """Fence expired brokers while active and, with `auto_leader_rebalance_enable`,
        give leadership back to preferred replicas every
        `leader_imbalance_check_interval_seconds`, until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.config.auto_leader_rebalance_enable:
                nursery.start_soon(self._rebalance_leaders)
            await self._fence_expired_sessions()

    async def _fence_expired_sessions(self) -> None:
        interval_s = min(self.config.broker_heartbeat_interval_ms, 1000) / 2000
        while True:
            await trio.sleep(interval_s)
            try:
                await self.fence_expired()
            except (NotControllerError, trio.TooSlowError) as exc:
                log.info("fencing expired brokers did not complete: %s", exc)

    async def _rebalance_leaders(self) -> None:
        while True:
            await trio.sleep(self.config.leader_imbalance_check_interval_seconds)
            if not self.quorum.is_active:
                continue
            try:
                moved = await self.rebalance_leaders()
            except (NotControllerError, trio.TooSlowError) as exc:
                log.info("the leader rebalance did not complete: %s", exc)
                continue
            if moved:
                log.info("moved the leadership of %d partitions to their preferred replicas", moved)

    async def rebalance_leaders(self) -> int:
        """Preferred elections wherever the preferred replica can lead; how many moved."""

        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], int]:
            records, _ = lifecycle.elect_leaders(image, lifecycle.PREFERRED_ELECTION, None)
            return records, len(records)

        return await self._write(compute)

    async def elect_leaders(self, request: Message) -> Message:
        """An ElectLeaders response body (`brokers.elect_leaders`); v0 is preferred only."""
        wanted = request["topic_partitions"]
        targets = (
            None
            if wanted is None
            else [(t["topic"], index) for t in wanted for index in t["partitions"]]
        )
        election_type: int = request.get("election_type", lifecycle.PREFERRED_ELECTION)
        if election_type not in (lifecycle.PREFERRED_ELECTION, lifecycle.UNCLEAN_ELECTION):
            return elect_leaders_error_response(request, ErrorCode.INVALID_REQUEST)

        def compute(
            image: MetadataImage,
        ) -> tuple[list[MetadataRecord], dict[tuple[str, int], lifecycle.ElectionResult]]:
            return lifecycle.elect_leaders(image, election_type, targets)

        results = await self._write(compute)
        by_topic: dict[str, list[Message]] = {}
        for (topic, index), (code, message) in results.items():
            by_topic.setdefault(topic, []).append(
                {"partition_id": index, "error_code": int(code), "error_message": message}
            )
        return {
            "throttle_time_ms": 0,
            "error_code": int(ErrorCode.NONE),
            "replica_election_results": [
                {"topic": topic, "partition_result": partitions}
                for topic, partitions in by_topic.items()
            ],
        }

    # -- partitions

    async def alter_partition(self, request: Message) -> Message:
        """An AlterPartition's response body (`controller.partitions`): accepted ISR changes
        are committed together before it is answered."""
        return await self._write(lambda image: partitions.alter_partition(image, request))

    # -- producer ids

    async def allocate_producer_ids(self, request: Message) -> Message:
        """A block of PRODUCER_ID_BLOCK_SIZE ids for the broker."""
        broker_id: int = request["broker_id"]

        def compute(image: MetadataImage) -> tuple[list[MetadataRecord], tuple[ErrorCode, int]]:
            broker = image.broker(broker_id)
            if broker is None:
                return [], (ErrorCode.BROKER_ID_NOT_REGISTERED, -1)
            if broker.broker_epoch != request["broker_epoch"]:
                return [], (ErrorCode.STALE_BROKER_EPOCH, -1)
            first = max(image.next_producer_id, 0)
            next_block = first + PRODUCER_ID_BLOCK_SIZE
            return [ProducerIdsRecord(broker_id, broker.broker_epoch, next_block)], (
                ErrorCode.NONE,
                first,
            )

        error, first = await self._write(compute)
        return {
            "throttle_time_ms": 0,
            "error_code": int(error),
            "producer_id_start": first,
            "producer_id_len": PRODUCER_ID_BLOCK_SIZE if error is ErrorCode.NONE else 0,
        }


def _outcome(
    image: MetadataImage, records: list[MetadataRecord], name: str, validate_only: bool
) -> tuple[list[MetadataRecord], TopicMetadata]:
    topic = image.apply_all(records).topic(name)
    assert topic is not None, f"records for {name} do not leave it in the image"
    return ([] if validate_only else records), topic


def _heartbeat_response(
    error: ErrorCode, *, caught_up: bool = False, fenced: bool = True, shut_down: bool = False
) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(error),
        "is_caught_up": caught_up,
        "is_fenced": fenced,
        "should_shut_down": shut_down,
    }


def elect_leaders_error_response(request: Message, code: ErrorCode) -> Message:
    """Every requested partition answered `code` (the top-level error too)."""
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "replica_election_results": [
            {
                "topic": t["topic"],
                "partition_result": [
                    {"partition_id": index, "error_code": int(code), "error_message": None}
                    for index in t["partitions"]
                ],
            }
            for t in request["topic_partitions"] or ()
        ],
    }
