"""`tidelog topic ...`: the topic admin commands (`cli_cluster` has `tidelog cluster`).

Listings and descriptions go to stdout (`--format text` for people, `--format json` for
programs); confirmations of changes go to stderr.

JSON shapes:

    topic list       ["name", ...]
    topic describe   [{"name", "topic_id", "internal", "partition_count",
                       "replication_factor",
                       "partitions": [{"partition", "leader", "leader_epoch", "replicas",
                                       "isr", "offline_replicas", "under_replicated",
                                       "offline"}],
                       "configs": {"name": {"value", "source", "default", "read_only",
                                            "sensitive"}}}]
                     ("configs" is null when the broker does not serve DescribeConfigs)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidelog.client.admin import (
    Admin,
    ConfigEntry,
    ConfigResource,
)
from tidelog.client.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Interruption,
    add_output_format,
    assignment,
    client_settings,
    command,
    command_group,
    note,
    positive_int,
    print_json,
    topic_missing,
)
from tidelog.client.errors import (
    IncompatibleBrokerError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.metadata import TopicInfo
from tidelog.client.protocol.configs import ConfigResourceType
from tidelog.client.structs import NewTopic

TOPIC_EXAMPLES = """\
examples:
  tidelog topic create events --partitions 3 --config retention.ms=86400000
  tidelog topic list
  tidelog topic describe events --format json | jq '.[0].partitions'
  tidelog topic alter-config events --set retention.ms=3600000 --delete cleanup.policy
  tidelog topic delete events
"""


def admin(args: argparse.Namespace) -> Admin:
    return Admin(**client_settings(args), default_api_timeout_ms=args.timeout_ms)


# --- parsers -----------------------------------------------------------------------------


def add_topic_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    action = command_group(
        subparsers,
        common,
        "topic",
        help_text="create, list, describe, reconfigure and delete topics",
        description="Manage topics.",
        examples=TOPIC_EXAMPLES,
    )

    create = action(
        "create",
        "create a topic",
        "tidelog topic create events --partitions 3 --replication-factor 1 "
        "--config cleanup.policy=compact",
    )
    create.add_argument("name", help="topic name")
    create.add_argument(
        "-p", "--partitions", type=positive_int, help="partition count (default: the broker's)"
    )
    create.add_argument(
        "-r",
        "--replication-factor",
        type=positive_int,
        help="replicas per partition (default: the broker's)",
    )
    create.add_argument(
        "-c",
        "--config",
        type=assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic config, e.g. retention.ms=60000 (repeatable)",
    )
    create.add_argument(
        "--if-not-exists", action="store_true", help="succeed if the topic already exists"
    )
    create.set_defaults(run=command(_create))

    listing = action("list", "list topic names", "tidelog topic list --format json")
    listing.add_argument("--internal", action="store_true", help="include internal topics")
    add_output_format(listing)
    listing.set_defaults(run=command(_list))

    describe = action(
        "describe",
        "show partitions, leaders, replicas, in-sync replicas and configs",
        "tidelog topic describe events orders --format json",
    )
    describe.add_argument("names", nargs="*", metavar="NAME", help="topics (default: all)")
    describe.add_argument(
        "--under-replicated-partitions",
        action="store_true",
        help="only partitions with fewer in-sync replicas than replicas",
    )
    describe.add_argument(
        "--unavailable-partitions",
        action="store_true",
        help="only partitions without a leader (offline)",
    )
    add_output_format(describe)
    describe.set_defaults(run=command(_describe))

    delete = action("delete", "delete topics", "tidelog topic delete events orders")
    delete.add_argument("names", nargs="+", metavar="NAME", help="topics to delete")
    delete.add_argument("--if-exists", action="store_true", help="skip topics that do not exist")
    delete.set_defaults(run=command(_delete))

    alter = action(
        "alter-config",
        "set or delete topic configs (others stay as they are)",
        "tidelog topic alter-config events --set retention.ms=3600000 --delete cleanup.policy",
    )
    alter.add_argument("name", help="topic name")
    alter.add_argument(
        "--set",
        dest="set_configs",
        type=assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config (repeatable)",
    )
    alter.add_argument(
        "--delete",
        dest="delete_configs",
        action="append",
        default=[],
        metavar="KEY",
        help="delete a config, restoring the broker default (repeatable)",
    )
    alter.set_defaults(run=command(_alter_config))


# --- topic commands ----------------------------------------------------------------------


async def _create(args: argparse.Namespace, interruption: Interruption) -> int:
    topic = NewTopic(
        args.name,
        num_partitions=args.partitions or -1,
        replication_factor=args.replication_factor or -1,
        configs=dict(args.config),
    )
    async with admin(args) as client:
        try:
            await client.create_topics([topic])
        except TopicAlreadyExistsError:
            if not args.if_not_exists:
                raise CliError(f"topic {args.name!r} already exists") from None
            note(f"topic {args.name!r} already exists")
            return EXIT_OK
    note(f"created topic {args.name!r}")
    return EXIT_OK


async def _list(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        names = await client.list_topics(include_internal=args.internal)
    if args.format == "json":
        print_json(names)
    else:
        sys.stdout.writelines(f"{name}\n" for name in names)
    return EXIT_OK


async def _describe(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        if args.names:
            topics: dict[str, TopicInfo] = {}
            for name in dict.fromkeys(args.names):
                try:
                    topics.update(await client.describe_topics([name]))
                except UnknownTopicOrPartitionError:
                    raise topic_missing(name) from None
        else:
            described = await client.describe_topics()
            topics = {name: described[name] for name in sorted(described)}
        configs = await _topic_configs(client, list(topics))
    documents = [_topic_document(info, configs) for info in topics.values()]
    if args.under_replicated_partitions or args.unavailable_partitions:
        documents = _only_troubled(
            documents,
            under_replicated=args.under_replicated_partitions,
            offline=args.unavailable_partitions,
        )
    if args.format == "json":
        print_json(documents)
    else:
        sys.stdout.writelines(_topic_text(document) for document in documents)
    return EXIT_OK


async def _topic_configs(
    client: Admin, names: list[str]
) -> dict[str, dict[str, ConfigEntry]] | None:
    """Each topic's configs; None (with a note) when the broker cannot describe configs."""
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    try:
        described = await client.describe_configs(resources)
    except IncompatibleBrokerError as exc:
        note(f"configs not shown: {exc}")
        return None
    return {resource.name: entries for resource, entries in described.items()}


