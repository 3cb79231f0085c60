"""The Raft core's messages as Kafka's wire messages (PURE), at the versions KRaft speaks:
Vote v2 (with KIP-996's PreVote), BeginQuorumEpoch v1, EndQuorumEpoch v1, Fetch v12 (the
first with LastFetchedEpoch, DivergingEpoch, CurrentLeader and SnapshotId, still naming the
topic) and FetchSnapshot v1, all of topic `__cluster_metadata` partition 0.

Every request names the cluster id; a request of another cluster, of another topic or
partition, or malformed, is refused with `WireError` carrying the Kafka error code to answer
(INCONSISTENT_CLUSTER_ID, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST); entries travel as
RecordBatch v2 (`records.py`), and batches that do not decode are CORRUPT_MESSAGE.
"""

from __future__ import annotations

from typing import Any

from tidelog.broker.controller.raft.core import QuorumInfo, ReplicaProgress
from tidelog.broker.controller.raft.messages import (
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    QuorumEpochResponse,
    RaftRequest,
    RaftResponse,
    VoteRequest,
    VoteResponse,
)
from tidelog.broker.controller.raft.records import EntryFormatError, decode_entries, encode_entries
from tidelog.broker.controller.raft.types import NO_NODE, OffsetAndEpoch, SnapshotId
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.data import FETCH
from tidelog.client.protocol.messages.quorum import (
    BEGIN_QUORUM_EPOCH,
    END_QUORUM_EPOCH,
    FETCH_SNAPSHOT,
    VOTE,
)
from tidelog.client.protocol.schema import Api, Message

METADATA_TOPIC = "__cluster_metadata"
METADATA_PARTITION = 0
VERSIONS: dict[int, int] = {
    VOTE.key: 2,
    BEGIN_QUORUM_EPOCH.key: 1,
    END_QUORUM_EPOCH.key: 1,
    FETCH.key: 12,
    FETCH_SNAPSHOT.key: 1,
}
BATCH_BYTES_MAX = 1024 * 1024


class WireError(Exception):
    def __init__(self, error: ErrorCode, detail: str) -> None:
        super().__init__(f"{error.name}: {detail}")
        self.error = error


def api_of(request: RaftRequest) -> Api:
    if isinstance(request, VoteRequest):
        return VOTE
    if isinstance(request, BeginQuorumEpochRequest):
        return BEGIN_QUORUM_EPOCH
    if isinstance(request, EndQuorumEpochRequest):
        return END_QUORUM_EPOCH
    if isinstance(request, FetchRequest):
        return FETCH
    return FETCH_SNAPSHOT


def sender_of(request: RaftRequest) -> int:
    """The node a request comes from, by its own account."""
    if isinstance(request, VoteRequest):
        return request.candidate_id
    if isinstance(request, BeginQuorumEpochRequest | EndQuorumEpochRequest):
        return request.leader_id
    return request.replica_id


def _partition(data: list[dict[str, Any]]) -> dict[str, Any]:
    return data[0]


def _topic(partition: dict[str, Any], *, name_key: str = "topic_name") -> list[dict[str, Any]]:
    return [{name_key: METADATA_TOPIC, "partitions": [partition]}]


# ---- requests ------------------------------------------------------------------------


