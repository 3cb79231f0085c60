"""The producer's record accumulator: per-partition batches waiting to be sent. No I/O.

Records are appended to the newest open batch of their partition; a batch closes for
appends when the next record would take it past `batch_size` (a record larger than that gets
a batch of its own). A partition's first batch is *ready* when it is full, when a later
batch exists behind it, when it has lingered `linger_s`, or while a flush or close is in
progress. Senders ask `ready()` which brokers have ready data and when to ask again, then
`drain()` a node's batches into one produce request.

Ordering: each partition's queue is kept in append order, re-queued (retried) batches go
back to the front in that order, and a retried batch is drained only when nothing else of
its partition is in flight. Together with one batch per partition per request this keeps
records in order across retries, with up to `max_in_flight` batches per partition in flight
otherwise.

Memory: every record is charged its size estimate (`estimate_record_bytes`, an upper bound
of its uncompressed encoding) and every batch `BATCH_OVERHEAD_BYTES`, from `append` until
the batch completes. `has_room` tells the producer when to block `send` instead.

Time is the trio clock in seconds (`now` arguments); nothing here sleeps or awaits.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from tidelog.client.protocol.records import RecordInput
from tidelog.client.structs import Header, TopicPartition

BATCH_OVERHEAD_BYTES = 61
"""A RecordBatch v2 header."""
RECORD_OVERHEAD_BYTES = 1 + 10 + 5 + 5 + 5 + 5 + 5
"""Upper bound of a record's fixed fields: attributes, timestamp delta (varlong), offset
delta, key and value lengths, header count, and the record's own length prefix."""
HEADER_OVERHEAD_BYTES = 5 + 5
"""Upper bound of one header's two length varints."""


def estimate_record_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[Header] = ()
) -> int:
    """An upper bound of the record's uncompressed size inside a batch."""
    size = RECORD_OVERHEAD_BYTES + (len(key) if key else 0) + (len(value) if value else 0)
    for header_key, header_value in headers:
        size += (
            HEADER_OVERHEAD_BYTES
            + len(header_key.encode())
            + (len(header_value) if header_value else 0)
        )
    return size


class Completion(Protocol):
    """Signalled once when a batch completes (a `trio.Event` in the producer)."""

    def set(self) -> None: ...


class ProducerBatch:
    """Records for one partition that are sent, retried and acknowledged as one unit.

    Lifecycle: open (taking appends) -> drained (`attempts` > 0, `payload` encoded once and
    resent unchanged on retries) -> done, with either (`base_offset`, `log_append_time_ms`)
    or `error` set and `completion` signalled.
    """

    __slots__ = (
        "attempts",
        "base_offset",
        "base_sequence",
        "completion",
        "created_at",
        "done",
        "error",
        "in_flight",
        "log_append_time_ms",
        "payload",
        "producer_epoch",
        "producer_id",
        "record_count",
        "records",
        "retry_at",
        "serial",
        "size_bytes",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, serial: int, created_at: float, completion: Completion
    ) -> None:
        self.tp = tp
        self.serial = serial
        """Creation order; within a partition it is append order (and sequence order)."""
        self.created_at = created_at
        self.completion = completion
        self.records: list[RecordInput] = []
        self.record_count = 0
        self.size_bytes = BATCH_OVERHEAD_BYTES
        self.attempts = 0
        self.retry_at = 0.0
        self.in_flight = False
        self.payload: bytes | None = None
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1
        """Set (with the producer id and epoch) when the batch is first sent idempotently."""
        self.base_offset = -1
        self.log_append_time_ms = -1
        self.error: BaseException | None = None
        self.done = False

    @property
    def is_open(self) -> bool:
        return self.attempts == 0 and not self.in_flight

    def __repr__(self) -> str:
        return (
            f"<ProducerBatch {self.tp.topic}-{self.tp.partition} #{self.serial} "
            f"records={self.record_count} attempts={self.attempts} seq={self.base_sequence}>"
        )


