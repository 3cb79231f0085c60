"""One segment of a partition log: a `.log` file of RecordBatches and its two indexes.

Files are named by the segment's base offset as 20 decimal digits:
`00000000000000001234.log`, `.index`, `.timeindex` (formats in `storage.index`). The `.log`
holds RecordBatch v2 bytes exactly as they travel on the wire, back to back, with increasing
offsets from the base offset on. Offsets continue without a gap, except where compaction
(`storage.cleaner`) removed batches or a follower copied a leader's compacted batches.

A segment loads its indexes lazily: a segment below the recovery point is trusted, and only
the batches after its last index entry are read (and CRC-checked) to learn where it ends. A
segment that fails that check, or lies past the recovery point, is `recover`ed: scanned batch
by batch, cut at the first invalid byte, its indexes rebuilt.

Not thread-safe; `PartitionLog` serialises access.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import Callable, Iterator

from tidelog.client.protocol.errors import ProtocolError
from tidelog.client.protocol.records import (
    BATCH_HEADER_BYTES,
    BatchHeader,
    parse_batch_header,
    validate_batch,
)
from tidelog.storage.filesystem import FileHandle, FileSystem
from tidelog.storage.index import CorruptIndexError, IndexBuilder, OffsetIndex, TimeIndex

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
SEGMENT_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)

_SCAN_CHUNK_BYTES = 16 * 1024
_RECOVERY_CHUNK_BYTES = 1024 * 1024


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> tuple[int, str] | None:
    """(base offset, suffix) of a segment file name, or None for any other name."""
    for suffix in SEGMENT_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and len(stem) == 20 and stem.isdigit():
            return int(stem), suffix
    return None


BatchPlacement = tuple[int, int, int, int]
"""(base offset, max timestamp, total bytes, position within the appended data)."""


class InvalidBatchError(Exception):
    """Bytes at `position` that are not a valid next batch of the segment."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"invalid batch at position {position}: {reason}")
        self.position = position
        self.reason = reason


