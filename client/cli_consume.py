"""`tidelog consume TOPIC`: print records, by template or as JSON lines.

Every partition of the topic is read (or those given with --partition), by manual
assignment, from the position --offset names in each partition:

    start     the log start offset          end       the end offset (the high watermark)
    N         offset N (clamped to the partition's start and end)
    -N        N records before the end      @T        the first record with timestamp >= T ms
                                                      (the end if there is none)

Without --follow the command stops once every partition has reached the end offset it had
when the command started (so it always terminates); with --follow it waits for new
records until --count records were printed or SIGINT/SIGTERM (exit 0 either way).
Records go to stdout, flushed after each batch so a pipe sees them at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import BinaryIO, Literal

import trio

from tidelog.client.admin import Admin
from tidelog.client.cli_common import (
    EXIT_OK,
    CliError,
    Interruption,
    client_settings,
    command,
    non_negative_int,
    positive_int,
    topic_missing,
)
from tidelog.client.cli_format import (
    DEFAULT_TEMPLATE,
    RecordFormatter,
    compile_template,
    record_json,
)
from tidelog.client.cli_topics import admin
from tidelog.client.consumer import Consumer
from tidelog.client.errors import UnknownTopicOrPartitionError
from tidelog.client.structs import ConsumerRecord, TopicPartition

POLL_MS = 200
"""How long one wait for records lasts before the end-of-range checks run again."""
MAX_RECORDS_PER_POLL = 500
_OFFSET_PATTERN = re.compile(r"([-@]?)([0-9]+)")
OffsetKind = Literal["start", "end", "offset", "before_end", "timestamp"]
_KIND_BY_PREFIX: dict[str, OffsetKind] = {"": "offset", "-": "before_end", "@": "timestamp"}

EXAMPLES = """\
examples:
  tidelog consume events                       # everything now in the topic, then exit
  tidelog consume events --offset -10          # the last 10 records of each partition
  tidelog consume events --offset @1700000000000 --count 100
  tidelog consume events --offset end --follow # wait for new records until Ctrl-C
  tidelog consume events --format '%p:%o %k=%v %h\\n'
  tidelog consume events --json | jq -r .value
"""


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    """Where to start in each partition (see the module docstring)."""

    kind: OffsetKind
    value: int = 0


def parse_offset(text: str) -> OffsetSpec:
    """`start`, `end`, `N`, `-N` or `@T`, as an argparse type."""
    if text in ("start", "beginning", "earliest"):
        return OffsetSpec("start")
    if text in ("end", "latest"):
        return OffsetSpec("end")
    match = _OFFSET_PATTERN.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected start, end, N, -N or @TIMESTAMP_MS, got {text!r}"
        )
    prefix, number = match.groups()
    return OffsetSpec(_KIND_BY_PREFIX[prefix], int(number))


def start_offset(spec: OffsetSpec, log_start: int, log_end: int, by_timestamp: int) -> int:
    """The offset to start a partition at. `by_timestamp` is ListOffsets' answer for
    `spec.value` when `spec` is a timestamp (-1: no record that late)."""
    if spec.kind == "start":
        return log_start
    if spec.kind == "end":
        return log_end
    if spec.kind == "offset":
        return min(max(spec.value, log_start), log_end)
    if spec.kind == "before_end":
        return max(log_end - spec.value, log_start)
    return log_end if by_timestamp < 0 else min(max(by_timestamp, log_start), log_end)


def template(text: str) -> RecordFormatter:
    try:
        return compile_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_consume_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    consume = subparsers.add_parser(
        "consume",
        parents=[common],
        help="print records of a topic",
        description=(__doc__ or "").split("\n\n", 1)[1],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    consume.add_argument("topic", help="topic to read")
    consume.add_argument(
        "-o",
        "--offset",
        type=parse_offset,
        default=OffsetSpec("start"),
        metavar="start|end|N|-N|@TIMESTAMP_MS",
        help="where to start in each partition (default start)",
    )
    consume.add_argument(
        "-p",
        "--partition",
        dest="partitions",
        type=non_negative_int,
        action="append",
        metavar="P",
        help="read only this partition (repeatable; default all)",
    )
    consume.add_argument(
        "-c", "--count", type=positive_int, metavar="N", help="stop after N records"
    )
    consume.add_argument(
        "--follow", action="store_true", help="keep waiting for new records (until Ctrl-C)"
    )
    output = consume.add_mutually_exclusive_group()
    output.add_argument(
        "-f",
        "--format",
        dest="formatter",
        type=template,
        default=DEFAULT_TEMPLATE,
        metavar="TEMPLATE",
        help="kcat-style template: %%t topic, %%p partition, %%o offset, %%k key, %%v value, "
        "%%T timestamp ms, %%h headers, %%K/%%S key/value length, \\n newline "
        f"(default '{DEFAULT_TEMPLATE.replace('%', '%%')}')",
    )
    output.add_argument(
        "--json",
        dest="formatter",
        action="store_const",
        const=record_json,
        help="one JSON object per record and line",
    )
    consume.set_defaults(run=command(_consume))


async def _consume(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        partitions = await _partitions(client, args.topic, args.partitions)
        starts, ends = await _positions(client, partitions, args.offset)
    reader = RecordReader(
        starts,
        stops=None if args.follow else ends,
        count=args.count,
        formatter=args.formatter,
        out=sys.stdout.buffer,
        stall_timeout_s=args.timeout_ms / 1000,
    )
    async with Consumer(**client_settings(args), auto_offset_reset="earliest") as consumer:
        with interruption.soft_scope():
            await reader.run(consumer)
    return EXIT_OK


async def _partitions(
    client: Admin, topic: str, selected: list[int] | None
) -> list[TopicPartition]:
    try:
        info = (await client.describe_topics([topic]))[topic]
    except UnknownTopicOrPartitionError:
        raise topic_missing(topic) from None
    indexes = sorted(info.partitions)
    for index in selected or ():
        if index not in info.partitions:
            raise CliError(f"topic {topic!r} has no partition {index} (it has {len(indexes)})")
    return [TopicPartition(topic, index) for index in dict.fromkeys(selected or indexes)]


async def _positions(
    client: Admin, partitions: list[TopicPartition], spec: OffsetSpec
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Start offsets per `spec`, and the end offsets as of now."""
    earliest = await client.list_offsets({tp: "earliest" for tp in partitions})
    latest = await client.list_offsets({tp: "latest" for tp in partitions})
    by_timestamp = (
        await client.list_offsets({tp: spec.value for tp in partitions})
        if spec.kind == "timestamp"
        else {}
    )
    starts = {
        tp: start_offset(
            spec,
            earliest[tp].offset,
            latest[tp].offset,
            by_timestamp[tp].offset if tp in by_timestamp else -1,
        )
        for tp in partitions
    }
    return starts, {tp: latest[tp].offset for tp in partitions}


