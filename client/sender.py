"""The producer's sending side: batches from the accumulator to the brokers and back.

`Sender.run` is a service (start it with `nursery.start`). Its tasks, in its own nursery:

- the dispatcher: fails batches past `delivery_timeout_ms`, gets a producer id when
  idempotence needs one (again after a sequence was abandoned, once nothing is in flight),
  starts a send loop per broker that leads a partition with ready data, and asks for
  metadata when a partition has no known leader;
- one send loop per broker: drains the broker's ready batches into one Produce request at a
  time, with up to `max_in_flight_requests_per_connection` awaiting responses;
- one short task per request in flight, awaiting its response and settling each batch:
  acknowledged, re-queued for a retry (retriable errors only, within `retries` and
  `delivery_timeout_ms`), or failed.

Idempotence: each batch gets its partition's next sequence when first sent and is resent
byte for byte, so the broker drops duplicates (see `client.idempotence`).
"""

from __future__ import annotations

import logging
import random
from typing import cast

import trio

from tidelog.client.accumulator import ProducerBatch, RecordAccumulator
from tidelog.client.broadcast import Broadcast
from tidelog.client.cluster import Cluster
from tidelog.client.config import ProducerConfig
from tidelog.client.connection import BrokerConnection, PendingResponse, backoff_s
from tidelog.client.errors import (
    IncompatibleBrokerError,
    KafkaError,
    KafkaProtocolError,
    KafkaTimeoutError,
    error_for_code,
)
from tidelog.client.idempotence import IdempotenceState
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.data import INIT_PRODUCER_ID, PRODUCE
from tidelog.client.protocol.records import Compression, encode_batch
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition

log = logging.getLogger(__name__)

PRODUCE_MAX_VERSION = 12
"""Produce v13 names topics by id; 3-12 carry names and RecordBatch v2."""
PRODUCE_ZSTD_MIN_VERSION = 7

# Errors after which the partition's leader (as we know it) is wrong.
_STALE_LEADER_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.KAFKA_STORAGE_ERROR,
    }
)


