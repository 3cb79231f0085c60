"""`tidelog cluster ...`: the cluster as a whole.

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
cluster elect-leaders
                 [{"topic", "partition", "elected", "error"}]
                 ("elected" false and "error" null: no election was needed; a
                 partition whose election failed exits 1)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidelog.client.admin import Admin, ClusterDescription
from tidelog.client.admin_cluster import ElectionResult, QuorumDescription, ReplicaState
from tidelog.client.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Interruption,
    add_output_format,
    command,
    command_group,
    note,
    print_json,
)
from tidelog.client.cli_topics import admin
from tidelog.client.errors import KafkaError
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.structs import TopicPartition

EXIT_FAILED_ELECTION = 1

CLUSTER_EXAMPLES = """\
examples:
  tidelog cluster info
  tidelog -b broker1:9092,broker2:9092 cluster info --format json
  tidelog cluster elect-leaders --all-topic-partitions
  tidelog cluster elect-leaders --type unclean --topic events --partition 0
"""


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

    elect = action(
        "elect-leaders",
        "move leadership to preferred replicas, or elect leaders for offline partitions",
        "tidelog cluster elect-leaders --all-topic-partitions",
        description="Run leader elections at the active controller (ElectLeaders). "
        "'preferred' gives each partition's leadership back to its first replica when that "
        "replica is alive and in sync; 'unclean' elects a leader for a partition that has "
        "none, from outside the ISR if no in-sync replica is alive (records it lacks are "
        "lost). Exits 1 if an election could not be held.",
    )
    elect.add_argument(
        "--type",
        dest="election_type",
        choices=("preferred", "unclean"),
        default="preferred",
        help="the kind of election (default: preferred)",
    )
    elect.add_argument("--topic", help="the topic whose partitions to elect leaders for")
    elect.add_argument(
        "--partition", type=int, action="append", help="a partition of --topic (repeatable)"
    )
    elect.add_argument(
        "--all-topic-partitions",
        action="store_true",
        help="every partition of every topic (only those that need an election are shown)",
    )
    add_output_format(elect)
    elect.set_defaults(run=command(_elect_leaders))


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


async def _elect_leaders(args: argparse.Namespace, interruption: Interruption) -> int:
    if args.all_topic_partitions == (args.topic is not None):
        raise CliError("give either --topic or --all-topic-partitions", exit_status=EXIT_USAGE)
    if args.partition and args.topic is None:
        raise CliError("--partition needs --topic", exit_status=EXIT_USAGE)
    async with admin(args) as client:
        partitions: list[TopicPartition] | None = None
        if args.topic is not None:
            indexes = args.partition
            if not indexes:
                topic = (await client.describe_topics([args.topic]))[args.topic]
                indexes = sorted(topic.partitions)
            partitions = [TopicPartition(args.topic, i) for i in indexes]
        results = await client.elect_leaders(args.election_type, partitions)
    documents = [_election_document(result) for result in results]
    if args.format == "json":
        print_json(documents)
    else:
        for document in documents:
            name = f"{document['topic']}-{document['partition']}"
            if document["elected"]:
                print(f"{name}: elected a leader ({args.election_type})")
            elif document["error"] is None:
                print(f"{name}: no election needed")
            else:
                print(f"{name}: {document['error']}")
        if not documents:
            note("no partition needed an election")
    failed = any(d["error"] is not None for d in documents)
    return EXIT_FAILED_ELECTION if failed else EXIT_OK


def _election_document(result: ElectionResult) -> dict[str, Any]:
    error = result.error
    not_needed = error is not None and getattr(error, "code", None) == ErrorCode.ELECTION_NOT_NEEDED
    return {
        "topic": result.partition.topic,
        "partition": result.partition.partition,
        "elected": error is None,
        "error": None if error is None or not_needed else str(error),
    }
