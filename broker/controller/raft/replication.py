"""Replication in the Raft core (PURE): the leader serves Fetch and FetchSnapshot and
advances the high watermark; followers and observers fetch, truncate a divergent log and
download snapshots. A part of `RaftCore` (its base class), split out for size: it shares
the core's state, declared here, and calls back into the core's role transitions.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from tidelog.broker.controller.raft.log import RaftLog
from tidelog.broker.controller.raft.messages import (
    BeginQuorumEpochRequest,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    Outbound,
    RaftRequest,
)
from tidelog.broker.controller.raft.state import (
    OBSERVER_SESSION_TIMEOUT_MS,
    Parked,
    RaftConfig,
    ReplicaProgress,
    Role,
    SnapshotDownload,
)
from tidelog.broker.controller.raft.types import NO_NODE, Entry, Snapshot
from tidelog.client.protocol.errors import ErrorCode


class Replication:
    node_id: int
    voters: frozenset[int]
    config: RaftConfig
    _rng: random.Random
    _log: RaftLog
    _role: Role
    _now: int
    _deadline_ms: int
    _high_watermark: int
    _quorum_high_watermark: int
    _rejoin_offset: int
    _persisted_end: int
    _epoch_start_offset: int
    _leader_since_ms: int
    _outbox: list[Outbound]
    _pending_entries: list[Entry]
    _pending_truncate: int | None
    _pending_snapshot: Snapshot | None
    _pending_install: Snapshot | None
    _truncated_since_ready: int | None
    _progress: dict[int, ReplicaProgress]
    _parked: dict[int, Parked]
    _begin_next_send_ms: dict[int, int]
    _last_leader_contact_ms: int | None
    _fetch_inflight: RaftRequest | None
    _fetch_inflight_deadline_ms: int
    _next_fetch_ms: int
    _download: SnapshotDownload | None

    if TYPE_CHECKING:  # the core's, defined in RaftCore

        @property
        def epoch(self) -> int: ...

        @property
        def leader_id(self) -> int: ...

        @property
        def is_voter(self) -> bool: ...

        def _observe(self, epoch: int, leader_id: int) -> None: ...

        def _enter_resigned(self) -> None: ...

        def _has_majority(self, nodes: set[int]) -> bool: ...

    # ---- the leader ---------------------------------------------------------------------

    def _tick_leader(self, now: int) -> None:
        for replica, parked in list(self._parked.items()):
            if now >= parked.deadline_ms:
                del self._parked[replica]
                self._answer_fetch(parked.request, self._fetch_entries_response(parked.request))
        for voter, when in list(self._begin_next_send_ms.items()):
            if now >= when:
                self._send(voter, BeginQuorumEpochRequest(self.node_id, self.epoch))
                self._begin_next_send_ms[voter] = now + self.config.request_timeout_ms
        if now >= self._deadline_ms:
            horizon = now - self._check_quorum_interval_ms()
            alive = {self.node_id} | {
                v for v, p in self._progress.items() if p.last_fetch_ms >= horizon
            }
            # A new leader has a grace period: nobody had the chance to fetch from it yet.
            if self._has_majority(alive) or self._leader_since_ms >= horizon:
                self._deadline_ms = now + self.config.fetch_timeout_ms // 2
                for replica, progress in list(self._progress.items()):
                    silent_ms = now - progress.last_fetch_ms
                    if replica not in self.voters and silent_ms > OBSERVER_SESSION_TIMEOUT_MS:
                        del self._progress[replica]
            else:
                self._enter_resigned()

    def _check_quorum_interval_ms(self) -> int:
        return self.config.fetch_timeout_ms * 3 // 2

    def _append_local(self, entries: list[Entry]) -> None:
        self._log.append(entries)
        self._pending_entries.extend(entries)

    def _maybe_advance_high_watermark(self) -> None:
        positions = sorted(
            (
                self._persisted_end
                if v == self.node_id
                else self._progress.get(v, ReplicaProgress(v)).end_offset
                for v in self.voters
            ),
            reverse=True,
        )
        majority = positions[len(self.voters) // 2]
        if majority > self._epoch_start_offset and majority > self._high_watermark:
            self._high_watermark = majority
            self._quorum_high_watermark = majority
            self._answer_parked()

    def _answer_parked(self) -> None:
        for parked in self._parked.values():
            self._answer_fetch(parked.request, self._fetch_entries_response(parked.request))
        self._parked.clear()

    def _not_serving(self, epoch: int) -> tuple[ErrorCode, int]:
        """Why a fetch (or snapshot fetch) of `epoch` is refused here, and the leader to
        name: none on a resigned (or restarted) leader, so that its followers campaign at
        once instead of waiting out their fetch timeout."""
        if epoch < self.epoch:
            error = ErrorCode.FENCED_LEADER_EPOCH
        elif epoch > self.epoch:
            error = ErrorCode.UNKNOWN_LEADER_EPOCH
        else:
            error = ErrorCode.NOT_LEADER_OR_FOLLOWER
        return error, NO_NODE if self._role is Role.RESIGNED else self.leader_id

    def _fetch_entries_response(self, request: FetchRequest) -> FetchResponse:
        return self._served(
            entries=self._log.read(request.fetch_offset, self.config.fetch_max_bytes)
        )

    def _served(self, **outcome: Any) -> FetchResponse:
        """A leader's successful Fetch answer: entries, a divergence or a snapshot id."""
        return FetchResponse(
            ErrorCode.NONE, self.epoch, self.node_id, self._reported_high_watermark(), **outcome
        )

    def _redirect_fetch(self, request: FetchRequest, response: FetchResponse) -> None:
        """Answer a fetch that must first truncate or load a snapshot; its replica was heard
        from, but its position is not taken from this request."""
        self._answer_fetch(request, response)
        self._note_contact(request.replica_id)

    def _reported_high_watermark(self) -> int:
        return self._quorum_high_watermark

    def _answer_fetch(self, request: FetchRequest, response: FetchResponse) -> None:
        self._outbox.append(Outbound(request.replica_id, response, request))

    def _on_fetch_request(self, source: int, request: FetchRequest) -> None:
        if self._role is not Role.LEADER or request.epoch != self.epoch:
            error, leader = self._not_serving(request.epoch)
            self._answer_fetch(request, FetchResponse(error, self.epoch, leader))
            return
        log = self._log
        offset = request.fetch_offset
        snapshot = log.snapshot
        if offset < log.start_offset or (
            offset == log.start_offset
            and snapshot is not None
            and request.last_fetched_epoch != snapshot.snapshot_id.epoch
        ):
            assert snapshot is not None, "a log starts above 0 only after a snapshot"
            self._redirect_fetch(request, self._served(snapshot_id=snapshot.snapshot_id))
            return
        end = log.end_offset_for_epoch(request.last_fetched_epoch)
        if end.epoch != request.last_fetched_epoch or end.offset < offset:
            self._redirect_fetch(request, self._served(diverging=end))
            return
        progress = self._note_contact(request.replica_id)
        self._begin_next_send_ms.pop(request.replica_id, None)
        progress.end_offset = offset
        if offset >= log.end_offset:
            progress.last_caught_up_ms = self._now
        old = self._parked.pop(request.replica_id, None)
        if old is not None:
            self._answer_fetch(old.request, self._fetch_entries_response(old.request))
        before = self._high_watermark
        if request.replica_id in self.voters:
            self._maybe_advance_high_watermark()
        response = self._fetch_entries_response(request)
        if response.entries or before != self._high_watermark or request.max_wait_ms <= 0:
            self._answer_fetch(request, response)
        else:
            wait = min(request.max_wait_ms, self.config.fetch_max_wait_ms)
            self._parked[request.replica_id] = Parked(request, self._now + wait)

    def _note_contact(self, replica_id: int) -> ReplicaProgress:
        """The leader's record of a replica's fetch (a fetch without a replica id, -1, is
        answered but not tracked)."""
        if replica_id < 0:
            return ReplicaProgress(replica_id)
        progress = self._progress.setdefault(replica_id, ReplicaProgress(replica_id))
        progress.last_fetch_ms = self._now
        return progress

    def _on_fetch_snapshot_request(self, source: int, request: FetchSnapshotRequest) -> None:
        def reply(response: FetchSnapshotResponse) -> None:
            self._outbox.append(Outbound(request.replica_id, response, request))

        if self._role is not Role.LEADER or request.epoch != self.epoch:
            error, leader = self._not_serving(request.epoch)
            reply(FetchSnapshotResponse(error, self.epoch, leader))
            return
        snapshot = self._log.snapshot
        if snapshot is None or snapshot.snapshot_id != request.snapshot_id:
            reply(FetchSnapshotResponse(ErrorCode.SNAPSHOT_NOT_FOUND, self.epoch, self.node_id))
            return
        size = len(snapshot.data)
        if not 0 <= request.position <= size:
            reply(FetchSnapshotResponse(ErrorCode.POSITION_OUT_OF_RANGE, self.epoch, self.node_id))
            return
        self._note_contact(request.replica_id)
        length = max(1, min(request.max_bytes, self.config.snapshot_chunk_bytes))
        chunk = snapshot.data[request.position : request.position + length]
        reply(
            FetchSnapshotResponse(
                ErrorCode.NONE,
                self.epoch,
                self.node_id,
                snapshot.snapshot_id,
                size,
                request.position,
                chunk,
            )
        )

    # ---- followers and observers --------------------------------------------------------

    def _maybe_fetch(self, now: int) -> None:
        if self._fetch_inflight is not None or now < self._next_fetch_ms:
            return
        if self._role is Role.FOLLOWER:
            target = self.leader_id
        else:
            # No leader known: an observer asks a voter, which names the leader.
            if self.is_voter:
                return
            target = self._rng.choice(sorted(self.voters))
        if self._download is not None:
            request: RaftRequest = FetchSnapshotRequest(
                self.node_id,
                self.epoch,
                self._download.snapshot_id,
                len(self._download.data),
                self.config.snapshot_chunk_bytes,
            )
        else:
            end = self._log.end_offset
            request = FetchRequest(
                self.node_id,
                self.epoch,
                end,
                self._log.epoch_before(end),
                self.config.fetch_max_wait_ms,
            )
        self._send(target, request)
        self._fetch_inflight = request
        self._fetch_inflight_deadline_ms = (
            now + self.config.fetch_max_wait_ms + self.config.request_timeout_ms
        )

    def _send(self, destination: int, request: RaftRequest) -> None:
        self._outbox.append(Outbound(destination, request))

    def _retry_fetch_later(self) -> None:
        self._next_fetch_ms = self._now + self.config.retry_backoff_ms

    def _leader_answered(self) -> None:
        self._last_leader_contact_ms = self._now
        self._deadline_ms = self._now + self.config.fetch_timeout_ms

    def _on_fetch_response(self, response: FetchResponse) -> None:
        if response.error is not ErrorCode.NONE:
            if (
                response.error is ErrorCode.NOT_LEADER_OR_FOLLOWER
                and response.epoch == self.epoch
                and response.leader_id == NO_NODE
                and self._role is Role.FOLLOWER
            ):
                self._leader_gone()
            self._observe(response.epoch, response.leader_id)
            self._retry_fetch_later()
            return
        if response.epoch != self.epoch:
            self._retry_fetch_later()
            return
        if self._role is not Role.FOLLOWER:
            self._observe(response.epoch, response.leader_id)
            if self._role is not Role.FOLLOWER:
                return
        if response.leader_id != self.leader_id:
            return
        self._leader_answered()
        self._next_fetch_ms = self._now
        if response.diverging is not None:
            self._truncate_diverging(response.diverging.epoch, response.diverging.offset)
        elif response.snapshot_id is not None:
            # Our log ends below the leader's log start, or at it with another epoch (an
            # uncommitted tail): either way the snapshot replaces it.
            self._download = SnapshotDownload(response.snapshot_id, -1, bytearray())
        else:
            entries = [e for e in response.entries if e.offset >= self._log.end_offset]
            if entries and entries[0].offset == self._log.end_offset:
                self._append_local(entries)
            self._follow_high_watermark(response.high_watermark)
        self._maybe_fetch(self._now)

    def _follow_high_watermark(self, leader_high_watermark: int) -> None:
        if leader_high_watermark < 0:
            return  # the leader has not committed in its epoch yet
        self._quorum_high_watermark = max(self._quorum_high_watermark, leader_high_watermark)
        self._high_watermark = max(
            self._high_watermark, min(leader_high_watermark, self._log.end_offset)
        )

    def _truncate_diverging(self, epoch: int, end_offset: int) -> None:
        local = self._log.end_offset_for_epoch(epoch)
        offset = min(end_offset, local.offset)
        offset = max(offset, self._log.start_offset)
        assert offset >= self._high_watermark, "a committed entry diverged"
        if offset >= self._log.end_offset:
            return
        self._log.truncate_to(offset)
        self._rejoin_offset = min(self._rejoin_offset, offset)
        if self._pending_entries and offset >= self._pending_entries[0].offset:
            del self._pending_entries[offset - self._pending_entries[0].offset :]
        else:
            self._pending_entries.clear()
            self._pending_truncate = min(
                offset, self._pending_truncate if self._pending_truncate is not None else offset
            )
        self._truncated_since_ready = min(
            offset,
            self._truncated_since_ready if self._truncated_since_ready is not None else offset,
        )

    def _leader_gone(self, rank: int = 0) -> None:
        """Our leader resigned: grant pre-votes now, and campaign after a backoff that lets
        the most caught-up successor (`rank` 0) go first."""
        self._last_leader_contact_ms = None
        delay = self.config.retry_backoff_ms * (2**rank) + self._rng.randrange(
            self.config.retry_backoff_ms + 1
        )
        self._deadline_ms = min(self._deadline_ms, self._now + delay)

    def _on_fetch_snapshot_response(self, response: FetchSnapshotResponse) -> None:
        download = self._download
        if response.error is not ErrorCode.NONE or download is None:
            self._observe(response.epoch, response.leader_id)
            self._download = None
            self._retry_fetch_later()
            return
        if (
            response.epoch != self.epoch
            or response.leader_id != self.leader_id
            or response.snapshot_id != download.snapshot_id
            or response.position != len(download.data)
            or not 0 <= response.size <= self.config.snapshot_max_bytes
            or (download.size not in (-1, response.size))
        ):
            self._download = None
            self._retry_fetch_later()
            return
        self._leader_answered()
        download.size = response.size
        download.data += response.chunk[: response.size - len(download.data)]
        if len(download.data) == download.size:
            self._install(Snapshot(download.snapshot_id, bytes(download.data)))
            self._download = None
        self._next_fetch_ms = self._now
        self._maybe_fetch(self._now)

    def _install(self, snapshot: Snapshot) -> None:
        """Replace our log by the leader's snapshot (it ends at or past our log end)."""
        end = snapshot.snapshot_id.end_offset
        self._log.install(snapshot)
        self._pending_entries.clear()
        # Whatever the store holds from `end` on is not ours any more.
        pending = self._pending_truncate
        self._pending_truncate = end if pending is None else min(pending, end)
        self._pending_snapshot = snapshot
        self._pending_install = snapshot
        self._high_watermark = max(self._high_watermark, end)
