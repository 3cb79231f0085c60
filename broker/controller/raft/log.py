"""The Raft core's view of its log (PURE): the latest snapshot and the entries after it.

Offsets count entries. The log holds entries [start_offset, end_offset); everything below
start_offset is in the snapshot, whose id names the epoch of the entry just below it. The
epoch index is Kafka's leader-epoch cache: (epoch, first offset of that epoch), ascending,
which answers "where does epoch E end here?" for divergence checks (KIP-101/KIP-595).
The log is in memory: the metadata log is small, and snapshots bound it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from tidelog.broker.controller.raft.types import Entry, OffsetAndEpoch, Snapshot, SnapshotId


class RaftLog:
    def __init__(self, snapshot: Snapshot | None = None, entries: Sequence[Entry] = ()) -> None:
        self._snapshot = snapshot
        self._start = snapshot.snapshot_id.end_offset if snapshot else 0
        self._entries: list[Entry] = []
        self._epoch_starts: list[tuple[int, int]] = []
        self.append(entries)

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def start_offset(self) -> int:
        return self._start

    @property
    def end_offset(self) -> int:
        return self._start + len(self._entries)

    @property
    def last(self) -> OffsetAndEpoch:
        """(epoch of the last entry, log end offset): how up to date this log is."""
        return OffsetAndEpoch(self.epoch_before(self.end_offset), self.end_offset)

    def epoch_before(self, offset: int) -> int:
        """The epoch of the entry at offset - 1 (0 for offset 0); offset must lie in
        [start_offset, end_offset]."""
        assert self._start <= offset <= self.end_offset, (offset, self._start, self.end_offset)
        if offset == self._start:
            return self._snapshot.snapshot_id.epoch if self._snapshot else 0
        return self._entries[offset - 1 - self._start].epoch

    def entry(self, offset: int) -> Entry:
        return self._entries[offset - self._start]

    def read(self, offset: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from `offset` up to `max_bytes` of values (at least one if any)."""
        out: list[Entry] = []
        size = 0
        for entry in self._entries[offset - self._start :]:
            if out and size + len(entry.value) > max_bytes:
                break
            out.append(entry)
            size += len(entry.value)
        return tuple(out)

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """The largest epoch <= `epoch` that this log knows and the offset where it ends
        (the start of the next epoch, or the log end); the snapshot's position when every
        entry here is of a later epoch."""
        i = bisect.bisect_right(self._epoch_starts, (epoch, self.end_offset + 1)) - 1
        if i < 0:
            return OffsetAndEpoch(self.epoch_before(self._start), self._start)
        found, _ = self._epoch_starts[i]
        end = self._epoch_starts[i + 1][1] if i + 1 < len(self._epoch_starts) else self.end_offset
        return OffsetAndEpoch(found, end)

    def append(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            assert entry.offset == self.end_offset, (entry.offset, self.end_offset)
            assert entry.epoch >= self.epoch_before(self.end_offset), "epochs go backwards"
            if not self._epoch_starts or self._epoch_starts[-1][0] != entry.epoch:
                self._epoch_starts.append((entry.epoch, entry.offset))
            self._entries.append(entry)

    def truncate_to(self, offset: int) -> None:
        """Drop every entry at `offset` and above."""
        assert self._start <= offset <= self.end_offset, (offset, self._start, self.end_offset)
        del self._entries[offset - self._start :]
        while self._epoch_starts and self._epoch_starts[-1][1] >= offset:
            self._epoch_starts.pop()

    def install(self, snapshot: Snapshot) -> None:
        """Take `snapshot` as the new base: entries it covers go; if it ends past this log's
        end, or its epoch disagrees with the entry it ends after, the whole log goes."""
        sid = snapshot.snapshot_id
        keep = self._start <= sid.end_offset <= self.end_offset and (
            self.epoch_before(sid.end_offset) == sid.epoch
        )
        remaining = self._entries[sid.end_offset - self._start :] if keep else []
        self._snapshot = snapshot
        self._start = sid.end_offset
        self._entries = []
        self._epoch_starts = []
        self.append(remaining)

    def snapshot_id_at(self, end_offset: int) -> SnapshotId:
        return SnapshotId(end_offset, self.epoch_before(end_offset))
