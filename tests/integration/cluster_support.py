"""Helpers for the process tests: combined broker+controller nodes as real `tidelog broker
--config` processes on 127.0.0.1.

`running_cluster(root, nursery)` starts three nodes and, when it exits, SIGKILLs every
process still running, by its pid (the `cluster` fixture in conftest is it with default
settings). A `Cluster` asks each node over the wire what it tells clients (`metadata`,
`wait_agreed`) and what the quorum looks like (`describe_quorum`); `stored_values` reads a
stopped node's partition log from disk. `admin` and `create_topic` use confluent-kafka's
AdminClient (imported when first used, so that this module imports without it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.integration.test_raft_tcp import free_ports
from tests.integration.wire import WireClient
from tidelog.broker.network import TcpNetwork
from tidelog.client.protocol.records import decode_batches
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import OsFileSystem
from tidelog.storage.log import PartitionLog

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
SESSION_TIMEOUT_MS = 3000
REPLICA_LAG_MS = 2000
START_TIMEOUT_S = 30
AGREE_TIMEOUT_S = 10
TIDELOG_BROKER = (sys.executable, "-m", "tidelog.broker.cli", "broker", "--config")

Settings = Mapping[str, int | str]
"""More broker settings for every node's TOML config (top-level keys)."""


class Node:
    """One `tidelog broker` process; its stderr goes to `<dir>.log`."""

    def __init__(self, node_id: int, directory: Path, port: int, config: str) -> None:
        self.node_id = node_id
        self.directory = directory
        self.port = port
        self.config_path = directory.with_suffix(".toml")
        self.config_path.write_text(config)
        self.log_path = directory.with_suffix(".log")
        self.process: trio.Process | None = None
        self.ready = trio.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, nursery: trio.Nursery) -> None:
        self.ready = trio.Event()
        with self.log_path.open("ab") as log:
            self.process = await trio.lowlevel.open_process(
                [*TIDELOG_BROKER, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        nursery.start_soon(self._watch, self.process, self.ready)

    @staticmethod
    async def _watch(process: trio.Process, ready: trio.Event) -> None:
        assert process.stdout is not None
        seen = b""
        while data := await process.stdout.receive_some(4096):
            seen += data
            if b"tidelog ready: " in seen:
                ready.set()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    async def kill(self) -> None:
        """SIGKILL (`kill -9`), and wait until the process is gone."""
        self.signal(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit; the exit status."""
        self.signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        assert self.process is not None
        with trio.fail_after(START_TIMEOUT_S):
            return await self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    def __init__(
        self,
        nodes: dict[int, Node],
        nursery: trio.Nursery,
        voters: str,
        root: Path,
        settings: Settings,
    ) -> None:
        self.nodes = nodes
        self.nursery = nursery
        self.voters = voters
        self.root = root
        self.settings = settings

    async def add_broker(self, node_id: int) -> Node:
        """Start a broker-only node (a quorum observer) that joins this cluster."""
        (port,) = await free_ports(1)
        directory = self.root / f"node{node_id}"
        config = node_config(node_id, directory, self.voters, port, None, self.settings)
        node = Node(node_id, directory, port, config)
        self.nodes[node_id] = node
        await self.start(node_id)
        return node

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    async def start(self, *ids: int) -> None:
        for i in ids or tuple(self.nodes):
            await self.nodes[i].start(self.nursery)
        with trio.fail_after(START_TIMEOUT_S):
            for i in ids or tuple(self.nodes):
                await self.nodes[i].ready.wait()

    async def stop_all(self) -> None:
        """SIGTERM every running node at once (so that none waits for a quorum the others
        have left), and check that each exits cleanly."""
        running = [node for node in self.nodes.values() if node.running]
        for node in running:
            node.signal(signal.SIGTERM)
        for node in running:
            assert await node.wait() == 0, node.log_tail()

    async def request(self, node_id: int, api_key: int, version: int, body: Any) -> Any:
        async with await WireClient.connect(
            TcpNetwork(), "127.0.0.1", self.nodes[node_id].port
        ) as client:
            return await client.request(api_key, version, body)

    async def metadata(self, node_id: int) -> dict[str, Any]:
        """What node `node_id` tells clients: live brokers, and every topic's partitions as
        {index: (leader, replicas, isr)}."""
        response = await self.request(node_id, 3, 12, {"topics": None})
        return {
            "brokers": sorted(b["node_id"] for b in response["brokers"]),
            "topics": {
                t["name"]: {
                    p["partition_index"]: (p["leader_id"], p["replica_nodes"], p["isr_nodes"])
                    for p in t["partitions"]
                }
                for t in response["topics"]
            },
        }

    async def wait_agreed(
        self,
        ids: tuple[int, ...],
        check: Callable[[dict[str, Any]], bool],
        timeout_s: float = AGREE_TIMEOUT_S,
    ) -> Any:
        """Wait until nodes `ids` all answer the same Metadata and it passes `check`."""
        with trio.fail_after(timeout_s):
            while True:
                answers = [await self.metadata(i) for i in ids]
                if all(a == answers[0] for a in answers) and check(answers[0]):
                    return answers[0]
                await trio.sleep(0.05)

    async def describe_quorum(self, node_id: int) -> dict[str, Any]:
        """DescribeQuorum through node `node_id`: the `__cluster_metadata-0` partition."""
        body = {
            "topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]
        }
        response = await self.request(node_id, 55, 1, body)
        partition: dict[str, Any] = response["topics"][0]["partitions"][0]
        return partition

    async def quorum_leader(self, node_id: int) -> int:
        leader: int = (await self.describe_quorum(node_id))["leader_id"]
        return leader

    def log_tails(self, lines: int = 40) -> str:
        """The end of every node's log, for an assertion message."""
        return "\n".join(
            f"--- node {i} ---\n{node.log_tail(lines)}" for i, node in self.nodes.items()
        )


def node_config(
    node_id: int,
    directory: Path,
    voters: str,
    client_port: int,
    controller_port: int | None,
    settings: Settings | None = None,
) -> str:
    """A combined node's TOML config; a broker-only one without `controller_port`.
    `settings` add to (or override) the top-level ones."""
    top: dict[str, int | str] = {
        "node_id": node_id,
        "data_dir": str(directory),
        "process_roles": "broker" if controller_port is None else "broker,controller",
        "controller_quorum_voters": voters,
        "controller_listener_names": "CONTROLLER",
        "broker_session_timeout_ms": SESSION_TIMEOUT_MS,
        "broker_heartbeat_interval_ms": 500,
        "replica_lag_time_max_ms": REPLICA_LAG_MS,
        **(settings or {}),
    }
    # json.dumps writes a TOML integer or basic string.
    config = "".join(f"{key} = {json.dumps(value)}\n" for key, value in top.items())
    listeners = [("PLAINTEXT", client_port), ("CONTROLLER", controller_port)]
    for name, port in listeners:
        if port is not None:
            config += f'\n[[listeners]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
    return config


@asynccontextmanager
async def running_cluster(
    root: Path, nursery: trio.Nursery, **settings: int | str
) -> AsyncIterator[Cluster]:
    """Three combined nodes under `root`, started; every process still running at the end
    is SIGKILLed by its pid (and resumed first, should it be stopped)."""
    ports = await free_ports(2 * len(NODES))
    client_ports = dict(zip(NODES, ports[::2], strict=True))
    controller_ports = dict(zip(NODES, ports[1::2], strict=True))
    voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in NODES)
    nodes = {}
    for i in NODES:
        directory = root / f"node{i}"
        config = node_config(i, directory, voters, client_ports[i], controller_ports[i], settings)
        nodes[i] = Node(i, directory, client_ports[i], config)
    running = Cluster(nodes, nursery, voters, root, settings)
    try:
        await running.start()
        yield running
    finally:
        for node in running.nodes.values():
            if node.process is not None and node.process.returncode is None:
                node.signal(signal.SIGKILL)
                await node.process.wait()


def stored_values(directory: Path, topic: str, partition: int = 0) -> list[bytes | None]:
    """Every record value of a partition log as a (stopped) node stores it on disk, in
    offset order, checking the offsets follow each other."""
    log = PartitionLog.open(
        OsFileSystem(), str(directory / f"{topic}-{partition}"), LogConfig(), lambda: 0
    )
    try:
        values: list[bytes | None] = []
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            chunk = log.read(offset, 1024 * 1024)
            assert chunk is not None
            for header, records in decode_batches(chunk.read_bytes()):
                for record in records:
                    assert record.offset == log.log_start_offset + len(values)
                    values.append(record.value)
                offset = header.last_offset + 1
        return values
    finally:
        log.close()


def admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})


async def create_topic(bootstrap: str, name: str, **options: Any) -> None:
    """CreateTopics through confluent-kafka's AdminClient; `options` are NewTopic's."""
    from confluent_kafka.admin import NewTopic

    def create() -> None:
        client = admin(bootstrap)  # kept while its futures are awaited
        futures = client.create_topics([NewTopic(name, **options)], operation_timeout=10)
        for future in futures.values():
            future.result(timeout=15)

    await trio.to_thread.run_sync(create)
