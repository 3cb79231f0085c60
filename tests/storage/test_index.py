"""Offset and time index semantics and their file formats (pure: no filesystem involved)."""

from __future__ import annotations

import struct

import pytest

from tidelog.storage.index import CorruptIndexError, IndexBuilder, OffsetIndex, TimeIndex


def test_offset_index_lookup_finds_the_floor_entry() -> None:
    index = OffsetIndex(100)
    index.append(110, 400)
    index.append(125, 900)
    assert index.lookup(99) == (100, 0)
    assert index.lookup(109) == (100, 0)
    assert index.lookup(110) == (110, 400)
    assert index.lookup(124) == (110, 400)
    assert index.lookup(10**9) == (125, 900)
    assert index.lookup_position(899) == (110, 400)
    assert index.lookup_position(900) == (125, 900)


def test_offset_index_rejects_entries_that_do_not_increase() -> None:
    index = OffsetIndex(0)
    index.append(5, 100)
    with pytest.raises(AssertionError):
        index.append(5, 200)
    with pytest.raises(AssertionError):
        index.append(6, 100)


def test_offset_index_file_format_is_big_endian_relative_offset_and_position() -> None:
    index = OffsetIndex(1_000)
    index.append(1_003, 77)
    index.append(1_010, 300)
    data = index.encode()
    assert data == struct.pack(">iiii", 3, 77, 10, 300)
    assert index.encode(1) == struct.pack(">ii", 10, 300)
    assert OffsetIndex.decode(data, 1_000, 301).entries() == index.entries()


@pytest.mark.parametrize(
    ("data", "log_size"),
    [
        (b"\x00" * 7, 100),  # partial entry
        (struct.pack(">ii", 1, 500), 100),  # position beyond the log
        (struct.pack(">iiii", 5, 10, 5, 20), 100),  # offsets not increasing
        (struct.pack(">iiii", 5, 20, 6, 10), 100),  # positions not increasing
        (struct.pack(">ii", -1, 10), 100),  # negative relative offset
    ],
)
def test_offset_index_decode_rejects_inconsistent_files(data: bytes, log_size: int) -> None:
    with pytest.raises(CorruptIndexError):
        OffsetIndex.decode(data, 0, log_size)


def test_time_index_lookup_starts_after_everything_older() -> None:
    index = TimeIndex(0)
    index.maybe_append(100, 10)
    index.maybe_append(100, 20)  # not higher: ignored
    index.maybe_append(250, 30)
    assert index.entries() == [(100, 10), (250, 30)]
    assert index.lookup(50) == 0
    assert index.lookup(100) == 0  # a batch before offset 10 may hold timestamp 100
    assert index.lookup(101) == 10
    assert index.lookup(251) == 30


def test_time_index_decode_requires_offset_index_points() -> None:
    offsets = OffsetIndex(0)
    offsets.append(10, 100)
    good = struct.pack(">qi", 5, 10)
    assert TimeIndex.decode(good, offsets).entries() == [(5, 10)]
    with pytest.raises(CorruptIndexError):
        TimeIndex.decode(struct.pack(">qi", 5, 11), offsets)
    with pytest.raises(CorruptIndexError):
        TimeIndex.decode(b"\x00" * 13, offsets)


def test_truncate_drops_entries_at_or_above_the_offset() -> None:
    offsets, times = OffsetIndex(0), TimeIndex(0)
    for offset, position, timestamp in ((10, 100, 5), (20, 200, 7), (30, 300, 9)):
        offsets.append(offset, position)
        times.maybe_append(timestamp, offset)
    offsets.truncate_to(20)
    times.truncate_to(20)
    assert offsets.entries() == [(10, 100)]
    assert times.entries() == [(5, 10)]


def test_builder_indexes_a_batch_once_the_interval_has_passed() -> None:
    builder = IndexBuilder(OffsetIndex(0), TimeIndex(0), index_interval_bytes=100)
    position = 0
    for offset, (size, timestamp) in enumerate([(60, 5), (60, 3), (60, 9), (30, 9), (80, 1)]):
        builder.add(offset, timestamp, size, position)
        position += size
    # 120 bytes before batch 2 -> entry; 30 + 60... before batch 4 reaches 90 < 100 -> none
    assert builder.offset_index.entries() == [(2, 120)]
    assert builder.time_index.entries() == [(5, 2)]
    assert builder.max_timestamp == 9
    assert builder.bytes_since_entry == 60 + 30 + 80
