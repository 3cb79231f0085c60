"""The messages Raft nodes exchange, as the core sees them (PURE).

They carry what KIP-595 (KRaft) and KIP-996 (pre-vote) put in Kafka's Vote (52),
BeginQuorumEpoch (53), EndQuorumEpoch (54), Fetch (1) of `__cluster_metadata` and
FetchSnapshot (59); the driver maps them to and from those wire schemas. Every request is
answered by at most one response, which the driver hands back to the core together with the
request it answers (so the core needs no correlation ids and ignores stale answers).

Epochs in responses are the responder's current epoch and `leader_id` the leader it knows in
that epoch (NO_NODE if none), so a node that is behind learns where the quorum is.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidelog.broker.controller.raft.types import Entry, OffsetAndEpoch, SnapshotId
from tidelog.client.protocol.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """A candidate asks for a vote in `epoch`. With `pre_vote` (KIP-996) `epoch` is the
    epoch it would campaign in: nothing changes on the receiver, which only says whether it
    would grant the vote."""

    candidate_id: int
    epoch: int
    last_offset: OffsetAndEpoch
    """The candidate's log end: (epoch of its last entry, its log end offset)."""
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    error: ErrorCode
    epoch: int
    leader_id: int
    vote_granted: bool


@dataclass(frozen=True, slots=True)
class BeginQuorumEpochRequest:
    """The leader of `epoch` announces itself."""

    leader_id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class EndQuorumEpochRequest:
    """The leader of `epoch` resigns; `preferred_successors` are the voters it would like
    to see elected first (most caught up first)."""

    leader_id: int
    epoch: int
    preferred_successors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class QuorumEpochResponse:
    """The answer to BeginQuorumEpoch and EndQuorumEpoch."""

    error: ErrorCode
    epoch: int
    leader_id: int


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """A follower or observer asks the leader of `epoch` for entries from `fetch_offset`;
    `last_fetched_epoch` is the epoch of its entry at fetch_offset - 1, so that the leader
    can tell a divergent log (KIP-595's inline truncation)."""

    replica_id: int
    epoch: int
    fetch_offset: int
    last_fetched_epoch: int
    max_wait_ms: int = 0


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """Either entries from the fetch offset (possibly none), or `diverging` (truncate to the
    end of that epoch, then fetch again), or `snapshot_id` (the offset is below the leader's
    log start: fetch that snapshot)."""

    error: ErrorCode
    epoch: int
    leader_id: int
    high_watermark: int = -1
    entries: tuple[Entry, ...] = ()
    diverging: OffsetAndEpoch | None = None
    snapshot_id: SnapshotId | None = None


@dataclass(frozen=True, slots=True)
class FetchSnapshotRequest:
    replica_id: int
    epoch: int
    snapshot_id: SnapshotId
    position: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class FetchSnapshotResponse:
    """`chunk` is the snapshot's bytes from `position`; `size` its total length."""

    error: ErrorCode
    epoch: int
    leader_id: int
    snapshot_id: SnapshotId | None = None
    size: int = 0
    position: int = 0
    chunk: bytes = b""


RaftRequest = (
    VoteRequest
    | BeginQuorumEpochRequest
    | EndQuorumEpochRequest
    | FetchRequest
    | FetchSnapshotRequest
)
RaftResponse = VoteResponse | QuorumEpochResponse | FetchResponse | FetchSnapshotResponse


@dataclass(frozen=True, slots=True)
class Outbound:
    """A request for node `destination`, or the response to `request` from it."""

    destination: int
    message: RaftRequest | RaftResponse
    request: RaftRequest | None = None
    """For a response: the request it answers."""
