"""The consumer's partition states and fetched-data buffer, and fetch response decoding.
No I/O.

Per assigned partition, two offsets:

- `position`: the next offset the application gets (what `Consumer.position` reports);
- `fetch_position`: the next offset to fetch; ahead of `position` while fetched records
  wait in the buffer, so the next fetch is already on its way while the application works.

A partition is fetched again while less than `max_buffered_bytes` of its data waits (the
consumer uses twice max_partition_fetch_bytes: one response being handed out, the next
one fetched ahead). Memory is bounded per partition, and a slow handler holds back only its
own partitions' fetches, once it is a whole response behind.

A seek (or offset reset) bumps the partition's `seek_epoch` and drops its buffer; responses
to fetches sent before the seek carry the old epoch and are discarded.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from tidelog.client.errors import KafkaError
from tidelog.client.protocol.records import (
    DECOMPRESSED_BYTES_MAX_DEFAULT,
    ControlRecordType,
    control_record_type,
    decode_batches,
)
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import ConsumerRecord, TopicPartition


class FetchedChunk:
    """Records of one partition from one fetch response, handed out in order."""

    __slots__ = ("index", "next_offset", "records", "seek_epoch", "size_bytes")

    def __init__(
        self, records: list[ConsumerRecord], next_offset: int, size_bytes: int, seek_epoch: int
    ) -> None:
        self.records = records
        self.index = 0
        self.next_offset = next_offset
        """The offset after the last batch of the chunk (control batches included)."""
        self.size_bytes = size_bytes
        self.seek_epoch = seek_epoch


class PartitionState:
    """What the consumer knows about one assigned partition."""

    __slots__ = (
        "buffered_bytes",
        "chunks",
        "error",
        "fetch_position",
        "fetching",
        "held",
        "high_watermark",
        "last_stable_offset",
        "log_start_offset",
        "position",
        "reset_to",
        "retry_at",
        "seek_epoch",
        "use_committed",
    )

    def __init__(self) -> None:
        self.position: int | None = None
        self.fetch_position: int | None = None
        self.reset_to: int | None = None
        """A pending offset reset: ListOffsets timestamp (EARLIEST/LATEST)."""
        self.seek_epoch = 0
        self.high_watermark = -1
        self.last_stable_offset = -1
        self.log_start_offset = -1
        self.chunks: deque[FetchedChunk] = deque()
        self.buffered_bytes = 0
        self.fetching = False
        self.error: KafkaError | None = None
        """An error to raise to the application; the partition is not fetched meanwhile."""
        self.retry_at = 0.0
        self.use_committed = False
        """Without a position: start from the group's committed offset if there is one
        (before `reset_to` or the auto_offset_reset policy)."""
        self.held = False
        """Without a position: not resolved yet (a group assignment whose callback runs)."""

    def set_position(self, offset: int) -> None:
        """Move both offsets to `offset`, dropping buffered data and in-flight results."""
        self.position = offset
        self.fetch_position = offset
        self.reset_to = None
        self.error = None
        self.use_committed = False
        self.held = False
        self._drop_buffer()

    def request_reset(self, timestamp: int) -> None:
        self.position = None
        self.fetch_position = None
        self.reset_to = timestamp
        self.error = None
        self.use_committed = False
        self.held = False
        self._drop_buffer()

    def _drop_buffer(self) -> None:
        self.seek_epoch += 1
        self.chunks.clear()
        self.buffered_bytes = 0
        self.retry_at = 0.0

    def add_chunk(self, chunk: FetchedChunk) -> None:
        """Buffer fetched records (already checked against `seek_epoch`)."""
        self.fetch_position = chunk.next_offset
        if not chunk.records and not self.chunks:
            self.position = chunk.next_offset  # nothing to hand out: just move on
            return
        self.chunks.append(chunk)
        self.buffered_bytes += chunk.size_bytes


class SubscriptionState:
    """The assigned partitions and their states, and the records buffered for the app."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self._take_start = 0
        self.released_chunks = 0
        """Counts fetched chunks handed out completely (their buffer space is free)."""

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment; partitions kept keep their state."""
        wanted = list(dict.fromkeys(partitions))
        self.partitions = {tp: self.partitions.get(tp) or PartitionState() for tp in wanted}

    def state(self, tp: TopicPartition) -> PartitionState:
        try:
            return self.partitions[tp]
        except KeyError:
            raise KafkaError(f"{tp} is not assigned to this consumer") from None

    def needing_reset(self) -> list[TopicPartition]:
        """Partitions without a position to resolve now (not held)."""
        return [
            tp for tp, s in self.partitions.items()
            if s.position is None and s.error is None and not s.held
        ]  # fmt: skip

    def fetchable(
        self,
        now: float,
        leader_of: Callable[[TopicPartition], int | None],
        max_buffered_bytes: int,
    ) -> dict[int, list[TopicPartition]]:
        """Partitions to fetch now, by leader."""
        out: dict[int, list[TopicPartition]] = {}
        for tp, s in self.partitions.items():
            if (
                s.fetch_position is None
                or s.fetching
                or s.error is not None
                or s.buffered_bytes >= max_buffered_bytes
                or now < s.retry_at
            ):
                continue
            leader = leader_of(tp)
            if leader is not None:
                out.setdefault(leader, []).append(tp)
        return out

    def next_retry_at(self, now: float) -> float:
        """When a partition now held back by a retry backoff may be fetched again."""
        return min(
            (
                s.retry_at
                for s in self.partitions.values()
                if s.fetch_position is not None and s.retry_at > now
            ),
            default=float("inf"),
        )

    def has_records(self, partitions: Sequence[TopicPartition] = ()) -> bool:
        selected = partitions or self.partitions
        return any(tp in self.partitions and self.partitions[tp].chunks for tp in selected)

    def pending_error(self, partitions: Sequence[TopicPartition] = ()) -> KafkaError | None:
        """The first partition error to raise (it stays until a seek clears it)."""
        selected = partitions or self.partitions
        for tp in selected:
            state = self.partitions.get(tp)
            if state is not None and state.error is not None and not state.chunks:
                return state.error
        return None

    def take(
        self, max_records: int, partitions: Sequence[TopicPartition] = ()
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to `max_records` buffered records, advancing positions past them. Partitions
        take turns first, so one busy partition cannot starve the others."""
        selected = [tp for tp in (partitions or self.partitions) if tp in self.partitions]
        if not selected:
            return {}
        start = self._take_start % len(selected)
        self._take_start += 1
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        budget = max_records
        for tp in itertools.chain(selected[start:], selected[:start]):
            state = self.partitions[tp]
            while state.chunks and budget > 0:
                chunk = state.chunks[0]
                taken = chunk.records[chunk.index : chunk.index + budget]
                chunk.index += len(taken)
                budget -= len(taken)
                if taken:
                    out.setdefault(tp, []).extend(taken)
                    state.position = taken[-1].offset + 1
                if chunk.index >= len(chunk.records):
                    state.chunks.popleft()
                    state.buffered_bytes -= chunk.size_bytes
                    state.position = chunk.next_offset
                    self.released_chunks += 1
            if budget <= 0:
                break
        return out

    def take_one(self, partitions: Sequence[TopicPartition] = ()) -> ConsumerRecord | None:
        """The next buffered record (partitions take turns), or None; like `take(1)`."""
        selected = partitions or list(self.partitions)
        count = len(selected)
        start = self._take_start
        for i in range(count):
            tp = selected[(start + i) % count]
            state = self.partitions.get(tp)
            if state is None or not state.chunks:
                continue
            self._take_start = start + i + 1
            chunk = state.chunks[0]
            record = chunk.records[chunk.index]
            chunk.index += 1
            state.position = record.offset + 1
            if chunk.index >= len(chunk.records):
                state.chunks.popleft()
                state.buffered_bytes -= chunk.size_bytes
                state.position = chunk.next_offset
                self.released_chunks += 1
            return record
        return None


