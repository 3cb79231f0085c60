"""The produce/consume history checker: a clean history, each anomaly built by hand (reported
with its details, and nothing else beside what it implies), consumer position resets, and
random valid logs read through random consumer windows, before and after a mutation."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.simulation.checker import (
    DUPLICATE,
    FAILED_WRITE_VISIBLE,
    FINAL_READER,
    INCONSISTENT_OFFSETS,
    LOST_WRITE,
    NONMONOTONIC_POLL,
    OFFSET_MISMATCH,
    POLL_SKIP,
    UNEXPECTED,
    UNSEEN,
    Action,
    Anomaly,
    Assign,
    CheckResult,
    Counts,
    HistoryRecorder,
    Op,
    OpType,
    Partition,
    Poll,
    Seek,
    Send,
    Value,
    check,
)

T0: Partition = ("t", 0)
T1: Partition = ("t", 1)


def recorder() -> HistoryRecorder:
    return HistoryRecorder(itertools.count(0, 5).__next__)


def send(
    rec: HistoryRecorder,
    process: str,
    tp: Partition,
    value: Value,
    offset: int | None = None,
    outcome: OpType = OpType.OK,
) -> Op:
    rec.invoke(process, Send(tp, value))
    return rec.record(process, outcome, Send(tp, value, offset))


def produce(rec: HistoryRecorder, tp: Partition, *values: Value) -> list[Op]:
    """Acked sends of `values` at offsets 0, 1, ..."""
    return [send(rec, "p1", tp, value, offset) for offset, value in enumerate(values)]


def poll(rec: HistoryRecorder, process: str, tp: Partition, *records: tuple[int, Value]) -> Op:
    rec.invoke(process, Poll(tp))
    return rec.ok(process, Poll(tp, records))


def final_read(rec: HistoryRecorder, tp: Partition, *records: tuple[int, Value]) -> Op:
    rec.ok(FINAL_READER, Seek(tp, 0))
    return poll(rec, FINAL_READER, tp, *records)


def only(result: CheckResult, kind: str) -> Anomaly:
    """The one anomaly of `result`, which must be of `kind`."""
    assert result.anomalies.keys() == {kind}, result.summary()
    (anomaly,) = result.anomalies[kind]
    return anomaly


def test_clean_history_passes_with_its_counts() -> None:
    rec = recorder()
    produce(rec, T0, "a", "b")
    send(rec, "p2", T1, "c", 0)
    send(rec, "p2", T1, "x", outcome=OpType.FAIL)
    send(rec, "p2", T1, "y", outcome=OpType.INFO)
    poll(rec, "c1", T0, (0, "a"))
    poll(rec, "c1", T0, (1, "b"))
    poll(rec, "c1", T1, (0, "c"))
    final_read(rec, T0, (0, "a"), (1, "b"))
    final_read(rec, T1, (0, "c"))

    result = check(rec.history)

    assert result.valid
    assert result.anomalies == {}
    assert result.counts == Counts(
        acked=3, failed=1, indeterminate=1, read=3, final=3, lost=0, unseen=0
    )
    assert result.summary() == (
        "valid: 3 acked, 1 failed, 1 indeterminate sends; 3 values read, 3 in the final read;"
        " 0 lost, 0 unseen"
    )


def test_offsets_no_read_found_are_gaps_not_skips() -> None:
    rec = recorder()
    for offset, value in [(0, "a"), (3, "b"), (7, "c")]:
        send(rec, "p1", T0, value, offset)
    poll(rec, "c1", T0, (0, "a"))
    poll(rec, "c1", T0, (3, "b"), (7, "c"))
    final_read(rec, T0, (0, "a"), (3, "b"), (7, "c"))

    assert check(rec.history).anomalies == {}


def test_lost_write_an_acked_value_the_final_read_passed_over() -> None:
    rec = recorder()
    _, b, _ = produce(rec, T0, "a", "b", "c")
    final_read(rec, T0, (0, "a"), (2, "c"))

    result = check(rec.history)

    assert result.anomalies.keys() == {LOST_WRITE, UNSEEN}
    (lost,) = result.anomalies[LOST_WRITE]
    assert (lost.partition, lost.values, lost.offsets, lost.ops) == (T0, ("b",), (1,), (b.index,))
    assert "reached offset 2" in lost.detail
    (unseen,) = result.anomalies[UNSEEN]
    assert (unseen.values, unseen.offsets, unseen.ops) == (("b",), (1,), (b.index,))
    assert (result.counts.lost, result.counts.unseen) == (1, 1)
    assert not result.valid
    assert "lost-write t-0: 'b', acked or read at offsets (1,)" in result.summary()


def test_lost_write_a_value_a_consumer_read_and_the_final_read_lacks() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    send(rec, "p1", T0, "b", outcome=OpType.INFO)
    send(rec, "p1", T0, "c", 2)
    seen = poll(rec, "c1", T0, (0, "a"), (1, "b"), (2, "c"))
    rec.ok("reader", Seek(T0, 0))
    first = poll(rec, "reader", T0, (0, "a"))
    second = poll(rec, "reader", T0, (2, "c"))

    result = check(rec.history, final_reader="reader")

    # The final reader also jumped over offset 1, which c1 read: a poll-skip as well.
    assert result.anomalies.keys() == {LOST_WRITE, POLL_SKIP}
    (lost,) = result.anomalies[LOST_WRITE]
    assert (lost.values, lost.offsets, lost.ops) == (("b",), (1,), (seen.index,))
    (skip,) = result.anomalies[POLL_SKIP]
    assert (skip.process, skip.values, skip.offsets) == ("reader", ("b",), (1,))
    assert skip.ops == (first.index, second.index)


def test_unseen_an_acked_value_past_the_final_read_is_not_lost() -> None:
    rec = recorder()
    _, b = produce(rec, T0, "a", "b")
    final_read(rec, T0, (0, "a"))

    result = check(rec.history)

    unseen = only(result, UNSEEN)
    assert (unseen.values, unseen.offsets, unseen.ops) == (("b",), (1,), (b.index,))
    assert result.valid
    assert (result.counts.lost, result.counts.unseen) == (0, 1)


def test_duplicate_a_value_at_two_offsets() -> None:
    rec = recorder()
    produce(rec, T0, "a", "b")
    seen = poll(rec, "c1", T0, (0, "a"), (1, "b"))
    final = final_read(rec, T0, (0, "a"), (1, "b"), (2, "a"))

    duplicate = only(check(rec.history), DUPLICATE)

    assert (duplicate.partition, duplicate.values, duplicate.offsets) == (T0, ("a",), (0, 2))
    assert duplicate.ops == (seen.index, final.index)


def test_inconsistent_offsets_two_reads_disagree() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    b = send(rec, "p1", T0, "b", 1)
    send(rec, "p2", T0, "x", outcome=OpType.INFO)
    seen = poll(rec, "c1", T0, (0, "a"), (1, "x"))
    final = final_read(rec, T0, (0, "a"), (1, "b"))

    result = check(rec.history)

    # c1 read "x" at offset 1, the final read "b" there: "x" is also lost from the log.
    assert result.anomalies.keys() == {INCONSISTENT_OFFSETS, LOST_WRITE}
    (inconsistent,) = result.anomalies[INCONSISTENT_OFFSETS]
    assert (inconsistent.values, inconsistent.offsets) == (("b", "x"), (1,))
    assert inconsistent.ops == (b.index, seen.index, final.index)
    (lost,) = result.anomalies[LOST_WRITE]
    assert (lost.values, lost.offsets) == (("x",), (1,))


def test_inconsistent_offsets_an_ack_disagrees_with_the_reads() -> None:
    rec = recorder()
    a = send(rec, "p1", T0, "a", 0)
    b = send(rec, "p1", T0, "b", 0)
    final = final_read(rec, T0, (0, "a"), (1, "b"))

    result = check(rec.history)

    assert result.anomalies.keys() == {INCONSISTENT_OFFSETS, OFFSET_MISMATCH}
    (inconsistent,) = result.anomalies[INCONSISTENT_OFFSETS]
    assert (inconsistent.values, inconsistent.offsets) == (("a", "b"), (0,))
    assert inconsistent.ops == (a.index, b.index, final.index)
    (mismatch,) = result.anomalies[OFFSET_MISMATCH]
    assert (mismatch.values, mismatch.offsets, mismatch.ops) == (
        ("b",),
        (0, 1),
        (b.index, final.index),
    )


def test_offset_mismatch_an_ack_at_an_offset_the_value_is_not_at() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    b = send(rec, "p1", T0, "b", 5)
    final = final_read(rec, T0, (0, "a"), (1, "b"))

    mismatch = only(check(rec.history), OFFSET_MISMATCH)

    assert (mismatch.values, mismatch.offsets, mismatch.ops) == (
        ("b",),
        (5, 1),
        (b.index, final.index),
    )


def test_failed_write_visible() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    x = send(rec, "p1", T0, "x", outcome=OpType.FAIL)
    final = final_read(rec, T0, (0, "a"), (1, "x"))

    visible = only(check(rec.history), FAILED_WRITE_VISIBLE)

    assert (visible.values, visible.offsets, visible.ops) == (("x",), (1,), (x.index, final.index))


def test_unexpected_a_value_sent_to_another_partition() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    send(rec, "p1", T1, "z", outcome=OpType.INFO)
    final = final_read(rec, T0, (0, "a"), (1, "z"))

    unexpected = only(check(rec.history), UNEXPECTED)

    assert (unexpected.partition, unexpected.values, unexpected.offsets) == (T0, ("z",), (1,))
    assert unexpected.ops == (final.index,)


def test_nonmonotonic_poll_a_repeat_across_polls() -> None:
    rec = recorder()
    produce(rec, T0, "a", "b", "c")
    first = poll(rec, "c1", T0, (0, "a"), (1, "b"))
    second = poll(rec, "c1", T0, (1, "b"), (2, "c"))
    final_read(rec, T0, (0, "a"), (1, "b"), (2, "c"))

    nonmonotonic = only(check(rec.history), NONMONOTONIC_POLL)

    assert (nonmonotonic.process, nonmonotonic.values, nonmonotonic.offsets) == (
        "c1",
        ("b",),
        (2, 1),
    )
    assert nonmonotonic.ops == (first.index, second.index)


def test_poll_skip_a_consumer_jumps_over_a_record() -> None:
    rec = recorder()
    produce(rec, T0, "a", "b", "c")
    first = poll(rec, "c1", T0, (0, "a"))
    second = poll(rec, "c1", T0, (2, "c"))
    final_read(rec, T0, (0, "a"), (1, "b"), (2, "c"))

    skip = only(check(rec.history), POLL_SKIP)

    assert (skip.process, skip.values, skip.offsets) == ("c1", ("b",), (1,))
    assert skip.ops == (first.index, second.index)
    assert "from position 1" in skip.detail


@pytest.mark.parametrize(
    ("op_type", "action"),
    [
        (OpType.OK, Seek(T0, 0)),
        (OpType.OK, Seek(T0, None)),
        (OpType.INFO, Seek(T0, 2)),
        (OpType.OK, Assign(())),
        (OpType.INFO, Assign((T1,))),
        (OpType.INFO, Poll(T0)),
    ],
)
def test_a_reset_position_lets_a_consumer_read_again(op_type: OpType, action: Action) -> None:
    rec = recorder()
    produce(rec, T0, "a", "b", "c")
    poll(rec, "c1", T0, (0, "a"), (1, "b"), (2, "c"))
    rec.record("c1", op_type, action)
    poll(rec, "c1", T0, (0, "a"), (1, "b"))
    final_read(rec, T0, (0, "a"), (1, "b"), (2, "c"))

    assert check(rec.history).anomalies == {}


@pytest.mark.parametrize(
    ("op_type", "action"),
    [(OpType.OK, Assign((T0, T1))), (OpType.FAIL, Seek(T0, 0)), (OpType.INVOKE, Seek(T0, 0))],
)
def test_a_position_outlives_what_does_not_reset_it(op_type: OpType, action: Action) -> None:
    rec = recorder()
    produce(rec, T0, "a", "b")
    poll(rec, "c1", T0, (0, "a"), (1, "b"))
    rec.record("c1", op_type, action)
    poll(rec, "c1", T0, (0, "a"))
    final_read(rec, T0, (0, "a"), (1, "b"))

    assert only(check(rec.history), NONMONOTONIC_POLL).offsets == (2, 0)


@pytest.mark.parametrize(("target", "read", "kind"), [(0, 1, POLL_SKIP), (2, 1, NONMONOTONIC_POLL)])
def test_a_seek_sets_the_position_the_next_read_starts_at(
    target: int, read: int, kind: str
) -> None:
    rec = recorder()
    produce(rec, T0, "a", "b", "c")
    seek = rec.ok("c1", Seek(T0, target))
    after = poll(rec, "c1", T0, (read, "abc"[read]))
    final_read(rec, T0, (0, "a"), (1, "b"), (2, "c"))

    assert only(check(rec.history), kind).ops == (seek.index, after.index)


def test_an_indeterminate_send_that_never_appears_is_not_lost() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    send(rec, "p1", T0, "y", outcome=OpType.INFO)
    final_read(rec, T0, (0, "a"))

    result = check(rec.history)

    assert result.anomalies == {}
    assert (result.counts.indeterminate, result.counts.lost, result.counts.unseen) == (1, 0, 0)


def test_an_indeterminate_send_that_appears_is_fine() -> None:
    rec = recorder()
    send(rec, "p1", T0, "a", 0)
    send(rec, "p1", T0, "y", outcome=OpType.INFO)
    poll(rec, "c1", T0, (0, "a"), (1, "y"))
    final_read(rec, T0, (0, "a"), (1, "y"))

    result = check(rec.history)

    assert result.anomalies == {}
    assert (result.counts.read, result.counts.final) == (2, 2)


def test_an_ok_send_without_an_offset_is_refused() -> None:
    rec = recorder()
    rec.ok("p1", Send(T0, "a"))

    with pytest.raises(ValueError, match="op 0: an ok send must carry its offset"):
        check(rec.history)


def test_the_recorder_numbers_and_stamps_each_op() -> None:
    rec = recorder()
    rec.invoke("p1", Send(T0, "a"))
    rec.info("p1", Send(T0, "a"))
    rec.fail("c1", Seek(T0, 3))

    assert rec.history == (
        Op(0, 0, "p1", OpType.INVOKE, Send(T0, "a")),
        Op(1, 5, "p1", OpType.INFO, Send(T0, "a")),
        Op(2, 10, "c1", OpType.FAIL, Seek(T0, 3)),
    )


def test_the_summary_lists_a_few_anomalies_of_each_kind() -> None:
    rec = recorder()
    produce(rec, T0, *range(8))
    final_read(rec, T0, (0, 0), (7, 7))

    summary = check(rec.history).summary(limit=2)

    assert summary.startswith("INVALID: 8 acked, 0 failed, 0 indeterminate sends;")
    assert "\nlost-write: 6\n  lost-write t-0: 1, acked or read at offsets (1,)" in summary
    assert "\n  ... and 4 more\nunseen: 6\n" in summary


# Random valid histories: a log per partition, with gaps between offsets (as transaction
# markers leave), read by consumers in sessions that seek or carry on, then by a final read.


@dataclass(frozen=True)
class Scenario:
    logs: dict[Partition, list[tuple[int, int]]]  # (offset, value), ascending
    indeterminate: frozenset[int]  # log values whose send completed info
    stray: list[tuple[Partition, int, OpType]]  # sends that never land: failed or info
    # (consumer, partition, the log index to seek to or None to carry on, poll sizes)
    sessions: list[tuple[str, Partition, int | None, list[int]]]
    final_sizes: list[int]  # the final read's poll sizes, cycled


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    values = itertools.count()
    partitions = [("t", p) for p in range(draw(st.integers(1, 3)))]
    logs: dict[Partition, list[tuple[int, int]]] = {}
    for tp in partitions:
        offset, entries = draw(st.integers(0, 2)), []
        for gap in draw(st.lists(st.integers(1, 3), max_size=10)):
            entries.append((offset, next(values)))
            offset += gap
        logs[tp] = entries
    landed = [value for entries in logs.values() for _, value in entries]
    indeterminate = draw(st.frozensets(st.sampled_from(landed))) if landed else frozenset()
    outcomes = st.lists(st.sampled_from([OpType.FAIL, OpType.INFO]), max_size=3)
    stray = [
        (draw(st.sampled_from(partitions)), next(values), outcome) for outcome in draw(outcomes)
    ]
    session = st.tuples(
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(partitions),
        st.none() | st.integers(0, 10),
        st.lists(st.integers(1, 4), min_size=1, max_size=4),
    )
    sessions = draw(st.lists(session, max_size=8))
    final_sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    return Scenario(logs, indeterminate, stray, sessions, final_sizes)


def build(scenario: Scenario, final: dict[Partition, list[tuple[int, int]]]) -> tuple[Op, ...]:
    """The scenario's history, its final read returning `final`."""
    rec = recorder()
    for tp, entries in scenario.logs.items():
        for offset, value in entries:
            if value in scenario.indeterminate:
                send(rec, "p1", tp, value, outcome=OpType.INFO)
            else:
                send(rec, "p1", tp, value, offset)
    for tp, value, outcome in scenario.stray:
        send(rec, "p2", tp, value, outcome=outcome)
    at: dict[tuple[str, Partition], int] = {}  # a consumer's next log index on a partition
    for consumer, tp, start, sizes in scenario.sessions:
        entries = scenario.logs[tp]
        if start is not None:
            start = min(start, len(entries))
            # A log index, or one past the end: the offset after the last (0 for an empty log).
            ends = [offset for offset, _ in entries] + [entries[-1][0] + 1 if entries else 0]
            target = ends[start]
            rec.ok(consumer, Seek(tp, target))
            at[consumer, tp] = start
        index = at.get((consumer, tp), 0)
        for size in sizes:
            poll(rec, consumer, tp, *entries[index : index + size])
            index = min(index + size, len(entries))
        at[consumer, tp] = index
    for tp, records in final.items():
        rec.ok(FINAL_READER, Seek(tp, 0))
        chunks, index = itertools.cycle(scenario.final_sizes), 0
        while index < len(records):
            size = next(chunks)
            poll(rec, FINAL_READER, tp, *records[index : index + size])
            index += size
    return rec.history


