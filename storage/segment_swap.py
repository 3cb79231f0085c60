"""Crash-safe replacement of a run of segments by one rewritten segment (log compaction).

A run is the segments whose base offsets lie in [first, end), where `end` is the base offset
of the segment after the run (it always exists: the active segment is never in a run). The
rewritten segment keeps the name `first`. Files in the partition directory::

    <first>-<end>.log.cleaned    the rewritten batches: the swap record, before the commit
    <first>-<end>.log.swap       the swap record, once committed
    <first>.log.cleaned          the same batches again, to become <first>.log
    <first>.index.cleaned        their offset index, to become <first>.index
    <first>.timeindex.cleaned    their time index, to become <first>.timeindex

(`<first>` and `<end>` are 20-digit offsets, as in segment file names.)

Protocol, each step durable before the next:

1. `CleanedSegmentWriter` writes and fsyncs the four `.cleaned` files (no lock needed:
   nothing reads them).
2. `install`, under the log's lock: commit by renaming the record to `.swap` and fsyncing
   the directory;
3. remove the files of the run's other segments and rename the three `.cleaned` segment
   files over `<first>.*`, fsync the directory;
4. remove the `.swap` record, fsync the directory.

Old files are renamed over or unlinked, never truncated or rewritten in place, so a
`FileRange` handed out before the swap still reads the old bytes.

Recovery (`recover_swaps`, run when a log opens): `.cleaned` files are uncommitted and are
removed; a `.swap` record is installed again from its own bytes: every segment file with a
base offset in [first, end) is removed, `<first>` is rebuilt by copying the record's valid
batches, fsynced, and then the record is removed. Recovery is idempotent, so a crash during
recovery is recovered the same way.

Why the batches are written twice: a crash may undo any directory change that was not yet
fsynced, separately for each name (see `MemoryFileSystem`), so half of a rename can be lost
(the source gone and the destination not there). A rename may therefore only move bytes
that also exist under a durable name; the `.swap` record is that name until the new segment
is durable, and its name carries `end`, which recovery needs to know which segments the
run replaced.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

from tidelog.client.protocol.records import BatchHeader
from tidelog.storage.filesystem import FileHandle, FileSystem
from tidelog.storage.index import IndexBuilder, OffsetIndex, TimeIndex
from tidelog.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    BatchPlacement,
    InvalidBatchError,
    Segment,
    parse_segment_file_name,
    scan_batches,
    segment_file_name,
)

logger = logging.getLogger(__name__)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

_WRITE_BUFFER_BYTES = 1024 * 1024
_COPY_CHUNK_BYTES = 1024 * 1024


def swap_record_name(base_offset: int, end_offset: int, suffix: str) -> str:
    """`<first>-<end>.log` + `suffix` (CLEANED_SUFFIX or SWAP_SUFFIX)."""
    return f"{base_offset:020d}-{end_offset:020d}{LOG_SUFFIX}{suffix}"


def parse_swap_record_name(name: str) -> tuple[int, int] | None:
    """(first, end) of a committed swap record's name, or None for any other name."""
    stem = name.removesuffix(LOG_SUFFIX + SWAP_SUFFIX)
    first, dash, end = stem.partition("-")
    if stem == name or not dash or len(first) != 20 or len(end) != 20:
        return None
    if not (first.isdigit() and end.isdigit()) or int(first) >= int(end):
        return None
    return int(first), int(end)


@dataclass(frozen=True, slots=True)
class CleanedSegment:
    """A rewritten run whose `.cleaned` files are written and fsynced, ready to install."""

    directory: str
    base_offset: int
    end_offset: int
    size_bytes: int

    def record_path(self, suffix: str) -> str:
        return posixpath.join(
            self.directory, swap_record_name(self.base_offset, self.end_offset, suffix)
        )

    def cleaned_path(self, segment_suffix: str) -> str:
        """The `.cleaned` file that becomes the segment file with `segment_suffix`."""
        return self.segment_path(segment_suffix) + CLEANED_SUFFIX

    def segment_path(self, segment_suffix: str) -> str:
        return posixpath.join(self.directory, segment_file_name(self.base_offset, segment_suffix))

    @property
    def cleaned_paths(self) -> tuple[str, ...]:
        return (
            self.record_path(CLEANED_SUFFIX),
            *(
                self.cleaned_path(suffix)
                for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
            ),
        )


