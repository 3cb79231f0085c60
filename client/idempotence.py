"""Idempotent-producer bookkeeping: producer id, epoch and per-partition sequences. No I/O.

With idempotence the broker accepts a partition's batch only if its base sequence follows
the last one it appended for this producer id (sequences count records, wrapping from
2**31-1 to 0), and answers a resent batch it already has with the original offsets. So the
client must:

- number each batch once, when it is first sent, and resend the same bytes on retries;
- resend failed batches in sequence order (the accumulator's ordering rules do that);
- tell an OUT_OF_ORDER_SEQUENCE_NUMBER caused by an earlier batch of ours that failed
  (retry it) from one where the broker lost track of us (the batch is the lowest
  unacknowledged sequence: a real failure).

After a batch with a sequence fails for good, the partition's later sequences can never be
accepted, so the producer drops the producer id (`reset_pending`) and asks for a new one once
nothing is in flight; sequences restart at 0 under it.
"""

from __future__ import annotations

from tidelog.client.structs import TopicPartition

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
_SEQUENCE_MODULUS = 2**31


class IdempotenceState:
    """The producer id in use and, per partition, the next sequence and unacknowledged ones."""

    def __init__(self) -> None:
        self.producer_id = NO_PRODUCER_ID
        self.producer_epoch = NO_PRODUCER_EPOCH
        self.reset_pending = False
        self._next_sequence: dict[TopicPartition, int] = {}
        self._unacknowledged: dict[TopicPartition, list[int]] = {}

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID and not self.reset_pending

    def set_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        """Start over under a new producer id: every partition's sequence restarts at 0."""
        if producer_id < 0 or producer_epoch < 0:
            raise ValueError(f"invalid producer id/epoch {producer_id}/{producer_epoch}")
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.reset_pending = False
        self._next_sequence.clear()
        self._unacknowledged.clear()

    def assign(self, tp: TopicPartition, record_count: int) -> int:
        """The base sequence for a new batch of `record_count` records to `tp`."""
        assert self.has_producer_id, "sequence requested without a producer id"
        base = self._next_sequence.get(tp, 0)
        self._next_sequence[tp] = (base + record_count) % _SEQUENCE_MODULUS
        self._unacknowledged.setdefault(tp, []).append(base)
        return base

    def acknowledged(self, tp: TopicPartition, base_sequence: int) -> None:
        """The broker has the batch starting at `base_sequence`."""
        pending = self._unacknowledged.get(tp)
        if pending and base_sequence in pending:
            pending.remove(base_sequence)

    def is_first_unacknowledged(self, tp: TopicPartition, base_sequence: int) -> bool:
        """Whether every earlier batch to `tp` was acknowledged."""
        pending = self._unacknowledged.get(tp)
        return pending is not None and bool(pending) and pending[0] == base_sequence

    def abandon(self) -> None:
        """A sequenced batch failed for good: request a new producer id."""
        self.reset_pending = True
