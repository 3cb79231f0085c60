"""Offsets, group deletion, listing and replay on the pure coordinator, on a virtual clock."""

from __future__ import annotations

import pytest

from tests.unit.group_harness import (
    DELAY_MS,
    SESSION_MS,
    TEST_CONFIG,
    Harness,
    consumer_subscription,
    roundtrip,
)
from tidelog.broker.groups.config import MINUTE_MS, GroupConfig
from tidelog.broker.groups.coordinator import GROUP_AUTHORIZED_OPERATIONS
from tidelog.broker.groups.find_coordinator import (
    GROUP_KEY_TYPE,
    CoordinatorNode,
    find_coordinator_response,
)
from tidelog.broker.groups.records import partition_for_group
from tidelog.client.protocol.apis import API_BY_NAME
from tidelog.client.protocol.errors import ErrorCode

G = "billing"
RETENTION_MINUTES = 60
RETENTION_MS = RETENTION_MINUTES * MINUTE_MS
CHECK_MS = 60_000

RETENTION_CONFIG = GroupConfig(
    offsets_topic_num_partitions=4,
    group_initial_rebalance_delay_ms=DELAY_MS,
    group_min_session_timeout_ms=1_000,
    group_max_session_timeout_ms=60_000,
    offsets_retention_minutes=RETENTION_MINUTES,
    offsets_retention_check_interval_ms=CHECK_MS,
)


# --- commits -------------------------------------------------------------------------------


def test_a_client_that_assigns_its_own_partitions_commits_without_joining() -> None:
    h = Harness()
    rid = h.commit(G, {("t", 0): 10, ("t", 1): 20, ("u", 0): 5}, metadata="m")
    assert set(h.commit_errors(rid).values()) == {0}
    assert h.committed(G) == {("t", 0): 10, ("t", 1): 20, ("u", 0): 5}
    fetched = h.fetch(G, {"t": [0, 2]}, version=5)
    (topic,) = fetched["topics"]
    assert [
        (p["partition_index"], p["committed_offset"], p["committed_leader_epoch"], p["metadata"])
        for p in topic["partitions"]
    ] == [(0, 10, 7, "m"), (2, -1, -1, "")]
    listed = h.answer(h.send("ListGroups", 4, {}))["groups"]
    assert [(g["group_id"], g["protocol_type"], g["group_state"]) for g in listed] == [
        (G, "", "Empty")
    ]


def test_an_offset_is_visible_only_once_durable() -> None:
    h = Harness()
    h.hold_appends = True
    rid = h.commit(G, {("t", 0): 10})
    assert not h.answered(rid)
    assert h.fetch(G, {"t": [0]})["topics"][0]["partitions"][0]["committed_offset"] == -1
    h.release()
    assert h.commit_errors(rid) == {("t", 0): 0}
    assert h.committed(G) == {("t", 0): 10}


@pytest.mark.parametrize(
    ("append_error", "client_error"),
    [
        (ErrorCode.NOT_ENOUGH_REPLICAS, ErrorCode.COORDINATOR_NOT_AVAILABLE),
        (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.NOT_COORDINATOR),
        (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.INVALID_COMMIT_OFFSET_SIZE),
    ],
)
def test_a_failed_write_fails_the_commit(append_error: ErrorCode, client_error: ErrorCode) -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1})
    h.hold_appends = True
    rid = h.commit(G, {("t", 0): 2})
    h.release(append_error)
    assert h.commit_errors(rid) == {("t", 0): client_error}
    assert h.committed(G) == {("t", 0): 1}


