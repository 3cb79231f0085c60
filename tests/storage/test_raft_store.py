"""RaftStore (broker.controller.raft.store) on both filesystems: quorum state, entries,
truncation, snapshots, corruption, and crashes of the MemoryFileSystem (seeded; a hypothesis
state machine checks random operations and crashes against a model)."""

from __future__ import annotations

import contextlib
import json
import posixpath
import struct

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.storage.conftest import Clock, StorageEnv
from tidelog.broker.controller.raft.store import (
    QUORUM_STATE_FILE,
    SNAPSHOT_HEADER,
    TRUNCATION_REDO_FILE,
    RaftStore,
    RaftStoreError,
    snapshot_file_name,
)
from tidelog.broker.controller.raft.types import (
    NO_NODE,
    Entry,
    PersistedState,
    QuorumState,
    Snapshot,
    SnapshotId,
)
from tidelog.client.protocol.records import decode_batches
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import FaultPoint, FaultPoints, FileSystem, MemoryFileSystem

SMALL = LogConfig(segment_bytes=1_500, index_interval_bytes=200, retention_ms=-1)
LEADER_CHANGE = 2


def faulty_store(seed: int) -> tuple[FaultPoints, MemoryFileSystem, Clock, RaftStore]:
    """A store on a fresh MemoryFileSystem whose operations the test can make fail."""
    faults = FaultPoints()
    fs = MemoryFileSystem(seed=seed, faults=faults)
    fs.mkdir("/data")
    fs.fsync_dir("/")
    clock = Clock()
    return faults, fs, clock, open_store(fs, clock)


def open_store(env_or_fs: StorageEnv | FileSystem, clock: Clock, **kwargs: object) -> RaftStore:
    if isinstance(env_or_fs, StorageEnv):
        fs, path = env_or_fs.fs, env_or_fs.path("__cluster_metadata-0")
    else:
        fs, path = env_or_fs, "/data/__cluster_metadata-0"
    kwargs.setdefault("log_config", SMALL)
    return RaftStore.open(fs, path, now_ms=clock, **kwargs)  # type: ignore[arg-type]


def append_in_parts(store: RaftStore, written: list[Entry], part: int = 5) -> None:
    """Append in several calls, so that the log rolls segments between them."""
    for index in range(0, len(written), part):
        store.append(written[index : index + part])


def entries(
    start: int, epochs: list[int], *, tag: str = "v", control_every: int = 0
) -> list[Entry]:
    """One entry per item of `epochs`, from offset `start`; every `control_every`-th is a
    LeaderChange control entry."""
    out = []
    for index, epoch in enumerate(epochs):
        offset = start + index
        control = LEADER_CHANGE if control_every and index % control_every == 0 else None
        out.append(Entry(offset, epoch, f"{tag}{offset}".encode(), control))
    return out


def reopen(store: RaftStore, env: StorageEnv, clock: Clock, **kwargs: object) -> RaftStore:
    store.close()
    return open_store(env, clock, **kwargs)


def segment_batches(store: RaftStore) -> list[tuple[int, int, bool, list[bytes | None]]]:
    """(base offset, epoch, is control, record keys) of every batch in the log's files."""
    found = []
    for name in store.fs.listdir(store.directory):
        if name.endswith(".log"):
            data = store.fs.read_file(posixpath.join(store.directory, name))
            for header, records in decode_batches(data):
                found.append(
                    (
                        header.base_offset,
                        header.partition_leader_epoch,
                        header.is_control,
                        [record.key for record in records],
                    )
                )
    return found


# ------------------------------------------------------------------------------------------
# Quorum state


