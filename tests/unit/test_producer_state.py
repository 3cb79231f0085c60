"""The idempotent-producer sequence rules, on the pure per-partition table."""

from __future__ import annotations

from tidelog.broker.producer_state import BATCHES_PER_PRODUCER, INT32_MAX, ProducerStateTable
from tidelog.client.protocol.errors import ErrorCode


def _append(table: ProducerStateTable, pid: int, epoch: int, seq: int, count: int, at: int) -> None:
    assert table.check(pid, epoch, seq, count - 1).accepted
    table.record(pid, epoch, seq, at, at + count - 1, timestamp_ms=1000 + at)


def test_batches_without_producer_id_are_never_checked() -> None:
    table = ProducerStateTable()
    assert table.check(-1, -1, -1, 9).accepted
    table.record(-1, -1, -1, 0, 9, 0)
    assert len(table) == 0


def test_in_order_sequences_are_accepted_and_gaps_rejected() -> None:
    table = ProducerStateTable()
    _append(table, 7, 0, 0, 10, at=0)
    _append(table, 7, 0, 10, 5, at=10)
    assert table.check(7, 0, 16, 0).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert table.check(7, 0, 14, 0).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert table.check(7, 0, 15, 0).accepted


def test_retried_batch_is_answered_with_its_original_offsets() -> None:
    table = ProducerStateTable()
    _append(table, 7, 0, 0, 10, at=100)
    _append(table, 7, 0, 10, 10, at=110)
    verdict = table.check(7, 0, 0, 9)
    assert not verdict.accepted
    assert verdict.error == ErrorCode.NONE
    assert verdict.duplicate_of is not None
    assert (verdict.duplicate_of.first_offset, verdict.duplicate_of.last_offset) == (100, 109)


def test_only_the_last_five_batches_are_remembered() -> None:
    table = ProducerStateTable()
    for i in range(BATCHES_PER_PRODUCER + 1):
        _append(table, 7, 0, i, 1, at=i)
    assert table.check(7, 0, 0, 0).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert table.check(7, 0, 1, 0).duplicate_of is not None


def test_old_epoch_is_fenced_and_new_epoch_restarts_at_zero() -> None:
    table = ProducerStateTable()
    _append(table, 7, 3, 0, 4, at=0)
    assert table.check(7, 2, 4, 0).error == ErrorCode.INVALID_PRODUCER_EPOCH
    assert table.check(7, 4, 4, 0).error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    _append(table, 7, 4, 0, 1, at=4)
    entry = table.get(7)
    assert entry is not None and entry.epoch == 4 and entry.last_sequence == 0


def test_unknown_producer_may_start_at_any_sequence() -> None:
    table = ProducerStateTable()
    _append(table, 9, 1, 42, 3, at=0)
    assert table.check(9, 1, 45, 0).accepted


def test_sequence_wraps_after_int32_max() -> None:
    table = ProducerStateTable()
    _append(table, 7, 0, INT32_MAX - 1, 2, at=0)
    entry = table.get(7)
    assert entry is not None and entry.last_sequence == INT32_MAX
    assert table.check(7, 0, 0, 0).accepted


def test_table_is_bounded_and_forgets_the_least_recent_producer() -> None:
    table = ProducerStateTable(max_producers=3)
    for pid in (1, 2, 3):
        _append(table, pid, 0, 0, 1, at=pid)
    _append(table, 1, 0, 1, 1, at=10)  # producer 1 is now the most recent
    _append(table, 4, 0, 0, 1, at=11)
    assert len(table) == 3
    assert table.get(2) is None
    assert table.get(1) is not None


def test_expire_and_truncate() -> None:
    table = ProducerStateTable()
    _append(table, 1, 0, 0, 5, at=0)
    _append(table, 1, 0, 5, 5, at=5)
    _append(table, 2, 0, 0, 1, at=10)
    table.truncate_to(5)
    entry = table.get(1)
    assert entry is not None and entry.last_sequence == 4
    assert table.get(2) is None
    assert table.expire(now_ms=1000 + 60_000, expiration_ms=60_000) == 0
    assert table.expire(now_ms=1000 + 60_001, expiration_ms=60_000) == 1
    assert len(table) == 0
