"""The follower's fetch rules: the request it sends, and what it does with each answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tidelog.broker.partition.follower import (
    Append,
    FetchTarget,
    Retry,
    StartAt,
    Truncate,
    fetch_request,
    next_step,
    truncation_offset,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.leader_epoch import EpochEntry, LeaderEpochCache


@dataclass
class FakeLog:
    """A follower log: its epochs as (epoch, start offset) entries."""

    log_end_offset: int
    high_watermark: int = 0
    log_start_offset: int = 0
    epochs: list[EpochEntry] = field(default_factory=list)

    @property
    def latest_epoch(self) -> int | None:
        return self.epochs[-1].epoch if self.epochs else None

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return LeaderEpochCache(self.epochs).end_offset_for(epoch, self.log_end_offset)


def answer(error: ErrorCode = ErrorCode.NONE, **fields: object) -> Message:
    base: Message = {
        "partition_index": 0,
        "error_code": int(error),
        "high_watermark": 10,
        "log_start_offset": 0,
        "records": b"",
    }
    return {**base, **fields}


def test_the_request_names_each_partition_at_its_log_end_with_its_last_epoch() -> None:
    logs = [
        FakeLog(120, epochs=[EpochEntry(1, 0), EpochEntry(3, 100)], log_start_offset=5),
        FakeLog(0),
    ]
    request = fetch_request(
        7,
        [FetchTarget("a", 0, 4, logs[0]), FetchTarget("b", 2, 1, logs[1])],
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=1000,
        partition_max_bytes=100,
    )
    assert request["replica_id"] == 7
    assert request["max_wait_ms"] == 500 and request["max_bytes"] == 1000
    (a, b) = request["topics"]
    assert a["topic"] == "a" and b["topic"] == "b"
    assert a["partitions"] == [
        {
            "partition": 0,
            "current_leader_epoch": 4,
            "fetch_offset": 120,
            "last_fetched_epoch": 3,
            "log_start_offset": 5,
            "partition_max_bytes": 100,
        }
    ]
    assert b["partitions"][0]["last_fetched_epoch"] == -1
    assert b["partitions"][0]["fetch_offset"] == 0


def test_records_are_appended_with_the_leaders_high_watermark() -> None:
    step = next_step(answer(records=memoryview(b"batch"), high_watermark=42), FakeLog(10))
    assert isinstance(step, Append)
    assert step.records is not None and bytes(step.records) == b"batch"
    assert step.high_watermark == 42
    empty = next_step(answer(records=b""), FakeLog(10))
    assert isinstance(empty, Append) and empty.records is None


@pytest.mark.parametrize(
    "error",
    [
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.KAFKA_STORAGE_ERROR,
    ],
)
def test_a_leader_that_cannot_answer_is_retried_later(error: ErrorCode) -> None:
    assert next_step(answer(error), FakeLog(10)) == Retry(error)


def test_a_divergence_cuts_where_the_shared_epoch_ends_on_the_leader() -> None:
    # Both have epoch 3; the leader's ends at 90, ours goes on to 120.
    log = FakeLog(120, high_watermark=80, epochs=[EpochEntry(1, 0), EpochEntry(3, 50)])
    diverging = {"epoch": 3, "end_offset": 90}
    assert next_step(answer(diverging_epoch=diverging), log) == Truncate(90)


def test_a_divergence_to_an_older_epoch_cuts_at_our_end_of_it() -> None:
    # We have epochs 1 and 4; the leader never had 4 and answers epoch 2 ending at 150;
    # our largest epoch <= 2 is 1, which ends at 60 here: cut there, the next round checks 1.
    log = FakeLog(200, epochs=[EpochEntry(1, 0), EpochEntry(4, 60)])
    assert truncation_offset(2, 150, log) == 60
    # The leader's epoch also known here: the lower of both ends.
    assert truncation_offset(1, 40, log) == 40


def test_a_leader_without_an_epoch_that_old_cuts_to_the_high_watermark() -> None:
    log = FakeLog(200, high_watermark=70, epochs=[EpochEntry(5, 0)])
    assert truncation_offset(-1, -1, log) == 70


def test_a_divergence_that_would_remove_nothing_is_not_acted_on() -> None:
    log = FakeLog(50, high_watermark=50, epochs=[EpochEntry(2, 0)])
    step = next_step(answer(diverging_epoch={"epoch": 2, "end_offset": 80}), log)
    assert isinstance(step, Retry)


def test_no_diverging_epoch_means_the_default_fields() -> None:
    step = next_step(answer(diverging_epoch={"epoch": -1, "end_offset": -1}), FakeLog(10))
    assert isinstance(step, Append)


def test_out_of_range_below_the_leaders_log_start_restarts_the_log_there() -> None:
    step = next_step(answer(ErrorCode.OFFSET_OUT_OF_RANGE, log_start_offset=500), FakeLog(100))
    assert step == StartAt(500)


def test_out_of_range_above_the_leaders_end_cuts_to_its_high_watermark() -> None:
    out_of_range = answer(ErrorCode.OFFSET_OUT_OF_RANGE, log_start_offset=0, high_watermark=60)
    assert next_step(out_of_range, FakeLog(100)) == Truncate(60)
    unknown = answer(ErrorCode.OFFSET_OUT_OF_RANGE, log_start_offset=0, high_watermark=-1)
    assert next_step(unknown, FakeLog(100)) == Retry(ErrorCode.OFFSET_OUT_OF_RANGE)
