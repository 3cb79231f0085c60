"""PartitionLog: one partition's append-only log, a directory of segments.

Directory layout::

    <base offset, 20 digits>.log / .index / .timeindex    one segment (storage.segment)
    leader-epoch-checkpoint                               epoch -> start offset (checkpoint)
    *.cleaned, *.swap                                     a compaction's segment swap
                                                          (storage.segment_swap), finished
                                                          or undone when the log opens
                                                          (storage.log_recovery)

Invariants: segments are sorted by base offset; each starts where the one before ends;
only the last (active) segment grows. Offsets below `recovery_point` are fsynced. Offsets
continue without a gap from the log start offset to the log end offset, except inside
segments that compaction rewrote (`storage.cleaner`), which keep each record's offset and
so leave gaps; a rewritten segment still ends where the next one starts.

Threading: every method runs on one thread (the broker's event loop) except `flush`, which
may run concurrently in a worker thread because fsync blocks. `flush` takes the lock only to
snapshot and to publish; the fsyncs run unlocked. Compaction (`storage.cleaner`) may run in
a worker thread too: it takes the lock in `begin_compaction` and `commit_compaction`, and
in between only reads the files of non-active segments. Deleted and replaced segments keep
their file handles alive until the last `FileRange` or in-flight fsync lets go of them.

Durability: `append` writes to the page cache only. `flush` fsyncs every segment from the
recovery point on, the directory when segments were created, and the leader-epoch
checkpoint, then advances the recovery point. Operations that remove data (`truncate_to`,
`delete_records`, retention) make the removal durable before returning and call
`on_checkpoint_needed` when the checkpoint files must learn about it.
"""

from __future__ import annotations

