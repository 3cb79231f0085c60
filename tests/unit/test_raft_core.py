"""Scenario tests for the pure Raft core (broker/controller/raft/core.py).

The deterministic complement of tests/simulation/raft_cluster.py: a few `RaftCore`s, a
manual clock and a hand-driven network. `Harness.drain` carries out a node's Ready the way
a driver must (persist into the node's `Disk`, collect the messages, apply, `advance`) and
returns the messages; `Harness.deliver` hands chosen messages to their destinations and
returns what those sent in turn. Nothing is delivered unless a test says so, so each test
reads like one of the Raft paper's figures: who sends what to whom, and what follows.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from tidelog.broker.controller.raft.core import (
    LEADER_CHANGE,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
)
from tidelog.broker.controller.raft.messages import (
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    Outbound,
    QuorumEpochResponse,
    RaftRequest,
    RaftResponse,
    VoteRequest,
    VoteResponse,
)
from tidelog.broker.controller.raft.types import (
    NO_NODE,
    Entry,
    OffsetAndEpoch,
    PersistedState,
    QuorumState,
    Snapshot,
    SnapshotId,
)
from tidelog.client.protocol.errors import ErrorCode

CONFIG = RaftConfig()
FETCH_TIMEOUT = CONFIG.fetch_timeout_ms
MAX_WAIT = CONFIG.fetch_max_wait_ms


def leader_change(epoch: int, leader_id: int, voters: tuple[int, ...]) -> bytes:
    """The LeaderChange record's value (non-empty, so that it counts in fetch_max_bytes)."""
    return f"leader {leader_id} of epoch {epoch}".encode()


def lc(offset: int, epoch: int, leader_id: int) -> Entry:
    """The LeaderChange entry the leader of `epoch` appended at `offset`."""
    return Entry(offset, epoch, leader_change(epoch, leader_id, ()), LEADER_CHANGE)


# ---- the harness --------------------------------------------------------------------------


