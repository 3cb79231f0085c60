"""What a follower asks its leader for, and what it does with the answer (no I/O).

A follower fetches each partition from its log end offset, with the epoch of its last
batch (`LastFetchedEpoch`) and the leader epoch it knows (`CurrentLeaderEpoch`). The
leader's answer for one partition is one of (`next_step`):

- `Append`: batches to append as they are (possibly none), the leader's high watermark
  and log start offset;
- `Truncate`: the logs diverged (DivergingEpoch, KIP-279) — cut the log at `offset`, then
  fetch again; the next fetch carries the new last epoch, so a divergence deeper than one
  epoch takes more rounds, each cutting further, until the leader answers records;
- `StartAt`: the fetch offset is below the leader's log start (retention or DeleteRecords
  removed what the follower lacks) — empty the log and restart it at `offset`;
- `Retry`: the leader cannot answer for the partition now (it is not the leader, or knows
  a different leader epoch, or its log is offline) — fetch it again after a backoff; the
  next metadata change may move it to another leader.

Where the cut goes, for DivergingEpoch (epoch E, end offset L on the leader): if this log
has epoch E, at min(L, where E ends here); if its largest epoch below E is E' < E, at
min(L, where E' ends here) — the next round checks E'; if this log has no epoch <= E, at
L; if the leader has no epoch <= E (L = -1), at this log's high watermark, which every
in-sync replica holds. Never above the log end; a cut that would remove nothing is a
`Retry` (the answer cannot be acted on, and fetching again at once would loop).

An OFFSET_OUT_OF_RANGE above the leader's log end happens only where epochs cannot tell
(batches written without leader epochs): the follower cuts to the leader's high watermark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

NO_EPOCH = -1


class FollowerLog(Protocol):
    """What the rules read of the local replica."""

    @property
    def log_end_offset(self) -> int: ...

    @property
    def log_start_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int: ...

    @property
    def latest_epoch(self) -> int | None:
        """The leader epoch of the log's last batch (None without one)."""
        ...

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= `epoch`, its end offset), or (-1, -1) if there is none."""
        ...


@dataclass(frozen=True, slots=True)
class FetchTarget:
    """One partition of a replica fetch: its log, and the leader epoch the follower knows."""

    topic: str
    partition: int
    leader_epoch: int
    log: FollowerLog


@dataclass(frozen=True, slots=True)
class Append:
    records: memoryview | None
    high_watermark: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class Truncate:
    offset: int


@dataclass(frozen=True, slots=True)
class StartAt:
    offset: int


@dataclass(frozen=True, slots=True)
class Retry:
    error: ErrorCode


Step = Append | Truncate | StartAt | Retry


def fetch_request(
    replica_id: int,
    targets: Iterable[FetchTarget],
    *,
    max_wait_ms: int,
    min_bytes: int,
    max_bytes: int,
    partition_max_bytes: int,
) -> Message:
    """A Fetch request (v12) for every target, grouped by topic in the given order."""
    topics: dict[str, list[Message]] = {}
    for target in targets:
        log = target.log
        latest = log.latest_epoch
        topics.setdefault(target.topic, []).append(
            {
                "partition": target.partition,
                "current_leader_epoch": target.leader_epoch,
                "fetch_offset": log.log_end_offset,
                "last_fetched_epoch": NO_EPOCH if latest is None else latest,
                "log_start_offset": log.log_start_offset,
                "partition_max_bytes": partition_max_bytes,
            }
        )
    return {
        "cluster_id": None,
        "replica_id": replica_id,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [{"topic": name, "partitions": parts} for name, parts in topics.items()],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def next_step(answer: Message, log: FollowerLog) -> Step:
    """What to do with the leader's answer for one partition (see the module docstring)."""
    error = ErrorCode(answer["error_code"])
    if error is ErrorCode.OFFSET_OUT_OF_RANGE:
        leader_start: int = answer["log_start_offset"]
        if leader_start > log.log_end_offset:
            return StartAt(leader_start)
        leader_high_watermark: int = answer["high_watermark"]
        if 0 <= leader_high_watermark < log.log_end_offset:
            return Truncate(leader_high_watermark)
        return Retry(error)
    if error is not ErrorCode.NONE:
        return Retry(error)
    diverging = answer.get("diverging_epoch")
    if diverging is not None and (diverging["epoch"] >= 0 or diverging["end_offset"] >= 0):
        offset = truncation_offset(diverging["epoch"], diverging["end_offset"], log)
        return Truncate(offset) if offset < log.log_end_offset else Retry(ErrorCode.NONE)
    records = answer["records"]
    return Append(
        records if records is not None and len(records) else None,
        answer["high_watermark"],
        answer["log_start_offset"],
    )


def truncation_offset(leader_epoch: int, leader_end_offset: int, log: FollowerLog) -> int:
    """Where to cut this log for the leader's DivergingEpoch (module docstring)."""
    if leader_epoch < 0 or leader_end_offset < 0:
        return min(log.high_watermark, log.log_end_offset)
    _, local_end = log.end_offset_for_epoch(leader_epoch)
    if local_end < 0:
        return min(leader_end_offset, log.log_end_offset)
    return min(leader_end_offset, local_end, log.log_end_offset)