import bisect
import logging
import posixpath
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.records import (
    BatchHeader,
    assign_offsets,
    decode_batch,
    parse_batch_header,
    validate_batch,
)
from tidelog.storage.checkpoint import write_atomic
from tidelog.storage.config import INT32_MAX, LogConfig, TimestampType
from tidelog.storage.errors import (
    InvalidRecordError,
    LogOfflineError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from tidelog.storage.filesystem import FileRange, FileSystem
from tidelog.storage.index import NO_TIMESTAMP
from tidelog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT, EpochEntry, LeaderEpochCache
from tidelog.storage.log_recovery import note_batch_epoch, recover_log
from tidelog.storage.segment import BatchPlacement, Segment
from tidelog.storage.segment_swap import CleanedSegment, install

logger = logging.getLogger(__name__)

# baseOffset, batchLength, partitionLeaderEpoch: the first 16 bytes, all outside the CRC.
_OFFSET_LENGTH_EPOCH = struct.Struct(">qii")
_LOG_APPEND_TIME = TimestampType.LOG_APPEND_TIME

__all__ = ["AppendInfo", "CompactionSnapshot", "LogConfig", "PartitionLog", "TimestampType"]


@dataclass(frozen=True, slots=True)
class CompactionSnapshot:
    """The segments a compaction may rewrite, as `PartitionLog.begin_compaction` saw them.

    `segments` are the non-active segments that end at or below the `max_offset` given and
    above the log start offset, oldest first; `sizes_bytes[i]` is the size of
    `segments[i]` and `end_offsets[i]` the base offset of the segment after it. Off the
    owner thread only `Segment.base_offset` and `Segment.log` may be used: those segments
    no longer grow. Offsets below `first_dirty_offset` were compacted before.
    """

    segments: tuple[Segment, ...]
    sizes_bytes: tuple[int, ...]
    end_offsets: tuple[int, ...]
    first_dirty_offset: int
    truncations: int


class AppendInfo:
    """What an append wrote: offsets, record count, size, and each batch's header.

    `log_append_time_ms` is the time stamped into the batches on a LogAppendTime topic,
    None on a CreateTime topic. `batches` holds the headers as written (assigned offsets
    and leader epoch); they are built on first access, so an append whose caller does not
    need them does not pay for them.
    """

    __slots__ = (
        "_batches",
        "_leader_epoch",
        "_unassigned",
        "first_offset",
        "last_offset",
        "log_append_time_ms",
        "log_start_offset",
        "records_count",
        "size_bytes",
    )

    def __init__(
        self,
        *,
        first_offset: int,
        last_offset: int,
        log_append_time_ms: int | None,
        records_count: int,
        size_bytes: int,
        log_start_offset: int,
        batches: list[BatchHeader] | None = None,
        unassigned: list[tuple[BatchHeader, int]] | None = None,
        leader_epoch: int = -1,
    ) -> None:
        self.first_offset = first_offset
        self.last_offset = last_offset
        self.log_append_time_ms = log_append_time_ms
        self.records_count = records_count
        self.size_bytes = size_bytes
        self.log_start_offset = log_start_offset
        self._batches = batches
        self._unassigned = unassigned
        self._leader_epoch = leader_epoch

    @property
    def batches(self) -> list[BatchHeader]:
        if self._batches is None:
            epoch = self._leader_epoch
            self._batches = [
                header._replace(base_offset=offset, partition_leader_epoch=epoch)
                for header, offset in self._unassigned or ()
            ]
        return self._batches

    def __repr__(self) -> str:
        return (
            f"AppendInfo(first_offset={self.first_offset}, last_offset={self.last_offset}, "
            f"records_count={self.records_count}, size_bytes={self.size_bytes})"
        )


class PartitionLog:
    """One partition's log; see the module doc. Open with `PartitionLog.open`."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        config: LogConfig,
        now_ms: Callable[[], int],
        on_checkpoint_needed: Callable[[], None] | None,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.config = config
        self._now_ms = now_ms
        self._on_checkpoint_needed = on_checkpoint_needed
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._base_offsets: list[int] = []
        self._log_start_offset = 0
        self._log_end_offset = 0
        self._recovery_point = 0
        self._epochs = LeaderEpochCache()
        self._epochs_dirty = False
        self._dir_fsync_needed = False
        self._truncations = 0
        self._last_flush_ms = now_ms()
        self._failure: BaseException | None = None
        # Offsets below were compacted in this process; kept in memory only, so the first
        # compaction after an open treats the whole log as dirty.
        self._first_dirty_offset = 0
        self._compacting = False

    # ---------------------------------------------------------------------------------------
    # Opening and recovery

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        config: LogConfig,
        now_ms: Callable[[], int],
        *,
        recovery_point: int = 0,
        log_start_offset: int = 0,
        on_checkpoint_needed: Callable[[], None] | None = None,
    ) -> PartitionLog:
        """Open (creating if needed) and recover the log in `directory` (`storage.log_recovery`).

        `recovery_point` and `log_start_offset` come from the checkpoint files (0 when
        unknown, which costs a full scan). Segments at or past the recovery point are
        scanned batch by batch and cut at the first invalid byte; earlier segments are
        trusted and load their indexes lazily. Blocks on I/O.
        """
        if not fs.is_dir(directory):
            fs.mkdir(directory)
            fs.fsync_dir(posixpath.dirname(directory.rstrip("/")) or ".")
        log = cls(fs, directory, config, now_ms, on_checkpoint_needed)
        log._load(recovery_point, log_start_offset)
        return log

    def _load(self, recovery_point: int, log_start_offset: int) -> None:
        recovered = recover_log(
            self.fs,
            self.directory,
            self.config,
            self._now_ms(),
            recovery_point=recovery_point,
            log_start_offset=log_start_offset,
        )
        self._segments = recovered.segments
        self._base_offsets = [segment.base_offset for segment in recovered.segments]
        self._epochs = recovered.epochs
        self._epochs_dirty = recovered.epochs_dirty
        self._log_start_offset = recovered.log_start_offset
        self._log_end_offset = recovered.log_end_offset
        self._recovery_point = recovered.recovery_point

    def _remove_segment(self, index: int) -> None:
        self._segments.pop(index).delete()
        self._dir_fsync_needed = True

    def _remove_segments_from(self, index: int) -> None:
        while len(self._segments) > index:
            self._remove_segment(len(self._segments) - 1)

    # ---------------------------------------------------------------------------------------
    # State

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def recovery_point(self) -> int:
        """Offsets below this are fsynced."""
        return self._recovery_point

    @property
    def unflushed_messages(self) -> int:
        return self._log_end_offset - self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self._segments)

    @property
    def segment_base_offsets(self) -> list[int]:
        return list(self._base_offsets)

    @property
    def segments(self) -> list[Segment]:
        """The segments, oldest first (for inspection; do not mutate them)."""
        return list(self._segments)

    @property
    def latest_epoch(self) -> int | None:
        return self._epochs.latest_epoch

    @property
    def epoch_entries(self) -> list[EpochEntry]:
        return self._epochs.entries

    def _check_usable(self) -> None:
        if self._failure is not None:
            message = f"{self.directory} is offline: {self._failure}"
            raise LogOfflineError(message) from self._failure

    def _fail(self, exc: BaseException) -> LogOfflineError:
        """Take the log offline after an I/O error left its files in an unknown state."""
        logger.error("%s: I/O failure, log offline until reopened: %s", self.directory, exc)
        self._failure = exc
        return LogOfflineError(f"{self.directory} is offline: {exc}")

    def update_config(self, config: LogConfig) -> None:
        """Apply changed topic configs; they take effect from the next append or check."""
        with self._lock:
            self.config = config

    # ---------------------------------------------------------------------------------------
    # Appending

    def append(
        self,
        records: bytes | bytearray | memoryview,
        *,
        leader_epoch: int,
        log_append_time_ms: int | None = None,
    ) -> AppendInfo:
        """Append a producer's batches as leader, assigning offsets from the log end offset.

        Every batch is validated (size, CRC, magic, record count) before anything is
        written; then offsets and the leader epoch are patched into the batches (in place
        when `records` is writable, else in a copy), and the whole blob is written with one
        append. On a LogAppendTime topic the batches are stamped with `log_append_time_ms`
        (default: the log's clock). Raises CorruptMessageError, RecordTooLargeError,
        RecordListTooLargeError, InvalidRecordError, or LogOfflineError.
        """
        view = memoryview(records)
        if view.readonly:
            view = memoryview(bytearray(view))
        elif view.format != "B":
            view = view.cast("B")
        with self._lock:
            if self._failure is not None:
                self._check_usable()
            batches = self._validate(view, follower=False)
            stamp: int | None = None
            if self.config.message_timestamp_type is _LOG_APPEND_TIME:
                stamp = log_append_time_ms if log_append_time_ms is not None else self._now_ms()
            first_offset = next_offset = self._log_end_offset
            placements: list[BatchPlacement] = []
            unassigned: list[tuple[BatchHeader, int]] = []
            written: list[BatchHeader] | None = [] if stamp is not None else None
            records_count = 0
            for header, position in batches:
                _OFFSET_LENGTH_EPOCH.pack_into(
                    view, position, next_offset, header.batch_length, leader_epoch
                )
                if written is not None:
                    assign_offsets(view, position, next_offset, stamp)
                    header = parse_batch_header(view, position)
                    written.append(header)
                placements.append(
                    (next_offset, header.max_timestamp, header.batch_length + 12, position)
                )
                unassigned.append((header, next_offset))
                records_count += header.records_count
                next_offset += header.last_offset_delta + 1
            self._write(view, placements, next_offset)
            latest_epoch = self._epochs.latest_epoch
            if leader_epoch >= 0 and (latest_epoch is None or leader_epoch > latest_epoch):
                # An older epoch never rewrites the cache: fencing stale leaders is the
                # caller's job, and history must not be dropped on its behalf.
                self._epochs_dirty |= self._epochs.assign(leader_epoch, first_offset)
            return AppendInfo(
                first_offset=first_offset,
                last_offset=next_offset - 1,
                log_append_time_ms=stamp,
                records_count=records_count,
                size_bytes=len(view),
                log_start_offset=self._log_start_offset,
                batches=written,
                unassigned=unassigned,
                leader_epoch=leader_epoch,
            )

    def append_as_follower(self, records: bytes | bytearray | memoryview) -> AppendInfo:
        """Append batches copied from the leader, keeping their offsets and epochs.

        Offsets must increase from the log end offset on (truncate first when the logs
        diverged); they may skip offsets that compaction removed from the leader's log.
        """
        view = memoryview(records).cast("B")
        with self._lock:
            self._check_usable()
            batches = self._validate(view, follower=True)
            headers = [header for header, _ in batches]
            placements = [
                (header.base_offset, header.max_timestamp, header.total_bytes, position)
                for header, position in batches
            ]
            self._write(view, placements, headers[-1].next_offset)
            for header in headers:
                self._epochs_dirty |= note_batch_epoch(self._epochs, header)
            return AppendInfo(
                first_offset=headers[0].base_offset,
                last_offset=headers[-1].last_offset,
                log_append_time_ms=None,
                records_count=sum(header.records_count for header in headers),
                size_bytes=len(view),
                log_start_offset=self._log_start_offset,
                batches=headers,
            )

    def _validate(self, view: memoryview, *, follower: bool) -> list[tuple[BatchHeader, int]]:
        batches: list[tuple[BatchHeader, int]] = []
        position = 0
        size_bytes = len(view)
        if size_bytes > self.config.segment_bytes:
            raise RecordListTooLargeError(
                f"append of {size_bytes} bytes exceeds the segment size {self.config.segment_bytes}"
            )
        expected_offset = self._log_end_offset
        max_message_bytes = self.config.max_message_bytes
        while position < size_bytes:
            header = validate_batch(view, position)
            total_bytes = header.batch_length + 12
            if follower:
                if header.base_offset < expected_offset or header.last_offset < header.base_offset:
                    raise InvalidRecordError(
                        f"follower batch at offset {header.base_offset}, "
                        f"expected {expected_offset} or more"
                    )
                expected_offset = header.next_offset
            else:
                if total_bytes > max_message_bytes:
                    raise RecordTooLargeError(
                        f"batch of {total_bytes} bytes exceeds {max_message_bytes}"
                    )
                count = header.records_count
                if count < 1 or header.last_offset_delta != count - 1:
                    raise InvalidRecordError(
                        f"batch holds {count} records "
                        f"but a last offset delta of {header.last_offset_delta}"
                    )
            batches.append((header, position))
            position += total_bytes
        if not batches:
            raise InvalidRecordError("no record batches to append")
        return batches

    def _write(self, view: memoryview, placements: list[BatchPlacement], next_offset: int) -> None:
        try:
            segment = self._segments[-1]
            if segment.size_bytes and self._should_roll(
                segment, len(view), placements, next_offset
            ):
                segment = self._roll_locked()
            segment.append(view, placements, next_offset)
        except OSError as exc:
            raise self._fail(exc) from exc
        self._log_end_offset = next_offset

    def _should_roll(
        self,
        segment: Segment,
        size_bytes: int,
        placements: list[BatchPlacement],
        next_offset: int,
    ) -> bool:
        if segment.size_bytes + size_bytes > self.config.segment_bytes:
            return True
        if next_offset - 1 - segment.base_offset > INT32_MAX:
            return True
        first_timestamp = segment.first_batch_max_timestamp
        incoming_timestamp = (
            placements[0][1] if len(placements) == 1 else max(p[1] for p in placements)
        )
        if first_timestamp is not None and first_timestamp >= 0 and incoming_timestamp >= 0:
            elapsed_ms = incoming_timestamp - first_timestamp
        else:
            elapsed_ms = self._now_ms() - segment.created_ms
        return elapsed_ms >= self.config.segment_ms

    def roll(self) -> None:
        """Start a new segment at the log end offset, unless the active one is empty."""
        with self._lock:
            self._check_usable()
            if self._segments[-1].size_bytes:
                try:
                    self._roll_locked()
                except OSError as exc:
                    raise self._fail(exc) from exc

    def _roll_locked(self) -> Segment:
        previous = self._segments[-1]
        previous.persist_indexes()
        segment = Segment.create(
            self.fs,
            self.directory,
            self._log_end_offset,
            self.config.index_interval_bytes,
            self._now_ms(),
        )
        self._segments.append(segment)
        self._base_offsets.append(segment.base_offset)
        self._dir_fsync_needed = True
        logger.debug("%s: rolled to %s", self.directory, segment)
        return segment

    # ---------------------------------------------------------------------------------------
    # Reading

    def _segment_index(self, offset: int) -> int:
        return max(bisect.bisect_right(self._base_offsets, offset) - 1, 0)

    def _segment_next_offset(self, index: int) -> int:
        if index + 1 < len(self._segments):
            return self._base_offsets[index + 1]
        return self._log_end_offset

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> FileRange | None:
        """Whole batches from the one holding `offset`, within one segment.

        The range holds at most `max_bytes`, except that with `min_one_batch` the first batch
        is returned whole even when larger (KIP-74). It never holds a batch with an offset at
        or beyond `max_offset` (the high watermark). None when nothing qualifies, e.g. at the
        log end. OffsetOutOfRangeError outside [log start offset, log end offset].
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        with self._lock:
            self._check_usable()
            if not self._log_start_offset <= offset <= self._log_end_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside [{self._log_start_offset}, {self._log_end_offset}]"
                )
            if offset == self._log_end_offset or (max_offset is not None and offset >= max_offset):
                return None
            for segment in self._segments[self._segment_index(offset) :]:
                found = segment.find_batch(offset)
                if found is not None:
                    break
            else:
                return None
            position, header = found
            if max_offset is not None and header.last_offset >= max_offset:
                return None
            limit_position = segment.size_bytes
            if max_offset is not None and max_offset < segment.next_offset:
                limit = segment.find_batch(max_offset)
                assert limit is not None
                limit_position = limit[0]
            end_position = segment.batch_boundary_at_or_below(
                position, min(limit_position, position + max_bytes)
            )
            if end_position == position:
                if not min_one_batch:
                    return None
                end_position = position + header.total_bytes
            return FileRange(segment.log, position, end_position - position)

    def batches_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches from the one holding `offset` to the log end.

        For rebuilding producer state at startup; do not interleave with appends.
        """
        self._check_usable()
        for index in range(self._segment_index(offset), len(self._segments)):
            segment = self._segments[index]
            found = segment.find_batch(offset)
            if found is None:
                continue
            for _, header in segment.batches_from(found[0]):
                yield header

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `timestamp_ms`, or None.

        Indexes find the first batch whose max timestamp qualifies; only that one batch is
        decoded to pick the record. Records below the log start offset do not count.
        """
        with self._lock:
            self._check_usable()
            for index, segment in enumerate(self._segments):
                if self._segment_next_offset(index) <= self._log_start_offset:
                    continue
                if segment.size_bytes == 0 or segment.max_timestamp < timestamp_ms:
                    continue
                found = segment.find_timestamp(timestamp_ms, self._log_start_offset)
                if found is not None:
                    return self._first_record_at(segment, *found, timestamp_ms)
            return None

    def _first_record_at(
        self, segment: Segment, position: int, header: BatchHeader, timestamp_ms: int
    ) -> tuple[int, int]:
        try:
            _, records = decode_batch(
                segment.log.pread(position, header.total_bytes), verify_crc=False
            )
        except CorruptMessageError as exc:
            # Not decodable here (e.g. over the decompression limit): answer at batch level.
            logger.warning("%s: batch at %d not decodable: %s", segment, header.base_offset, exc)
            return max(header.base_offset, self._log_start_offset), header.max_timestamp
        for record in records:
            if record.timestamp_ms >= timestamp_ms and record.offset >= self._log_start_offset:
                return record.offset, record.timestamp_ms
        return max(header.base_offset, self._log_start_offset), header.max_timestamp

    # ---------------------------------------------------------------------------------------
    # Leader epochs

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset`; persisted by the next flush."""
        with self._lock:
            if self._epochs.assign(epoch, start_offset):
                self._epochs_dirty = True

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch's answer: (epoch, end offset); (-1, -1) when unknown."""
        with self._lock:
            return self._epochs.end_offset_for(epoch, self._log_end_offset)

    # ---------------------------------------------------------------------------------------
    # Removing data

    def truncate_to(self, offset: int) -> None:
        """Remove the batches holding offsets at or above `offset` (a follower diverged).

        Whole batches go, so the log end offset may end up below `offset`. Below the log
        start offset the log is emptied and restarted at `offset`. Durable on return.
        """
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        with self._lock:
            self._check_usable()
            if offset >= self._log_end_offset:
                return
            if offset < self._log_start_offset:
                self._restart_at(offset)
            else:
                try:
                    index = self._segment_index(offset)
                    self._remove_segments_from(index + 1)
                    del self._base_offsets[index + 1 :]
                    segment = self._segments[index]
                    segment.truncate_to(offset)
                    self._log_end_offset = segment.next_offset
                    self._first_dirty_offset = min(self._first_dirty_offset, self._log_end_offset)
                    # A cut batch may have straddled the log start: nothing stays visible.
                    self._log_start_offset = min(self._log_start_offset, self._log_end_offset)
                    self._recovery_point = min(self._recovery_point, self._log_end_offset)
                    self._epochs.truncate_from_end(self._log_end_offset)
                    self._truncations += 1
                    for handle in segment.prepare_flush():
                        handle.fsync()
                    self._sync_metadata_locked()
                except OSError as exc:
                    raise self._fail(exc) from exc
        self._checkpoint_needed()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the empty log at `offset`. Durable on return."""
        if offset < 0:
            raise ValueError(f"cannot start the log at negative offset {offset}")
        with self._lock:
            self._check_usable()
            self._restart_at(offset)
        self._checkpoint_needed()

    def _restart_at(self, offset: int) -> None:
        try:
            self._remove_segments_from(0)
            segment = Segment.create(
                self.fs, self.directory, offset, self.config.index_interval_bytes, self._now_ms()
            )
            self._segments = [segment]
            self._base_offsets = [offset]
            self._log_start_offset = self._log_end_offset = self._recovery_point = offset
            self._first_dirty_offset = offset
            self._epochs = LeaderEpochCache()
            self._truncations += 1
            self._sync_metadata_locked()
        except OSError as exc:
            raise self._fail(exc) from exc

    def _sync_metadata_locked(self) -> None:
        """Make the directory and the epoch checkpoint durable now."""
        self._dir_fsync_needed = False
        self.fs.fsync_dir(self.directory)
        self._epochs_dirty = False
        write_atomic(
            self.fs, posixpath.join(self.directory, LEADER_EPOCH_CHECKPOINT), self._epochs.encode()
        )

    def _checkpoint_needed(self) -> None:
        if self._on_checkpoint_needed is not None:
            self._on_checkpoint_needed()

    def delete_records(self, offset: int) -> int:
        """Move the log start offset up to `offset`; returns the new log start offset.

        Segments wholly below it are deleted; the new start is durable on return.
        """
        with self._lock:
            self._check_usable()
            if not 0 <= offset <= self._log_end_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside [0, {self._log_end_offset}]"
                )
            if offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = offset
            count = 0
            while count < len(self._segments) and self._segment_next_offset(count) <= offset:
                if count == len(self._segments) - 1 and self._segments[count].size_bytes == 0:
                    break
                count += 1
            self._delete_oldest(count)
            log_start_offset = self._log_start_offset
        self._checkpoint_needed()
        return log_start_offset

    def enforce_retention(self, now_ms: int, *, max_offset: int | None = None) -> int:
        """Delete old segments past `retention_ms` or beyond `retention_bytes`.

        Whole segments only, oldest first, and only segments that end at or below
        `max_offset` (the high watermark: data not yet replicated is kept). An expired
        active segment is rolled first. Without "delete" in the cleanup policy only segments
        below the log start offset go. Returns how many segments were deleted. Blocks on a
        directory fsync when any were.
        """
        with self._lock:
            self._check_usable()
            segments = self._segments
            deletion_enabled = self.config.deletion_enabled
            retention_ms = self.config.retention_ms if deletion_enabled else -1
            count = 0
            while count < len(segments):
                segment = segments[count]
                if count == len(segments) - 1 and segment.size_bytes == 0:
                    break
                if max_offset is not None and self._segment_next_offset(count) > max_offset:
                    break
                if self._segment_next_offset(count) <= self._log_start_offset:
                    count += 1
                    continue
                if retention_ms < 0:
                    break
                newest_ms = segment.max_timestamp
                if newest_ms == NO_TIMESTAMP:
                    newest_ms = segment.created_ms
                if now_ms - newest_ms <= retention_ms:
                    break
                count += 1
            retention_bytes = self.config.retention_bytes if deletion_enabled else -1
            if retention_bytes >= 0:
                remaining_bytes = sum(segment.size_bytes for segment in segments[count:])
                while (
                    count < len(segments) - 1
                    and remaining_bytes - segments[count].size_bytes >= retention_bytes
                    and (max_offset is None or self._segment_next_offset(count) <= max_offset)
                ):
                    remaining_bytes -= segments[count].size_bytes
                    count += 1
            self._delete_oldest(count)
            return count

    def _delete_oldest(self, count: int) -> None:
        if count == 0:
            return
        try:
            if count == len(self._segments):
                self._roll_locked()
            for segment in self._segments[:count]:
                logger.info("%s: deleting %s", self.directory, segment)
                segment.delete()
            del self._segments[:count]
            del self._base_offsets[:count]
            self._log_start_offset = max(self._log_start_offset, self._base_offsets[0])
            self._recovery_point = max(self._recovery_point, self._base_offsets[0])
            if self._epochs.truncate_from_start(self._log_start_offset):
                self._epochs_dirty = True
            self._dir_fsync_needed = False
            self.fs.fsync_dir(self.directory)
        except OSError as exc:
            raise self._fail(exc) from exc

    # ---------------------------------------------------------------------------------------
    # Compaction (storage.cleaner rewrites the segments; these methods take the lock)

    @property
    def first_dirty_offset(self) -> int:
        """Offsets below this were compacted since the log was opened."""
        return max(self._first_dirty_offset, self._log_start_offset)

    def begin_compaction(self, max_offset: int | None = None) -> CompactionSnapshot:
        """Snapshot the segments a compaction may rewrite; see `CompactionSnapshot`.

        One compaction at a time: call `commit_compaction` or `abort_compaction` next.
        """
        with self._lock:
            self._check_usable()
            if self._compacting:
                raise RuntimeError(f"{self.directory}: a compaction is already running")
            chosen = [
                index
                for index in range(len(self._segments) - 1)
                if self._base_offsets[index + 1] > self._log_start_offset
                and (max_offset is None or self._base_offsets[index + 1] <= max_offset)
            ]
            self._compacting = True
            return CompactionSnapshot(
                segments=tuple(self._segments[index] for index in chosen),
                sizes_bytes=tuple(self._segments[index].size_bytes for index in chosen),
                end_offsets=tuple(self._base_offsets[index + 1] for index in chosen),
                first_dirty_offset=self.first_dirty_offset,
                truncations=self._truncations,
            )

    def abort_compaction(self) -> None:
        """End a compaction that changes nothing."""
        with self._lock:
            self._compacting = False

    def commit_compaction(
        self,
        snapshot: CompactionSnapshot,
        replacements: Sequence[CleanedSegment],
        first_dirty_offset: int,
    ) -> bool:
        """Swap in the rewritten segments, oldest first, and record the new dirty offset.

        Each replacement stands for the snapshot's segments with base offsets in its
        [base_offset, end_offset). The pass read every snapshot segment that ends at or
        below `first_dirty_offset`; if any of them changed since the snapshot (truncation,
        retention, recovery of a segment, closing), this returns False and changes nothing,
        and the caller discards the replacements. Durable on return. Blocks on fsyncs.
        """
        with self._lock:
            try:
                if not self._unchanged_since(snapshot, first_dirty_offset) or not all(
                    self._replaces_whole_segments(cleaned) for cleaned in replacements
                ):
                    return False
                try:
                    for cleaned in replacements:
                        install(self.fs, cleaned)
                        self._put_rewritten_segment(cleaned)
                except OSError as exc:
                    raise self._fail(exc) from exc
                self._first_dirty_offset = max(self._first_dirty_offset, first_dirty_offset)
                return True
            finally:
                self._compacting = False

    def _unchanged_since(self, snapshot: CompactionSnapshot, read_below_offset: int) -> bool:
        if self._failure is not None or self._truncations != snapshot.truncations:
            return False
        sizes = {id(segment): segment.size_bytes for segment in self._segments}
        return all(
            sizes.get(id(segment)) == size_bytes
            for segment, size_bytes, end in zip(
                snapshot.segments, snapshot.sizes_bytes, snapshot.end_offsets, strict=True
            )
            if end <= read_below_offset
        )

    def _replaces_whole_segments(self, cleaned: CleanedSegment) -> bool:
        first = bisect.bisect_left(self._base_offsets, cleaned.base_offset)
        end = bisect.bisect_left(self._base_offsets, cleaned.end_offset)
        return (
            first < end < len(self._segments)
            and self._base_offsets[first] == cleaned.base_offset
            and self._base_offsets[end] == cleaned.end_offset
        )

    def _put_rewritten_segment(self, cleaned: CleanedSegment) -> None:
        first = bisect.bisect_left(self._base_offsets, cleaned.base_offset)
        end = bisect.bisect_left(self._base_offsets, cleaned.end_offset)
        segment = Segment.open(
            self.fs,
            self.directory,
            cleaned.base_offset,
            self.config.index_interval_bytes,
            self._now_ms(),
        )
        if not segment.load_trusted():
            logger.warning("%s: rewritten %s did not load; rebuilding", self.directory, segment)
            segment.recover()
        # The old segments stay open for readers holding their ranges; their files are gone.
        self._segments[first:end] = [segment]
        self._base_offsets[first:end] = [cleaned.base_offset]

    # ---------------------------------------------------------------------------------------
    # Durability

    def flush_due(self, now_ms: int) -> bool:
        """Whether `flush_messages` or `flush_ms` asks for a flush now."""
        unflushed = self.unflushed_messages
        if unflushed >= self.config.flush_messages:
            return True
        flush_ms = self.config.flush_ms
        return flush_ms is not None and unflushed > 0 and now_ms - self._last_flush_ms >= flush_ms

    def flush(self) -> None:
        """Make everything appended so far durable and advance the recovery point.

        Blocks on fsync; safe to run in a worker thread while the owner thread appends.
        """
        with self._lock:
            self._check_usable()
            target_offset = self._log_end_offset
            truncations = self._truncations
            try:
                handles = [
                    handle
                    for segment in self._segments[self._segment_index(self._recovery_point) :]
                    for handle in segment.prepare_flush()
                ]
            except OSError as exc:
                raise self._fail(exc) from exc
            dir_fsync_needed, self._dir_fsync_needed = self._dir_fsync_needed, False
            epochs_data = self._epochs.encode() if self._epochs_dirty else None
            self._epochs_dirty = False
        try:
            for handle in handles:
                handle.fsync()
            if dir_fsync_needed:
                self.fs.fsync_dir(self.directory)
            if epochs_data is not None:
                write_atomic(
                    self.fs, posixpath.join(self.directory, LEADER_EPOCH_CHECKPOINT), epochs_data
                )
        except OSError as exc:
            with self._lock:
                raise self._fail(exc) from exc
        with self._lock:
            if truncations == self._truncations and target_offset > self._recovery_point:
                self._recovery_point = target_offset
            self._last_flush_ms = self._now_ms()

    def close(self) -> None:
        """Persist the indexes and the epoch checkpoint, and close the files.

        Does not fsync the log: `flush` first for a clean shutdown. An offline log only
        closes its files. Every later call raises LogOfflineError.
        """
        with self._lock:
            healthy = self._failure is None
            if healthy:
                self._failure = LogOfflineError("closed")
            try:
                if healthy and self._epochs_dirty:
                    write_atomic(
                        self.fs,
                        posixpath.join(self.directory, LEADER_EPOCH_CHECKPOINT),
                        self._epochs.encode(),
                    )
            finally:
                for segment in self._segments:
                    segment.close(persist_indexes=healthy)
