"""The replication invariants of a simulated cluster, checked after every scheduling step,
and the convergence checks at the end of a run.

`InvariantMonitor` is a trio instrument: `after_task_step` runs after every step of every
task (the only points at which any state can change, since the whole cluster is one trio
process without threads), and looks at every running broker's partitions:

    one-leader-per-epoch   no two brokers ever lead the same (partition, leader epoch):
                           every broker's claim of a leadership is recorded for the run
    hw-backwards           the high watermark of a partition a broker leads never goes
                           back within one leader epoch (across restarts too: a restarted
                           broker leads only under a new epoch)
    hw-past-log-end        no replica's high watermark exceeds its log end offset
    livelock               the simulated clock moves at least once every `STUCK_STEPS`
                           steps (tasks that spin at one simulated time would hang the run)

A broker's partition state changes only in its own tasks, and each of those runs in the
broker's logging context (`log_context`): after a step the monitor checks the partitions of
the broker whose task it was, and every `FULL_CHECK_STEPS` steps those of every broker.
The first violation is kept (`violation`) and `on_violation` is called once (the
simulation stops there). The checks cost a few attribute reads per partition and step.

`convergence_problems` and `replica_disagreements` judge the cluster once faults are over
and it had time to heal: every partition led by one broker with its whole assignment in
sync and every replica caught up to the leader's high watermark, and every replica's log
the same batches as its leader's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from tests.simulation.sim_support import BrokerProcess
from tidelog.broker.log_context import current_node_id
from tidelog.broker.partition.state import Role
from tidelog.broker.replica_manager import Partition, ReplicaManager

PartitionKey = tuple[str, int]
FULL_CHECK_STEPS = 64
STUCK_STEPS = 200_000
"""A run of 20 simulated seconds takes some 50,000 steps: this many without the simulated
clock moving means tasks spin (the clock moves only when every task waits)."""


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str
    time_s: float

    def __str__(self) -> str:
        return f"{self.kind} at {self.time_s:.3f}s: {self.detail}"


def replicas_of(node: BrokerProcess) -> ReplicaManager | None:
    """The replica manager of a running node (None before its storage is open)."""
    if not node.running or node.broker is None:
        return None
    try:
        return node.broker.replicas
    except RuntimeError:  # serve() has not opened the node's state yet
        return None


class InvariantMonitor(trio.abc.Instrument):
    """See the module docstring."""

    def __init__(self, nodes: Sequence[BrokerProcess], on_violation: Callable[[], None]) -> None:
        self.nodes = nodes
        self.on_violation = on_violation
        self.violation: Violation | None = None
        self.leaders: dict[tuple[PartitionKey, int], int] = {}
        """(partition, leader epoch) -> the broker that led it."""
        self.high_watermarks: dict[tuple[int, PartitionKey, int], int] = {}
        """(broker, partition, leader epoch) -> the highest high watermark it had as leader."""
        self.steps = 0
        self._by_id = {node.config.node_id: node for node in nodes}
        self._time_at_last_look = -1.0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        if self.violation is not None:
            return
        if self.steps % STUCK_STEPS == 0:
            now = trio.current_time()
            if now == self._time_at_last_look:
                self._fail("livelock", f"{STUCK_STEPS} scheduling steps at one simulated time")
                self.on_violation()
                return
            self._time_at_last_look = now
        # A partition's state changes only in its broker's tasks (each runs in the node's
        # logging context); every `FULL_CHECK_STEPS` steps every broker is checked anyway.
        if self.steps % FULL_CHECK_STEPS == 0:
            nodes: Sequence[BrokerProcess] = self.nodes
        else:
            node_id = task.context.run(current_node_id)
            node = self._by_id.get(node_id) if node_id is not None else None
            if node is None:
                return
            nodes = (node,)
        if self.check(nodes):
            self.on_violation()

    def check(self, nodes: Sequence[BrokerProcess]) -> bool:
        """Check the partitions of `nodes` that run; whether an invariant is violated (the
        first violation is kept in `violation`)."""
        for node in nodes:
            replicas = replicas_of(node)
            if replicas is not None and self._check(node.config.node_id, replicas):
                return True
        return False

    def _check(self, node_id: int, replicas: ReplicaManager) -> bool:
        """Check every partition of one broker; whether an invariant is violated. (Runs
        after every step: the common case, a follower or an unchanged leader, is kept to a
        few attribute reads.)"""
        leaders, high_watermarks = self.leaders, self.high_watermarks
        for partition in replicas.partitions():
            state = partition.state
            high_watermark = state.high_watermark
            log_end = partition.log.log_end_offset
            if high_watermark > log_end:
                self._fail(
                    "hw-past-log-end",
                    f"broker {node_id} {_name(partition.key)} ({state.role.value}, epoch "
                    f"{state.leader_epoch}): high watermark {high_watermark} > log end {log_end}",
                )
                return True
            if state.role is not Role.LEADER:
                continue
            key, epoch = (partition.topic, partition.index), state.leader_epoch
            leader = leaders.setdefault((key, epoch), node_id)
            if leader != node_id:
                self._fail(
                    "one-leader-per-epoch",
                    f"{_name(key)} leader epoch {epoch} led by broker {leader} and broker "
                    f"{node_id}",
                )
                return True
            seen_key = (node_id, key, epoch)
            seen = high_watermarks.get(seen_key, -1)
            if high_watermark < seen:
                self._fail(
                    "hw-backwards",
                    f"broker {node_id} leading {_name(key)} in epoch {epoch}: high watermark "
                    f"{high_watermark} after {seen}",
                )
                return True
            if high_watermark > seen:
                high_watermarks[seen_key] = high_watermark
        return False

    def _fail(self, kind: str, detail: str) -> None:
        self.violation = Violation(kind, detail, trio.current_time())


def _name(key: PartitionKey) -> str:
    return f"{key[0]}-{key[1]}"


def convergence_problems(nodes: Sequence[BrokerProcess], keys: Sequence[PartitionKey]) -> list[str]:
    """What keeps the cluster from having converged (empty once it has): for each
    partition, as every running broker sees it, one leader in whose view the ISR is the
    whole assignment, the high watermark at its log end, and every replica's log ending
    there with the same high watermark."""
    problems: list[str] = []
    by_node = {node.config.node_id: replicas_of(node) for node in nodes}
    for key in keys:
        replicas = {
            node_id: partition
            for node_id, manager in by_node.items()
            if manager is not None and (partition := manager.partition(*key)) is not None
        }
        leaders = [node_id for node_id, p in replicas.items() if p.state.is_leader]
        if len(leaders) != 1:
            problems.append(f"{_name(key)}: leaders {leaders}")
            continue
        leader = replicas[leaders[0]].state
        if sorted(leader.isr) != sorted(leader.replicas):
            problems.append(f"{_name(key)}: ISR {leader.isr} of replicas {leader.replicas}")
        for replica in leader.replicas:
            partition = replicas.get(replica)
            if partition is None:
                problems.append(f"{_name(key)}: replica {replica} is not running")
                continue
            state = partition.state
            if (
                partition.log.log_end_offset != leader.log_end_offset
                or state.high_watermark != leader.log_end_offset
                or state.leader_epoch != leader.leader_epoch
            ):
                problems.append(
                    f"{_name(key)}: replica {replica} at log end {partition.log.log_end_offset}, "
                    f"high watermark {state.high_watermark}, epoch {state.leader_epoch}; leader "
                    f"{leader.node_id} at {leader.log_end_offset} in epoch {leader.leader_epoch}"
                )
    return problems


def replica_disagreements(
    nodes: Sequence[BrokerProcess], keys: Sequence[PartitionKey]
) -> list[str]:
    """Partitions whose replicas' logs are not the same batches (offsets, leader epoch,
    CRC) as their leader's; meaningful once `convergence_problems` is empty."""
    problems: list[str] = []
    managers = {node.config.node_id: replicas_of(node) for node in nodes}
    for key in keys:
        batches: dict[int, list[tuple[int, int, int, int]]] = {}
        leader: int | None = None
        for node_id, manager in managers.items():
            partition = manager.partition(*key) if manager is not None else None
            if partition is None:
                continue
            batches[node_id] = _batches(partition)
            if partition.state.is_leader:
                leader = node_id
        if leader is None:
            continue
        for node_id, mine in batches.items():
            theirs = batches[leader]
            if mine != theirs:
                first = next(
                    (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                    min(len(mine), len(theirs)),
                )
                problems.append(
                    f"{_name(key)}: broker {node_id}'s log differs from leader {leader}'s from "
                    f"batch {first}: {mine[first : first + 1]} against {theirs[first : first + 1]}"
                )
    return problems


def _batches(partition: Partition) -> list[tuple[int, int, int, int]]:
    """(base offset, last offset, leader epoch, CRC) of every batch of the log."""
    log = partition.log
    return [
        (h.base_offset, h.base_offset + h.last_offset_delta, h.partition_leader_epoch, h.crc)
        for h in log.batches_from(log.log_start_offset)
    ]
