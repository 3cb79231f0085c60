"""The `tidelog` command: server commands here, client commands from `client.cli`.

    tidelog dev [--host 127.0.0.1] [--port 9092] [--data-dir ./tidelog-data] [--nodes N]
    tidelog broker --config broker.toml

`dev` runs one broker with topics auto-created (a quorum of one); with `--nodes N`, a local
cluster of N processes (`broker.dev_cluster`). Both print
`tidelog ready: bootstrap HOST:PORT` on stdout once the broker accepts connections (with
port 0, the port actually bound). SIGINT or SIGTERM shuts down cleanly and exits 0; a second
signal during shutdown cuts it short (exit 1). Configuration and startup errors exit 2 / 1
with one line on stderr.

This module is the one place that knows both sides: `client.cli.add_commands(subparsers)`,
when that module exists, adds the client commands. Every subcommand parser sets
`run=<callable(args) -> int>` as a default; its return value is the exit status. Running a
broker lives in `broker.serve`, imported only by the server commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tidelog.broker.config import BrokerConfig, ConfigError, ListenerConfig, load_config
from tidelog.broker.exit_status import EXIT_USAGE
from tidelog.broker.log_context import LOG_FORMAT, NodeIdFilter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidelog", description="A Kafka-compatible event log broker on trio."
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="broker log level (logs go to stderr)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = subparsers.add_parser(
        "dev", help="run a local broker (or a cluster, --nodes) with auto-created topics"
    )
    dev.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=9092, help="port to bind; 0 picks a free one")
    dev.add_argument("--data-dir", default="./tidelog-data", help="where logs are kept")
    dev.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="run a local cluster of this many processes: node i serves port + 2(i-1) "
        "(its controller one above) and keeps its data in DATA_DIR/node<i>",
    )
    dev.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="partitions of an auto-created topic (num.partitions; default 1)",
    )
    dev.set_defaults(run=_run_dev)

    broker = subparsers.add_parser("broker", help="run a broker from a TOML config file")
    broker.add_argument("--config", required=True, help="path of the TOML config file")
    broker.set_defaults(run=_run_broker_command)

    _add_client_commands(subparsers)
    return parser


def _add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        client_cli = importlib.import_module("tidelog.client.cli")
    except ModuleNotFoundError as exc:
        if exc.name != "tidelog.client.cli":
            raise
        return
    client_cli.add_commands(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(NodeIdFilter())
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, handlers=[handler])
    status: int = args.run(args)
    return status


def _run_dev(args: argparse.Namespace) -> int:
    if args.nodes != 1:
        return _run_dev_cluster(args)
    try:
        config = BrokerConfig(
            listeners=(ListenerConfig(name="PLAINTEXT", host=args.host, port=args.port),),
            data_dir=args.data_dir,
            auto_create_topics_enable=True,
            num_partitions=args.partitions,
            # A development broker serves one developer's consumers: no reason to hold a new
            # group's first rebalance back for more members (Kafka's advice for dev and tests).
            group_initial_rebalance_delay_ms=0,
        )
    except ConfigError as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run_broker(config)


def _run_dev_cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 9:
        print("tidelog: --nodes must be between 1 and 9", file=sys.stderr)
        return EXIT_USAGE
    if args.port == 0:
        print("tidelog: --nodes needs a fixed --port (the nodes' ports follow it)", file=sys.stderr)
        return EXIT_USAGE
    if not 1 <= args.port <= 65535 - 2 * args.nodes:
        print(f"tidelog: --port {args.port} leaves no room for {args.nodes} nodes", file=sys.stderr)
        return EXIT_USAGE
    try:
        BrokerConfig(num_partitions=args.partitions)  # the nodes' configs check the rest
    except ConfigError as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from tidelog.broker.dev_cluster import run_dev_cluster

    return run_dev_cluster(
        args.nodes,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        partitions=args.partitions,
        log_level=args.log_level,
    )


def _run_broker(config: BrokerConfig) -> int:
    # Imported here, not at the top: the server's modules take a noticeable share of a
    # client command's start-up (`tidelog consume ...` never needs them).
    from tidelog.broker.serve import run_broker

    return run_broker(config)


def _run_broker_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _run_broker(config)


if __name__ == "__main__":
    sys.exit(main())
