"""A deterministic simulation of one tidelog cluster with partition replication, its
clients and faults, in one trio process.

One seed gives one history (see `harness` for how time, scheduling, the network, the
disks and blocking work are made deterministic; the pieces are in `sim_support`). The
cluster: 3 to 5 combined broker+controller nodes (the count drawn from the seed), each on
a host of its own with its own `MemoryFileSystem`, forming one Raft controller quorum of
all of them; one topic of `PARTITIONS` partitions, replication factor 3,
`min.insync.replicas=2`, no fsync on append (Kafka's default: an acknowledged record is in
the page cache of every in-sync replica, not necessarily on a disk, so power cuts strike one
node at a time and only once every ISR is whole again: see `cluster_faults`). Clients are
on hosts of their own:

- producers (idempotent, acks=all, retrying until their delivery timeout), each sending
  to every partition; every send is recorded (invoke, then ok with its offset, or info
  when it failed: it may or may not have been written);
- consumers, each reading every partition from offset 0, recording every poll.

Phases: the cluster starts and the topic is created; the workload runs for `duration_s`
under the fault schedule (`cluster_faults`); then the heal phase: every fault undone,
every node running, producers finish what they have, and the cluster is given up to
`HEAL_TIMEOUT_S` to converge (`cluster_invariants.convergence_problems`); then every
replica's log must be its leader's, and a final reader reads every partition from its
start. The run is judged by the checker (no anomaly, nothing acknowledged lost or unseen),
by the invariants checked after every scheduling step (`InvariantMonitor`), by convergence
and agreement, and by the absence of a crash (an exception out of a broker or a client).

The trace is every fault, every log line and every recorded operation, with trio times;
its SHA-256 is the trace hash. A failing run's report has the seed and the command that
replays it.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field

import trio
import trio.testing

from tests.simulation.checker import CheckResult, HistoryRecorder, Op, OpType, Send, check
from tests.simulation.cluster_faults import FaultSchedule
from tests.simulation.cluster_invariants import (
    InvariantMonitor,
    Violation,
    convergence_problems,
    replica_disagreements,
)
from tests.simulation.sim_support import (
    BrokerProcess,
    ClientOps,
    seeded_scheduler,
    sim_now_ms,
    trace_hash,
    traced_logging,
)
from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.log_context import node_logging
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.client.connection import Connector
from tidelog.client.consumer import Consumer
from tidelog.client.producer import Producer
from tidelog.client.structs import TopicPartition

TOPIC = "events"
PARTITIONS = 4
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093
DATA_DIR = "/data"
SESSION_TIMEOUT_MS = 3_000
HEARTBEAT_INTERVAL_MS = 500
REPLICA_LAG_MS = 2_000
CONNECT_TIMEOUT_MS = 5_000
STARTUP_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 60.0
"""How long a healed cluster may take to converge before the run fails (liveness)."""
FINAL_READ_TIMEOUT_S = 60.0
EVENTS = {
    "fenced": "missed heartbeats",
    "truncated": "diverged from leader",
    "isr-changed": "tidelog.broker.isr: ISR of",
    "shut-down": "completed its controlled shutdown",
    "recovered": "truncating",
}
"""Broker log lines that show what a run exercised: sessions expired, followers truncated
on divergence, ISR changes committed, controlled shutdowns, logs cut at recovery."""


@dataclass(frozen=True)
class Variant:
    """How the producers acknowledge: `acks`, with idempotence for acks=all only (Kafka
    requires acks=all for it)."""

    name: str
    acks: int | str = "all"


REPLICATED = Variant("replicated")
"""Correct: acks=all with min.insync.replicas=2 loses nothing under these faults."""
LEADER_ACKS = Variant("leader-acks", acks=1)
"""Broken on purpose (the checker must catch it): with acks=1 the leader acknowledges a
record as soon as it has appended it, before any follower has it; when the leadership
moves to a follower that lacks it, the old leader truncates it on its return (Kafka's
acks=1 loses records at failover the same way)."""


@dataclass
class ClusterOutcome:
    seed: int
    variant: Variant
    nodes: int
    trace: list[str] = field(repr=False)
    result: CheckResult = field(repr=False)
    faults: dict[str, int]
    history: tuple[Op, ...] = field(repr=False)
    violation: Violation | None
    problems: list[str]
    """Convergence and agreement failures, and a crash's traceback."""
    first_fault_s: float | None
    leader_epochs: int
    """How many (partition, leader epoch) leaderships there were."""
    steps: int
    elapsed_s: float
    trace_hash: str = field(init=False)
    events: dict[str, int] = field(init=False)
    """How often the brokers logged each of `EVENTS`."""

    def __post_init__(self) -> None:
        self.trace_hash = trace_hash(self.trace)
        self.events = {
            name: sum(1 for line in self.trace if " log " in line and text in line)
            for name, text in EVENTS.items()
        }

    @property
    def valid(self) -> bool:
        return self.result.valid and self.violation is None and not self.problems

    @property
    def acked_after_first_fault(self) -> int:
        """Sends acknowledged after the first fault struck."""
        if self.first_fault_s is None:
            return 0
        return sum(
            1
            for op in self.history
            if op.type is OpType.OK
            and isinstance(op.action, Send)
            and op.time >= self.first_fault_s
        )

    def report(self, replay: str) -> str:
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        lines = [
            f"cluster simulation seed {self.seed} ({self.variant.name}, {self.nodes} nodes): "
            f"faults {faults or 'none'}; {self.leader_epochs} leaderships, {self.steps} steps, "
            f"{self.elapsed_s:.0f} simulated s; trace {self.trace_hash[:16]}",
            self.result.summary(),
        ]
        if self.violation is not None:
            lines.append(f"invariant violated: {self.violation}")
        lines.extend(self.problems)
        lines.append(f"replay: {replay}")
        return "\n".join(lines)


