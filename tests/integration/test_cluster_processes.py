"""Three combined broker+controller nodes as three processes (`tidelog broker --config`) on
127.0.0.1, driven by confluent-kafka's AdminClient and checked node by node over the wire:
every node agrees on topics, replicas and leaders; `kill -9` of the active controller is
survived (a successor takes CreateTopics within 10 s, the killed broker is fenced within
its session timeout and loses its leaderships, and it comes back caught up); a whole
cluster restarted keeps its topics, configs and assignments. Every process is stopped by
its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.test_cli import run_tidelog
from tests.integration.test_raft_tcp import free_ports
from tests.integration.wire import WireClient
from tidelog.broker.network import TcpNetwork
from tidelog.client.protocol.records import decode_batches
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import OsFileSystem
from tidelog.storage.log import PartitionLog

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
SESSION_TIMEOUT_MS = 3000
REPLICA_LAG_MS = 2000
START_TIMEOUT_S = 30
AGREE_TIMEOUT_S = 10
TIDELOG_BROKER = (sys.executable, "-m", "tidelog.broker.cli", "broker", "--config")


class Node:
    """One `tidelog broker` process; its stderr goes to `<dir>.log`."""

    def __init__(self, node_id: int, directory: Path, port: int, config: str) -> None:
        self.node_id = node_id
        self.port = port
        self.config_path = directory.with_suffix(".toml")
        self.config_path.write_text(config)
        self.log_path = directory.with_suffix(".log")
        self.process: trio.Process | None = None
        self.ready = trio.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

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

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit; the exit status."""
        self.signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        assert self.process is not None
        with trio.fail_after(START_TIMEOUT_S):
            return await self.process.wait()

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


class Cluster:
    def __init__(
        self, nodes: dict[int, Node], nursery: trio.Nursery, voters: str, root: Path
    ) -> None:
        self.nodes = nodes
        self.nursery = nursery
        self.voters = voters
        self.root = root

    async def add_broker(self, node_id: int) -> Node:
        """Start a broker-only node (a quorum observer) that joins this cluster."""
        (port,) = await free_ports(1)
        directory = self.root / f"node{node_id}"
        node = Node(
            node_id, directory, port, node_config(node_id, directory, self.voters, port, None)
        )
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
        self, ids: tuple[int, ...], check: Callable[[dict[str, Any]], bool]
    ) -> Any:
        """Wait until nodes `ids` all answer the same Metadata and it passes `check`."""
        with trio.fail_after(AGREE_TIMEOUT_S):
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


def node_config(
    node_id: int, directory: Path, voters: str, client_port: int, controller_port: int | None
) -> str:
    """A combined node's TOML config; a broker-only one without `controller_port`."""
    roles = "broker" if controller_port is None else "broker,controller"
    config = f"""
node_id = {node_id}
data_dir = "{directory}"
process_roles = "{roles}"
controller_quorum_voters = "{voters}"
controller_listener_names = "CONTROLLER"
broker_session_timeout_ms = {SESSION_TIMEOUT_MS}
broker_heartbeat_interval_ms = 500
replica_lag_time_max_ms = {REPLICA_LAG_MS}

[[listeners]]
name = "PLAINTEXT"
host = "127.0.0.1"
port = {client_port}
"""
    if controller_port is not None:
        config += f"""
[[listeners]]
name = "CONTROLLER"
host = "127.0.0.1"
port = {controller_port}
"""
    return config


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    ports = await free_ports(2 * len(NODES))
    client_ports = dict(zip(NODES, ports[::2], strict=True))
    controller_ports = dict(zip(NODES, ports[1::2], strict=True))
    voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in NODES)
    nodes = {}
    for i in NODES:
        directory = tmp_path / f"node{i}"
        config = node_config(i, directory, voters, client_ports[i], controller_ports[i])
        nodes[i] = Node(i, directory, client_ports[i], config)
    running = Cluster(nodes, nursery, voters, tmp_path)
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
    return admin_module.AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})