def encode_request(request: RaftRequest, cluster_id: str) -> Message:
    """The wire body of `request`, for version VERSIONS[api_of(request).key]."""
    if isinstance(request, VoteRequest):
        return {
            "cluster_id": cluster_id,
            "voter_id": -1,
            "topics": _topic({
                "partition_index": METADATA_PARTITION,
                "replica_epoch": request.epoch,
                "replica_id": request.candidate_id,
                "last_offset_epoch": request.last_offset.epoch,
                "last_offset": request.last_offset.offset,
                "pre_vote": request.pre_vote,
            }),
        }  # fmt: skip
    if isinstance(request, BeginQuorumEpochRequest):
        return {
            "cluster_id": cluster_id,
            "topics": _topic({
                "partition_index": METADATA_PARTITION,
                "leader_id": request.leader_id,
                "leader_epoch": request.epoch,
            }),
        }  # fmt: skip
    if isinstance(request, EndQuorumEpochRequest):
        return {
            "cluster_id": cluster_id,
            "topics": _topic({
                "partition_index": METADATA_PARTITION,
                "leader_id": request.leader_id,
                "leader_epoch": request.epoch,
                "preferred_candidates": [
                    {"candidate_id": c} for c in request.preferred_successors
                ],
            }),
        }  # fmt: skip
    if isinstance(request, FetchRequest):
        return {
            "cluster_id": cluster_id,
            "replica_id": request.replica_id,
            "max_wait_ms": request.max_wait_ms,
            "min_bytes": 0,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": METADATA_TOPIC, "partitions": [{
                "partition": METADATA_PARTITION,
                "current_leader_epoch": request.epoch,
                "fetch_offset": request.fetch_offset,
                "last_fetched_epoch": request.last_fetched_epoch,
                "partition_max_bytes": 0x7FFFFFFF,
            }]}],
            "forgotten_topics_data": [],
            "rack_id": "",
        }  # fmt: skip
    return {
        "cluster_id": cluster_id,
        "replica_id": request.replica_id,
        "max_bytes": request.max_bytes,
        "topics": _topic({
            "partition": METADATA_PARTITION,
            "current_leader_epoch": request.epoch,
            "snapshot_id": {
                "end_offset": request.snapshot_id.end_offset,
                "epoch": request.snapshot_id.epoch,
            },
            "position": request.position,
        }, name_key="name"),
    }  # fmt: skip


def decode_request(api_key: int, body: Message, cluster_id: str) -> RaftRequest:
    """The core's request; WireError naming the error code to answer otherwise."""
    if body.get("cluster_id") not in (None, cluster_id):
        raise WireError(ErrorCode.INCONSISTENT_CLUSTER_ID, f"cluster {body.get('ClusterId')}")
    topics = body.get("topics") or []
    name_key = {FETCH.key: "topic", FETCH_SNAPSHOT.key: "name"}.get(api_key, "topic_name")
    index_key = "partition" if api_key in (FETCH.key, FETCH_SNAPSHOT.key) else "partition_index"
    if (
        len(topics) != 1
        or topics[0][name_key] != METADATA_TOPIC
        or len(topics[0]["partitions"]) != 1
        or topics[0]["partitions"][0][index_key] != METADATA_PARTITION
    ):
        raise WireError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "not __cluster_metadata-0")
    p = _partition(topics[0]["partitions"])
    if api_key == VOTE.key:
        return VoteRequest(
            p["replica_id"],
            p["replica_epoch"],
            OffsetAndEpoch(p["last_offset_epoch"], p["last_offset"]),
            bool(p.get("pre_vote", False)),
        )
    if api_key == BEGIN_QUORUM_EPOCH.key:
        return BeginQuorumEpochRequest(p["leader_id"], p["leader_epoch"])
    if api_key == END_QUORUM_EPOCH.key:
        successors = p.get("preferred_candidates")
        ids = (
            tuple(c["candidate_id"] for c in successors)
            if successors is not None
            else tuple(p.get("preferred_successors") or ())
        )
        return EndQuorumEpochRequest(p["leader_id"], p["leader_epoch"], ids)
    if api_key == FETCH.key:
        if p["fetch_offset"] < 0 or p["last_fetched_epoch"] < 0:
            raise WireError(ErrorCode.INVALID_REQUEST, "negative fetch offset or epoch")
        return FetchRequest(
            body["replica_id"],
            p["current_leader_epoch"],
            p["fetch_offset"],
            p["last_fetched_epoch"],
            max(0, body["max_wait_ms"]),
        )
    if api_key == FETCH_SNAPSHOT.key:
        sid = p["snapshot_id"]
        return FetchSnapshotRequest(
            body["replica_id"],
            p["current_leader_epoch"],
            SnapshotId(sid["end_offset"], sid["epoch"]),
            p["position"],
            max(1, body["max_bytes"]),
        )
    raise WireError(ErrorCode.INVALID_REQUEST, f"API {api_key} is not a Raft API")


