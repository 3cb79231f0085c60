"""Group membership on the pure coordinator: every state transition, on a virtual clock."""

from __future__ import annotations

import pytest

from tests.unit.group_harness import (
    DELAY_MS,
    REBALANCE_MS,
    SESSION_MS,
    TEST_CONFIG,
    Harness,
    consumer_subscription,
)
from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.records import (
    GroupMetadata,
    GroupMetadataKey,
    decode_group_metadata_value,
    decode_key,
)
from tidelog.client.protocol.errors import ErrorCode

G = "orders-consumers"


def _stored_groups(h: Harness, group_id: str) -> list[GroupMetadata]:
    """The group metadata values written for `group_id`, oldest first."""
    partition = h.core.partition_for(group_id)
    found = []
    for key, value in h.log[partition]:
        decoded = decode_key(key)
        if isinstance(decoded, GroupMetadataKey) and decoded.group_id == group_id:
            assert value is not None, "no group here is deleted"
            found.append(decode_group_metadata_value(value))
    return found


def _pair(h: Harness) -> tuple[str, str]:
    """Two members joined (generation 1, CompletingRebalance): (leader, follower)."""
    _, r1 = h.join_new(G, client_id="a")
    _, r2 = h.join_new(G, client_id="b")
    h.advance(DELAY_MS * 2)
    leader = h.answer(r1)["leader"]
    follower = next(
        x["member_id"] for x in (h.answer(r1), h.answer(r2)) if x["member_id"] != leader
    )
    return leader, follower


# --- joining -------------------------------------------------------------------------------


def test_join_v4_asks_for_a_member_id_first_and_v3_joins_at_once() -> None:
    h = Harness()
    first = h.answer(h.join(G, version=4, client_id="app"))
    assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    assert first["member_id"].startswith("app-")
    assert first["generation_id"] == -1

    h2 = Harness()
    rid = h2.join(G, version=3, client_id="app")
    assert not h2.answered(rid), "a v3 join parks until the rebalance completes"
    h2.advance(DELAY_MS)
    joined = h2.answer(rid)
    assert joined["error_code"] == 0
    assert joined["member_id"].startswith("app-")
    assert joined["leader"] == joined["member_id"]


def test_first_rebalance_waits_the_initial_delay_then_completes() -> None:
    h = Harness()
    member_id, rid = h.join_new(G)
    assert h.state(G) == "PreparingRebalance"
    h.advance(DELAY_MS - 1)
    assert not h.answered(rid)
    h.advance(1)
    joined = h.answer(rid)
    assert joined["error_code"] == 0
    assert joined["generation_id"] == 1
    assert joined["protocol_name"] == "range"
    assert joined["leader"] == member_id
    assert [m["member_id"] for m in joined["members"]] == [member_id]
    assert joined["members"][0]["metadata"] == consumer_subscription("t")
    assert h.state(G) == "CompletingRebalance"


