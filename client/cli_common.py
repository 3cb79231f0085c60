"""Plumbing shared by the client-side `tidelog` commands (see `client.cli`).

Every client command takes the options of `connection_options()` (brokers, timeout, TLS,
verbosity) and runs through `command(...)`, which gives it:

- one trio run, in which SIGINT/SIGTERM are received as events, never as tracebacks: a
  first signal cancels the command's innermost `Interruption.soft_scope()` if one is open
  (the command then finishes normally: flush, summary, exit 0) and otherwise the whole
  command (exit 130); a second signal always cancels the whole command;
- failures as one line on stderr, `tidelog: error: <message>`, and exit status 1 (2 for
  bad option values that argparse could not catch, such as a malformed broker address);
- a reader that closed stdout (`tidelog consume t | head`) ends the command quietly
  with status 0;
- the client library's own log lines on stderr only with `-v` (INFO) or `-vv` (DEBUG):
  its retry chatter would otherwise bury the one line that matters.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from tidelog.client.config import parse_bootstrap_servers
from tidelog.client.errors import ConfigError, KafkaConnectionError, KafkaError, KafkaTimeoutError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""

BROKERS_ENV = "TIDELOG_BROKERS"
DEFAULT_BROKERS = "127.0.0.1:9092"
DEFAULT_TIMEOUT_MS = 10_000
CLIENT_ID = "tidelog-cli"


class CliError(Exception):
    """A failure the command reports as one line; `exit_status` is the process's status."""

    def __init__(self, message: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def topic_missing(topic: str) -> CliError:
    return CliError(f"topic {topic!r} does not exist")


# --- options -----------------------------------------------------------------------------


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with the options every client command shares."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "-b",
        "--brokers",
        metavar="HOST:PORT[,...]",
        help=f"bootstrap brokers (default: ${BROKERS_ENV}, else {DEFAULT_BROKERS})",
    )
    group.add_argument(
        "--timeout-ms",
        type=positive_int,
        default=DEFAULT_TIMEOUT_MS,
        metavar="MS",
        help="give up on an unreachable cluster or a stalled operation after this long "
        f"(default {DEFAULT_TIMEOUT_MS})",
    )
    group.add_argument(
        "--tls", action="store_true", help="connect with TLS (implied by the --tls-* files)"
    )
    group.add_argument(
        "--tls-ca-file", type=readable_file, metavar="PEM", help="CA certificates to trust"
    )
    group.add_argument(
        "--tls-cert-file",
        type=readable_file,
        metavar="PEM",
        help="client certificate (mutual TLS)",
    )
    group.add_argument(
        "--tls-key-file", type=readable_file, metavar="PEM", help="private key of --tls-cert-file"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show the client's log on stderr (-v info, -vv debug)",
    )
    return parent


def brokers(args: argparse.Namespace) -> str:
    value: str | None = args.brokers or os.environ.get(BROKERS_ENV)
    return value if value else DEFAULT_BROKERS


def client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments every client (Producer, Consumer, Admin) takes, from the options."""
    settings: dict[str, Any] = {
        "bootstrap_servers": brokers(args),
        "client_id": CLIENT_ID,
        "request_timeout_ms": args.timeout_ms,
        "socket_connection_setup_timeout_ms": args.timeout_ms,
    }
    if args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file:
        settings.update(
            security_protocol="SSL",
            ssl_cafile=args.tls_ca_file,
            ssl_certfile=args.tls_cert_file,
            ssl_keyfile=args.tls_key_file,
        )
    return settings


def readable_file(path: str) -> str:
    """A path that can be opened for reading, as an argparse type."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def assignment(text: str) -> tuple[str, str]:
    """`key=value` (split at the first `=`; the value may be empty, the key may not)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


AddAction = Callable[..., argparse.ArgumentParser]
"""`action(name, help_text, example, description=None)` -> the action's parser."""