# ---- responses -----------------------------------------------------------------------


def encode_response(response: RaftResponse, *, now_ms: int) -> Message:
    if isinstance(response, VoteResponse):
        return {
            "error_code": ErrorCode.NONE,
            "topics": _topic({
                "partition_index": METADATA_PARTITION,
                "error_code": response.error,
                "leader_id": response.leader_id,
                "leader_epoch": response.epoch,
                "vote_granted": response.vote_granted,
            }),
        }  # fmt: skip
    if isinstance(response, QuorumEpochResponse):
        return {
            "error_code": ErrorCode.NONE,
            "topics": _topic({
                "partition_index": METADATA_PARTITION,
                "error_code": response.error,
                "leader_id": response.leader_id,
                "leader_epoch": response.epoch,
            }),
        }  # fmt: skip
    if isinstance(response, FetchResponse):
        records = b"".join(
            encode_entries(response.entries, timestamp_ms=now_ms, batch_bytes_max=BATCH_BYTES_MAX)
        )
        partition: dict[str, Any] = {
            "partition_index": METADATA_PARTITION,
            "error_code": response.error,
            "high_watermark": response.high_watermark,
            "last_stable_offset": response.high_watermark,
            "log_start_offset": -1,
            "current_leader": {"leader_id": response.leader_id, "leader_epoch": response.epoch},
            "aborted_transactions": None,
            "preferred_read_replica": -1,
            "records": records,
        }
        if response.diverging is not None:
            partition["diverging_epoch"] = {
                "epoch": response.diverging.epoch,
                "end_offset": response.diverging.offset,
            }
        if response.snapshot_id is not None:
            partition["snapshot_id"] = {
                "end_offset": response.snapshot_id.end_offset,
                "epoch": response.snapshot_id.epoch,
            }
        return {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.NONE,
            "session_id": 0,
            "responses": [{"topic": METADATA_TOPIC, "partitions": [partition]}],
        }
    sid = response.snapshot_id or SnapshotId(-1, -1)
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NONE,
        "topics": _topic({
            "index": METADATA_PARTITION,
            "error_code": response.error,
            "snapshot_id": {"end_offset": sid.end_offset, "epoch": sid.epoch},
            "current_leader": {"leader_id": response.leader_id, "leader_epoch": response.epoch},
            "size": response.size,
            "position": response.position,
            "unaligned_records": response.chunk,
        }, name_key="name"),
    }  # fmt: skip