@dataclass
class Disk:
    """What a node's store holds: the Ready's persistent parts, applied in the contract's
    order (quorum state, truncation, snapshot, entries)."""

    quorum: QuorumState = field(default_factory=QuorumState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def start(self) -> int:
        return self.snapshot.snapshot_id.end_offset if self.snapshot else 0

    def end(self) -> int:
        return self.start() + len(self.entries)

    def persist(self, ready: Ready) -> None:
        if ready.quorum_state is not None:
            assert ready.quorum_state.epoch >= self.quorum.epoch, "the epoch went back"
            self.quorum = ready.quorum_state
        if ready.truncate_to is not None:
            del self.entries[max(0, ready.truncate_to - self.start()) :]
        if ready.snapshot is not None:
            end = ready.snapshot.snapshot_id.end_offset
            self.entries = self.entries[end - self.start() :] if end < self.end() else []
            self.snapshot = ready.snapshot
        for entry in ready.entries:
            assert entry.offset == self.end(), (entry.offset, self.end())
            self.entries.append(entry)

    def state(self) -> PersistedState:
        """What the store would load at a restart (a copy: later persists do not touch it)."""
        return PersistedState(self.quorum, self.snapshot, list(self.entries))


@dataclass(frozen=True)
class Sent:
    """A message on the wire: `out` as the core emitted it, from `source`."""

    source: int
    out: Outbound

    @property
    def dest(self) -> int:
        return self.out.destination

    @property
    def message(self) -> RaftRequest | RaftResponse:
        return self.out.message


def request(source: int, dest: int, message: RaftRequest) -> Sent:
    return Sent(source, Outbound(dest, message))


def response(source: int, dest: int, message: RaftResponse, answers: RaftRequest) -> Sent:
    return Sent(source, Outbound(dest, message, answers))


def only(msgs: Iterable[Sent], *, to: int | None = None, kind: type | None = None) -> list[Sent]:
    return [
        m
        for m in msgs
        if (to is None or m.dest == to) and (kind is None or isinstance(m.message, kind))
    ]


def one(msgs: Iterable[Sent], *, to: int | None = None, kind: type | None = None) -> Sent:
    found = only(msgs, to=to, kind=kind)
    assert len(found) == 1, found
    return found[0]


def fetch_response(msgs: Iterable[Sent]) -> FetchResponse:
    """The one message, which must be a FetchResponse."""
    message = one(msgs).message
    assert isinstance(message, FetchResponse), message
    return message


class Harness:
    def __init__(
        self,
        voters: Sequence[int] = (1, 2, 3),
        observers: Sequence[int] = (),
        *,
        config: RaftConfig = CONFIG,
        persisted: Mapping[int, PersistedState] | None = None,
    ) -> None:
        self.voters = tuple(voters)
        self.config = config
        self.now = 0
        self.disks: dict[int, Disk] = {}
        self.cores: dict[int, RaftCore] = {}
        self.readies: dict[int, list[Ready]] = {}
        self.applied: dict[int, list[Entry]] = {}
        for node_id in (*voters, *observers):
            p = (persisted or {}).get(node_id, PersistedState())
            self.disks[node_id] = Disk(p.quorum, p.snapshot, list(p.entries))
            self.readies[node_id] = []
            self.start(node_id)

    def start(self, node_id: int) -> list[Sent]:
        """(Re)build the node from what its disk holds, as a restart does."""
        self.cores[node_id] = RaftCore(
            node_id,
            self.voters,
            self.disks[node_id].state(),
            now_ms=self.now,
            rng=random.Random(0),
            config=self.config,
            leader_change_value=leader_change,
        )
        self.applied[node_id] = []
        return self.drain(node_id)

    restart = start

    def drain(self, node_id: int) -> list[Sent]:
        """Carry out every pending Ready: persist, collect the messages, apply, advance."""
        core = self.cores[node_id]
        sent: list[Sent] = []
        while not (ready := core.ready()).empty():
            sent += self.carry_out(node_id, ready)
        return sent

    def carry_out(self, node_id: int, ready: Ready, *, advance: bool = True) -> list[Sent]:
        """One Ready, in the contract's order; without `advance` the core is not told (yet)
        that the Ready is done, as while a driver is still applying it."""
        self.readies[node_id].append(ready)
        self.disks[node_id].persist(ready)
        if ready.install_snapshot is not None:
            self.applied[node_id] = []
        self.applied[node_id] += ready.committed
        if advance:
            self.cores[node_id].advance(ready)
        return [Sent(node_id, out) for out in ready.messages]

    def tick(self, node_id: int, now: int | None = None) -> list[Sent]:
        if now is not None:
            assert now >= self.now, "the clock goes forward"
            self.now = now
        self.cores[node_id].tick(self.now)
        return self.drain(node_id)

    def deliver(self, *msgs: Sent) -> list[Sent]:
        """Hand each message to its destination; what the destinations sent in turn."""
        out: list[Sent] = []
        for m in msgs:
            core = self.cores[m.dest]
            if m.out.request is None:
                assert isinstance(m.message, RaftRequest)
                core.receive_request(m.source, m.message, self.now)
            else:
                assert isinstance(m.message, RaftResponse)
                core.receive_response(m.source, m.out.request, m.message, self.now)
            out += self.drain(m.dest)
        return out

    def run(self, msgs: Iterable[Sent], among: Iterable[int] | None = None) -> list[Sent]:
        """Deliver `msgs` and everything they cause until the network is quiet; messages
        for nodes outside `among` (a partition) are held back and returned."""
        reachable = set(among) if among is not None else set(self.cores)
        queue = deque(msgs)
        held: list[Sent] = []
        for _ in range(10_000):
            if not queue:
                return held
            m = queue.popleft()
            if m.dest in reachable:
                queue.extend(self.deliver(m))
            else:
                held.append(m)
        raise AssertionError("the network never went quiet")

    # ---- common moves ---------------------------------------------------------------

    def elect(self, node_id: int, among: Iterable[int] | None = None) -> None:
        """Let `node_id`'s election timer expire and run the election it starts."""
        core = self.cores[node_id]
        self.run(self.tick(node_id, max(self.now, core.next_deadline_ms())), among)
        assert core.role is Role.LEADER

    def sync(self, *followers: int, among: Iterable[int] | None = None) -> None:
        """The followers fetch until caught up (their last fetch is parked on the leader)."""
        self.run([m for f in followers for m in self.tick(f)], among)

    def commit(self, leader_id: int, *values: bytes) -> int:
        """Append on the leader and replicate; then let the parked fetches time out so that
        every follower learns the new high watermark."""
        offset = self.cores[leader_id].append(values)
        assert offset is not None
        self.run(self.drain(leader_id))
        self.run(self.tick(leader_id, self.now + MAX_WAIT))
        return offset

    def durable(self) -> dict[int, PersistedState]:
        return {n: d.state() for n, d in self.disks.items()}


def synced_quorum(persisted: Mapping[int, PersistedState] | None = None) -> Harness:
    """Three voters; 1 leads and both followers have fetched its LeaderChange."""
    h = Harness(persisted=persisted)
    h.elect(1)
    h.sync(2, 3)
    assert h.cores[1].high_watermark == 1
    return h


# ---- 1. a single voter ---------------------------------------------------------------------


def test_single_voter_leads_at_once_and_commits_only_what_it_has_persisted() -> None:
    core = RaftCore(1, [1], PersistedState(), now_ms=0, rng=random.Random(0))
    assert (core.role, core.epoch, core.leader_id) == (Role.LEADER, 1, 1)

    ready = core.ready()
    # The quorum state is in the very Ready that carries the epoch's first entry, so the
    # driver persists it before (or with) anything of epoch 1.
    assert ready.quorum_state == QuorumState(epoch=1, voted_for=1, leader_id=1)
    assert ready.entries == [Entry(0, 1, b"", LEADER_CHANGE)]
    assert ready.committed == []
    assert core.high_watermark == ready.high_watermark == 0  # not durable yet
    core.advance(ready)
    assert core.high_watermark == 1
    ready = core.ready()
    assert ready.committed == [Entry(0, 1, b"", LEADER_CHANGE)]
    core.advance(ready)

    assert core.append([b"x"]) == 1
    ready = core.ready()
    assert ready.entries == [Entry(1, 1, b"x")]
    assert ready.committed == []
    assert core.high_watermark == 1  # appended, but not yet on the (single voter's) disk
    core.advance(ready)
    assert core.high_watermark == 2
    assert core.ready().committed == [Entry(1, 1, b"x")]


def test_leader_counts_its_own_entries_only_once_advance_says_they_are_durable() -> None:
    h = synced_quorum()
    leader = h.cores[1]
    assert leader.append([b"x"]) == 1
    ready = leader.ready()
    # The driver persists the Ready and sends its messages (the answers to the parked
    # fetches), but has not called advance yet when follower 2 answers.
    answers = h.carry_out(1, ready, advance=False)
    fetch = one(h.deliver(one(answers, to=2)))
    assert fetch.message == FetchRequest(2, 1, 2, 1, MAX_WAIT)
    h.deliver(fetch)
    # x is on 1's disk and 2's, but 1 has not been told its own write is done: by what the
    # core knows, x is on one voter of three.
    assert leader.high_watermark == 1
    leader.advance(ready)
    assert leader.high_watermark == 2


# ---- 2. an election ------------------------------------------------------------------------


def test_election_pre_vote_then_vote_then_begin_quorum_epoch() -> None:
    h = Harness()
    one_, two, three = h.cores[1], h.cores[2], h.cores[3]
    deadline = one_.next_deadline_ms()

    assert h.tick(1, deadline - 1) == []
    assert one_.role is Role.UNATTACHED

    prevotes = h.tick(1, deadline)
    assert one_.role is Role.PROSPECTIVE
    assert one_.epoch == 0
    assert not h.readies[1][-1].persists()  # a pre-vote round changes nothing durable
    assert sorted(m.dest for m in prevotes) == [2, 3]
    for m in prevotes:
        assert m.message == VoteRequest(1, 1, OffsetAndEpoch(0, 0), pre_vote=True)

    grant = h.deliver(one(prevotes, to=2))
    assert one(grant).message == VoteResponse(ErrorCode.NONE, 0, NO_NODE, vote_granted=True)
    assert (two.role, two.epoch) == (Role.UNATTACHED, 0)
    assert not any(r.persists() for r in h.readies[2])  # granting a pre-vote: no vote cast

    votes = h.deliver(*grant)
    assert (one_.role, one_.epoch) == (Role.CANDIDATE, 1)
    ready = h.readies[1][-1]
    assert ready.quorum_state == QuorumState(1, voted_for=1, leader_id=NO_NODE)
    assert [m.message for m in ready.messages] == [VoteRequest(1, 1, OffsetAndEpoch(0, 0))] * 2
    assert sorted(m.dest for m in votes) == [2, 3]

    # Node 3 never saw the pre-vote: the Vote alone moves it to epoch 1 and it votes.
    granted = h.deliver(one(votes, to=3))
    ready = h.readies[3][-1]
    assert ready.quorum_state == QuorumState(1, voted_for=1, leader_id=NO_NODE)
    assert [m.message for m in ready.messages] == [VoteResponse(ErrorCode.NONE, 1, NO_NODE, True)]

    begins = h.deliver(*granted)
    assert (one_.role, one_.epoch, one_.leader_id) == (Role.LEADER, 1, 1)
    ready = h.readies[1][-1]
    assert ready.quorum_state == QuorumState(1, voted_for=1, leader_id=1)
    assert ready.entries == [lc(0, 1, 1)]
    assert sorted(m.dest for m in begins) == [2, 3]
    assert {m.message for m in begins} == {BeginQuorumEpochRequest(leader_id=1, epoch=1)}

    acks = h.deliver(*begins)
    assert [m.message for m in acks] == [QuorumEpochResponse(ErrorCode.NONE, 1, 1)] * 2
    assert (two.role, two.epoch, two.leader_id) == (Role.FOLLOWER, 1, 1)
    assert (three.role, three.epoch, three.leader_id) == (Role.FOLLOWER, 1, 1)
    assert h.disks[2].quorum == QuorumState(1, NO_NODE, 1)
    assert h.disks[3].quorum == QuorumState(1, 1, 1)  # keeps its vote in the epoch

    h.run(acks)
    h.sync(2, 3)
    assert h.disks[2].entries == h.disks[3].entries == [lc(0, 1, 1)]
    assert one_.high_watermark == 1


# ---- 3. KIP-996: a rejoining node does not disrupt a healthy leader ---------------------


def test_follower_that_heard_its_leader_refuses_a_pre_vote() -> None:
    h = synced_quorum()
    t0 = h.now  # 3 last heard from the leader now; from here on it hears nothing
    # Node 2 keeps fetching: the leader answers its parked fetch every MAX_WAIT.
    for t in range(t0 + MAX_WAIT, t0 + FETCH_TIMEOUT, MAX_WAIT):
        h.run(h.tick(1, t), among={1, 2})
    assert only(h.tick(3, t0 + FETCH_TIMEOUT - 1), kind=VoteRequest) == []
    assert h.cores[3].role is Role.FOLLOWER
    h.run(h.tick(1, t0 + FETCH_TIMEOUT), among={1, 2})  # 2 has fetched just now
    before = h.durable()

    prevotes = h.tick(3)  # at t0 + FETCH_TIMEOUT: 3's fetch timeout expires
    assert h.cores[3].role is Role.PROSPECTIVE
    assert sorted(m.dest for m in prevotes) == [1, 2]
    assert {m.message for m in prevotes} == {VoteRequest(3, 2, OffsetAndEpoch(1, 1), pre_vote=True)}

    refusals = h.deliver(*prevotes)
    assert sorted(m.source for m in refusals) == [1, 2]
    for m in refusals:
        assert m.message == VoteResponse(ErrorCode.NONE, 1, 1, vote_granted=False)

    h.deliver(*refusals)
    for node_id in (1, 2, 3):
        assert h.cores[node_id].epoch == 1
    assert h.cores[1].role is Role.LEADER
    assert (h.cores[3].role, h.cores[3].leader_id) == (Role.FOLLOWER, 1)
    assert h.durable() == before  # nobody persisted anything
    # ... and 3 fetches from the leader again at once.
    fetch = one(h.tick(3))
    assert (fetch.dest, fetch.message) == (1, FetchRequest(3, 1, 1, 1, MAX_WAIT))


# ---- 4. granting votes -----------------------------------------------------------------------


def voter_at_epoch_2() -> Harness:
    """Voter 3 at epoch 2 with log end (last epoch 2, offset 2)."""
    log = [Entry(0, 1, b"a"), Entry(1, 2, b"b")]
    return Harness(persisted={3: PersistedState(QuorumState(2), entries=log)})


@pytest.mark.parametrize(
    ("candidate_last", "granted"),
    [
        (OffsetAndEpoch(epoch=2, offset=1), False),  # same last epoch, shorter
        (OffsetAndEpoch(epoch=1, offset=5), False),  # longer, but older last epoch
        (OffsetAndEpoch(epoch=2, offset=2), True),  # the same
        (OffsetAndEpoch(epoch=2, offset=3), True),  # longer in the same epoch
        (OffsetAndEpoch(epoch=3, offset=2), True),  # a newer last epoch
    ],
)
def test_vote_goes_only_to_a_log_at_least_as_up_to_date(
    candidate_last: OffsetAndEpoch, granted: bool
) -> None:
    h = voter_at_epoch_2()
    reply = one(h.deliver(request(1, 3, VoteRequest(1, 3, candidate_last))))
    assert reply.message == VoteResponse(ErrorCode.NONE, 3, NO_NODE, vote_granted=granted)
    # The new epoch is persisted either way; the vote only when granted, and in the same
    # Ready as the response that announces it.
    ready = h.readies[3][-1]
    assert ready.quorum_state == QuorumState(3, 1 if granted else NO_NODE, NO_NODE)
    assert ready.messages == [reply.out]


def test_one_vote_per_epoch_repeatable_for_the_same_candidate() -> None:
    h = voter_at_epoch_2()
    last = OffsetAndEpoch(2, 2)
    first = one(h.deliver(request(2, 3, VoteRequest(2, 3, last))))
    assert first.message == VoteResponse(ErrorCode.NONE, 3, NO_NODE, vote_granted=True)
    assert h.disks[3].quorum == QuorumState(3, voted_for=2, leader_id=NO_NODE)
    mark = len(h.readies[3])

    # A better log does not buy a second vote in the same epoch.
    other = one(h.deliver(request(1, 3, VoteRequest(1, 3, OffsetAndEpoch(2, 9)))))
    assert other.message == VoteResponse(ErrorCode.NONE, 3, NO_NODE, vote_granted=False)
    # The same candidate asking again (a retry) gets the same answer.
    again = one(h.deliver(request(2, 3, VoteRequest(2, 3, last))))
    assert again.message == VoteResponse(ErrorCode.NONE, 3, NO_NODE, vote_granted=True)

    assert not any(r.persists() for r in h.readies[3][mark:])
    assert h.disks[3].quorum == QuorumState(3, voted_for=2, leader_id=NO_NODE)


def test_vote_of_a_stale_epoch_is_answered_with_the_current_epoch() -> None:
    h = voter_at_epoch_2()
    before = h.durable()
    reply = one(h.deliver(request(1, 3, VoteRequest(1, 1, OffsetAndEpoch(2, 9)))))
    assert reply.message == VoteResponse(
        ErrorCode.FENCED_LEADER_EPOCH, 2, NO_NODE, vote_granted=False
    )
    assert h.durable() == before
    assert (h.cores[3].role, h.cores[3].epoch) == (Role.UNATTACHED, 2)


# ---- 5. the commit rule (Raft's figure 8) -------------------------------------------------


def test_entries_of_an_old_epoch_commit_only_with_an_entry_of_the_leaders_epoch() -> None:
    # Five voters, after figure 8 (c) in the Raft paper. Epoch 1's LeaderChange is on
    # everyone. Node 1 led epoch 2 and got its LeaderChange (offset 1) only onto node 2;
    # node 5 led epoch 3 (voted in by 3 and 4) and wrote its own offset 1 only locally.
    # Node 1 now wins epoch 4 with votes from 2 and 3, whose logs are no newer than its own.
    old = [lc(0, 1, 1)]
    h = Harness(
        (1, 2, 3, 4, 5),
        config=RaftConfig(fetch_max_bytes=1),  # one entry per fetch
        persisted={
            1: PersistedState(QuorumState(3), entries=[*old, lc(1, 2, 1)]),
            2: PersistedState(QuorumState(3), entries=[*old, lc(1, 2, 1)]),
            3: PersistedState(QuorumState(3, 5, 5), entries=old),
            4: PersistedState(QuorumState(3, 5, 5), entries=old),
            5: PersistedState(QuorumState(3, 5, 5), entries=[*old, lc(1, 3, 5)]),
        },
    )
    leader = h.cores[1]
    h.elect(1, among={1, 2, 3})  # 4 and 5 are down
    assert leader.epoch == 4
    assert h.disks[1].entries == [*old, lc(1, 2, 1), lc(2, 4, 1)]

    to_2 = h.deliver(*h.tick(2))  # 2 fetches from offset 2: it gets epoch 4's entry
    assert [e.offset for e in fetch_response(to_2).entries] == [2]
    to_3 = h.deliver(*h.tick(3))  # 3 fetches from offset 1: it gets epoch 2's entry
    assert fetch_response(to_3).entries == (lc(1, 2, 1),)
    to_3 = h.deliver(*h.deliver(*to_3))  # 3 persists it and fetches from offset 2
    # Offset 1 (epoch 2) is now durable on 1, 2 and 3, a majority of five, and yet it is
    # not committed: node 5 could still win an election and overwrite it.
    assert all(h.disks[n].entries[1] == lc(1, 2, 1) for n in (1, 2, 3))
    assert leader.high_watermark == 0
    # A leader that has not committed in its epoch reports no high watermark, so that a
    # node that just started never takes its lower bound for what is committed.
    assert fetch_response(to_3).high_watermark == -1
    assert h.cores[3].quorum_high_watermark == -1

    h.deliver(*h.deliver(*to_2))  # 2 persists epoch 4's entry and says so
    assert leader.high_watermark == 0  # epoch 4's entry is on 2 of 5 only

    h.deliver(*h.deliver(*to_3))  # ... and now on 3 of 5: everything up to it commits
    assert leader.high_watermark == 3
    assert h.applied[1] == [*old, lc(1, 2, 1), lc(2, 4, 1)]


# ---- 6. divergence -------------------------------------------------------------------------


def test_follower_truncates_its_uncommitted_tail_and_takes_the_leaders_entries() -> None:
    h = synced_quorum()
    h.commit(1, b"a")  # offsets 0 (LeaderChange) and 1 committed on all three
    assert [h.cores[n].high_watermark for n in (1, 2, 3)] == [2, 2, 2]
    committed = list(h.disks[1].entries)

    # Node 1 resigns; only node 2 hears of it and wins epoch 2 with node 1's vote. Its
    # LeaderChange and one more entry reach nobody.
    h.cores[1].resign()
    h.run(only(h.drain(1), to=2), among={1, 2})
    h.run(h.tick(2, h.now + CONFIG.election_timeout_ms), among={1, 2})
    assert (h.cores[2].role, h.cores[2].epoch) == (Role.LEADER, 2)
    assert h.cores[2].append([b"lost"]) == 3
    assert only(h.drain(2), kind=FetchResponse) == []
    assert h.disks[2].entries == [*committed, lc(2, 2, 2), Entry(3, 2, b"lost")]

    # Node 2 is cut off. Node 1 wins epoch 3 with node 3, whose leader has long been quiet.
    h.now += FETCH_TIMEOUT
    h.elect(1, among={1, 3})
    assert h.cores[1].epoch == 3
    h.sync(3, among={1, 3})
    assert h.cores[1].high_watermark == 3

    # Node 2 comes back, hears of epoch 3 and fetches from its log end (offset 4, epoch 2).
    h.run([request(1, 2, BeginQuorumEpochRequest(1, 3))], among={1, 2})
    assert (h.cores[2].role, h.cores[2].leader_id) == (Role.FOLLOWER, 1)
    fetch = one(h.tick(2))
    assert fetch.message == FetchRequest(2, 3, 4, 2, MAX_WAIT)
    diverging = one(h.deliver(fetch))
    assert diverging.message == FetchResponse(
        ErrorCode.NONE, 3, 1, 3, diverging=OffsetAndEpoch(epoch=1, offset=2)
    )

    refetch = one(h.deliver(diverging))
    ready = h.readies[2][-1]
    assert ready.truncate_to == 2  # where epoch 1 ends on the leader: nothing committed goes
    assert ready.truncate_to >= h.cores[2].high_watermark == 2  # what 2 knows is committed
    assert ready.messages == [refetch.out]  # the new fetch offset is durable with it
    assert refetch.message == FetchRequest(2, 3, 2, 1, MAX_WAIT)
    assert h.disks[2].entries == committed

    h.run([refetch], among={1, 2})
    assert h.disks[2].entries == h.disks[1].entries == [*committed, lc(2, 3, 1)]
    assert h.cores[2].log.end_offset == 3


# ---- 7. the leader steps down --------------------------------------------------------------


def test_leader_resigns_when_no_majority_fetched_within_one_and_a_half_fetch_timeouts() -> None:
    h = synced_quorum()
    leader = h.cores[1]
    t0 = h.now  # the followers' last fetches; they fetch no more
    h.tick(1, t0 + FETCH_TIMEOUT * 3 // 2)
    assert leader.role is Role.LEADER  # exactly 1.5 x fetch timeout since the majority

    before = h.durable()
    t = h.now
    while leader.role is Role.LEADER:
        assert t <= t0 + 3 * FETCH_TIMEOUT, "the leader never resigned"
        t = max(t + 1, leader.next_deadline_ms())
        resigned = h.tick(1, t)
    assert leader.role is Role.RESIGNED
    assert t > t0 + FETCH_TIMEOUT * 3 // 2
    ends = only(resigned, kind=EndQuorumEpochRequest)
    assert sorted(m.dest for m in ends) == [2, 3]
    for m in ends:
        assert isinstance(m.message, EndQuorumEpochRequest)
        assert (m.message.leader_id, m.message.epoch) == (1, 1)
        assert sorted(m.message.preferred_successors) == [2, 3]
    assert (leader.epoch, leader.leader_id) == (1, 1)
    assert h.durable() == before  # resigning persists nothing


def test_leader_stays_while_a_majority_keeps_fetching() -> None:
    h = synced_quorum()
    leader = h.cores[1]
    t0 = h.now
    # Node 2 fetches every MAX_WAIT (its parked fetch is answered, and it fetches again);
    # node 3 is silent. {1, 2} is a majority.
    for t in range(t0 + MAX_WAIT, t0 + 5 * FETCH_TIMEOUT, MAX_WAIT):
        h.run(h.tick(1, t), among={1, 2})
        assert leader.role is Role.LEADER, t


def test_end_quorum_epoch_makes_a_follower_campaign_before_its_fetch_timeout() -> None:
    h = synced_quorum()
    t0 = h.now  # both followers fetched now: their fetch timeouts expire at t0 + 2000
    h.cores[1].resign()
    ends = h.drain(1)
    h.deliver(one(ends, to=2, kind=EndQuorumEpochRequest))  # 3 does not get it

    soon = t0 + FETCH_TIMEOUT // 4
    prevotes = h.tick(2, soon)
    assert h.cores[2].role is Role.PROSPECTIVE
    assert sorted(m.dest for m in only(prevotes, kind=VoteRequest)) == [1, 3]
    assert only(h.tick(3, soon), kind=VoteRequest) == []
    assert h.cores[3].role is Role.FOLLOWER  # without EndQuorumEpoch: waits for its timeout

    h.run(prevotes)
    assert (h.cores[2].role, h.cores[2].epoch) == (Role.LEADER, 2)
    assert [h.cores[n].leader_id for n in (1, 3)] == [2, 2]


# ---- 8. stale and bad input ------------------------------------------------------------------


def quorum_at_epoch_2() -> Harness:
    """Three voters that all saw epoch 1 come and go; 1 leads epoch 2, 2 and 3 follow."""
    h = synced_quorum(persisted={n: PersistedState(QuorumState(1)) for n in (1, 2, 3)})
    assert h.cores[1].epoch == 2
    return h


def test_fetch_of_an_old_epoch_is_fenced() -> None:
    h = quorum_at_epoch_2()
    before = h.durable()
    reply = one(h.deliver(request(2, 1, FetchRequest(2, 1, 0, 0))))
    assert reply.message == FetchResponse(ErrorCode.FENCED_LEADER_EPOCH, 2, 1)
    assert h.durable() == before
    assert h.cores[1].role is Role.LEADER


def test_fetch_to_a_follower_names_the_leader() -> None:
    h = quorum_at_epoch_2()
    before = h.durable()
    reply = one(h.deliver(request(3, 2, FetchRequest(3, 2, 1, 2))))
    assert (reply.dest, reply.message) == (3, FetchResponse(ErrorCode.NOT_LEADER_OR_FOLLOWER, 2, 1))
    assert h.durable() == before


def test_vote_from_outside_the_voter_set_is_refused() -> None:
    h = quorum_at_epoch_2()
    before = h.durable()
    reply = one(h.deliver(request(9, 2, VoteRequest(9, 3, OffsetAndEpoch(9, 100)))))
    assert reply.message == VoteResponse(ErrorCode.INCONSISTENT_VOTER_SET, 2, 1, False)
    assert (h.cores[2].epoch, h.cores[2].role) == (2, Role.FOLLOWER)
    assert h.durable() == before


def test_begin_quorum_epoch_of_an_old_epoch_is_fenced() -> None:
    h = quorum_at_epoch_2()
    before = h.durable()
    reply = one(h.deliver(request(3, 2, BeginQuorumEpochRequest(3, 1))))
    assert reply.message == QuorumEpochResponse(ErrorCode.FENCED_LEADER_EPOCH, 2, 1)
    assert (h.cores[2].leader_id, h.cores[2].epoch) == (1, 2)
    assert h.durable() == before


def test_responses_to_requests_no_longer_in_flight_are_ignored() -> None:
    h = quorum_at_epoch_2()
    follower, leader = h.cores[2], h.cores[1]
    answered = one(h.tick(1, h.now + MAX_WAIT), to=2)  # the parked fetch times out
    old_fetch = answered.out.request
    assert isinstance(old_fetch, FetchRequest)
    h.run([answered], among={1, 2})  # 2 fetches again: `old_fetch` is answered and done
    before = h.durable()
    end = follower.log.end_offset

    last = OffsetAndEpoch(2, 2)
    stale = [
        # a late (or duplicated) answer to the fetch, now with an entry in it
        response(1, 2, FetchResponse(ErrorCode.NONE, 2, 1, end, (Entry(end, 2, b"x"),)), old_fetch),
        # a snapshot chunk nobody asked for
        response(
            1,
            2,
            FetchSnapshotResponse(ErrorCode.NONE, 2, 1, SnapshotId(9, 2), 3, 0, b"abc"),
            FetchSnapshotRequest(2, 2, SnapshotId(9, 2), 0, 3),
        ),
        # a grant for an election 2 is not running
        response(
            3,
            2,
            VoteResponse(ErrorCode.NONE, 2, NO_NODE, True),
            VoteRequest(2, 3, last),
        ),
        response(
            3,
            2,
            VoteResponse(ErrorCode.NONE, 2, NO_NODE, True),
            VoteRequest(2, 3, last, pre_vote=True),
        ),
        # a late grant for the election the leader already won
        response(3, 1, VoteResponse(ErrorCode.NONE, 2, NO_NODE, True), VoteRequest(1, 2, last)),
    ]
    for m in stale:
        assert h.deliver(m) == [], m
    assert h.durable() == before
    assert (follower.role, follower.epoch, follower.log.end_offset) == (Role.FOLLOWER, 2, end)
    assert (leader.role, leader.epoch) == (Role.LEADER, 2)


# ---- 9. snapshots --------------------------------------------------------------------------


def test_far_behind_follower_downloads_the_snapshot_in_chunks_then_fetches_after_it() -> None:
    h = Harness(config=RaftConfig(snapshot_chunk_bytes=4))
    h.elect(1)
    h.sync(2)  # node 3 follows but has fetched nothing yet
    h.commit(1, b"a", b"b", b"c")
    leader = h.cores[1]
    assert leader.high_watermark == 4 and len(h.applied[1]) == 4

    data = b"state after offset 3"  # 20 bytes: 5 chunks of 4
    sid = leader.take_snapshot(4, data)
    assert sid == SnapshotId(end_offset=4, epoch=1)
    assert h.drain(1) == []
    assert h.readies[1][-1].snapshot == Snapshot(sid, data)
    assert (h.disks[1].snapshot, h.disks[1].entries) == (Snapshot(sid, data), [])
    assert leader.append([b"d"]) == 4
    h.run(h.drain(1), among={1, 2})
    assert leader.log.start_offset == 4

    fetch = one(h.tick(3))
    assert fetch.message == FetchRequest(3, 1, 0, 0, MAX_WAIT)
    reply = one(h.deliver(fetch))
    assert isinstance(reply.message, FetchResponse)
    assert (reply.message.snapshot_id, reply.message.entries) == (sid, ())

    chunks: list[bytes] = []
    msgs = h.deliver(reply)
    while isinstance((m := one(msgs)).message, FetchSnapshotRequest):
        assert m.message == FetchSnapshotRequest(
            3, 1, sid, position=len(b"".join(chunks)), max_bytes=4
        )
        answer = one(h.deliver(m))
        assert isinstance(answer.message, FetchSnapshotResponse)
        assert answer.message.size == len(data)
        assert 0 < len(answer.message.chunk) <= 4
        chunks.append(answer.message.chunk)
        msgs = h.deliver(answer)
    assert b"".join(chunks) == data
    assert len(chunks) == 5

    ready = h.readies[3][-1]
    assert ready.install_snapshot == Snapshot(sid, data)
    assert ready.snapshot == Snapshot(sid, data)
    assert m.message == FetchRequest(3, 1, 4, 1, MAX_WAIT)  # right after the snapshot
    assert h.cores[3].high_watermark == 4

    h.run([m], among={1, 3})
    assert h.disks[3].snapshot == Snapshot(sid, data)
    assert h.disks[3].entries == h.disks[1].entries == [Entry(4, 1, b"d")]


def test_fetch_snapshot_errors() -> None:
    h = Harness(config=RaftConfig(snapshot_chunk_bytes=4))
    h.elect(1)
    h.sync(2, 3)
    h.commit(1, b"a")
    sid = h.cores[1].take_snapshot(2, b"0123456789")
    h.drain(1)
    before = h.durable()

    def ask(snapshot_id: SnapshotId, position: int) -> ErrorCode:
        reply = one(h.deliver(request(3, 1, FetchSnapshotRequest(3, 1, snapshot_id, position, 4))))
        assert isinstance(reply.message, FetchSnapshotResponse)
        assert (reply.message.epoch, reply.message.leader_id) == (1, 1)
        return reply.message.error

    assert ask(sid, 10) is ErrorCode.NONE  # the end: an empty chunk
    assert ask(SnapshotId(1, 1), 0) is ErrorCode.SNAPSHOT_NOT_FOUND
    assert ask(SnapshotId(2, 0), 0) is ErrorCode.SNAPSHOT_NOT_FOUND
    assert ask(sid, 11) is ErrorCode.POSITION_OUT_OF_RANGE
    assert ask(sid, -1) is ErrorCode.POSITION_OUT_OF_RANGE
    assert h.durable() == before


@pytest.mark.parametrize(
    "tail",
    [
        [lc(2, 2, 2), Entry(3, 2, b"lost")],  # ends at the snapshot's end offset
        [lc(2, 2, 2), Entry(3, 2, b"lost"), Entry(4, 2, b"lost too")],  # past it
    ],
)
def test_divergent_follower_at_the_snapshot_end_installs_the_snapshot(tail: list[Entry]) -> None:
    # Node 2 led epoch 2 and wrote a tail nobody got; 1 and 3 went on in epoch 3, committed
    # offsets 2 and 3 of their own and snapshotted everything below 4.
    snap = Snapshot(SnapshotId(end_offset=4, epoch=3), b"offsets 0-3")
    ahead = PersistedState(QuorumState(3), snapshot=snap)
    behind = PersistedState(QuorumState(2), entries=[lc(0, 1, 1), Entry(1, 1, b"a"), *tail])
    h = Harness(persisted={1: ahead, 2: behind, 3: ahead})
    h.elect(1, among={1, 3})
    h.sync(3, among={1, 3})
    assert (h.cores[1].epoch, h.cores[1].high_watermark) == (4, 5)

    h.run([request(1, 2, BeginQuorumEpochRequest(1, 4))], among={1, 2})
    msgs = h.tick(2)
    if len(tail) == 3:  # first cut back to where epoch 3 starts on the leader (offset 4)
        assert one(msgs).message == FetchRequest(2, 4, 5, 2, MAX_WAIT)
        msgs = h.deliver(*h.deliver(*msgs))
    fetch = one(msgs)
    assert fetch.message == FetchRequest(2, 4, 4, 2, MAX_WAIT)
    reply = one(h.deliver(fetch))
    assert isinstance(reply.message, FetchResponse)
    assert reply.message.snapshot_id == snap.snapshot_id  # offset 4 of epoch 2 is not ours
    download = one(h.deliver(reply))
    assert isinstance(download.message, FetchSnapshotRequest)  # fails: it fetches offset 4 again
    h.run([download], among={1, 2})
    assert h.disks[2].snapshot == snap
    assert h.disks[2].entries == h.disks[1].entries == [lc(4, 4, 1)]


# ---- 10. observers -------------------------------------------------------------------------


def test_observer_finds_the_leader_and_is_not_counted_in_the_high_watermark() -> None:
    h = Harness(observers=(4,))
    h.elect(1)
    h.sync(2, 3)
    observer, leader = h.cores[4], h.cores[1]
    assert not observer.is_voter

    ask = one(h.tick(4))  # knows no leader: asks some voter
    assert ask.dest in (1, 2, 3)
    assert isinstance(ask.message, FetchRequest) and ask.message.replica_id == 4
    named = one(h.deliver(ask))
    assert isinstance(named.message, FetchResponse)
    assert (named.message.epoch, named.message.leader_id) == (1, 1)
    h.deliver(named)
    assert (observer.role, observer.epoch, observer.leader_id) == (Role.FOLLOWER, 1, 1)

    h.sync(4)
    assert h.disks[4].entries == [lc(0, 1, 1)]

    # A new entry reaches the observer, but no follower: it is on two nodes, one voter.
    assert leader.append([b"x"]) == 1
    held = h.run(h.drain(1), among={1, 4})
    assert h.disks[4].entries == h.disks[1].entries == [lc(0, 1, 1), Entry(1, 1, b"x")]
    assert leader.high_watermark == 1
    # Still so when the leader next recomputes its high watermark (its own append).
    assert leader.append([b"y"]) == 2
    held += h.run(h.drain(1), among={1})
    assert leader.high_watermark == 1

    info = leader.quorum_info()
    assert info is not None
    assert (info.leader_id, info.epoch, info.high_watermark) == (1, 1, 1)
    assert [(p.replica_id, p.end_offset) for p in info.voters] == [(1, 3), (2, 1), (3, 1)]
    assert [(p.replica_id, p.end_offset) for p in info.observers] == [(4, 2)]
    assert info.observers[0].last_fetch_ms == h.now

    h.run(only(held, to=2), among={1, 2})  # one follower is enough for a majority
    assert leader.high_watermark == 3


def test_observer_never_campaigns() -> None:
    h = Harness(observers=(4,))
    observer = h.cores[4]
    reply = one(h.deliver(request(1, 4, VoteRequest(1, 1, OffsetAndEpoch(0, 0)))))
    assert reply.message == VoteResponse(ErrorCode.INCONSISTENT_VOTER_SET, 0, NO_NODE, False)

    # No leader ever answers: the observer keeps asking voters, for ten fetch timeouts.
    while h.now < 10 * FETCH_TIMEOUT:
        msgs = h.tick(4, max(h.now + 1, observer.next_deadline_ms()))
        assert observer.role in (Role.UNATTACHED, Role.FOLLOWER)
        assert only(msgs, kind=VoteRequest) == []
        assert all(isinstance(m.message, FetchRequest) and m.dest in (1, 2, 3) for m in msgs)
    assert observer.epoch == 0
    assert observer.quorum_info() is None


# ---- 11. long poll -------------------------------------------------------------------------


def test_caught_up_fetch_waits_on_the_leader_for_news() -> None:
    h = synced_quorum()
    leader = h.cores[1]
    parked_at = h.now
    assert leader.next_deadline_ms() <= parked_at + MAX_WAIT  # a driver wakes for it
    assert h.tick(1, parked_at + MAX_WAIT - 1) == []  # both fetches are held

    assert leader.append([b"x"]) == 1  # news: the held fetches are answered at once
    answers = h.drain(1)
    assert sorted(m.dest for m in answers) == [2, 3]
    for m in answers:
        assert isinstance(m.message, FetchResponse)
        assert m.message.entries == (Entry(1, 1, b"x"),)

    h.run(answers)
    assert leader.high_watermark == 2
    parked_at = h.now  # the followers' next fetches are held again
    assert h.tick(1, parked_at + MAX_WAIT - 1) == []
    timed_out = h.tick(1, parked_at + MAX_WAIT)  # max wait: answered empty
    assert sorted(m.dest for m in timed_out) == [2, 3]
    for m in timed_out:
        assert m.message == FetchResponse(ErrorCode.NONE, 1, 1, high_watermark=2)
    h.run(timed_out)
    assert [h.cores[n].high_watermark for n in (2, 3)] == [2, 2]


# ---- 12. restart ---------------------------------------------------------------------------


def test_restarted_voter_keeps_its_epoch_and_vote() -> None:
    h = Harness()
    last = OffsetAndEpoch(0, 0)
    assert one(h.deliver(request(2, 3, VoteRequest(2, 1, last)))).message == VoteResponse(
        ErrorCode.NONE, 1, NO_NODE, True
    )

    h.restart(3)
    voter = h.cores[3]
    assert voter.quorum_state == QuorumState(1, voted_for=2, leader_id=NO_NODE)
    assert (voter.role, voter.epoch) == (Role.UNATTACHED, 1)
    refused = one(h.deliver(request(1, 3, VoteRequest(1, 1, last))))
    assert refused.message == VoteResponse(ErrorCode.NONE, 1, NO_NODE, False)
    granted = one(h.deliver(request(2, 3, VoteRequest(2, 1, last))))
    assert granted.message == VoteResponse(ErrorCode.NONE, 1, NO_NODE, True)


def test_restarted_leader_comes_back_resigned_and_leads_only_a_later_epoch() -> None:
    h = synced_quorum()
    h.commit(1, b"a")
    log = list(h.disks[1].entries)

    h.restart(1)
    core = h.cores[1]
    assert (core.role, core.epoch) == (Role.RESIGNED, 1)
    assert core.quorum_state == QuorumState(1, 1, 1)
    assert h.disks[1].entries == log
    assert core.append([b"b"]) is None
    reply = one(h.deliver(request(2, 1, FetchRequest(2, 1, 2, 1))))
    assert isinstance(reply.message, FetchResponse)
    assert reply.message.error is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert reply.message.leader_id == -1  # it names no leader: it is none any more

    mark = len(h.readies[1])
    h.now += FETCH_TIMEOUT  # the followers' leader has gone quiet
    h.elect(1)
    assert core.epoch == 2
    assert [h.cores[n].leader_id for n in (2, 3)] == [1, 1]
    epochs = [r.quorum_state.epoch for r in h.readies[1][mark:] if r.quorum_state]
    assert epochs and all(e == 2 for e in epochs)  # nothing more was persisted for epoch 1
    assert h.disks[1].entries == [*log, lc(2, 2, 1)]


def test_restarted_single_voter_leader_moves_to_the_next_epoch() -> None:
    h = Harness(voters=(1,))
    assert h.cores[1].epoch == 1
    h.restart(1)
    assert (h.cores[1].role, h.cores[1].epoch) == (Role.LEADER, 2)
    assert h.disks[1].quorum == QuorumState(2, 1, 1)
    assert h.disks[1].entries == [lc(0, 1, 1), lc(1, 2, 1)]
    assert h.cores[1].high_watermark == 2
