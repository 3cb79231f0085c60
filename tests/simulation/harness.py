"""A deterministic simulation of tidelog brokers and their clients in one process.

One seed gives one history: every source of nondeterminism is seeded or virtual —

- time: `trio.testing.MockClock(autojump_threshold=0)` (trio time) and a wall clock derived
  from it (`SIM_EPOCH_MS` + trio time) for brokers and producers;
- scheduling: trio's own scheduler shuffles runnable tasks with its module-level random
  source; the simulation seeds it and turns on trio's deterministic scheduling (the mode
  trio uses under Hypothesis);
- the network: `MemoryNetwork` (hosts by name, no sockets);
- disks: one `MemoryFileSystem` per broker host, seeded, whose `crash()` keeps, drops or
  tears whatever was not fsynced (power loss);
- blocking work (fsync, checkpoints, compaction) runs inline (`run_inline`), not in threads;
- randomness of brokers, clients and the fault schedule: `random.Random`s derived from the
  seed.

Brokers here are independent single-node clusters (the controller and replication issues
add clusters of several nodes), each on its own host, with its clients on another. Each gets
a producer (idempotent, acks=all) and a consumer. A fault schedule, one fault at a time,
kills broker processes (kill -9: the page cache survives) and, when the variant allows it,
cuts their power (un-fsynced bytes are lost), then restarts them; it also partitions a
client host from its broker (both ways or one way), pauses a broker host (SIGSTOP: silence,
no resets), resets connections and adds latency. Every
client operation is recorded in a `HistoryRecorder`; at the end every partition is read
from its start by a final reader, and `check` judges the history.

The trace is every recorded operation, every fault and every log line (with its node and
trio time); its SHA-256 is the trace hash, equal for equal seeds. A failing run prints the
seed and the command that replays it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import trio
import trio.testing

from tests.simulation.checker import CheckResult, HistoryRecorder, Op, check
from tests.simulation.sim_support import (
    BrokerProcess,
    ClientOps,
    seeded_scheduler,
    sim_now_ms,
    trace_hash,
    traced_logging,
)
from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.server import Broker
from tidelog.client.connection import Connector
from tidelog.client.consumer import Consumer
from tidelog.client.producer import Producer
from tidelog.client.structs import TopicPartition

PARTITIONS = 2
PORT = 9092
DATA_DIR = "/data"
REPLAY = "TIDELOG_SIM_SEED={seed} .venv/bin/pytest -q {test}"
CONNECT_TIMEOUT_MS = 10_000
FAULTS = ("kill", "kill", "partition", "pause", "reset", "delay")
"""The fault schedule's menu (kills twice as likely: they test durability)."""


@dataclass(frozen=True)
class Variant:
    """How the brokers are run. `flush_messages` is the topic's `flush.messages` (None:
    the broker default, no fsync on append); `power_loss` adds power cuts to the faults."""

    name: str
    flush_messages: int | None
    power_loss: bool


FSYNC_PER_APPEND = Variant("fsync-per-append", flush_messages=1, power_loss=True)
"""Correct: an acknowledged record is on disk, so it survives kill -9 and power loss."""
PROCESS_CRASHES = Variant("process-crashes", flush_messages=None, power_loss=False)
"""Correct: without fsync on append, acknowledged records survive kill -9 (page cache)."""
ACKS_BEFORE_FSYNC = Variant("acks-before-fsync", flush_messages=None, power_loss=True)
"""Broken on purpose: records acknowledged before any fsync, then the power goes."""


@dataclass
class Outcome:
    seed: int
    variant: Variant
    trace: list[str]
    result: CheckResult
    faults: int
    history: tuple[Op, ...]
    trace_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.trace_hash = trace_hash(self.trace)

    def report(self, test: str) -> str:
        return (
            f"simulation seed {self.seed} ({self.variant.name}): {self.faults} faults, "
            f"trace {self.trace_hash[:16]}\n{self.result.summary()}\n"
            f"replay: {REPLAY.format(seed=self.seed, test=test)}"
        )


class SimulatedBroker(BrokerProcess):
    """One single-node cluster's host, with its topic created at its first start."""

    def __init__(self, sim: Simulation, index: int) -> None:
        host = f"node-{index}"
        config = BrokerConfig(
            node_id=0,
            data_dir=DATA_DIR,
            listeners=(ListenerConfig(name="PLAINTEXT", host=host, port=PORT),),
            group_initial_rebalance_delay_ms=0,
            shutdown_timeout_ms=1_000,
        )
        disk_seed = sim.rng.getrandbits(32)
        super().__init__(
            sim.network,
            host,
            config,
            disk_seed=disk_seed,
            rng=random.Random(sim.rng.getrandbits(64)),
        )
        self.sim = sim
        self.topic = f"events-{index}"
        self.up = trio.Event()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{PORT}"

    async def start(self, nursery: trio.Nursery, *, wait: bool = True) -> Broker:
        broker = await super().start(nursery, wait=True)
        if self.incarnations == 1:
            configs = {}
            if self.sim.variant.flush_messages is not None:
                configs["flush.messages"] = str(self.sim.variant.flush_messages)
            await broker.topics.create_topic(self.topic, num_partitions=PARTITIONS, configs=configs)
        self.up.set()
        return broker

    def kill(self, *, power_loss: bool) -> None:
        super().kill(power_loss=power_loss)
        self.up = trio.Event()


