"""The state of one partition replica on this broker: role, leader epoch, ISR, and the
offsets that say what is committed.

`PartitionState` is a plain object: its inputs are metadata changes (`become_leader`,
`become_follower`), local appends and truncations (`on_log_end_offset`), and followers'
fetch positions (`on_follower_position`); each returns whether the high watermark moved,
so the caller wakes whoever waits on it. It never reads the log itself.

The high watermark rule lives here and nowhere else. A leader's high watermark is the
lowest log end offset over the ISR (its own included), never moves back, and advances only
while the ISR has at least `min_insync_replicas` members (Kafka 4.1, KIP-966). On a single
node the ISR is this broker alone, so the high watermark is the log end offset. A follower
takes min(leader's high watermark, its own log end offset).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Role(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


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
    follower_log_end_offsets: dict[int, int] = field(default_factory=dict)
    """Leader only: the last log end offset each follower fetched at."""

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def become_leader(
        self,
        *,
        leader_epoch: int,
        partition_epoch: int,
        replicas: tuple[int, ...],
        isr: tuple[int, ...],
        log_end_offset: int,
    ) -> bool:
        """Take leadership (or take a new ISR in the same epoch); True if the HW moved.

        Followers' positions are forgotten on a new epoch: they are learnt again from their
        fetches in this one."""
        if leader_epoch != self.leader_epoch or self.role is not Role.LEADER:
            self.follower_log_end_offsets = {}
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
        self.follower_log_end_offsets = {}
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

    def on_follower_position(self, follower_id: int, log_end_offset: int) -> bool:
        """Leader only: a follower fetched at `log_end_offset`; True if the HW moved."""
        assert self.role is Role.LEADER, "follower positions go to the leader"
        self.follower_log_end_offsets[follower_id] = log_end_offset
        return self._advance_leader_high_watermark()

    def on_leader_high_watermark(self, leader_high_watermark: int) -> bool:
        """Follower only: the leader's HW from a fetch response; True if ours moved."""
        assert self.role is Role.FOLLOWER, "only a follower takes the leader's HW"
        target = min(leader_high_watermark, self.log_end_offset)
        if target > self.high_watermark:
            self.high_watermark = target
            return True
        return False

    def committed_ends(self) -> Mapping[int, int]:
        """Each ISR member's known log end offset (the leader's own included)."""
        ends = {self.node_id: self.log_end_offset}
        for replica in self.isr:
            if replica != self.node_id:
                ends[replica] = self.follower_log_end_offsets.get(replica, 0)
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
        if len(self.isr) < self.min_insync_replicas:
            return False
        candidate = min(self.committed_ends().values())
        if candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False
