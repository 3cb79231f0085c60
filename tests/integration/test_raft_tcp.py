"""Three Raft nodes on real TCP (127.0.0.1) and real files: each serves the quorum APIs on
its own listener and reaches the others through WireTransport. They elect a leader and
commit; the leader's process dies (listener, connections and tasks gone); the others elect
a successor that commits; the dead node restarts from its directory and catches up.
A request of another cluster is answered INCONSISTENT_CLUSTER_ID."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing

from tests.integration.raft_listener import serve_quorum_connection
from tidelog.broker.controller.raft.core import RaftConfig, RaftCore, Ready, Role
from tidelog.broker.controller.raft.driver import RaftDriver, now_ms
from tidelog.broker.controller.raft.messages import FetchRequest, FetchResponse
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.transport import QUORUM_FRAME_BYTES_MAX, WireTransport
from tidelog.broker.network import TcpNetwork
from tidelog.broker.runner import run_in_thread
from tidelog.client.protocol.apis import encode_request
from tidelog.client.protocol.errors import ErrorCode
from tidelog.storage.filesystem import OsFileSystem

CLUSTER = "raft-tcp-test"
VOTERS = (1, 2, 3)
FAST = RaftConfig(
    fetch_timeout_ms=600,
    election_timeout_ms=300,
    election_backoff_max_ms=300,
    request_timeout_ms=600,
    fetch_max_wait_ms=200,
)


@dataclass
class Node:
    node_id: int
    directory: Path
    port: int = 0
    driver: RaftDriver | None = None
    scope: trio.CancelScope | None = None
    applied: list[bytes] = field(default_factory=list)


async def start(nursery: trio.Nursery, node: Node, ports: dict[int, int]) -> None:
    """One node's process: its listener, its transport and its driver, in one scope."""
    network = TcpNetwork()
    store = RaftStore.open(OsFileSystem(), str(node.directory), now_ms=lambda: 0)
    core = RaftCore(
        node.node_id,
        VOTERS,
        store.load(),
        now_ms=now_ms(),
        rng=random.Random(node.node_id),
        config=FAST,
    )
    node.applied = []

    def apply(ready: Ready) -> None:
        node.applied.extend(e.value for e in ready.committed if e.control_type is None)

    transport = WireTransport(
        network,
        {i: ("127.0.0.1", port) for i, port in ports.items() if i != node.node_id},
        node_id=node.node_id,
        cluster_id=CLUSTER,
        request_timeout_ms=FAST.request_timeout_ms,
    )
    driver = RaftDriver(core, store, transport=transport, run_blocking=run_in_thread, apply=apply)

    async def handler(stream: trio.abc.Stream) -> None:
        await serve_quorum_connection(stream, driver, cluster_id=CLUSTER)

    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                node.port = await inner.start(network.serve_tcp, handler, "127.0.0.1", node.port)
                await inner.start(transport.serve)
                await inner.start(driver.serve)
                task_status.started()
        store.close()

    node.driver, node.scope = driver, scope
    await nursery.start(run)


async def wait_leader(nodes: dict[int, Node]) -> Node:
    while True:
        leaders = [n for n in nodes.values() if n.driver and n.driver.core.role is Role.LEADER]
        if leaders:
            return max(leaders, key=lambda n: n.driver.core.epoch if n.driver else -1)
        await trio.sleep(0.02)


async def free_ports(count: int) -> list[int]:
    ports = []
    for _ in range(count):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        sock.close()
    return ports


async def test_a_quorum_on_tcp_fails_over_and_catches_up(tmp_path: Path) -> None:
    ports = dict(zip(VOTERS, await free_ports(len(VOTERS)), strict=True))
    nodes = {i: Node(i, tmp_path / f"node{i}" / "__cluster_metadata-0", ports[i]) for i in VOTERS}
    for node in nodes.values():
        node.directory.parent.mkdir()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                await start(nursery, node, ports)
            leader = await wait_leader(nodes)
            assert leader.driver is not None
            last = leader.driver.append([b"x0", b"x1", b"x2"])
            assert last is not None
            for node in nodes.values():
                assert node.driver is not None
                await node.driver.wait_applied(last + 2)
            assert all(n.applied == [b"x0", b"x1", b"x2"] for n in nodes.values())

            # Another cluster's fetch is refused, and changes nothing.
            other = WireTransport(
                TcpNetwork(),
                {leader.node_id: ("127.0.0.1", leader.port)},
                node_id=99,
                cluster_id="another",
                request_timeout_ms=600,
            )
            await nursery.start(other.serve)
            refused = await other.send(leader.node_id, FetchRequest(99, 1, 0, 0))
            assert isinstance(refused, FetchResponse)
            assert refused.error is ErrorCode.INCONSISTENT_CLUSTER_ID

            epoch = leader.driver.core.epoch
            assert leader.scope is not None
            leader.scope.cancel()
            leader.driver = None
            successor = await wait_leader(nodes)
            assert successor.driver is not None and successor.driver.core.epoch > epoch
            more = successor.driver.append([b"y0"])
            assert more is not None
            for node in nodes.values():
                if node.driver is not None:
                    await node.driver.wait_applied(more)

            await start(nursery, leader, ports)
            assert leader.driver is not None
            await leader.driver.wait_applied(more)
            assert leader.applied == [b"x0", b"x1", b"x2", b"y0"]
            assert {tuple(n.applied) for n in nodes.values()} == {(b"x0", b"x1", b"x2", b"y0")}
            nursery.cancel_scope.cancel()


async def test_the_quorum_listener_closes_on_what_it_does_not_serve(tmp_path: Path) -> None:
    """An API outside the quorum's, a version other than KRaft's, or a frame above the bound:
    the connection closes with nothing answered, and the node keeps serving."""
    store = RaftStore.open(OsFileSystem(), str(tmp_path / "__cluster_metadata-0"), now_ms=lambda: 0)
    core = RaftCore(1, (1,), store.load(), now_ms=now_ms(), rng=random.Random(1), config=FAST)

    class NoPeers:
        async def send(self, destination: int, request: object) -> None:
            return None

    driver = RaftDriver(
        core, store, transport=NoPeers(), run_blocking=run_in_thread, apply=lambda ready: None
    )
    produce = encode_request(
        0,
        8,
        1,
        "intruder",
        {"transactional_id": None, "acks": 1, "timeout_ms": 1000, "topic_data": []},
    )
    old_vote = encode_request(52, 0, 2, "intruder", {"cluster_id": CLUSTER, "topics": []})
    huge = (QUORUM_FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"\x00" * 64
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.serve)
            for frame in (produce, old_vote, huge):
                client, server = trio.testing.memory_stream_pair()
                serve = functools.partial(serve_quorum_connection, cluster_id=CLUSTER)
                nursery.start_soon(serve, server, driver)
                await client.send_all(frame)
                assert await client.receive_some(1024) == b""  # closed, nothing answered
            assert core.role is Role.LEADER  # still serving
            nursery.cancel_scope.cancel()
    store.close()
