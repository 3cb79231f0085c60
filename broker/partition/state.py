"""The state of one partition replica on this broker: role, leader epoch, ISR, and the
offsets that say what is committed.

`PartitionState` is a plain object: its inputs are metadata changes (`become_leader`,
`become_follower`), local appends and truncations (`on_log_end_offset`), and followers'
fetches (`on_follower_fetch`, with `now_ms`); each returns whether the high watermark moved,
so the caller wakes whoever waits on it. It never reads the log itself.

The high watermark rule lives here and nowhere else. A leader's high watermark is the
lowest log end offset over the ISR (its own included), never moves back, and advances only
while the ISR has at least `min_insync_replicas` members (Kafka 4.1, KIP-966). On a single
node the ISR is this broker alone, so the high watermark is the log end offset. A follower
takes min(leader's high watermark, its own log end offset).

The ISR, Kafka's way (KIP-497): the leader proposes one change at a time (`isr_change`),
which the controller commits (AlterPartition) and the next `become_leader` brings back.
- A follower is *caught up* at a fetch whose offset reaches the leader's log end, or the
  leader's log end at its previous fetch (then it was caught up when that fetch came).
  An ISR member whose last catch-up is older than `replica.lag.time.max.ms`, and that is
  behind the leader's log end, leaves the ISR; the leader never removes itself.
- A replica outside the ISR joins once its log end reaches the high watermark and the
  start of the current leader epoch (what it has is then what the leader has); one at a
  time, and only brokers the caller says are eligible (registered, not fenced).
- After an unclean election (`recovering`) the leader proposes its ISR unchanged, which the
  controller commits as RECOVERED (every change the leader sends says RECOVERED).
- While a change is in flight (`pending_isr`) no other is proposed, and the high watermark
  counts the *maximal* ISR: the committed one plus a replica being added (a replica being
  removed still counts until the removal is committed). A change that fails
  (`isr_change_failed`) or a new leader epoch clears it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


class Role(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(slots=True)
class FollowerProgress:
    """The leader's view of one follower, from its fetches in the current leader epoch."""

    log_end_offset: int = 0
    last_caught_up_ms: int = -1
    last_fetch_ms: int = -1
    leader_end_at_last_fetch: int = -1


