"""`tidelog consume`'s reading loop against a scripted consumer: where it stops, what it
prints, and that a stalled partition is an error rather than an endless wait."""

from __future__ import annotations

import io
from collections.abc import Iterable

import pytest
import trio
import trio.testing

from tidelog.client.cli_common import CliError
from tidelog.client.cli_consume import RecordReader
from tidelog.client.cli_format import compile_template
from tidelog.client.protocol.records import TimestampType
from tidelog.client.structs import ConsumerRecord, TopicPartition

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)
Step = tuple[dict[TopicPartition, list[int]], dict[TopicPartition, int]]
"""One getmany answer: record offsets per partition, and positions after it."""


def record(tp: TopicPartition, offset: int) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, TimestampType.CREATE_TIME, None, b"")


class ScriptedConsumer:
    """Answers `getmany` from a script; once it runs out, waits out the timeout with
    nothing, as a consumer at the end of its partitions does."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = list(steps)
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.max_records_asked: list[int | None] = []

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self.assigned = list(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        self.max_records_asked.append(max_records)
        if not self.steps:
            await trio.sleep(timeout_ms / 1000)
            return {}
        offsets, positions = self.steps.pop(0)
        self.positions.update(positions)
        await trio.lowlevel.checkpoint()
        return {tp: [record(tp, o) for o in found] for tp, found in offsets.items()}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def reader(
    starts: dict[TopicPartition, int],
    stops: dict[TopicPartition, int] | None,
    out: io.BytesIO,
    count: int | None = None,
) -> RecordReader:
    return RecordReader(
        starts,
        stops=stops,
        count=count,
        formatter=compile_template("%p:%o "),
        out=out,
        stall_timeout_s=5,
    )


async def test_stops_at_the_end_offsets_even_across_offsets_without_records() -> None:
    # Offsets 3-4 of P0 hold no record (say, a transaction marker): the position passes
    # them without a record, and that is enough to finish.
    consumer = ScriptedConsumer(
        [
            ({P0: [0, 1, 2], P1: [7]}, {P0: 3, P1: 8}),
            ({}, {P0: 5}),
        ]
    )
    out = io.BytesIO()
    with trio.fail_after(1):
        await reader({P0: 0, P1: 7}, {P0: 5, P1: 8}, out).run(consumer)  # type: ignore[arg-type]
    assert out.getvalue() == b"0:0 0:1 0:2 1:7 "
    assert consumer.assigned == []  # done partitions are no longer fetched


async def test_records_past_the_end_offsets_are_not_printed() -> None:
    consumer = ScriptedConsumer([({P0: [3, 4, 5, 6]}, {P0: 7})])
    out = io.BytesIO()
    await reader({P0: 3}, {P0: 5}, out).run(consumer)  # type: ignore[arg-type]
    assert out.getvalue() == b"0:3 0:4 "


async def test_partitions_already_at_their_end_are_not_read() -> None:
    consumer = ScriptedConsumer([])
    out = io.BytesIO()
    await reader({P0: 4, P1: 0}, {P0: 4, P1: 0}, out).run(consumer)  # type: ignore[arg-type]
    assert out.getvalue() == b"" and consumer.max_records_asked == []


async def test_count_limits_what_is_asked_for_and_printed() -> None:
    consumer = ScriptedConsumer([({P0: [0, 1]}, {P0: 2}), ({P1: [0]}, {P1: 1})])
    out = io.BytesIO()
    await reader({P0: 0, P1: 0}, None, out, count=3).run(consumer)  # type: ignore[arg-type]
    assert out.getvalue() == b"0:0 0:1 1:0 "
    assert consumer.max_records_asked == [3, 1]


async def test_follow_waits_for_records_until_the_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    consumer = ScriptedConsumer([({P0: [0]}, {P0: 1})])
    out = io.BytesIO()
    with trio.move_on_after(3600) as waited:
        await reader({P0: 0}, None, out, count=2).run(consumer)  # type: ignore[arg-type]
    assert waited.cancelled_caught  # no stall error while following: it just waits
    assert out.getvalue() == b"0:0 "


async def test_a_stalled_partition_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    consumer = ScriptedConsumer([({P0: [0]}, {P0: 1})])
    out = io.BytesIO()
    started = trio.current_time()
    with pytest.raises(CliError, match=r"no progress on 't' within 5000 ms \(partitions 0 at 1\)"):
        await reader({P0: 0}, {P0: 3}, out).run(consumer)  # type: ignore[arg-type]
    assert 5 <= trio.current_time() - started < 6
    assert out.getvalue() == b"0:0 "
