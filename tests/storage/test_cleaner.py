"""Log compaction on both filesystems: the latest record per key survives with its offset,
tombstones go only after their delay, compressed batches are filtered, the active segment
is left alone, and a crash at any step of the swap recovers the old or the new contents."""

from __future__ import annotations

import contextlib
import errno
import gc
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.batches import full_scan_indexes
from tests.storage.conftest import Clock, StorageEnv
from tidelog.client.protocol.compression import Compression
from tidelog.client.protocol.records import (
    BatchHeader,
    ControlRecordType,
    RecordInput,
    decode_batches,
    encode_batch,
    end_transaction_marker_record,
)
from tidelog.storage.checkpoint import TEMP_SUFFIX
from tidelog.storage.cleaner import CompactionResult, compact, dirty_ratio
from tidelog.storage.config import LogConfig
from tidelog.storage.errors import LogOfflineError, StorageError
from tidelog.storage.filesystem import (
    FaultPoint,
    FileHandle,
    FileSystem,
    MemoryFileSystem,
    OsFileSystem,
)
from tidelog.storage.log import PartitionLog
from tidelog.storage.segment import INDEX_SUFFIX
from tidelog.storage.segment_swap import CLEANED_SUFFIX, SWAP_SUFFIX

COMPACT = LogConfig(segment_bytes=100_000, index_interval_bytes=200, cleanup_policy="compact")
DAY_MS = 86_400_000

Entry = tuple[bytes | None, bytes | None]
"""(key, value) of a record to append; a None value is a tombstone."""


