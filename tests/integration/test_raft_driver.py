"""Three Raft drivers in one trio run: real RaftStores on MemoryFileSystems, the wire codec
on every message, trio's MockClock. A leader is elected, entries commit and apply
everywhere in one order, a crashed leader (losing what it had not fsynced) is replaced, and
it comes back from its store and catches up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from tidelog.broker.controller.raft.core import RaftConfig, RaftCore, Ready, Role
from tidelog.broker.controller.raft.driver import RaftDriver
from tidelog.broker.controller.raft.messages import RaftRequest, RaftResponse
from tidelog.broker.controller.raft.store import RaftStore, RaftStoreError
from tidelog.broker.controller.raft.wire import (
    VERSIONS,
    api_of,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from tidelog.broker.runner import run_inline
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.storage.filesystem import FaultPoint, FaultPoints, MemoryFileSystem

CLUSTER = "raft-driver-test"
VOTERS = (1, 2, 3)


def over_the_wire(request: RaftRequest) -> RaftRequest:
    api = api_of(request)
    w = Writer()
    api.encode_request(w, encode_request(request, CLUSTER), VERSIONS[api.key])
    return decode_request(api.key, api.decode_request(Reader(w.getvalue()), VERSIONS[api.key]),
                          CLUSTER)  # fmt: skip


def back_over_the_wire(request: RaftRequest, response: RaftResponse) -> RaftResponse:
    api = api_of(request)
    w = Writer()
    api.encode_response(w, encode_response(response, now_ms=0), VERSIONS[api.key])
    return decode_response(api.key, api.decode_response(Reader(w.getvalue()), VERSIONS[api.key]))


@dataclass
class Node:
    node_id: int
    fs: MemoryFileSystem
    faults: FaultPoints
    driver: RaftDriver | None = None
    scope: trio.CancelScope | None = None
    applied: list[bytes] = field(default_factory=list)


class Cluster:
    """The in-process transport: a request reaches a running node, through the codec."""

    def __init__(self) -> None:
        self.nodes = {}
        for i in VOTERS:
            faults = FaultPoints()
            self.nodes[i] = Node(i, MemoryFileSystem(seed=i, faults=faults), faults)

    async def send(
        self, source: int, destination: int, request: RaftRequest
    ) -> RaftResponse | None:
        peer = self.nodes[destination].driver
        if peer is None:
            return None
        response = await peer.handle(source, over_the_wire(request))
        return back_over_the_wire(request, response)

    async def start(self, nursery: trio.Nursery, node: Node) -> None:
        store = RaftStore.open(node.fs, "/__cluster_metadata-0", now_ms=lambda: 0)
        core = RaftCore(
            node.node_id,
            VOTERS,
            store.load(),
            now_ms=int(trio.current_time() * 1000),
            rng=random.Random(node.node_id),
            config=RaftConfig(),
        )
        node.applied = []

        def apply(ready: Ready) -> None:
            node.applied.extend(e.value for e in ready.committed if e.control_type is None)

        source = node.node_id

        class Transport:
            async def send(self, destination: int, request: RaftRequest) -> RaftResponse | None:
                return await cluster.send(source, destination, request)

        cluster = self
        driver = RaftDriver(core, store, transport=Transport(), run_blocking=run_inline,
                            apply=apply)  # fmt: skip
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                try:
                    await driver.serve()
                except* RaftStoreError:  # an injected fsync failure: the process dies
                    node.driver = None
                    node.faults.disarm_all()
                    node.fs.crash()

        node.driver, node.scope = driver, scope
        nursery.start_soon(run)

    def crash_at_next_fsync(self, node: Node) -> None:
        """The node dies when it next makes its log durable: what it appended but had not
        fsynced is lost, and nothing of that Ready was sent."""
        node.faults.arm(FaultPoint.FSYNC, path_contains=".log")

    def crash(self, node: Node) -> None:
        assert node.scope is not None and node.driver is not None
        node.scope.cancel()
        node.driver = None
        node.fs.crash()

    async def wait_leader(self) -> Node:
        while True:
            leaders = [
                n for n in self.nodes.values() if n.driver and n.driver.core.role is Role.LEADER
            ]
            if leaders:
                return max(leaders, key=lambda n: n.driver.core.epoch if n.driver else -1)
            await trio.sleep(0.05)


async def test_three_drivers_elect_commit_fail_over_and_catch_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    async with trio.open_nursery() as nursery:
        for node in cluster.nodes.values():
            await cluster.start(nursery, node)
        leader = await cluster.wait_leader()
        assert leader.driver is not None
        first_epoch = leader.driver.core.epoch
        offsets = [leader.driver.append([f"a{i}".encode()]) for i in range(20)]
        assert None not in offsets
        last = offsets[-1]
        assert last is not None
        for node in cluster.nodes.values():
            assert node.driver is not None
            with trio.fail_after(10):
                await node.driver.wait_applied(last)
        expected = [f"a{i}".encode() for i in range(20)]
        assert all(n.applied == expected for n in cluster.nodes.values())

        cluster.crash(leader)
        successor = await cluster.wait_leader()
        assert successor is not leader and successor.driver is not None
        assert successor.driver.core.epoch > first_epoch
        more = successor.driver.append([b"b0", b"b1"])
        assert more is not None
        live = [n for n in cluster.nodes.values() if n.driver is not None]
        for node in live:
            assert node.driver is not None
            with trio.fail_after(10):
                await node.driver.wait_applied(more + 1)
        expected += [b"b0", b"b1"]
        assert all(n.applied == expected for n in live)

        # The crashed leader restarts from its store, follows and applies the same history.
        await cluster.start(nursery, leader)
        assert leader.driver is not None
        assert leader.driver.core.epoch >= first_epoch  # its persisted epoch survived
        with trio.fail_after(10):
            await leader.driver.wait_applied(more + 1)
        assert leader.applied == expected
        assert leader.driver.core.role is Role.FOLLOWER
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("seed", range(40))
async def test_crashes_that_lose_unsynced_bytes_lose_no_committed_entry(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Random crashes (each losing whatever its store had not fsynced) and restarts, while
    values are appended: every value the leader saw committed is applied everywhere, in one
    order, once the crashed nodes are back."""
    rng = random.Random(seed)
    cluster = Cluster()
    committed: list[bytes] = []
    async with trio.open_nursery() as nursery:
        for node in cluster.nodes.values():
            await cluster.start(nursery, node)
        for round_ in range(8):
            leader = await cluster.wait_leader()
            assert leader.driver is not None
            values = [f"{seed}-{round_}-{i}".encode() for i in range(rng.randint(1, 5))]
            last = leader.driver.append(values)
            assert last is not None
            last += len(values) - 1
            victim = rng.choice(list(cluster.nodes.values()))
            crash_after_s = rng.uniform(0, 0.05)
            with trio.move_on_after(crash_after_s):
                await leader.driver.wait_applied(last)
                committed.extend(values)
            if victim.driver is not None and all(n.driver for n in cluster.nodes.values()):
                if rng.random() < 0.5:
                    cluster.crash(victim)
                else:
                    cluster.crash_at_next_fsync(victim)
            await trio.sleep(rng.uniform(0, 3))
            for node in cluster.nodes.values():
                if node.driver is None and rng.random() < 0.7:
                    await cluster.start(nursery, node)
        for node in cluster.nodes.values():
            node.faults.disarm_all()  # the faults are over
            if node.driver is None:
                await cluster.start(nursery, node)
        leader = await cluster.wait_leader()
        assert leader.driver is not None
        marker = leader.driver.append([b"end"])
        assert marker is not None
        for node in cluster.nodes.values():
            assert node.driver is not None
            with trio.fail_after(30):
                await node.driver.wait_applied(marker)
        histories = {tuple(n.applied) for n in cluster.nodes.values()}
        assert len(histories) == 1
        (history,) = histories
        applied = [v for v in history if v != b"end"]
        assert [v for v in applied if v in set(committed)] == committed
        assert len(set(applied)) == len(applied)  # nothing applied twice
        nursery.cancel_scope.cancel()