def test_a_new_store_is_empty_and_creates_its_directory(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    assert env.fs.is_dir(env.path("__cluster_metadata-0"))
    assert store.load() == PersistedState()
    assert store.warnings == []
    store.close()


def test_quorum_state_round_trips_in_kafkas_json_layout(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    state = QuorumState(epoch=7, voted_for=3, leader_id=NO_NODE)
    store.write_quorum_state(state)
    raw = env.fs.read_file(env.path("__cluster_metadata-0", QUORUM_STATE_FILE))
    assert json.loads(raw) == {"leaderId": -1, "leaderEpoch": 7, "votedId": 3, "data_version": 0}
    store.write_quorum_state(QuorumState(epoch=8, voted_for=3, leader_id=3))
    store = reopen(store, env, clock)
    assert store.load().quorum == QuorumState(epoch=8, voted_for=3, leader_id=3)
    store.close()


def test_a_kafka_written_quorum_state_is_read(env: StorageEnv, clock: Clock) -> None:
    open_store(env, clock).close()
    path = env.path("__cluster_metadata-0", QUORUM_STATE_FILE)
    handle = env.fs.open(path, create=True)
    handle.append(
        b'{"leaderId":-1,"leaderEpoch":2,"votedId":1,'
        b'"votedDirectoryId":"J8aAPcfLQt2bqs1JT_rMgQ","data_version":1}'
    )
    handle.close()
    store = open_store(env, clock)
    assert store.load().quorum == QuorumState(epoch=2, voted_for=1, leader_id=-1)
    store.close()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"leaderId":1,"leaderEpoch":2,"votedId":-1}',
        b'{"leaderId":1,"leaderEpoch":2,"votedId":-1,"data_version":9}',
        b'{"leaderId":1,"leaderEpoch":-3,"votedId":-1,"data_version":0}',
        b'{"leaderId":"1","leaderEpoch":2,"votedId":-1,"data_version":0}',
        b'{"leaderId":1,"votedId":-1,"data_version":0}',
        b'{"leaderId":1,"leaderEpoch":true,"votedId":-1,"data_version":0}',
    ],
)
def test_a_corrupt_quorum_state_refuses_to_open(
    env: StorageEnv, clock: Clock, content: bytes
) -> None:
    store = open_store(env, clock)
    store.write_quorum_state(QuorumState(epoch=5, voted_for=1))
    store.close()
    path = env.path("__cluster_metadata-0", QUORUM_STATE_FILE)
    env.fs.remove(path)
    handle = env.fs.open(path, create=True)
    handle.append(content)
    handle.close()
    with pytest.raises(RaftStoreError, match=QUORUM_STATE_FILE):
        open_store(env, clock)


def test_an_oversized_quorum_state_is_not_read(env: StorageEnv, clock: Clock) -> None:
    open_store(env, clock).close()
    handle = env.fs.open(env.path("__cluster_metadata-0", QUORUM_STATE_FILE), create=True)
    handle.append(b" " * 100_000)
    handle.close()
    with pytest.raises(RaftStoreError, match="not a quorum-state file"):
        open_store(env, clock)


def test_invalid_quorum_states_are_refused(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    with pytest.raises(ValueError):
        store.write_quorum_state(QuorumState(epoch=-1))
    with pytest.raises(ValueError):
        store.write_quorum_state(QuorumState(epoch=1, voted_for=-2))
    store.close()


# ------------------------------------------------------------------------------------------
# Entries


def test_entries_round_trip_data_and_control_over_several_epochs(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock)
    written = entries(0, [1, 1, 1, 2, 2, 4, 4, 4, 4], control_every=3)
    store.append(written[:4])
    store.append(written[4:])
    store.flush()
    assert store.load().entries == written
    store = reopen(store, env, clock)
    assert store.load().entries == written
    assert store.log_end_offset == 9
    store.close()


def test_batches_group_by_epoch_and_kind_with_kafkas_control_key(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock)
    written = [
        Entry(0, 1, b"leader-change", LEADER_CHANGE),
        Entry(1, 1, b"a"),
        Entry(2, 1, b"b"),
        Entry(3, 2, b"leader-change", LEADER_CHANGE),
        Entry(4, 2, b"c"),
    ]
    store.append(written)
    store.flush()
    control_key = struct.pack(">hh", 0, LEADER_CHANGE)
    assert segment_batches(store) == [
        (0, 1, True, [control_key]),
        (1, 1, False, [None, None]),
        (3, 2, True, [control_key]),
        (4, 2, False, [None]),
    ]
    assert store.load().entries == written
    store.close()


def test_large_appends_split_into_bounded_batches_across_segments(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock, max_batch_bytes=400)
    written = [Entry(offset, 3, bytes([offset % 256]) * 90) for offset in range(40)]
    store.append(written)
    store.flush()
    batches = segment_batches(store)
    assert len(batches) > 5
    assert len([name for name in env.fs.listdir(store.directory) if name.endswith(".log")]) > 1
    store = reopen(store, env, clock, max_batch_bytes=400)
    assert store.load().entries == written
    store.close()


def test_an_entry_larger_than_a_segment_is_refused(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    with pytest.raises(RaftStoreError, match="does not fit"):
        store.append([Entry(0, 1, b"x" * 2_000)])
    store.close()


def test_appends_must_continue_the_log_end(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1, 1]))
    with pytest.raises(ValueError, match="expected 2"):
        store.append(entries(3, [1]))
    with pytest.raises(ValueError, match="expected 3"):
        store.append([Entry(2, 1, b"a"), Entry(4, 1, b"b")])
    with pytest.raises(ValueError, match="epoch"):
        store.append([Entry(2, -1, b"a")])
    assert store.log_end_offset == 2
    store.append([])
    store.close()


