"""PartitionLog behaviour on both filesystems: append, read, roll, retention, truncation."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from tests.storage.batches import full_scan_indexes, make_batch, payload, read_everything
from tests.storage.conftest import Clock, StorageEnv
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.records import TimestampType as BatchTimestampType
from tidelog.client.protocol.records import iter_batches, parse_batch_header
from tidelog.storage.config import LogConfig, TimestampType
from tidelog.storage.errors import (
    InvalidRecordError,
    LogOfflineError,
    OffsetOutOfRangeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from tidelog.storage.filesystem import FaultPoint
from tidelog.storage.log import PartitionLog

SMALL = LogConfig(segment_bytes=2_000, index_interval_bytes=300)


def open_log(
    env: StorageEnv, clock: Clock, config: LogConfig = SMALL, *, recovery_point: int = 0
) -> PartitionLog:
    return PartitionLog.open(
        env.fs, env.path("topic-0"), config, clock, recovery_point=recovery_point
    )


def fill(log: PartitionLog, batches: int, *, count: int = 3, value_bytes: int = 40) -> list[bytes]:
    written = []
    for tag in range(batches):
        batch = make_batch(count, value_bytes=value_bytes, timestamp_ms=10_000 + 10 * tag, tag=tag)
        log.append(batch, leader_epoch=0)
        written.append(batch)
    return written


def test_append_assigns_consecutive_offsets_and_keeps_the_bytes(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock)
    first = make_batch(3, tag=1)
    second = make_batch(2, tag=2)
    info = log.append(first + second, leader_epoch=7)
    assert (info.first_offset, info.last_offset, info.records_count) == (0, 4, 5)
    assert [b.base_offset for b in info.batches] == [0, 3]
    assert all(b.partition_leader_epoch == 7 for b in info.batches)
    assert info.log_append_time_ms is None
    assert log.log_end_offset == 5
    info = log.append(make_batch(1, tag=3), leader_epoch=7)
    assert (info.first_offset, info.last_offset) == (5, 5)
    batches = read_everything(log)
    assert [h.base_offset for h, _ in batches] == [0, 3, 5]
    assert [payload(data) for _, data in batches[:2]] == [payload(first), payload(second)]


def test_append_patches_a_writable_buffer_in_place(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    log.append(make_batch(2), leader_epoch=0)
    buffer = bytearray(make_batch(1))
    log.append(memoryview(buffer), leader_epoch=3)
    header = parse_batch_header(buffer)
    assert (header.base_offset, header.partition_leader_epoch) == (2, 3)


def test_log_append_time_topics_are_stamped(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(message_timestamp_type=TimestampType.LOG_APPEND_TIME)
    log = open_log(env, clock, config)
    info = log.append(make_batch(2, timestamp_ms=5), leader_epoch=0, log_append_time_ms=123_456)
    assert info.log_append_time_ms == 123_456
    [(header, _)] = read_everything(log)
    assert header.max_timestamp == 123_456
    assert header.timestamp_type is BatchTimestampType.LOG_APPEND_TIME
    clock.now = 777_000
    assert log.append(make_batch(1), leader_epoch=0).log_append_time_ms == 777_000


def test_invalid_appends_write_nothing(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock, LogConfig(max_message_bytes=500, segment_bytes=1_000))
    good = make_batch(1)
    bad_crc = bytearray(make_batch(1))
    bad_crc[-1] ^= 0xFF
    with pytest.raises(CorruptMessageError):
        log.append(good + bytes(bad_crc), leader_epoch=0)
    with pytest.raises(CorruptMessageError):
        log.append(good + good[:30], leader_epoch=0)
    with pytest.raises(RecordTooLargeError):
        log.append(make_batch(1, value_bytes=600), leader_epoch=0)
    with pytest.raises(RecordListTooLargeError):
        log.append(make_batch(4, value_bytes=100) * 3, leader_epoch=0)
    with pytest.raises(InvalidRecordError):
        log.append(b"", leader_epoch=0)
    assert log.log_end_offset == 0 and log.size_bytes == 0
    assert read_everything(log) == []


def test_read_respects_max_bytes_max_offset_and_min_one_batch(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock, LogConfig(index_interval_bytes=200))
    written = fill(log, 20)
    size = len(written[0])
    assert all(len(batch) == size for batch in written)

    file_range = log.read(7, 3 * size + 10)
    assert file_range is not None
    assert [h.base_offset for h in iter_batches(file_range.read_bytes())] == [6, 9, 12]

    file_range = log.read(7, 1, min_one_batch=True)
    assert file_range is not None and file_range.length == size
    assert log.read(7, 1, min_one_batch=False) is None

    file_range = log.read(0, 10**9, max_offset=10)
    assert file_range is not None
    assert [h.last_offset for h in iter_batches(file_range.read_bytes())] == [2, 5, 8]
    assert log.read(9, 10**9, max_offset=10) is None  # batch 9..11 straddles the limit
    assert log.read(12, 10**9, max_offset=12) is None

    assert log.read(60, 100) is None  # the log end
    with pytest.raises(OffsetOutOfRangeError):
        log.read(61, 100)


def test_sendfile_from_a_range_on_the_os_filesystem(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, 3)
    file_range = log.read(0, 10**6)
    assert file_range is not None
    fd = file_range.fileno()
    if env.kind == "memory":
        assert fd is None
        return
    assert fd is not None
    left, right = socket.socketpair()
    with left, right:
        sent = os.sendfile(left.fileno(), fd, file_range.position, file_range.length)
        assert sent == file_range.length
        received = b""
        while len(received) < sent:
            received += right.recv(sent - len(received))
    assert received == file_range.read_bytes()


def test_roll_on_size_and_indexes_match_a_scan(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    written = fill(log, 40)
    bases = log.segment_base_offsets
    assert len(bases) > 3 and bases[0] == 0
    for segment in log.segments:
        assert segment.size_bytes <= SMALL.segment_bytes
        assert (segment.offset_index.entries(), segment.time_index.entries()) == full_scan_indexes(
            segment
        )
    assert [payload(d) for _, d in read_everything(log)] == [payload(b) for b in written]
    for offset in range(log.log_end_offset):
        file_range = log.read(offset, 1)
        assert file_range is not None
        header = next(iter_batches(file_range.read_bytes()))
        assert header.base_offset <= offset <= header.last_offset


def test_roll_on_time_uses_batch_timestamps(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock, LogConfig(segment_ms=1_000))
    log.append(make_batch(1, timestamp_ms=10_000), leader_epoch=0)
    log.append(make_batch(1, timestamp_ms=10_999), leader_epoch=0)
    assert log.segment_base_offsets == [0]
    log.append(make_batch(1, timestamp_ms=11_000), leader_epoch=0)
    assert log.segment_base_offsets == [0, 2]


def test_explicit_roll_skips_an_empty_segment(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    log.roll()
    assert log.segment_base_offsets == [0]
    fill(log, 1)
    log.roll()
    log.roll()
    assert log.segment_base_offsets == [0, 3]


def test_reopen_after_close_keeps_everything(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    written = fill(log, 30)
    log.flush()
    end, bases, point = log.log_end_offset, log.segment_base_offsets, log.recovery_point
    log.close()
    with pytest.raises(LogOfflineError):
        log.append(make_batch(), leader_epoch=0)
    reopened = open_log(env, clock, recovery_point=point)
    assert (reopened.log_end_offset, reopened.segment_base_offsets) == (end, bases)
    assert [payload(d) for _, d in read_everything(reopened)] == [payload(b) for b in written]
    assert reopened.append(make_batch(), leader_epoch=0).first_offset == end


def test_truncate_to_removes_whole_batches(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    written = fill(log, 40)
    log.flush()
    log.truncate_to(31)  # inside batch 30..32: that batch goes too
    assert log.log_end_offset == 30
    assert log.recovery_point == 30
    assert [payload(d) for _, d in read_everything(log)] == [payload(b) for b in written[:10]]
    for segment in log.segments:
        assert (segment.offset_index.entries(), segment.time_index.entries()) == full_scan_indexes(
            segment
        )
    assert log.append(make_batch(), leader_epoch=1).first_offset == 30
    log.truncate_to(1_000)
    assert log.log_end_offset == 31
    log.close()
    assert open_log(env, clock).log_end_offset == 31


def test_truncate_below_the_log_start_restarts_the_log(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, 10)
    log.delete_records(12)
    log.truncate_to(5)
    assert (log.log_start_offset, log.log_end_offset) == (5, 5)
    log.truncate_fully_and_start_at(100)
    assert (log.log_start_offset, log.log_end_offset, log.segment_base_offsets) == (100, 100, [100])
    assert log.append(make_batch(), leader_epoch=0).first_offset == 100


def test_delete_records_moves_the_log_start(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, 40)
    bases = log.segment_base_offsets
    assert log.delete_records(bases[2] + 1) == bases[2] + 1
    assert log.segment_base_offsets == bases[2:]
    assert read_everything(log)[0][0].base_offset == bases[2]  # the batch holding the start
    with pytest.raises(OffsetOutOfRangeError):
        log.read(bases[2], 100)
    assert log.delete_records(3) == bases[2] + 1  # never backwards
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records(log.log_end_offset + 1)
    end = log.log_end_offset
    assert log.delete_records(end) == end
    assert log.segment_base_offsets == [end]
    assert log.read(end, 100) is None
    assert log.append(make_batch(), leader_epoch=0).first_offset == end


def test_retention_by_size_keeps_the_newest_segments(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(
        segment_bytes=2_000, index_interval_bytes=300, retention_bytes=4_000, retention_ms=-1
    )
    log = open_log(env, clock, config)
    fill(log, 60)
    before = log.segment_base_offsets
    deleted = log.enforce_retention(clock.now)
    assert deleted > 0
    assert log.segment_base_offsets == before[deleted:]
    assert log.log_start_offset == before[deleted]
    assert log.size_bytes - log.segments[0].size_bytes < 4_000 <= log.size_bytes
    assert log.enforce_retention(clock.now) == 0


def test_retention_by_time_deletes_expired_segments_and_rolls_an_expired_active_one(
    env: StorageEnv, clock: Clock
) -> None:
    config = LogConfig(segment_bytes=2_000, index_interval_bytes=300, retention_ms=1_000)
    log = open_log(env, clock, config)
    fill(log, 30)  # timestamps 10_000 .. 10_292
    bases = log.segment_base_offsets
    assert log.enforce_retention(now_ms=10_000) == 0
    newest_first = log.segments[0].max_timestamp
    assert log.enforce_retention(now_ms=newest_first + 1_001) == 1
    assert log.segment_base_offsets == bases[1:]
    end = log.log_end_offset
    assert log.enforce_retention(now_ms=10**6) == len(bases) - 1
    assert (log.segment_base_offsets, log.log_start_offset, log.log_end_offset) == ([end], end, end)


def test_retention_spares_data_above_max_offset(env: StorageEnv, clock: Clock) -> None:
    config = LogConfig(segment_bytes=2_000, index_interval_bytes=300, retention_ms=1_000)
    log = open_log(env, clock, config)
    fill(log, 30)
    bases = log.segment_base_offsets
    assert log.enforce_retention(now_ms=10**6, max_offset=bases[2]) == 2
    assert log.segment_base_offsets == bases[2:]


def test_offset_for_timestamp_finds_the_first_record_at_or_after(
    env: StorageEnv, clock: Clock
) -> None:
    log = open_log(env, clock, LogConfig(segment_bytes=2_000, index_interval_bytes=100))
    fill(log, 30)  # batch k: offsets 3k..3k+2, timestamps 10_000 + 10k + (0, 1, 2)
    assert log.offset_for_timestamp(0) == (0, 10_000)
    assert log.offset_for_timestamp(10_051) == (16, 10_051)
    assert log.offset_for_timestamp(10_053) == (18, 10_060)
    assert log.offset_for_timestamp(10_292) == (89, 10_292)
    assert log.offset_for_timestamp(10_293) is None
    log.delete_records(16)
    assert log.offset_for_timestamp(0) == (16, 10_051)
    for timestamp in range(10_000, 10_293, 7):  # agrees with a scan of every record
        expected = next(
            (offset, ts)
            for offset, ts in (
                (3 * k + i, 10_000 + 10 * k + i) for k in range(30) for i in range(3)
            )
            if ts >= timestamp and offset >= 16
        )
        assert log.offset_for_timestamp(timestamp) == expected


def test_leader_epochs_are_tracked_and_persisted(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    log.append(make_batch(2), leader_epoch=1)
    log.append(make_batch(2), leader_epoch=1)
    log.append(make_batch(2), leader_epoch=4)
    assert log.end_offset_for_epoch(1) == (1, 4)
    assert log.end_offset_for_epoch(3) == (1, 4)
    assert log.end_offset_for_epoch(4) == (4, 6)
    log.assign_epoch(6, 6)
    assert log.end_offset_for_epoch(4) == (4, 6)
    log.flush()
    log.close()
    reopened = open_log(env, clock, recovery_point=6)
    # An epoch that starts at the log end has no batch yet; like Kafka, recovery drops it.
    assert [tuple(e) for e in reopened.epoch_entries] == [(1, 0), (4, 4)]
    reopened.truncate_to(4)
    assert [tuple(e) for e in reopened.epoch_entries] == [(1, 0)]


def test_follower_append_keeps_offsets_and_epochs(env: StorageEnv, clock: Clock) -> None:
    leader = PartitionLog.open(env.fs, env.path("leader-0"), SMALL, clock)
    leader.append(make_batch(3), leader_epoch=2)
    leader.append(make_batch(2), leader_epoch=5)
    follower = open_log(env, clock)
    file_range = leader.read(0, 10**6)
    assert file_range is not None
    data = file_range.read_bytes()
    info = follower.append_as_follower(data)
    assert (info.first_offset, info.last_offset) == (0, 4)
    assert [d for _, d in read_everything(follower)] == [d for _, d in read_everything(leader)]
    assert [tuple(e) for e in follower.epoch_entries] == [(2, 0), (5, 3)]
    with pytest.raises(InvalidRecordError):
        follower.append_as_follower(data)  # offsets 0.. again: not at the log end


def test_batches_from_iterates_headers_across_segments(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    fill(log, 30)
    headers = list(log.batches_from(10))
    assert headers[0].base_offset == 9
    assert [h.next_offset for h in headers[:-1]] == [h.base_offset for h in headers[1:]]
    assert headers[-1].next_offset == log.log_end_offset


def test_flush_due_follows_the_policy(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock, LogConfig(flush_messages=5, flush_ms=1_000))
    log.append(make_batch(3), leader_epoch=0)
    assert not log.flush_due(clock.now)
    assert log.flush_due(clock.now + 1_000)
    log.append(make_batch(2), leader_epoch=0)
    assert log.flush_due(clock.now)
    log.flush()
    assert log.recovery_point == 5 and log.unflushed_messages == 0
    assert not log.flush_due(clock.now + 10_000)


@pytest.mark.parametrize("point", [FaultPoint.WRITE, FaultPoint.FSYNC, FaultPoint.OPEN])
def test_io_failure_takes_the_log_offline_until_reopened(
    env: StorageEnv, clock: Clock, point: FaultPoint
) -> None:
    log = open_log(env, clock)
    written = fill(log, 5)
    log.flush()
    env.faults.arm(point, path_contains=env.path("topic-0"), written_bytes=10)
    with pytest.raises(LogOfflineError):
        if point is FaultPoint.FSYNC:
            log.append(make_batch(), leader_epoch=0)
            log.flush()
        elif point is FaultPoint.OPEN:
            log.roll()
        else:
            log.append(make_batch(), leader_epoch=0)
    with pytest.raises(LogOfflineError):
        log.read(0, 100)
    log.close()
    reopened = open_log(env, clock, recovery_point=15)
    recovered = [payload(d) for _, d in read_everything(reopened)]
    assert recovered[:5] == [payload(b) for b in written]
    assert reopened.log_end_offset == sum(h.records_count for h, _ in read_everything(reopened))


def test_flush_in_a_worker_thread_while_appending(env: StorageEnv, clock: Clock) -> None:
    log = open_log(env, clock)
    errors: list[BaseException] = []
    recovery_points: list[int] = []

    def flusher() -> None:
        try:
            for _ in range(30):
                log.flush()
                recovery_points.append(log.recovery_point)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=flusher)
    worker.start()
    written = fill(log, 300, count=2, value_bytes=20)
    worker.join(timeout=60)
    assert not worker.is_alive() and errors == []
    assert recovery_points == sorted(recovery_points)
    assert all(point <= log.log_end_offset for point in recovery_points)
    log.flush()
    assert log.recovery_point == log.log_end_offset == 600
    assert [payload(d) for _, d in read_everything(log)] == [payload(b) for b in written]
