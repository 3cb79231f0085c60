"""A checker for produce/consume histories, in the vocabulary of Jepsen's Kafka queue workload.

Clients of a simulation record what they did as a history of operations (`HistoryRecorder`);
`check` reads the history and reports what went wrong. Only completions carry information:
an `ok` operation happened, a `fail` one definitely did not, an `info` one may or may not have
(a timeout, a dropped connection). Invocations are ignored. At the end the simulation reads
every partition from its start as polls by one dedicated process (`FINAL_READER` unless told
otherwise): the final read, against which lost writes are judged.

Anomaly kinds, each per partition (a value is identified by its partition and itself):

- ``lost-write``: a value acknowledged by an ok send or read by any poll is missing from the
  final read, although the final read reached an offset at or past the lowest offset the value
  was acknowledged or read at.
- ``unseen``: a value acknowledged by an ok send that no poll read. Informational: it does not
  make a result invalid (the reads may simply not have reached it); with a final read of
  everything, unseen values are lost ones.
- ``duplicate``: a value read at more than one offset (over all polls).
- ``inconsistent-offsets``: an offset read, or acknowledged by an ok send, with more than one
  value (over all polls and ok sends).
- ``offset-mismatch``: an ok send's value that polls read, but never at its acknowledged offset.
- ``failed-write-visible``: a value read by a poll whose send failed (definitely).
- ``unexpected``: a value read by a poll that no send to that partition carried.
- ``nonmonotonic-poll``: a consumer read an offset below its position: the offset after the
  last record it read from that partition, or the offset it last sought to. A repeat counts.
- ``poll-skip``: a consumer read an offset above its position while some poll read an offset
  in between (at or past the position, below the offset read): it jumped over records.

A consumer's position on a partition is set by each record it reads and by an ok `Seek`; it is
forgotten (no expectation) after a `Seek` to an unknown offset, an info `Seek` or `Poll`, and
for partitions an `Assign` leaves out. Record a restarted consumer under a new process id.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

Value = int | str
# (topic, partition); tidelog.client.structs.TopicPartition is one, and equal to the plain tuple.
Partition = tuple[str, int]
_K = TypeVar("_K")

FINAL_READER = "final-reader"

LOST_WRITE = "lost-write"
UNSEEN = "unseen"
DUPLICATE = "duplicate"
INCONSISTENT_OFFSETS = "inconsistent-offsets"
OFFSET_MISMATCH = "offset-mismatch"
FAILED_WRITE_VISIBLE = "failed-write-visible"
UNEXPECTED = "unexpected"
NONMONOTONIC_POLL = "nonmonotonic-poll"
POLL_SKIP = "poll-skip"
KINDS = (
    LOST_WRITE,
    UNSEEN,
    DUPLICATE,
    INCONSISTENT_OFFSETS,
    OFFSET_MISMATCH,
    FAILED_WRITE_VISIBLE,
    UNEXPECTED,
    NONMONOTONIC_POLL,
    POLL_SKIP,
)
INFORMATIONAL = frozenset({UNSEEN})


class OpType(StrEnum):
    """How an operation stands: invoked, or completed ok, failed (definitely) or info."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Send:
    """A producer sends `value` to `partition`; an ok completion carries its `offset`."""

    partition: Partition
    value: Value
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Poll:
    """A consumer's fetch from `partition`: (offset, value) `records` in the order returned."""

    partition: Partition
    records: tuple[tuple[int, Value], ...] = ()


@dataclass(frozen=True, slots=True)
class Seek:
    """The consumer's position on `partition` moves to `offset`, or to one the history does not
    know (None: a committed offset, auto.offset.reset)."""

    partition: Partition
    offset: int | None


@dataclass(frozen=True, slots=True)
class Assign:
    """The consumer's assignment becomes `partitions`: positions on others are forgotten."""

    partitions: tuple[Partition, ...]


