"""Log compaction (cleanup.policy=compact): keep the latest record of each key.

`compact(log, now_ms, delete_retention_ms)` runs one cleaning pass, the way Kafka's cleaner
does:

- The cleanable part of the log is its non-active segments, ending at or below `max_offset`
  (pass the high watermark). Offsets below `log.first_dirty_offset` were cleaned by an
  earlier pass (since the log was opened); the rest of the cleanable part is dirty.
- A key map (key -> offset of the key's latest record) is built from the dirty records,
  whole segments at a time, until it holds about `max_map_bytes`; the mapped segments end
  at `map_end`. Control batches and records without a key do not enter the map.
- Every cleanable segment below `map_end` is filtered. A record is kept unless it has no
  key (Kafka refuses those on compacted topics), or the map holds a later record of its key,
  or it is a tombstone (null value) below the old first dirty offset whose batch's max
  timestamp is more than `delete_retention_ms` before `now_ms`. A tombstone thus survives
  at least one pass after it was written, and then `delete_retention_ms`. Control batches
  are kept whole, as is a batch that cannot be decoded (logged).
- Consecutive segments are merged into one while their sizes before cleaning add up to at
  most `segment_bytes` and their offsets fit the int32 index; a segment that neither loses
  records nor merges is left as it is. Each rewritten run is swapped in crash-safely
  (`storage.segment_swap`), oldest first, so after a crash every run is either old or new
  and the new ones come first: the latest value of every key is there either way.

A rewritten batch keeps its base offset, last offset delta, partition leader epoch,
attributes, base timestamp and producer id, epoch and base sequence; kept records keep their
bytes, hence their offsets and timestamps. A compressed batch is decompressed, filtered and
compressed again with its codec (default level). Its max timestamp is recomputed from the
kept records (CreateTime; a LogAppendTime batch keeps it). A batch left without records is
dropped, except the last batch of each rewritten segment: it stays as an empty, uncompressed
batch (header only), so that the segment still ends where the next one starts (log
recovery relies on that to notice a lost segment) and a consumer's next fetch offset,
`lastOffset + 1`, moves past the gap. Fetching a removed offset returns the next batch.

Producer state: batches that compaction drops take their producer's sequence history with
them. A producer whose every batch was compacted away is unknown to the partition after a
restart, as after producer id expiry in Kafka; that only matters to retries of those old
batches, and compaction never touches the active segment.

Threading: only `log.begin_compaction` and `log.commit_compaction` take the log's lock; the
reading, filtering and writing in between runs without it (in a worker thread, say) while
the owner thread appends and reads. If the log changed meanwhile in a way that matters
(truncation, retention, closing), the pass is discarded and `committed` is False.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from crc32c import crc32c

from tidelog.client.protocol.compression import Compression, compress, decompress
from tidelog.client.protocol.errors import CorruptMessageError, ProtocolError
from tidelog.client.protocol.records import (
    BATCH_HEADER_BYTES,
    BATCH_LOG_OVERHEAD,
    DECOMPRESSED_BYTES_MAX_DEFAULT,
    MAGIC,
    RECORD_BYTES_MIN,
    BatchHeader,
    TimestampType,
    parse_batch_header,
    validate_batch,
)
from tidelog.storage.config import INT32_MAX
from tidelog.storage.filesystem import FileHandle
from tidelog.storage.log import CompactionSnapshot, PartitionLog
from tidelog.storage.segment import InvalidBatchError
from tidelog.storage.segment_swap import CleanedSegment, CleanedSegmentWriter, discard

logger = logging.getLogger(__name__)

MAX_MAP_BYTES_DEFAULT = 64 * 1024 * 1024
"""Memory for the key map of one pass, as Kafka's log.cleaner.dedupe.buffer.size bounds it."""

# A dict slot, a bytes object's header and an int: what a map entry costs beyond its key.
_MAP_ENTRY_OVERHEAD_BYTES = 120
_READ_CHUNK_BYTES = 1024 * 1024