class ReadyCheck:
    """The answer of `RecordAccumulator.ready`."""

    __slots__ = ("next_check_at", "ready_nodes", "unknown_leader_topics")

    def __init__(self) -> None:
        self.ready_nodes: set[int] = set()
        self.next_check_at = float("inf")
        """When something not yet ready may become ready (linger or retry backoff ending)."""
        self.unknown_leader_topics: set[str] = set()


LeaderOf = Callable[[TopicPartition], int | None]


class RecordAccumulator:
    """Batches per partition, the memory they hold, and what is in flight."""

    def __init__(
        self,
        *,
        batch_size: int,
        linger_s: float,
        buffer_memory: int,
        max_in_flight: int,
        completion_factory: Callable[[], Completion],
    ) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.buffer_memory = buffer_memory
        self.max_in_flight = max_in_flight
        self._completion_factory = completion_factory
        self._queues: dict[TopicPartition, deque[ProducerBatch]] = {}
        self._in_flight: dict[TopicPartition, int] = {}
        self._incomplete: dict[ProducerBatch, None] = {}  # insertion-ordered set
        self._serials = itertools.count()
        self._drain_start = 0
        self.memory_used_bytes = 0
        self.flushes_in_progress = 0
        self.closing = False
        """Set when the producer closes: everything queued is ready at once."""

    # --- appending ---------------------------------------------------------------------

    def has_room(self, record_bytes: int) -> bool:
        """Whether a record of this estimated size fits in `buffer_memory` now."""
        return self.memory_used_bytes + record_bytes + BATCH_OVERHEAD_BYTES <= self.buffer_memory

    def append(
        self, tp: TopicPartition, record: RecordInput, record_bytes: int, now: float
    ) -> tuple[ProducerBatch, int, bool]:
        """Add a record; returns (its batch, its index in the batch, whether senders should
        re-check readiness because a batch was created or filled up).

        The caller checks `has_room` first; appending beyond `buffer_memory` is a bug.
        """
        assert self.has_room(record_bytes), "append without room in buffer_memory"
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        batch = queue[-1] if queue else None
        wake = False
        if (
            batch is None
            or not batch.is_open
            or (batch.record_count and batch.size_bytes + record_bytes > self.batch_size)
        ):
            batch = ProducerBatch(tp, next(self._serials), now, self._completion_factory())
            queue.append(batch)
            self._incomplete[batch] = None
            self.memory_used_bytes += BATCH_OVERHEAD_BYTES
            wake = True
        index = batch.record_count
        batch.records.append(record)
        batch.record_count += 1
        batch.size_bytes += record_bytes
        self.memory_used_bytes += record_bytes
        if batch.size_bytes >= self.batch_size:
            wake = True
        return batch, index, wake

    # --- sending -----------------------------------------------------------------------

    def _sendable(self, tp: TopicPartition, batch: ProducerBatch, now: float) -> bool:
        """Whether the partition's first batch may go out now, by the ordering rules."""
        in_flight = self._in_flight.get(tp, 0)
        if batch.attempts:
            return in_flight == 0 and now >= batch.retry_at
        return in_flight < self.max_in_flight

    def ready(self, now: float, leader_of: LeaderOf) -> ReadyCheck:
        """Which nodes have a batch to send now, and when to check again otherwise."""
        check = ReadyCheck()
        urgent = self.closing or self.flushes_in_progress > 0
        for tp, queue in self._queues.items():
            if not queue:
                continue
            leader = leader_of(tp)
            if leader is None:
                check.unknown_leader_topics.add(tp.topic)
                continue
            if leader in check.ready_nodes:
                continue
            first = queue[0]
            if first.attempts:
                if self._in_flight.get(tp, 0) == 0:
                    if now >= first.retry_at:
                        check.ready_nodes.add(leader)
                    else:
                        check.next_check_at = min(check.next_check_at, first.retry_at)
                continue
            if not self._sendable(tp, first, now):
                continue  # a completing request wakes the senders
            linger_until = first.created_at + self.linger_s
            full = len(queue) > 1 or first.size_bytes >= self.batch_size
            if urgent or full or now >= linger_until:
                check.ready_nodes.add(leader)
            else:
                check.next_check_at = min(check.next_check_at, linger_until)
        return check

    def drain(
        self, node_id: int, now: float, leader_of: LeaderOf, max_request_bytes: int
    ) -> list[ProducerBatch]:
        """Take at most one batch per partition led by `node_id`, up to about
        `max_request_bytes` in total (always at least one batch), and mark them in flight.

        Partitions are visited round-robin across calls so none is starved. Every batch of
        the node may go, lingered or not: it rides along in a request that is being sent.
        """
        partitions = [tp for tp, q in self._queues.items() if q and leader_of(tp) == node_id]
        if not partitions:
            return []
        start = self._drain_start % len(partitions)
        self._drain_start += 1
        drained: list[ProducerBatch] = []
        size = 0
        for tp in itertools.chain(partitions[start:], partitions[:start]):
            queue = self._queues[tp]
            first = queue[0]
            if not self._sendable(tp, first, now):
                continue
            if drained and size + first.size_bytes > max_request_bytes:
                continue
            queue.popleft()
            first.in_flight = True
            first.attempts += 1
            self._in_flight[tp] = self._in_flight.get(tp, 0) + 1
            size += first.size_bytes
            drained.append(first)
        return drained

    # --- outcomes ----------------------------------------------------------------------

    def _land(self, batch: ProducerBatch) -> None:
        if batch.in_flight:
            batch.in_flight = False
            remaining = self._in_flight[batch.tp] - 1
            if remaining:
                self._in_flight[batch.tp] = remaining
            else:
                del self._in_flight[batch.tp]

    def complete(self, batch: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        """The batch was acknowledged (or sent with acks=0)."""
        self._land(batch)
        batch.base_offset = base_offset
        batch.log_append_time_ms = log_append_time_ms
        self._finish(batch)

    def fail(self, batch: ProducerBatch, error: BaseException) -> None:
        """The batch will not be (re)sent; its records fail with `error`."""
        self._land(batch)
        self._remove_queued(batch)
        batch.error = error
        self._finish(batch)

    def requeue(self, batch: ProducerBatch, retry_at: float) -> None:
        """Put an in-flight batch back for another attempt no earlier than `retry_at`.

        It goes back in front of the partition's never-sent batches, among the other
        re-queued ones by append order.
        """
        assert batch.in_flight and not batch.done
        self._land(batch)
        batch.retry_at = retry_at
        queue = self._queues.setdefault(batch.tp, deque())
        position = 0
        for queued in queue:
            if not queued.attempts or queued.serial > batch.serial:
                break
            position += 1
        queue.insert(position, batch)

    def _remove_queued(self, batch: ProducerBatch) -> None:
        queue = self._queues.get(batch.tp)
        if queue and batch in queue:
            queue.remove(batch)

    def _finish(self, batch: ProducerBatch) -> None:
        if batch.done:
            return
        batch.done = True
        batch.records = []
        self.memory_used_bytes -= batch.size_bytes
        del self._incomplete[batch]
        batch.completion.set()

    def expired(self, now: float, delivery_timeout_s: float) -> list[ProducerBatch]:
        """Queued (not in flight) batches whose `created_at + delivery_timeout_s` is at or
        before `now`: the same sum the send loop sleeps until, so that a batch due at that
        instant is expired then (`now - timeout` can round the other way, and the loop
        would wake again at once, forever)."""
        return [
            batch
            for queue in self._queues.values()
            for batch in queue
            if batch.created_at + delivery_timeout_s <= now
        ]

    def oldest_queued_at(self) -> float:
        """Creation time of the oldest batch waiting to be sent (inf when none waits)."""
        return min((q[0].created_at for q in self._queues.values() if q), default=float("inf"))

    def queued(self, tp: TopicPartition) -> list[ProducerBatch]:
        """The partition's batches waiting to be sent, in send order."""
        return list(self._queues.get(tp, ()))

    def in_flight_count(self, tp: TopicPartition) -> int:
        return self._in_flight.get(tp, 0)

    def incomplete(self) -> list[ProducerBatch]:
        """Every batch not yet acknowledged or failed, oldest first."""
        return list(self._incomplete)