class ClusterSimulation:
    """See the module docstring. `run()` returns the outcome; it does not raise for what
    it judges (the caller asserts on `outcome.valid`)."""

    def __init__(
        self,
        seed: int,
        *,
        variant: Variant = REPLICATED,
        nodes: int | None = None,
        duration_s: float = 30.0,
        producers: int = 2,
        consumers: int = 1,
    ) -> None:
        self.seed = seed
        self.variant = variant
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.trace: list[str] = []
        self.recorder = HistoryRecorder(trio.current_time)
        self.ops = ClientOps(self.recorder, self.note)
        self.network = MemoryNetwork(
            rng=random.Random(self.rng.getrandbits(64)), on_event=self.note
        )
        count = nodes if nodes is not None else self.rng.choice((3, 3, 3, 4, 5))
        voters = ",".join(f"{i}@{_host(i)}:{CONTROLLER_PORT}" for i in range(1, count + 1))
        self.nodes = [
            BrokerProcess(
                self.network,
                _host(i),
                _config(i, voters),
                disk_seed=self.rng.getrandbits(32),
                rng=random.Random(self.rng.getrandbits(64)),
            )
            for i in range(1, count + 1)
        ]
        self.producer_hosts = [f"producer-{i}" for i in range(producers)]
        self.consumer_hosts = [f"consumer-{i}" for i in range(consumers)]
        self.client_hosts = self.producer_hosts + self.consumer_hosts
        self.partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        self.faults = FaultSchedule(
            self,
            random.Random(self.rng.getrandbits(64)),
            lanes=self.rng.choice((2, 3, 3, 4)),
            max_down=self.rng.choice((1, count - 1)) if count > 3 else 1,
            gap_s=(0.2, 1.5),
            session_timeout_s=SESSION_TIMEOUT_MS / 1000,
        )
        self.monitor = InvariantMonitor(self.nodes, self._stop)
        self.problems: list[str] = []
        self._main_scope: trio.CancelScope | None = None
        self._node_nursery: trio.Nursery | None = None
        self._next_value = 0
        self._elapsed_s = 0.0

    # -- what the fault schedule uses

    def note(self, text: str) -> None:
        self.trace.append(f"{trio.current_time():.6f} {text}")

    def restart(self, node: BrokerProcess) -> None:
        """Start a new process on `node`'s host (not waiting for it to serve)."""
        assert self._node_nursery is not None
        if not node.running:
            self.note(f"restart {node.host}")
            self._node_nursery.start_soon(self._start, node)

    async def _start(self, node: BrokerProcess) -> None:
        assert self._node_nursery is not None
        await node.start(self._node_nursery, wait=False)

    def isr_full(self) -> bool:
        """Every node runs and, as each sees it, every partition's ISR is its assignment."""
        for node in self.nodes:
            if not node.running or node.broker is None:
                return False
            try:
                topic = node.broker.image.topic(TOPIC)
            except RuntimeError:  # its storage is not open yet
                return False
            if topic is None or any(sorted(p.isr) != sorted(p.replicas) for p in topic.partitions):
                return False
        return True

    # -- running

    def _stop(self) -> None:
        if self._main_scope is not None:
            self._main_scope.cancel()

    def run(self) -> ClusterOutcome:
        crash: BaseException | None = None
        with traced_logging(self.trace), seeded_scheduler(self.seed):
            try:
                trio.run(
                    self._main,
                    clock=trio.testing.MockClock(autojump_threshold=0),
                    instruments=[self.monitor],
                )
            except Exception as exc:  # a broker's or client's bug: reported, not raised
                crash = exc
        if crash is not None:
            self.problems.append("crashed: " + "".join(traceback.format_exception(crash)).rstrip())
        history = self.recorder.history
        for op in history:
            self.trace.append(f"op {op}")
        return ClusterOutcome(
            self.seed,
            self.variant,
            len(self.nodes),
            self.trace,
            check(history),
            dict(self.faults.counts),
            history,
            self.monitor.violation,
            self.problems,
            self.faults.first_fault_s,
            len(self.monitor.leaders),
            self.monitor.steps,
            self._elapsed_s,
        )

    async def _main(self) -> None:
        with trio.CancelScope() as self._main_scope:
            try:
                await self._phases()
            finally:
                self._elapsed_s = trio.current_time()

    async def _phases(self) -> None:
        async with trio.open_nursery() as nodes:
            self._node_nursery = nodes
            for node in self.nodes:
                await node.start(nodes, wait=False)
            with trio.fail_after(STARTUP_TIMEOUT_S):
                await self._create_topic()
            end = trio.current_time() + self.duration_s
            async with trio.open_nursery() as clients:
                async with trio.open_nursery() as producers:
                    for host in self.producer_hosts:
                        producers.start_soon(self._produce, host, end)
                    for host in self.consumer_hosts:
                        clients.start_soon(self._consume, host)
                    await self.faults.run(end)
                await self._converge()
                clients.cancel_scope.cancel()
            if not self.problems:
                self.problems.extend(replica_disagreements(self.nodes, self.partitions))
            if not self.problems:
                await self._final_read()
            nodes.cancel_scope.cancel()

    async def _create_topic(self) -> None:
        first = self.nodes[0]
        ids = sorted(node.config.node_id for node in self.nodes)
        while True:
            await trio.sleep(0.1)
            broker = first.broker
            if broker is None:
                continue
            try:
                image = broker.image
            except RuntimeError:
                continue
            if sorted(b.node_id for b in image.brokers() if not b.fenced) == ids:
                break
        with node_logging(first.config.node_id):  # node 1's code runs in this task
            await broker.topics.create_topic(
                TOPIC,
                num_partitions=PARTITIONS,
                replication_factor=REPLICATION_FACTOR,
                configs={"min.insync.replicas": str(MIN_INSYNC_REPLICAS)},
            )
        while convergence_problems(self.nodes, self.partitions):
            await trio.sleep(0.1)
        self.note("topic created; the workload starts")

    async def _converge(self) -> None:
        with trio.move_on_after(HEAL_TIMEOUT_S):
            while problems := convergence_problems(self.nodes, self.partitions):
                await trio.sleep(0.25)
            self.note("converged")
            return
        self.problems.append(f"not converged {HEAL_TIMEOUT_S:.0f}s after the heal:")
        self.problems.extend(f"  {problem}" for problem in problems)

    # -- clients

    def _bootstrap(self) -> str:
        return ",".join(f"{node.host}:{CLIENT_PORT}" for node in self.nodes)

    def _connector(self, host: str) -> Connector:
        return self.network.host(host).connector(timeout_ms=CONNECT_TIMEOUT_MS)

    async def _produce(self, host: str, end: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        producer = Producer(
            bootstrap_servers=self._bootstrap(),
            connector=self._connector(host),
            rng=random.Random(rng.getrandbits(64)),
            now_ms=sim_now_ms,
            acks=self.variant.acks,
            enable_idempotence=self.variant.acks == "all",
            linger_ms=5,
            request_timeout_ms=5_000,
            delivery_timeout_ms=20_000,
            metadata_max_age_ms=5_000,
        )
        async with producer, trio.open_nursery() as sends:
            while trio.current_time() < end:
                for _ in range(rng.randint(1, 3)):
                    tp = rng.choice(self.partitions)
                    self._next_value += 1
                    value = f"{host}-{self._next_value}"
                    sends.start_soon(self.ops.send, producer, host, tp, value)
                await trio.sleep(rng.uniform(0.1, 0.6))

    async def _consume(self, host: str) -> None:
        consumer = Consumer(
            bootstrap_servers=self._bootstrap(),
            connector=self._connector(host),
            rng=random.Random(self.rng.getrandbits(64)),
            auto_offset_reset="earliest",
            request_timeout_ms=5_000,
            metadata_max_age_ms=5_000,
        )
        async with consumer:
            await self.ops.consume(consumer, host, self.partitions, end=float("inf"))

    async def _final_read(self) -> None:
        consumer = Consumer(
            bootstrap_servers=self._bootstrap(),
            connector=self._connector("final-reader"),
            rng=random.Random(self.rng.getrandbits(64)),
        )
        with trio.move_on_after(FINAL_READ_TIMEOUT_S) as scope:
            async with consumer:
                await self.ops.final_read(consumer, self.partitions)
        if scope.cancelled_caught:
            self.problems.append(f"the final read did not finish in {FINAL_READ_TIMEOUT_S:.0f}s")


def _host(node_id: int) -> str:
    return f"node-{node_id}"


def _config(node_id: int, voters: str) -> BrokerConfig:
    host = _host(node_id)
    return BrokerConfig(
        node_id=node_id,
        data_dir=DATA_DIR,
        listeners=(
            ListenerConfig(name="PLAINTEXT", host=host, port=CLIENT_PORT),
            ListenerConfig(name="CONTROLLER", host=host, port=CONTROLLER_PORT),
        ),
        process_roles="broker,controller",
        controller_quorum_voters=voters,
        controller_listener_names="CONTROLLER",
        broker_session_timeout_ms=SESSION_TIMEOUT_MS,
        broker_heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        replica_lag_time_max_ms=REPLICA_LAG_MS,
        default_replication_factor=REPLICATION_FACTOR,
        min_insync_replicas=MIN_INSYNC_REPLICAS,
        auto_create_topics_enable=False,
        group_initial_rebalance_delay_ms=0,
        shutdown_timeout_ms=5_000,
    )


def run_cluster_simulation(seed: int, **options: object) -> ClusterOutcome:
    return ClusterSimulation(seed, **options).run()  # type: ignore[arg-type]