def test_truncation_at_a_batch_boundary_and_inside_a_batch(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    written = entries(0, [1] * 5 + [2] * 5)
    store.append(written)
    store.truncate_to(5)  # between the two batches
    assert store.load().entries == written[:5]
    store.truncate_to(3)  # inside the epoch-1 batch: 0..2 stay
    assert store.log_end_offset == 3
    assert store.load().entries == written[:3]
    assert TRUNCATION_REDO_FILE not in env.fs.listdir(store.directory)
    again = entries(3, [3, 3, 3], tag="w")
    store.append(again)
    store.flush()
    store.truncate_to(99)  # beyond the end: nothing
    store = reopen(store, env, clock)
    assert store.load().entries == written[:3] + again
    assert [batch[:2] for batch in segment_batches(store)] == [(0, 1), (3, 3)]
    store.close()


def test_truncation_keeps_control_entries_below_the_point(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    written = [Entry(offset, 1, b"lc", LEADER_CHANGE) for offset in range(4)]
    store.append(written)
    store.truncate_to(2)
    store = reopen(store, env, clock)
    assert store.load().entries == written[:2]
    store.close()


def test_truncation_is_durable_on_return() -> None:
    for seed in range(20):
        fs = MemoryFileSystem(seed=seed)
        fs.mkdir("/data")
        fs.fsync_dir("/")
        clock = Clock()
        store = open_store(fs, clock)
        written = entries(0, [1] * 6 + [2] * 6)
        store.append(written)
        store.flush()
        store.truncate_to(8)  # inside the epoch-2 batch
        store.truncate_to(6)  # at a boundary
        fs.crash()
        store = open_store(fs, clock)
        assert store.load().entries == written[:6], seed
        store.close()


@pytest.mark.parametrize(
    ("point", "path_contains"),
    [
        (FaultPoint.TRUNCATE, ".log"),  # the log's cut, after the redo file is durable
        (FaultPoint.FSYNC, ".log"),  # the flush of the re-appended batch
        (FaultPoint.REMOVE, TRUNCATION_REDO_FILE),  # removing the redo file
        (FaultPoint.FSYNC_DIR, "__cluster_metadata-0"),
    ],
)
def test_a_crash_inside_a_truncation_never_loses_a_flushed_entry_below_it(
    point: FaultPoint, path_contains: str
) -> None:
    for seed in range(10):
        faults, fs, clock, store = faulty_store(seed)
        written = entries(0, [1] * 10)
        store.append(written)
        store.flush()
        # Counted from here: the redo file's own writes come before the faulted operation.
        faults.arm(point, path_contains=path_contains)
        with contextlib.suppress(RaftStoreError):
            store.truncate_to(4)
        fs.crash()
        store = open_store(fs, clock)
        loaded = store.load().entries
        assert loaded in (written[:4], written), (seed, point)
        assert TRUNCATION_REDO_FILE not in fs.listdir(store.directory)
        store.append(entries(len(loaded), [2]))
        store.flush()
        store.close()


def test_a_redo_file_beyond_the_recovered_log_is_dropped(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1] * 3))
    store.flush()
    store.close()
    from tidelog.client.protocol.records import RecordInput, encode_batch

    batch = encode_batch([RecordInput(value=b"x")], base_offset=10, partition_leader_epoch=1)
    handle = env.fs.open(env.path("__cluster_metadata-0", TRUNCATION_REDO_FILE), create=True)
    handle.append(batch)
    handle.close()
    store = open_store(env, clock)
    assert [entry.offset for entry in store.load().entries] == [0, 1, 2]
    assert any("dropping the truncation redo" in warning for warning in store.warnings)
    store.close()


