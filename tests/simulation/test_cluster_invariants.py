"""The cluster simulation's invariant monitor is not blind: states that break each
invariant, built by hand on real partitions, are reported, and a healthy one is not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import trio
import trio.testing

from tests.simulation.cluster_invariants import InvariantMonitor
from tests.simulation.sim_support import BrokerProcess
from tidelog.broker.config import BrokerConfig
from tidelog.broker.partition.state import PartitionState, Role
from tidelog.broker.replica_manager import Partition
from tidelog.client.protocol.records import RecordInput, encode_batch
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import MemoryFileSystem
from tidelog.storage.log_directory import LogDirectory


class FakeReplicas:
    def __init__(self, partitions: list[Partition]) -> None:
        self._partitions = partitions

    def partitions(self) -> list[Partition]:
        return list(self._partitions)


class FakeBroker:
    def __init__(self, partitions: list[Partition]) -> None:
        self.replicas = FakeReplicas(partitions)


class FakeNode:
    """What the monitor reads of a `BrokerProcess`: its id, whether it runs, its replicas."""

    running = True

    def __init__(self, node_id: int, partitions: list[Partition]) -> None:
        self.config = BrokerConfig(node_id=node_id)
        self.broker = FakeBroker(partitions)


def replica(node_id: int, records: int, *, leader_epoch: int, leader: bool) -> Partition:
    """Partition t-0 on broker `node_id` with `records` records, leader or follower."""
    directory = LogDirectory.open("/data", MemoryFileSystem(seed=node_id), lambda: 0)
    log = directory.get_or_create("t", 0, LogConfig())
    for _ in range(records):
        log.append(encode_batch([RecordInput(value=b"v")]), leader_epoch=leader_epoch)
    state = PartitionState(
        node_id,
        role=Role.LEADER if leader else Role.FOLLOWER,
        leader_epoch=leader_epoch,
        log_end_offset=records,
    )
    return Partition("t", 0, log, state)


def violation_of(nodes: Sequence[FakeNode], change: Callable[[], None] | None = None) -> str | None:
    """The kind of violation the monitor finds in `nodes` (checked before and after
    `change`, a callable that alters them), or None."""
    found: list[str] = []

    async def main() -> None:
        monitor = InvariantMonitor(cast(Sequence[BrokerProcess], nodes), lambda: None)
        monitor.check(monitor.nodes)
        if change is not None:
            change()
            monitor.check(monitor.nodes)
        if monitor.violation is not None:
            found.append(monitor.violation.kind)

    trio.run(main, clock=trio.testing.MockClock())
    return found[0] if found else None


def test_a_healthy_leader_and_follower_break_nothing() -> None:
    leader = replica(1, 3, leader_epoch=2, leader=True)
    follower = replica(2, 2, leader_epoch=2, leader=False)
    leader.state.high_watermark = 2
    follower.state.high_watermark = 2

    def advance() -> None:
        leader.state.high_watermark = 3

    assert violation_of([FakeNode(1, [leader]), FakeNode(2, [follower])], advance) is None


def test_two_leaders_of_one_epoch_are_reported() -> None:
    first = replica(1, 3, leader_epoch=2, leader=True)
    second = replica(2, 3, leader_epoch=2, leader=True)
    assert violation_of([FakeNode(1, [first]), FakeNode(2, [second])]) == "one-leader-per-epoch"


def test_a_leader_high_watermark_going_back_in_its_epoch_is_reported() -> None:
    leader = replica(1, 3, leader_epoch=2, leader=True)
    leader.state.high_watermark = 3

    def back() -> None:
        leader.state.high_watermark = 1

    assert violation_of([FakeNode(1, [leader])], back) == "hw-backwards"


def test_a_high_watermark_past_the_log_end_is_reported() -> None:
    follower = replica(2, 2, leader_epoch=2, leader=False)
    follower.state.high_watermark = 5
    assert violation_of([FakeNode(2, [follower])]) == "hw-past-log-end"
