"""A quorum of Raft cores in one process: a seeded event simulation with faults, and the
invariants checked after every step.

Each node is a `RaftCore` with a model of durable storage (what its store would hold after
a crash) and a state machine (a running digest of the applied data entries, which is what
its snapshots hold). Time is simulated milliseconds; the network is a queue of deliveries
that loses, delays (and so reorders), duplicates and cuts links (both ways or one way); nodes
crash (losing whatever of the Ready being persisted had not reached the disk, and every
message not yet sent) and restart from their durable state.

The driver follows the core's contract: persist, then send, then apply, then advance. The
`sends_before_persist` flaw breaks it on purpose, so that a test can show the invariants
catch a broker that does.

Invariants (checked after every step; the first violation stops the run):
    one-leader-per-epoch   no two nodes are ever leader of the same epoch
    committed-changed      an offset below some node's high watermark holds the same entry
                           on every node that has it below its own high watermark
    committed-truncated    no node truncates an entry that is committed
    leader-incomplete      a leader of epoch E holds every entry committed in epochs <= E
    state-diverged         every node's state machine at offset o equals every other's
    epoch-backwards        a node's durable epoch never decreases
    hw-backwards           a node's high watermark never decreases while it runs
    caught-up-early        a node that (re)started is never caught up (`catch_up_offset`)
                           below what it had applied before it stopped (a node that takes a
                           stale image for current deletes the logs of topics it lacks)
    committed-lost         (every 64 steps and at the end) each committed entry is on the
                           durable log or snapshot of a majority of voters
Liveness: once faults stop and every node is back, a leader is elected and a new entry is
committed and applied everywhere within `LIVENESS_BOUND_MS`.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from tidelog.broker.controller.raft.core import RaftConfig, RaftCore, Ready, Role
from tidelog.broker.controller.raft.messages import Outbound
from tidelog.broker.controller.raft.types import (
    Entry,
    PersistedState,
    QuorumState,
    Snapshot,
)

LIVENESS_BOUND_MS = 30_000


@dataclass(frozen=True)
class Faults:
    """Fault rates. Probabilities are per message, or per step of the schedule."""

    loss: float = 0.02
    duplicate: float = 0.02
    delay_ms: tuple[int, int] = (1, 30)
    fault_interval_ms: tuple[int, int] = (500, 4_000)
    crash_mid_persist: float = 0.02
    """Chance that a node crashes while persisting a Ready (a random prefix reaches disk)."""


@dataclass(frozen=True)
class Flaws:
    """Deliberate driver bugs, to prove the invariants catch them."""

    sends_before_persist: bool = False
    forgets_votes: bool = False


@dataclass
class Durable:
    """What a node's store holds: it survives crashes."""

    quorum: QuorumState = field(default_factory=QuorumState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def start(self) -> int:
        return self.snapshot.snapshot_id.end_offset if self.snapshot else 0

    def end(self) -> int:
        return self.start() + len(self.entries)


@dataclass
class StateMachine:
    """Applied state: the offset applied up to and a digest of every data entry below."""

    offset: int = 0
    digest: bytes = b""

    def apply(self, entry: Entry) -> None:
        assert entry.offset == self.offset, (entry.offset, self.offset)
        if entry.control_type is None:
            self.digest = hashlib.blake2b(self.digest + entry.value, digest_size=16).digest()
        self.offset = entry.offset + 1

    def encode(self) -> bytes:
        return self.offset.to_bytes(8, "big") + self.digest

    @classmethod
    def decode(cls, data: bytes) -> StateMachine:
        return cls(int.from_bytes(data[:8], "big"), data[8:])


class Violation(AssertionError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


@dataclass
class Node:
    node_id: int
    durable: Durable
    core: RaftCore | None = None
    machine: StateMachine = field(default_factory=StateMachine)
    high_watermark: int = 0
    led_epoch: int = -1
    """The last epoch this node was checked as leader for completeness."""
    applied_before: int = 0
    """What this node had applied when it last stopped."""
    incarnation: int = 0
    """How many times it started: a message sent to an earlier one is lost with its
    connections, as over TCP (a restarted process never gets its predecessor's answers)."""

    @property
    def alive(self) -> bool:
        return self.core is not None


@dataclass
class Outcome:
    seed: int
    steps: int
    now_ms: int
    committed: int
    elections: int
    faults: int
    installs: int
    truncations: int
    stable_after_ms: int
    violation: Violation | None
    trace_hash: str

    def report(self, replay: str) -> str:
        return (
            f"seed {self.seed}: {self.violation} after {self.steps} steps at {self.now_ms} ms "
            f"({self.committed} committed, {self.elections} leaders, {self.faults} faults, "
            f"{self.installs} snapshot installs, {self.truncations} truncations)\n"
            f"replay: {replay}"
        )


class RaftCluster:
    def __init__(
        self,
        seed: int,
        *,
        voters: int = 3,
        observers: int = 0,
        faults: Faults | None = None,
        flaws: Flaws | None = None,
        config: RaftConfig | None = None,
        snapshot_every: int = 40,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.flaws = flaws or Flaws()
        self.config = config or RaftConfig(fetch_max_bytes=2_000, snapshot_chunk_bytes=7)
        self.snapshot_every = snapshot_every
        self.voter_ids = tuple(range(1, voters + 1))
        ids = self.voter_ids + tuple(range(voters + 1, voters + 1 + observers))
        self.nodes = {i: Node(i, Durable()) for i in ids}
        self.now_ms = 0
        self.steps = 0
        self.fault_count = 0
        self._queue: list[tuple[int, int, int, int, int, Outbound]] = []
        """(deliver at, sequence, source, destination, its incarnation, message)"""
        self._sequence = 0
        self._cut: set[tuple[int, int]] = set()
        self._proposal = 0
        self._faulty = True
        self.installs = 0
        self.truncations = 0
        self.stable_after_ms = 0
        self._hash = hashlib.blake2b(digest_size=16)
        # what the checker knows
        self.committed: dict[int, tuple[int, bytes, int | None]] = {}
        self.commit_epoch: dict[int, int] = {}
        self.committed_end = 0
        self.leaders: dict[int, int] = {}
        self.digests: dict[int, bytes] = {0: b""}
        for node in self.nodes.values():
            self._start(node)

    # ---- nodes ----------------------------------------------------------------------

    def _start(self, node: Node) -> None:
        d = node.durable
        persisted = PersistedState(d.quorum, d.snapshot, list(d.entries))
        node.core = RaftCore(
            node.node_id,
            self.voter_ids,
            persisted,
            now_ms=self.now_ms,
            rng=random.Random(self.rng.getrandbits(64)),
            config=self.config,
        )
        node.machine = StateMachine.decode(d.snapshot.data) if d.snapshot else StateMachine()
        node.high_watermark = node.core.high_watermark
        node.incarnation += 1
        self._drain(node)

    def crash(self, node: Node) -> None:
        node.applied_before = max(node.applied_before, node.machine.offset)
        node.core = None
        self._trace("crash", node.node_id)

    def restart(self, node: Node) -> None:
        self._trace("restart", node.node_id)
        self._start(node)

    def _drain(self, node: Node) -> None:
        while node.core is not None:
            ready = node.core.ready()
            if ready.empty():
                break
            self._carry_out(node, ready)
        self._check_node(node)

    def _carry_out(self, node: Node, ready: Ready) -> None:
        core = node.core
        assert core is not None
        if self.flaws.sends_before_persist:
            self._send_all(node, ready.messages)
        crash_at = None
        if self._faulty and ready.persists() and self.rng.random() < self.faults.crash_mid_persist:
            crash_at = self.rng.randrange(len(ready.entries) + 1)
        self._persist(node, ready, crash_at)
        if crash_at is not None:
            self.fault_count += 1
            self.crash(node)
            return
        if not self.flaws.sends_before_persist:
            self._send_all(node, ready.messages)
        if ready.install_snapshot is not None:
            node.machine = StateMachine.decode(ready.install_snapshot.data)
            self.installs += 1
            self._check_state(node)
        for entry in ready.committed:
            node.machine.apply(entry)
            self._check_state(node)
        core.advance(ready)
        due = node.machine.offset - core.log.start_offset >= self.snapshot_every
        if due and self.rng.random() < 0.5:
            core.take_snapshot(node.machine.offset, node.machine.encode())

    def _persist(self, node: Node, ready: Ready, crash_at: int | None) -> None:
        d = node.durable
        if ready.quorum_state is not None and not self.flaws.forgets_votes:
            if ready.quorum_state.epoch < d.quorum.epoch:
                raise Violation(
                    "epoch-backwards",
                    f"node {node.node_id} {d.quorum.epoch} -> {ready.quorum_state.epoch}",
                )
            d.quorum = ready.quorum_state
        if ready.truncate_to is not None and ready.truncate_to < d.end():
            for entry in d.entries[ready.truncate_to - d.start() :]:
                known = self.committed.get(entry.offset)
                if known is not None and known == (entry.epoch, entry.value, entry.control_type):
                    raise Violation(
                        "committed-truncated", f"node {node.node_id} offset {entry.offset}"
                    )
            del d.entries[max(0, ready.truncate_to - d.start()) :]
            self.truncations += 1
        if ready.snapshot is not None:
            end = ready.snapshot.snapshot_id.end_offset
            if end >= d.end():
                d.entries = []
            else:
                d.entries = d.entries[end - d.start() :]
            d.snapshot = ready.snapshot
        entries = ready.entries if crash_at is None else ready.entries[:crash_at]
        for entry in entries:
            assert entry.offset == d.end(), (entry.offset, d.end())
            d.entries.append(entry)

    def _send_all(self, node: Node, messages: list[Outbound]) -> None:
        for out in messages:
            self._send(node.node_id, out)

    def _send(self, source: int, out: Outbound) -> None:
        if (source, out.destination) in self._cut or self.rng.random() < self.faults.loss:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(*self.faults.delay_ms)
            self._sequence += 1
            incarnation = self.nodes[out.destination].incarnation
            item = (self.now_ms + delay, self._sequence, source, out.destination, incarnation, out)
            heapq.heappush(self._queue, item)

    # ---- the schedule ---------------------------------------------------------------

    def run(self, duration_ms: int, *, faulty: bool = True, propose_every_ms: int = 50) -> None:
        """Run until `duration_ms` of simulated time has passed."""
        end = self.now_ms + duration_ms
        self._faulty = faulty
        next_fault = self.now_ms + self.rng.randint(*self.faults.fault_interval_ms)
        next_proposal = self.now_ms
        while self.now_ms < end:
            deadlines = [end, next_proposal]
            if faulty:
                deadlines.append(next_fault)
            if self._queue:
                deadlines.append(self._queue[0][0])
            for node in self.nodes.values():
                if node.core is not None:
                    deadlines.append(node.core.next_deadline_ms())
            self.now_ms = max(self.now_ms, min(deadlines))
            self.steps += 1
            if faulty and self.now_ms >= next_fault:
                self._inject_fault()
                next_fault = self.now_ms + self.rng.randint(*self.faults.fault_interval_ms)
            if self.now_ms >= next_proposal:
                self._propose()
                next_proposal = self.now_ms + self.rng.randint(1, 2 * propose_every_ms)
            while self._queue and self._queue[0][0] <= self.now_ms:
                _, _, source, destination, incarnation, out = heapq.heappop(self._queue)
                self._deliver(source, destination, incarnation, out)
            for node in self.nodes.values():
                if node.core is not None and node.core.next_deadline_ms() <= self.now_ms:
                    node.core.tick(self.now_ms)
                    self._drain(node)
            if self.steps % 64 == 0:
                self.check_durability()

    def _deliver(self, source: int, destination: int, incarnation: int, out: Outbound) -> None:
        node = self.nodes[destination]
        core = node.core
        if core is not None and incarnation != node.incarnation and out.request is not None:
            return  # an answer to a process that is gone
        if core is None:
            # Nothing listens there: the sender's connection is refused.
            sender = self.nodes[source].core
            if out.request is None and sender is not None:
                request = out.message
                sender.request_failed(destination, request, self.now_ms)  # type: ignore[arg-type]
                self._drain(self.nodes[source])
            return
        self._trace("deliver", source, destination, type(out.message).__name__)
        if out.request is None:
            request = out.message
            core.receive_request(source, request, self.now_ms)  # type: ignore[arg-type]
        else:
            core.receive_response(source, out.request, out.message, self.now_ms)  # type: ignore[arg-type]
        self._drain(node)

    def _propose(self) -> None:
        for node in self.nodes.values():
            if node.core is not None and node.core.role is Role.LEADER:
                self._proposal += 1
                value = f"{self.seed}:{self._proposal}".encode()
                if node.core.append([value]) is not None:
                    self._trace("propose", node.node_id, self._proposal)
                    self._drain(node)

    def _inject_fault(self) -> None:
        self.fault_count += 1
        nodes = list(self.nodes.values())
        kind = self.rng.choice(("crash", "crash", "cut", "cut-one-way", "heal", "isolate"))
        node = self.rng.choice(nodes)
        if kind == "crash":
            if node.core is not None:
                self.crash(node)
            else:
                self.restart(node)
        elif kind == "heal":
            self._cut.clear()
            for dead in nodes:
                if dead.core is None:
                    self.restart(dead)
        elif kind == "isolate":
            for other in nodes:
                if other is not node:
                    self._cut |= {(node.node_id, other.node_id), (other.node_id, node.node_id)}
        else:
            other = self.rng.choice([n for n in nodes if n is not node])
            self._cut.add((node.node_id, other.node_id))
            if kind == "cut":
                self._cut.add((other.node_id, node.node_id))
        self._trace("fault", kind, node.node_id)

    def heal(self) -> None:
        self._cut.clear()
        for node in self.nodes.values():
            if node.core is None:
                self.restart(node)

    # ---- invariants -----------------------------------------------------------------

    def _check_node(self, node: Node) -> None:
        core = node.core
        if core is None:
            return
        if core.role is Role.LEADER:
            holder = self.leaders.setdefault(core.epoch, node.node_id)
            if holder != node.node_id:
                raise Violation(
                    "one-leader-per-epoch", f"nodes {holder} and {node.node_id} lead {core.epoch}"
                )
        hw = core.high_watermark
        if hw < node.high_watermark:
            raise Violation("hw-backwards", f"node {node.node_id} {node.high_watermark} -> {hw}")
        target = core.catch_up_offset
        if 0 <= target < node.applied_before:
            raise Violation(
                "caught-up-early",
                f"node {node.node_id} is caught up at {target}, it had applied "
                f"{node.applied_before}",
            )
        log = core.log
        for offset in range(max(node.high_watermark, log.start_offset), min(hw, log.end_offset)):
            entry = log.entry(offset)
            mine = (entry.epoch, entry.value, entry.control_type)
            known = self.committed.setdefault(offset, mine)
            self.commit_epoch.setdefault(offset, core.epoch)
            if known != mine:
                raise Violation(
                    "committed-changed", f"offset {offset}: {known} vs node {node.node_id} {mine}"
                )
        node.high_watermark = hw
        if hw > self.committed_end:
            self.committed_end = hw
        if core.role is Role.LEADER and node.led_epoch != core.epoch:
            node.led_epoch = core.epoch
            self._check_leader_complete(node)

    def _check_leader_complete(self, node: Node) -> None:
        core = node.core
        assert core is not None
        log = core.log
        for offset in range(log.start_offset, self.committed_end):
            if offset not in self.committed or self.commit_epoch[offset] > core.epoch:
                continue
            if offset >= log.end_offset:
                raise Violation(
                    "leader-incomplete", f"leader {node.node_id} lacks committed {offset}"
                )
            entry = log.entry(offset)
            if (entry.epoch, entry.value, entry.control_type) != self.committed[offset]:
                raise Violation(
                    "leader-incomplete", f"leader {node.node_id} differs at committed {offset}"
                )

    def _check_state(self, node: Node) -> None:
        machine = node.machine
        known = self.digests.setdefault(machine.offset, machine.digest)
        if known != machine.digest:
            raise Violation("state-diverged", f"node {node.node_id} at offset {machine.offset}")

    def check_durability(self) -> None:
        majority = len(self.voter_ids) // 2 + 1
        for offset in range(self.committed_end):
            expected = self.committed.get(offset)
            if expected is None:
                continue
            holders = 0
            for voter in self.voter_ids:
                d = self.nodes[voter].durable
                if offset < d.start():
                    holders += 1
                elif offset < d.end():
                    e = d.entries[offset - d.start()]
                    holders += (e.epoch, e.value, e.control_type) == expected
            if holders < majority:
                raise Violation("committed-lost", f"offset {offset} is durable on {holders} voters")

    # ---- liveness -------------------------------------------------------------------

    def wait_stable(self, bound_ms: int = LIVENESS_BOUND_MS) -> int:
        """With faults over: the time a leader took to commit a new entry everywhere."""
        start = self.now_ms
        self.heal()
        deadline = start + bound_ms
        target = None
        while self.now_ms < deadline:
            self.run(100, faulty=False, propose_every_ms=1_000_000)
            leaders = [n for n in self.nodes.values() if n.core and n.core.role is Role.LEADER]
            if target is None and leaders:
                leader = max(leaders, key=lambda n: n.core.epoch if n.core else -1)
                assert leader.core is not None
                offset = leader.core.append([b"liveness"])
                assert offset is not None
                self._drain(leader)
                target = offset + 1
            if target is not None and all(n.machine.offset >= target for n in self.nodes.values()):
                return self.now_ms - start
        raise Violation("liveness", f"nothing committed everywhere within {bound_ms} ms")

    # ---- the trace ------------------------------------------------------------------

    def _trace(self, *event: object) -> None:
        self._hash.update(repr((self.now_ms, event)).encode())

    def outcome(self, violation: Violation | None) -> Outcome:
        return Outcome(
            self.seed,
            self.steps,
            self.now_ms,
            self.committed_end,
            len(self.leaders),
            self.fault_count,
            self.installs,
            self.truncations,
            self.stable_after_ms,
            violation,
            self._hash.hexdigest(),
        )


def simulate(
    seed: int,
    *,
    voters: int = 3,
    observers: int = 0,
    duration_ms: int = 20_000,
    flaws: Flaws | None = None,
) -> Outcome:
    """One seeded run: faults for `duration_ms`, then healing and the liveness check."""
    cluster = RaftCluster(seed, voters=voters, observers=observers, flaws=flaws)
    try:
        cluster.run(duration_ms)
        cluster.stable_after_ms = cluster.wait_stable()
        cluster.check_durability()
    except Violation as violation:
        return cluster.outcome(violation)
    except AssertionError as failed:  # the core's own checks of its invariants
        return cluster.outcome(Violation("core-assertion", repr(failed)))
    return cluster.outcome(None)


def main() -> None:
    """Replay one run: `python -m tests.simulation.raft_cluster --seed N [--voters V]`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--observers", type=int, default=0)
    parser.add_argument("--duration-ms", type=int, default=20_000)
    args = parser.parse_args()
    outcome = simulate(
        args.seed, voters=args.voters, observers=args.observers, duration_ms=args.duration_ms
    )
    print(outcome.report(replay_command(outcome.seed, args.voters, args.observers)))
    print(f"trace {outcome.trace_hash}")
    raise SystemExit(1 if outcome.violation else 0)


def replay_command(seed: int, voters: int, observers: int) -> str:
    return (
        f"python -m tests.simulation.raft_cluster --seed {seed} --voters {voters} "
        f"--observers {observers}"
    )


if __name__ == "__main__":
    main()