class Sender:
    """Moves batches from the accumulator to the partition leaders; see the module doc."""

    def __init__(
        self,
        config: ProducerConfig,
        cluster: Cluster,
        accumulator: RecordAccumulator,
        rng: random.Random,
    ) -> None:
        self.config = config
        self._cluster = cluster
        self._accumulator = accumulator
        self._rng = rng
        self._idempotence = IdempotenceState() if config.idempotent else None
        self._compression = config.compression
        self._acks = cast(int, config.acks)
        self._wakeup = Broadcast()
        self.memory_freed = Broadcast()
        """Notified whenever batches complete and release buffer memory."""
        self.fatal_error: KafkaError | None = None
        """Set when the producer cannot go on (e.g. not authorised); sends then fail."""
        self._senders: set[int] = set()
        self._nursery: trio.Nursery | None = None
        cluster.update_listeners.append(self.wake)

    def wake(self) -> None:
        """Something changed (new or full batch, flush, metadata): re-check the work."""
        self._wakeup.notify()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._dispatch_loop()

    def _leader_of(self, tp: TopicPartition) -> int | None:
        return self._cluster.metadata.leader_for(tp)

    def _may_send(self) -> bool:
        idempotence = self._idempotence
        return idempotence is None or idempotence.has_producer_id

    async def _dispatch_loop(self) -> None:
        accumulator = self._accumulator
        delivery_timeout_s = self.config.delivery_timeout_ms / 1000
        producer_id_attempts = 0
        producer_id_retry_at = float("-inf")
        while True:
            now = trio.current_time()
            for batch in accumulator.expired(now, delivery_timeout_s):
                self._fail_batch(
                    batch,
                    KafkaTimeoutError(
                        f"{batch.record_count} record(s) for {batch.tp.topic}-"
                        f"{batch.tp.partition} not delivered within delivery_timeout_ms "
                        f"({self.config.delivery_timeout_ms} ms)"
                    ),
                )
            next_check_at = accumulator.oldest_queued_at() + delivery_timeout_s
            if self._needs_producer_id():
                if now < producer_id_retry_at:
                    # Backing off: sleep until the retry (or a wakeup), never spin.
                    await self._wakeup.wait_until(min(next_check_at, producer_id_retry_at))
                elif await self._init_producer_id():
                    producer_id_attempts = 0
                else:
                    producer_id_attempts += 1
                    producer_id_retry_at = trio.current_time() + self._backoff_s(
                        producer_id_attempts
                    )
                continue
            if self._may_send():
                check = accumulator.ready(now, self._leader_of)
                if check.unknown_leader_topics:
                    self._cluster.add_topics(check.unknown_leader_topics)
                    self._cluster.request_update()
                for node_id in check.ready_nodes - self._senders:
                    self._senders.add(node_id)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._send_loop, node_id)
                next_check_at = min(next_check_at, check.next_check_at)
            await self._wakeup.wait_until(next_check_at)

    def _needs_producer_id(self) -> bool:
        """Idempotence lacks a producer id, records wait for one, and (after a reset)
        nothing sent under the old one is still in flight."""
        idempotence = self._idempotence
        if idempotence is None or idempotence.has_producer_id or self.fatal_error is not None:
            return False
        incomplete = self._accumulator.incomplete()
        return bool(incomplete) and not any(batch.in_flight for batch in incomplete)

    async def _init_producer_id(self) -> bool:
        """One InitProducerId attempt; False if it should be retried after a backoff.

        Non-retriable errors fail the producer. A broker without InitProducerId cannot
        deduplicate: idempotence that was on by default is then turned off (with a
        warning); asked for explicitly, it is fatal.
        """
        idempotence = self._idempotence
        assert idempotence is not None
        try:
            connection = await self._cluster.any_connection()
            if not connection.supports(INIT_PRODUCER_ID.key):
                self._idempotence_unsupported(connection)
                return True
            response = await connection.request(
                INIT_PRODUCER_ID.key,
                {
                    "transactional_id": None,
                    "transaction_timeout_ms": self.config.transaction_timeout_ms,
                    "producer_id": -1,
                    "producer_epoch": -1,
                },
            )
            code = response["error_code"]
            if code == ErrorCode.NONE:
                idempotence.set_producer_id(response["producer_id"], response["producer_epoch"])
                log.debug(
                    "producer id %d epoch %d", idempotence.producer_id, idempotence.producer_epoch
                )
                self.wake()
                return True
            error: KafkaError = error_for_code(code, "InitProducerId")
        except KafkaError as exc:
            error = exc
        if not error.retriable:
            self._set_fatal(error)
            return True
        log.info("InitProducerId failed, will retry: %s", error)
        return False

    def _idempotence_unsupported(self, connection: BrokerConnection) -> None:
        if not self.config.idempotence_defaulted:
            self._set_fatal(
                IncompatibleBrokerError(
                    f"{connection.describe()} does not support InitProducerId, which "
                    "enable_idempotence=True needs"
                )
            )
            return
        log.warning(
            "%s does not support InitProducerId: producing without idempotence",
            connection.describe(),
        )
        self._idempotence = None
        self.wake()

    def _set_fatal(self, error: KafkaError) -> None:
        """The producer cannot continue (e.g. not authorised): fail everything queued."""
        log.error("producer failed: %s", error)
        self.fatal_error = error
        for batch in self._accumulator.incomplete():
            if not batch.in_flight:
                self._accumulator.fail(batch, error)
        self.memory_freed.notify()

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(
            attempt,
            self.config.retry_backoff_ms,
            self.config.retry_backoff_max_ms,
            self._rng.uniform(-1, 1),
        )

    # --- senders -------------------------------------------------------------------------

    async def _send_loop(self, node_id: int) -> None:
        """Send this broker's ready batches, one Produce request at a time."""
        accumulator = self._accumulator
        failures = 0
        while True:
            if not self._may_send():
                await self._wakeup.wait()
                continue
            check = accumulator.ready(trio.current_time(), self._leader_of)
            if node_id not in check.ready_nodes:
                await self._wakeup.wait_until(check.next_check_at)
                continue
            try:
                connection = await self._cluster.connection(node_id)
            except KafkaError as exc:
                failures += 1
                log.info("cannot reach broker %d for produce: %s", node_id, exc)
                await self._wakeup.wait_until(trio.current_time() + self._backoff_s(failures))
                continue
            failures = 0
            try:
                version = self._produce_version(connection)
            except IncompatibleBrokerError as exc:
                self._set_fatal(exc)
                return
            await connection.wait_for_capacity()
            if not self._may_send():
                continue
            batches = accumulator.drain(
                node_id, trio.current_time(), self._leader_of, self.config.max_request_size
            )
            if batches:
                await self._send_batches(connection, version, batches)

    def _produce_version(self, connection: BrokerConnection) -> int:
        version = connection.api_version(PRODUCE.key, max_version=PRODUCE_MAX_VERSION)
        if self._compression is Compression.ZSTD and version < PRODUCE_ZSTD_MIN_VERSION:
            raise IncompatibleBrokerError(
                f"{connection.describe()} does not accept zstd (Produce v{version} < 7)"
            )
        return version

    def _encode(self, batch: ProducerBatch) -> bytes:
        """The batch's bytes, built on its first send and reused by every retry."""
        if batch.payload is None:
            idempotence = self._idempotence
            if idempotence is not None:
                batch.producer_id = idempotence.producer_id
                batch.producer_epoch = idempotence.producer_epoch
                batch.base_sequence = idempotence.assign(batch.tp, batch.record_count)
            batch.payload = encode_batch(
                batch.records,
                compression=self._compression,
                producer_id=batch.producer_id,
                producer_epoch=batch.producer_epoch,
                base_sequence=batch.base_sequence,
            )
            batch.records = []
        return batch.payload

    async def _send_batches(
        self, connection: BrokerConnection, version: int, batches: list[ProducerBatch]
    ) -> None:
        topics: dict[str, list[Message]] = {}
        for batch in batches:
            topics.setdefault(batch.tp.topic, []).append(
                {"index": batch.tp.partition, "records": self._encode(batch)}
            )
        body = {
            "transactional_id": None,
            "acks": self._acks,
            "timeout_ms": self.config.request_timeout_ms,
            "topic_data": [
                {"name": topic, "partition_data": partitions}
                for topic, partitions in topics.items()
            ],
        }
        try:
            if self._acks == 0:
                await connection.send_without_response(PRODUCE.key, body, version=version)
                for batch in batches:
                    self._accumulator.complete(batch, -1, -1)
                self.memory_freed.notify()
                self.wake()
                return
            pending = await connection.send(PRODUCE.key, body, version=version)
        except KafkaError as exc:
            self._request_failed(batches, exc)
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._await_response, pending, batches)

    async def _await_response(self, pending: PendingResponse, batches: list[ProducerBatch]) -> None:
        try:
            response = await pending.wait()
        except KafkaError as exc:
            self._request_failed(batches, exc)
            return
        results = {
            (topic["name"], p["index"]): p
            for topic in response["responses"]
            for p in topic["partition_responses"]
        }
        for batch in batches:
            result = results.get(batch.tp)
            if result is None:
                self._retry_or_fail(
                    batch,
                    KafkaProtocolError(f"produce response lacks {batch.tp}"),
                    retriable=False,
                )
                continue
            self._partition_result(batch, result)
        self.wake()

    # --- outcomes ------------------------------------------------------------------------

    def _request_failed(self, batches: list[ProducerBatch], error: KafkaError) -> None:
        """The whole request failed (connection lost, timed out): retry where allowed."""
        self._cluster.request_update()
        for batch in batches:
            self._retry_or_fail(batch, error, retriable=error.retriable)
        self.wake()

    def _partition_result(self, batch: ProducerBatch, result: Message) -> None:
        code = result["error_code"]
        idempotence = self._idempotence
        if code in (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
            if idempotence is not None and batch.base_sequence >= 0:
                idempotence.acknowledged(batch.tp, batch.base_sequence)
            base_offset = result["base_offset"] if code == ErrorCode.NONE else -1
            self._accumulator.complete(batch, base_offset, result["log_append_time_ms"])
            self.memory_freed.notify()
            return
        message = result.get("error_message")
        context = f"producing to {batch.tp.topic}-{batch.tp.partition}"
        error = error_for_code(code, f"{context}: {message}" if message else context)
        if code in _STALE_LEADER_ERRORS:
            self._cluster.metadata.invalidate_leader(batch.tp)
            self._cluster.request_update()
        retriable = error.retriable
        if code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER and idempotence is not None:
            # Caused by an earlier batch of ours that failed in flight: resend in order.
            retriable = not idempotence.is_first_unacknowledged(batch.tp, batch.base_sequence)
        self._retry_or_fail(batch, error, retriable=retriable)

    def _retry_or_fail(self, batch: ProducerBatch, error: KafkaError, *, retriable: bool) -> None:
        now = trio.current_time()
        idempotence = self._idempotence
        stale_sequence = (
            idempotence is not None
            and batch.base_sequence >= 0
            and (
                idempotence.reset_pending
                or batch.producer_id != idempotence.producer_id
                or batch.producer_epoch != idempotence.producer_epoch
            )
        )
        if (
            retriable
            and not stale_sequence
            and batch.attempts <= self.config.retries
            and now < batch.created_at + self.config.delivery_timeout_ms / 1000
        ):
            log.debug("retrying %r after %s", batch, error)
            self._accumulator.requeue(batch, now + self._backoff_s(batch.attempts))
            return
        self._fail_batch(batch, error)

    def _fail_batch(self, batch: ProducerBatch, error: KafkaError) -> None:
        """Fail a batch for good. If it had a sequence, the partition's later sequences can
        never be accepted: those batches fail too, and a new producer id is requested."""
        accumulator = self._accumulator
        accumulator.fail(batch, error)
        idempotence = self._idempotence
        if idempotence is not None and batch.base_sequence >= 0:
            idempotence.abandon()
            for queued in accumulator.queued(batch.tp):
                if queued.base_sequence >= 0:
                    accumulator.fail(
                        queued,
                        KafkaError(f"an earlier batch to {batch.tp} failed: {error}"),
                    )
        self.memory_freed.notify()
        self.wake()
