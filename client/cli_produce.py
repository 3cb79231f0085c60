"""`tidelog produce TOPIC`: one record per input line, from stdin or a file.

A line is everything up to `\\n` (a `\\r` before it is dropped too); the last line needs
no newline. With `--key-separator SEP` a line is split at its first SEP into key and value;
a line without SEP becomes a record with a null key. Every `-H KEY=VALUE` header is put on
every record. The topic is created if the broker auto-creates topics.

Reading stops at the end of the input or at the first SIGINT/SIGTERM; every record read by
then is delivered (or fails) before the command ends. A summary goes to stderr; the exit
status is 1 if any record was not delivered.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import trio

from tidelog.client.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Interruption,
    assignment,
    client_settings,
    command,
    non_negative_int,
    note,
)
from tidelog.client.cli_topics import admin
from tidelog.client.config import COMPRESSION_BY_NAME
from tidelog.client.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError
from tidelog.client.producer import Producer, RecordFuture
from tidelog.client.structs import Header

READ_CHUNK_BYTES = 64 * 1024
LINGER_MS = 5

EXAMPLES = """\
examples:
  echo 'hello' | tidelog produce events
  printf 'user-1:signed up\\nuser-2:logged in\\n' | tidelog produce events --key-separator :
  tidelog produce events --file events.txt --compression zstd -H source=import
  tidelog produce events --partition 0 --acks 1 < lines.txt