def test_a_corrupt_redo_file_refuses_to_open(env: StorageEnv, clock: Clock) -> None:
    open_store(env, clock).close()
    handle = env.fs.open(env.path("__cluster_metadata-0", TRUNCATION_REDO_FILE), create=True)
    handle.append(b"\x00" * 80)
    handle.close()
    with pytest.raises(RaftStoreError, match=TRUNCATION_REDO_FILE):
        open_store(env, clock)


def test_truncation_below_the_snapshot_is_refused(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1] * 5))
    store.write_snapshot(Snapshot(SnapshotId(3, 1), b"s"))
    with pytest.raises(ValueError, match="below the end of snapshot"):
        store.truncate_to(2)
    store.truncate_to(3)
    assert store.load().entries == []
    store.close()


# ------------------------------------------------------------------------------------------
# Snapshots


def test_snapshots_load_the_newest_keep_two_and_trim_the_log(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    written = entries(0, [1] * 20 + [2] * 40, tag="value-padding-")
    append_in_parts(store, written)
    store.flush()
    store.write_snapshot(Snapshot(SnapshotId(10, 1), b"first"))
    store.write_snapshot(Snapshot(SnapshotId(30, 2), b"second"))
    store.write_snapshot(Snapshot(SnapshotId(50, 2), b"third"))
    names = [name for name in env.fs.listdir(store.directory) if name.endswith(".checkpoint")]
    assert names == [snapshot_file_name(SnapshotId(30, 2)), snapshot_file_name(SnapshotId(50, 2))]
    # The log keeps entries from the oldest kept snapshot: it can stand in for the newest.
    assert 0 < store.log_start_offset <= 30
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(50, 2), b"third")
    assert state.entries == written[50:]
    store = reopen(store, env, clock)
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(50, 2), b"third")
    assert state.entries == written[50:]
    assert 0 < store.log_start_offset <= 30
    store.close()


def test_with_one_snapshot_kept_the_log_below_it_is_deleted(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock, keep_snapshots=1)
    written = entries(0, [1] * 60, tag="value-padding-")
    append_in_parts(store, written)
    store.flush()
    segments_before = [n for n in env.fs.listdir(store.directory) if n.endswith(".log")]
    store.write_snapshot(Snapshot(SnapshotId(45, 1), b"snap"))
    assert store.log_start_offset == 45
    segments_after = [n for n in env.fs.listdir(store.directory) if n.endswith(".log")]
    assert len(segments_after) < len(segments_before)
    store.append(entries(60, [2, 2]))
    store.flush()
    store = reopen(store, env, clock, keep_snapshots=1)
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(45, 1), b"snap")
    assert [entry.offset for entry in state.entries] == list(range(45, 62))
    store.close()


def test_a_snapshot_at_the_log_end_leaves_an_empty_tail(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock, keep_snapshots=1)
    store.append(entries(0, [1] * 5))
    store.write_snapshot(Snapshot(SnapshotId(5, 1), b"all"))
    store.flush()
    store = reopen(store, env, clock, keep_snapshots=1)
    state = store.load()
    assert (state.snapshot, state.entries) == (Snapshot(SnapshotId(5, 1), b"all"), [])
    store.append(entries(5, [2]))
    store.close()


def test_installing_a_snapshot_beyond_the_log_end_restarts_the_log(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1] * 5))
    store.flush()
    store.write_snapshot(Snapshot(SnapshotId(3, 1), b"old"))
    store.write_snapshot(Snapshot(SnapshotId(100, 6), b"leader's"))
    assert (store.log_start_offset, store.log_end_offset) == (100, 100)
    names = [name for name in env.fs.listdir(store.directory) if name.endswith(".checkpoint")]
    assert names == [snapshot_file_name(SnapshotId(100, 6))]
    store.append(entries(100, [6, 7]))
    store.flush()
    store = reopen(store, env, clock)
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(100, 6), b"leader's")
    assert state.entries == entries(100, [6, 7])
    store.close()


