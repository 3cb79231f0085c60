"""The files of a RaftStore's directory and their formats (see `store` for when each is
written and how the directory is recovered).

Directory layout (Kafka's: `directory` is the partition directory itself, e.g.
`<metadata.log.dir>/__cluster_metadata-0`; the storage `PartitionLog` shares it)::

    quorum-state                          {"leaderId":..,"leaderEpoch":..,"votedId":..,
                                          "data_version":0}, Kafka's FileQuorumStateStore
    <end offset:020d>-<epoch:010d>.checkpoint
                                          a snapshot: a 30-byte header (below), then the
                                          state machine's bytes verbatim
    truncation-redo                       present only while `truncate_to` rewrites a batch
                                          that straddles the truncation point (`store`)
    *.tmp                                 an atomic write in progress; removed at open
    <base offset:020d>.log / .index / .timeindex, leader-epoch-checkpoint
                                          the log (storage.log): one record per entry

Snapshot header (big-endian): magic `b"TLSN"`, format version int16 (0), end offset int64,
epoch int32, data length int64, CRC-32C of the data uint32. A snapshot file is valid when
the header agrees with the file name and the file size and the CRC matches.
"""

from __future__ import annotations

import json
import re
import struct

from crc32c import crc32c

from tidelog.broker.controller.raft.types import QuorumState, Snapshot, SnapshotId
from tidelog.storage.config import INT32_MAX
from tidelog.storage.filesystem import FileSystem

QUORUM_STATE_FILE = "quorum-state"
TRUNCATION_REDO_FILE = "truncation-redo"
SNAPSHOT_SUFFIX = ".checkpoint"
TEMP_SUFFIX = ".tmp"
_SNAPSHOT_NAME = re.compile(r"(\d{20})-(\d{10})\.checkpoint")

SNAPSHOT_MAGIC = b"TLSN"
SNAPSHOT_FORMAT_VERSION = 0
SNAPSHOT_HEADER = struct.Struct(">4shqiqI")
"""magic, format version, end offset, epoch, data length, CRC-32C of the data."""

QUORUM_STATE_MAX_BYTES = 64 * 1024
"""A quorum-state file is a few dozen bytes; anything larger is refused, not read."""
QUORUM_STATE_VERSIONS = (0, 1)
"""data_version values read (Kafka writes 0 before KIP-853, 1 after); 0 is written."""


class RaftStoreError(Exception):
    """The store's files are unusable (corrupt, inconsistent, over a limit) or an I/O error
    left them in an unknown state; in the last case the store refuses further work until it
    is reopened."""


def snapshot_file_name(snapshot_id: SnapshotId) -> str:
    """Kafka's snapshot file name: `<end offset:020d>-<epoch:010d>.checkpoint`."""
    return f"{snapshot_id.end_offset:020d}-{snapshot_id.epoch:010d}{SNAPSHOT_SUFFIX}"


def parse_snapshot_name(name: str) -> SnapshotId | None:
    match = _SNAPSHOT_NAME.fullmatch(name)
    if match is None:
        return None
    return SnapshotId(int(match[1]), int(match[2]))


class CorruptSnapshot(Exception):
    """A snapshot file that fails its checks: skipped, the next older one is tried."""


def id_key(snapshot_id: SnapshotId) -> tuple[int, int]:
    return snapshot_id.end_offset, snapshot_id.epoch


def read_quorum_state(fs: FileSystem, path: str) -> QuorumState:
    """The quorum state in `path`, QuorumState() when there is no file; RaftStoreError when
    the file is unreadable (a node must not silently forget its vote)."""
    if not fs.exists(path):
        return QuorumState()
    size = fs.file_size(path)
    if size > QUORUM_STATE_MAX_BYTES:
        raise RaftStoreError(f"{path}: {size} bytes, not a quorum-state file")
    try:
        document = json.loads(fs.read_file(path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RaftStoreError(f"{path}: corrupt quorum state: {exc}") from exc
    if not isinstance(document, dict):
        raise RaftStoreError(f"{path}: corrupt quorum state: not a JSON object")
    version = document.get("data_version")
    if _as_int(version) not in QUORUM_STATE_VERSIONS:
        raise RaftStoreError(f"{path}: unsupported quorum state data_version {version!r}")
    values = []
    for field, low in (("leaderId", -1), ("leaderEpoch", 0), ("votedId", -1)):
        value = _as_int(document.get(field))
        if value is None or not low <= value <= INT32_MAX:
            raise RaftStoreError(
                f"{path}: corrupt quorum state: {field} is {document.get(field)!r}"
            )
        values.append(value)
    leader_id, epoch, voted_for = values
    return QuorumState(epoch=epoch, voted_for=voted_for, leader_id=leader_id)


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_snapshot(
    fs: FileSystem, path: str, snapshot_id: SnapshotId, max_snapshot_bytes: int
) -> Snapshot:
    """The snapshot in `path`; CorruptSnapshot when its checks fail, RaftStoreError when
    it is over the size limit (a valid but refused snapshot must not be skipped)."""
    size = fs.file_size(path)
    header_bytes = SNAPSHOT_HEADER.size
    if size < header_bytes:
        raise CorruptSnapshot(f"{size} bytes, shorter than the {header_bytes}-byte header")
    if size - header_bytes > max_snapshot_bytes:
        raise RaftStoreError(
            f"{path}: snapshot of {size - header_bytes} bytes is over the limit of "
            f"{max_snapshot_bytes}"
        )
    handle = fs.open(path)
    try:
        header = handle.pread(0, header_bytes)
        magic, version, end_offset, epoch, length, crc = SNAPSHOT_HEADER.unpack(header)
        if magic != SNAPSHOT_MAGIC:
            raise CorruptSnapshot(f"bad magic {magic!r}")
        if version != SNAPSHOT_FORMAT_VERSION:
            raise CorruptSnapshot(f"unknown format version {version}")
        if SnapshotId(end_offset, epoch) != snapshot_id:
            raise CorruptSnapshot(
                f"header says end offset {end_offset}, epoch {epoch}; the name {snapshot_id}"
            )
        if length != size - header_bytes:
            raise CorruptSnapshot(
                f"header says {length} bytes of data, the file has {size - header_bytes}"
            )
        data = handle.pread(header_bytes, length)
    finally:
        handle.close()
    if len(data) != length:
        raise CorruptSnapshot(f"read {len(data)} bytes of {length}")
    actual = crc32c(data)
    if actual != crc:
        raise CorruptSnapshot(f"CRC-32C {actual:#010x}, the header says {crc:#010x}")
    return Snapshot(snapshot_id, data)


def encode_quorum_state(state: QuorumState) -> bytes:
    """Kafka's quorum-state JSON for `state` (data_version 0)."""
    return json.dumps(
        {
            "leaderId": state.leader_id,
            "leaderEpoch": state.epoch,
            "votedId": state.voted_for,
            "data_version": 0,
        },
        separators=(",", ":"),
    ).encode()


def encode_snapshot_header(snapshot: Snapshot) -> bytes:
    """The header written before a snapshot's data (module docstring)."""
    snapshot_id, data = snapshot.snapshot_id, snapshot.data
    return SNAPSHOT_HEADER.pack(
        SNAPSHOT_MAGIC,
        SNAPSHOT_FORMAT_VERSION,
        snapshot_id.end_offset,
        snapshot_id.epoch,
        len(data),
        crc32c(data),
    )
