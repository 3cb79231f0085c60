"""The fault schedule of a simulated cluster: one schedule per seed, several lanes of
faults at once, all undone by `heal`.

Each lane loops until the end of the fault phase: it waits a while, draws a fault, applies
it, holds it and undoes it; at the end of the phase the lanes stop where they are, and
`heal` undoes whatever is still in force. Faults that act on the same thing (a node, a
link, the loss rate) never overlap, and at most `max_down` nodes are down (killed, shut
down, paused) at once. The kinds:

- `kill`: kill -9 of a node (the page cache survives), restarted after a while;
- `power`: a power cut of a node (un-fsynced bytes are lost), restarted after a while.
  Acknowledged records are in the page cache of every in-sync replica, not necessarily on
  a disk (Kafka's durability model), so power cuts of several in-sync replicas may lose
  them in Kafka too. Nor does Kafka survive the power-cut node becoming the last in-sync
  replica before it has caught up (it keeps the last member, KIP-841, which then leads
  without the records it lost; KIP-966's unclean-shutdown handling is what closes that
  hole): other replicas leaving the ISR meanwhile (a kill, a shutdown, a fencing) can do
  that. So a power cut is a fault of its own: it strikes only while no other fault is in
  force and every partition's ISR is its whole assignment, and no other fault starts
  until the node it struck is back in every ISR;
- `shutdown`: a clean shutdown (`request_shutdown`) of a node leading some partition,
  restarted once it has stopped;
- `pause`: the node goes silent (SIGSTOP as its peers see it: nothing delivered to or from
  it, no resets) for longer than the broker session timeout, or shorter;
- `partition`: a link between two brokers, or between a client and a broker, cut both ways
  or one way, or a broker cut off from every other broker;
- `delay`: latency on a link; `loss`: random connection resets (TCP loses no bytes
  inside a connection, so loss is modelled as resets); `reset`: connections of a link reset.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from tests.simulation.sim_support import BrokerProcess
from tidelog.broker.memory_network import MemoryNetwork

NODE_FAULTS = ("kill", "kill", "power", "shutdown", "pause", "pause")
NETWORK_FAULTS = ("partition", "partition", "isolate", "delay", "loss", "reset")
SHUTDOWN_WAIT_S = 30.0
"""How long a clean shutdown may take before the node is killed instead."""


class FaultTarget(Protocol):
    """What the schedule acts on."""

    @property
    def network(self) -> MemoryNetwork: ...

    @property
    def nodes(self) -> Sequence[BrokerProcess]: ...

    @property
    def client_hosts(self) -> Sequence[str]: ...

    def note(self, text: str) -> None: ...

    def restart(self, node: BrokerProcess) -> None: ...

    def isr_full(self) -> bool: ...


class FaultSchedule:
    """See the module docstring. `counts` is how many faults of each kind struck."""

    def __init__(
        self,
        target: FaultTarget,
        rng: random.Random,
        *,
        lanes: int,
        max_down: int,
        gap_s: tuple[float, float],
        session_timeout_s: float,
    ) -> None:
        self.target = target
        self.rng = rng
        self.lanes = lanes
        self.max_down = max_down
        self.gap_s = gap_s
        self.session_timeout_s = session_timeout_s
        self.busy: set[str] = set()
        self.down: set[str] = set()
        self.shutting_down: set[str] = set()
        self.power_cut = False
        """A power cut is in force: its node has not caught up yet, no other fault starts."""
        self.counts: dict[str, int] = {}
        self.first_fault_s: float | None = None
        """The trio time of the first fault."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def run(self, end: float) -> None:
        """Run the lanes until trio time `end`, then `heal`."""
        with trio.move_on_at(end):
            async with trio.open_nursery() as lanes:
                for lane in range(self.lanes):
                    lanes.start_soon(self._lane, random.Random(self.rng.getrandbits(64)), lane)
        await self.heal()

    async def _lane(self, rng: random.Random, lane: int) -> None:
        while True:
            await trio.sleep(rng.uniform(*self.gap_s))
            if self.power_cut:
                continue
            if rng.random() < 0.5:
                await self._node_fault(rng, lane)
            else:
                await self._network_fault(rng, lane)

    async def heal(self) -> None:
        """Undo every fault: the network healed, every node running again (a node shutting
        down is restarted once it has stopped)."""
        self.target.note("heal: every fault undone")
        net = self.target.network
        net.heal_all()
        net.reset_probability = 0.0
        hosts = [n.host for n in self.target.nodes]
        for a in [*hosts, *self.target.client_hosts]:
            net.resume(a)
            for b in hosts:
                if a != b:
                    net.set_delay(a, b, 0)
        for node in self.target.nodes:
            if node.host in self.shutting_down:
                await self._stopped(node)
            self.target.restart(node)
        self.busy.clear()
        self.down.clear()

    def _struck(self, kind: str, lane: int, what: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.first_fault_s is None:
            self.first_fault_s = trio.current_time()
        self.target.note(f"fault lane={lane} {kind} {what}")

    # -- node faults

    async def _node_fault(self, rng: random.Random, lane: int) -> None:
        free = [n for n in self.target.nodes if n.host not in self.busy and n.running]
        if not free or len(self.down) >= self.max_down:
            return
        kind = rng.choice(NODE_FAULTS)
        if kind == "power" and (self.busy or not self.target.isr_full()):
            kind = "kill"
        node = rng.choice(free)
        if kind == "shutdown":
            leading = [n for n in free if _leads_something(n)]
            if leading:
                node = rng.choice(leading)
        self.busy.add(node.host)
        self.down.add(node.host)
        try:
            self._struck(kind, lane, node.host)
            if kind == "pause":
                await self._pause(rng, node)
                return
            if kind == "shutdown":
                await self._shutdown(node)
            else:
                self.power_cut = kind == "power"
                node.kill(power_loss=self.power_cut)
            await trio.sleep(rng.uniform(0.3, 5.0))
            self.target.restart(node)
            while self.power_cut and not self.target.isr_full():
                await trio.sleep(0.1)
        finally:
            self.power_cut = False
            self.busy.discard(node.host)
            self.down.discard(node.host)

    async def _pause(self, rng: random.Random, node: BrokerProcess) -> None:
        net = self.target.network
        if rng.random() < 0.7:  # past the session timeout: the controller fences it
            pause_s = rng.uniform(self.session_timeout_s + 0.5, 3 * self.session_timeout_s)
        else:
            pause_s = rng.uniform(0.2, self.session_timeout_s)
        net.pause(node.host)
        try:
            await trio.sleep(pause_s)
        finally:
            net.resume(node.host)

    async def _shutdown(self, node: BrokerProcess) -> None:
        assert node.broker is not None
        node.broker.request_shutdown()
        self.shutting_down.add(node.host)
        await self._stopped(node)

    async def _stopped(self, node: BrokerProcess) -> None:
        """Wait for a node shutting down to stop (killing it after `SHUTDOWN_WAIT_S`)."""
        with trio.move_on_after(SHUTDOWN_WAIT_S):
            await node.stopped.wait()
        if not node.stopped.is_set():
            self.target.note(f"{node.host} did not shut down within {SHUTDOWN_WAIT_S}s: killed")
            node.kill(power_loss=False)
        self.shutting_down.discard(node.host)

    # -- network faults

    async def _network_fault(self, rng: random.Random, lane: int) -> None:
        kind = rng.choice(NETWORK_FAULTS)
        net = self.target.network
        brokers = [n.host for n in self.target.nodes]
        if kind == "loss":
            if "loss" in self.busy:
                return
            probability = rng.choice((0.001, 0.005, 0.02))
            await self._holding(
                ["loss"],
                lambda: _set_loss(net, probability),
                lambda: _set_loss(net, 0.0),
                rng.uniform(0.5, 6),
                kind,
                lane,
                f"reset probability {probability}",
            )
            return
        if kind == "isolate":
            host = rng.choice(brokers)
            others = [b for b in brokers if b != host]
            links = [_link(host, other) for other in others]
            one_way = rng.random() < 0.3

            def cut() -> None:
                for other in others:
                    net.partition(host, other, one_way=one_way)

            def mend() -> None:
                for other in others:
                    net.heal(host, other, one_way=one_way)

            await self._holding(
                links,
                cut,
                mend,
                rng.uniform(0.3, 3 * self.session_timeout_s),
                kind,
                lane,
                f"{host} from the other brokers{' one way' if one_way else ''}",
            )
            return
        a, b = self._pick_link(rng, brokers)
        if kind == "reset":
            if _link(a, b) not in self.busy:
                self._struck(kind, lane, f"{a} <-> {b}")
                net.reset(a, b)
            return
        if kind == "partition":
            one_way = rng.random() < 0.5
            await self._holding(
                [_link(a, b)],
                lambda: net.partition(a, b, one_way=one_way),
                lambda: net.heal(a, b, one_way=one_way),
                rng.uniform(0.3, 3 * self.session_timeout_s),
                kind,
                lane,
                f"{a} {'->' if one_way else '<->'} {b}",
            )
            return
        delay_ms = rng.choice((5.0, 50.0, 300.0, 1500.0))
        await self._holding(
            [_link(a, b)],
            lambda: net.set_delay(a, b, delay_ms),
            lambda: net.set_delay(a, b, 0),
            rng.uniform(0.5, 6),
            kind,
            lane,
            f"{a} <-> {b} {delay_ms}ms",
        )

    def _pick_link(self, rng: random.Random, brokers: list[str]) -> tuple[str, str]:
        if rng.random() < 0.6:
            a, b = rng.sample(brokers, 2)
        else:
            a, b = rng.choice(self.target.client_hosts), rng.choice(brokers)
        return (a, b) if rng.random() < 0.5 else (b, a)

    async def _holding(
        self,
        resources: list[str],
        apply: Callable[[], object],
        undo: Callable[[], object],
        hold_s: float,
        kind: str,
        lane: int,
        what: str,
    ) -> None:
        if any(r in self.busy for r in resources):
            return
        self.busy.update(resources)
        try:
            self._struck(kind, lane, what)
            apply()
            await trio.sleep(hold_s)
            undo()
        finally:
            self.busy.difference_update(resources)


def _link(a: str, b: str) -> str:
    return "|".join(sorted((a, b)))


def _set_loss(network: MemoryNetwork, probability: float) -> None:
    network.reset_probability = probability


def _leads_something(node: BrokerProcess) -> bool:
    if node.broker is None:
        return False
    try:
        partitions = node.broker.replicas.partitions()
    except RuntimeError:
        return False
    return any(p.state.is_leader for p in partitions)