class CleanedSegmentWriter:
    """Writes the `.cleaned` files of one run: batches in offset order, then `finish`.

    Indexes are built by the same rule as `Segment` (`IndexBuilder`), so the installed
    segment loads as trusted. Stale `.cleaned` files of the same names are emptied first.
    """

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        base_offset: int,
        end_offset: int,
        index_interval_bytes: int,
    ) -> None:
        self._fs = fs
        self._target = CleanedSegment(directory, base_offset, end_offset, 0)
        self._builder = IndexBuilder(
            OffsetIndex(base_offset), TimeIndex(base_offset), index_interval_bytes
        )
        self._record = self._create(self._target.record_path(CLEANED_SUFFIX))
        self._log = self._create(self._target.cleaned_path(LOG_SUFFIX))
        self._buffer = bytearray()
        self._size_bytes = 0
        self._next_offset = base_offset

    def _create(self, path: str) -> FileHandle:
        handle = self._fs.open(path, create=True)
        if handle.size():
            handle.truncate(0)
        return handle

    @property
    def target(self) -> CleanedSegment:
        """The run being written (its size is known once `finish` returns)."""
        return self._target

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    def append(self, batch: bytes | bytearray | memoryview, header: BatchHeader) -> None:
        """Add one batch; its offsets must follow the previous batch's and stay below end."""
        if header.base_offset < self._next_offset or header.next_offset > self._target.end_offset:
            raise AssertionError(
                f"batch {header.base_offset}..{header.last_offset} does not fit "
                f"[{self._next_offset}, {self._target.end_offset})"
            )
        self._builder.add(
            header.base_offset, header.max_timestamp, header.total_bytes, self._size_bytes
        )
        self._buffer += batch
        self._size_bytes += header.total_bytes
        self._next_offset = header.next_offset
        if len(self._buffer) >= _WRITE_BUFFER_BYTES:
            self._write_buffer()

    def _write_buffer(self) -> None:
        if self._buffer:
            self._record.append(self._buffer)
            self._log.append(self._buffer)
            self._buffer = bytearray()

    def finish(self) -> CleanedSegment:
        """Write the indexes, fsync all four files and close them."""
        index_handles: list[FileHandle] = []
        try:
            self._write_buffer()
            for suffix, encoded in (
                (INDEX_SUFFIX, self._builder.offset_index.encode()),
                (TIME_INDEX_SUFFIX, self._builder.time_index.encode()),
            ):
                handle = self._create(self._target.cleaned_path(suffix))
                index_handles.append(handle)
                handle.append(encoded)
            for handle in (self._record, self._log, *index_handles):
                handle.fsync()
        finally:
            for handle in index_handles:
                handle.close()
            self.close()
        target = self._target
        return CleanedSegment(
            target.directory, target.base_offset, target.end_offset, self._size_bytes
        )

    def close(self) -> None:
        """Close the files (`finish` does); the caller discards them after a failure."""
        self._record.close()
        self._log.close()


def discard(fs: FileSystem, cleaned: CleanedSegment) -> None:
    """Remove whichever `.cleaned` files of an uninstalled run exist."""
    for path in cleaned.cleaned_paths:
        if fs.exists(path):
            fs.remove(path)


def _remove_segment_files(fs: FileSystem, directory: str, first: int, end: int) -> None:
    """Remove every segment file (log or index) with a base offset in [first, end)."""
    for name in fs.listdir(directory):
        parsed = parse_segment_file_name(name)
        if parsed is not None and first <= parsed[0] < end:
            fs.remove(posixpath.join(directory, name))