Action = Send | Poll | Seek | Assign


@dataclass(frozen=True, slots=True)
class Op:
    """One entry of a history: `index` is its place in it, `time` simulated milliseconds."""

    index: int
    time: float
    process: str
    type: OpType
    action: Action


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One thing that went wrong: the values and offsets involved, the indexes of the ops that
    show it, the consumer for poll anomalies, and a sentence saying what happened."""

    kind: str
    partition: Partition
    values: tuple[Value, ...]
    offsets: tuple[int, ...]
    ops: tuple[int, ...]
    detail: str
    process: str | None = None

    def __str__(self) -> str:
        who = "" if self.process is None else f" {self.process}"
        return f"{self.kind} {_name(self.partition)}{who}: {self.detail} (ops {list(self.ops)})"


@dataclass(frozen=True, slots=True)
class Counts:
    """Sends by outcome, and distinct values read by any poll, by the final read, lost, unseen."""

    acked: int
    failed: int
    indeterminate: int
    read: int
    final: int
    lost: int
    unseen: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The anomalies found, by kind (only kinds found, in `KINDS` order), and the counts."""

    anomalies: dict[str, list[Anomaly]]
    counts: Counts

    @property
    def valid(self) -> bool:
        """No anomaly beyond the informational kinds (`unseen`)."""
        return not self.anomalies.keys() - INFORMATIONAL

    def summary(self, limit: int = 5) -> str:
        """The verdict, the counts, and up to `limit` anomalies of each kind."""
        c = self.counts
        lines = [
            f"{'valid' if self.valid else 'INVALID'}: {c.acked} acked, {c.failed} failed,"
            f" {c.indeterminate} indeterminate sends; {c.read} values read, {c.final} in the"
            f" final read; {c.lost} lost, {c.unseen} unseen"
        ]
        for kind, found in self.anomalies.items():
            lines.append(f"{kind}: {len(found)}")
            lines.extend(f"  {anomaly}" for anomaly in found[:limit])
            if len(found) > limit:
                lines.append(f"  ... and {len(found) - limit} more")
        return "\n".join(lines)