"""


def add_produce_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    produce = subparsers.add_parser(
        "produce",
        parents=[common],
        help="produce lines from stdin or a file as records",
        description="Produce one record per line of stdin (or --file).\n"
        "A summary goes to stderr; the exit status is 1 if any record was not delivered.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    produce.add_argument("topic", help="topic to produce to")
    produce.add_argument("--file", metavar="PATH", help="read lines from PATH, not stdin")
    produce.add_argument(
        "-K",
        "--key-separator",
        metavar="SEP",
        help="split each line at the first SEP into key and value",
    )
    produce.add_argument(
        "-H",
        "--header",
        dest="headers",
        type=assignment,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a header on every record (repeatable)",
    )
    produce.add_argument(
        "-p",
        "--partition",
        type=non_negative_int,
        help="produce to this partition (default: by key hash, or sticky for null keys)",
    )
    produce.add_argument(
        "-z",
        "--compression",
        choices=sorted(COMPRESSION_BY_NAME),
        default="none",
        help="batch compression codec (default none)",
    )
    produce.add_argument(
        "--acks",
        choices=("0", "1", "all", "-1"),
        default="all",
        help="acknowledgements to wait for: 0 none, 1 the leader, all (-1) every in-sync "
        "replica (default all)",
    )
    produce.set_defaults(run=command(_produce))


def producer_settings(args: argparse.Namespace) -> dict[str, Any]:
    acks: int | str = args.acks if args.acks == "all" else int(args.acks)
    return {
        **client_settings(args),
        "acks": acks,
        "compression_type": args.compression,
        "linger_ms": LINGER_MS,
        "max_block_ms": args.timeout_ms,
        "delivery_timeout_ms": args.timeout_ms + LINGER_MS,
    }


async def _produce(args: argparse.Namespace, interruption: Interruption) -> int:
    separator: bytes | None = None
    if args.key_separator is not None:
        if not args.key_separator:
            raise CliError("--key-separator must not be empty", exit_status=EXIT_USAGE)
        separator = args.key_separator.encode()
    headers: list[Header] = [(key, value.encode()) for key, value in args.headers]
    producer = Producer(**producer_settings(args))
    delivery = _Deliveries()
    send_error: BaseException | None = None
    with ExitStack() as files:
        source = files.enter_context(open(args.file, "rb")) if args.file else sys.stdin.buffer
        topic_exists = await _check_topic(args)
        async with producer:
            try:
                with interruption.soft_scope():
                    lines = read_lines(source.fileno(), producer.config.max_request_size)
                    async for line in lines:
                        key: bytes | None = None
                        value = line
                        if separator is not None:
                            head, found, tail = line.partition(separator)
                            if found:
                                key, value = head, tail
                        future = await producer.send(
                            args.topic, value, key=key, headers=headers, partition=args.partition
                        )
                        delivery.add(future)
            except (KafkaError, CliError) as exc:
                # Stop reading, but deliver what was sent and say how much that was.
                send_error = _explain(exc, args.topic, delivery.sent == 0 and not topic_exists)
            await producer.flush()
            delivery.settle()
    delivery.report(args.topic)
    if send_error is not None:
        raise send_error
    if delivery.failed:
        raise CliError(
            f"{delivery.failed} of {delivery.sent} records were not delivered: "
            f"{delivery.first_error}"
        )
    return EXIT_OK


def _explain(exc: KafkaError | CliError, topic: str, may_be_missing: bool) -> BaseException:
    """The error to report for a failed `send` (or an unreadable line)."""
    if isinstance(exc, KafkaTimeoutError) and may_be_missing:
        # The producer waited for the topic's metadata in vain.
        return CliError(f"topic {topic!r} does not exist (and the broker did not create it)")
    if isinstance(exc, UnknownTopicOrPartitionError):
        return CliError(str(exc).removeprefix("UNKNOWN_TOPIC_OR_PARTITION: "))
    return exc


async def _check_topic(args: argparse.Namespace) -> bool:
    """Whether the topic exists (if not, the producer may still have the broker create
    it). Also reports an unreachable cluster before any input is read."""
    async with admin(args) as client:
        try:
            topics = await client.describe_topics([args.topic])
        except UnknownTopicOrPartitionError:
            return False
    partitions = topics[args.topic].partitions
    if args.partition is not None and args.partition not in partitions:
        raise CliError(
            f"topic {args.topic!r} has no partition {args.partition} (it has {len(partitions)})"
        )
    return True


class _Deliveries:
    """Outcomes of the records sent. Futures are settled as they complete, oldest first,
    so only those not yet acknowledged are kept."""

    def __init__(self) -> None:
        self._pending: deque[RecordFuture] = deque()
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.first_error: KafkaError | None = None

    def add(self, future: RecordFuture) -> None:
        self.sent += 1
        self._pending.append(future)
        while self._pending and self._pending[0].done():
            self._settle_one(self._pending.popleft())

    def settle(self) -> None:
        """Record the outcome of every future (all must be done: after a flush)."""
        while self._pending:
            self._settle_one(self._pending.popleft())

    def _settle_one(self, future: RecordFuture) -> None:
        try:
            future.result()
        except KafkaError as exc:
            self.failed += 1
            if self.first_error is None:
                self.first_error = exc
        else:
            self.delivered += 1

    def report(self, topic: str) -> None:
        records = "record" if self.delivered == 1 else "records"
        note(f"{self.delivered} {records} produced to {topic!r}")


async def read_lines(fd: int, max_line_bytes: int) -> AsyncIterator[bytes]:
    """The lines read from file descriptor `fd`, without their line endings. Reads happen
    in a worker thread, so the event loop keeps delivering while input trickles in; they
    use `os.read`, not a buffered file object, because a read abandoned at an interrupt
    must not hold a lock that the interpreter's shutdown needs. A line longer than
    `max_line_bytes` is a `CliError` (it could not become a record anyway)."""
    buffered = b""
    line_count = 0
    while True:
        chunk = await trio.to_thread.run_sync(os.read, fd, READ_CHUNK_BYTES, abandon_on_cancel=True)
        if not chunk:
            break
        lines = (buffered + chunk).split(b"\n")
        buffered = lines.pop()
        for line in lines:
            line_count += 1
            yield line.removesuffix(b"\r")
        if len(buffered) > max_line_bytes:
            raise CliError(f"line {line_count + 1} is longer than {max_line_bytes} bytes")
    if buffered:
        yield buffered.removesuffix(b"\r")