def install(fs: FileSystem, cleaned: CleanedSegment) -> None:
    """Steps 2-4 of the module doc: commit the run's swap and put its files in place.

    The caller holds the log's lock and has checked that the run's segments are unchanged.
    After the commit an OSError leaves a `.swap` record that the next open completes.
    """
    directory = cleaned.directory
    record_path = cleaned.record_path(SWAP_SUFFIX)
    fs.rename(cleaned.record_path(CLEANED_SUFFIX), record_path)
    fs.fsync_dir(directory)
    _remove_segment_files(fs, directory, cleaned.base_offset + 1, cleaned.end_offset)
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX):
        fs.rename(cleaned.cleaned_path(suffix), cleaned.segment_path(suffix))
    fs.fsync_dir(directory)
    fs.remove(record_path)
    fs.fsync_dir(directory)


def recover_swaps(fs: FileSystem, directory: str, index_interval_bytes: int, now_ms: int) -> None:
    """Remove uncommitted `.cleaned` files and complete committed `.swap` records."""
    names = fs.listdir(directory)
    removed = False
    for name in names:
        if name.endswith(CLEANED_SUFFIX):
            logger.info("%s: removing uncommitted compaction file %s", directory, name)
            fs.remove(posixpath.join(directory, name))
            removed = True
    if removed:
        fs.fsync_dir(directory)
    for name in names:
        run = parse_swap_record_name(name)
        if run is not None:
            logger.warning("%s: completing the interrupted compaction swap %s", directory, name)
            _install_from_record(fs, directory, *run, index_interval_bytes, now_ms)
        elif name.endswith(SWAP_SUFFIX):
            logger.warning("%s: ignoring unknown swap file %s", directory, name)


def _install_from_record(
    fs: FileSystem, directory: str, first: int, end: int, index_interval_bytes: int, now_ms: int
) -> None:
    record_path = posixpath.join(directory, swap_record_name(first, end, SWAP_SUFFIX))
    _remove_segment_files(fs, directory, first, end)
    record = fs.open(record_path)
    segment = Segment.create(fs, directory, first, index_interval_bytes, now_ms)
    try:
        next_offset = _copy_batches(record, segment, end)
        for handle in segment.prepare_flush():
            handle.fsync()
    finally:
        segment.close()
        record.close()
    if next_offset != end:
        logger.error(
            "%s: swap record %s ends at offset %d, not %d", directory, record_path, next_offset, end
        )
    fs.fsync_dir(directory)
    fs.remove(record_path)
    fs.fsync_dir(directory)


def _copy_batches(record: FileHandle, segment: Segment, end: int) -> int:
    """Append the record's valid batches to the empty `segment`; returns its next offset.

    A record is fsynced before it is committed, so an invalid batch means the disk damaged
    it: the valid prefix is kept, as segment recovery does.
    """
    next_offset = segment.base_offset
    chunk_start = 0
    placements: list[BatchPlacement] = []
    position = 0
    size_bytes = record.size()

    def copy_chunk() -> None:
        data = record.pread(chunk_start, position - chunk_start)
        segment.append(memoryview(data), placements, next_offset)

    try:
        for position, header in scan_batches(
            record, 0, size_bytes, validate=True, chunk_bytes=_COPY_CHUNK_BYTES
        ):
            if header.base_offset < next_offset or header.next_offset > end:
                raise InvalidBatchError(position, f"offsets outside [{next_offset}, {end})")
            if placements and position + header.total_bytes - chunk_start > _COPY_CHUNK_BYTES:
                copy_chunk()
                chunk_start, placements = position, []
            placements.append(
                (
                    header.base_offset,
                    header.max_timestamp,
                    header.total_bytes,
                    position - chunk_start,
                )
            )
            next_offset = header.next_offset
        position = size_bytes
    except InvalidBatchError as exc:
        logger.error("%s: swap record damaged: %s; keeping the batches before it", record.path, exc)
        position = exc.position
    if placements:
        copy_chunk()
    return next_offset
