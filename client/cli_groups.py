"""`tidelog group ...`: consumer groups: list, describe (offsets and lag), reset offsets,
delete.

`group describe` shows one row per partition that the group has a committed offset for or
that a member is assigned, with LAG = LOG-END-OFFSET - CURRENT-OFFSET ("-" where a value
is unknown: no commit yet, or a topic that no longer exists), and one row for each member
without partitions. Members and their assignments are known only while the group is
Stable; an Empty group has committed offsets but no members.

`group reset-offsets GROUP`: see `RESET_DESCRIPTION`.

Listings and plans go to stdout (`--format text` for people, `--format json` for
programs); notes and confirmations go to stderr.

JSON shapes:

    group list           [{"group_id", "state", "protocol_type"}]
    group describe       [{"group_id", "state", "protocol_type", "protocol",
                           "coordinator": {"node_id", "host", "port"},
                           "members": [{"member_id", "group_instance_id", "client_id",
                                        "host", "assignment": [{"topic", "partition"}]}],
                           "partitions": [{"topic", "partition", "current_offset",
                                           "log_end_offset", "lag", "member_id", "host",
                                           "client_id"}]}]
                         (a member without partitions has a row with topic and partition
                          null; unknown values are null)
    group reset-offsets  {"group_id", "executed",
                          "partitions": [{"topic", "partition", "current_offset",
                                          "new_offset"}]}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tidelog.client.admin import Admin
from tidelog.client.admin_groups import GroupDescription, MemberDescription
from tidelog.client.cli_common import (
    EXIT_OK,
    CliError,
    Interruption,
    add_output_format,
    command,
    command_group,
    note,
    print_json,
    topic_missing,
)
from tidelog.client.cli_topics import admin
from tidelog.client.errors import (
    GroupIdNotFoundError,
    NonEmptyGroupError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.structs import OffsetAndMetadata, TopicPartition

GROUP_STATES = ("Empty", "Stable", "PreparingRebalance", "CompletingRebalance", "Dead")
DESCRIBE_HEADERS = (
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
)
_ROW_KEYS = (
    "topic",
    "partition",
    "current_offset",
    "log_end_offset",
    "lag",
    "member_id",
    "host",
    "client_id",
)
"""The JSON keys of a describe row, in DESCRIBE_HEADERS' order after GROUP."""
PLAN_HEADERS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EXAMPLES = """\
examples:
  tidelog group list
  tidelog group describe readers
  tidelog group describe readers --format json | jq '.[0].partitions[] | .lag'
  tidelog group reset-offsets readers --to-earliest                # dry run: the plan
  tidelog group reset-offsets readers --topic events --to-latest --execute
  tidelog group reset-offsets readers --topic events:0,1 --shift-by -100 --execute
  tidelog group reset-offsets readers --to-datetime 2024-05-01T12:00:00Z --execute
  tidelog group delete readers
"""

RESET_DESCRIPTION = """\
Compute new committed offsets for the group's partitions (every partition it has an offset
for, or those of --topic) and print them; only with --execute store them, which the
coordinator allows only while the group has no members. Where each partition goes:

  --to-earliest      its log start offset
  --to-latest        its end offset (the high watermark)
  --to-offset N      N, clamped to the partition's start and end
  --to-datetime T    the first record at or after T (ISO 8601, e.g. 2024-05-01T12:00:00Z,
                     local time without a zone; or ms since the epoch); the end if none
  --shift-by N       the committed offset plus N (N may be negative), clamped
"""

ResetKind = Literal["earliest", "latest", "offset", "datetime", "shift"]


@dataclass(frozen=True, slots=True)
class ResetSpec:
    """Where `reset-offsets` moves each partition (see the module docstring); `value` is
    the offset, the timestamp in ms or the shift."""

    kind: ResetKind
    value: int = 0


@dataclass(frozen=True, slots=True)
class TopicScope:
    """`--topic T` (every partition: `partitions` None) or `--topic T:P,P`."""

    topic: str
    partitions: tuple[int, ...] | None


# --- option types ------------------------------------------------------------------------