def test_installing_a_snapshot_of_another_history_restarts_the_log(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1] * 3 + [2] * 5))
    store.flush()
    # The leader's entry 5 is of epoch 3: this log diverged at or before it.
    store.write_snapshot(Snapshot(SnapshotId(6, 3), b"leader's"))
    assert (store.log_start_offset, store.log_end_offset) == (6, 6)
    assert store.load().entries == []
    store.close()


def test_snapshots_must_not_go_backwards(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1] * 5))
    store.write_snapshot(Snapshot(SnapshotId(4, 1), b"a"))
    with pytest.raises(ValueError, match="does not follow"):
        store.write_snapshot(Snapshot(SnapshotId(3, 1), b"b"))
    with pytest.raises(ValueError, match="does not follow"):
        store.write_snapshot(Snapshot(SnapshotId(4, 2), b"b"))
    store.write_snapshot(Snapshot(SnapshotId(4, 1), b"rewritten"))
    assert store.load().snapshot == Snapshot(SnapshotId(4, 1), b"rewritten")
    store.close()


def test_the_snapshot_file_is_a_header_then_the_data(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.write_snapshot(Snapshot(SnapshotId(0, 0), b"empty state"))
    raw = env.fs.read_file(env.path("__cluster_metadata-0", snapshot_file_name(SnapshotId(0, 0))))
    assert snapshot_file_name(SnapshotId(0, 0)) == "00000000000000000000-0000000000.checkpoint"
    magic, version, end_offset, epoch, length, _ = SNAPSHOT_HEADER.unpack_from(raw)
    assert (magic, version, end_offset, epoch, length) == (b"TLSN", 0, 0, 0, 11)
    assert raw[SNAPSHOT_HEADER.size :] == b"empty state"
    store.close()


def write_raw(env: StorageEnv, name: str, data: bytes) -> None:
    path = env.path("__cluster_metadata-0", name)
    if env.fs.exists(path):
        env.fs.remove(path)
    handle = env.fs.open(path, create=True)
    handle.append(data)
    handle.close()


def snapshot_bytes(env: StorageEnv, snapshot_id: SnapshotId) -> bytes:
    return env.fs.read_file(env.path("__cluster_metadata-0", snapshot_file_name(snapshot_id)))


@pytest.mark.parametrize("damage", ["flip", "cut", "header", "empty", "magic", "name"])
def test_a_corrupt_snapshot_falls_back_to_the_older_one(
    env: StorageEnv, clock: Clock, damage: str
) -> None:
    store = open_store(env, clock)
    written = entries(0, [1] * 10 + [2] * 10)
    store.append(written)
    store.flush()
    store.write_snapshot(Snapshot(SnapshotId(8, 1), b"older state"))
    store.write_snapshot(Snapshot(SnapshotId(15, 2), b"newer state"))
    store.close()
    newer = SnapshotId(15, 2)
    raw = bytearray(snapshot_bytes(env, newer))
    if damage == "flip":
        raw[-1] ^= 0x01
    elif damage == "cut":
        del raw[-3:]
    elif damage == "header":
        del raw[10:]
    elif damage == "empty":
        raw.clear()
    elif damage == "magic":
        raw[0:4] = b"XXXX"
    else:  # a header that belongs to another snapshot
        struct.pack_into(">q", raw, 6, 16)
    write_raw(env, snapshot_file_name(newer), bytes(raw))
    store = open_store(env, clock)
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(8, 1), b"older state")
    assert state.entries == written[8:]
    assert len(store.warnings) == 1
    assert snapshot_file_name(newer) in store.warnings[0]
    # The next snapshot supersedes the corrupt one, which goes.
    store.write_snapshot(Snapshot(SnapshotId(18, 2), b"next"))
    names = [name for name in env.fs.listdir(store.directory) if name.endswith(".checkpoint")]
    assert snapshot_file_name(newer) not in names
    store.close()


def test_a_corrupt_newest_snapshot_over_a_trimmed_log_refuses_to_open(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock, keep_snapshots=1)
    append_in_parts(store, entries(0, [1] * 60, tag="value-padding-"))
    store.flush()
    store.write_snapshot(Snapshot(SnapshotId(50, 1), b"state"))
    store.close()
    write_raw(env, snapshot_file_name(SnapshotId(50, 1)), b"junk")
    with pytest.raises(RaftStoreError, match="no snapshot covers"):
        open_store(env, clock)


