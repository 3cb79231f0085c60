"""The leader-epoch cache: for each leader epoch, the first offset written in it.

Replication uses it to answer OffsetForLeaderEpoch and to find where a follower's log
diverges from the leader's. Entries are kept with epochs and start offsets both strictly
increasing. The cache is persisted as the checkpoint table `leader-epoch-checkpoint` (rows
`<epoch> <start offset>`, see `storage.checkpoint`), and is rebuildable from the
`partition_leader_epoch` field of the batches in the log.
"""

from __future__ import annotations

import bisect
import itertools
from typing import NamedTuple

from tidelog.storage.checkpoint import decode_table, encode_table
from tidelog.storage.errors import CorruptCheckpointError

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
"""The cache's checkpoint file name in the partition directory."""
UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """In-memory epoch -> start offset map with Kafka's assignment and truncation rules."""

    def __init__(self, entries: list[EpochEntry] | None = None) -> None:
        self._entries: list[EpochEntry] = []
        for entry in entries or ():
            self.assign(entry.epoch, entry.start_offset)

    @property
    def entries(self) -> list[EpochEntry]:
        return list(self._entries)

    @property
    def latest_epoch(self) -> int | None:
        return self._entries[-1].epoch if self._entries else None

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`; True if the cache changed.

        A repeated assignment of the latest epoch keeps the earlier start offset. Entries that
        conflict with the new one (an epoch at least as high, or a start offset at least as
        high) are dropped: they describe a history that the log no longer has.
        """
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"epoch {epoch} and start offset {start_offset} must be >= 0")
        if self._entries:
            latest = self._entries[-1]
            if latest.epoch == epoch and latest.start_offset <= start_offset:
                return False
        self._entries = [
            entry
            for entry in self._entries
            if entry.epoch < epoch and entry.start_offset < start_offset
        ]
        self._entries.append(EpochEntry(epoch, start_offset))
        return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """Forget epochs that start at or after `end_offset`; True if the cache changed."""
        kept = [entry for entry in self._entries if entry.start_offset < end_offset]
        changed = len(kept) != len(self._entries)
        self._entries = kept
        return changed

    def truncate_from_start(self, start_offset: int) -> bool:
        """Drop history before `start_offset`, keeping the epoch that covers it.

        The epoch in force at `start_offset` stays, with its start moved up to it.
        """
        starts = [entry.start_offset for entry in self._entries]
        covering = bisect.bisect_right(starts, start_offset) - 1
        if covering < 0:
            return False
        kept = [
            EpochEntry(self._entries[covering].epoch, start_offset),
            *self._entries[covering + 1 :],
        ]
        changed = kept != self._entries
        self._entries = kept
        return changed

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest known epoch <= `epoch`, where that epoch ends).

        The latest epoch ends at the log end offset; an older one ends where the next known
        epoch starts. An epoch below the earliest known answers with itself and the earliest
        start offset; an unknown epoch above the latest, or an empty cache, answers
        (UNDEFINED_EPOCH, UNDEFINED_OFFSET).
        """
        if epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if epoch == self._entries[-1].epoch:
            return epoch, log_end_offset
        epochs = [entry.epoch for entry in self._entries]
        higher = bisect.bisect_right(epochs, epoch)
        if higher == len(self._entries):
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        if higher == 0:
            return epoch, self._entries[0].start_offset
        return self._entries[higher - 1].epoch, self._entries[higher].start_offset

    def encode(self) -> bytes:
        return encode_table(self._entries)

    @classmethod
    def decode(cls, data: bytes) -> LeaderEpochCache:
        """Parse a checkpoint file; CorruptCheckpointError if it is damaged."""
        try:
            entries = [EpochEntry(int(epoch), int(start)) for epoch, start in decode_table(data, 2)]
        except ValueError as exc:
            raise CorruptCheckpointError(f"bad leader epoch entry: {exc}") from exc
        for before, after in itertools.pairwise(entries):
            if not (before.epoch < after.epoch and before.start_offset < after.start_offset):
                raise CorruptCheckpointError("leader epoch entries are not increasing")
        if entries and (entries[0].epoch < 0 or entries[0].start_offset < 0):
            raise CorruptCheckpointError("negative leader epoch entry")
        return cls(entries)
