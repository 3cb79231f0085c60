"""Consumer-group administration without a broker: reading DescribeGroups, FindCoordinator
and DeleteGroups responses, and `tidelog group reset-offsets`' option parsing and plans."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import pytest

from tidelog.client.admin_groups import deleted_groups, described_groups, found_coordinators
from tidelog.client.cli_common import CliError
from tidelog.client.cli_groups import (
    ResetSpec,
    TopicScope,
    parse_state,
    parse_timestamp_ms,
    parse_topic_scope,
    plan_offsets,
    text_table,
)
from tidelog.client.errors import (
    GroupIdNotFoundError,
    KafkaProtocolError,
    NonEmptyGroupError,
    NotCoordinatorError,
)
from tidelog.client.metadata import BrokerInfo
from tidelog.client.protocol.consumer_protocol import (
    ConsumerProtocolAssignment,
    TopicPartitions,
    encode_assignment,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition

COORDINATOR = BrokerInfo(3, "broker3", 9092)
P0, P1, P2 = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)


def group_entry(group_id: str, state: str, members: list[Message], code: int = 0) -> Message:
    return {
        "error_code": code,
        "group_id": group_id,
        "group_state": state,
        "protocol_type": "consumer",
        "protocol_data": "range" if state == "Stable" else "",
        "members": members,
    }


def member_entry(member_id: str, assignment: bytes) -> Message:
    return {
        "member_id": member_id,
        "group_instance_id": None,
        "client_id": "app",
        "client_host": "/10.0.0.1",
        "member_metadata": b"",
        "member_assignment": assignment,
    }


# --- response readings -------------------------------------------------------------------


def test_described_groups_decode_assignments_and_name_missing_groups() -> None:
    assignment = encode_assignment(
        ConsumerProtocolAssignment((TopicPartitions("t", (2, 0)), TopicPartitions("u", (1,))))
    )
    response = {
        "groups": [
            group_entry("live", "Stable", [member_entry("m1", assignment)]),
            group_entry("broken", "Stable", [member_entry("m2", b"\x00\x00\xff")]),
            group_entry("old-gone", "Dead", []),  # DescribeGroups < v6 for an unknown group
            group_entry("new-gone", "", [], code=ErrorCode.GROUP_ID_NOT_FOUND),
            group_entry("moved", "", [], code=ErrorCode.NOT_COORDINATOR),
        ]
    }
    asked = ["live", "broken", "old-gone", "new-gone", "moved", "unanswered"]
    out = described_groups(response, asked, COORDINATOR)

    live = out["live"]
    assert not isinstance(live, Exception)
    assert (live.state, live.protocol, live.coordinator) == ("Stable", "range", COORDINATOR)
    [member] = live.members
    assert member.assignment == (P0, P2, TopicPartition("u", 1))
    assert live.owner_of(P2) is member and live.owner_of(P1) is None
    assert live.is_active

    broken = out["broken"]
    assert not isinstance(broken, Exception)
    assert broken.members[0].assignment == ()  # the leader's bytes do not parse
    assert broken.members[0].raw_assignment == b"\x00\x00\xff"

    assert isinstance(out["old-gone"], GroupIdNotFoundError)
    assert isinstance(out["new-gone"], GroupIdNotFoundError)
    assert isinstance(out["moved"], NotCoordinatorError) and out["moved"].retriable
    assert isinstance(out["unanswered"], KafkaProtocolError)


def test_found_coordinators_batched_and_single() -> None:
    batched = {
        "coordinators": [
            {"key": "a", "node_id": 3, "host": "broker3", "port": 9092, "error_code": 0},
            {"key": "b", "node_id": -1, "host": "", "port": -1, "error_code": 15,
             "error_message": "loading"},
        ]
    }  # fmt: skip
    out = found_coordinators(batched, 4, ["a", "b"])
    assert out["a"] == COORDINATOR
    assert isinstance(out["b"], Exception) and out["b"].retriable
    assert "loading" in str(out["b"])
    single = {"error_code": 0, "node_id": 3, "host": "broker3", "port": 9092}
    assert found_coordinators(single, 3, ["a"]) == {"a": COORDINATOR}


def test_deleted_groups_outcomes() -> None:
    response = {
        "results": [
            {"group_id": "done", "error_code": 0},
            {"group_id": "busy", "error_code": ErrorCode.NON_EMPTY_GROUP},
        ]
    }
    out = deleted_groups(response, ["done", "busy", "unanswered"])
    assert out["done"] is None
    assert isinstance(out["busy"], NonEmptyGroupError)
    assert isinstance(out["unanswered"], KafkaProtocolError)


# --- reset-offsets -----------------------------------------------------------------------


@pytest.fixture
def berlin_time() -> Iterator[None]:
    """The local zone set to Europe/Berlin (UTC+2 in summer) for the test."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


def test_timestamps_in_iso_8601_or_ms(berlin_time: None) -> None:
    noon_utc_ms = 1_714_564_800_000  # 2024-05-01T12:00:00Z
    assert parse_timestamp_ms("2024-05-01T12:00:00Z") == noon_utc_ms
    assert parse_timestamp_ms("2024-05-01T12:00:00.250+00:00") == noon_utc_ms + 250
    assert parse_timestamp_ms("2024-05-01T14:00:00+02:00") == noon_utc_ms
    assert parse_timestamp_ms("2024-05-01T14:00:00") == noon_utc_ms  # local: Berlin, UTC+2
    assert parse_timestamp_ms(str(noon_utc_ms)) == noon_utc_ms
    for bad in ("yesterday", "2024-13-01", "1969-12-31T00:00:00Z", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_timestamp_ms(bad)


def test_topic_scopes_and_states() -> None:
    assert parse_topic_scope("events") == TopicScope("events", None)
    assert parse_topic_scope("events:2,0,2") == TopicScope("events", (2, 0))
    for bad in (":1", "events:", "events:a", "events:-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_topic_scope(bad)
    assert parse_state("preparingrebalance") == "PreparingRebalance"
    with pytest.raises(argparse.ArgumentTypeError):
        parse_state("Running")


def test_plans_stay_inside_each_partitions_log() -> None:
    partitions = [P0, P1, P2]
    starts = {P0: 0, P1: 10, P2: 5}
    ends = {P0: 100, P1: 20, P2: 5}  # P2 is empty: start == end
    committed = {P0: 40, P1: 15, P2: 5}

    def plan(spec: ResetSpec, by_timestamp: dict[TopicPartition, int] | None = None) -> list[int]:
        planned = plan_offsets(spec, partitions, committed, starts, ends, by_timestamp or {})
        return [planned[tp] for tp in partitions]

    assert plan(ResetSpec("earliest")) == [0, 10, 5]
    assert plan(ResetSpec("latest")) == [100, 20, 5]
    assert plan(ResetSpec("offset", 12)) == [12, 12, 5]
    assert plan(ResetSpec("shift", -8)) == [32, 10, 5]
    assert plan(ResetSpec("shift", 70)) == [100, 20, 5]
    # No record at or after the time: the end, as Kafka's tool does.
    assert plan(ResetSpec("datetime", 7), {P0: 33, P1: -1, P2: -1}) == [33, 20, 5]
    with pytest.raises(CliError, match="cannot shift t:1: it has no committed offset"):
        plan_offsets(ResetSpec("shift", 1), [P1], {}, starts, ends, {})


def test_text_table_aligns_columns() -> None:
    assert text_table(("A", "LONGER"), [("xyz", None), (1, 2)]) == ("A    LONGER\nxyz  -\n1    2\n")
