"""Idempotent-producer bookkeeping for one partition: a pure core, no I/O.

For every producer id that wrote to the partition it keeps the producer epoch and the
sequence ranges and offsets of its last `BATCHES_PER_PRODUCER` batches. Before an append,
`check` classifies each batch of a produce request:

- a batch without a producer id (-1) is not checked;
- a retried batch whose sequence range matches a cached one is a duplicate: the broker
  answers with the original offsets and writes nothing;
- an older epoch is fenced (INVALID_PRODUCER_EPOCH);
- a new epoch must start at sequence 0, unless the producer is unknown to this partition
  (its state expired or was deleted with the log), in which case any sequence starts it;
- otherwise the batch must continue the last sequence (with wrap-around at 2**31-1), or it
  is OUT_OF_ORDER_SEQUENCE_NUMBER.

After the append, `record` stores the batch with its assigned offsets. The state is rebuilt
after a restart by replaying the headers of the batches in the log through `record`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tidelog.client.protocol.errors import ErrorCode

BATCHES_PER_PRODUCER = 5
"""How many recent batches per producer are remembered to answer retried duplicates."""

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
INT32_MAX = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """One appended batch of a producer: its sequence range and the offsets it received."""

    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int
    timestamp_ms: int


@dataclass(slots=True)
class ProducerEntry:
    """What a partition remembers of one producer id."""

    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(
        default_factory=lambda: deque(maxlen=BATCHES_PER_PRODUCER)
    )
    last_timestamp_ms: int = -1
    coordinator_epoch: int = -1
    current_txn_start_offset: int = -1

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """The verdict on one incoming batch: accept, answer as a duplicate, or reject."""

    error: ErrorCode = ErrorCode.NONE
    duplicate_of: BatchMetadata | None = None

    @property
    def accepted(self) -> bool:
        return self.error == ErrorCode.NONE and self.duplicate_of is None


ACCEPT = SequenceCheck()


def _in_sequence(last_sequence: int, next_first_sequence: int) -> bool:
    return next_first_sequence == last_sequence + 1 or (
        next_first_sequence == 0 and last_sequence == INT32_MAX
    )


def _last_sequence(first_sequence: int, last_offset_delta: int) -> int:
    last = first_sequence + last_offset_delta
    return last - INT32_MAX - 1 if last > INT32_MAX else last


class ProducerStateTable:
    """Producer ids -> entries for one partition, bounded by `max_producers`.

    When the table is full, the producer that wrote least recently is forgotten; if it
    writes again it is treated as unknown (any sequence restarts it), as Kafka does after
    `producer.id.expiration.ms`.
    """

    def __init__(self, max_producers: int = 10_000) -> None:
        self.max_producers = max_producers
        self._entries: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self._entries.get(producer_id)

    def entries(self) -> Iterable[ProducerEntry]:
        return self._entries.values()

    def check(
        self, producer_id: int, producer_epoch: int, first_sequence: int, last_offset_delta: int
    ) -> SequenceCheck:
        """Classify an incoming batch with these header fields; changes nothing."""
        if producer_id == NO_PRODUCER_ID:
            return ACCEPT
        entry = self._entries.get(producer_id)
        if entry is None:
            return ACCEPT
        if producer_epoch < entry.epoch:
            return SequenceCheck(ErrorCode.INVALID_PRODUCER_EPOCH)
        last_sequence = _last_sequence(first_sequence, last_offset_delta)
        if producer_epoch == entry.epoch:
            for cached in entry.batches:
                if (
                    cached.first_sequence == first_sequence
                    and cached.last_sequence == last_sequence
                ):
                    return SequenceCheck(duplicate_of=cached)
            if entry.batches and not _in_sequence(entry.last_sequence, first_sequence):
                return SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            return ACCEPT
        # A new epoch (after InitProducerId bumped it) starts over at sequence 0.
        if first_sequence != 0:
            return SequenceCheck(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        return ACCEPT

    def record(
        self,
        producer_id: int,
        producer_epoch: int,
        first_sequence: int,
        first_offset: int,
        last_offset: int,
        timestamp_ms: int,
    ) -> None:
        """Remember an appended batch (also used to replay the log after a restart)."""
        if producer_id == NO_PRODUCER_ID:
            return
        entry = self._entries.pop(producer_id, None)
        if entry is None or producer_epoch > entry.epoch:
            entry = ProducerEntry(producer_id, producer_epoch)
        self._entries[producer_id] = entry  # re-inserted: dict order is recency order
        last_sequence = _last_sequence(first_sequence, last_offset - first_offset)
        entry.batches.append(
            BatchMetadata(first_sequence, last_sequence, first_offset, last_offset, timestamp_ms)
        )
        entry.last_timestamp_ms = max(entry.last_timestamp_ms, timestamp_ms)
        while len(self._entries) > self.max_producers:
            del self._entries[next(iter(self._entries))]

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for longer than `expiration_ms`; return how many."""
        stale = [
            pid
            for pid, entry in self._entries.items()
            if entry.last_timestamp_ms >= 0 and now_ms - entry.last_timestamp_ms > expiration_ms
        ]
        for pid in stale:
            del self._entries[pid]
        return len(stale)

    def truncate_to(self, offset: int) -> None:
        """Drop batches at or after `offset` (the log was truncated there)."""
        for pid in list(self._entries):
            entry = self._entries[pid]
            kept = [b for b in entry.batches if b.last_offset < offset]
            if not kept:
                del self._entries[pid]
                continue
            entry.batches.clear()
            entry.batches.extend(kept)
            entry.last_timestamp_ms = max(b.timestamp_ms for b in kept)