class Simulation:
    """See the module docstring. `run()` returns the outcome; it never raises for an
    anomaly (the caller asserts on `outcome.result`)."""

    def __init__(
        self,
        seed: int,
        *,
        variant: Variant = FSYNC_PER_APPEND,
        brokers: int = 3,
        duration_s: float = 2_000.0,
    ) -> None:
        self.seed = seed
        self.variant = variant
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.trace: list[str] = []
        self.recorder = HistoryRecorder(self._trio_now)
        self.ops = ClientOps(self.recorder, self.note)
        self.network = MemoryNetwork(
            rng=random.Random(self.rng.getrandbits(64)), on_event=lambda event: self.note(event)
        )
        self.brokers = [SimulatedBroker(self, i) for i in range(brokers)]
        self.faults = 0
        self._next_value = 0

    @staticmethod
    def _trio_now() -> float:
        return trio.current_time()

    def note(self, text: str) -> None:
        self.trace.append(f"{trio.current_time():.6f} {text}")

    def run(self) -> Outcome:
        with traced_logging(self.trace), seeded_scheduler(self.seed):
            trio.run(self._main, clock=trio.testing.MockClock(autojump_threshold=0))
        for op in self.recorder.history:
            self.trace.append(f"op {op}")
        history = self.recorder.history
        return Outcome(self.seed, self.variant, self.trace, check(history), self.faults, history)

    async def _main(self) -> None:
        async with trio.open_nursery() as brokers:
            for broker in self.brokers:
                await broker.start(brokers)
            end = trio.current_time() + self.duration_s
            async with trio.open_nursery() as clients:
                for index, broker in enumerate(self.brokers):
                    clients.start_soon(self._produce, index, broker, end)
                    clients.start_soon(self._consume, index, broker, end)
                clients.start_soon(self._inject_faults, brokers, end)
            for broker in self.brokers:
                if not broker.up.is_set():
                    await broker.start(brokers)
            for broker in self.brokers:
                await self._final_read(broker)
            brokers.cancel_scope.cancel()

    async def _inject_faults(self, nursery: trio.Nursery, end: float) -> None:
        """One fault at a time, each undone before the next; all undone at `end`."""
        rng = random.Random(self.rng.getrandbits(64))
        net = self.network
        while True:
            await trio.sleep(rng.uniform(10, 60))
            if trio.current_time() >= end:
                return
            index = rng.randrange(len(self.brokers))
            broker, client = self.brokers[index], self._client_host(index)
            kind = rng.choice(FAULTS)
            self.faults += 1
            self.note(f"fault {kind} {broker.host}")
            if kind == "kill":
                power_loss = self.variant.power_loss and rng.random() < 0.5
                broker.kill(power_loss=power_loss)
                await trio.sleep(rng.uniform(1, 20))
                await broker.start(nursery)
            elif kind == "partition":
                one_way = rng.random() < 0.5
                a, b = (client, broker.host) if rng.random() < 0.5 else (broker.host, client)
                net.partition(a, b, one_way=one_way)
                await trio.sleep(rng.uniform(1, 30))
                net.heal(a, b, one_way=one_way)
            elif kind == "pause":
                net.pause(broker.host)
                await trio.sleep(rng.uniform(1, 15))
                net.resume(broker.host)
            elif kind == "reset":
                net.reset(client, broker.host)
            else:
                net.set_delay(client, broker.host, rng.uniform(1, 300))
                await trio.sleep(rng.uniform(5, 60))
                net.set_delay(client, broker.host, 0)

    @staticmethod
    def _client_host(index: int) -> str:
        return f"client-{index}"

    def _connector(self, host: str) -> Connector:
        return self.network.host(host).connector(timeout_ms=CONNECT_TIMEOUT_MS)

    def _value(self, index: int) -> str:
        self._next_value += 1
        return f"b{index}-{self._next_value}"

    async def _produce(self, index: int, broker: SimulatedBroker, end: float) -> None:
        process = f"producer-{index}"
        rng = random.Random(self.rng.getrandbits(64))
        producer = Producer(
            bootstrap_servers=broker.bootstrap,
            connector=self._connector(self._client_host(index)),
            rng=random.Random(rng.getrandbits(64)),
            now_ms=sim_now_ms,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=5_000,
            delivery_timeout_ms=20_000,
        )
        async with producer, trio.open_nursery() as sends:
            while trio.current_time() < end:
                for _ in range(rng.randint(1, 4)):
                    tp = TopicPartition(broker.topic, rng.randrange(PARTITIONS))
                    sends.start_soon(self.ops.send, producer, process, tp, self._value(index))
                await trio.sleep(rng.uniform(0.5, 3.0))

    async def _consume(self, index: int, broker: SimulatedBroker, end: float) -> None:
        process = f"consumer-{index}"
        partitions = [TopicPartition(broker.topic, p) for p in range(PARTITIONS)]
        consumer = Consumer(
            bootstrap_servers=broker.bootstrap,
            connector=self._connector(self._client_host(index)),
            rng=random.Random(self.rng.getrandbits(64)),
            auto_offset_reset="earliest",
            request_timeout_ms=5_000,
        )
        async with consumer:
            await self.ops.consume(consumer, process, partitions, end)

    async def _final_read(self, broker: SimulatedBroker) -> None:
        partitions = [TopicPartition(broker.topic, p) for p in range(PARTITIONS)]
        consumer = Consumer(
            bootstrap_servers=broker.bootstrap,
            connector=self._connector("final-reader"),
            rng=random.Random(self.rng.getrandbits(64)),
        )
        async with consumer:
            await self.ops.final_read(consumer, partitions)


def run_simulation(seed: int, **options: object) -> Outcome:
    return Simulation(seed, **options).run()  # type: ignore[arg-type]


__all__ = [
    "ACKS_BEFORE_FSYNC",
    "FSYNC_PER_APPEND",
    "PROCESS_CRASHES",
    "Outcome",
    "Simulation",
    "Variant",
    "run_simulation",
]