def test_a_log_starting_after_the_snapshot_refuses_to_open(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock, keep_snapshots=2)
    append_in_parts(store, entries(0, [1] * 60, tag="value-padding-"))
    store.flush()
    store.write_snapshot(Snapshot(SnapshotId(5, 1), b"old"))
    store.write_snapshot(Snapshot(SnapshotId(45, 1), b"mid"))
    store.write_snapshot(Snapshot(SnapshotId(55, 1), b"new"))
    start = store.log_start_offset
    assert start > 5
    store.close()
    # Put back a snapshot below the log start and make it the only valid one.
    store_dir = env.path("__cluster_metadata-0")
    for name in env.fs.listdir(store_dir):
        if name.endswith(".checkpoint"):
            env.fs.remove(posixpath.join(store_dir, name))
    data = b"old"
    from crc32c import crc32c

    header = SNAPSHOT_HEADER.pack(b"TLSN", 0, 5, 1, len(data), crc32c(data))
    write_raw(env, snapshot_file_name(SnapshotId(5, 1)), header + data)
    with pytest.raises(RaftStoreError, match="offsets in between are missing"):
        open_store(env, clock)


def test_snapshots_over_the_size_limit_are_refused(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock, max_snapshot_bytes=100)
    with pytest.raises(RaftStoreError, match="more than the limit"):
        store.write_snapshot(Snapshot(SnapshotId(0, 0), b"x" * 101))
    store.write_snapshot(Snapshot(SnapshotId(0, 0), b"x" * 100))
    store.close()
    with pytest.raises(RaftStoreError, match="over the limit"):
        open_store(env, clock, max_snapshot_bytes=50)
    store = open_store(env, clock, max_snapshot_bytes=100)
    assert store.load().snapshot == Snapshot(SnapshotId(0, 0), b"x" * 100)
    store.close()


def test_leftover_temp_files_are_removed(env: StorageEnv, clock: Clock) -> None:
    store = open_store(env, clock)
    store.write_snapshot(Snapshot(SnapshotId(0, 0), b"s"))
    store.close()
    write_raw(env, snapshot_file_name(SnapshotId(9, 1)) + ".tmp", b"partial")
    write_raw(env, QUORUM_STATE_FILE + ".tmp", b"{")
    store = open_store(env, clock)
    assert [name for name in env.fs.listdir(store.directory) if name.endswith(".tmp")] == []
    assert store.load().snapshot == Snapshot(SnapshotId(0, 0), b"s")
    store.close()


def test_an_io_failure_takes_the_store_offline_until_reopened(
    env: StorageEnv, clock: Clock
) -> None:
    store = open_store(env, clock)
    store.append(entries(0, [1, 1]))
    env.faults.arm(FaultPoint.FSYNC, path_contains=".log")
    with pytest.raises(RaftStoreError, match="injected fsync"):
        store.flush()
    with pytest.raises(RaftStoreError, match="unusable until reopened"):
        store.append(entries(2, [1]))
    store.close()
    store = open_store(env, clock)
    store.write_quorum_state(QuorumState(epoch=1))
    store.close()


# ------------------------------------------------------------------------------------------
# Crashes (MemoryFileSystem)


def memory_store(seed: int, **kwargs: object) -> tuple[MemoryFileSystem, Clock, RaftStore]:
    fs = MemoryFileSystem(seed=seed)
    fs.mkdir("/data")
    fs.fsync_dir("/")
    clock = Clock()
    return fs, clock, open_store(fs, clock, **kwargs)


@pytest.mark.parametrize("seed", range(30))
def test_a_crash_loses_only_unflushed_entries_and_never_the_quorum_state(seed: int) -> None:
    fs, clock, store = memory_store(seed)
    flushed = entries(0, [1] * 7 + [2] * 8, tag="flushed-")
    store.append(flushed)
    store.flush()
    store.write_quorum_state(QuorumState(epoch=2, voted_for=4))
    unflushed = entries(15, [2] * 4 + [3] * 6, tag="unflushed-")
    store.append(unflushed[:4])
    store.append(unflushed[4:])
    fs.crash()
    store = open_store(fs, clock)
    state = store.load()
    assert state.quorum == QuorumState(epoch=2, voted_for=4)
    assert state.entries[:15] == flushed
    # Whatever survived is a prefix of what was appended, cut at a batch boundary.
    assert state.entries == (flushed + unflushed)[: len(state.entries)]
    assert len(state.entries) in (15, 19, 25)
    store.append(entries(len(state.entries), [5]))
    store.flush()
    store.close()