class HistoryRecorder:
    """Appends operations to a history, numbering them and stamping each with `clock()`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._ops: list[Op] = []

    @property
    def history(self) -> tuple[Op, ...]:
        return tuple(self._ops)

    def record(self, process: str, op_type: OpType, action: Action) -> Op:
        op = Op(len(self._ops), self._clock(), process, op_type, action)
        self._ops.append(op)
        return op

    def invoke(self, process: str, action: Action) -> Op:
        return self.record(process, OpType.INVOKE, action)

    def ok(self, process: str, action: Action) -> Op:
        return self.record(process, OpType.OK, action)

    def fail(self, process: str, action: Action) -> Op:
        return self.record(process, OpType.FAIL, action)

    def info(self, process: str, action: Action) -> Op:
        return self.record(process, OpType.INFO, action)


@dataclass
class _Partition:
    """What a history says about one partition."""

    sent: set[Value] = field(default_factory=set)  # values of every send, whatever its outcome
    acked: dict[Value, tuple[int, int]] = field(default_factory=dict)  # -> (offset, op index)
    failed: dict[Value, int] = field(default_factory=dict)  # -> op index
    at: dict[int, dict[Value, list[int]]] = field(default_factory=dict)  # ok sends and polls
    read: dict[Value, dict[int, list[int]]] = field(default_factory=dict)  # polls only
    log: dict[int, Value] = field(default_factory=dict)  # each read offset's first value read
    final: set[Value] = field(default_factory=set)
    final_high: int = -1  # the highest offset of the final read


def _note(by_key: dict[_K, list[int]], key: _K, index: int) -> None:
    """Append `index` to `by_key[key]` unless it is already its last entry."""
    indexes = by_key.setdefault(key, [])
    if not indexes or indexes[-1] != index:
        indexes.append(index)


def _collect(ops: list[Op], final_reader: str) -> dict[Partition, _Partition]:
    """What `ops` say about each partition; ValueError for an ok send without an offset."""
    parts: defaultdict[Partition, _Partition] = defaultdict(_Partition)
    for op in ops:
        action = op.action
        if isinstance(action, Send):
            part = parts[action.partition]
            part.sent.add(action.value)
            if op.type is OpType.OK:
                if action.offset is None:
                    raise ValueError(f"op {op.index}: an ok send must carry its offset")
                part.acked[action.value] = (action.offset, op.index)
                _note(part.at.setdefault(action.offset, {}), action.value, op.index)
            elif op.type is OpType.FAIL:
                part.failed[action.value] = op.index
        elif isinstance(action, Poll) and op.type is OpType.OK:
            part = parts[action.partition]
            for offset, value in action.records:
                _note(part.at.setdefault(offset, {}), value, op.index)
                _note(part.read.setdefault(value, {}), offset, op.index)
                part.log.setdefault(offset, value)
                if op.process == final_reader:
                    part.final.add(value)
                    part.final_high = max(part.final_high, offset)
    return parts


def _name(partition: Partition) -> str:
    return f"{partition[0]}-{partition[1]}"


def _indexes(groups: Iterable[Iterable[int]]) -> tuple[int, ...]:
    return tuple(sorted({index for group in groups for index in group}))


def _value_anomalies(tp: Partition, part: _Partition) -> Iterator[Anomaly]:
    """Everything but the consumers' own order: judged from all reads, acks and the final read."""
    for offset, values in sorted(part.at.items()):
        if len(values) > 1:
            held = ", ".join(f"{value!r} (ops {ops})" for value, ops in values.items())
            yield Anomaly(
                INCONSISTENT_OFFSETS,
                tp,
                tuple(values),
                (offset,),
                _indexes(values.values()),
                f"offset {offset} holds {held}",
            )
    for value, at in part.read.items():
        offsets, ops = tuple(sorted(at)), _indexes(at.values())
        if len(at) > 1:
            yield Anomaly(DUPLICATE, tp, (value,), offsets, ops, f"{value!r} at offsets {offsets}")
        if value in part.failed:
            send = part.failed[value]
            yield Anomaly(
                FAILED_WRITE_VISIBLE,
                tp,
                (value,),
                offsets,
                _indexes([(send,), ops]),
                f"{value!r}, whose send (op {send}) failed, read at offsets {offsets}",
            )
        if value not in part.sent:
            yield Anomaly(
                UNEXPECTED,
                tp,
                (value,),
                offsets,
                ops,
                f"{value!r} read, never sent to this partition",
            )
    for value, (offset, send) in part.acked.items():
        at = part.read.get(value, {})
        if not at:
            yield Anomaly(
                UNSEEN,
                tp,
                (value,),
                (offset,),
                (send,),
                f"{value!r} acked at offset {offset}, never read",
            )
        elif offset not in at:
            offsets = tuple(sorted(at))
            yield Anomaly(
                OFFSET_MISMATCH,
                tp,
                (value,),
                (offset, *offsets),
                _indexes([(send,), *at.values()]),
                f"{value!r} acked at offset {offset}, read at offsets {offsets}",
            )
    yield from _lost_writes(tp, part)


def _lost_writes(tp: Partition, part: _Partition) -> Iterator[Anomaly]:
    """Acked or read values missing from a final read that reached them, by lowest offset."""
    lost: list[tuple[int, Value, dict[int, list[int]]]] = []
    for value in dict.fromkeys([*part.acked, *part.read]):
        if value in part.final:
            continue
        at = {offset: list(ops) for offset, ops in part.read.get(value, {}).items()}
        if value in part.acked:
            offset, send = part.acked[value]
            at.setdefault(offset, []).append(send)
        if min(at) <= part.final_high:
            lost.append((min(at), value, at))
    for _, value, at in sorted(lost, key=lambda case: case[0]):
        offsets = tuple(sorted(at))
        yield Anomaly(
            LOST_WRITE,
            tp,
            (value,),
            offsets,
            _indexes(at.values()),
            f"{value!r}, acked or read at offsets {offsets}, missing from the final read,"
            f" which reached offset {part.final_high}",
        )