def test_too_long_metadata_fails_only_its_partition() -> None:
    h = Harness()
    long_metadata = "x" * (TEST_CONFIG.offset_metadata_max_bytes + 1)
    ok = h.commit(G, {("t", 0): 1}, metadata="short")
    bad = h.commit(G, {("t", 1): 1}, metadata=long_metadata)
    assert h.commit_errors(ok) == {("t", 0): 0}
    assert h.commit_errors(bad) == {("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE}
    assert h.committed(G) == {("t", 0): 1}


def test_commits_of_group_members_follow_the_generation() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    ok = h.commit(G, {("t", 0): 3}, member_id=a, generation_id=generation)
    assert h.commit_errors(ok) == {("t", 0): 0}
    stale = h.commit(G, {("t", 0): 4}, member_id=a, generation_id=generation - 1)
    assert h.commit_errors(stale) == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    ghost = h.commit(G, {("t", 0): 4}, member_id="ghost", generation_id=generation)
    assert h.commit_errors(ghost) == {("t", 0): ErrorCode.UNKNOWN_MEMBER_ID}
    outsider = h.commit(G, {("t", 0): 4})
    assert h.commit_errors(outsider) == {("t", 0): ErrorCode.UNKNOWN_MEMBER_ID}
    # While CompletingRebalance the member has its generation but not its assignment.
    h.join(G, a)
    h.join(G, b)
    completing = h.commit(G, {("t", 0): 4}, member_id=a, generation_id=generation + 1)
    assert h.commit_errors(completing) == {("t", 0): ErrorCode.REBALANCE_IN_PROGRESS}
    assert h.committed(G) == {("t", 0): 3}


def test_commits_to_unknown_groups_with_a_generation_are_refused_per_version() -> None:
    h = Harness()
    v8 = h.commit(G, {("t", 0): 1}, member_id="m", generation_id=3, version=8)
    v9 = h.commit(G, {("t", 0): 1}, member_id="m", generation_id=3, version=9)
    assert h.commit_errors(v8) == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert h.commit_errors(v9) == {("t", 0): ErrorCode.GROUP_ID_NOT_FOUND}
    assert h.describe(G)["group_state"] == "Dead"


def test_offset_apis_answer_coordinator_errors() -> None:
    h = Harness(load=False)
    rid = h.commit(G, {("t", 0): 1, ("t", 1): 1})
    assert h.commit_errors(rid) == {("t", 0): 16, ("t", 1): 16}
    body = {"group_id": G, "topics": [{"name": "t", "partitions": [{"partition_index": 0}]}]}
    assert h.answer(h.send("OffsetDelete", 0, body))["error_code"] == 16
    results = h.answer(h.send("DeleteGroups", 2, {"groups_names": [G]}))["results"]
    assert results[0]["error_code"] == 16
    assert h.describe(G)["error_code"] == 16


# --- fetching ------------------------------------------------------------------------------


def test_fetch_v1_reports_group_errors_per_partition_and_v2_at_the_top() -> None:
    h = Harness(load=False)
    v1 = h.fetch(G, {"t": [0, 1]}, version=1)
    assert [p["error_code"] for p in v1["topics"][0]["partitions"]] == [16, 16]
    v2 = h.fetch(G, {"t": [0, 1]}, version=2)
    assert (v2["error_code"], v2["topics"]) == (16, [])


def test_fetch_v8_answers_several_groups_each_with_its_own_error() -> None:
    config = GroupConfig(offsets_topic_num_partitions=2)
    h = Harness(config, load=False)
    names = [f"g{i}" for i in range(8)]
    loaded = [n for n in names if partition_for_group(n, 2) == 0]
    unloaded = [n for n in names if partition_for_group(n, 2) == 1]
    assert loaded and unloaded
    h.run(h.core.load(0, [], h.now_ms))
    h.commit(loaded[0], {("t", 0): 9})
    body = {
        "groups": [
            {"group_id": loaded[0], "topics": None},
            {"group_id": loaded[0], "topics": [{"name": "t", "partition_indexes": [0, 1]}]},
            {"group_id": unloaded[0], "topics": None},
        ]
    }
    groups = h.answer(h.send("OffsetFetch", 8, body))["groups"]
    assert [g["error_code"] for g in groups] == [0, 0, ErrorCode.NOT_COORDINATOR]
    assert groups[0]["topics"][0]["partitions"][0]["committed_offset"] == 9
    assert [p["committed_offset"] for p in groups[1]["topics"][0]["partitions"]] == [9, -1]


def test_fetching_an_unknown_group_finds_nothing() -> None:
    h = Harness()
    assert h.fetch("nobody")["topics"] == []
    partitions = h.fetch("nobody", {"t": [3]})["topics"][0]["partitions"]
    assert partitions[0]["committed_offset"] == -1 and partitions[0]["error_code"] == 0


# --- OffsetDelete and DeleteGroups ---------------------------------------------------------


def test_offset_delete_on_an_empty_group() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1, ("t", 1): 2, ("u", 0): 3})
    body = {
        "group_id": G,
        "topics": [{"name": "t", "partitions": [{"partition_index": 0}, {"partition_index": 5}]}],
    }
    response = h.answer(h.send("OffsetDelete", 0, body))
    assert response["error_code"] == 0
    assert [p["error_code"] for p in response["topics"][0]["partitions"]] == [0, 0]
    assert h.committed(G) == {("t", 1): 2, ("u", 0): 3}


