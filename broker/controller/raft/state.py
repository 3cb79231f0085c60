"""The Raft core's types: its roles, settings, the Ready it hands its driver, and the
leader's view of the replicas (PURE)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tidelog.broker.controller.raft.messages import FetchRequest, Outbound
from tidelog.broker.controller.raft.types import Entry, QuorumState, Snapshot, SnapshotId

LEADER_CHANGE = 2
"""Kafka's ControlRecordType of the record a new leader appends first."""
OBSERVER_SESSION_TIMEOUT_MS = 300_000
"""An observer that has not fetched for this long leaves the leader's view (Kafka's)."""


class Role(enum.Enum):
    UNATTACHED = "unattached"
    PROSPECTIVE = "prospective"
    CANDIDATE = "candidate"
    LEADER = "leader"
    FOLLOWER = "follower"
    RESIGNED = "resigned"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Kafka's `controller.quorum.*` settings, in milliseconds and bytes."""

    fetch_timeout_ms: int = 2_000
    election_timeout_ms: int = 1_000
    election_backoff_max_ms: int = 1_000
    request_timeout_ms: int = 2_000
    retry_backoff_ms: int = 20
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 8 * 1024 * 1024
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshot_max_bytes: int = 1024 * 1024 * 1024


@dataclass(slots=True)
class Ready:
    """What the driver must do now; see the module docstring for the order."""

    quorum_state: QuorumState | None = None
    truncate_to: int | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Outbound] = field(default_factory=list)
    install_snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    high_watermark: int = 0

    def persists(self) -> bool:
        return (
            self.quorum_state is not None
            or self.truncate_to is not None
            or self.snapshot is not None
            or bool(self.entries)
        )

    def empty(self) -> bool:
        return not (self.persists() or self.messages or self.committed or self.install_snapshot)


@dataclass(slots=True)
class ReplicaProgress:
    """The leader's view of one follower or observer."""

    replica_id: int
    end_offset: int = -1
    last_fetch_ms: int = -1
    last_caught_up_ms: int = -1


@dataclass(frozen=True, slots=True)
class QuorumInfo:
    """DescribeQuorum's answer, from the leader."""

    leader_id: int
    epoch: int
    high_watermark: int
    voters: tuple[ReplicaProgress, ...]
    observers: tuple[ReplicaProgress, ...]


@dataclass(slots=True)
class Parked:
    """A leader's fetch held until new entries, a new high watermark or its deadline."""

    request: FetchRequest
    deadline_ms: int


@dataclass(slots=True)
class SnapshotDownload:
    """A follower's snapshot being fetched chunk by chunk."""

    snapshot_id: SnapshotId
    size: int
    data: bytearray