def command_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    name: str,
    *,
    help_text: str,
    description: str,
    examples: str,
) -> AddAction:
    """Add `tidelog NAME ACTION ...`; return the function that adds one ACTION's parser,
    with the shared connection options, its help line, a description and one example."""
    group = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def action(
        action_name: str, action_help: str, example: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        return actions.add_parser(
            action_name,
            parents=[common],
            help=action_help,
            description=description or action_help[0].upper() + action_help[1:] + ".",
            epilog=f"example:\n  {example}\n",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    return action


def add_output_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format on stdout (default text)",
    )


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def note(message: str) -> None:
    """A progress or summary line, on stderr so that stdout stays pipeable."""
    print(f"tidelog: {message}", file=sys.stderr, flush=True)


# --- running a command -------------------------------------------------------------------


class Interruption:
    """How SIGINT/SIGTERM reach a running command (see the module docstring)."""

    def __init__(self, root: trio.CancelScope) -> None:
        self._root = root
        self._soft_scopes: list[trio.CancelScope] = []
        self.signals_received = 0

    @contextmanager
    def soft_scope(self) -> Iterator[trio.CancelScope]:
        """A scope that the first signal cancels instead of the whole command."""
        scope = trio.CancelScope()
        if self.signals_received:
            scope.cancel()
        self._soft_scopes.append(scope)
        try:
            with scope:
                yield scope
        finally:
            self._soft_scopes.remove(scope)

    def signal(self) -> None:
        self.signals_received += 1
        if self.signals_received == 1 and self._soft_scopes:
            self._soft_scopes[-1].cancel()
        else:
            self._root.cancel()

    @property
    def aborted(self) -> bool:
        """Whether a signal cancelled the whole command."""
        return self._root.cancel_called


CommandFn = Callable[[argparse.Namespace, Interruption], Awaitable[int]]


def command(fn: CommandFn) -> Callable[[argparse.Namespace], int]:
    """The `run` callable of a subcommand: runs `fn` under trio; returns the exit status."""

    def run(args: argparse.Namespace) -> int:
        _configure_client_logging(args.verbose)
        try:
            return trio.run(_run_interruptible, fn, args)
        except BaseException as exc:
            return _report(exc, args)

    return run


async def _run_interruptible(fn: CommandFn, args: argparse.Namespace) -> int:
    status = EXIT_INTERRUPTED
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            interruption = Interruption(nursery.cancel_scope)

            async def watch_signals() -> None:
                async for _ in signals:
                    interruption.signal()

            async def run_command() -> None:
                nonlocal status
                try:
                    status = await fn(args, interruption)
                except (KafkaTimeoutError, KafkaConnectionError) as exc:
                    unreachable = await unreachable_brokers(args)
                    if unreachable is not None:
                        raise CliError(unreachable) from exc
                    raise
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            nursery.start_soon(run_command)
    if interruption.aborted and status == EXIT_INTERRUPTED:
        note("interrupted")
    return status


async def unreachable_brokers(args: argparse.Namespace) -> str | None:
    """After a timeout: None if some bootstrap broker accepts TCP connections, else a line
    naming each address and why it cannot be reached. The client's own errors do not say
    this reliably: a deadline may expire while it waits to retry a connection."""
    addresses = list(dict.fromkeys(parse_bootstrap_servers(brokers(args))))
    failures: dict[tuple[str, int], str] = {}

    async def probe(host: str, port: int) -> None:
        failures[host, port] = "timed out"
        with trio.move_on_after(args.timeout_ms / 1000):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                failures[host, port] = _connect_failure(exc)
                return
            await stream.aclose()
            del failures[host, port]

    async with trio.open_nursery() as nursery:
        for host, port in addresses:
            nursery.start_soon(probe, host, port)
    if len(failures) < len(addresses):
        return None
    return "cannot connect to " + ", ".join(
        f"{host}:{port} ({failures[host, port]})" for host, port in addresses
    )


def _connect_failure(exc: OSError) -> str:
    """The reason in an OSError from `trio.open_tcp_stream`: the first attempt's error."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        first = _leaves(cause)[0]
        if isinstance(first, OSError) and first.errno is not None:
            return os.strerror(first.errno).lower()
    return (exc.strerror or str(exc)).lower()


def _configure_client_logging(verbose: int) -> None:
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.getLogger("tidelog.client").setLevel(level)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _report(exc: BaseException, args: argparse.Namespace) -> int:
    """Print the one line for a failed command and return its exit status. Anything that
    is not a known failure (a bug) is re-raised, traceback and all."""
    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        # Ctrl-C before the signal receiver was installed (or after it was removed).
        note("interrupted")
        return EXIT_INTERRUPTED
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        # The reader of stdout went away: stop quietly. Point stdout at /dev/null so that
        # the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    known = [leaf for leaf in leaves if isinstance(leaf, CliError | KafkaError | OSError)]
    if len(known) != len(leaves):
        raise exc
    first = known[0]
    status = first.exit_status if isinstance(first, CliError) else EXIT_FAILED
    if isinstance(first, ConfigError):
        status = EXIT_USAGE
    print(f"tidelog: error: {describe_error(first, args)}", file=sys.stderr, flush=True)
    return status


def describe_error(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for a failure; a cluster that could not be reached is named as such."""
    gave_up = ""
    if isinstance(exc, KafkaTimeoutError) and isinstance(exc.__cause__, KafkaConnectionError):
        exc, gave_up = exc.__cause__, f" (gave up after {args.timeout_ms} ms)"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    message = str(exc)
    tls_error = _tls_error(exc)
    if tls_error is not None and str(tls_error) not in message:
        # Connection errors wrap the TLS error in one whose own text is empty.
        message = f"{message.rstrip(': ')}: TLS handshake failed: {tls_error}"
    return message + gave_up


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc`, if any (looking a few causes deep)."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None or isinstance(cause, ssl.SSLError):
            break
        cause = cause.__cause__ or cause.__context__
    return cause if isinstance(cause, ssl.SSLError) else None