def test_initial_delay_extends_while_members_arrive_up_to_the_rebalance_timeout() -> None:
    h = Harness()
    _, first = h.join_new(G, rebalance_ms=DELAY_MS * 3)
    h.advance(DELAY_MS // 2)
    _, second = h.join_new(G, rebalance_ms=DELAY_MS * 3, client_id="late")
    h.advance(DELAY_MS // 2)
    assert not h.answered(first), "a newcomer extends the delay"
    h.advance(DELAY_MS)
    assert h.answer(first)["generation_id"] == h.answer(second)["generation_id"] == 1

    # Newcomers arriving every half delay cannot hold the group past its rebalance timeout.
    h = Harness()
    start_ms = h.now_ms
    first = h.join_new(G, rebalance_ms=DELAY_MS * 3)[1]
    for i in range(20):
        h.advance(DELAY_MS // 2)
        if h.answered(first):
            break
        h.join_new(G, rebalance_ms=DELAY_MS * 3, client_id=f"c{i}")
    assert h.answered(first)
    assert h.now_ms - start_ms == DELAY_MS * 3


def test_sync_stores_the_leaders_assignment_before_answering() -> None:
    h = Harness()
    leader, follower = _pair(h)
    generation = 1
    follower_sync = h.sync(G, follower, generation)
    assert not h.answered(follower_sync), "followers wait for the leader"
    h.hold_appends = True
    leader_sync = h.sync(G, leader, generation, {leader: b"L", follower: b"F"})
    assert not h.answered(leader_sync) and not h.answered(follower_sync)
    assert len(h.held) == 1, "the assignment is written first"
    h.release()
    assert h.answer(leader_sync)["assignment"] == b"L"
    assert h.answer(follower_sync)["assignment"] == b"F"
    assert h.state(G) == "Stable"
    (stored,) = _stored_groups(h, G)
    assert stored.generation_id == generation
    assert {m.member_id: m.assignment for m in stored.members} == {leader: b"L", follower: b"F"}


def test_a_failed_assignment_write_fails_the_syncs_and_rebalances() -> None:
    h = Harness()
    member_id, rid = h.join_new(G)
    h.advance(DELAY_MS)
    generation = h.answer(rid)["generation_id"]
    h.hold_appends = True
    sync = h.sync(G, member_id, generation, {member_id: b"x"})
    h.release(ErrorCode.NOT_ENOUGH_REPLICAS)
    assert h.answer(sync)["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert h.state(G) == "PreparingRebalance"
    assert h.heartbeat(G, member_id, generation) == ErrorCode.REBALANCE_IN_PROGRESS


def test_missing_assignments_are_empty_and_stable_syncs_answer_at_once() -> None:
    h = Harness()
    members, generation = h.stable_group(G, 2)
    # A later sync in Stable gets the current assignment at once.
    again = h.answer(h.sync(G, members[1], generation))
    assert again["assignment"] == f"assignment-{members[1]}".encode()

    h2 = Harness()
    leader, other = _pair(h2)
    h2.sync(G, leader, 1, {leader: b"only-me"})
    assert h2.answer(h2.sync(G, other, 1))["assignment"] == b""


def test_a_new_member_makes_everyone_rejoin() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    _, c_join = h.join_new(G, client_id="c")
    assert h.state(G) == "PreparingRebalance"
    assert h.heartbeat(G, a, generation) == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.heartbeat(G, b, generation) == ErrorCode.REBALANCE_IN_PROGRESS
    # Commits of the current generation are still accepted while members rejoin.
    assert h.commit_errors(h.commit(G, {("t", 0): 5}, member_id=a, generation_id=generation)) == {
        ("t", 0): 0
    }
    a_join = h.join(G, a)
    assert not h.answered(a_join)
    b_join = h.join(G, b)
    answers = [h.answer(r) for r in (a_join, b_join, c_join)]
    assert {x["generation_id"] for x in answers} == {generation + 1}
    leader_answer = next(x for x in answers if x["member_id"] == x["leader"])
    assert len(leader_answer["members"]) == 3
    assert all(x["members"] == [] for x in answers if x is not leader_answer)
    assert h.state(G) == "CompletingRebalance"


def test_members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    h.advance(SESSION_MS // 2)
    h.heartbeat(G, b, generation)
    a_join = h.join(G, a, protocols=[("range", consumer_subscription("t", "u"))])
    for _ in range(REBALANCE_MS // (SESSION_MS // 2)):
        if h.answered(a_join):
            break
        assert h.heartbeat(G, b, generation) == ErrorCode.REBALANCE_IN_PROGRESS
        h.advance(SESSION_MS // 2)
    answer = h.answer(a_join)
    assert answer["generation_id"] == generation + 1
    assert [m["member_id"] for m in answer["members"]] == [a]
    assert h.heartbeat(G, b, generation) == ErrorCode.UNKNOWN_MEMBER_ID


def test_a_rebalance_completes_as_soon_as_everyone_rejoined() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    h.join(G, b, protocols=[("range", consumer_subscription("other"))])
    a_join = h.join(G, a)
    assert h.answer(a_join)["generation_id"] == generation + 1


# --- stale and unknown members -------------------------------------------------------------


def test_stale_generations_are_illegal() -> None:
    h = Harness()
    (a, _b), generation = h.stable_group(G, 2)
    assert h.heartbeat(G, a, generation - 1) == ErrorCode.ILLEGAL_GENERATION
    assert h.answer(h.sync(G, a, generation + 1))["error_code"] == ErrorCode.ILLEGAL_GENERATION
    errors = h.commit_errors(h.commit(G, {("t", 0): 1}, member_id=a, generation_id=generation - 1))
    assert errors == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert h.heartbeat(G, a, generation) == ErrorCode.NONE


def test_unknown_members_are_told_so() -> None:
    h = Harness()
    assert h.answer(h.join(G, "ghost"))["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat(G, "ghost", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.answer(h.sync(G, "ghost", 1))["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    (_a,), generation = h.stable_group(G, 1)
    assert h.heartbeat(G, "ghost", generation) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.answer(h.join(G, "ghost"))["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.state(G) == "Stable"


def test_a_failed_join_leaves_no_group_behind() -> None:
    h = Harness()
    rid = h.join(G, protocols=[])
    assert h.answer(rid)["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert h.describe(G)["group_state"] == "Dead"


# --- rejoining -----------------------------------------------------------------------------


def test_a_duplicate_join_while_stable_gets_the_current_generation_without_rebalance() -> None:
    h = Harness()
    (leader, follower), generation = h.stable_group(G, 2)
    again = h.answer(h.join(G, follower))
    assert again["error_code"] == 0
    assert again["generation_id"] == generation
    assert again["leader"] == leader
    assert again["members"] == []
    assert h.state(G) == "Stable"
    assert h.answer(h.sync(G, follower, generation))["assignment"] == (
        f"assignment-{follower}".encode()
    )


def test_the_leader_rejoining_or_changed_metadata_starts_a_rebalance() -> None:
    h = Harness()
    (leader, follower), _ = h.stable_group(G, 2)
    h.join(G, leader)
    assert h.state(G) == "PreparingRebalance"

    h = Harness()
    (leader, follower), _generation = h.stable_group(G, 2)
    h.join(G, follower, protocols=[("range", consumer_subscription("t", "u"))])
    assert h.state(G) == "PreparingRebalance"


def test_a_repeated_join_while_completing_gets_the_same_answer() -> None:
    h = Harness()
    _, r1 = h.join_new(G, client_id="a")
    _, r2 = h.join_new(G, client_id="b")
    h.advance(DELAY_MS * 2)
    first = {h.answer(r)["member_id"]: h.answer(r) for r in (r1, r2)}
    for member_id, original in first.items():
        again = h.answer(h.join(G, member_id))
        assert again == original
    assert h.state(G) == "CompletingRebalance"


def test_a_superseded_parked_join_is_answered() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    first = h.join(G, a)
    second = h.join(G, a)
    assert h.answer(first)["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
    h.join(G, b)
    assert h.answer(second)["generation_id"] == generation + 1


# --- liveness ------------------------------------------------------------------------------


def test_heartbeats_keep_members_and_silence_expires_them() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    formed_ms = h.now_ms
    for _ in range(6):
        h.advance(SESSION_MS // 4)
        code = h.heartbeat(G, a, generation)
        if code == ErrorCode.REBALANCE_IN_PROGRESS:
            break
        assert code == ErrorCode.NONE
    # b never heartbeated: it expired after one session timeout, and a must rejoin.
    assert h.now_ms - formed_ms == SESSION_MS
    assert h.state(G) == "PreparingRebalance"
    answer = h.answer(h.join(G, a))
    assert answer["generation_id"] == generation + 1
    assert [m["member_id"] for m in answer["members"]] == [a]
    assert h.heartbeat(G, b, generation) == ErrorCode.UNKNOWN_MEMBER_ID


def test_the_last_member_expiring_leaves_an_empty_group_on_record() -> None:
    h = Harness()
    (_a,), generation = h.stable_group(G, 1)
    h.advance(SESSION_MS)
    assert h.state(G) == "Empty"
    described = h.describe(G)
    assert described["members"] == []
    assert described["protocol_type"] == "consumer"
    last = _stored_groups(h, G)[-1]
    assert last.generation_id == generation + 1
    assert last.members == () and last.protocol_name is None


def test_a_member_parked_in_a_join_is_alive_past_its_session_timeout() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2, rebalance_ms=SESSION_MS * 3)
    a_join = h.join(G, a, rebalance_ms=SESSION_MS * 3)
    for _ in range(4):
        h.advance(SESSION_MS // 2)
        h.heartbeat(G, b, generation)
    assert not h.answered(a_join)
    b_join = h.join(G, b, rebalance_ms=SESSION_MS * 3)
    assert h.answer(a_join)["generation_id"] == h.answer(b_join)["generation_id"] == generation + 1


def test_a_new_members_first_join_is_bounded() -> None:
    config = GroupConfig(
        offsets_topic_num_partitions=4,
        group_initial_rebalance_delay_ms=DELAY_MS,
        group_min_session_timeout_ms=1_000,
        group_max_session_timeout_ms=60_000,
        group_new_member_join_timeout_ms=SESSION_MS,
    )
    h = Harness(config)
    (a,), generation = h.stable_group(G, 1, rebalance_ms=SESSION_MS * 5)
    _, newcomer = h.join_new(G, client_id="slow", rebalance_ms=SESSION_MS * 5)
    for _ in range(3):
        h.advance(SESSION_MS // 2)
        assert h.heartbeat(G, a, generation) == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.answer(newcomer)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.answer(newcomer)["member_id"] == ""


def test_a_reserved_member_id_expires_and_stops_holding_the_rebalance() -> None:
    h = Harness()
    (a,), generation = h.stable_group(G, 1)
    reserved = h.answer(h.join(G, version=5, client_id="b"))
    assert reserved["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    a_join = h.join(G, a)  # the leader rejoins; the reserved id is still awaited
    assert not h.answered(a_join)
    h.advance(SESSION_MS)
    answer = h.answer(a_join)
    assert answer["generation_id"] == generation + 1
    assert [m["member_id"] for m in answer["members"]] == [a]
    late = h.answer(h.join(G, reserved["member_id"]))
    assert late["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID


def test_members_that_do_not_sync_are_dropped() -> None:
    h = Harness()
    leader, lazy = _pair(h)
    joined_ms = h.now_ms
    h.sync(G, leader, 1, {leader: b"L", lazy: b"Z"})
    assert h.state(G) == "Stable"
    while h.state(G) == "Stable" and h.now_ms - joined_ms < 2 * REBALANCE_MS:
        h.advance(SESSION_MS // 4)
        h.heartbeat(G, leader, 1)
        h.heartbeat(G, lazy, 1)  # alive, but never syncs
    assert h.now_ms - joined_ms == REBALANCE_MS
    assert h.state(G) == "PreparingRebalance"
    assert h.heartbeat(G, lazy, 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat(G, leader, 1) == ErrorCode.REBALANCE_IN_PROGRESS


def test_a_leader_that_never_syncs_releases_the_followers() -> None:
    h = Harness()
    leader, follower = _pair(h)
    follower_sync = h.sync(G, follower, 1)
    for _ in range(REBALANCE_MS // (SESSION_MS // 4)):
        h.advance(SESSION_MS // 4)
        if h.answered(follower_sync):
            break
        assert h.heartbeat(G, leader, 1) == ErrorCode.NONE
    assert h.answer(follower_sync)["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.heartbeat(G, leader, 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat(G, follower, 1) == ErrorCode.REBALANCE_IN_PROGRESS


# --- leaving -------------------------------------------------------------------------------


def test_leave_v0_removes_the_member_and_the_rest_rebalance() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    assert h.leave(G, b)["error_code"] == 0
    assert h.state(G) == "PreparingRebalance"
    assert h.leave(G, b)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    answer = h.answer(h.join(G, a))
    assert answer["generation_id"] == generation + 1
    assert [m["member_id"] for m in answer["members"]] == [a]


def test_leave_batch_reports_each_member() -> None:
    h = Harness()
    r_static = h.join(G, instance_id="inst-1", client_id="s")
    members, generation = h.stable_group(G, 2)
    static_id = h.answer(r_static)["member_id"]
    assert static_id in members, "the static member joined in the same rebalance"
    response = h.leave_batch(G, [(members[1], None), ("ghost", None), ("", "inst-1"), ("", "nope")])
    assert response["error_code"] == 0
    assert [
        (m["member_id"], m["group_instance_id"], m["error_code"]) for m in response["members"]
    ] == [
        (members[1], None, 0),
        ("ghost", None, ErrorCode.UNKNOWN_MEMBER_ID),
        ("", "inst-1", 0),
        ("", "nope", ErrorCode.UNKNOWN_MEMBER_ID),
    ]
    assert (
        h.heartbeat(G, static_id, generation, instance_id="inst-1") == ErrorCode.UNKNOWN_MEMBER_ID
    )
    remaining = [m["member_id"] for m in h.describe(G)["members"]]
    assert remaining == [m for m in members if m != members[1] and m != static_id]


def test_the_last_member_leaving_empties_the_group() -> None:
    h = Harness()
    (a,), generation = h.stable_group(G, 1)
    h.leave(G, a)
    assert h.state(G) == "Empty"
    assert _stored_groups(h, G)[-1].generation_id == generation + 1


def test_leaving_answers_a_parked_join_and_a_pending_id_can_leave() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    a_join = h.join(G, a)
    h.leave(G, a)
    assert h.answer(a_join)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    reserved = h.answer(h.join(G, version=4))["member_id"]
    assert h.leave(G, reserved)["error_code"] == 0
    b_join = h.join(G, b)
    assert h.answer(b_join)["generation_id"] == generation + 1, "nothing else is awaited"


# --- static membership ---------------------------------------------------------------------


def _static_group(h: Harness, version: int = 5) -> tuple[str, str, int]:
    """A Stable group of static members "s1" (leader) and "s2": (s1 id, s2 id, gen)."""
    r1 = h.join(G, instance_id="s1", client_id="a", version=version)
    r2 = h.join(G, instance_id="s2", client_id="b", version=version)
    h.advance(DELAY_MS * 2)
    s1, s2 = h.answer(r1)["member_id"], h.answer(r2)["member_id"]
    assert h.answer(r1)["leader"] == s1
    assert s1.startswith("s1-") and s2.startswith("s2-")
    h.sync(G, s1, 1, {s1: b"A1", s2: b"A2"}, instance_id="s1")
    h.sync(G, s2, 1, instance_id="s2")
    assert h.state(G) == "Stable"
    return s1, s2, 1


def test_a_restarted_static_member_takes_over_without_rebalance() -> None:
    h = Harness()
    s1, s2, generation = _static_group(h)
    h.hold_appends = True
    rejoin = h.join(G, instance_id="s2", client_id="b")
    assert not h.answered(rejoin), "the new member id is written first"
    h.release()
    answer = h.answer(rejoin)
    new_s2 = answer["member_id"]
    assert new_s2 != s2 and answer["generation_id"] == generation and answer["leader"] == s1
    assert h.state(G) == "Stable"
    assert h.answer(h.sync(G, new_s2, generation, instance_id="s2"))["assignment"] == b"A2"
    # The old incarnation is fenced.
    assert h.heartbeat(G, s2, generation, instance_id="s2") == ErrorCode.FENCED_INSTANCE_ID
    assert h.answer(h.sync(G, s2, generation, instance_id="s2"))["error_code"] == (
        ErrorCode.FENCED_INSTANCE_ID
    )
    assert h.answer(h.join(G, s2, instance_id="s2"))["error_code"] == ErrorCode.FENCED_INSTANCE_ID
    assert h.heartbeat(G, new_s2, generation, instance_id="s2") == ErrorCode.NONE
    stored = _stored_groups(h, G)[-1]
    assert {m.group_instance_id: m.member_id for m in stored.members} == {"s1": s1, "s2": new_s2}


@pytest.mark.parametrize("version", [5, 9])
def test_a_restarted_static_leader_is_told_per_version(version: int) -> None:
    h = Harness()
    s1, s2, generation = _static_group(h, version)
    answer = h.answer(h.join(G, instance_id="s1", client_id="a", version=version))
    new_s1 = answer["member_id"]
    assert answer["generation_id"] == generation
    if version >= 9:
        assert answer["leader"] == new_s1
        assert answer["skip_assignment"] is True
        assert {m["member_id"] for m in answer["members"]} == {new_s1, s2}
    else:
        # Older clients must not assign: they are given the old leader id.
        assert answer["leader"] == s1
        assert answer["members"] == []
    assert h.state(G) == "Stable"


def test_a_static_member_with_a_different_protocol_triggers_a_rebalance() -> None:
    h = Harness()
    _s1, _s2, _generation = _static_group(h)
    h.join(G, instance_id="s2", protocols=[("roundrobin", b""), ("range", b"")])
    assert h.state(G) == "Stable", "range still wins the vote"
    h.join(G, instance_id="s1", protocols=[("roundrobin", b""), ("range", b"")])
    assert h.state(G) == "PreparingRebalance", "now roundrobin would be chosen"


def test_a_static_member_replaced_while_completing_fences_the_old_sync() -> None:
    h = Harness()
    r1 = h.join(G, instance_id="s1", client_id="a")
    r2 = h.join(G, instance_id="s2", client_id="b")
    h.advance(DELAY_MS * 2)
    s2 = h.answer(r2)["member_id"]
    parked = h.sync(G, s2, 1, instance_id="s2")
    rejoin = h.join(G, instance_id="s2", client_id="b")
    assert h.answer(parked)["error_code"] == ErrorCode.FENCED_INSTANCE_ID
    assert h.state(G) == "PreparingRebalance"
    s1 = h.answer(r1)["member_id"]
    h.join(G, s1, instance_id="s1")
    assert h.answer(rejoin)["generation_id"] == 2


def test_a_failed_static_takeover_keeps_the_old_member() -> None:
    h = Harness()
    _s1, s2, generation = _static_group(h)
    h.hold_appends = True
    rejoin = h.join(G, instance_id="s2")
    h.release(ErrorCode.NOT_LEADER_OR_FOLLOWER)
    answer = h.answer(rejoin)
    assert answer["error_code"] == ErrorCode.NOT_COORDINATOR
    assert answer["member_id"] == ""
    assert h.heartbeat(G, s2, generation, instance_id="s2") == ErrorCode.NONE


def test_static_members_stay_through_a_rebalance_they_miss() -> None:
    h = Harness()
    s1, s2, generation = _static_group(h)
    for _ in range(10):
        h.heartbeat(G, s2, generation, instance_id="s2")
        if h.answered(rid := h.join(G, s1, instance_id="s1")):
            break
        h.advance(REBALANCE_MS // 10)
        h.heartbeat(G, s2, generation, instance_id="s2")
    answer = h.answer(rid)
    assert answer["generation_id"] == generation + 1
    assert {m["member_id"] for m in answer["members"]} == {s1, s2}
    assert h.heartbeat(G, s2, generation, instance_id="s2") == ErrorCode.ILLEGAL_GENERATION


def test_only_unrejoined_static_members_left_postpone_the_rebalance() -> None:
    h = Harness()
    _, s2, generation = _static_group(h)
    h.leave_batch(G, [("", "s1")])
    assert h.state(G) == "PreparingRebalance"
    for _ in range(2 * REBALANCE_MS // (SESSION_MS // 2)):
        h.advance(SESSION_MS // 2)
        assert h.heartbeat(G, s2, generation, instance_id="s2") == ErrorCode.REBALANCE_IN_PROGRESS
    rejoin = h.answer(h.join(G, s2, instance_id="s2"))
    assert (rejoin["generation_id"], rejoin["leader"]) == (generation + 1, s2)


def test_a_static_member_replaced_while_rejoining_fences_the_old_join() -> None:
    h = Harness()
    s1, s2, generation = _static_group(h)
    old_join = h.join(G, s1, instance_id="s1")  # the leader rejoins: a rebalance starts
    assert h.state(G) == "PreparingRebalance"
    new_join = h.join(G, instance_id="s1")
    assert h.answer(old_join)["error_code"] == ErrorCode.FENCED_INSTANCE_ID
    h.join(G, s2, instance_id="s2")
    answer = h.answer(new_join)
    assert answer["generation_id"] == generation + 1
    assert answer["member_id"] not in (s1, s2)
    assert answer["leader"] == answer["member_id"], "the new incarnation leads"


# --- protocols and validation --------------------------------------------------------------


def test_protocol_is_chosen_by_vote_among_common_ones() -> None:
    h = Harness()
    r1 = h.join(G, version=3, protocols=[("range", b""), ("roundrobin", b""), ("sticky", b"")])
    r2 = h.join(G, version=3, protocols=[("roundrobin", b""), ("range", b"")])
    r3 = h.join(G, version=3, protocols=[("roundrobin", b"rr")])
    h.advance(DELAY_MS * 3)
    assert {h.answer(r)["protocol_name"] for r in (r1, r2, r3)} == {"roundrobin"}
    misfit = h.join(G, version=3, protocols=[("sticky", b"")])
    assert h.answer(misfit)["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    other_type = h.join(G, version=3, protocol_type="connect", protocols=[("range", b"")])
    assert h.answer(other_type)["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_sync_v5_checks_the_protocol_it_names() -> None:
    h = Harness()
    member_id, _rid = h.join_new(G, version=9)
    h.advance(DELAY_MS)
    wrong = h.sync(G, member_id, 1, {member_id: b"x"}, version=5, protocol_name="roundrobin")
    assert h.answer(wrong)["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    right = h.answer(
        h.sync(
            G,
            member_id,
            1,
            {member_id: b"x"},
            version=5,
            protocol_type="consumer",
            protocol_name="range",
        )
    )
    assert (right["error_code"], right["protocol_type"], right["protocol_name"]) == (
        0,
        "consumer",
        "range",
    )


def test_session_timeouts_out_of_bounds_are_refused() -> None:
    h = Harness()
    low = h.answer(h.join(G, session_ms=TEST_CONFIG.group_min_session_timeout_ms - 1))
    high = h.answer(h.join(G, session_ms=TEST_CONFIG.group_max_session_timeout_ms + 1))
    assert low["error_code"] == high["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT


def test_groups_of_unloaded_or_loading_partitions_are_refused() -> None:
    h = Harness(load=False)
    assert h.answer(h.join(G))["error_code"] == ErrorCode.NOT_COORDINATOR
    h.core.begin_load(h.core.partition_for(G))
    assert h.answer(h.join(G))["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert h.heartbeat(G, "m", 1) == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert h.answer(h.sync(G, "m", 1))["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert h.leave(G, "m")["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert h.core.is_loading(h.core.partition_for(G))
    assert not h.core.is_loaded(h.core.partition_for(G))
    h.run(h.core.complete_load(h.core.partition_for(G), h.now_ms))
    assert h.core.is_loaded(h.core.partition_for(G))
    assert h.answer(h.join(G))["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    assert h.answer(h.join(""))["error_code"] == ErrorCode.INVALID_GROUP_ID


def test_the_group_size_is_bounded() -> None:
    config = GroupConfig(
        offsets_topic_num_partitions=4,
        group_initial_rebalance_delay_ms=DELAY_MS,
        group_min_session_timeout_ms=1_000,
        group_max_session_timeout_ms=60_000,
        group_max_size=2,
    )
    h = Harness(config)
    h.stable_group(G, 2)
    refused = h.answer(h.join(G, version=4))
    assert refused["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert h.state(G) == "Stable"


def test_unloading_answers_every_parked_request() -> None:
    h = Harness()
    (a, b), generation = h.stable_group(G, 2)
    parked_join = h.join(G, a)
    h.hold_appends = True
    in_flight = h.commit(G, {("t", 0): 1}, member_id=b, generation_id=generation)
    h.run(h.core.unload(h.core.partition_for(G), h.now_ms))
    assert h.answer(parked_join)["error_code"] == ErrorCode.NOT_COORDINATOR
    assert h.commit_errors(in_flight) == {("t", 0): ErrorCode.NOT_COORDINATOR}
    h.release()  # the log reports later: ignored
    assert h.heartbeat(G, b, generation) == ErrorCode.NOT_COORDINATOR
    assert h.unanswered() == []


@pytest.mark.parametrize("version", range(10))
def test_a_group_forms_at_every_join_group_version(version: int) -> None:
    h = Harness()
    sync_version = min(version, 5)
    member_id, rid = h.join_new(G, version=version)
    h.advance(DELAY_MS)
    joined = h.answer(rid)
    member_id = joined["member_id"]
    assert joined["error_code"] == 0 and joined["leader"] == member_id
    sync = h.answer(
        h.sync(G, member_id, joined["generation_id"], {member_id: b"x"}, version=sync_version)
    )
    assert sync["assignment"] == b"x"
    assert h.heartbeat(G, member_id, joined["generation_id"], version=min(version, 4)) == 0
    left = h.answer(
        h.send(
            "LeaveGroup",
            min(version, 5),
            {"group_id": G, "member_id": member_id, "members": [{"member_id": member_id}]},
        )
    )
    assert left["error_code"] == 0
    assert h.state(G) == "Empty"