@pytest.mark.parametrize(
    ("point", "path_contains", "written_bytes"),
    [
        (FaultPoint.WRITE, ".checkpoint.tmp", 7),
        (FaultPoint.WRITE, ".checkpoint.tmp", 40),
        (FaultPoint.FSYNC, ".checkpoint.tmp", 0),
        (FaultPoint.RENAME, ".checkpoint", 0),
        (FaultPoint.FSYNC_DIR, "__cluster_metadata-0", 0),
    ],
)
def test_a_crash_mid_snapshot_write_leaves_the_previous_snapshot_loadable(
    point: FaultPoint, path_contains: str, written_bytes: int
) -> None:
    for seed in range(10):
        faults, fs, clock, store = faulty_store(seed)
        written = entries(0, [1] * 20)
        store.append(written)
        store.flush()
        store.write_snapshot(Snapshot(SnapshotId(5, 1), b"previous"))
        faults.arm(point, path_contains=path_contains, written_bytes=written_bytes)
        with pytest.raises(RaftStoreError):
            store.write_snapshot(Snapshot(SnapshotId(12, 1), b"next" * 50))
        fs.crash()
        store = open_store(fs, clock)
        state = store.load()
        assert state.snapshot is not None
        if point is FaultPoint.FSYNC_DIR:
            # Renamed but not made durable: either file may survive.
            assert state.snapshot in (
                Snapshot(SnapshotId(5, 1), b"previous"),
                Snapshot(SnapshotId(12, 1), b"next" * 50),
            )
        else:
            assert state.snapshot == Snapshot(SnapshotId(5, 1), b"previous"), seed
        assert state.entries == written[state.snapshot.snapshot_id.end_offset :]
        store.close()


@pytest.mark.parametrize("seed", range(10))
def test_an_install_interrupted_before_the_log_restart_finishes_at_open(seed: int) -> None:
    faults = FaultPoints()
    fs = MemoryFileSystem(seed=seed, faults=faults)
    fs.mkdir("/data")
    fs.fsync_dir("/")
    clock = Clock()
    store = open_store(fs, clock)
    store.append(entries(0, [1] * 5))
    store.flush()
    # The snapshot is durable; removing the old segments fails.
    faults.arm(FaultPoint.REMOVE, path_contains=".log")
    with pytest.raises(RaftStoreError):
        store.write_snapshot(Snapshot(SnapshotId(50, 4), b"leader's"))
    fs.crash()
    store = open_store(fs, clock)
    state = store.load()
    assert state.snapshot == Snapshot(SnapshotId(50, 4), b"leader's")
    assert state.entries == []
    assert (store.log_start_offset, store.log_end_offset) == (50, 50)
    assert store.warnings
    store.close()


