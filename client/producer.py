"""The producer: `send` records, get their offsets back.

    async with Producer(bootstrap_servers="127.0.0.1:9092") as producer:
        delivery = await producer.send("events", b"value", key=b"user-1")
        metadata = await delivery          # RecordMetadata(topic, partition, offset, ...)

`send` returns once the record is in the accumulator, with an awaitable `RecordFuture`
(awaiting it waits for the broker's acknowledgement); `send_and_wait` does both. `send` blocks
only for topic metadata and for buffer space (`buffer_memory`, up to `max_block_ms`): that
is the backpressure that keeps memory bounded. Records to the same partition are delivered
in `send` order, also across retries.

Two services run in the nursery that `async with` opens: the cluster (connections,
metadata) and the `Sender` (producer id, one send loop per broker, responses, retries,
delivery timeouts; see `client.sender`). Idempotence is on by default: the broker drops
batches that a retry resends.

Leaving the `async with` block normally flushes everything and then closes; leaving it
with an exception closes at once, failing records not yet acknowledged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, cast

import trio

from tidelog.client.accumulator import (
    BATCH_OVERHEAD_BYTES,
    ProducerBatch,
    RecordAccumulator,
    estimate_record_bytes,
)
from tidelog.client.cluster import Cluster, enter_owned_nursery, exit_owned_nursery
from tidelog.client.config import ProducerConfig
from tidelog.client.connection import Connector
from tidelog.client.errors import (
    ClientClosedError,
    KafkaTimeoutError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.partitioner import Partitioner
from tidelog.client.protocol.records import RecordInput, TimestampType
from tidelog.client.sender import Sender
from tidelog.client.structs import Header, RecordMetadata, TopicPartition


def _completion(batch: ProducerBatch) -> trio.Event:
    return cast(trio.Event, batch.completion)


class RecordFuture:
    """The delivery outcome of one record: `await future` gives its `RecordMetadata` or
    raises the `KafkaError` that failed it."""

    __slots__ = ("_batch", "_index", "_timestamp_ms")

    def __init__(self, batch: ProducerBatch, index: int, timestamp_ms: int) -> None:
        self._batch = batch
        self._index = index
        self._timestamp_ms = timestamp_ms

    @property
    def topic_partition(self) -> TopicPartition:
        return self._batch.tp

    def done(self) -> bool:
        return self._batch.done

    def result(self) -> RecordMetadata:
        """The outcome of a completed delivery (see `done`); raises its error."""
        batch = self._batch
        if not batch.done:
            raise RuntimeError("delivery is not complete yet")
        if batch.error is not None:
            raise batch.error
        if batch.log_append_time_ms >= 0:
            timestamp_ms = batch.log_append_time_ms
            timestamp_type = TimestampType.LOG_APPEND_TIME
        else:
            timestamp_ms = self._timestamp_ms
            timestamp_type = TimestampType.CREATE_TIME
        offset = batch.base_offset + self._index if batch.base_offset >= 0 else -1
        return RecordMetadata(
            batch.tp.topic, batch.tp.partition, offset, timestamp_ms, timestamp_type
        )

    async def wait(self) -> RecordMetadata:
        await _completion(self._batch).wait()
        return self.result()

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        return self.wait().__await__()


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_BYTES_OR_NONE = (bytes, type(None))
"""For isinstance: a tuple, built once, instead of a `bytes | None` union per call."""


class Producer:
    """Kafka producer on trio. Keyword arguments are `ProducerConfig` fields (Kafka's
    config names: `acks`, `linger_ms`, `batch_size`, `buffer_memory`, `max_block_ms`,
    `compression_type`, `enable_idempotence`, `max_in_flight_requests_per_connection`,
    `request_timeout_ms`, `retry_backoff_ms`, `delivery_timeout_ms`, `partitioner`, ...).

    `connector` replaces how connections are opened (tests inject faults through it);
    `rng` seeds the sticky partitioner and backoff jitter; `now_ms` (wall-clock ms) stamps
    records sent without a timestamp (a simulation passes its virtual clock).
    """

    def __init__(
        self,
        *,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        now_ms: Callable[[], int] | None = None,
        **config: Any,
    ) -> None:
        self.config = ProducerConfig(**config)
        self._rng = rng or random.Random()
        self._now_ms = now_ms or _wall_clock_ms
        self._cluster = Cluster(
            self.config,
            connector=connector,
            max_in_flight_per_connection=self.config.max_in_flight_requests_per_connection,
            allow_auto_topic_creation=True,
            rng=self._rng,
        )
        self._accumulator = RecordAccumulator(
            batch_size=self.config.batch_size,
            linger_s=self.config.linger_ms / 1000,
            buffer_memory=self.config.buffer_memory,
            max_in_flight=self.config.max_in_flight_requests_per_connection,
            completion_factory=trio.Event,
        )
        self._partitioner = Partitioner(
            self.config.partitioner, batch_size=self.config.batch_size, rng=self._rng
        )
        self._sender = Sender(self.config, self._cluster, self._accumulator, self._rng)
        self._record_bytes_max = (
            min(self.config.max_request_size, self.config.buffer_memory) - BATCH_OVERHEAD_BYTES
        )
        self._append_lock = trio.Lock()
        self._max_block_s = self.config.max_block_ms / 1000
        self._partitions_of: dict[str, tuple[TopicPartition, ...]] = {}
        """Per topic, its TopicPartitions by index: built once, not per record."""
        self._nursery: trio.Nursery | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Producer:
        if self._exit_stack is not None or self._closing:
            raise ClientClosedError("a Producer can be entered once")

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(self._cluster.run)
            await nursery.start(self._sender.run)

        self._exit_stack, self._nursery = await enter_owned_nursery(start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            await self.aclose()
            return False
        return await self._shutdown(exc)

    async def aclose(self, timeout_ms: int | None = None) -> None:
        """Send and await everything accepted so far, then close. With `timeout_ms`, records
        still unacknowledged after it fail with `ClientClosedError`."""
        if self._exit_stack is None:
            return
        self._closing = True
        self._accumulator.closing = True
        self._wake()
        try:
            await self.flush(timeout_ms)
        except KafkaTimeoutError:
            pass
        finally:
            await self._shutdown(None)

    async def _shutdown(self, exc: BaseException | None) -> bool:
        """Cancel the background tasks and fail what is left; True if `exc` (raised in the
        `async with` body) was absorbed by the nursery, as its own cancellation is."""
        stack, self._exit_stack = self._exit_stack, None
        self._closing = True
        if stack is None:
            return False
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            return await exit_owned_nursery(stack, exc)
        finally:
            self._nursery = None
            error = ClientClosedError("producer closed before the record was acknowledged")
            for batch in self._accumulator.incomplete():
                self._accumulator.fail(batch, error)
            self._sender.memory_freed.notify()

    def _check_open(self) -> None:
        if self._sender.fatal_error is not None:
            raise self._sender.fatal_error
        if self._closing or self._nursery is None:
            raise ClientClosedError("the producer is closed" if self._closing else "not started")

    def _wake(self) -> None:
        self._sender.wake()

    # --- public API ----------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[Header] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; returns its `RecordFuture` (await it for the offset).

        `partition` overrides the partitioner; `timestamp_ms` defaults to now (wall clock).
        Blocks up to `max_block_ms` for the topic's metadata and for buffer space, then
        raises `KafkaTimeoutError`. Raises `RecordTooLargeError` for a record that can
        never fit `max_request_size`/`buffer_memory`.
        """
        self._check_open()
        if not isinstance(value, _BYTES_OR_NONE) or not isinstance(key, _BYTES_OR_NONE):
            raise TypeError("key and value must be bytes or None")
        header_list: Sequence[Header] = tuple(headers) if headers else ()
        for header in header_list:
            if (
                len(header) != 2
                or not isinstance(header[0], str)
                or not isinstance(header[1], _BYTES_OR_NONE)
            ):
                raise TypeError(f"a header is a (str, bytes | None) pair, not {header!r}")
        if timestamp_ms is not None and not 0 <= timestamp_ms < 2**63:
            raise ValueError(f"timestamp_ms must be a non-negative int64, not {timestamp_ms}")
        record_bytes = estimate_record_bytes(key, value, header_list)
        if record_bytes > self._record_bytes_max:
            raise RecordTooLargeError(
                f"a record of about {record_bytes} bytes exceeds the limit of "
                f"{self._record_bytes_max} bytes (max_request_size / buffer_memory)"
            )
        now = trio.current_time()
        deadline = now + self._max_block_s
        metadata = self._cluster.metadata
        info = metadata.topics.get(topic)
        if info is None or not info.partitions:
            info = await self._cluster.wait_for_topic(topic, deadline)
            self._check_open()
        num_partitions = len(info.partitions)
        if partition is None:
            partition = self._partitioner.partition(
                topic,
                key,
                record_bytes,
                num_partitions,
                lambda: metadata.available_partitions(topic),
            )
        elif not 0 <= partition < num_partitions:
            raise UnknownTopicOrPartitionError(
                f"partition {partition} of topic {topic!r}, which has {num_partitions}"
            )
        if timestamp_ms is None:
            timestamp_ms = self._now_ms()
        record = RecordInput(value, key, header_list, timestamp_ms)
        partitions = self._partitions_of.get(topic)
        if partitions is None or len(partitions) != num_partitions:
            partitions = tuple(TopicPartition(topic, p) for p in range(num_partitions))
            self._partitions_of[topic] = partitions
        tp = partitions[partition]
        accumulator = self._accumulator
        if not accumulator.has_room(record_bytes) or self._append_lock.locked():
            # Blocked senders queue on the (FIFO) lock, so space goes to them in order.
            async with self._append_lock:
                while not accumulator.has_room(record_bytes):
                    self._check_open()
                    if not await self._sender.memory_freed.wait_until(deadline):
                        raise KafkaTimeoutError(
                            f"no room in buffer_memory within max_block_ms "
                            f"({self.config.max_block_ms} ms)"
                        )
                self._check_open()
                batch, index, _ = accumulator.append(tp, record, record_bytes, now)
                self._wake()
                return RecordFuture(batch, index, timestamp_ms)
        batch, index, wake = accumulator.append(tp, record, record_bytes, now)
        if wake:
            # A batch was started or filled: let the senders run now. Otherwise stay on
            # (only a cancellation point), so that a loop of sends costs little per record.
            self._wake()
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        return RecordFuture(batch, index, timestamp_ms)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[Header] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """`send` and await the delivery."""
        future = await self.send(topic, value, key, headers, partition, timestamp_ms)
        return await future

    async def flush(self, timeout_ms: int | None = None) -> None:
        """Send everything queued now, ignoring `linger_ms`, and wait until each of those
        records is acknowledged or failed. `KafkaTimeoutError` after `timeout_ms`."""
        pending = self._accumulator.incomplete()
        if not pending:
            return
        self._accumulator.flushes_in_progress += 1
        self._wake()
        try:
            with trio.fail_after(float("inf") if timeout_ms is None else timeout_ms / 1000):
                for batch in pending:
                    await _completion(batch).wait()
        except trio.TooSlowError:
            raise KafkaTimeoutError(f"flush did not finish within {timeout_ms} ms") from None
        finally:
            self._accumulator.flushes_in_progress -= 1

    async def partitions_for(self, topic: str) -> list[int]:
        """The partition indexes of `topic` (waiting up to `max_block_ms` for metadata)."""
        self._check_open()
        deadline = trio.current_time() + self.config.max_block_ms / 1000
        info = await self._cluster.wait_for_topic(topic, deadline)
        return sorted(info.partitions)

    @property
    def buffered_bytes(self) -> int:
        """Estimated bytes of records accepted and not yet acknowledged or failed."""
        return self._accumulator.memory_used_bytes
