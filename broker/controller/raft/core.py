"""The Raft core of one controller-quorum node (PURE): KRaft's protocol (KIP-595) with
pre-vote (KIP-996), in the shape of etcd-raft's Step/Tick/Ready.

Inputs: `receive_request`, `receive_response` (with the request it answers), `tick(now_ms)`,
`append(values)` on the leader, `take_snapshot` from the state machine, `resign()`.
Output: `ready()` returns what to do, in this order: persist the quorum state, truncate the
log, write the snapshot, append the entries and make them durable; only then send the
messages, then apply `committed` to the state machine (after resetting it to
`install_snapshot` if set); then call `advance(ready)`. Nothing in a Ready may be sent before
what it persists is durable: a vote is granted, and a follower reports its log end, only
for state that survives a crash.

Roles:
    UNATTACHED   no leader known in the current epoch (a vote may have been cast in it)
    PROSPECTIVE  asking for pre-votes: would a majority vote for us? (no epoch change)
    CANDIDATE    campaigning in a new epoch, having voted for itself
    LEADER       appends entries, answers fetches, computes the high watermark
    FOLLOWER     fetches from the leader of the current epoch
    RESIGNED     was the leader of the current epoch; waits for a successor

Replication is pull-based: followers and observers (nodes outside the voter set, such as
brokers) send Fetch with their log end and the epoch of their last entry; the leader answers
entries, a divergence (the follower truncates and fetches again) or a snapshot id. The
leader's high watermark is the offset a majority of voters have persisted, and it advances
only past the leader's first entry of its own epoch (the LeaderChange control record), so an
entry of an older epoch is never committed by counting replicas. It never moves back.

A voter that has not heard from a leader within `fetch_timeout_ms` first asks for pre-votes;
a voter that has heard from its leader within that time refuses them, so a node that was cut
off and comes back cannot force an election on a healthy quorum. A leader that has not been
fetched from by a majority within 1.5 x `fetch_timeout_ms` resigns.

Elections and roles are here; replication (the leader's side and the followers') is in
`replication`, the base class of `RaftCore`; the types are in `state`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from tidelog.broker.controller.raft.log import RaftLog
from tidelog.broker.controller.raft.messages import (
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchResponse,
    FetchSnapshotResponse,
    Outbound,
    QuorumEpochResponse,
    RaftRequest,
    RaftResponse,
    VoteRequest,
    VoteResponse,
)
from tidelog.broker.controller.raft.replication import Replication
from tidelog.broker.controller.raft.state import (
    LEADER_CHANGE,
    Parked,
    QuorumInfo,
    RaftConfig,
    Ready,
    ReplicaProgress,
    Role,
    SnapshotDownload,
)
from tidelog.broker.controller.raft.types import (
    NO_NODE,
    Entry,
    PersistedState,
    QuorumState,
    Snapshot,
    SnapshotId,
)
from tidelog.client.protocol.errors import ErrorCode

__all__ = [
    "LEADER_CHANGE",
    "QuorumInfo",
    "RaftConfig",
    "RaftCore",
    "Ready",
    "ReplicaProgress",
    "Role",
]


def _leader_change_none(epoch: int, leader_id: int, voters: tuple[int, ...]) -> bytes:
    return b""


class RaftCore(Replication):
    def __init__(
        self,
        node_id: int,
        voters: Sequence[int],
        persisted: PersistedState,
        *,
        now_ms: int,
        rng: random.Random,
        config: RaftConfig | None = None,
        leader_change_value: Callable[[int, int, tuple[int, ...]], bytes] = _leader_change_none,
    ) -> None:
        """`leader_change_value(epoch, leader_id, voters)` encodes the LeaderChange record."""
        assert voters, "a quorum needs voters"
        self.node_id = node_id
        self.voters = frozenset(voters)
        self.config = config or RaftConfig()
        self._rng = rng
        self._leader_change_value = leader_change_value
        self._log = RaftLog(persisted.snapshot, persisted.entries)
        self._quorum = persisted.quorum
        self._persisted_end = self._log.end_offset
        self._high_watermark = self._log.start_offset
        self._quorum_high_watermark = -1
        self._rejoin_offset = self._log.end_offset
        """The log's end at start, lowered by truncation: everything this node applied
        before it stopped lies below it (see `catch_up_offset`)."""
        self._applied = self._log.start_offset
        self._now = now_ms
        self._role = Role.UNATTACHED
        self._deadline_ms = now_ms
        # outputs not yet taken by ready()
        self._pending_quorum: QuorumState | None = None
        self._pending_truncate: int | None = None
        self._pending_snapshot: Snapshot | None = None
        self._pending_install: Snapshot | None = None
        self._pending_entries: list[Entry] = []
        self._outbox: list[Outbound] = []
        self._truncated_since_ready: int | None = None
        # follower state
        self._last_leader_contact_ms: int | None = None
        self._fetch_inflight: RaftRequest | None = None
        self._fetch_inflight_deadline_ms = 0
        self._next_fetch_ms = now_ms
        self._download: SnapshotDownload | None = None
        # candidate state
        self._granted: set[int] = set()
        # leader state
        self._epoch_start_offset = 0
        self._leader_since_ms = now_ms
        self._progress: dict[int, ReplicaProgress] = {}
        self._parked: dict[int, Parked] = {}
        self._begin_next_send_ms: dict[int, int] = {}

        q = self._quorum
        if q.leader_id == node_id:
            self._role = Role.RESIGNED
            self._deadline_ms = now_ms + self._election_delay_ms()
        elif q.leader_id != NO_NODE:
            self._enter_follower(q.epoch, q.leader_id, persist=False)
        else:
            self._enter_unattached(q.epoch, q.voted_for, persist=False)
        if self.voters == {node_id} and self._role is not Role.LEADER:
            self._campaign()

    # ---- queries ------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def epoch(self) -> int:
        return self._quorum.epoch

    @property
    def leader_id(self) -> int:
        return self._quorum.leader_id

    @property
    def quorum_state(self) -> QuorumState:
        return self._quorum

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @property
    def quorum_high_watermark(self) -> int:
        """The quorum's high watermark as this node last learned it since it started (or
        last became leader): a follower's is what a leader that had committed in its own
        epoch reported, not capped by this node's log; the leader's is its own, once an
        entry of its epoch commits. -1 until then: `high_watermark` is only a lower bound
        (at start, the log start), and a leader reports -1."""
        return self._quorum_high_watermark

    @property
    def catch_up_offset(self) -> int:
        """Where a node that (re)started has caught up: once it has applied to here, its
        state is the quorum's (as of when it learned it) and includes everything it had
        applied before it stopped, even where the only leader it reaches is a deposed one
        that does not know the latest commits. The quorum high watermark, but at least this
        node's log end at start (lowered when a divergent tail is truncated); -1 while the
        quorum high watermark is unknown."""
        if self._quorum_high_watermark < 0:
            return -1
        return max(self._quorum_high_watermark, self._rejoin_offset)

    @property
    def log(self) -> RaftLog:
        return self._log

    @property
    def is_voter(self) -> bool:
        return self.node_id in self.voters

    def next_deadline_ms(self) -> int:
        """The next time `tick` has something to do."""
        deadlines = [self._deadline_ms]
        fetching = self._role is Role.FOLLOWER or (
            self._role is Role.UNATTACHED and not self.is_voter
        )
        if fetching and self._fetch_inflight is None:
            deadlines.append(self._next_fetch_ms)
        if self._fetch_inflight is not None:
            deadlines.append(self._fetch_inflight_deadline_ms)
        deadlines.extend(p.deadline_ms for p in self._parked.values())
        deadlines.extend(self._begin_next_send_ms.values())
        return min(deadlines)

    def quorum_info(self) -> QuorumInfo | None:
        """The leader's view of every replica; None on a node that is not the leader."""
        if self._role is not Role.LEADER:
            return None
        me = ReplicaProgress(self.node_id, self._log.end_offset, self._now, self._now)
        voters = tuple(
            me if v == self.node_id else self._progress.get(v, ReplicaProgress(v))
            for v in sorted(self.voters)
        )
        observers = tuple(p for r, p in sorted(self._progress.items()) if r not in self.voters)
        return QuorumInfo(
            self.node_id, self.epoch, self._reported_high_watermark(), voters, observers
        )

    # ---- inputs -------------------------------------------------------------------------

    def append(self, values: Sequence[bytes]) -> int | None:
        """Append data entries as the leader; the offset of the first, or None when this
        node is not the leader (nothing is appended)."""
        if self._role is not Role.LEADER:
            return None
        first = self._log.end_offset
        self._append_local([Entry(first + i, self.epoch, bytes(v)) for i, v in enumerate(values)])
        self._answer_parked()
        return first

    def take_snapshot(self, end_offset: int, data: bytes) -> SnapshotId:
        """Record a snapshot of the state machine holding every entry below `end_offset`
        (which must be applied); entries below it leave the log once it is persisted."""
        assert self._log.start_offset < end_offset <= self._applied, (end_offset, self._applied)
        snapshot = Snapshot(self._log.snapshot_id_at(end_offset), data)
        self._log.install(snapshot)
        self._pending_snapshot = snapshot
        return snapshot.snapshot_id

    def resign(self) -> None:
        """Give up leadership (a controlled shutdown): the followers elect a successor."""
        if self._role is Role.LEADER:
            self._enter_resigned()

    def tick(self, now_ms: int) -> None:
        self._now = max(self._now, now_ms)
        now = self._now
        role = self._role
        if role is Role.LEADER:
            self._tick_leader(now)
            return
        if self._fetch_inflight is not None and now >= self._fetch_inflight_deadline_ms:
            self._fetch_inflight = None
            self._download = None
            self._next_fetch_ms = now
        if now >= self._deadline_ms:
            if not self.is_voter:
                if role is Role.FOLLOWER:  # the leader went quiet: ask the voters again
                    self._enter_unattached(self.epoch, self._quorum.voted_for, persist=True)
                self._deadline_ms = now + self.config.fetch_timeout_ms
            elif role is Role.FOLLOWER and self._leader_heard(now):
                assert self._last_leader_contact_ms is not None
                self._deadline_ms = self._last_leader_contact_ms + self.config.fetch_timeout_ms
            else:
                self._campaign()
        if self._role in (Role.FOLLOWER, Role.UNATTACHED):
            self._maybe_fetch(now)

    def receive_request(self, source: int, request: RaftRequest, now_ms: int) -> None:
        self._now = max(self._now, now_ms)
        if isinstance(request, VoteRequest):
            self._on_vote_request(source, request)
        elif isinstance(request, BeginQuorumEpochRequest):
            self._on_begin_quorum(source, request)
        elif isinstance(request, EndQuorumEpochRequest):
            self._on_end_quorum(source, request)
        elif isinstance(request, FetchRequest):
            self._on_fetch_request(source, request)
        else:
            self._on_fetch_snapshot_request(source, request)

    def receive_response(
        self, source: int, request: RaftRequest, response: RaftResponse, now_ms: int
    ) -> None:
        self._now = max(self._now, now_ms)
        if response.epoch > self.epoch:
            self._observe(response.epoch, response.leader_id)
            if request is self._fetch_inflight:
                self._fetch_inflight = None
            return
        if isinstance(response, VoteResponse) and isinstance(request, VoteRequest):
            self._on_vote_response(source, request, response)
        elif isinstance(response, FetchResponse) and request is self._fetch_inflight:
            self._fetch_inflight = None
            self._on_fetch_response(response)
        elif isinstance(response, FetchSnapshotResponse) and request is self._fetch_inflight:
            self._fetch_inflight = None
            self._on_fetch_snapshot_response(response)
        elif (
            isinstance(response, QuorumEpochResponse)
            and isinstance(request, BeginQuorumEpochRequest)
            and response.error is ErrorCode.NONE
            and self._role is Role.LEADER
        ):
            self._begin_next_send_ms.pop(source, None)

    def request_failed(self, destination: int, request: RaftRequest, now_ms: int) -> None:
        """`request` to `destination` will get no answer (the connection broke or was
        refused): a fetch is retried after a backoff instead of waiting out its timeout."""
        self._now = max(self._now, now_ms)
        if request is self._fetch_inflight:
            self._fetch_inflight = None
            self._download = None
            self._retry_fetch_later()

    def ready(self) -> Ready:
        """Take the pending outputs. Call `advance` once they are carried out."""
        ready = Ready(
            quorum_state=self._pending_quorum,
            truncate_to=self._pending_truncate,
            snapshot=self._pending_snapshot,
            entries=self._pending_entries,
            messages=self._outbox,
            install_snapshot=self._pending_install,
        )
        self._pending_quorum = None
        self._pending_truncate = None
        self._pending_snapshot = None
        self._pending_install = None
        self._pending_entries = []
        self._outbox = []
        self._truncated_since_ready = None
        end = self._durable_end_after(ready)
        if ready.install_snapshot is not None:
            self._applied = ready.install_snapshot.snapshot_id.end_offset
        apply_to = min(self._high_watermark, end)
        if apply_to > self._applied:
            ready.committed = [self._log.entry(o) for o in range(self._applied, apply_to)]
            self._applied = apply_to
        ready.high_watermark = self._high_watermark
        return ready

    def advance(self, ready: Ready) -> None:
        """The driver has persisted `ready`: its entries now count toward the majority."""
        end = self._durable_end_after(ready)
        if self._truncated_since_ready is not None:
            end = min(end, self._truncated_since_ready)
        self._persisted_end = min(end, self._log.end_offset)
        if self._role is Role.LEADER:
            self._maybe_advance_high_watermark()

    def _durable_end_after(self, ready: Ready) -> int:
        end = self._persisted_end
        if ready.truncate_to is not None:
            end = min(end, ready.truncate_to)
        if ready.install_snapshot is not None:
            end = ready.install_snapshot.snapshot_id.end_offset
        if ready.entries:
            end = ready.entries[-1].offset + 1
        return end

    # ---- transitions --------------------------------------------------------------------

    def _set_quorum(self, state: QuorumState) -> None:
        assert state.epoch >= self._quorum.epoch, "the epoch never goes back"
        if state != self._quorum:
            self._quorum = state
            self._pending_quorum = state

    def _reset_role_state(self) -> None:
        for parked in self._parked.values():
            gone = FetchResponse(ErrorCode.NOT_LEADER_OR_FOLLOWER, self.epoch, NO_NODE)
            self._answer_fetch(parked.request, gone)
        self._parked.clear()
        self._progress.clear()
        self._begin_next_send_ms.clear()
        self._granted.clear()
        self._fetch_inflight = None
        self._download = None

    def _enter_unattached(self, epoch: int, voted_for: int, *, persist: bool) -> None:
        self._reset_role_state()
        self._role = Role.UNATTACHED
        state = QuorumState(epoch, voted_for, NO_NODE)
        if persist:
            self._set_quorum(state)
        self._last_leader_contact_ms = None
        self._deadline_ms = self._now + self._election_delay_ms()
        self._next_fetch_ms = self._now

    def _enter_follower(self, epoch: int, leader_id: int, *, persist: bool = True) -> None:
        self._reset_role_state()
        voted = self._quorum.voted_for if epoch == self._quorum.epoch else NO_NODE
        if persist:
            self._set_quorum(QuorumState(epoch, voted, leader_id))
        self._role = Role.FOLLOWER
        # Only an answered fetch counts as contact: a leader named by a peer may be dead,
        # and pre-votes must not be refused on its account.
        self._last_leader_contact_ms = None
        self._deadline_ms = self._now + self.config.fetch_timeout_ms
        self._next_fetch_ms = self._now

    def _campaign(self) -> None:
        """Start a pre-vote round (a candidacy at once when we are the only voter)."""
        assert self.is_voter
        self._reset_role_state()
        self._role = Role.PROSPECTIVE
        self._granted.add(self.node_id)
        self._deadline_ms = self._now + self._election_delay_ms()
        if self._has_majority(self._granted):
            self._enter_candidate()
            return
        request = VoteRequest(self.node_id, self.epoch + 1, self._log.last, pre_vote=True)
        for voter in sorted(self.voters - {self.node_id}):
            self._send(voter, request)

    def _enter_candidate(self) -> None:
        self._reset_role_state()
        self._role = Role.CANDIDATE
        epoch = self.epoch + 1
        self._set_quorum(QuorumState(epoch, self.node_id, NO_NODE))
        self._granted.add(self.node_id)
        self._deadline_ms = self._now + self._election_delay_ms()
        if self._has_majority(self._granted):
            self._enter_leader()
            return
        request = VoteRequest(self.node_id, epoch, self._log.last)
        for voter in sorted(self.voters - {self.node_id}):
            self._send(voter, request)

    def _enter_leader(self) -> None:
        self._reset_role_state()
        self._role = Role.LEADER
        self._set_quorum(QuorumState(self.epoch, self.node_id, self.node_id))
        self._epoch_start_offset = self._log.end_offset
        # What it knows as committed may trail what the last leader committed: it reports
        # no high watermark (-1) until an entry of its own epoch commits.
        self._quorum_high_watermark = -1
        self._leader_since_ms = self._now
        voters = tuple(sorted(self.voters))
        value = self._leader_change_value(self.epoch, self.node_id, voters)
        self._append_local([Entry(self._log.end_offset, self.epoch, value, LEADER_CHANGE)])
        for voter in voters:
            if voter != self.node_id:
                self._progress[voter] = ReplicaProgress(voter)
                self._begin_next_send_ms[voter] = self._now
        self._deadline_ms = self._now + self._check_quorum_interval_ms()
        self._tick_leader(self._now)

    def _enter_resigned(self) -> None:
        successors = tuple(
            p.replica_id
            for p in sorted(
                (self._progress.get(v, ReplicaProgress(v)) for v in self.voters),
                key=lambda p: -p.end_offset,
            )
            if p.replica_id != self.node_id
        )
        self._reset_role_state()
        self._role = Role.RESIGNED
        self._deadline_ms = self._now + self._election_delay_ms()
        request = EndQuorumEpochRequest(self.node_id, self.epoch, successors)
        for voter in successors:
            self._send(voter, request)

    def _observe(self, epoch: int, leader_id: int) -> None:
        """A peer speaks of a newer epoch (or names our epoch's leader): follow it."""
        if epoch < self.epoch:
            return
        if epoch == self.epoch and (
            leader_id == NO_NODE
            or self._role in (Role.LEADER, Role.RESIGNED)
            or leader_id == self.node_id
            or (self._role is Role.FOLLOWER and self.leader_id == leader_id)
        ):
            return
        if leader_id != NO_NODE and leader_id != self.node_id:
            self._enter_follower(epoch, leader_id)
        else:
            self._enter_unattached(epoch, NO_NODE, persist=True)

    # ---- votes --------------------------------------------------------------------------

    def _on_vote_request(self, source: int, request: VoteRequest) -> None:
        if request.candidate_id not in self.voters or not self.is_voter:
            self._vote_reply(source, request, False, ErrorCode.INCONSISTENT_VOTER_SET)
            return
        up_to_date = request.last_offset >= self._log.last
        if request.pre_vote:
            granted = (
                request.epoch > self.epoch and up_to_date and not self._leader_heard(self._now)
            )
            self._vote_reply(source, request, granted)
            return
        if request.epoch < self.epoch:
            self._vote_reply(source, request, False, ErrorCode.FENCED_LEADER_EPOCH)
            return
        if request.epoch > self.epoch:
            self._enter_unattached(request.epoch, NO_NODE, persist=True)
        granted = (
            self._role in (Role.UNATTACHED, Role.PROSPECTIVE)
            and self._quorum.voted_for in (NO_NODE, request.candidate_id)
            and up_to_date
        )
        if granted:
            self._enter_unattached(self.epoch, request.candidate_id, persist=True)
        self._vote_reply(source, request, granted)

    def _vote_reply(
        self, source: int, request: VoteRequest, granted: bool, error: ErrorCode = ErrorCode.NONE
    ) -> None:
        response = VoteResponse(error, self.epoch, self.leader_id, granted)
        self._outbox.append(Outbound(source, response, request))

    def _on_vote_response(self, source: int, request: VoteRequest, response: VoteResponse) -> None:
        if not response.vote_granted and response.leader_id != NO_NODE:
            # Refused because the voter follows a leader of our epoch: follow it too.
            self._observe(response.epoch, response.leader_id)
            return
        if request.pre_vote:
            current = self._role is Role.PROSPECTIVE and request.epoch == self.epoch + 1
        else:
            current = self._role is Role.CANDIDATE and request.epoch == self.epoch
        if not current or source not in self.voters:
            return
        if response.vote_granted:
            self._granted.add(source)
        else:
            self._granted.discard(source)
        if self._has_majority(self._granted):
            if request.pre_vote:
                self._enter_candidate()
            else:
                self._enter_leader()

    def _has_majority(self, nodes: set[int]) -> bool:
        return 2 * len(nodes & self.voters) > len(self.voters)

    def _election_delay_ms(self) -> int:
        backoff = self._rng.randrange(self.config.election_backoff_max_ms + 1)
        return self.config.election_timeout_ms + backoff

    def _leader_heard(self, now: int) -> bool:
        """Whether this node has a live leader: it is one, or heard from one recently."""
        if self._role is Role.LEADER:
            return True
        contact = self._last_leader_contact_ms
        return (
            self._role is Role.FOLLOWER
            and contact is not None
            and now - contact < self.config.fetch_timeout_ms
        )

    # ---- quorum epoch announcements -----------------------------------------------------

    def _on_begin_quorum(self, source: int, request: BeginQuorumEpochRequest) -> None:
        error = ErrorCode.NONE
        if request.leader_id not in self.voters:
            error = ErrorCode.INCONSISTENT_VOTER_SET
        elif request.epoch < self.epoch:
            error = ErrorCode.FENCED_LEADER_EPOCH
        elif request.epoch == self.epoch and self.leader_id not in (NO_NODE, request.leader_id):
            error = ErrorCode.INVALID_REQUEST
        else:
            self._observe(request.epoch, request.leader_id)
        response = QuorumEpochResponse(error, self.epoch, self.leader_id)
        self._outbox.append(Outbound(source, response, request))

    def _on_end_quorum(self, source: int, request: EndQuorumEpochRequest) -> None:
        error = ErrorCode.NONE
        if request.leader_id not in self.voters:
            error = ErrorCode.INCONSISTENT_VOTER_SET
        elif request.epoch < self.epoch:
            error = ErrorCode.FENCED_LEADER_EPOCH
        else:
            self._observe(request.epoch, request.leader_id)
            if self._role is Role.FOLLOWER and self.leader_id == request.leader_id:
                successors = request.preferred_successors
                rank = successors.index(self.node_id) if self.node_id in successors else 0
                self._leader_gone(rank)
        response = QuorumEpochResponse(error, self.epoch, self.leader_id)
        self._outbox.append(Outbound(source, response, request))