def test_offset_delete_spares_topics_the_members_subscribe_to() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1, ("gone", 0): 2})
    h.stable_group(G, 1)  # subscribes to "t"
    body = {
        "group_id": G,
        "topics": [
            {"name": "t", "partitions": [{"partition_index": 0}]},
            {"name": "gone", "partitions": [{"partition_index": 0}]},
        ],
    }
    response = h.answer(h.send("OffsetDelete", 0, body))
    codes = [t["partitions"][0]["error_code"] for t in response["topics"]]
    assert codes == [ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC, 0]
    assert h.committed(G) == {("t", 0): 1}


def test_offset_delete_refuses_non_consumer_groups_with_members_and_unknown_groups() -> None:
    h = Harness()
    h.stable_group(G, 1, protocol_type="connect", protocols=[("default", b"")])
    body = {"group_id": G, "topics": []}
    assert h.answer(h.send("OffsetDelete", 0, body))["error_code"] == ErrorCode.NON_EMPTY_GROUP
    body = {"group_id": "nobody", "topics": []}
    assert h.answer(h.send("OffsetDelete", 0, body))["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND


def test_delete_groups_removes_empty_groups_with_their_offsets() -> None:
    h = Harness()
    h.commit("simple", {("t", 0): 1})
    h.stable_group("busy", 1)
    h.commit("left", {("t", 0): 1})
    (b,), _ = h.stable_group("left", 1)
    h.leave("left", b)
    body = {"groups_names": ["simple", "busy", "left", "nobody"]}
    results = h.answer(h.send("DeleteGroups", 2, body))["results"]
    assert [(r["group_id"], r["error_code"]) for r in results] == [
        ("simple", 0),
        ("busy", ErrorCode.NON_EMPTY_GROUP),
        ("left", 0),
        ("nobody", ErrorCode.GROUP_ID_NOT_FOUND),
    ]
    assert h.fetch("simple")["topics"] == []
    assert h.describe("simple", version=5)["group_state"] == "Dead"
    gone = h.describe("left", version=6)
    assert (gone["error_code"], gone["error_message"]) == (
        ErrorCode.GROUP_ID_NOT_FOUND,
        "Group left not found.",
    )
    # Deleted for good: a fresh coordinator replaying the log finds only "busy".
    fresh = Harness(log=h.log)
    assert fresh.describe("simple", version=6)["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert fresh.describe("left", version=6)["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert fresh.describe("busy")["group_state"] == "Stable"


def test_a_failed_group_deletion_keeps_the_group() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1})
    h.hold_appends = True
    rid = h.send("DeleteGroups", 1, {"groups_names": [G]})
    assert h.describe(G)["group_state"] == "Dead"
    h.release(ErrorCode.NOT_ENOUGH_REPLICAS)
    result = h.answer(rid)["results"][0]
    assert result["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    h.hold_appends = False
    assert h.committed(G) == {("t", 0): 1}
    assert h.describe(G)["group_state"] == "Empty"


def test_a_group_being_deleted_is_not_available() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1})
    h.hold_appends = True
    deletion = h.send("DeleteGroups", 2, {"groups_names": [G]})
    assert h.answer(h.join(G))["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    commit = h.commit(G, {("t", 0): 2})
    assert h.commit_errors(commit) == {("t", 0): ErrorCode.COORDINATOR_NOT_AVAILABLE}
    assert h.leave(G, "m")["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert h.heartbeat(G, "m", 1) == ErrorCode.COORDINATOR_NOT_AVAILABLE
    again = h.answer(h.send("DeleteGroups", 2, {"groups_names": [G]}))["results"][0]
    assert again["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    h.release()
    assert h.answer(deletion)["results"][0]["error_code"] == 0
    assert h.answer(h.join(G))["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, "a new group"


# --- retention -----------------------------------------------------------------------------


def test_a_simple_groups_offsets_expire_after_the_retention_since_commit() -> None:
    h = Harness(RETENTION_CONFIG)
    h.commit(G, {("t", 0): 1})
    h.advance(RETENTION_MS // 2)
    h.commit(G, {("t", 1): 1})
    h.advance(RETENTION_MS // 2 + CHECK_MS)
    assert h.committed(G) == {("t", 1): 1}
    h.advance(RETENTION_MS // 2)
    assert h.committed(G) == {}
    assert h.describe(G, version=6)["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND, "group gone"
    assert Harness(RETENTION_CONFIG, log=h.log).committed(G) == {}


def test_a_consumer_groups_offsets_live_until_the_group_has_been_empty_that_long() -> None:
    h = Harness(RETENTION_CONFIG)
    (a,), generation = h.stable_group(G, 1)
    h.commit(G, {("t", 0): 1}, member_id=a, generation_id=generation)
    for _ in range(2 * RETENTION_MS // (SESSION_MS // 2)):
        h.advance(SESSION_MS // 2)
        assert h.heartbeat(G, a, generation) == 0
    assert h.committed(G) == {("t", 0): 1}, "subscribed offsets of a live group never expire"
    h.leave(G, a)
    h.advance(RETENTION_MS - CHECK_MS)
    assert h.committed(G) == {("t", 0): 1}
    h.advance(2 * CHECK_MS)
    assert h.committed(G) == {}


def test_offsets_of_topics_a_stable_group_no_longer_reads_expire() -> None:
    h = Harness(RETENTION_CONFIG)
    (a,), generation = h.stable_group(G, 1)  # subscribes to "t"
    h.commit(G, {("t", 0): 1, ("old", 0): 2}, member_id=a, generation_id=generation)
    for _ in range(RETENTION_MS // (SESSION_MS // 2) + CHECK_MS // (SESSION_MS // 2) + 1):
        h.advance(SESSION_MS // 2)
        h.heartbeat(G, a, generation)
    assert h.committed(G) == {("t", 0): 1}


def test_an_explicit_retention_time_wins() -> None:
    h = Harness(RETENTION_CONFIG)
    h.commit(G, {("t", 0): 1}, version=2, retention_ms=2 * CHECK_MS)
    h.commit(G, {("t", 1): 1}, version=2)
    h.advance(3 * CHECK_MS)
    assert h.committed(G) == {("t", 1): 1}


# --- listing and describing ----------------------------------------------------------------


def test_list_groups_filters_by_state_and_type() -> None:
    h = Harness()
    h.stable_group("stable", 1)
    h.commit("simple", {("t", 0): 1})
    h.join_new("joining")

    def listed(version: int, body: dict[str, object]) -> list[tuple[str, str]]:
        response = h.answer(h.send("ListGroups", version, body))
        assert response["error_code"] == 0
        return [(g["group_id"], g["group_state"]) for g in response["groups"]]

    everything = [("joining", "PreparingRebalance"), ("simple", "Empty"), ("stable", "Stable")]
    assert listed(4, {}) == everything
    assert [g["group_id"] for g in h.answer(h.send("ListGroups", 0, {}))["groups"]] == [
        name for name, _ in everything
    ]
    assert listed(4, {"states_filter": ["stable", "EMPTY"]}) == [
        ("simple", "Empty"),
        ("stable", "Stable"),
    ]
    assert listed(5, {"types_filter": ["Classic"]}) == everything
    assert listed(5, {"types_filter": ["consumer"]}) == []


def test_list_groups_reports_partitions_still_loading() -> None:
    h = Harness(load=False)
    h.run(h.core.load(0, [], h.now_ms))
    h.core.begin_load(1)
    response = h.answer(h.send("ListGroups", 3, {}))
    assert response["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


def test_describe_shows_metadata_and_assignments_only_when_stable() -> None:
    h = Harness()
    (a, b), _ = h.stable_group(G, 2)
    described = h.describe(G, version=4)
    assert (described["group_state"], described["protocol_type"], described["protocol_data"]) == (
        "Stable",
        "consumer",
        "range",
    )
    assert [
        (m["member_id"], m["client_id"], m["member_metadata"], m["member_assignment"])
        for m in described["members"]
    ] == [
        (a, "c0", consumer_subscription("t"), f"assignment-{a}".encode()),
        (b, "c1", consumer_subscription("t"), f"assignment-{b}".encode()),
    ]
    assert described["members"][0]["client_host"] == "/127.0.0.1"
    h.join(G, b, protocols=[("range", consumer_subscription("u"))])
    rebalancing = h.describe(G)
    assert rebalancing["group_state"] == "PreparingRebalance"
    assert rebalancing["protocol_data"] == ""
    assert {m["member_metadata"] for m in rebalancing["members"]} == {b""}


def test_describe_reports_authorized_operations_when_asked() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1})
    body = {"groups": [G], "include_authorized_operations": True}
    (group,) = h.answer(h.send("DescribeGroups", 3, body))["groups"]
    assert group["authorized_operations"] == GROUP_AUTHORIZED_OPERATIONS
    (group,) = h.answer(h.send("DescribeGroups", 3, {"groups": [G]}))["groups"]
    assert group["authorized_operations"] == -(1 << 31)


# --- replay --------------------------------------------------------------------------------


def _snapshot(h: Harness, group_ids: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for group_id in group_ids:
        described = h.describe(group_id)
        out[group_id] = (
            described["group_state"],
            described["protocol_type"],
            described["protocol_data"],
            [
                (m["member_id"], m["group_instance_id"], m["member_assignment"])
                for m in described["members"]
            ],
            h.committed(group_id),
        )
    return out


def test_replaying_the_log_restores_groups_offsets_and_generations() -> None:
    h = Harness()
    (a, b), generation = h.stable_group("dynamic", 2)
    h.commit("dynamic", {("t", 0): 100, ("t", 1): 200}, member_id=a, generation_id=generation)
    r1 = h.join("static", instance_id="i1", client_id="x")
    h.advance(DELAY_MS)
    s1 = h.answer(r1)["member_id"]
    h.sync("static", s1, 1, {s1: b"S"}, instance_id="i1")
    h.answer(h.join("static", instance_id="i1", client_id="x"))  # replaced by a new id
    h.commit("simple", {("x", 3): 7})
    h.commit("deleted", {("x", 0): 1})
    h.send("DeleteGroups", 0, {"groups_names": ["deleted"]})
    (c,), _ = h.stable_group("emptied", 1)
    h.leave("emptied", c)
    h.commit("trimmed", {("x", 0): 1, ("x", 1): 2})
    body = {
        "group_id": "trimmed",
        "topics": [{"name": "x", "partitions": [{"partition_index": 0}]}],
    }
    h.send("OffsetDelete", 0, body)

    names = ["dynamic", "static", "simple", "deleted", "emptied", "trimmed"]
    before = _snapshot(h, names)
    fresh = Harness(log=h.log)
    assert _snapshot(fresh, names) == before
    # Members carry on where they were: same ids, same generation.
    assert fresh.heartbeat("dynamic", b, generation) == ErrorCode.NONE
    assert fresh.answer(fresh.sync("dynamic", a, generation))["assignment"] == (
        f"assignment-{a}".encode()
    )
    assert fresh.state("emptied") == "Empty"
    # A loaded member that never shows up again expires.
    fresh.advance(SESSION_MS // 2)
    assert fresh.heartbeat("dynamic", b, generation) == ErrorCode.NONE
    fresh.advance(SESSION_MS // 2)
    assert fresh.state("dynamic") == "PreparingRebalance"
    assert fresh.heartbeat("dynamic", a, generation) == ErrorCode.UNKNOWN_MEMBER_ID


def test_replay_reads_records_in_any_number_of_batches_and_skips_other_record_kinds() -> None:
    h = Harness()
    h.commit(G, {("t", 0): 1})
    h.commit(G, {("t", 0): 2})
    partition = h.core.partition_for(G)
    records = list(h.log[partition])
    fresh = Harness(load=False)
    fresh.core.begin_load(partition)
    fresh.core.replay(partition, records[:1])
    fresh.core.replay(partition, [(b"\x00\x05whatever", b"ignored")])  # a KIP-848 record
    fresh.core.replay(partition, records[1:])
    fresh.run(fresh.core.complete_load(partition, fresh.now_ms))
    assert fresh.committed(G) == {("t", 0): 2}


# --- FindCoordinator -----------------------------------------------------------------------


def _locate(key_type: int, key: str) -> CoordinatorNode | ErrorCode:
    if key_type != GROUP_KEY_TYPE:
        return ErrorCode.INVALID_REQUEST
    if key == "leaderless":
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    return CoordinatorNode(node_id=partition_for_group(key, 50), host="broker", port=9092)


@pytest.mark.parametrize("version", range(7))
def test_find_coordinator_at_every_version(version: int) -> None:
    api = API_BY_NAME["FindCoordinator"]
    body = {"key": "g", "key_type": 0, "coordinator_keys": ["g", "leaderless"]}
    request = roundtrip(api, body, version, request=True)
    response = roundtrip(
        api, find_coordinator_response(request, version, _locate), version, request=False
    )
    expected_node = partition_for_group("g", 50)
    if version >= 4:
        assert [(c["key"], c["node_id"], c["error_code"]) for c in response["coordinators"]] == [
            ("g", expected_node, 0),
            ("leaderless", -1, ErrorCode.COORDINATOR_NOT_AVAILABLE),
        ]
    else:
        assert (
            response["error_code"],
            response["node_id"],
            response["host"],
            response["port"],
        ) == (
            0,
            expected_node,
            "broker",
            9092,
        )
    if 1 <= version <= 3:
        txn = roundtrip(api, {"key": "t", "key_type": 1}, version, request=True)
        assert find_coordinator_response(txn, version, _locate)["error_code"] == (
            ErrorCode.INVALID_REQUEST
        )