# The RecordBatch v2 header (see client.protocol.records), packed when a batch is rebuilt.
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_CRC_POSITION = 17
_ATTRIBUTES_POSITION = 21
_CODEC_MASK = 0x07


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one pass did to the segments it cleaned (those below its map's end).

    `records_removed` counts every record dropped; `tombstones_removed` those of them that
    were tombstones dropped for age (the latest record of their key).
    `next_tombstone_due_ms` is the earliest time at which a tombstone the pass kept
    becomes removable by a later pass, or None. `committed` is False when the log changed
    during the pass and nothing was swapped in (the counts then describe the discarded work).
    """

    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    records_before: int
    records_removed: int
    tombstones_removed: int
    first_dirty_offset: int
    next_tombstone_due_ms: int | None
    committed: bool


class _Record(NamedTuple):
    """A record of a decoded batch: its bytes are `data[start:end]` of the records section."""

    start: int
    end: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    is_tombstone: bool


class _DecodedBatch(NamedTuple):
    data: bytes
    records: list[_Record]


def compact(
    log: PartitionLog,
    now_ms: int,
    delete_retention_ms: int,
    *,
    max_offset: int | None = None,
    max_map_bytes: int = MAX_MAP_BYTES_DEFAULT,
    max_decompressed_bytes: int = DECOMPRESSED_BYTES_MAX_DEFAULT,
) -> CompactionResult:
    """Run one cleaning pass over `log` (see the module doc); blocks on I/O.

    Raises ValueError unless the log's cleanup policy includes compact, RuntimeError when
    another pass over the log is running, and OSError (the log stays usable, unless the
    error hit the swap: then LogOfflineError, and reopening completes the swap).
    """
    if not log.config.compaction_enabled:
        raise ValueError(f"{log.directory}: cleanup.policy {log.config.cleanup_policy!r}")
    if delete_retention_ms < 0 or max_map_bytes < 0:
        raise ValueError("delete_retention_ms and max_map_bytes must not be negative")
    snapshot = log.begin_compaction(max_offset)
    cleaning = _Pass(log, snapshot, now_ms, delete_retention_ms, max_decompressed_bytes)
    try:
        cleaning.build_key_map(max_map_bytes)
        cleaning.clean()
    except InvalidBatchError as exc:
        # A segment changed under the pass (lazy recovery cut it, say): try again later.
        logger.warning("%s: compaction abandoned: %s", log.directory, exc)
        log.abort_compaction()
        cleaning.discard_all()
        return cleaning.result(committed=False)
    except BaseException:
        log.abort_compaction()
        cleaning.discard_all()
        raise
    committed = log.commit_compaction(snapshot, cleaning.replacements, cleaning.map_end)
    if not committed:
        logger.info("%s: the log changed during compaction; discarding the pass", log.directory)
        cleaning.discard_all()
    return cleaning.result(committed=committed)


def dirty_ratio(log: PartitionLog, *, max_offset: int | None = None) -> float:
    """The share of the cleanable bytes (as `compact` would see them) that is dirty.

    A scheduler runs `compact` when this reaches `config.min_cleanable_dirty_ratio`, or
    when a pass's `next_tombstone_due_ms` has come. Owner thread only.
    """
    first_dirty = log.first_dirty_offset
    total_bytes = dirty_bytes = 0
    ends = log.segment_base_offsets[1:]
    for segment, end in zip(log.segments, ends, strict=False):
        if end <= log.log_start_offset or (max_offset is not None and end > max_offset):
            continue
        total_bytes += segment.size_bytes
        if end > first_dirty:
            dirty_bytes += segment.size_bytes
    return dirty_bytes / total_bytes if total_bytes else 0.0


class _Pass:
    """The state of one cleaning pass; see the module doc for the rules it applies."""

    def __init__(
        self,
        log: PartitionLog,
        snapshot: CompactionSnapshot,
        now_ms: int,
        delete_retention_ms: int,
        max_decompressed_bytes: int,
    ) -> None:
        self.log = log
        self.snapshot = snapshot
        self.first_dirty = snapshot.first_dirty_offset
        self.delete_retention_ms = delete_retention_ms
        self.tombstone_horizon_ms = now_ms - delete_retention_ms
        self.max_decompressed_bytes = max_decompressed_bytes
        self.key_map: dict[bytes, int] = {}
        self.map_end = self.first_dirty
        self.replacements: list[CleanedSegment] = []
        self._writer: CleanedSegmentWriter | None = None
        self.segments_before = self.segments_after = 0
        self.bytes_before = self.bytes_after = 0
        self.records_before = self.records_removed = self.tombstones_removed = 0
        self.next_tombstone_due_ms: int | None = None

    # -- the key map

    def build_key_map(self, max_map_bytes: int) -> None:
        snapshot, first_dirty = self.snapshot, self.first_dirty
        map_bytes = 0
        for segment, size_bytes, end in zip(
            snapshot.segments, snapshot.sizes_bytes, snapshot.end_offsets, strict=True
        ):
            if end <= first_dirty:
                continue
            for header, batch in _read_batches(segment.log, size_bytes):
                if header.is_control or header.last_offset < first_dirty:
                    continue
                decoded = self._decode(header, batch)
                if decoded is None:
                    continue
                for record in decoded.records:
                    key = record.key
                    if key is None or record.offset < first_dirty:
                        continue
                    if key not in self.key_map:
                        map_bytes += len(key) + _MAP_ENTRY_OVERHEAD_BYTES
                    self.key_map[key] = record.offset
            self.map_end = end
            if map_bytes >= max_map_bytes:
                break

    # -- filtering

    def _is_latest(self, record: _Record) -> bool:
        """Whether the record has a key and no later record of that key is in the map."""
        if record.key is None:
            return False
        latest = self.key_map.get(record.key)
        return latest is None or latest <= record.offset

    def _keeps(self, header: BatchHeader, record: _Record) -> bool:
        if not self._is_latest(record):
            return False
        return not (
            record.is_tombstone
            and record.offset < self.first_dirty
            and header.max_timestamp < self.tombstone_horizon_ms
        )

    def _decode(self, header: BatchHeader, batch: memoryview) -> _DecodedBatch | None:
        """The batch's records, or None (logged) when it cannot be decoded."""
        try:
            validate_batch(batch)
            section = batch[BATCH_HEADER_BYTES:]
            codec = header.compression
            if codec is Compression.NONE:
                data = bytes(section)
            else:
                data = decompress(codec, section, self.max_decompressed_bytes)
            return _DecodedBatch(data, _walk_records(data, header))
        except ProtocolError as exc:
            logger.warning(
                "%s: keeping the batch at offset %d as it is: %s",
                self.log.directory,
                header.base_offset,
                exc,
            )
            return None

    def clean(self) -> None:
        """Filter every segment below the map's end; write the runs that change."""
        snapshot = self.snapshot
        for run in self._runs():
            sizes = [snapshot.sizes_bytes[index] for index in run]
            self.segments_before += len(run)
            self.bytes_before += sum(sizes)
            changed, last_base_offset = self._survey(run)
            if last_base_offset is None or not (changed or len(run) > 1):
                self.segments_after += len(run)
                self.bytes_after += sum(sizes)
                continue
            cleaned = self._rewrite(run, last_base_offset)
            self.replacements.append(cleaned)
            self.segments_after += 1
            self.bytes_after += cleaned.size_bytes

    def _runs(self) -> Iterator[list[int]]:
        """Indexes into the snapshot of the segments below the map's end, in merge runs."""
        snapshot = self.snapshot
        segment_bytes = self.log.config.segment_bytes
        run: list[int] = []
        run_bytes = 0
        for index, end in enumerate(snapshot.end_offsets):
            if end > self.map_end:
                break
            size_bytes = snapshot.sizes_bytes[index]
            if run and (
                run_bytes + size_bytes > segment_bytes
                or end - 1 - snapshot.segments[run[0]].base_offset > INT32_MAX
            ):
                yield run
                run, run_bytes = [], 0
            run.append(index)
            run_bytes += size_bytes
        if run:
            yield run

    def _batches(self, run: list[int]) -> Iterator[tuple[BatchHeader, memoryview]]:
        snapshot = self.snapshot
        for index in run:
            yield from _read_batches(snapshot.segments[index].log, snapshot.sizes_bytes[index])

    def _survey(self, run: list[int]) -> tuple[bool, int | None]:
        """Count what filtering the run removes: (whether anything, last batch's base offset)."""
        changed = False
        last_base_offset: int | None = None
        for header, batch in self._batches(run):
            last_base_offset = header.base_offset
            if header.is_control:
                continue
            decoded = self._decode(header, batch)
            if decoded is None:
                continue
            self.records_before += len(decoded.records)
            for record in decoded.records:
                if not self._keeps(header, record):
                    changed = True
                    self.records_removed += 1
                    if record.is_tombstone and self._is_latest(record):
                        self.tombstones_removed += 1
                elif record.is_tombstone:
                    due_ms = header.max_timestamp + self.delete_retention_ms + 1
                    if self.next_tombstone_due_ms is None or due_ms < self.next_tombstone_due_ms:
                        self.next_tombstone_due_ms = due_ms
        return changed, last_base_offset

    def _rewrite(self, run: list[int], last_base_offset: int) -> CleanedSegment:
        snapshot = self.snapshot
        writer = self._writer = CleanedSegmentWriter(
            self.log.fs,
            self.log.directory,
            snapshot.segments[run[0]].base_offset,
            snapshot.end_offsets[run[-1]],
            self.log.config.index_interval_bytes,
        )
        for header, batch in self._batches(run):
            decoded = None if header.is_control else self._decode(header, batch)
            if decoded is None:
                writer.append(batch, header)
                continue
            kept = [record for record in decoded.records if self._keeps(header, record)]
            if len(kept) == len(decoded.records):
                writer.append(batch, header)
            elif kept or header.base_offset == last_base_offset:
                rebuilt = _rebuild_batch(header, decoded.data, kept)
                writer.append(rebuilt, parse_batch_header(rebuilt))
        cleaned = writer.finish()
        self._writer = None
        return cleaned

    # -- outcome

    def discard_all(self) -> None:
        """Remove the `.cleaned` files written so far (best effort: recovery removes them too)."""
        targets = list(self.replacements)
        if self._writer is not None:
            self._writer.close()
            targets.append(self._writer.target)
        for cleaned in targets:
            with contextlib.suppress(OSError):
                discard(self.log.fs, cleaned)

    def result(self, *, committed: bool) -> CompactionResult:
        return CompactionResult(
            segments_before=self.segments_before,
            segments_after=self.segments_after,
            bytes_before=self.bytes_before,
            bytes_after=self.bytes_after,
            records_before=self.records_before,
            records_removed=self.records_removed,
            tombstones_removed=self.tombstones_removed,
            first_dirty_offset=self.map_end if committed else self.first_dirty,
            next_tombstone_due_ms=self.next_tombstone_due_ms,
            committed=committed,
        )


def _read_batches(log: FileHandle, size_bytes: int) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Each batch in the first `size_bytes` of a segment's log, read a chunk at a time.

    InvalidBatchError when the bytes are not whole batches (the file changed underneath).
    """
    position = 0
    while position < size_bytes:
        chunk = memoryview(log.pread(position, min(_READ_CHUNK_BYTES, size_bytes - position)))
        used = 0
        try:
            while len(chunk) - used >= BATCH_HEADER_BYTES:
                header = parse_batch_header(chunk, used)
                end = used + header.total_bytes
                if end > len(chunk):
                    break
                yield header, chunk[used:end]
                used = end
            if used == 0:
                # One batch larger than a chunk.
                header = parse_batch_header(chunk)
                batch = memoryview(log.pread(position, header.total_bytes))
                if len(batch) < header.total_bytes or position + len(batch) > size_bytes:
                    raise InvalidBatchError(position, "file ends inside a batch")
                yield header, batch
                used = header.total_bytes
        except ProtocolError as exc:
            raise InvalidBatchError(position + used, str(exc)) from exc
        position += used


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """The zigzag varint at `data[position:]` (at most 64 bits) and the position after it."""
    result = 0
    shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise CorruptMessageError("malformed varint in a record")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7


def _walk_records(data: bytes, header: BatchHeader) -> list[_Record]:
    """The records of an uncompressed records section, with the byte span of each.

    The protocol codec decodes records without their spans; filtering needs the spans to
    keep each kept record's bytes as they are. Headers are skipped, not parsed.
    """
    records: list[_Record] = []
    position = 0
    append_time = header.timestamp_type is TimestampType.LOG_APPEND_TIME
    for _ in range(header.records_count):
        length, body = _read_varint(data, position)
        end = body + length
        if length < RECORD_BYTES_MIN - 1 or end > len(data):
            raise CorruptMessageError(f"record of {length} bytes at {position} overruns its batch")
        timestamp_delta, cursor = _read_varint(data, body + 1)
        offset_delta, cursor = _read_varint(data, cursor)
        key_length, cursor = _read_varint(data, cursor)
        if key_length < -1 or cursor + max(key_length, 0) > end:
            raise CorruptMessageError(f"record key length {key_length} overruns its record")
        key = None if key_length < 0 else data[cursor : cursor + key_length]
        value_length, cursor = _read_varint(data, cursor + max(key_length, 0))
        if value_length < -1 or cursor + max(value_length, 0) > end:
            raise CorruptMessageError(f"record value length {value_length} overruns its record")
        if not 0 <= offset_delta <= header.last_offset_delta:
            raise CorruptMessageError(f"record offset delta {offset_delta} outside its batch")
        records.append(
            _Record(
                position,
                end,
                header.base_offset + offset_delta,
                header.max_timestamp if append_time else header.base_timestamp + timestamp_delta,
                key,
                value_length < 0,
            )
        )
        position = end
    if position != len(data):
        raise CorruptMessageError(f"{len(data) - position} bytes after the batch's records")
    return records


def _rebuild_batch(header: BatchHeader, data: bytes, kept: list[_Record]) -> bytes:
    """The batch with only the `kept` records (see the module doc for what is preserved)."""
    if kept:
        section = b"".join(data[record.start : record.end] for record in kept)
        codec = header.compression
        if codec is not Compression.NONE:
            section = compress(codec, section)
        attributes = header.attributes
        if header.timestamp_type is TimestampType.LOG_APPEND_TIME:
            max_timestamp = header.max_timestamp
        else:
            max_timestamp = max(record.timestamp_ms for record in kept)
    else:
        section = b""
        attributes = header.attributes & ~_CODEC_MASK
        max_timestamp = header.max_timestamp
    out = bytearray(BATCH_HEADER_BYTES)
    out += section
    _BATCH_HEADER.pack_into(
        out,
        0,
        header.base_offset,
        len(out) - BATCH_LOG_OVERHEAD,
        header.partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        header.last_offset_delta,
        header.base_timestamp,
        max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(kept),
    )
    _CRC.pack_into(out, _CRC_POSITION, crc32c(memoryview(out)[_ATTRIBUTES_POSITION:]))
    return bytes(out)
