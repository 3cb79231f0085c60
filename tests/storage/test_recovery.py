"""Recovery on both filesystems: damaged logs are cut at the first invalid byte, damaged
indexes and checkpoints are rebuilt, and only data past the recovery point is scanned."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from tests.storage.batches import full_scan_indexes, make_batch, payload, read_everything
from tests.storage.conftest import Clock, StorageEnv
from tidelog.client.protocol.records import assign_offsets
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import FileHandle, FileSystem
from tidelog.storage.log import LEADER_EPOCH_CHECKPOINT, PartitionLog
from tidelog.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX

CONFIG = LogConfig(segment_bytes=2_000, index_interval_bytes=300)


def build(env: StorageEnv, clock: Clock, batches: int = 40) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(env.fs, env.path("t-0"), CONFIG, clock)
    written = []
    for tag in range(batches):
        batch = make_batch(3, value_bytes=40, timestamp_ms=5_000 + tag, tag=tag)
        log.append(batch, leader_epoch=1 + tag // 10)
        written.append(batch)
    return log, written


def reopen(env: StorageEnv, clock: Clock, recovery_point: int = 0) -> PartitionLog:
    return PartitionLog.open(env.fs, env.path("t-0"), CONFIG, clock, recovery_point=recovery_point)


def segment_path(env: StorageEnv, base_offset: int, suffix: str) -> str:
    return env.path("t-0", f"{base_offset:020d}{suffix}")


def assert_indexes_match_a_scan(log: PartitionLog) -> None:
    for segment in log.segments:
        indexes = (segment.offset_index.entries(), segment.time_index.entries())
        assert indexes == full_scan_indexes(segment)


def damage_last_segment(env: StorageEnv, log: PartitionLog, how: str) -> int:
    """Damage the tail of the last segment; returns how many batches stay valid."""
    last_base = log.segment_base_offsets[-1]
    last = log.segments[-1]
    sizes = [h.total_bytes for _, h in last.batches_from(0)]
    log.close()
    handle = env.fs.open(segment_path(env, last_base, LOG_SUFFIX))
    if how == "junk":
        handle.append(b"\x00" * 5 + b"\xff" * 40)
        return len(sizes)
    if how == "torn":
        handle.truncate(handle.size() - sizes[-1] // 2)
        return len(sizes) - 1
    if how == "short header":
        handle.truncate(handle.size() - sizes[-1] + 30)
        return len(sizes) - 1
    if how == "bad crc":
        position = sum(sizes[:-2]) + 70
        data = bytearray(handle.pread(0, handle.size()))
        data[position] ^= 0x40
        handle.truncate(0)
        handle.append(bytes(data))
        return len(sizes) - 2
    if how == "offsets backwards":
        stale = bytearray(make_batch(1))
        assign_offsets(stale, 0, last_base)
        handle.append(bytes(stale))
        return len(sizes)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["junk", "torn", "short header", "bad crc", "offsets backwards"])
def test_invalid_tail_is_cut_at_the_first_invalid_byte(
    env: StorageEnv, clock: Clock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    log, written = build(env, clock)
    earlier_batches = len(written) - len(list(log.segments[-1].batches_from(0)))
    kept_in_last = damage_last_segment(env, log, how)
    expected = written[: earlier_batches + kept_in_last]
    with caplog.at_level(logging.WARNING, logger="storage"):
        recovered = reopen(env, clock)
    assert "truncating" in caplog.text
    assert [payload(d) for _, d in read_everything(recovered)] == [payload(b) for b in expected]
    assert recovered.log_end_offset == 3 * len(expected)
    assert_indexes_match_a_scan(recovered)
    assert recovered.append(make_batch(), leader_epoch=9).first_offset == 3 * len(expected)


def test_segments_after_a_cut_segment_are_deleted(env: StorageEnv, clock: Clock) -> None:
    log, _written = build(env, clock)
    bases = log.segment_base_offsets
    second = log.segments[1]
    cut_position = next(iter(second.batches_from(0)))[1].total_bytes + 10
    log.close()
    env.fs.open(segment_path(env, bases[1], LOG_SUFFIX)).truncate(cut_position)
    recovered = reopen(env, clock)
    assert recovered.segment_base_offsets == bases[:2]
    assert recovered.log_end_offset == bases[1] + 3
    assert not env.fs.exists(segment_path(env, bases[2], LOG_SUFFIX))


def test_a_segment_that_does_not_continue_the_log_is_deleted(env: StorageEnv, clock: Clock) -> None:
    log, _ = build(env, clock)
    bases = log.segment_base_offsets
    log.close()
    # The segment before the last loses its final batch at a clean batch boundary.
    second_last = env.fs.open(segment_path(env, bases[-2], LOG_SUFFIX))
    reader = reopen(env, clock, recovery_point=10**9)
    last_batch_bytes = list(reader.segments[-2].batches_from(0))[-1][1].total_bytes
    reader.close()
    second_last.truncate(second_last.size() - last_batch_bytes)
    recovered = reopen(env, clock, recovery_point=bases[-2])
    assert recovered.segment_base_offsets == bases[:-1]
    assert recovered.log_end_offset == bases[-1] - 3


@pytest.mark.parametrize("damage", ["missing", "junk", "partial entry", "wrong entries"])
@pytest.mark.parametrize("suffix", [INDEX_SUFFIX, TIME_INDEX_SUFFIX])
def test_damaged_indexes_are_rebuilt(
    env: StorageEnv, clock: Clock, damage: str, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    log, written = build(env, clock)
    log.flush()
    point, bases = log.recovery_point, log.segment_base_offsets
    log.close()
    for base in bases:
        path = segment_path(env, base, suffix)
        if damage == "missing":
            env.fs.remove(path)
            continue
        handle = env.fs.open(path)
        size = handle.size()
        if damage == "junk":
            handle.truncate(0)
            handle.append(b"\x7f" * 24)
        elif damage == "partial entry":
            handle.append(b"\x00\x00\x00")
        elif size:
            first = handle.pread(0, 4)
            handle.truncate(0)
            handle.append(first + b"\x7f\xff\xff\xf0" + bytes(8 if suffix == INDEX_SUFFIX else 4))
    with caplog.at_level(logging.WARNING, logger="storage"):
        recovered = reopen(env, clock, recovery_point=point)
        assert_indexes_match_a_scan(recovered)
        assert [payload(d) for _, d in read_everything(recovered)] == [payload(b) for b in written]
    if damage == "missing" or damage == "junk" or damage == "partial entry":
        assert "index not usable" in caplog.text
    recovered.flush()
    recovered.close()
    again = reopen(env, clock, recovery_point=point)
    assert_indexes_match_a_scan(again)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_leader_epoch_checkpoint_is_rebuilt_from_the_batches(
    env: StorageEnv, clock: Clock, damage: str
) -> None:
    log, _ = build(env, clock)
    log.flush()
    point, entries = log.recovery_point, log.epoch_entries
    assert [e.epoch for e in entries] == [1, 2, 3, 4]
    log.close()
    path = env.path("t-0", LEADER_EPOCH_CHECKPOINT)
    if damage == "missing":
        env.fs.remove(path)
    else:
        handle = env.fs.open(path)
        handle.truncate(handle.size() - 3)
    recovered = reopen(env, clock, recovery_point=point)
    assert recovered.epoch_entries == entries


def test_leftover_files_are_cleaned_up(env: StorageEnv, clock: Clock) -> None:
    log, _ = build(env, clock, batches=3)
    log.close()
    env.fs.open(env.path("t-0", "00000000000000000999.index"), create=True).close()
    env.fs.open(env.path("t-0", LEADER_EPOCH_CHECKPOINT + ".tmp"), create=True).close()
    reopen(env, clock)
    assert env.fs.listdir(env.path("t-0")) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
        LEADER_EPOCH_CHECKPOINT,
    ]


@dataclass
class CountingFileSystem:
    """Delegates to a real FileSystem and counts bytes read from each `.log` file."""

    inner: FileSystem
    log_bytes_read: dict[str, int] = field(default_factory=dict)

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        handle = self.inner.open(path, create=create)
        if not path.endswith(LOG_SUFFIX):
            return handle
        counts = self.log_bytes_read
        original_pread = handle.pread

        def pread(position: int, size: int) -> bytes:
            data = original_pread(position, size)
            counts[path] = counts.get(path, 0) + len(data)
            return data

        handle.pread = pread  # type: ignore[method-assign]
        return handle

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_recovery_reads_only_what_lies_past_the_recovery_point(
    env: StorageEnv, clock: Clock
) -> None:
    log, _ = build(env, clock, batches=80)
    log.flush()
    point, bases = log.recovery_point, log.segment_base_offsets
    log.append(make_batch(3), leader_epoch=9)  # unflushed, in the last segment
    total_bytes = log.size_bytes
    log.close()
    counting = CountingFileSystem(env.fs)
    recovered = PartitionLog.open(
        counting,  # type: ignore[arg-type]
        env.path("t-0"),
        CONFIG,
        clock,
        recovery_point=point,
    )
    assert recovered.log_end_offset == point + 3
    read = counting.log_bytes_read
    assert set(read) <= {segment_path(env, bases[-1], LOG_SUFFIX)}
    assert sum(read.values()) < total_bytes // 4

    counting.log_bytes_read.clear()
    recovered.close()
    PartitionLog.open(counting, env.path("t-0"), CONFIG, clock)  # type: ignore[arg-type]
    assert sum(counting.log_bytes_read.values()) >= total_bytes
