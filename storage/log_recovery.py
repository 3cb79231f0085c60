"""Opening a partition directory: the state a `PartitionLog` starts from after a restart.

`recover_log` reads the directory that `storage.log` describes and brings it back to a
consistent log, in this order:

1. Finish or undo an interrupted compaction swap (`storage.segment_swap.recover_swaps`).
2. Remove leftover checkpoint temporaries and index files whose log file is gone.
3. Open every segment; delete those wholly below the log start offset; create an empty
   segment at the log start offset when none is left.
4. Load the leader-epoch checkpoint, or rebuild it from the batches of the flushed part when
   it is missing or corrupt; drop its entries for the unflushed part.
5. Scan every segment from the one holding the recovery point on, batch by batch: each is
   cut at its first invalid byte, and the segments after a cut, or after a segment that does
   not continue the log, are deleted. Epochs of the scanned batches re-enter the cache.
6. Clamp the log start offset and the recovery point to the recovered log, and trim the
   epoch cache to it; fsync the directory if files were removed or created.

Segments below the recovery point are trusted and load their indexes lazily.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from tidelog.client.protocol.records import BatchHeader
from tidelog.storage.checkpoint import TEMP_SUFFIX, read_file_if_exists
from tidelog.storage.config import LogConfig
from tidelog.storage.errors import CorruptCheckpointError
from tidelog.storage.filesystem import FileSystem
from tidelog.storage.leader_epoch import LEADER_EPOCH_CHECKPOINT, LeaderEpochCache
from tidelog.storage.segment import LOG_SUFFIX, Segment, parse_segment_file_name
from tidelog.storage.segment_swap import recover_swaps

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveredLog:
    """A recovered partition directory.

    `segments` are open, sorted by base offset and contiguous, never empty; the last one is
    the active segment. `epochs_dirty` is True when `epochs` differs from the checkpoint
    file on disk.
    """

    segments: list[Segment]
    epochs: LeaderEpochCache
    epochs_dirty: bool
    log_start_offset: int
    log_end_offset: int
    recovery_point: int


def note_batch_epoch(epochs: LeaderEpochCache, header: BatchHeader) -> bool:
    """Start the batch's leader epoch at its base offset if it is newer than the latest one.

    Returns True when the cache was assigned to, so the checkpoint must be written again.
    """
    epoch = header.partition_leader_epoch
    latest = epochs.latest_epoch
    if epoch >= 0 and (latest is None or epoch > latest):
        epochs.assign(epoch, header.base_offset)
        return True
    return False


def recover_log(
    fs: FileSystem,
    directory: str,
    config: LogConfig,
    now_ms: int,
    *,
    recovery_point: int,
    log_start_offset: int,
) -> RecoveredLog:
    """Recover the existing directory `directory`; see the module doc. Blocks on I/O."""
    return _Recovery(fs, directory, config.index_interval_bytes, now_ms).run(
        recovery_point, log_start_offset
    )


class _Recovery:
    """One `recover_log` call: the segments found so far and whether the directory changed."""

    def __init__(
        self, fs: FileSystem, directory: str, index_interval_bytes: int, now_ms: int
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.index_interval_bytes = index_interval_bytes
        self.now_ms = now_ms
        self.segments: list[Segment] = []
        self.epochs_dirty = False
        self.dir_fsync_needed = False

    def run(self, recovery_point: int, log_start_offset: int) -> RecoveredLog:
        fs, directory = self.fs, self.directory
        now = self.now_ms
        recover_swaps(fs, directory, self.index_interval_bytes, now)
        log_bases: set[int] = set()
        index_files: list[tuple[int, str]] = []
        for name in fs.listdir(directory):
            if name.endswith(TEMP_SUFFIX):
                logger.info("%s: removing leftover temporary file %s", directory, name)
                fs.remove(posixpath.join(directory, name))
                continue
            parsed = parse_segment_file_name(name)
            if parsed is None:
                continue
            base_offset, suffix = parsed
            if suffix == LOG_SUFFIX:
                log_bases.add(base_offset)
            else:
                index_files.append((base_offset, name))
        for base_offset, name in index_files:
            if base_offset not in log_bases:
                logger.warning("%s: removing index %s that has no log", directory, name)
                fs.remove(posixpath.join(directory, name))
                self.dir_fsync_needed = True
        interval = self.index_interval_bytes
        segments = [Segment.open(fs, directory, base, interval, now) for base in sorted(log_bases)]
        self.segments = segments
        while len(segments) > 1 and segments[1].base_offset <= log_start_offset:
            logger.warning("%s: deleting %s, below the log start offset", directory, segments[0])
            self._remove_segment(0)
        if not segments:
            segments.append(Segment.create(fs, directory, log_start_offset, interval, now))
            self.dir_fsync_needed = True

        first_unflushed = self._first_unflushed_segment(recovery_point)
        epochs = self._load_epochs()
        if epochs is None:
            epochs = LeaderEpochCache()
            self.epochs_dirty = True
            for segment in segments[:first_unflushed]:
                for _, header in segment.batches_from(0):
                    self._note_epoch(epochs, header)
        elif first_unflushed < len(segments) and epochs.truncate_from_end(
            segments[first_unflushed].base_offset
        ):
            # Epochs of the unflushed part are re-derived from its batches below.
            self.epochs_dirty = True

        index = first_unflushed
        while index < len(segments):
            segment = segments[index]
            if index > first_unflushed and segment.base_offset != segments[index - 1].next_offset:
                logger.warning(
                    "%s: %s does not continue the log at offset %d; deleting it and later segments",
                    directory,
                    segment,
                    segments[index - 1].next_offset,
                )
                self._remove_segments_from(index)
                break
            logger.info("%s: recovering %s", directory, segment)
            truncated_bytes = segment.recover(lambda header: self._note_epoch(epochs, header))
            if truncated_bytes and index + 1 < len(segments):
                logger.warning("%s: deleting the segments after the cut in %s", directory, segment)
                self._remove_segments_from(index + 1)
                break
            index += 1

        log_end_offset = segments[-1].next_offset
        log_start_offset = min(max(log_start_offset, segments[0].base_offset), log_end_offset)
        if epochs.truncate_from_end(log_end_offset):
            self.epochs_dirty = True
        if epochs.truncate_from_start(log_start_offset):
            self.epochs_dirty = True
        if self.dir_fsync_needed:
            fs.fsync_dir(directory)
            self.dir_fsync_needed = False
        return RecoveredLog(
            segments=segments,
            epochs=epochs,
            epochs_dirty=self.epochs_dirty,
            log_start_offset=log_start_offset,
            log_end_offset=log_end_offset,
            recovery_point=min(recovery_point, log_end_offset),
        )

    def _first_unflushed_segment(self, recovery_point: int) -> int:
        """Index of the first segment that may hold offsets at or past the recovery point."""
        segments = self.segments
        for index, segment in enumerate(segments):
            if index + 1 < len(segments):
                if segments[index + 1].base_offset <= recovery_point:
                    continue
                return index
            trusted = segment.base_offset <= recovery_point and segment.load_trusted()
            return len(segments) if trusted and segment.next_offset <= recovery_point else index
        return len(segments)

    def _load_epochs(self) -> LeaderEpochCache | None:
        path = posixpath.join(self.directory, LEADER_EPOCH_CHECKPOINT)
        data = read_file_if_exists(self.fs, path)
        if data is None:
            logger.info("%s: no leader epoch checkpoint; rebuilding it", self.directory)
            return None
        try:
            return LeaderEpochCache.decode(data)
        except CorruptCheckpointError as exc:
            logger.warning("%s: epoch checkpoint corrupt (%s); rebuilding", self.directory, exc)
            return None

    def _note_epoch(self, epochs: LeaderEpochCache, header: BatchHeader) -> None:
        if note_batch_epoch(epochs, header):
            self.epochs_dirty = True

    def _remove_segment(self, index: int) -> None:
        self.segments.pop(index).delete()
        self.dir_fsync_needed = True

    def _remove_segments_from(self, index: int) -> None:
        while len(self.segments) > index:
            self._remove_segment(len(self.segments) - 1)
