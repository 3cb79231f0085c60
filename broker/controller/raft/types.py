"""Values the Raft core shares with its store and driver: log entries, snapshot ids and the
state a node persists.

A node's durable state is three things, each written through the store before the core
acts on it (persist first, then send):

    QuorumState   the current epoch, the vote cast in it, the leader known in it
    the log       entries from the log start offset on; entry i has offset i and the epoch
                  of the leader that appended it
    a snapshot    the state machine at `SnapshotId(end_offset, epoch)`: everything below
                  end_offset applied, the entry at end_offset - 1 of that epoch

An entry is one record of the metadata log (KRaft counts offsets per record, not per batch).
Control entries (`control_type` set, Kafka's ControlRecordType: 2 = LeaderChange, the record
a new leader appends) are Raft's own; the state machine skips them but they take an offset
like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_NODE = -1
"""Kafka's "none" for a node id (no vote cast, no leader known)."""


@dataclass(frozen=True, slots=True, order=True)
class OffsetAndEpoch:
    """A log position as Raft compares them: by epoch first, then offset (KIP-595's
    "at least as up to date")."""

    epoch: int
    offset: int


@dataclass(frozen=True, slots=True)
class SnapshotId:
    """A snapshot holds every entry below `end_offset`; `epoch` is the epoch of the entry at
    end_offset - 1 (0 for the empty snapshot at offset 0)."""

    end_offset: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    epoch: int
    value: bytes
    control_type: int | None = None
    """None for a data record; Kafka's ControlRecordType for a control record."""


@dataclass(frozen=True, slots=True)
class QuorumState:
    """What a node must never forget across a crash: the highest epoch it has seen, whom it
    voted for in that epoch (NO_NODE if nobody) and the epoch's leader if known."""

    epoch: int = 0
    voted_for: int = NO_NODE
    leader_id: int = NO_NODE


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: SnapshotId
    data: bytes


@dataclass(slots=True)
class PersistedState:
    """What the store loaded at start: the quorum state, the latest snapshot (None when
    none was ever taken) and the log entries after it, consecutive and starting at the
    snapshot's end offset (or 0)."""

    quorum: QuorumState = field(default_factory=QuorumState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
