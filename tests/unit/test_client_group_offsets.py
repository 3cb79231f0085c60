"""OffsetCommit/OffsetFetch bodies and results through the real codec at every version
the client sends, and the consumer's group settings."""

from __future__ import annotations

from typing import Any

import pytest

from tidelog.client.config import ConsumerConfig
from tidelog.client.errors import ConfigError
from tidelog.client.group_offsets import (
    OFFSET_COMMIT_MAX_VERSION,
    OFFSET_FETCH_MAX_VERSION,
    offset_commit_errors,
    offset_commit_request,
    offset_fetch_request,
    offset_fetch_results,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.groups import OFFSET_COMMIT, OFFSET_FETCH
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import Api, Message
from tidelog.client.structs import OffsetAndMetadata
from tidelog.client.structs import TopicPartition as TP


def request_roundtrip(api: Api, body: Message, version: int) -> Message:
    writer = Writer()
    api.encode_request(writer, body, version)
    return api.decode_request(Reader(writer.getvalue()), version)


def response_roundtrip(api: Api, body: Message, version: int) -> Message:
    writer = Writer()
    api.encode_response(writer, body, version)
    return api.decode_response(Reader(writer.getvalue()), version)


@pytest.mark.parametrize(
    "version", range(OFFSET_COMMIT.valid.lowest, OFFSET_COMMIT_MAX_VERSION + 1)
)
def test_offset_commit_carries_the_members_identity_and_offsets(version: int) -> None:
    offsets = {
        TP("b", 1): OffsetAndMetadata(7, "note", leader_epoch=3),
        TP("a", 0): OffsetAndMetadata(5),
        TP("b", 0): OffsetAndMetadata(0),
    }
    body = offset_commit_request("g", 4, "m-1", "host-1", offsets)
    sent = request_roundtrip(OFFSET_COMMIT, body, version)
    assert (sent["group_id"], sent["generation_id_or_member_epoch"], sent["member_id"]) == (
        "g", 4, "m-1",
    )  # fmt: skip
    assert sent["group_instance_id"] == ("host-1" if version >= 7 else None)
    committed = {
        TP(t["name"], p["partition_index"]): (
            p["committed_offset"], p["committed_metadata"], p["committed_leader_epoch"]
        )
        for t in sent["topics"]
        for p in t["partitions"]
    }  # fmt: skip
    epoch = 3 if version >= 6 else -1
    assert committed == {
        TP("a", 0): (5, "", -1),
        TP("b", 0): (0, "", -1),
        TP("b", 1): (7, "note", epoch),
    }

    response = response_roundtrip(
        OFFSET_COMMIT,
        {"topics": [
            {"name": "b", "partitions": [
                {"partition_index": 0, "error_code": 0},
                {"partition_index": 1, "error_code": ErrorCode.OFFSET_METADATA_TOO_LARGE},
            ]},
        ]},
        version,
    )  # fmt: skip
    assert offset_commit_errors(response, offsets) == {
        TP("a", 0): ErrorCode.UNKNOWN_SERVER_ERROR,  # left out of the response
        TP("b", 0): ErrorCode.NONE,
        TP("b", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE,
    }


def fetch_response(version: int, partitions: list[Any], error: int = 0) -> Message:
    topics = [{"name": "t", "partitions": partitions}]
    if version >= 8:
        return {"groups": [{"group_id": "g", "topics": topics, "error_code": error}]}
    return {"topics": topics, "error_code": error}


@pytest.mark.parametrize("version", range(OFFSET_FETCH.valid.lowest, OFFSET_FETCH_MAX_VERSION + 1))
def test_offset_fetch_in_both_layouts(version: int) -> None:
    sent = request_roundtrip(
        OFFSET_FETCH, offset_fetch_request("g", [TP("t", 2), TP("t", 0)], require_stable=True),
        version,
    )  # fmt: skip
    group: dict[str, Any] = sent["groups"][0] if version >= 8 else sent
    assert group["group_id"] == "g"
    assert [(t["name"], t["partition_indexes"]) for t in group["topics"]] == [("t", [0, 2])]
    assert sent["require_stable"] is (version >= 7)

    partitions = [
        {"partition_index": 0, "committed_offset": 12, "committed_leader_epoch": 2,
         "metadata": "m", "error_code": 0},
        {"partition_index": 1, "committed_offset": -1, "metadata": None, "error_code": 0},
        {"partition_index": 2, "committed_offset": -1, "metadata": None,
         "error_code": ErrorCode.UNSTABLE_OFFSET_COMMIT},
    ]  # fmt: skip
    response = response_roundtrip(OFFSET_FETCH, fetch_response(version, partitions), version)
    top_error, results = offset_fetch_results(response, "g")
    assert top_error is ErrorCode.NONE
    assert results == {
        TP("t", 0): OffsetAndMetadata(12, "m", 2 if version >= 5 else -1),
        TP("t", 1): None,
        TP("t", 2): ErrorCode.UNSTABLE_OFFSET_COMMIT,
    }
    if version >= 2:  # the group-level error code
        failed = fetch_response(version, [], ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        response = response_roundtrip(OFFSET_FETCH, failed, version)
        assert offset_fetch_results(response, "g")[0] is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


def test_group_settings_follow_kafka() -> None:
    config = ConsumerConfig(group_id="g")
    assert (config.session_timeout_ms, config.heartbeat_interval_ms) == (45_000, 3_000)
    assert config.max_poll_interval_ms == config.effective_rebalance_timeout_ms == 300_000
    assert config.enable_auto_commit and config.auto_commit_interval_ms == 5_000
    assert config.assignment_strategies == ("range", "roundrobin")
    parsed = ConsumerConfig(partition_assignment_strategy="cooperative-sticky, range")
    assert parsed.assignment_strategies == ("cooperative-sticky", "range")
    assert ConsumerConfig(rebalance_timeout_ms=10_000).effective_rebalance_timeout_ms == 10_000


@pytest.mark.parametrize(
    "settings",
    [
        {"group_instance_id": "host-1"},  # without a group
        {"group_id": "g", "group_instance_id": ""},
        {"group_id": "g", "heartbeat_interval_ms": 10_000, "session_timeout_ms": 10_000},
        {"partition_assignment_strategy": "sticky"},
        {"partition_assignment_strategy": ""},
        {"auto_commit_interval_ms": 0},
    ],
)
def test_group_settings_that_cannot_work_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ConsumerConfig(**settings)