def _consumer_anomalies(ops: list[Op], parts: Mapping[Partition, _Partition]) -> Iterator[Anomaly]:
    """Each consumer's reads of a partition, from one position to the next (module docstring)."""
    known = {tp: sorted(part.log) for tp, part in parts.items()}
    # process -> partition -> (the next offset expected, the index of the op that set it)
    positions: defaultdict[str, dict[Partition, tuple[int, int]]] = defaultdict(dict)
    for op in ops:
        if op.type in (OpType.INVOKE, OpType.FAIL):
            continue
        action, mine = op.action, positions[op.process]
        if isinstance(action, Assign):
            for tp in mine.keys() - set(action.partitions):
                del mine[tp]
        elif isinstance(action, Seek):
            if action.offset is None or op.type is OpType.INFO:
                mine.pop(action.partition, None)
            else:
                mine[action.partition] = (action.offset, op.index)
        elif isinstance(action, Poll):
            tp = action.partition
            if op.type is OpType.INFO:
                mine.pop(tp, None)
                continue
            for offset, value in action.records:
                if tp in mine:
                    yield from _step(op, tp, mine[tp], offset, value, known[tp], parts[tp])
                mine[tp] = (offset + 1, op.index)


def _step(
    op: Op,
    tp: Partition,
    position: tuple[int, int],
    offset: int,
    value: Value,
    known: list[int],
    part: _Partition,
) -> Iterator[Anomaly]:
    """The anomaly, if any, of `op` reading `offset` from `position` (expected offset, op)."""
    expected, since = position
    ops = tuple(dict.fromkeys((since, op.index)))
    if offset < expected:
        yield Anomaly(
            NONMONOTONIC_POLL,
            tp,
            (value,),
            (expected, offset),
            ops,
            f"read offset {offset} ({value!r}) at position {expected} (set by op {since})",
            op.process,
        )
        return
    skipped = tuple(known[bisect.bisect_left(known, expected) : bisect.bisect_left(known, offset)])
    if skipped:
        values = tuple(part.log[skip] for skip in skipped)
        yield Anomaly(
            POLL_SKIP,
            tp,
            values,
            skipped,
            ops,
            f"jumped from position {expected} (set by op {since}) to offset {offset},"
            f" over offsets {skipped} holding {values}",
            op.process,
        )


def check(history: Iterable[Op], final_reader: str = FINAL_READER) -> CheckResult:
    """Every anomaly of `history` (module docstring), `final_reader`'s polls being the final read.

    Raises ValueError for an ok send without an offset.
    """
    ops = list(history)
    parts = _collect(ops, final_reader)
    found: dict[str, list[Anomaly]] = defaultdict(list)
    for tp, part in parts.items():
        for anomaly in _value_anomalies(tp, part):
            found[anomaly.kind].append(anomaly)
    for anomaly in _consumer_anomalies(ops, parts):
        found[anomaly.kind].append(anomaly)
    outcomes = [op.type for op in ops if isinstance(op.action, Send)]
    counts = Counts(
        acked=outcomes.count(OpType.OK),
        failed=outcomes.count(OpType.FAIL),
        indeterminate=outcomes.count(OpType.INFO),
        read=sum(len(part.read) for part in parts.values()),
        final=sum(len(part.final) for part in parts.values()),
        lost=len(found[LOST_WRITE]),
        unseen=len(found[UNSEEN]),
    )
    return CheckResult({kind: found[kind] for kind in KINDS if found[kind]}, counts)