def decode_partition_records(
    tp: TopicPartition,
    records: bytes | memoryview,
    fetch_offset: int,
    *,
    aborted_transactions: Sequence[Message] | None,
    read_committed: bool,
    check_crcs: bool,
    max_decompressed_bytes: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> tuple[list[ConsumerRecord], int]:
    """The records at or after `fetch_offset` in one partition's fetched bytes, and the
    offset after the last whole batch (`fetch_offset` if there is none).

    Control batches are never returned. Under read_committed, records of aborted
    transactions are dropped: a transactional batch is skipped while its producer id has an
    aborted transaction (from `aborted_transactions`) that started at or before the batch
    and whose abort marker has not been passed yet. A trailing partial batch (cut at the
    fetch size) is ignored. Raises `CorruptMessageError` for bad data.
    """
    aborted: deque[tuple[int, int]] = deque(
        sorted(
            ((a["first_offset"], a["producer_id"]) for a in aborted_transactions or ()),
        )
    )
    aborting: set[int] = set()
    out: list[ConsumerRecord] = []
    next_offset = fetch_offset
    topic, partition = tp
    for header, batch in decode_batches(
        records,
        verify_crc=check_crcs,
        allow_partial_tail=True,
        max_decompressed_bytes=max_decompressed_bytes,
    ):
        if header.next_offset <= fetch_offset:
            continue
        next_offset = header.next_offset
        if read_committed:
            while aborted and aborted[0][0] <= header.last_offset:
                aborting.add(aborted.popleft()[1])
            if header.is_control:
                if (
                    header.producer_id in aborting
                    and batch
                    and control_record_type(batch[0]) == ControlRecordType.ABORT
                ):
                    aborting.discard(header.producer_id)
                continue
            if header.is_transactional and header.producer_id in aborting:
                continue
        elif header.is_control:
            continue
        timestamp_type = header.timestamp_type
        leader_epoch = header.partition_leader_epoch
        out.extend(
            ConsumerRecord(
                topic,
                partition,
                record.offset,
                record.timestamp_ms,
                timestamp_type,
                record.key,
                record.value,
                record.headers,
                leader_epoch,
            )
            for record in batch
            if record.offset >= fetch_offset
        )
    return out, next_offset