def scan_batches(
    log: FileHandle,
    start_position: int,
    end_position: int,
    *,
    validate: bool,
    chunk_bytes: int = _SCAN_CHUNK_BYTES,
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each batch in [start, end) of `log`.

    Raises InvalidBatchError at the first short header, length that runs past `end`, or
    (with `validate`) failed CRC or structural check. Offsets are not checked here.
    """
    position = start_position
    chunk = b""
    chunk_position = start_position
    while position < end_position:
        remaining_bytes = end_position - position
        if remaining_bytes < BATCH_HEADER_BYTES:
            raise InvalidBatchError(position, "short batch header")
        chunk_end = chunk_position + len(chunk)
        if position + BATCH_HEADER_BYTES > chunk_end:
            chunk = log.pread(position, min(max(chunk_bytes, BATCH_HEADER_BYTES), remaining_bytes))
            chunk_position = position
            if len(chunk) < BATCH_HEADER_BYTES:
                raise InvalidBatchError(position, "file ends inside a batch header")
        try:
            header = parse_batch_header(chunk, position - chunk_position)
        except ProtocolError as exc:
            raise InvalidBatchError(position, str(exc)) from exc
        total_bytes = header.total_bytes
        if total_bytes > remaining_bytes:
            raise InvalidBatchError(position, f"batch of {total_bytes} bytes runs past the end")
        if validate:
            if position + total_bytes <= chunk_position + len(chunk):
                buffer, offset_in_buffer = chunk, position - chunk_position
            else:
                buffer, offset_in_buffer = log.pread(position, total_bytes), 0
                if len(buffer) < total_bytes:
                    raise InvalidBatchError(position, "file ends inside a batch")
            try:
                batch_end = offset_in_buffer + total_bytes
                validate_batch(memoryview(buffer)[:batch_end], offset_in_buffer)
            except ProtocolError as exc:
                raise InvalidBatchError(position, str(exc)) from exc
        yield position, header
        position += total_bytes


class Segment:
    """A segment's files and in-memory state; see the module doc."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        base_offset: int,
        log: FileHandle,
        index_interval_bytes: int,
        created_ms: int,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.base_offset = base_offset
        self.log = log
        self.size_bytes = log.size()
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self._builder: IndexBuilder | None = None
        self._next_offset: int | None = None
        self._first_batch_max_timestamp: int | None = None
        self._index_files: dict[str, FileHandle] = {}
        self._persisted_entries = {INDEX_SUFFIX: 0, TIME_INDEX_SUFFIX: 0}
        self._index_fsync_needed = False

    def path(self, suffix: str) -> str:
        return posixpath.join(self.directory, segment_file_name(self.base_offset, suffix))

    def __repr__(self) -> str:
        return f"Segment({self.path(LOG_SUFFIX)!r}, size_bytes={self.size_bytes})"

    @classmethod
    def create(
        cls,
        fs: FileSystem,
        directory: str,
        base_offset: int,
        index_interval_bytes: int,
        now_ms: int,
    ) -> Segment:
        """A new empty segment; stale files of the same name are emptied."""
        log_path = posixpath.join(directory, segment_file_name(base_offset, LOG_SUFFIX))
        log = fs.open(log_path, create=True)
        segment = cls(fs, directory, base_offset, log, index_interval_bytes, now_ms)
        if segment.size_bytes:
            log.truncate(0)
            segment.size_bytes = 0
        segment._reset_indexes()
        segment._next_offset = base_offset
        return segment

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        base_offset: int,
        index_interval_bytes: int,
        now_ms: int,
    ) -> Segment:
        """An existing segment, not yet loaded: call `load_trusted` or `recover`."""
        log = fs.open(posixpath.join(directory, segment_file_name(base_offset, LOG_SUFFIX)))
        return cls(fs, directory, base_offset, log, index_interval_bytes, now_ms)

    # -- state

    def _state(self) -> IndexBuilder:
        if self._builder is None:
            if not self.load_trusted():
                logger.warning("%s: invalid below the recovery point; rebuilding", self)
                self.recover()
            assert self._builder is not None
        return self._builder

    @property
    def offset_index(self) -> OffsetIndex:
        return self._state().offset_index

    @property
    def time_index(self) -> TimeIndex:
        return self._state().time_index

    @property
    def next_offset(self) -> int:
        """The offset after the last batch (the base offset when empty)."""
        self._state()
        assert self._next_offset is not None
        return self._next_offset

    @property
    def max_timestamp(self) -> int:
        """Highest max timestamp of the segment's batches, or -1."""
        return self._state().max_timestamp

    @property
    def first_batch_max_timestamp(self) -> int | None:
        if self._first_batch_max_timestamp is None and self.size_bytes:
            for _, header in scan_batches(self.log, 0, self.size_bytes, validate=False):
                self._first_batch_max_timestamp = header.max_timestamp
                break
        return self._first_batch_max_timestamp

    def _reset_indexes(self) -> None:
        self._builder = IndexBuilder(
            OffsetIndex(self.base_offset), TimeIndex(self.base_offset), self.index_interval_bytes
        )
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            self._index_file(suffix).truncate(0)
            self._persisted_entries[suffix] = 0
        self._index_fsync_needed = True

    def _index_file(self, suffix: str) -> FileHandle:
        handle = self._index_files.get(suffix)
        if handle is None:
            handle = self.fs.open(self.path(suffix), create=True)
            self._index_files[suffix] = handle
        return handle

    def load_trusted(self) -> bool:
        """Load the index files and check the batches after the last entry; False if invalid.

        True means the indexes describe the log and the tail is whole: the segment needs no
        recovery. Nothing is changed on False.
        """
        try:
            offset_index = OffsetIndex.decode(
                self.fs.read_file(self.path(INDEX_SUFFIX)), self.base_offset, self.size_bytes
            )
            time_index = TimeIndex.decode(
                self.fs.read_file(self.path(TIME_INDEX_SUFFIX)), offset_index
            )
        except (OSError, CorruptIndexError) as exc:
            logger.warning("%s: index not usable (%s)", self, exc)
            return False
        last_offset, last_position = offset_index.lookup_position(self.size_bytes)
        builder = IndexBuilder(
            offset_index,
            time_index,
            self.index_interval_bytes,
            bytes_since_entry=self.size_bytes - last_position,
            max_timestamp=time_index.last_timestamp,
        )
        expected_offset = last_offset
        try:
            for _, header in scan_batches(self.log, last_position, self.size_bytes, validate=True):
                if header.base_offset < expected_offset or header.last_offset < header.base_offset:
                    return False
                builder.max_timestamp = max(builder.max_timestamp, header.max_timestamp)
                expected_offset = header.next_offset
        except InvalidBatchError as exc:
            logger.warning("%s: %s", self, exc)
            return False
        self._builder = builder
        self._next_offset = expected_offset
        self._persisted_entries[INDEX_SUFFIX] = len(offset_index)
        self._persisted_entries[TIME_INDEX_SUFFIX] = len(time_index)
        return True

    def recover(self, on_batch: Callable[[BatchHeader], None] | None = None) -> int:
        """Scan and validate every batch, cut the log at the first invalid one, rebuild indexes.

        Calls `on_batch` for each valid batch in order. Returns the number of bytes cut.
        """
        self._reset_indexes()
        builder = self._builder
        assert builder is not None
        expected_offset = self.base_offset
        valid_bytes = 0
        self._first_batch_max_timestamp = None
        try:
            for position, header in scan_batches(
                self.log, 0, self.size_bytes, validate=True, chunk_bytes=_RECOVERY_CHUNK_BYTES
            ):
                if header.base_offset < expected_offset:
                    raise InvalidBatchError(
                        position,
                        f"base offset {header.base_offset}, expected {expected_offset} or more",
                    )
                if header.last_offset < header.base_offset:
                    raise InvalidBatchError(position, "last offset below base offset")
                builder.add(header.base_offset, header.max_timestamp, header.total_bytes, position)
                if self._first_batch_max_timestamp is None:
                    self._first_batch_max_timestamp = header.max_timestamp
                if on_batch is not None:
                    on_batch(header)
                expected_offset = header.next_offset
                valid_bytes = position + header.total_bytes
        except InvalidBatchError as exc:
            logger.warning("%s: %s; truncating %d bytes", self, exc, self.size_bytes - exc.position)
        truncated_bytes = self.size_bytes - valid_bytes
        if truncated_bytes:
            self.log.truncate(valid_bytes)
            self.size_bytes = valid_bytes
        self._next_offset = expected_offset
        return truncated_bytes

    # -- writing

    def append(self, data: memoryview, batches: list[BatchPlacement], next_offset: int) -> None:
        """Write `data`, which holds `batches` back to back, at the end of the log.

        On an OSError nothing in memory changes; the file may hold part of `data`.
        """
        builder = self._builder if self._builder is not None else self._state()
        position = self.size_bytes
        self.log.append(data)
        add = builder.add
        for base_offset, max_timestamp, total_bytes, relative_position in batches:
            add(base_offset, max_timestamp, total_bytes, position + relative_position)
        if position == 0:
            self._first_batch_max_timestamp = batches[0][1]
        self.size_bytes = position + len(data)
        self._next_offset = next_offset

    def truncate_to(self, offset: int) -> None:
        """Remove every batch whose last offset is `offset` or higher.

        The next offset becomes the end of the last batch kept (the base offset when none
        is): never above `offset`, even when `offset` falls in a gap left by compaction.
        """
        found = self.find_batch(offset)
        if found is None:
            return
        position, header = found
        builder = self._state()
        self.log.truncate(position)
        self.size_bytes = position
        builder.offset_index.truncate_to(header.base_offset)
        builder.time_index.truncate_to(header.base_offset)
        _, last_position = builder.offset_index.lookup_position(position)
        builder.bytes_since_entry = position - last_position
        builder.max_timestamp = builder.time_index.last_timestamp
        next_offset = self.base_offset
        for _, tail_header in scan_batches(self.log, last_position, position, validate=False):
            builder.max_timestamp = max(builder.max_timestamp, tail_header.max_timestamp)
            next_offset = tail_header.next_offset
        self._next_offset = next_offset
        if position == 0:
            self._first_batch_max_timestamp = None
        for suffix, entries, entry_bytes in (
            (INDEX_SUFFIX, len(builder.offset_index), OffsetIndex.ENTRY_BYTES),
            (TIME_INDEX_SUFFIX, len(builder.time_index), TimeIndex.ENTRY_BYTES),
        ):
            if self._persisted_entries[suffix] > entries:
                self._index_file(suffix).truncate(entries * entry_bytes)
                self._persisted_entries[suffix] = entries
                self._index_fsync_needed = True

    def persist_indexes(self) -> None:
        """Append index entries that are only in memory to the index files (no fsync)."""
        builder = self._builder
        if builder is None:
            return
        indexes: tuple[tuple[str, OffsetIndex | TimeIndex], ...] = (
            (INDEX_SUFFIX, builder.offset_index),
            (TIME_INDEX_SUFFIX, builder.time_index),
        )
        for suffix, index in indexes:
            persisted = self._persisted_entries[suffix]
            if len(index) > persisted:
                self._index_file(suffix).append(index.encode(persisted))
                self._persisted_entries[suffix] = len(index)
                self._index_fsync_needed = True

    def prepare_flush(self) -> list[FileHandle]:
        """Persist the indexes; returns the handles whose fsync makes the segment durable."""
        self.persist_indexes()
        handles = [self.log]
        if self._index_fsync_needed:
            self._index_fsync_needed = False
            handles.extend(self._index_files.values())
        return handles

    def close(self, *, persist_indexes: bool = True) -> None:
        """Persist the indexes (unless told not to) and close the files."""
        try:
            if persist_indexes:
                self.persist_indexes()
        finally:
            for handle in self._index_files.values():
                handle.close()
            self._index_files.clear()
            self.log.close()

    def delete(self) -> None:
        """Remove the segment's files.

        Handles stay open: a FileRange or a concurrent flush may still use them; they close
        when the last reference goes.
        """
        self.fs.remove(self.path(LOG_SUFFIX))
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                self.fs.remove(self.path(suffix))

    # -- reading

    def batches_from(self, position: int) -> Iterator[tuple[int, BatchHeader]]:
        return scan_batches(self.log, position, self.size_bytes, validate=False)

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset is >= `offset`."""
        _, position = self.offset_index.lookup(offset)
        for found in self.batches_from(position):
            if found[1].last_offset >= offset:
                return found
        return None

    def batch_boundary_at_or_below(self, start_position: int, limit_position: int) -> int:
        """The end of the last whole batch, from `start_position`, that ends by `limit_position`.

        Returns `start_position` if the first batch already runs past the limit.
        """
        _, position = self.offset_index.lookup_position(limit_position)
        position = max(position, start_position)
        for batch_position, header in self.batches_from(position):
            if batch_position + header.total_bytes > limit_position:
                return batch_position
            position = batch_position + header.total_bytes
        return position

    def find_timestamp(self, timestamp: int, min_offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch with max timestamp >= `timestamp` and last
        offset >= `min_offset`."""
        start_offset = max(self.time_index.lookup(timestamp), min_offset)
        found = self.find_batch(start_offset)
        if found is None:
            return None
        for position, header in self.batches_from(found[0]):
            if header.max_timestamp >= timestamp and header.last_offset >= min_offset:
                return position, header
        return None