def parse_timestamp_ms(text: str) -> int:
    """ms since the epoch, or an ISO 8601 date/time (local time when it has no zone), as
    an argparse type."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date/time (e.g. 2024-05-01T12:00:00Z) or ms since the "
            f"epoch, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # Kafka's tool reads a time without a zone as local
    timestamp_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if timestamp_ms < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970")
    return timestamp_ms


def parse_topic_scope(text: str) -> TopicScope:
    """`TOPIC` or `TOPIC:P,P,...`, as an argparse type."""
    topic, sep, listed = text.partition(":")
    if not topic:
        raise argparse.ArgumentTypeError(f"expected TOPIC or TOPIC:P,P,..., got {text!r}")
    if not sep:
        return TopicScope(topic, None)
    try:
        partitions = tuple(dict.fromkeys(int(p) for p in listed.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected partition numbers after {topic!r}:, got {listed!r}"
        ) from None
    if any(p < 0 for p in partitions):
        raise argparse.ArgumentTypeError(f"partition numbers cannot be negative: {listed!r}")
    return TopicScope(topic, partitions)


def parse_state(text: str) -> str:
    """A group state name in any letter case, as an argparse type."""
    for state in GROUP_STATES:
        if state.lower() == text.lower():
            return state
    raise argparse.ArgumentTypeError(
        f"unknown group state {text!r} (one of {', '.join(GROUP_STATES)})"
    )


def _signed_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _offset(text: str) -> int:
    value = _signed_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


# --- parsers -----------------------------------------------------------------------------


def add_group_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    action = command_group(
        subparsers,
        common,
        "group",
        help_text="list, describe (lag), reset offsets of and delete consumer groups",
        description="Manage consumer groups.",
        examples=EXAMPLES,
    )

    listing = action("list", "list group ids", "tidelog group list --state Stable")
    listing.add_argument(
        "--state",
        dest="states",
        type=parse_state,
        action="append",
        metavar="STATE",
        help=f"only groups in this state (repeatable; {', '.join(GROUP_STATES)})",
    )
    add_output_format(listing)
    listing.set_defaults(run=command(_list))

    describe = action(
        "describe",
        "show committed offsets, log end offsets, lag and the consumer of each partition",
        "tidelog group describe readers --format json",
    )
    describe.add_argument("groups", nargs="*", metavar="GROUP", help="groups (default: all)")
    add_output_format(describe)
    describe.set_defaults(run=command(_describe))

    reset = action(
        "reset-offsets",
        "move a stopped group's committed offsets (a dry run unless --execute)",
        "tidelog group reset-offsets readers --topic events --to-earliest --execute",
        description=RESET_DESCRIPTION,
    )
    reset.add_argument("group", help="group id")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to-earliest",
        dest="spec",
        action="store_const",
        const=ResetSpec("earliest"),
        help="to each partition's log start offset",
    )
    target.add_argument(
        "--to-latest",
        dest="spec",
        action="store_const",
        const=ResetSpec("latest"),
        help="to each partition's end offset",
    )
    target.add_argument(
        "--to-offset",
        dest="spec",
        type=lambda text: ResetSpec("offset", _offset(text)),
        metavar="N",
        help="to offset N (clamped to each partition's start and end)",
    )
    target.add_argument(
        "--to-datetime",
        dest="spec",
        type=lambda text: ResetSpec("datetime", parse_timestamp_ms(text)),
        metavar="T",
        help="to the first record at or after T: ISO 8601 (local time without a zone) "
        "or ms since the epoch",
    )
    target.add_argument(
        "--shift-by",
        dest="spec",
        type=lambda text: ResetSpec("shift", _signed_int(text)),
        metavar="N",
        help="by N from the committed offset (negative: back), clamped",
    )
    reset.add_argument(
        "--topic",
        dest="topics",
        type=parse_topic_scope,
        action="append",
        metavar="TOPIC[:P,...]",
        help="reset this topic (all partitions, or those listed; repeatable; "
        "default: every partition the group has an offset for)",
    )
    reset.add_argument(
        "--execute", action="store_true", help="store the new offsets (default: only show them)"
    )
    add_output_format(reset)
    reset.set_defaults(run=command(_reset_offsets))

    delete = action(
        "delete", "delete groups and their offsets", "tidelog group delete readers old-readers"
    )
    delete.add_argument("groups", nargs="+", metavar="GROUP", help="groups to delete")
    delete.add_argument("--if-exists", action="store_true", help="skip groups that do not exist")
    delete.set_defaults(run=command(_delete))


# --- output ------------------------------------------------------------------------------


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; None cells print as "-"."""
    cells = [list(headers)] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )


# --- group list --------------------------------------------------------------------------


