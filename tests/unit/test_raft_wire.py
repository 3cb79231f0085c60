"""The Raft core's messages survive Kafka's wire schemas at the versions KRaft speaks, and
requests from another cluster, of another topic or malformed are refused with an error code."""

from __future__ import annotations

import pytest

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
from tidelog.broker.controller.raft.types import Entry, OffsetAndEpoch, SnapshotId
from tidelog.broker.controller.raft.wire import (
    VERSIONS,
    WireError,
    api_of,
    decode_request,
    decode_response,
    describe_quorum_response,
    encode_request,
    encode_response,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.quorum import DESCRIBE_QUORUM
from tidelog.client.protocol.primitives import Reader, Writer

CLUSTER = "tidelog-cluster-1"

REQUESTS: list[RaftRequest] = [
    VoteRequest(2, 7, OffsetAndEpoch(6, 120), pre_vote=True),
    VoteRequest(3, 8, OffsetAndEpoch(7, 121)),
    BeginQuorumEpochRequest(1, 9),
    EndQuorumEpochRequest(1, 9, (3, 2)),
    FetchRequest(4, 9, 1_000, 8, 500),
    FetchSnapshotRequest(5, 9, SnapshotId(900, 8), 4096, 65_536),
]

ENTRIES = (
    Entry(10, 3, b"", control_type=2),
    Entry(11, 3, b"topic-record"),
    Entry(12, 3, b"partition-record"),
    Entry(13, 4, b"", control_type=2),
)
RESPONSES: list[tuple[RaftRequest, RaftResponse]] = [
    (REQUESTS[0], VoteResponse(ErrorCode.NONE, 7, -1, True)),
    (REQUESTS[1], VoteResponse(ErrorCode.FENCED_LEADER_EPOCH, 9, 1, False)),
    (REQUESTS[2], QuorumEpochResponse(ErrorCode.NONE, 9, 1)),
    (REQUESTS[3], QuorumEpochResponse(ErrorCode.INCONSISTENT_VOTER_SET, 9, 1)),
    (REQUESTS[4], FetchResponse(ErrorCode.NONE, 9, 1, 12, ENTRIES)),
    (REQUESTS[4], FetchResponse(ErrorCode.NONE, 9, 1, 12, diverging=OffsetAndEpoch(7, 990))),
    (REQUESTS[4], FetchResponse(ErrorCode.NONE, 9, 1, 12, snapshot_id=SnapshotId(900, 8))),
    (REQUESTS[4], FetchResponse(ErrorCode.NOT_LEADER_OR_FOLLOWER, 9, 2)),
    (
        REQUESTS[5],
        FetchSnapshotResponse(ErrorCode.NONE, 9, 1, SnapshotId(900, 8), 9000, 4096, b"chunk"),
    ),
    (REQUESTS[5], FetchSnapshotResponse(ErrorCode.SNAPSHOT_NOT_FOUND, 9, 1)),
]


def through_the_wire_request(request: RaftRequest, cluster_id: str = CLUSTER) -> RaftRequest:
    api = api_of(request)
    w = Writer()
    api.encode_request(w, encode_request(request, cluster_id), VERSIONS[api.key])
    body = api.decode_request(Reader(w.getvalue()), VERSIONS[api.key])
    return decode_request(api.key, body, CLUSTER)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip(request_: RaftRequest) -> None:
    assert through_the_wire_request(request_) == request_


@pytest.mark.parametrize(("request_", "response"), RESPONSES, ids=lambda r: type(r).__name__)
def test_responses_round_trip(request_: RaftRequest, response: RaftResponse) -> None:
    api = api_of(request_)
    w = Writer()
    api.encode_response(w, encode_response(response, now_ms=1_700_000_000_000), VERSIONS[api.key])
    body = api.decode_response(Reader(w.getvalue()), VERSIONS[api.key])
    assert decode_response(api.key, body) == response


def test_a_request_of_another_cluster_is_refused() -> None:
    with pytest.raises(WireError) as info:
        through_the_wire_request(REQUESTS[4], cluster_id="someone-else")
    assert info.value.error is ErrorCode.INCONSISTENT_CLUSTER_ID


def test_a_request_for_another_topic_is_refused() -> None:
    body = encode_request(REQUESTS[0], CLUSTER)
    body["topics"][0]["topic_name"] = "events"
    with pytest.raises(WireError) as info:
        decode_request(api_of(REQUESTS[0]).key, body, CLUSTER)
    assert info.value.error is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_a_fetch_with_a_negative_offset_is_invalid() -> None:
    body = encode_request(FetchRequest(4, 9, 0, 0), CLUSTER)
    body["topics"][0]["partitions"][0]["fetch_offset"] = -5
    with pytest.raises(WireError) as info:
        decode_request(api_of(REQUESTS[4]).key, body, CLUSTER)
    assert info.value.error is ErrorCode.INVALID_REQUEST


def test_corrupt_records_in_a_fetch_response_are_refused() -> None:
    body = encode_response(FetchResponse(ErrorCode.NONE, 9, 1, 12, ENTRIES), now_ms=0)
    records = bytearray(body["responses"][0]["partitions"][0]["records"])
    records[-1] ^= 0xFF  # breaks the first batch's CRC
    body["responses"][0]["partitions"][0]["records"] = bytes(records)
    with pytest.raises(WireError) as info:
        decode_response(api_of(REQUESTS[4]).key, body)
    assert info.value.error is ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize("version", [0, 1, 2])
def test_describe_quorum_reports_the_leaders_view_at_every_version(version: int) -> None:
    voters = (ReplicaProgress(1, 120, 5_000, 5_000), ReplicaProgress(2, 118, 4_990, 4_000))
    observers = (ReplicaProgress(7, 100, 4_800, -1),)
    info = QuorumInfo(1, 9, 119, voters, observers)
    w = Writer()
    DESCRIBE_QUORUM.encode_response(
        w, describe_quorum_response(info, leader_id=1, epoch=9), version
    )
    body = DESCRIBE_QUORUM.decode_response(Reader(w.getvalue()), version)
    p = body["topics"][0]["partitions"][0]
    assert (p["error_code"], p["leader_id"], p["leader_epoch"], p["high_watermark"]) == (
        0,
        1,
        9,
        119,
    )
    assert [(v["replica_id"], v["log_end_offset"]) for v in p["current_voters"]] == [
        (1, 120),
        (2, 118),
    ]
    assert [o["replica_id"] for o in p["observers"]] == [7]
    if version >= 1:
        assert p["current_voters"][1]["last_caught_up_timestamp"] == 4_000


def test_describe_quorum_on_a_follower_names_the_leader() -> None:
    body = describe_quorum_response(None, leader_id=3, epoch=4)
    p = body["topics"][0]["partitions"][0]
    assert p["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER and p["leader_id"] == 3