# ------------------------------------------------------------------------------------------
# A model: the quorum state, the latest snapshot and the entries after it, under random
# operations and crashes.


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = MemoryFileSystem(seed=0)
        self.fs.mkdir("/data")
        self.fs.fsync_dir("/")
        self.clock = Clock()
        self.keep = 2
        self.store = open_store(self.fs, self.clock, keep_snapshots=self.keep)
        self.quorum = QuorumState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []  # after the snapshot
        self.durable_end = 0  # entries below this offset survive a crash
        self.tag = 0

    @initialize(seed=st.integers(0, 2**32 - 1), keep=st.integers(1, 3))
    def setup(self, seed: int, keep: int) -> None:
        self.store.close()
        self.fs = MemoryFileSystem(seed=seed)
        self.fs.mkdir("/data")
        self.fs.fsync_dir("/")
        self.keep = keep
        self.store = open_store(self.fs, self.clock, keep_snapshots=keep)

    def teardown(self) -> None:
        self.store.close()

    @property
    def start(self) -> int:
        return self.snapshot.snapshot_id.end_offset if self.snapshot else 0

    @property
    def end(self) -> int:
        return self.start + len(self.entries)

    @property
    def last_epoch(self) -> int:
        if self.entries:
            return self.entries[-1].epoch
        return self.snapshot.snapshot_id.epoch if self.snapshot else 0

    @rule(
        epoch_steps=st.lists(st.integers(0, 1), min_size=1, max_size=12),
        controls=st.integers(0, 4),
        value_bytes=st.integers(0, 120),
    )
    def append(self, epoch_steps: list[int], controls: int, value_bytes: int) -> None:
        epoch = self.last_epoch
        new = []
        for index, step in enumerate(epoch_steps):
            epoch += step
            self.tag += 1
            control = LEADER_CHANGE if controls and index % (controls + 1) == controls else None
            value = f"{self.tag}:".encode().ljust(value_bytes, b".")
            new.append(Entry(self.end + index, epoch, value, control))
        self.store.append(new)
        self.entries += new

    @rule()
    def flush(self) -> None:
        self.store.flush()
        self.durable_end = self.end

    @rule(where=st.floats(0, 1))
    def truncate(self, where: float) -> None:
        offset = self.start + int(where * len(self.entries))
        self.store.truncate_to(offset)
        del self.entries[offset - self.start :]
        self.durable_end = min(self.durable_end, offset)

    @rule(epoch=st.integers(0, 5), voted=st.integers(-1, 3), leader=st.integers(-1, 3))
    def write_quorum(self, epoch: int, voted: int, leader: int) -> None:
        state = QuorumState(epoch=epoch, voted_for=voted, leader_id=leader)
        self.store.write_quorum_state(state)
        self.quorum = state

    @precondition(lambda self: self.entries)
    @rule(where=st.floats(0, 1), size=st.integers(0, 300))
    def snapshot_own_log(self, where: float, size: int) -> None:
        offset = self.start + 1 + int(where * (len(self.entries) - 1))
        epoch = self.entries[offset - 1 - self.start].epoch
        self.tag += 1
        snapshot = Snapshot(SnapshotId(offset, epoch), f"{self.tag}".encode().ljust(size, b"s"))
        self.store.write_snapshot(snapshot)
        self.entries = self.entries[offset - self.start :]
        self.snapshot = snapshot

    @rule(beyond=st.integers(1, 20), epoch_step=st.integers(0, 2))
    def install_beyond_the_log_end(self, beyond: int, epoch_step: int) -> None:
        self.install(SnapshotId(self.end + beyond, self.last_epoch + epoch_step))

    @precondition(lambda self: self.entries)
    @rule(where=st.floats(0, 1))
    def install_another_history(self, where: float) -> None:
        """A leader's snapshot at an offset this log holds, with a higher epoch there."""
        offset = self.start + 1 + int(where * (len(self.entries) - 1))
        self.install(SnapshotId(offset, self.entries[offset - 1 - self.start].epoch + 1))

    def install(self, snapshot_id: SnapshotId) -> None:
        self.tag += 1
        snapshot = Snapshot(snapshot_id, f"leader {self.tag}".encode())
        self.store.write_snapshot(snapshot)
        self.snapshot = snapshot
        self.entries = []
        self.durable_end = snapshot_id.end_offset

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = open_store(self.fs, self.clock, keep_snapshots=self.keep)
        self.check_loaded(self.store.load(), crashed=False)

    @rule()
    def crash(self) -> None:
        self.fs.crash()
        self.store = open_store(self.fs, self.clock, keep_snapshots=self.keep)
        self.check_loaded(self.store.load(), crashed=True)

    def check_loaded(self, state: PersistedState, *, crashed: bool) -> None:
        assert state.quorum == self.quorum
        assert state.snapshot == self.snapshot
        if crashed:
            survived = len(state.entries)
            assert max(self.durable_end - self.start, 0) <= survived <= len(self.entries)
            self.entries = self.entries[:survived]
            self.durable_end = self.end
        assert state.entries == self.entries

    @invariant()
    def bounds_agree(self) -> None:
        assert self.store.log_end_offset == self.end
        assert self.store.log_start_offset <= self.start
        assert self.store.latest_snapshot_id == (
            self.snapshot.snapshot_id if self.snapshot else None
        )
        assert len(self.store.snapshot_ids) <= self.keep


StoreModel.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_store_against_a_model = StoreModel.TestCase