@settings(deadline=None)
@given(scenarios())
def test_random_valid_histories_pass(scenario: Scenario) -> None:
    result = check(build(scenario, scenario.logs))

    assert result.anomalies == {}, result.summary()
    landed = sum(len(entries) for entries in scenario.logs.values())
    failed = sum(outcome is OpType.FAIL for _, _, outcome in scenario.stray)
    assert result.counts == Counts(
        acked=landed - len(scenario.indeterminate),
        failed=failed,
        indeterminate=len(scenario.indeterminate) + len(scenario.stray) - failed,
        read=landed,
        final=landed,
        lost=0,
        unseen=0,
    )


@settings(deadline=None)
@given(scenarios(), st.sampled_from(["drop", "duplicate", "swap"]), st.data())
def test_random_mutations_of_the_final_read_are_reported(
    scenario: Scenario, mutation: str, data: st.DataObject
) -> None:
    tp = data.draw(st.sampled_from(sorted(scenario.logs)))
    records = list(scenario.logs[tp])
    acked = [i for i, (_, value) in enumerate(records) if value not in scenario.indeterminate]
    expected: set[tuple[str, tuple[Value, ...], int]]  # (kind, values sorted, first offset)
    if mutation == "drop":
        # Not the last record: the final read must still reach past the one dropped.
        choices = [i for i in acked if i < len(records) - 1]
        assume(choices)
        offset, value = records.pop(data.draw(st.sampled_from(choices)))
        expected = {(LOST_WRITE, (value,), offset)}
    elif mutation == "duplicate":
        assume(records)
        offset, value = data.draw(st.sampled_from(records))
        records.append((records[-1][0] + 1, value))
        expected = {(DUPLICATE, (value,), offset)}
    else:
        assume(len(acked) >= 2)
        i, j = data.draw(st.lists(st.sampled_from(acked), min_size=2, max_size=2, unique=True))
        (oi, vi), (oj, vj) = records[i], records[j]
        records[i], records[j] = (oi, vj), (oj, vi)
        expected = {(INCONSISTENT_OFFSETS, tuple(sorted((vi, vj))), o) for o in (oi, oj)}

    result = check(build(scenario, {**scenario.logs, tp: records}))

    assert not result.valid
    reported = {
        (anomaly.kind, tuple(sorted(anomaly.values, key=int)), anomaly.offsets[0])
        for anomalies in result.anomalies.values()
        for anomaly in anomalies
        if anomaly.partition == tp
    }
    assert expected <= reported, result.summary()