async def create_topic(bootstrap: str, name: str, **options: Any) -> None:
    def create() -> None:
        client = admin(bootstrap)  # kept while its futures are awaited
        new = admin_module.NewTopic(name, **options)
        for future in client.create_topics([new], operation_timeout=10).values():
            future.result(timeout=15)

    await trio.to_thread.run_sync(create)


async def test_nodes_agree_and_survive_the_active_controller_being_killed(
    cluster: Cluster,
) -> None:
    await create_topic(cluster.nodes[2].bootstrap, "orders", num_partitions=6, replication_factor=3)
    image = await cluster.wait_agreed(NODES, lambda m: "orders" in m["topics"])
    assert image["brokers"] == [1, 2, 3]
    orders = image["topics"]["orders"]
    assert sorted(sorted(r) for _, r, _ in orders.values()) == [[1, 2, 3]] * 6
    assert {leader for leader, _, _ in orders.values()} == {1, 2, 3}  # balanced
    assert all(
        leader == replicas[0] and isr == replicas for leader, replicas, isr in orders.values()
    )

    controller = await cluster.quorum_leader(1)
    assert controller in NODES
    survivors = tuple(i for i in NODES if i != controller)
    cluster.nodes[controller].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await create_topic(cluster.nodes[survivors[0]].bootstrap, "after", replication_factor=2)
    assert time.monotonic() - killed_at < 10, "CreateTopics after the controller died"
    assert await cluster.quorum_leader(survivors[1]) in survivors

    def failed_over(m: dict[str, Any]) -> bool:
        leaders = {leader for leader, _, _ in m["topics"]["orders"].values()}
        return m["brokers"] == list(survivors) and controller not in leaders

    image = await cluster.wait_agreed(survivors, failed_over)
    fenced_after = time.monotonic() - killed_at
    assert fenced_after < (SESSION_TIMEOUT_MS / 1000) + AGREE_TIMEOUT_S
    for index, (leader, replicas, isr) in image["topics"]["orders"].items():
        assert leader in survivors and sorted(replicas) == [1, 2, 3], index
        assert controller not in isr
    # Placed before the killed broker was fenced, "after" may have a replica on it.
    assert len(image["topics"]["after"][0][1]) == 2

    await cluster.start(controller)
    image = await cluster.wait_agreed(NODES, lambda m: m["brokers"] == [1, 2, 3])
    assert set(image["topics"]) == {"orders", "after"}
    info = await run_tidelog("cluster", "info", "--format", "json", "-b", cluster.bootstrap)
    assert info.status == 0, info.stderr
    brokers = {b["node_id"]: b for b in json.loads(info.stdout)["brokers"]}
    assert sorted(brokers) == [1, 2, 3]
    assert not brokers[controller].get("fenced", False)
    for node in cluster.nodes.values():
        assert await node.stop() == 0, node.log_tail()


async def test_a_restarted_cluster_keeps_topics_configs_and_assignments(cluster: Cluster) -> None:
    await create_topic(
        cluster.bootstrap,
        "kept",
        num_partitions=3,
        replication_factor=3,
        config={"retention.ms": "123456", "cleanup.policy": "compact"},
    )
    await create_topic(cluster.bootstrap, "single", replication_factor=1)
    before = await cluster.wait_agreed(NODES, lambda m: {"kept", "single"} <= set(m["topics"]))

    for node in cluster.nodes.values():  # all at once
        node.signal(signal.SIGTERM)
    for node in cluster.nodes.values():
        assert await node.wait() == 0, node.log_tail()
    await cluster.start()

    after = await cluster.wait_agreed(NODES, lambda m: m["brokers"] == [1, 2, 3])
    assert set(after["topics"]) == {"kept", "single"}
    for name in ("kept", "single"):
        for index, (_, replicas, _) in after["topics"][name].items():
            assert replicas == before["topics"][name][index][1]
    (single_leader, single_replicas, _) = after["topics"]["single"][0]
    assert single_leader == single_replicas[0]  # its only replica leads it again

    def describe() -> dict[str, str]:
        resource = admin_module.ConfigResource("topic", "kept")
        client = admin(cluster.bootstrap)
        future = client.describe_configs([resource])[resource]
        return {name: entry.value for name, entry in future.result(timeout=15).items()}

    configs = await trio.to_thread.run_sync(describe)
    assert configs["retention.ms"] == "123456"
    assert configs["cleanup.policy"] == "compact"