def _topic_document(
    info: TopicInfo, configs: dict[str, dict[str, ConfigEntry]] | None
) -> dict[str, Any]:
    partitions = [info.partitions[index] for index in sorted(info.partitions)]
    entries = None if configs is None else configs.get(info.name, {})
    return {
        "name": info.name,
        "topic_id": str(info.topic_id),
        "internal": info.is_internal,
        "partition_count": len(partitions),
        "replication_factor": max((len(p.replicas) for p in partitions), default=0),
        "partitions": [
            {
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "offline_replicas": list(p.offline_replicas),
                "under_replicated": len(p.isr) < len(p.replicas),
                "offline": p.leader < 0,
            }
            for p in partitions
        ],
        "configs": None
        if entries is None
        else {
            name: {
                "value": entry.value,
                "source": entry.source.name,
                "default": entry.is_default,
                "read_only": entry.read_only,
                "sensitive": entry.is_sensitive,
            }
            for name, entry in sorted(entries.items())
        },
    }


def _only_troubled(
    documents: list[dict[str, Any]], *, under_replicated: bool, offline: bool
) -> list[dict[str, Any]]:
    """The topics with partitions of the asked kinds, with only those partitions (as
    kafka-topics' --under-replicated-partitions / --unavailable-partitions)."""
    kept = []
    for document in documents:
        partitions = [
            p
            for p in document["partitions"]
            if (under_replicated and p["under_replicated"]) or (offline and p["offline"])
        ]
        if partitions:
            kept.append({**document, "partitions": partitions})
    return kept


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids)) or "-"


def _topic_text(document: dict[str, Any]) -> str:
    """kafka-topics' layout: a topic line, then one line per partition."""
    fields = [
        f"Topic: {document['name']}",
        f"TopicId: {document['topic_id']}",
        f"PartitionCount: {document['partition_count']}",
        f"ReplicationFactor: {document['replication_factor']}",
    ]
    if document["configs"] is not None:
        overrides = ",".join(
            f"{name}={'<sensitive>' if entry['sensitive'] else entry['value']}"
            for name, entry in document["configs"].items()
            if not entry["default"]
        )
        fields.append(f"Configs: {overrides}")
    lines = ["\t".join(fields)]
    for p in document["partitions"]:
        leader = "none" if p["leader"] < 0 else str(p["leader"])
        partition_fields = [
            f"\tTopic: {document['name']}",
            f"Partition: {p['partition']}",
            f"Leader: {leader}",
            f"LeaderEpoch: {p['leader_epoch']}",
            f"Replicas: {_ids(p['replicas'])}",
            f"Isr: {_ids(p['isr'])}",
        ]
        if p["offline_replicas"]:
            partition_fields.append(f"Offline: {_ids(p['offline_replicas'])}")
        if p["offline"]:
            partition_fields.append("OFFLINE")
        elif p["under_replicated"]:
            partition_fields.append("UNDER-REPLICATED")
        lines.append("\t".join(partition_fields))
    return "\n".join(lines) + "\n"


async def _delete(args: argparse.Namespace, interruption: Interruption) -> int:
    # One topic per request, so that each outcome is reported against its name.
    async with admin(args) as client:
        for name in dict.fromkeys(args.names):
            try:
                await client.delete_topics([name])
            except UnknownTopicOrPartitionError:
                if not args.if_exists:
                    raise topic_missing(name) from None
                note(f"topic {name!r} does not exist")
                continue
            note(f"deleted topic {name!r}")
    return EXIT_OK


async def _alter_config(args: argparse.Namespace, interruption: Interruption) -> int:
    changes: dict[str, str | None] = dict(args.set_configs)
    for key in args.delete_configs:
        if key in changes:
            raise CliError(f"config {key!r} is both set and deleted", exit_status=EXIT_USAGE)
        changes[key] = None
    if not changes:
        raise CliError(
            "nothing to change: give --set KEY=VALUE or --delete KEY", exit_status=EXIT_USAGE
        )
    resource = ConfigResource(ConfigResourceType.TOPIC, args.name)
    async with admin(args) as client:
        try:
            await client.alter_configs({resource: changes})
        except UnknownTopicOrPartitionError:
            raise topic_missing(args.name) from None
    note(f"altered {len(changes)} config(s) of topic {args.name!r}")
    return EXIT_OK