@dataclass(slots=True)
class PartitionState:
    """See the module docstring. Offsets are record offsets; -1 epoch means none yet."""

    node_id: int
    role: Role = Role.FOLLOWER
    leader_id: int = -1
    leader_epoch: int = -1
    partition_epoch: int = -1
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    min_insync_replicas: int = 1
    log_end_offset: int = 0
    high_watermark: int = 0
    leader_epoch_start_offset: int = 0
    """Leader only: its log end offset when it took this leader epoch."""
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    """Leader only: each follower's progress in this leader epoch."""
    pending_isr: tuple[int, ...] | None = None
    """Leader only: the ISR proposed to the controller and not yet committed."""
    recovering: bool = False
    """The partition's leader recovery state is RECOVERING (an unclean election, KIP-704):
    its leader proposes its ISR as it is, RECOVERED, as its first change."""

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The ISR the high watermark counts (module docstring)."""
        if self.pending_isr is None:
            return self.isr
        return self.isr + tuple(r for r in self.pending_isr if r not in self.isr)

    def become_leader(
        self,
        *,
        leader_epoch: int,
        partition_epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        log_end_offset: int,
        now_ms: int,
    ) -> bool:
        """Take leadership (or take a new ISR in the same epoch); True if the HW moved.

        On a new epoch followers' positions are forgotten (they are learnt again from their
        fetches in this one) and the ISR members count as caught up `now_ms`, so that each
        has `replica.lag.time.max.ms` to fetch. A newer partition epoch settles the pending
        ISR change."""
        if leader_epoch != self.leader_epoch or self.role is not Role.LEADER:
            self.followers = {r: FollowerProgress(last_caught_up_ms=now_ms) for r in isr}
            self.followers.pop(self.node_id, None)
            self.leader_epoch_start_offset = log_end_offset
            self.pending_isr = None
        elif partition_epoch != self.partition_epoch:
            self.pending_isr = None
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self._take(leader_epoch, partition_epoch, replicas, isr)
        self.log_end_offset = log_end_offset
        return self._advance_leader_high_watermark()

    def become_follower(
        self,
        *,
        leader_id: int,
        leader_epoch: int,
        partition_epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        log_end_offset: int,
    ) -> None:
        """Follow `leader_id` (-1: no leader elected); the HW stays until the leader's
        next one arrives, capped at the log end offset."""
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.followers = {}
        self.pending_isr = None
        self._take(leader_epoch, partition_epoch, replicas, isr)
        self.log_end_offset = log_end_offset
        self.high_watermark = min(self.high_watermark, log_end_offset)

    def on_log_end_offset(self, log_end_offset: int) -> bool:
        """The local log now ends at `log_end_offset` (append, or a follower's truncation);
        True if the HW moved."""
        self.log_end_offset = log_end_offset
        if self.role is Role.LEADER:
            return self._advance_leader_high_watermark()
        if self.high_watermark > log_end_offset:
            self.high_watermark = log_end_offset
            return True
        return False

    def on_follower_fetch(self, follower_id: int, fetch_offset: int, now_ms: int) -> bool:
        """Leader only: a follower fetched from `fetch_offset` (its log end offset) at
        `now_ms`; True if the HW moved."""
        assert self.role is Role.LEADER, "follower positions go to the leader"
        progress = self.followers.setdefault(follower_id, FollowerProgress())
        if fetch_offset >= self.log_end_offset:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, now_ms)
        elif fetch_offset >= progress.leader_end_at_last_fetch >= 0:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now_ms
        progress.leader_end_at_last_fetch = self.log_end_offset
        return self._advance_leader_high_watermark()

    def isr_change(
        self, now_ms: int, replica_lag_time_max_ms: int, eligible: Collection[int]
    ) -> tuple[int, ...] | None:
        """Leader only: the ISR to propose to the controller now (module docstring), which
        becomes `pending_isr`; None when none is due or one is in flight."""
        if self.role is not Role.LEADER or self.pending_isr is not None:
            return None
        lagging = [
            r
            for r in self.isr
            if r != self.node_id and self._lags(r, now_ms, replica_lag_time_max_ms)
        ]
        if lagging:
            proposed = tuple(r for r in self.isr if r not in lagging)
        else:
            joining = [r for r in self.replicas if r in eligible and self.may_join(r)]
            if joining:
                proposed = (*self.isr, joining[0])
            elif self.recovering:
                proposed = self.isr
            else:
                return None
        self.pending_isr = proposed
        return proposed

    def isr_change_failed(self) -> None:
        """The controller refused the pending change or it got lost: propose again later."""
        self.pending_isr = None

    def _lags(self, replica: int, now_ms: int, lag_max_ms: int) -> bool:
        progress = self.followers.get(replica)
        if progress is None:
            return True
        behind = progress.log_end_offset < self.log_end_offset
        return behind and now_ms - progress.last_caught_up_ms > lag_max_ms

    def may_join(self, replica: int) -> bool:
        """Leader only: `replica` is outside the ISR and has caught up to join it."""
        if replica in self.isr:
            return False
        progress = self.followers.get(replica)
        if progress is None or progress.last_fetch_ms < 0:
            return False
        end = progress.log_end_offset
        return end >= self.high_watermark and end >= self.leader_epoch_start_offset

    def on_leader_high_watermark(self, leader_high_watermark: int) -> bool:
        """Follower only: the leader's HW from a fetch response; True if ours moved."""
        assert self.role is Role.FOLLOWER, "only a follower takes the leader's HW"
        target = min(leader_high_watermark, self.log_end_offset)
        if target > self.high_watermark:
            self.high_watermark = target
            return True
        return False

    def committed_ends(self) -> Mapping[int, int]:
        """Each maximal-ISR member's known log end offset (the leader's own included)."""
        ends = {self.node_id: self.log_end_offset}
        for replica in self.maximal_isr:
            if replica != self.node_id:
                progress = self.followers.get(replica)
                ends[replica] = progress.log_end_offset if progress is not None else 0
        return ends

    def _take(
        self,
        leader_epoch: int,
        partition_epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
    ) -> None:
        assert leader_epoch >= self.leader_epoch, (
            f"leader epoch went back from {self.leader_epoch} to {leader_epoch}"
        )
        self.leader_epoch = leader_epoch
        self.partition_epoch = partition_epoch
        self.replicas = replicas
        self.isr = isr

    def _advance_leader_high_watermark(self) -> bool:
        if len(self.maximal_isr) < self.min_insync_replicas:
            return False
        candidate = min(self.committed_ends().values())
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False