async def test_a_broker_only_node_joins_as_an_observer(cluster: Cluster) -> None:
    await cluster.add_broker(4)
    image = await cluster.wait_agreed((1, 2, 3, 4), lambda m: m["brokers"] == [1, 2, 3, 4])
    assert image["brokers"] == [1, 2, 3, 4]
    await create_topic(cluster.nodes[4].bootstrap, "wide", num_partitions=4, replication_factor=4)
    image = await cluster.wait_agreed((1, 2, 3, 4), lambda m: "wide" in m["topics"])
    assert {leader for leader, _, _ in image["topics"]["wide"].values()} == {1, 2, 3, 4}
    quorum = await cluster.describe_quorum(4)
    assert sorted(v["replica_id"] for v in quorum["current_voters"]) == [1, 2, 3]
    assert [o["replica_id"] for o in quorum["observers"]] == [4]


async def test_a_stopped_follower_leaves_the_isr_and_rejoins_once_it_has_caught_up(
    cluster: Cluster,
) -> None:
    await create_topic(cluster.bootstrap, "lagging", replication_factor=3)
    image = await cluster.wait_agreed(NODES, lambda m: "lagging" in m["topics"])
    leader, replicas, isr = image["topics"]["lagging"][0]
    assert sorted(isr) == sorted(replicas) == [1, 2, 3]
    stopped = next(r for r in replicas if r != leader)
    in_sync = sorted(r for r in replicas if r != stopped)

    def produce(values: list[bytes]) -> tuple[list[Any], float]:
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": cluster.bootstrap, "acks": "all", "broker.address.family": "v4"}
        )
        outcomes: list[Any] = []
        started = time.monotonic()
        for value in values:
            producer.produce("lagging", value, on_delivery=lambda e, m: outcomes.append(e))
        producer.flush(20)
        return outcomes, time.monotonic() - started

    first = [b"before-%d" % i for i in range(100)]
    outcomes, _ = await trio.to_thread.run_sync(produce, first)
    assert outcomes == [None] * len(first)

    # A follower that stops fetching holds acks=all back until the leader takes it out of
    # the ISR (after replica.lag.time.max.ms, through AlterPartition).
    cluster.nodes[stopped].signal(signal.SIGSTOP)
    try:
        second = [b"during-%d" % i for i in range(100)]
        outcomes, waited_s = await trio.to_thread.run_sync(produce, second)
        assert outcomes == [None] * len(second)
        assert waited_s >= REPLICA_LAG_MS / 1000
        running = tuple(r for r in NODES if r != stopped)
        image = await cluster.wait_agreed(
            running, lambda m: sorted(m["topics"]["lagging"][0][2]) == in_sync
        )
        assert image["topics"]["lagging"][0][1] == replicas  # the assignment stays
    finally:
        cluster.nodes[stopped].signal(signal.SIGCONT)

    # Resumed, it fetches what it missed and joins the ISR again; every replica then holds
    # every record, at the same offsets.
    await cluster.wait_agreed(NODES, lambda m: sorted(m["topics"]["lagging"][0][2]) == [1, 2, 3])
    for node_id in NODES:
        assert await cluster.nodes[node_id].stop() == 0
    for node_id in NODES:
        assert stored_values(cluster.root / f"node{node_id}", "lagging") == first + second
