"""The client-side `tidelog` commands; `broker/cli.py` adds them next to `dev` and `broker`.

    tidelog topic create|list|describe|delete|alter-config ...
    tidelog produce TOPIC        lines of stdin (or --file) become records
    tidelog consume TOPIC        records to stdout, by kcat-style template or as JSON
    tidelog cluster info         cluster id, controller, brokers, metadata quorum
    tidelog group list|describe|reset-offsets|delete ...   consumer groups, lag, offsets

Every command takes `-b/--brokers HOST:PORT,...` (default `$TIDELOG_BROKERS`, else
127.0.0.1:9092), `--timeout-ms` (how long to wait for an unreachable cluster or a stalled
operation) and the `--tls*` options. Results go to stdout; progress, summaries and errors
go to stderr; a failure is one line `tidelog: error: ...` and exit status 1 (2 for usage
errors, 130 after an interrupt). See `client.cli_common` for the shared behaviour and the
`cli_*` modules for each command.
"""

from __future__ import annotations

import argparse

from tidelog.client.cli_cluster import add_cluster_commands
from tidelog.client.cli_common import connection_options
from tidelog.client.cli_consume import add_consume_command
from tidelog.client.cli_groups import add_group_commands
from tidelog.client.cli_produce import add_produce_command
from tidelog.client.cli_topics import add_topic_commands


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the `tidelog` parser's subcommands. Each subcommand
    parser sets `run=<callable(args) -> int>`, whose result is the exit status."""
    common = connection_options()
    add_topic_commands(subparsers, common)
    add_produce_command(subparsers, common)
    add_consume_command(subparsers, common)
    add_cluster_commands(subparsers, common)
    add_group_commands(subparsers, common)
