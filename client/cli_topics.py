"""`tidelog topic ...` and `tidelog cluster info`: the admin commands.

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
    cluster info     {"cluster_id", "controller_id",
                      "brokers": [{"node_id", "host", "port", "rack", "fenced"}],
                      "quorum": {"leader_id", "leader_epoch", "high_watermark",
                                 "voters": [{"replica_id", "log_end_offset", "lag",
                                             "last_fetch_timestamp",
                                             "last_caught_up_timestamp"}],
                                 "observers": [...same...]}}
                     ("quorum" is null when the broker does not serve DescribeQuorum or
                     it failed for good; "lag" is high_watermark - log_end_offset, at
                     least 0; timestamps are ms on the quorum leader's clock, -1 when
                     unknown)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidelog.client.admin import (
    Admin,
    ClusterDescription,
    ConfigEntry,
    ConfigResource,
    QuorumDescription,
    ReplicaState,
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
    KafkaError,
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

CLUSTER_EXAMPLES = """\
examples:
  tidelog cluster info
  tidelog -b broker1:9092,broker2:9092 cluster info --format json
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


def add_cluster_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    action = command_group(
        subparsers,
        common,
        "cluster",
        help_text="show the cluster id, controller, brokers and metadata quorum",
        description="Inspect the cluster.",
        examples=CLUSTER_EXAMPLES,
    )
    info = action(
        "info",
        "cluster id, controller, brokers (fenced ones marked) and metadata quorum",
        "tidelog cluster info --format json",
        description="Show the cluster id, the controller, the brokers (fenced ones marked "
        "'fenced') and the metadata quorum: its leader, epoch and high watermark, and each "
        "voter's and observer's log end offset and lag behind the high watermark. The "
        "quorum is left out, with a note, when the broker cannot describe it.",
    )
    add_output_format(info)
    info.set_defaults(run=command(_cluster_info))


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


# --- cluster -----------------------------------------------------------------------------


async def _cluster_info(args: argparse.Namespace, interruption: Interruption) -> int:
    async with admin(args) as client:
        description = await client.describe_cluster()
        quorum = await _quorum(client)
    document = _cluster_document(description, quorum)
    if args.format == "json":
        print_json(document)
        return EXIT_OK
    # The quorum's leader is the active controller; a KRaft broker's ControllerId is only
    # some live broker that forwards to it.
    controller = description.controller_id
    if quorum is not None and quorum.leader_id >= 0:
        controller = quorum.leader_id
    lines = [
        f"Cluster ID: {description.cluster_id or '-'}",
        f"Controller: {controller if controller >= 0 else 'none'}",
        f"Brokers: {len(document['brokers'])}",
    ]
    for broker in document["brokers"]:
        rack = f"  rack={broker['rack']}" if broker["rack"] else ""
        role = "  (controller)" if broker["node_id"] == controller else ""
        fenced = "  fenced" if broker["fenced"] else ""
        lines.append(
            f"  {broker['node_id']}  {broker['host']}:{broker['port']}{rack}{role}{fenced}"
        )
    if quorum is not None:
        leader = quorum.leader_id if quorum.leader_id >= 0 else "none"
        lines.append(
            f"Quorum: leader {leader}, epoch {quorum.leader_epoch}, "
            f"high watermark {quorum.high_watermark}"
        )
        for kind in ("voter", "observer"):
            for replica in document["quorum"][f"{kind}s"]:
                lines.append(
                    f"  {kind} {replica['replica_id']}  log end {replica['log_end_offset']}"
                    f"  lag {replica['lag']}"
                )
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


async def _quorum(client: Admin) -> QuorumDescription | None:
    """The metadata quorum; None (with a note) when the broker does not serve
    DescribeQuorum or it failed for good. Retriable failures that outlast the timeout
    fail the command."""
    try:
        return await client.describe_quorum()
    except KafkaError as exc:
        if exc.retriable:
            raise
        note(f"quorum not shown: {exc}")
        return None


def _cluster_document(
    description: ClusterDescription, quorum: QuorumDescription | None
) -> dict[str, Any]:
    def replica(state: ReplicaState, q: QuorumDescription) -> dict[str, Any]:
        return {
            "replica_id": state.replica_id,
            "log_end_offset": state.log_end_offset,
            "lag": q.lag(state),
            "last_fetch_timestamp": state.last_fetch_timestamp,
            "last_caught_up_timestamp": state.last_caught_up_timestamp,
        }

    return {
        "cluster_id": description.cluster_id,
        "controller_id": description.controller_id,
        "brokers": [
            {
                "node_id": b.node_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "fenced": b.fenced,
            }
            for b in sorted(description.brokers, key=lambda b: b.node_id)
        ],
        "quorum": None
        if quorum is None
        else {
            "leader_id": quorum.leader_id,
            "leader_epoch": quorum.leader_epoch,
            "high_watermark": quorum.high_watermark,
            "voters": [replica(v, quorum) for v in quorum.voters],
            "observers": [replica(o, quorum) for o in quorum.observers],
        },
    }