class RecordReader:
    """Reads from `starts` until `stops` (exclusive; None, for `--follow`: forever) or until
    `count` records were written. A partition is done once its position
    reaches its stop offset; the position also moves past offsets that hold no record
    (control batches, compacted gaps), which is why positions, not record offsets, decide.
    If no partition moves for `stall_timeout_s` while records are still due, that is a
    `CliError` rather than an endless wait.
    """

    def __init__(
        self,
        starts: dict[TopicPartition, int],
        *,
        stops: dict[TopicPartition, int] | None,
        count: int | None,
        formatter: RecordFormatter,
        out: BinaryIO,
        stall_timeout_s: float,
    ) -> None:
        self.starts = starts
        self.stops = stops
        self.remaining = count
        self.formatter = formatter
        self.out = out
        self.stall_timeout_s = stall_timeout_s

    async def run(self, consumer: Consumer) -> None:
        stops = self.stops
        active = [tp for tp in self.starts if stops is None or self.starts[tp] < stops[tp]]
        if not active:
            return
        consumer.assign(active)
        for tp in active:
            consumer.seek(tp, self.starts[tp])
        positions = dict(self.starts)
        moved_at = trio.current_time()
        while active and (self.remaining is None or self.remaining > 0):
            limit = MAX_RECORDS_PER_POLL
            if self.remaining is not None:
                limit = min(limit, self.remaining)
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=limit)
            self._write(batch)
            if stops is None:
                continue
            moved = bool(batch)
            for tp in list(active):
                position = await consumer.position(tp)
                if position != positions[tp]:
                    positions[tp] = position
                    moved = True
                if position >= stops[tp]:
                    active.remove(tp)
            if moved:
                moved_at = trio.current_time()
                consumer.assign(active)
            elif trio.current_time() - moved_at >= self.stall_timeout_s:
                behind = ", ".join(f"{tp.partition} at {positions[tp]}" for tp in active)
                raise CliError(
                    f"no progress on {active[0].topic!r} within "
                    f"{self.stall_timeout_s * 1000:.0f} ms (partitions {behind})"
                )

    def _write(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        written = 0
        for tp, records in batch.items():
            stop = None if self.stops is None else self.stops[tp]
            for record in records:
                if stop is not None and record.offset >= stop:
                    break
                self.out.write(self.formatter(record))
                written += 1
        if written:
            self.out.flush()
            if self.remaining is not None:
                self.remaining -= written
