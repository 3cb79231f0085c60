"""The systems a benchmark run measures, side by side, with the same counts and sizes.

A `System` starts its server (a subprocess on 127.0.0.1 with its own port and data
directory, stopped by pid afterwards) and names the client adapters that drive it. A
`ClientAdapter` runs one `Job` of each workload kind against a running server. Client
libraries are imported only when an adapter runs, so a machine without a peer's client (or
server) reports that peer as skipped.

    tidelog           the broker under test; clients confluent-kafka and tidelog's own
    nats-jetstream    nats-server -js, client nats-py
    redis-streams     redis-server, client redis-py (hiredis parser)
    rabbitmq-streams  rabbitmq-server with the stream plugin, client rstream
    raw-tcp           the ceiling: a plain trio TCP server appending to a file
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.processes import Server
from bench.workload import Job, Outcome

VERSION_TIMEOUT_S = 10.0


class ClientAdapter(Protocol):
    """One client library driving one system."""

    @property
    def name(self) -> str: ...

    @property
    def modules(self) -> Sequence[str]:
        """Python modules the adapter needs; any missing one skips it."""
        ...

    def produce(self, server: Server, job: Job) -> Outcome: ...

    def consume(self, server: Server, job: Job) -> Outcome: ...

    def e2e(self, server: Server, job: Job) -> Outcome: ...


AsyncWorkload = Callable[[Server, Job], Coroutine[Any, Any, Outcome]]


@dataclass(frozen=True, slots=True)
class AsyncioAdapter:
    """A `ClientAdapter` for an asyncio client library: each workload is a coroutine
    function, run in an event loop of its own."""

    name: str
    modules: tuple[str, ...]
    produce_async: AsyncWorkload
    consume_async: AsyncWorkload
    e2e_async: AsyncWorkload

    def produce(self, server: Server, job: Job) -> Outcome:
        return asyncio.run(self.produce_async(server, job))

    def consume(self, server: Server, job: Job) -> Outcome:
        return asyncio.run(self.consume_async(server, job))

    def e2e(self, server: Server, job: Job) -> Outcome:
        return asyncio.run(self.e2e_async(server, job))


class System(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def durability(self) -> str:
        """What the server persists and when it fsyncs, as configured here."""
        ...

    @property
    def clients(self) -> Sequence[ClientAdapter]: ...

    def missing(self) -> str | None:
        """Why the server cannot run on this machine, or None."""
        ...

    def start(self, work_dir: Path, partitions: int) -> AbstractContextManager[Server]:
        """Run the server with its data under `work_dir` until the context exits."""
        ...

    def version(self) -> str | None:
        """The server's version, once known (some tell it only after they started)."""
        ...


def command_version(argv: Sequence[str]) -> str | None:
    """The first line `argv` (a server's --version) prints, or None."""
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=VERSION_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def missing_modules(adapter: ClientAdapter) -> list[str]:
    """The adapter's modules that cannot be imported here."""

    def importable(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [name for name in adapter.modules if not importable(name)]


def all_systems() -> list[System]:
    """Every system, in report order: tidelog first, the ceiling last."""
    from bench.systems.nats import NatsJetStream
    from bench.systems.rabbitmq import RabbitMqStreams
    from bench.systems.raw_tcp import RawTcp
    from bench.systems.redis_streams import RedisStreams
    from bench.systems.tidelog import Tidelog

    return [Tidelog(), NatsJetStream(), RedisStreams(), RabbitMqStreams(), RawTcp()]
