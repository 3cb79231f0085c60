"""The broker under test: `python -m tidelog.broker.cli broker --config <work>/broker.toml`.

The config sets port 0 on 127.0.0.1, a data directory under the work directory and
`num.partitions`; everything else is what `tidelog dev` runs with (no fsync per write: the
log is in the page cache, flushed on shutdown, as Kafka's default). The broker prints
`tidelog ready: bootstrap HOST:PORT` once it accepts connections; at the end it is sent
SIGTERM and must exit 0.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.processes import Server, read_first_line, read_line, running
from bench.systems import ClientAdapter
from tidelog.storage.log_directory import partition_dir_name
from tidelog.storage.segment import LOG_SUFFIX

REPO = Path(__file__).resolve().parents[2]
READY_PREFIX = "tidelog ready: bootstrap "
START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def started_broker(
    work_dir: Path, partitions: int, profile_path: Path | None = None
) -> Iterator[Server]:
    """Run a broker subprocess on 127.0.0.1 with a data dir under `work_dir`; SIGTERM it on
    exit and fail if it does not stop cleanly. With `profile_path`, the broker runs under
    cProfile, which writes its statistics there when the broker exits."""
    data_dir = work_dir / "data"
    config_path = work_dir / "broker.toml"
    # A JSON string is a valid TOML basic string.
    config_path.write_text(
        f"data_dir = {json.dumps(str(data_dir))}\nnum.partitions = {partitions}\n"
        '[[listeners]]\nhost = "127.0.0.1"\nport = 0\n'
    )
    log_path = work_dir / "broker.log"
    argv = [sys.executable, "-m", "tidelog.broker.cli", "broker", "--config", str(config_path)]
    if profile_path is not None:
        argv[1:1] = ["-m", "cProfile", "-o", str(profile_path)]
    with running(
        "tidelog broker", argv, log_path, cwd=REPO, stdout_pipe=True, require_clean_exit=True
    ) as process:
        try:
            line = read_first_line(process, START_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"broker: {exc}; its log:\n{log_path.read_text()[-4000:]}") from None
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"unexpected first line from the broker: {line!r}")
        host, _, port = line.removeprefix(READY_PREFIX).rpartition(":")
        yield Server(host, int(port), process.pid, data_dir)


@contextlib.contextmanager
def started_cluster(work_dir: Path, nodes: int, partitions: int) -> Iterator[Server]:
    """Run `tidelog dev --nodes N --partitions P` (N combined broker+controller processes on
    127.0.0.1, data under `work_dir`, P partitions per auto-created topic); SIGTERM the
    supervisor on exit, which stops every node and must exit 0. The server's pid is the
    supervisor's (its process tree holds every node); its address is node 1's."""
    base_port = free_port_run(2 * nodes)
    log_path = work_dir / "cluster.log"
    argv = [
        sys.executable, "-m", "tidelog.broker.cli", "dev", "--nodes", str(nodes),
        "--port", str(base_port), "--data-dir", str(work_dir / "data"),
        "--partitions", str(partitions),
    ]  # fmt: skip
    with running(
        "tidelog dev cluster", argv, log_path, cwd=REPO, stdout_pipe=True, require_clean_exit=True
    ) as process:
        try:
            line = read_line(process, START_TIMEOUT_S, prefix="tidelog ready: ")
        except RuntimeError as exc:
            raise RuntimeError(
                f"cluster: {exc}; its log:\n{log_path.read_text()[-4000:]}"
            ) from None
        first = line.removeprefix(READY_PREFIX).split(",")[0]
        host, _, port = first.rpartition(":")
        yield Server(host, int(port), process.pid, None)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports that are free on 127.0.0.1 now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def log_bytes(data_dir: Path | None, topic: str, partitions: int) -> int | None:
    """Bytes in the segment files of `topic`'s partitions, or None without a data dir."""
    if data_dir is None:
        return None
    total = 0
    for partition in range(partitions):
        directory = data_dir / partition_dir_name(topic, partition)
        if directory.is_dir():
            total += sum(p.stat().st_size for p in directory.glob(f"*{LOG_SUFFIX}"))
    return total


class Tidelog:
    name = "tidelog"
    durability = (
        "segment log in the page cache, no fsync per write (log.flush.interval.* unset, "
        "Kafka's default); acks=1: the leader appended"
    )

    def __init__(
        self, clients: Sequence[ClientAdapter] | None = None, profile_path: Path | None = None
    ) -> None:
        self.profile_path = profile_path
        from bench.systems.kafka_confluent import ConfluentKafka
        from bench.systems.kafka_trio import TidelogClient

        self.clients: tuple[ClientAdapter, ...] = (
            (ConfluentKafka(), TidelogClient()) if clients is None else tuple(clients)
        )

    def missing(self) -> str | None:
        return None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version("tidelog")
        except importlib.metadata.PackageNotFoundError:
            return "source tree"

    def start(self, work_dir: Path, partitions: int) -> contextlib.AbstractContextManager[Server]:
        return started_broker(work_dir, partitions, self.profile_path)