async def _list(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        listings = await client.list_groups(states=args.states)
    if args.format == "json":
        print_json(
            [
                {"group_id": g.group_id, "state": g.state, "protocol_type": g.protocol_type}
                for g in listings
            ]
        )
    else:
        sys.stdout.writelines(f"{g.group_id}\n" for g in listings)
    return EXIT_OK


# --- group describe ----------------------------------------------------------------------


def group_missing(group_id: str) -> CliError:
    return CliError(f"group {group_id!r} does not exist")


async def _describe_group(client: Admin, group_id: str) -> GroupDescription | None:
    """The group's description; None when it does not exist."""
    try:
        return (await client.describe_groups([group_id]))[group_id]
    except GroupIdNotFoundError:
        return None


async def _existing_partitions(client: Admin) -> set[TopicPartition]:
    topics = await client.describe_topics()
    return {
        TopicPartition(name, index) for name, info in topics.items() for index in info.partitions
    }


async def _describe(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        if args.groups:
            group_ids = list(dict.fromkeys(args.groups))
        else:
            group_ids = [g.group_id for g in await client.list_groups()]
        groups: list[tuple[GroupDescription, dict[TopicPartition, OffsetAndMetadata]]] = []
        for group_id in group_ids:
            description = await _describe_group(client, group_id)
            if description is None:
                if not args.groups:
                    continue  # deleted since it was listed
                raise group_missing(group_id)
            groups.append((description, await client.list_group_offsets(group_id)))
        wanted = {tp for d, offsets in groups for tp in _partitions_of(d, offsets)}
        existing = wanted & await _existing_partitions(client) if wanted else set()
        ends = await client.list_offsets(dict.fromkeys(existing, "latest")) if existing else {}
    log_end_offsets = {tp: answer.offset for tp, answer in ends.items()}
    documents = [
        describe_document(description, offsets, log_end_offsets) for description, offsets in groups
    ]
    for document in documents:
        _describe_notes(document)
    if args.format == "json":
        print_json(documents)
    elif documents:
        rows = [
            [document["group_id"], *(row[h] for h in _ROW_KEYS)]
            for document in documents
            for row in document["partitions"]
        ]
        sys.stdout.write(text_table(DESCRIBE_HEADERS, rows))
    return EXIT_OK


def _partitions_of(
    description: GroupDescription, offsets: Mapping[TopicPartition, OffsetAndMetadata]
) -> set[TopicPartition]:
    return set(offsets) | {tp for m in description.members for tp in m.assignment}


def describe_document(
    description: GroupDescription,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    log_end_offsets: Mapping[TopicPartition, int],
) -> dict[str, Any]:
    """One group as `group describe --format json` shows it (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    for tp in sorted(_partitions_of(description, offsets)):
        committed = offsets.get(tp)
        current = None if committed is None else committed.offset
        end = log_end_offsets.get(tp)
        rows.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "current_offset": current,
                "log_end_offset": end,
                "lag": None if current is None or end is None else end - current,
                **_member_columns(description.owner_of(tp)),
            }
        )
    for member in description.members:
        if not member.assignment:
            rows.append({"topic": None, "partition": None, "current_offset": None,
                         "log_end_offset": None, "lag": None,
                         **_member_columns(member)})  # fmt: skip
    coordinator = description.coordinator
    return {
        "group_id": description.group_id,
        "state": description.state,
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "coordinator": {
            "node_id": coordinator.node_id,
            "host": coordinator.host,
            "port": coordinator.port,
        },
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "host": m.client_host,
                "assignment": [{"topic": t, "partition": p} for t, p in sorted(m.assignment)],
            }
            for m in description.members
        ],
        "partitions": rows,
    }


def _member_columns(member: MemberDescription | None) -> dict[str, str | None]:
    if member is None:
        return {"member_id": None, "host": None, "client_id": None}
    return {
        "member_id": member.member_id,
        "host": member.client_host,
        "client_id": member.client_id,
    }


def _describe_notes(document: dict[str, Any]) -> None:
    group_id, state = document["group_id"], document["state"]
    if not document["members"]:
        if not document["partitions"]:
            note(f"group {group_id!r} has no members and no committed offsets")
        else:
            note(f"group {group_id!r} has no active members")
    elif state != "Stable":
        note(f"group {group_id!r} is rebalancing ({state}): assignments show once it is Stable")
    missing = sorted(
        {r["topic"] for r in document["partitions"] if r["topic"] and r["log_end_offset"] is None}
    )
    if missing:
        gone = ", ".join(missing)
        note(f"group {group_id!r} has offsets of topics that no longer exist: {gone}")


# --- group reset-offsets -----------------------------------------------------------------


def plan_offsets(
    spec: ResetSpec,
    partitions: Iterable[TopicPartition],
    committed: Mapping[TopicPartition, int],
    log_start_offsets: Mapping[TopicPartition, int],
    log_end_offsets: Mapping[TopicPartition, int],
    by_timestamp: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """The new offset of each partition. `by_timestamp` is ListOffsets' answer for the
    `--to-datetime` timestamp (-1: no record that late). Raises `CliError` for `--shift-by`
    on a partition without a committed offset."""
    planned: dict[TopicPartition, int] = {}
    for tp in partitions:
        start, end = log_start_offsets[tp], log_end_offsets[tp]
        if spec.kind == "earliest":
            target = start
        elif spec.kind == "latest":
            target = end
        elif spec.kind == "offset":
            target = spec.value
        elif spec.kind == "datetime":
            target = by_timestamp[tp] if by_timestamp[tp] >= 0 else end
        else:
            if tp not in committed:
                raise CliError(
                    f"cannot shift {tp.topic}:{tp.partition}: it has no committed offset"
                )
            target = committed[tp] + spec.value
        planned[tp] = min(max(target, start), end)
    return planned


async def _reset_scope(
    client: Admin,
    group_id: str,
    scopes: list[TopicScope] | None,
    committed: Mapping[TopicPartition, int],
    exists: bool,
) -> list[TopicPartition]:
    """The partitions `--topic` names, else those the group has offsets for (leaving out,
    with a note, those of topics that no longer exist)."""
    if scopes:
        chosen: dict[TopicPartition, None] = {}
        for scope in scopes:
            try:
                info = (await client.describe_topics([scope.topic]))[scope.topic]
            except UnknownTopicOrPartitionError:
                raise topic_missing(scope.topic) from None
            for index in scope.partitions or sorted(info.partitions):
                if index not in info.partitions:
                    raise CliError(
                        f"topic {scope.topic!r} has no partition {index} "
                        f"(it has {len(info.partitions)})"
                    )
                chosen[TopicPartition(scope.topic, index)] = None
        return list(chosen)
    if not committed:
        if not exists:
            raise group_missing(group_id)
        raise CliError(f"group {group_id!r} has no committed offsets: name topics with --topic")
    existing = await _existing_partitions(client)
    gone = sorted({tp.topic for tp in committed if tp not in existing})
    if gone:
        note(f"skipping offsets of topics that no longer exist: {', '.join(gone)}")
    return sorted(tp for tp in committed if tp in existing)


async def _reset_offsets(args: argparse.Namespace, interruption: Interruption) -> int:
    group_id: str = args.group
    spec: ResetSpec = args.spec
    async with admin(args) as client:
        description = await _describe_group(client, group_id)
        if description is not None and description.is_active:
            active = (
                f"group {group_id!r} is active ({description.state}, "
                f"{len(description.members)} member(s))"
            )
            if args.execute:
                raise CliError(f"{active}: stop its consumers before resetting its offsets")
            note(f"{active}: --execute fails until its consumers stop")
        committed = {tp: c.offset for tp, c in (await client.list_group_offsets(group_id)).items()}
        partitions = await _reset_scope(
            client, group_id, args.topics, committed, description is not None
        )
        planned: dict[TopicPartition, int] = {}
        if partitions:
            starts = await client.list_offsets(dict.fromkeys(partitions, "earliest"))
            ends = await client.list_offsets(dict.fromkeys(partitions, "latest"))
            by_timestamp = (
                await client.list_offsets(dict.fromkeys(partitions, spec.value))
                if spec.kind == "datetime"
                else {}
            )
            planned = plan_offsets(
                spec,
                partitions,
                committed,
                {tp: answer.offset for tp, answer in starts.items()},
                {tp: answer.offset for tp, answer in ends.items()},
                {tp: answer.offset for tp, answer in by_timestamp.items()},
            )
        if spec.kind == "offset" and any(o != spec.value for o in planned.values()):
            note(f"offset {spec.value} is outside some partitions' range: clamped to it")
        if args.execute and planned:
            await client.alter_group_offsets(
                group_id, {tp: OffsetAndMetadata(offset) for tp, offset in planned.items()}
            )
    if args.format == "json":
        print_json(
            {
                "group_id": group_id,
                "executed": bool(args.execute),
                "partitions": [
                    {
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "current_offset": committed.get(tp),
                        "new_offset": offset,
                    }
                    for tp, offset in planned.items()
                ],
            }
        )
    else:
        rows = [
            (group_id, tp.topic, tp.partition, committed.get(tp), offset)
            for tp, offset in planned.items()
        ]
        sys.stdout.write(text_table(PLAN_HEADERS, rows))
    if args.execute:
        note(f"reset the offsets of {len(planned)} partition(s) of group {group_id!r}")
    else:
        note("dry run: no offsets changed (add --execute to store them)")
    return EXIT_OK


# --- group delete ------------------------------------------------------------------------


async def _delete(args: argparse.Namespace, interruption: Interruption) -> int:
    # One group per request, so that each outcome is reported against its name.
    async with admin(args) as client:
        for group_id in dict.fromkeys(args.groups):
            try:
                await client.delete_groups([group_id])
            except GroupIdNotFoundError:
                if not args.if_exists:
                    raise group_missing(group_id) from None
                note(f"group {group_id!r} does not exist")
                continue
            except NonEmptyGroupError:
                raise CliError(
                    f"group {group_id!r} is active: stop its consumers before deleting it"
                ) from None
            note(f"deleted group {group_id!r}")
    return EXIT_OK