@dataclass(frozen=True)
class Seen:
    """A record as a consumer reads it."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def keyed_batch(
    entries: Sequence[Entry],
    *,
    timestamp_ms: int = 1_000,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    base_sequence: int = -1,
) -> bytes:
    records = [
        RecordInput(key=key, value=value, timestamp_ms=timestamp_ms + index)
        for index, (key, value) in enumerate(entries)
    ]
    return encode_batch(
        records,
        compression=compression,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=base_sequence,
    )


def open_log(env: StorageEnv, clock: Clock, config: LogConfig = COMPACT) -> PartitionLog:
    return PartitionLog.open(env.fs, env.path("c-0"), config, clock)


def read_batches(
    log: PartitionLog, start: int | None = None
) -> list[tuple[BatchHeader, list[Seen]]]:
    """Every batch a consumer fetching from `start` reads, moving on to `lastOffset + 1`."""
    found: list[tuple[BatchHeader, list[Seen]]] = []
    offset = log.log_start_offset if start is None else start
    for _ in range(100_000):
        file_range = log.read(offset, 1 << 20)
        if file_range is None:
            return found
        for header, records in decode_batches(file_range.read_bytes()):
            seen = [Seen(r.offset, r.key, r.value, r.timestamp_ms) for r in records]
            found.append((header, seen))
            offset = header.next_offset
    raise AssertionError("read loop did not reach the log end")


def read_records(log: PartitionLog) -> list[Seen]:
    return [record for _, records in read_batches(log) for record in records]


def replay(records: Sequence[Seen]) -> dict[bytes, bytes]:
    """What a consumer that reads `records` in order ends up with: the latest value per key."""
    state: dict[bytes, bytes] = {}
    for record in records:
        assert record.key is not None
        if record.value is None:
            state.pop(record.key, None)
        else:
            state[record.key] = record.value
    return state


def fill(log: PartitionLog, batches: Sequence[Sequence[Entry]], *, roll_every: int = 0) -> None:
    for index, entries in enumerate(batches):
        log.append(keyed_batch(entries, timestamp_ms=1_000 + 10 * index), leader_epoch=0)
        if roll_every and index % roll_every == roll_every - 1:
            log.roll()


def versions(keys: int, rounds: int) -> list[list[Entry]]:
    """`rounds` batches, each writing every one of `keys` keys once."""
    return [
        [(b"key-%d" % key, b"value-%d-%d" % (key, round_)) for key in range(keys)]
        for round_ in range(rounds)
    ]


def active_segment_bytes(log: PartitionLog) -> bytes:
    active = log.segments[-1]
    return active.log.pread(0, active.size_bytes)


def assert_indexes_match_a_scan(log: PartitionLog) -> None:
    for segment in log.segments:
        indexes = (segment.offset_index.entries(), segment.time_index.entries())
        assert indexes == full_scan_indexes(segment)


# ------------------------------------------------------------------------------------------
# Behaviour


def test_latest_value_per_key_survives_with_its_offset(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, versions(keys=5, rounds=12), roll_every=3)
    log.append(keyed_batch([(b"key-0", b"newest")]), leader_epoch=0)
    before = read_records(log)
    end = log.log_end_offset
    active = active_segment_bytes(log)

    result = compact(log, clock.now, DAY_MS)

    after = read_records(log)
    by_offset = {record.offset: record for record in before}
    assert all(by_offset[record.offset] == record for record in after)
    assert replay(after) == replay(before)
    assert [r.offset for r in after] == sorted({r.offset for r in after})
    # Below the active segment, one record per key: the latest one there.
    cleaned = [r for r in after if r.offset < log.segment_base_offsets[-1]]
    assert [r.key for r in cleaned] == [b"key-%d" % key for key in range(5)]
    assert all(r.value == b"value-%d-11" % int(r.key[4:]) for r in cleaned if r.key)
    assert result.committed
    assert result.records_before == 60
    assert result.records_removed == 55
    assert result.bytes_after < result.bytes_before
    assert (result.segments_before, result.segments_after) == (4, 1)
    assert log.log_end_offset == end
    assert active_segment_bytes(log) == active
    assert_indexes_match_a_scan(log)

    log.close()
    reopened = PartitionLog.open(env.fs, env.path("c-0"), COMPACT, clock, recovery_point=0)
    assert read_records(reopened) == after
    assert reopened.log_end_offset == end
    assert reopened.append(keyed_batch([(b"k", b"v")]), leader_epoch=0).first_offset == end


def test_fetching_a_removed_offset_returns_the_next_batch(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    # Offsets 0-5: a, b, a, b, c, a. Only b@3, c@4, a@5 stay.
    fill(log, [[(b"a", b"1"), (b"b", b"1")], [(b"a", b"2"), (b"b", b"2")]])
    fill(log, [[(b"c", b"1"), (b"a", b"3")]])
    log.roll()
    log.append(keyed_batch([(b"d", b"1")]), leader_epoch=0)
    compact(log, clock.now, DAY_MS)

    assert [(r.offset, r.key) for r in read_records(log)] == [
        (3, b"b"),
        (4, b"c"),
        (5, b"a"),
        (6, b"d"),
    ]
    for removed in (0, 1, 2):
        header, records = read_batches(log, removed)[0]
        assert header.base_offset >= 2 and records[0].offset == 3
    file_range = log.read(0, 1 << 20, max_offset=5)
    assert file_range is not None
    assert [r.offset for _, rs in decode_batches(file_range.read_bytes()) for r in rs] == [3]
    assert log.read(0, 1 << 20, max_offset=3) is None


def test_a_rewritten_segment_ends_where_the_next_begins(env: StorageEnv, clock: Clock) -> None:
    # Two segments too large to merge; everything in the first is superseded by the second.
    config = LogConfig(segment_bytes=1_000, cleanup_policy="compact")
    log = open_log(env, clock, config)
    value = b"x" * 200
    fill(log, [[(b"a", value), (b"b", value)], [(b"a", value)]])
    log.roll()
    fill(log, [[(b"a", value), (b"b", value)]])
    log.roll()
    log.append(keyed_batch([(b"c", b"1")]), leader_epoch=0)
    compact(log, clock.now, DAY_MS)
    # The first segment's last batch stays, empty and uncompressed, so the segment still
    # ends at offset 3 and a consumer moves on to 3.
    batches = read_batches(log)
    assert [(h.base_offset, h.last_offset, len(rs)) for h, rs in batches] == [
        (2, 2, 0),
        (3, 4, 2),
        (5, 5, 1),
    ]
    assert batches[0][0].compression is Compression.NONE
    assert log.segments[0].next_offset == log.segment_base_offsets[1] == 3
    log.close()
    # A full recovery checks that each segment ends where the next one starts.
    reopened = PartitionLog.open(env.fs, env.path("c-0"), config, clock, recovery_point=0)
    assert [(h.base_offset, len(rs)) for h, rs in read_batches(reopened)] == [
        (2, 0),
        (3, 2),
        (5, 1),
    ]


def test_tombstones_are_dropped_only_after_the_delay(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    log.append(keyed_batch([(b"gone", b"v"), (b"kept", b"v")], timestamp_ms=5_000), leader_epoch=0)
    log.append(keyed_batch([(b"gone", None)], timestamp_ms=6_000), leader_epoch=0)
    log.roll()
    delay_ms = 10_000

    # First pass: the value goes; the tombstone was dirty, so it stays whatever its age.
    first = compact(log, 10**9, delay_ms)
    assert [(r.key, r.value) for r in read_records(log)] == [(b"kept", b"v"), (b"gone", None)]
    assert first.next_tombstone_due_ms == 6_000 + delay_ms + 1
    # Later passes: kept until its batch's max timestamp is more than the delay old.
    compact(log, 6_000 + delay_ms, delay_ms)
    assert [r.key for r in read_records(log)] == [b"kept", b"gone"]
    result = compact(log, 6_000 + delay_ms + 1, delay_ms)
    assert [r.key for r in read_records(log)] == [b"kept"]
    assert (result.records_removed, result.tombstones_removed) == (1, 1)
    assert result.next_tombstone_due_ms is None
    assert log.log_end_offset == 3


def test_reopening_forgets_what_was_cleaned_so_tombstones_wait_a_pass(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock)
    log.append(keyed_batch([(b"x", b"v")]), leader_epoch=0)
    log.append(keyed_batch([(b"x", None)]), leader_epoch=0)
    log.roll()
    compact(log, 10**9, 0)
    assert log.first_dirty_offset == 2
    log.close()
    log = open_log(env, clock)
    assert log.first_dirty_offset == 0
    compact(log, 10**9, 0)
    assert [(r.key, r.value) for r in read_records(log)] == [(b"x", None)]
    compact(log, 10**9, 0)
    assert read_records(log) == []


@pytest.mark.parametrize("codec", list(Compression))
def test_compressed_batches_are_filtered_and_recompressed(
    env: StorageEnv, clock: Clock, codec: Compression
) -> None:
    log = open_log(env, clock)
    entries: list[Entry] = [(b"k%d" % (i % 4), b"payload-%d-" % i + b"x" * 200) for i in range(10)]
    batch = keyed_batch(entries, compression=codec, producer_id=77, base_sequence=5)
    log.append(batch, leader_epoch=3)
    log.append(keyed_batch([(b"k0", b"new")]), leader_epoch=3)
    log.roll()
    compact(log, clock.now, DAY_MS)

    (header, records), (_, last) = read_batches(log)
    assert header.compression is codec
    assert (header.base_offset, header.last_offset, header.records_count) == (0, 9, 3)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (77, 0, 5)
    assert header.partition_leader_epoch == 3
    assert header.max_timestamp == 1_000 + 9
    # Latest per key: k0@10 (the next batch), k1@9, k2@6, k3@7.
    assert [(r.offset, r.key) for r in records] == [(6, b"k2"), (7, b"k3"), (9, b"k1")]
    assert [r.value for r in records] == [entries[r.offset][1] for r in records]
    assert [(r.offset, r.value) for r in last] == [(10, b"new")]


def test_active_segment_and_data_above_max_offset_are_left_alone(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock)
    fill(log, versions(keys=2, rounds=6), roll_every=2)
    fill(log, versions(keys=2, rounds=2))
    bases = log.segment_base_offsets
    assert bases == [0, 4, 8, 12]
    untouched = [s.log.pread(0, s.size_bytes) for s in log.segments[1:]]

    result = compact(log, clock.now, DAY_MS, max_offset=5)  # only [0, 4) ends below 5

    assert result.segments_before == 1
    assert [s.log.pread(0, s.size_bytes) for s in log.segments[1:]] == untouched
    assert [(r.offset, r.key) for r in read_records(log)][:2] == [(2, b"key-0"), (3, b"key-1")]


def test_file_ranges_read_before_compaction_keep_their_bytes(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, versions(keys=3, rounds=8), roll_every=2)
    log.append(keyed_batch([(b"z", b"1")]), leader_epoch=0)
    ranges = [log.read(offset, 1 << 20) for offset in (0, 6, 12)]
    contents = [r.read_bytes() for r in ranges if r is not None]
    compact(log, clock.now, DAY_MS)
    assert [r.read_bytes() for r in ranges if r is not None] == contents
    assert read_records(log)[0].offset >= 18


def test_keyless_records_go_and_control_batches_stay(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    log.append(keyed_batch([(None, b"no key"), (b"k", b"v")]), leader_epoch=0)
    marker = encode_batch(
        [end_transaction_marker_record(ControlRecordType.COMMIT, 4, 2_000)],
        producer_id=9,
        producer_epoch=1,
        is_control=True,
        is_transactional=True,
    )
    log.append(marker, leader_epoch=0)
    log.roll()
    compact(log, clock.now, DAY_MS)
    batches = read_batches(log)
    assert [(h.base_offset, h.is_control, [r.key for r in rs]) for h, rs in batches] == [
        (0, False, [b"k"]),
        (2, True, [b"\x00\x00\x00\x01"]),
    ]


def test_merges_small_segments_up_to_segment_bytes(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(segment_bytes=1_000, index_interval_bytes=100, cleanup_policy="compact")
    log = open_log(env, clock, config)
    for index in range(12):
        log.append(keyed_batch([(b"k%d" % index, b"x" * 150)]), leader_epoch=0)
        log.roll()
    sizes = [s.size_bytes for s in log.segments[:-1]]
    assert all(size > 200 for size in sizes)
    result = compact(log, clock.now, DAY_MS)
    assert result.records_removed == 0
    assert result.segments_before == 12
    # Runs of original segments whose sizes add up to at most 1000 bytes.
    assert len(log.segments) - 1 == result.segments_after == -(-12 // (1_000 // sizes[0]))
    assert all(s.size_bytes <= 1_000 for s in log.segments)
    assert [r.key for r in read_records(log)] == [b"k%d" % i for i in range(12)]
    assert_indexes_match_a_scan(log)


def test_retention_by_time_and_size_is_off_without_delete(env: StorageEnv, clock: Clock) -> None:
    for policy, segments_left in (("compact", 4), ("compact,delete", 1)):
        config = LogConfig(
            segment_bytes=100_000, retention_ms=1, retention_bytes=1, cleanup_policy=policy
        )
        log = PartitionLog.open(env.fs, env.path(f"r-{len(policy)}"), config, clock)
        fill(log, versions(keys=1, rounds=3), roll_every=1)
        log.append(keyed_batch([(b"k", b"v")]), leader_epoch=0)
        log.enforce_retention(clock.now + DAY_MS)
        assert len(log.segments) == segments_left


def test_compaction_needs_the_compact_policy(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock, LogConfig())
    with pytest.raises(ValueError, match=r"cleanup\.policy"):
        compact(log, clock.now, DAY_MS)


def test_dirty_ratio_tracks_what_was_cleaned(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    assert dirty_ratio(log) == 0.0
    fill(log, versions(keys=3, rounds=4), roll_every=2)
    assert dirty_ratio(log) == 1.0
    compact(log, clock.now, DAY_MS)
    assert dirty_ratio(log) == 0.0
    fill(log, versions(keys=3, rounds=2), roll_every=2)
    assert 0.0 < dirty_ratio(log) < 1.0


def test_a_small_key_map_cleans_in_several_passes(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(segment_bytes=800, index_interval_bytes=100, cleanup_policy="compact")
    log = open_log(env, clock, config)
    fill(log, versions(keys=4, rounds=10), roll_every=1)
    expected = replay(read_records(log))
    for _ in range(20):
        result = compact(log, clock.now, DAY_MS, max_map_bytes=1)
        if result.first_dirty_offset >= log.segment_base_offsets[-1]:
            break
    else:
        raise AssertionError("passes did not reach the active segment")
    records = read_records(log)
    assert replay(records) == expected
    cleaned = [r.key for r in records if r.offset < log.segment_base_offsets[-1]]
    assert len(cleaned) == len(set(cleaned))


def test_a_follower_copies_a_compacted_log(env: StorageEnv, clock: Clock) -> None:
    leader = open_log(env, clock)
    fill(leader, versions(keys=3, rounds=6), roll_every=2)
    leader.append(keyed_batch([(b"key-1", b"last")]), leader_epoch=0)
    compact(leader, clock.now, DAY_MS)
    follower = PartitionLog.open(env.fs, env.path("f-0"), COMPACT, clock)
    offset = 0
    for _ in range(100):
        file_range = leader.read(offset, 300)
        if file_range is None:
            break
        follower.append_as_follower(file_range.read_bytes())
        offset = follower.log_end_offset
    assert read_records(follower) == read_records(leader)
    assert follower.log_end_offset == leader.log_end_offset
    follower.close()
    reopened = PartitionLog.open(env.fs, env.path("f-0"), COMPACT, clock, recovery_point=0)
    assert read_records(reopened) == read_records(leader)


def test_truncating_into_a_gap_ends_the_log_at_the_last_kept_batch(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock, LogConfig(segment_bytes=100_000, cleanup_policy="compact"))
    fill(log, [[(b"a", b"1")], [(b"b", b"1")], [(b"a", b"2")], [(b"c", b"1")], [(b"a", b"3")]])
    log.roll()
    log.append(keyed_batch([(b"d", b"1")]), leader_epoch=0)
    compact(log, clock.now, DAY_MS)
    assert [r.offset for r in read_records(log)] == [1, 3, 4, 5]
    log.truncate_to(3)  # 2 is a gap: the log must not claim offsets it lost
    assert log.log_end_offset == 2
    assert log.first_dirty_offset == 2
    assert log.append(keyed_batch([(b"e", b"1")]), leader_epoch=0).first_offset == 2


# ------------------------------------------------------------------------------------------
# The log changing under a pass


class DelegatingFileSystem:
    """A FileSystem that passes every call to `inner`; tests override what they watch."""

    def __init__(self, inner: FileSystem) -> None:
        self.inner = inner

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        return self.inner.open(path, create=create)

    def read_file(self, path: str) -> bytes:
        return self.inner.read_file(path)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def mkdir(self, path: str) -> None:
        self.inner.mkdir(path)

    def rmdir(self, path: str) -> None:
        self.inner.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        self.inner.fsync_dir(path)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def is_dir(self, path: str) -> bool:
        return self.inner.is_dir(path)

    def file_size(self, path: str) -> int:
        return self.inner.file_size(path)


class HookedFileSystem(DelegatingFileSystem):
    """Calls `hook` once, when a file whose name contains `marker` is first created."""

    def __init__(self, inner: FileSystem, marker: str) -> None:
        super().__init__(inner)
        self.marker = marker
        self.hook: Callable[[], None] | None = None

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        hook = self.hook
        if create and self.marker in path and hook is not None:
            self.hook = None
            hook()
        return self.inner.open(path, create=create)


def test_a_truncation_during_the_pass_discards_it(env: StorageEnv, clock: Clock) -> None:
    fs = HookedFileSystem(env.fs, CLEANED_SUFFIX)
    log = PartitionLog.open(fs, env.path("c-0"), COMPACT, clock)
    fill(log, versions(keys=2, rounds=6), roll_every=2)
    log.append(keyed_batch([(b"z", b"1")]), leader_epoch=0)
    fs.hook = lambda: log.truncate_to(5)
    result = compact(log, clock.now, DAY_MS)
    assert not result.committed
    assert log.log_end_offset == 4
    assert [r.offset for r in read_records(log)] == [0, 1, 2, 3]
    assert not [n for n in env.fs.listdir(env.path("c-0")) if n.endswith(CLEANED_SUFFIX)]
    assert compact(log, clock.now, DAY_MS).committed


def test_appends_and_reads_go_on_while_a_pass_runs_in_a_thread(
    env: StorageEnv, clock: Clock
) -> None:
    fs = HookedFileSystem(env.fs, CLEANED_SUFFIX)
    log = PartitionLog.open(fs, env.path("c-0"), COMPACT, clock)
    fill(log, versions(keys=3, rounds=6), roll_every=2)
    log.append(keyed_batch([(b"key-0", b"active")]), leader_epoch=0)
    pass_writing, resume = threading.Event(), threading.Event()

    def pause_the_pass() -> None:
        pass_writing.set()
        assert resume.wait(timeout=30)

    fs.hook = pause_the_pass
    results: list[CompactionResult] = []
    worker = threading.Thread(target=lambda: results.append(compact(log, clock.now, DAY_MS)))
    worker.start()
    try:
        assert pass_writing.wait(timeout=30)
        fill(log, versions(keys=4, rounds=5), roll_every=2)  # appends and rolls, mid-pass
        during = read_records(log)
    finally:
        resume.set()
        worker.join(timeout=30)
    assert results and results[0].committed
    after = read_records(log)
    assert replay(after) == replay(during)
    assert after[-20:] == during[-20:]  # everything appended during the pass
    assert log.log_end_offset == 18 + 1 + 20
    assert_indexes_match_a_scan(log)


def test_batches_larger_than_a_read_chunk(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(
        segment_bytes=50_000_000, max_message_bytes=5_000_000, cleanup_policy="compact"
    )
    log = open_log(env, clock, config)
    big = bytes(random.Random(1).randbytes(700_000))
    fill(log, [[(b"s", b"1")], [(b"a", big), (b"b", big)], [(b"s", b"2")], [(b"b", big[:10])]])
    fill(log, [[(b"c", big)], [(b"d", big)]])
    log.roll()
    log.append(keyed_batch([(b"z", b"1")]), leader_epoch=0)
    before = read_records(log)
    compact(log, clock.now, DAY_MS)
    expected = [r for r in before if r.offset not in (0, 2)]
    assert read_records(log) == expected
    log.close()
    assert read_records(open_log(env, clock, config)) == expected


def test_an_interrupted_swap_is_completed_when_the_log_opens(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(
        segment_bytes=50_000_000, max_message_bytes=5_000_000, cleanup_policy="compact"
    )
    log = open_log(env, clock, config)
    big = bytes(random.Random(2).randbytes(400_000))
    fill(log, [[(b"a", big)], [(b"b", big)], [(b"a", big[:5])], [(b"c", big)]], roll_every=2)
    fill(log, [[(b"d", big)], [(b"b", None)]])
    log.roll()
    log.append(keyed_batch([(b"z", b"1")]), leader_epoch=0)
    before = read_records(log)
    # The swap is committed, then the next rename fails: the log goes offline.
    env.faults.arm(FaultPoint.RENAME, path_contains=INDEX_SUFFIX + CLEANED_SUFFIX)
    with pytest.raises(LogOfflineError):
        compact(log, clock.now, DAY_MS)
    assert any(name.endswith(SWAP_SUFFIX) for name in env.fs.listdir(env.path("c-0")))
    reopened = open_log(env, clock, config)
    assert [(r.offset, r.key) for r in read_records(reopened)] == [
        (2, b"a"),
        (3, b"c"),
        (4, b"d"),
        (5, b"b"),
        (6, b"z"),
    ]
    assert all(r in before for r in read_records(reopened))
    assert reopened.segment_base_offsets == [0, 6]
    assert not any(n.endswith(SWAP_SUFFIX) for n in env.fs.listdir(env.path("c-0")))
    assert_indexes_match_a_scan(reopened)


# ------------------------------------------------------------------------------------------
# Crashes at every step of a pass


class StepFaultFileSystem(DelegatingFileSystem):
    """Once armed, the `fail_at`-th change to the filesystem (create, write, truncate,
    fsync, rename, remove, directory fsync) fails with EIO instead."""

    def __init__(self, inner: FileSystem) -> None:
        super().__init__(inner)
        self.fail_at: int | None = None
        self.steps = 0
        self.failed = False

    def step(self, what: str) -> None:
        if self.fail_at is None:
            return
        self.steps += 1
        if self.steps == self.fail_at:
            self.failed = True
            raise OSError(errno.EIO, f"injected fault at step {self.steps}", what)

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        if create and not self.inner.exists(path):
            self.step(f"create {path}")
        return StepFaultHandle(self, self.inner.open(path, create=create))

    def rename(self, src: str, dst: str) -> None:
        self.step(f"rename {src} {dst}")
        self.inner.rename(src, dst)

    def remove(self, path: str) -> None:
        self.step(f"remove {path}")
        self.inner.remove(path)

    def fsync_dir(self, path: str) -> None:
        self.step(f"fsync_dir {path}")
        self.inner.fsync_dir(path)


class StepFaultHandle:
    def __init__(self, fs: StepFaultFileSystem, inner: FileHandle) -> None:
        self._fs = fs
        self._inner = inner

    @property
    def path(self) -> str:
        return self._inner.path

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._fs.step(f"append {self.path}")
        self._inner.append(data)

    def pread(self, position: int, size: int) -> bytes:
        return self._inner.pread(position, size)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._fs.step(f"truncate {self.path}")
        self._inner.truncate(size)

    def fsync(self) -> None:
        self._fs.step(f"fsync {self.path}")
        self._inner.fsync()

    def fileno(self) -> int | None:
        return self._inner.fileno()

    def close(self) -> None:
        self._inner.close()


CRASH_CONFIG = LogConfig(segment_bytes=1_400, index_interval_bytes=150, cleanup_policy="compact")


def build_crash_log(fs: FileSystem, path: str, clock: Clock) -> PartitionLog:
    """Several segments, so that the pass rewrites more than one run; everything fsynced."""
    log = PartitionLog.open(fs, path, CRASH_CONFIG, clock)
    rng = random.Random(7)

    def append(count: int, value_bytes: int) -> None:
        for index in range(count):
            entries: list[Entry] = [
                (b"k%d" % rng.randrange(5), None if rng.random() < 0.2 else b"v" * value_bytes)
                for _ in range(rng.randint(1, 3))
            ]
            codec = Compression.GZIP if index % 3 == 0 else Compression.NONE
            log.append(keyed_batch(entries, timestamp_ms=index, compression=codec), leader_epoch=0)
            if index % 3 == 2:
                log.roll()

    append(12, 10)
    log.append(keyed_batch([(b"k0", b"active")]), leader_epoch=0)
    compact(log, 10**9, 1)  # a first pass, so that the second one drops tombstones too
    append(12, 150)
    log.append(keyed_batch([(b"k3", b"active")]), leader_epoch=0)
    log.flush()
    return log


def allowed_outcomes(before: list[Seen], after: list[Seen], bases: list[int]) -> list[list[Seen]]:
    """The rewritten runs (new segments) are installed oldest first: any prefix of them."""
    outcomes = []
    for installed in range(len(bases)):
        edge = bases[installed]
        outcomes.append(
            [r for r in after if r.offset < edge] + [r for r in before if r.offset >= edge]
        )
    return outcomes


def reference_pass() -> tuple[list[Seen], list[Seen], list[int]]:
    fs = MemoryFileSystem()
    fs.mkdir("/data")
    log = build_crash_log(fs, "/data/c-0", Clock())
    before = read_records(log)
    result = compact(log, 10**9, 1)
    assert result.committed and result.segments_before > result.segments_after > 1
    return before, read_records(log), log.segment_base_offsets


def check_recovered(
    fs: FileSystem,
    path: str,
    clock: Clock,
    outcomes: list[list[Seen]],
    end: int,
    recovery_point: int,
    context: str,
) -> None:
    log = PartitionLog.open(fs, path, CRASH_CONFIG, clock, recovery_point=recovery_point)
    records = read_records(log)
    assert records in outcomes, context
    assert log.log_end_offset == end, context
    assert_indexes_match_a_scan(log)
    leftovers = [
        name
        for name in fs.listdir(path)
        if name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX, TEMP_SUFFIX))
    ]
    assert leftovers == [], context
    assert log.append(keyed_batch([(b"n", b"1")]), leader_epoch=0).first_offset == end, context
    log.close()


def test_a_crash_at_any_step_recovers_the_old_or_the_new_contents() -> None:
    before, after, bases = reference_pass()
    outcomes = allowed_outcomes(before, after, bases)
    end = before[-1].offset + 1
    clock = Clock()
    for fail_at in range(1, 500):
        for seed in range(3):
            memory = MemoryFileSystem(seed=fail_at * 10 + seed)
            memory.mkdir("/data")
            memory.fsync_dir("/")
            fs = StepFaultFileSystem(memory)
            log = build_crash_log(fs, "/data/c-0", clock)
            fs.fail_at = fail_at
            with contextlib.suppress(OSError, StorageError):
                compact(log, 10**9, 1)
            if not fs.failed:
                assert read_records(log) == after
                return
            memory.crash()
            context = f"crash at step {fail_at}, seed {seed}"
            # The recovery itself may crash too; then the next open recovers again.
            rerun = StepFaultFileSystem(memory)
            rerun.fail_at = random.Random(fail_at).randint(1, 12)
            try:
                PartitionLog.open(rerun, "/data/c-0", CRASH_CONFIG, clock, recovery_point=end)
            except OSError:
                memory.crash()
            recovery_point = end if seed % 2 else 0
            check_recovered(memory, "/data/c-0", clock, outcomes, end, recovery_point, context)
    raise AssertionError("the pass never completed")


def test_a_process_death_at_any_step_recovers_the_old_or_the_new_contents() -> None:
    before, after, bases = reference_pass()
    outcomes = allowed_outcomes(before, after, bases)
    end = before[-1].offset + 1
    clock = Clock()
    root = tempfile.mkdtemp(prefix="tidelog-cleaner-")
    try:
        for fail_at in range(1, 500):
            path = f"{root}/c-{fail_at}"
            fs = StepFaultFileSystem(OsFileSystem())
            log = build_crash_log(fs, path, clock)
            fs.fail_at = fail_at
            with contextlib.suppress(OSError, StorageError):
                compact(log, 10**9, 1)
            if not fs.failed:
                assert read_records(log) == after
                return
            swapping = any(name.endswith(SWAP_SUFFIX) for name in OsFileSystem().listdir(path))
            if not swapping:
                # No swap under way: unless the failure took it offline, the running log
                # serves the old records or, after runs that did go in, a prefix of the new.
                with contextlib.suppress(LogOfflineError):
                    assert read_records(log) in outcomes
            del log
            gc.collect()
            check_recovered(OsFileSystem(), path, clock, outcomes, end, end, f"death at {fail_at}")
        raise AssertionError("the pass never completed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# Property: the log against a dict of the latest value per key

KEYS = [b"a", b"b", b"c", b"d", b"e"]
operation = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=4),
        st.sampled_from([Compression.NONE, Compression.GZIP, Compression.ZSTD]),
    ),
    st.tuples(st.just("roll")),
    st.tuples(st.just("compact"), st.integers(0, 3_000)),
    st.tuples(st.just("reopen")),
)


def run_model(fs: FileSystem, root: str, operations: list[tuple[object, ...]]) -> None:
    config = LogConfig(segment_bytes=700, index_interval_bytes=120, cleanup_policy="compact")
    clock = Clock(now=0)
    delay_ms = 500
    path = f"{root}/m-0"
    log = PartitionLog.open(fs, path, config, clock)
    appended: dict[int, Seen] = {}
    latest: dict[bytes, int] = {}
    horizon_ms = -(10**18)  # the newest `now - delay` a pass ran with
    for op in operations:
        if op[0] == "append":
            entries, codec = op[1], op[2]
            assert isinstance(entries, list) and isinstance(codec, Compression)
            clock.now += 100
            batch = [(key, None if tombstone else b"%d" % clock.now) for key, tombstone in entries]
            info = log.append(
                keyed_batch(batch, timestamp_ms=clock.now, compression=codec), leader_epoch=0
            )
            for index, (key, value) in enumerate(batch):
                offset = info.first_offset + index
                appended[offset] = Seen(offset, key, value, clock.now + index)
                latest[key] = offset
        elif op[0] == "roll":
            log.roll()
        elif op[0] == "compact":
            assert isinstance(op[1], int)
            clock.now += op[1]
            horizon_ms = max(horizon_ms, clock.now - delay_ms)
            result = compact(log, clock.now, delay_ms)
            assert result.committed
            cleaned = [r.key for r in read_records(log) if r.offset < result.first_dirty_offset]
            assert len(cleaned) == len(set(cleaned)), "a key twice in the cleaned part"
        else:
            log.close()
            log = PartitionLog.open(fs, path, config, clock)
        records = read_records(log)
        assert all(appended[r.offset] == r for r in records)
        assert [r.offset for r in records] == sorted({r.offset for r in records})
        latest_values = {key: appended[offset].value for key, offset in latest.items()}
        assert replay(records) == {k: v for k, v in latest_values.items() if v is not None}
        visible = {r.offset for r in records}
        for offset in latest.values():
            if offset not in visible:
                # Only a tombstone past its delay may vanish while it is the latest record.
                # (Its batch's max timestamp, recomputed from the records kept, is at least
                # the tombstone's own.)
                assert appended[offset].value is None
                assert appended[offset].timestamp_ms < horizon_ms
        assert log.log_end_offset == len(appended)
    assert_indexes_match_a_scan(log)
    log.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=1, max_size=40))
def test_compaction_keeps_the_latest_value_per_key_in_memory(
    operations: list[tuple[object, ...]],
) -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/data")
    run_model(fs, "/data", operations)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=1, max_size=30))
def test_compaction_keeps_the_latest_value_per_key_on_disk(
    operations: list[tuple[object, ...]],
) -> None:
    root = tempfile.mkdtemp(prefix="tidelog-cleaner-model-")
    try:
        run_model(OsFileSystem(), root, operations)
    finally:
        shutil.rmtree(root, ignore_errors=True)
