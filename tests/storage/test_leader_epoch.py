"""The leader-epoch cache's assignment, truncation and OffsetForLeaderEpoch answers."""

from __future__ import annotations

from tidelog.storage.leader_epoch import (
    UNDEFINED_EPOCH,
    UNDEFINED_OFFSET,
    EpochEntry,
    LeaderEpochCache,
)


def test_assign_keeps_the_first_start_of_an_epoch() -> None:
    cache = LeaderEpochCache()
    assert cache.assign(1, 0)
    assert not cache.assign(1, 10)
    assert cache.assign(2, 10)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(2, 10)]


def test_assign_drops_entries_it_contradicts() -> None:
    cache = LeaderEpochCache([EpochEntry(1, 0), EpochEntry(2, 10), EpochEntry(4, 20)])
    assert cache.assign(3, 15)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(2, 10), EpochEntry(3, 15)]


def test_end_offset_for_epoch() -> None:
    cache = LeaderEpochCache([EpochEntry(1, 0), EpochEntry(3, 50), EpochEntry(5, 80)])
    assert cache.end_offset_for(5, log_end_offset=99) == (5, 99)
    assert cache.end_offset_for(3, 99) == (3, 80)
    assert cache.end_offset_for(4, 99) == (3, 80)  # unknown epoch: the one before it
    assert cache.end_offset_for(0, 99) == (0, 0)  # older than all: the earliest start
    assert cache.end_offset_for(6, 99) == (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
    assert LeaderEpochCache().end_offset_for(1, 5) == (UNDEFINED_EPOCH, UNDEFINED_OFFSET)


def test_truncation_from_both_ends() -> None:
    cache = LeaderEpochCache([EpochEntry(1, 0), EpochEntry(3, 50), EpochEntry(5, 80)])
    assert cache.truncate_from_end(80)
    assert cache.entries == [EpochEntry(1, 0), EpochEntry(3, 50)]
    assert not cache.truncate_from_end(80)
    assert cache.truncate_from_start(60)
    assert cache.entries == [EpochEntry(3, 60)]
    assert not cache.truncate_from_start(60)