def decode_response(api_key: int, body: Message) -> RaftResponse:
    """The core's response; WireError when the body is not an answer about
    __cluster_metadata-0 or its records do not decode."""
    top = ErrorCode(body.get("error_code", 0)) if body.get("error_code", 0) in _CODES else None
    if top is None:
        raise WireError(ErrorCode.UNKNOWN_SERVER_ERROR, f"unknown error {body.get('ErrorCode')}")
    topics = body.get("responses" if api_key == FETCH.key else "topics") or []
    if top is not ErrorCode.NONE and not topics:
        return error_response(api_key, top)
    if len(topics) != 1 or len(topics[0]["partitions"]) != 1:
        raise WireError(ErrorCode.INVALID_REQUEST, "not one partition in the response")
    p = _partition(topics[0]["partitions"])
    error = _code(p["error_code"])
    if api_key == VOTE.key:
        return VoteResponse(error, p["leader_epoch"], p["leader_id"], bool(p["vote_granted"]))
    if api_key in (BEGIN_QUORUM_EPOCH.key, END_QUORUM_EPOCH.key):
        return QuorumEpochResponse(error, p["leader_epoch"], p["leader_id"])
    leader = p.get("current_leader") or {"leader_id": NO_NODE, "leader_epoch": -1}
    if api_key == FETCH.key:
        diverging = p.get("diverging_epoch")
        snapshot = p.get("snapshot_id")
        try:
            entries = tuple(decode_entries(p["records"] or b""))
        except EntryFormatError as exc:
            raise WireError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
        return FetchResponse(
            error,
            leader["leader_epoch"],
            leader["leader_id"],
            p["high_watermark"],
            entries,
            diverging=(
                OffsetAndEpoch(diverging["epoch"], diverging["end_offset"])
                if diverging and diverging["end_offset"] >= 0
                else None
            ),
            snapshot_id=(
                SnapshotId(snapshot["end_offset"], snapshot["epoch"])
                if snapshot and snapshot["end_offset"] >= 0
                else None
            ),
        )
    sid = p["snapshot_id"]
    return FetchSnapshotResponse(
        error,
        leader["leader_epoch"],
        leader["leader_id"],
        SnapshotId(sid["end_offset"], sid["epoch"]) if sid["end_offset"] >= 0 else None,
        p["size"],
        p["position"],
        bytes(p["unaligned_records"] or b""),
    )


_CODES = {int(c) for c in ErrorCode}


def _code(value: int) -> ErrorCode:
    if value not in _CODES:
        raise WireError(ErrorCode.UNKNOWN_SERVER_ERROR, f"unknown error {value}")
    return ErrorCode(value)


def error_response(api_key: int, error: ErrorCode) -> RaftResponse:
    """The core-shaped answer carrying only `error` (a request refused before the core saw
    it, or a response with a top-level error)."""
    if api_key == VOTE.key:
        return VoteResponse(error, -1, NO_NODE, False)
    if api_key in (BEGIN_QUORUM_EPOCH.key, END_QUORUM_EPOCH.key):
        return QuorumEpochResponse(error, -1, NO_NODE)
    if api_key == FETCH.key:
        return FetchResponse(error, -1, NO_NODE)
    return FetchSnapshotResponse(error, -1, NO_NODE)


def describe_quorum_response(
    info: QuorumInfo | None, *, leader_id: int, epoch: int, wall_offset_ms: int = 0
) -> Message:
    """DescribeQuorum's answer (any version; fields of later versions are ignored below
    them): the leader's view of every voter and observer, or NOT_LEADER_OR_FOLLOWER naming
    the leader this node knows. The core's times are on its own clock; `wall_offset_ms`
    (wall clock minus that clock) turns them into Kafka's ms since the epoch (-1 stays
    unknown)."""

    def wall(ms: int) -> int:
        return ms + wall_offset_ms if ms >= 0 else -1

    def replica(p: ReplicaProgress) -> dict[str, Any]:
        return {
            "replica_id": p.replica_id,
            "log_end_offset": p.end_offset,
            "last_fetch_timestamp": wall(p.last_fetch_ms),
            "last_caught_up_timestamp": wall(p.last_caught_up_ms),
        }

    if info is None:
        partition: dict[str, Any] = {
            "partition_index": METADATA_PARTITION,
            "error_code": ErrorCode.NOT_LEADER_OR_FOLLOWER,
            "error_message": "this node is not the quorum leader",
            "leader_id": leader_id,
            "leader_epoch": epoch,
            "high_watermark": -1,
            "current_voters": [],
            "observers": [],
        }
    else:
        partition = {
            "partition_index": METADATA_PARTITION,
            "error_code": ErrorCode.NONE,
            "error_message": None,
            "leader_id": info.leader_id,
            "leader_epoch": info.epoch,
            "high_watermark": info.high_watermark,
            "current_voters": [replica(p) for p in info.voters],
            "observers": [replica(p) for p in info.observers],
        }
    return {
        "error_code": ErrorCode.NONE,
        "error_message": None,
        "topics": _topic(partition),
        "nodes": [],
    }
