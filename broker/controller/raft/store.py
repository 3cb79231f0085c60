"""RaftStore: a Raft node's durable state (KRaft's `__cluster_metadata-0`) on the FileSystem seam.

Not a pure core: it does file I/O, but only through the injected `FileSystem`, and it takes
its clock as `now_ms`. Every method blocks on I/O; the trio driver runs them in a worker.

The files and their formats are in `store_files`.

Log records: an entry is one record with offset = entry offset. Consecutive entries of one
append with the same epoch and the same kind (data or control) share a RecordBatch v2 whose
PartitionLeaderEpoch is that epoch (the log's leader-epoch cache follows the batch epochs).
A data entry is a record with a null key and `value`; a control entry is a record of a
control batch whose key is Kafka's ControlRecordType layout (int16 version 0, int16 type)
and whose value is `value`.

What is durable when:

- `write_quorum_state` and `write_snapshot`: on return (temp file, fsync, rename, fsync the
  directory). A crash during either leaves the previous file.
- `append`: nothing until `flush`, which fsyncs every appended entry. A crash loses an
  un-flushed suffix (storage recovery cuts a torn tail at the last whole batch), never a
  flushed entry.
- `truncate_to`: on return. The log removes whole batches; when `offset` falls inside a
  batch, the entries of that batch below `offset` are first written to `truncation-redo`
  (atomically), then the batch is removed, the kept entries re-appended and the log flushed,
  and the redo file removed. Opening after a crash in between replays the redo file, so a
  durable entry below `offset` is never lost.
- Snapshot retention: the newest `keep_snapshots` snapshots are kept, and the log keeps
  entries from the end offset of the oldest kept one (so an older snapshot stays usable if
  the newest turns out corrupt; the log start is not stored, open derives it the same way
  from the snapshot files); `load` returns only the entries after the newest.
  Installing a snapshot that the log does not contain (beyond its end, or a different epoch
  at end offset - 1) restarts the log empty at the snapshot's end offset and deletes the
  older snapshots, which that log could no longer continue.

Opening (`RaftStore.open`) recovers: leftover temp files are deleted; the quorum state is
read (a corrupt file raises RaftStoreError, a node must not forget its vote); the newest
snapshot whose header and CRC check out is chosen, skipping corrupt ones (reported in
`warnings`); the log is recovered by storage (a torn tail is cut); a redo file is replayed;
a log that does not contain the chosen snapshot restarts at its end offset (finishing an
interrupted install); a log that starts after the snapshot's end (or after 0 without a
snapshot) raises RaftStoreError.

The log is opened with recovery point 0, so every open validates every batch's CRC (the
metadata log is small; nothing needs a recovery-point checkpoint).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from tidelog.broker.controller.raft.records import EntryFormatError, encode_entries, entry_of
from tidelog.broker.controller.raft.store_files import (
    QUORUM_STATE_FILE,
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
    TEMP_SUFFIX,
    TRUNCATION_REDO_FILE,
    CorruptSnapshot,
    RaftStoreError,
    encode_quorum_state,
    encode_snapshot_header,
    id_key,
    parse_snapshot_name,
    read_quorum_state,
    read_snapshot,
    snapshot_file_name,
)
from tidelog.broker.controller.raft.types import (
    Entry,
    PersistedState,
    QuorumState,
    Snapshot,
    SnapshotId,
)
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.records import (
    BatchHeader,
    Record,
    RecordInput,
    decode_batch,
    decode_batches,
    encode_batch,
    validate_batch,
)
from tidelog.storage.config import INT32_MAX, LogConfig
from tidelog.storage.errors import StorageError
from tidelog.storage.filesystem import FileHandle, FileSystem
from tidelog.storage.log import PartitionLog

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "QUORUM_STATE_FILE",
    "SNAPSHOT_HEADER",
    "SNAPSHOT_MAGIC",
    "TRUNCATION_REDO_FILE",
    "RaftStore",
    "RaftStoreError",
    "snapshot_file_name",
]

DEFAULT_MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_KEEP_SNAPSHOTS = 2
DEFAULT_LOG_CONFIG = LogConfig(retention_ms=-1)
_INT16_MAX = 2**15 - 1
_INT64_MAX = 2**63 - 1
_READ_CHUNK_BYTES = 1024 * 1024


class RaftStore:
    """The durable state of one Raft node; see the module doc. Open with `RaftStore.open`."""

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        log: PartitionLog,
        *,
        now_ms: Callable[[], int],
        quorum: QuorumState,
        snapshots: dict[SnapshotId, str],
        corrupt_snapshots: dict[SnapshotId, str],
        startup_snapshot: Snapshot | None,
        keep_snapshots: int,
        max_snapshot_bytes: int,
        max_batch_bytes: int,
        warnings: list[str],
    ) -> None:
        self.fs = fs
        self.directory = directory
        self._log = log
        self._now_ms = now_ms
        self._quorum = quorum
        # Snapshot files not known to be corrupt (only the newest was read), and those that
        # failed their checks at open; both by id, to their file names.
        self._snapshots = snapshots
        self._corrupt = corrupt_snapshots
        # The snapshot read at open, handed to the first `load` so it is not read twice.
        self._startup_snapshot = startup_snapshot
        self._latest: SnapshotId | None = (
            startup_snapshot.snapshot_id if startup_snapshot is not None else None
        )
        self.keep_snapshots = keep_snapshots
        self.max_snapshot_bytes = max_snapshot_bytes
        self.max_batch_bytes = max_batch_bytes
        self.warnings = warnings
        """What open skipped or repaired: corrupt snapshots, a replayed redo, a restarted log."""
        self._failure: BaseException | None = None

    # ---------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        *,
        now_ms: Callable[[], int],
        log_config: LogConfig = DEFAULT_LOG_CONFIG,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> RaftStore:
        """Open (creating `directory` if missing) and recover the store; see the module doc.

        `log_config` configures the log's segments (only rolling matters: retention is the
        store's, by snapshots). `max_batch_bytes` bounds the batches `append` writes (one
        entry larger than it gets a batch of its own). Raises RaftStoreError.
        """
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
        if max_snapshot_bytes < 0 or max_batch_bytes < 1:
            raise ValueError("max_snapshot_bytes must be >= 0 and max_batch_bytes >= 1")
        warnings: list[str] = []
        log: PartitionLog | None = None
        try:
            if not fs.is_dir(directory):
                fs.mkdir(directory)
                fs.fsync_dir(posixpath.dirname(directory.rstrip("/")) or ".")
            names = fs.listdir(directory)
            temp_names = [name for name in names if name.endswith(TEMP_SUFFIX)]
            for name in temp_names:
                logger.info("%s: removing leftover temporary file %s", directory, name)
                fs.remove(posixpath.join(directory, name))
            if temp_names:
                fs.fsync_dir(directory)
            quorum = read_quorum_state(fs, posixpath.join(directory, QUORUM_STATE_FILE))
            snapshots: dict[SnapshotId, str] = {}
            for name in names:
                snapshot_id = parse_snapshot_name(name)
                if snapshot_id is not None:
                    snapshots[snapshot_id] = name
            corrupt: dict[SnapshotId, str] = {}
            chosen: Snapshot | None = None
            for snapshot_id in sorted(snapshots, key=id_key, reverse=True):
                path = posixpath.join(directory, snapshots[snapshot_id])
                try:
                    chosen = read_snapshot(fs, path, snapshot_id, max_snapshot_bytes)
                    break
                except CorruptSnapshot as exc:
                    message = f"{path}: skipping corrupt snapshot: {exc}"
                    logger.warning("%s", message)
                    warnings.append(message)
                    corrupt[snapshot_id] = snapshots.pop(snapshot_id)
            # The log start is not stored: it is where retention last trimmed the log, the
            # end of the oldest kept snapshot (never above the one chosen).
            kept = sorted(snapshots, key=id_key)[-keep_snapshots:]
            log_start_offset = min((snapshot_id.end_offset for snapshot_id in kept), default=0)
            log = PartitionLog.open(
                fs, directory, log_config, now_ms, log_start_offset=log_start_offset
            )
            store = cls(
                fs,
                directory,
                log,
                now_ms=now_ms,
                quorum=quorum,
                snapshots=snapshots,
                corrupt_snapshots=corrupt,
                startup_snapshot=chosen,
                keep_snapshots=keep_snapshots,
                max_snapshot_bytes=max_snapshot_bytes,
                max_batch_bytes=max_batch_bytes,
                warnings=warnings,
            )
            store._recover()
            return store
        except (OSError, StorageError, CorruptMessageError) as exc:
            if log is not None:
                log.close()
            raise RaftStoreError(f"{directory}: cannot open the Raft store: {exc}") from exc
        except BaseException:
            if log is not None:
                log.close()
            raise

    def _recover(self) -> None:
        self._replay_truncation_redo()
        log = self._log
        if self._latest is None:
            if log.log_start_offset != 0:
                raise RaftStoreError(
                    f"{self.directory}: the log starts at offset {log.log_start_offset} but "
                    f"no snapshot covers the offsets below it{self._corrupt_note()}"
                )
            return
        snapshot_id = self._latest
        if snapshot_id.end_offset < log.log_start_offset:
            raise RaftStoreError(
                f"{self.directory}: the log starts at offset {log.log_start_offset}, after the "
                f"end of snapshot {snapshot_id}: offsets in between are missing"
                f"{self._corrupt_note()}"
            )
        if not self._log_contains(snapshot_id):
            # An install that crashed between writing the snapshot and restarting the log, or
            # un-flushed entries lost below a snapshot that covers them.
            message = (
                f"{self.directory}: the log [{log.log_start_offset}, {log.log_end_offset}) "
                f"does not contain snapshot {snapshot_id}; restarting it at "
                f"{snapshot_id.end_offset}"
            )
            logger.warning("%s", message)
            self.warnings.append(message)
            log.truncate_fully_and_start_at(snapshot_id.end_offset)

    def _corrupt_note(self) -> str:
        if not self._corrupt:
            return ""
        names = ", ".join(sorted(self._corrupt.values()))
        return f" (corrupt snapshots skipped: {names})"

    def _replay_truncation_redo(self) -> None:
        path = posixpath.join(self.directory, TRUNCATION_REDO_FILE)
        if not self.fs.exists(path):
            return
        size = self.fs.file_size(path)
        if size > self._log.config.segment_bytes:
            raise RaftStoreError(f"{path}: {size} bytes, larger than a log segment")
        batch = self.fs.read_file(path)
        try:
            header = validate_batch(batch)
        except CorruptMessageError as exc:
            # Written by an atomic rename after an fsync: damage here is not a torn write.
            raise RaftStoreError(f"{path}: corrupt truncation redo batch: {exc}") from exc
        if header.total_bytes != len(batch):
            raise RaftStoreError(f"{path}: {len(batch) - header.total_bytes} bytes after the batch")
        log = self._log
        if log.log_end_offset >= header.base_offset:
            message = (
                f"{self.directory}: finishing an interrupted truncation to offset "
                f"{header.next_offset}"
            )
            log.truncate_to(header.base_offset)
            log.append_as_follower(batch)
            log.flush()
        else:
            # The log lost un-flushed entries below the batch: so were the batch's entries
            # never durable, and putting them back would leave a gap.
            message = (
                f"{self.directory}: dropping the truncation redo batch at offset "
                f"{header.base_offset}, beyond the recovered log end {log.log_end_offset}"
            )
        logger.warning("%s", message)
        self.warnings.append(message)
        self.fs.remove(path)
        self.fs.fsync_dir(self.directory)

    # ---------------------------------------------------------------------------------------
    # State

    @property
    def log_start_offset(self) -> int:
        """The first offset the log holds (entries below the latest snapshot included)."""
        return self._log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended entry must have."""
        return self._log.log_end_offset

    @property
    def latest_snapshot_id(self) -> SnapshotId | None:
        return self._latest

    @property
    def snapshot_ids(self) -> list[SnapshotId]:
        """The snapshot files on disk not known to be corrupt, oldest first."""
        return sorted(self._snapshots, key=id_key)

    @property
    def quorum_state(self) -> QuorumState:
        return self._quorum

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Refuse work after a failure; turn I/O and storage errors into a failure."""
        if self._failure is not None:
            raise RaftStoreError(
                f"{self.directory}: store unusable until reopened: {self._failure}"
            ) from self._failure
        try:
            yield
        except (OSError, StorageError, CorruptMessageError) as exc:
            self._failure = exc
            logger.error("%s: Raft store failed: %s", self.directory, exc)
            raise RaftStoreError(f"{self.directory}: {exc}") from exc

    # ---------------------------------------------------------------------------------------
    # Reading

    def load(self) -> PersistedState:
        """The quorum state, the newest valid snapshot (None if none) and the entries after
        it: consecutive offsets from the snapshot's end offset (or 0)."""
        with self._guard():
            snapshot = self._startup_snapshot
            self._startup_snapshot = None
            latest = self._latest
            if latest is not None and (snapshot is None or snapshot.snapshot_id != latest):
                path = posixpath.join(self.directory, snapshot_file_name(latest))
                try:
                    snapshot = read_snapshot(self.fs, path, latest, self.max_snapshot_bytes)
                except CorruptSnapshot as exc:
                    raise RaftStoreError(f"{path}: {exc}") from exc
            start = latest.end_offset if latest is not None else self._log.log_start_offset
            return PersistedState(
                quorum=self._quorum, snapshot=snapshot, entries=self._read_entries(start)
            )

    def _read_entries(self, start: int) -> list[Entry]:
        log = self._log
        end = log.log_end_offset
        entries: list[Entry] = []
        offset = start
        while offset < end:
            file_range = log.read(offset, _READ_CHUNK_BYTES)
            if file_range is None:
                raise RaftStoreError(f"{self.directory}: nothing readable at offset {offset}")
            data = file_range.read_bytes()
            if len(data) != file_range.length:
                raise RaftStoreError(f"{self.directory}: short read at offset {offset}")
            for header, records in decode_batches(data):
                for record in records:
                    if record.offset < offset:
                        continue  # below `start`, in the first batch read
                    if record.offset != offset:
                        raise RaftStoreError(
                            f"{self.directory}: offset {offset} is missing from the log "
                            f"(found {record.offset})"
                        )
                    entries.append(self._entry(header, record))
                    offset += 1
                if offset < header.next_offset:
                    raise RaftStoreError(
                        f"{self.directory}: batch at {header.base_offset} ends at "
                        f"{header.last_offset} but holds records only up to {offset - 1}"
                    )
        return entries

    def _entry(self, header: BatchHeader, record: Record) -> Entry:
        try:
            return entry_of(header, record)
        except EntryFormatError as exc:
            raise RaftStoreError(f"{self.directory}: {exc}") from None

    def _epoch_at(self, offset: int) -> int:
        """The epoch of the entry at `offset`, from the header of the batch holding it."""
        for header in self._log.batches_from(offset):
            if header.base_offset <= offset <= header.last_offset:
                return header.partition_leader_epoch
            break
        raise RaftStoreError(f"{self.directory}: offset {offset} is missing from the log")

    def _log_contains(self, snapshot_id: SnapshotId) -> bool:
        """Whether the log continues `snapshot_id`: it holds offset end - 1 in the snapshot's
        epoch, or starts exactly at the end offset."""
        end_offset = snapshot_id.end_offset
        log = self._log
        if end_offset > log.log_end_offset:
            return False
        if end_offset <= log.log_start_offset:
            return True
        return self._epoch_at(end_offset - 1) == snapshot_id.epoch

    # ---------------------------------------------------------------------------------------
    # Quorum state

    def write_quorum_state(self, state: QuorumState) -> None:
        """Replace the quorum state; durable on return. A write of the current state is
        skipped (it already is durable)."""
        if not 0 <= state.epoch <= INT32_MAX:
            raise ValueError(f"epoch {state.epoch} is outside [0, {INT32_MAX}]")
        for name, node in (("voted_for", state.voted_for), ("leader_id", state.leader_id)):
            if not -1 <= node <= INT32_MAX:
                raise ValueError(f"{name} {node} is outside [-1, {INT32_MAX}]")
        with self._guard():
            if state == self._quorum:
                return
            path = posixpath.join(self.directory, QUORUM_STATE_FILE)
            self._write_atomic(path, encode_quorum_state(state))
            self._quorum = state

    def _write_atomic(self, path: str, *parts: bytes) -> None:
        """Replace `path` with `parts` durably: temp file, fsync, rename, fsync the directory."""
        temp_path = path + TEMP_SUFFIX
        handle: FileHandle = self.fs.open(temp_path, create=True)
        try:
            handle.truncate(0)
            for part in parts:
                handle.append(part)
            handle.fsync()
        finally:
            handle.close()
        self.fs.rename(temp_path, path)
        self.fs.fsync_dir(self.directory)

    # ---------------------------------------------------------------------------------------
    # The log

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that continue the log end, in batches; durable after `flush`."""
        if not entries:
            return
        with self._guard():
            expected = self._log.log_end_offset
            for entry in entries:
                if entry.offset != expected:
                    raise ValueError(f"entry at offset {entry.offset}, expected {expected}")
                if not 0 <= entry.epoch <= INT32_MAX:
                    raise ValueError(f"entry {entry.offset} has epoch {entry.epoch}")
                control = entry.control_type
                if control is not None and not 0 <= control <= _INT16_MAX:
                    raise ValueError(f"entry {entry.offset} has control type {control}")
                expected += 1
            segment_bytes = self._log.config.segment_bytes
            limit = min(self.max_batch_bytes, segment_bytes)
            blob = bytearray()
            batches = encode_entries(entries, timestamp_ms=self._now_ms(), batch_bytes_max=limit)
            for batch in batches:
                if len(batch) > segment_bytes:
                    raise RaftStoreError(
                        f"{self.directory}: a batch of {len(batch)} bytes does not fit a "
                        f"log segment of {segment_bytes} bytes"
                    )
                if blob and len(blob) + len(batch) > segment_bytes:
                    self._log.append_as_follower(blob)
                    blob = bytearray()
                blob += batch
            self._log.append_as_follower(blob)

    def flush(self) -> None:
        """Make every appended entry durable."""
        with self._guard():
            self._log.flush()

    def truncate_to(self, offset: int) -> None:
        """Drop every entry at `offset` and above; durable on return (see the module doc).

        `offset` must not be below the latest snapshot's end offset: those entries are
        committed.
        """
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        if self._latest is not None and offset < self._latest.end_offset:
            raise ValueError(
                f"cannot truncate to {offset}, below the end of snapshot {self._latest}"
            )
        with self._guard():
            log = self._log
            if offset >= log.log_end_offset:
                return
            file_range = log.read(offset, 0)
            if file_range is None:
                raise RaftStoreError(f"{self.directory}: nothing readable at offset {offset}")
            header, records = decode_batch(file_range.read_bytes())
            if header.base_offset >= offset:
                log.truncate_to(offset)
                return
            kept = [
                RecordInput(value=record.value, key=record.key, timestamp_ms=record.timestamp_ms)
                for record in records
                if record.offset < offset
            ]
            batch = encode_batch(
                kept,
                base_offset=header.base_offset,
                is_control=header.is_control,
                partition_leader_epoch=header.partition_leader_epoch,
            )
            redo_path = posixpath.join(self.directory, TRUNCATION_REDO_FILE)
            self._write_atomic(redo_path, batch)
            log.truncate_to(header.base_offset)
            log.append_as_follower(batch)
            log.flush()
            self.fs.remove(redo_path)
            self.fs.fsync_dir(self.directory)

    # ---------------------------------------------------------------------------------------
    # Snapshots

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Write `snapshot` durably, then apply retention (module doc).

        A snapshot the log does not contain (beyond its end, or another epoch at end - 1: a
        follower installing the leader's) restarts the log at its end offset. Raises
        RaftStoreError for data over `max_snapshot_bytes`, ValueError for a snapshot older
        than the latest one.
        """
        snapshot_id = snapshot.snapshot_id
        end_offset = snapshot_id.end_offset
        if not 0 <= end_offset <= _INT64_MAX or not 0 <= snapshot_id.epoch <= INT32_MAX:
            raise ValueError(f"invalid snapshot id {snapshot_id}")
        if len(snapshot.data) > self.max_snapshot_bytes:
            raise RaftStoreError(
                f"{self.directory}: snapshot {snapshot_id} has {len(snapshot.data)} bytes, "
                f"more than the limit of {self.max_snapshot_bytes}"
            )
        latest = self._latest
        if latest is not None and (
            end_offset < latest.end_offset
            or (end_offset == latest.end_offset and snapshot_id.epoch != latest.epoch)
        ):
            raise ValueError(f"snapshot {snapshot_id} does not follow the latest, {latest}")
        with self._guard():
            log = self._log
            if end_offset < log.log_start_offset:
                raise RaftStoreError(
                    f"{self.directory}: snapshot {snapshot_id} ends before the log start "
                    f"{log.log_start_offset}"
                )
            name = snapshot_file_name(snapshot_id)
            path = posixpath.join(self.directory, name)
            self._write_atomic(path, encode_snapshot_header(snapshot), snapshot.data)
            self._startup_snapshot = None
            self._latest = snapshot_id
            self._snapshots[snapshot_id] = name
            self._corrupt.pop(snapshot_id, None)
            restarted = not self._log_contains(snapshot_id)
            if restarted:
                log.truncate_fully_and_start_at(end_offset)
            self._apply_retention(snapshot_id, restarted)

    def _apply_retention(self, newest: SnapshotId, restarted: bool) -> None:
        ordered = sorted(self._snapshots, key=id_key)
        kept = [newest] if restarted else ordered[-self.keep_snapshots :]
        log = self._log
        trim_offset = min(snapshot_id.end_offset for snapshot_id in kept)
        if log.log_start_offset < trim_offset <= log.log_end_offset:
            log.delete_records(trim_offset)
        victims = [
            (snapshot_id, self._snapshots) for snapshot_id in ordered if snapshot_id not in kept
        ]
        victims += [
            (snapshot_id, self._corrupt)
            for snapshot_id in sorted(self._corrupt, key=id_key)
            if id_key(snapshot_id) < id_key(newest)
        ]
        for snapshot_id, table in victims:
            name = table.pop(snapshot_id)
            logger.info("%s: deleting snapshot %s", self.directory, name)
            self.fs.remove(posixpath.join(self.directory, name))
        if victims:
            self.fs.fsync_dir(self.directory)

    # ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the log's files. Does not flush: un-flushed entries may be lost."""
        if self._failure is None:
            self._failure = RaftStoreError("closed")
        self._log.close()
