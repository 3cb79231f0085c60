"""The consumer's group-membership state machine (client.group_membership), driven by hand
on a virtual clock: every JoinGroup/SyncGroup/Heartbeat response is written here as a
coordinator would send it, and each test checks what the member does next."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from tidelog.client.assignors import Assignment, Subscription, assignor_for_name
from tidelog.client.errors import (
    FencedInstanceIdError,
    IncompatibleBrokerError,
    KafkaConnectionError,
)
from tidelog.client.group_membership import (
    ApplyAssignment,
    Assign,
    CommitIdentity,
    Fail,
    FindCoordinator,
    GroupMembership,
    MembershipConfig,
    MemberState,
    Revoke,
    SendHeartbeat,
    SendJoinGroup,
    SendLeaveGroup,
    SendSyncGroup,
    Wait,
)
from tidelog.client.protocol.consumer_protocol import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.structs import TopicPartition as TP

INF = float("inf")
HEARTBEAT_S = 3.0
SESSION_S = 45.0
POLL_S = 300.0
BACKOFF_S = 0.1


def membership(
    *strategies: str, instance: str | None = None, topics: Iterable[str] = ("t",)
) -> GroupMembership:
    m = GroupMembership(
        MembershipConfig(
            group_id="g",
            group_instance_id=instance,
            session_timeout_ms=int(SESSION_S * 1000),
            rebalance_timeout_ms=60_000,
            heartbeat_interval_ms=int(HEARTBEAT_S * 1000),
            max_poll_interval_ms=int(POLL_S * 1000),
            retry_backoff_ms=int(BACKOFF_S * 1000),
        ),
        [assignor_for_name(name) for name in strategies or ("range",)],
    )
    m.set_subscription(frozenset(topics), 0.0)
    return m


def tps(*partitions: int, topic: str = "t") -> frozenset[TP]:
    return frozenset(TP(topic, p) for p in partitions)


def join_ok(
    member_id: str,
    generation: int,
    *,
    leader: str = "leader-x",
    protocol: str = "range",
    members: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "error_code": 0,
        "generation_id": generation,
        "protocol_type": "consumer",
        "protocol_name": protocol,
        "leader": leader,
        "skip_assignment": False,
        "member_id": member_id,
        "members": members or [],
    }


def join_error(code: ErrorCode, member_id: str = "") -> dict[str, Any]:
    return {
        "error_code": code,
        "generation_id": -1,
        "protocol_name": None,
        "leader": "",
        "member_id": member_id,
        "members": [],
    }


def sync_ok(partitions: Iterable[TP], protocol: str | None = None) -> dict[str, Any]:
    return {
        "error_code": 0,
        "protocol_type": None,
        "protocol_name": protocol,
        "assignment": encode_assignment(Assignment(tuple(sorted(partitions))).to_protocol()),
    }


def start_join(m: GroupMembership, now: float = 0.0) -> SendJoinGroup:
    """From UNJOINED: find the coordinator, then the first JoinGroup."""
    assert m.next_action(now) == FindCoordinator()
    m.coordinator_found()
    action = m.next_action(now)
    assert isinstance(action, SendJoinGroup)
    return action


def finish_sync(m: GroupMembership, partitions: Iterable[TP], now: float = 0.0) -> ApplyAssignment:
    action = m.next_action(now)
    assert isinstance(action, SendSyncGroup)
    assert action.request["assignments"] == []  # a follower assigns nothing
    m.sync_response(sync_ok(partitions), now)
    applied = m.next_action(now)
    assert isinstance(applied, ApplyAssignment)
    m.assignment_applied()
    return applied


def stable(
    m: GroupMembership, partitions: Iterable[TP], *, member: str = "m1", generation: int = 1
) -> None:
    """Join as a follower and get `partitions`."""
    start_join(m)
    m.join_response(join_ok(member, generation, protocol=next(iter(m.assignors))), 0.0)
    finish_sync(m, partitions)
    assert m.state is MemberState.STABLE


def subscription_of(join: SendJoinGroup, protocol: str) -> Any:
    (metadata,) = [p["metadata"] for p in join.request["protocols"] if p["name"] == protocol]
    return decode_subscription(metadata)


def test_a_member_joins_with_the_id_the_coordinator_requires_and_gets_its_partitions() -> None:
    m = membership("range", topics=["t", "u"])
    first = start_join(m)
    assert first.request["member_id"] == ""
    assert first.request["protocol_type"] == "consumer"
    assert subscription_of(first, "range").topics == ("t", "u")
    m.join_response(join_error(ErrorCode.MEMBER_ID_REQUIRED, "m1-uuid"), 0.0)
    second = m.next_action(0.0)
    assert isinstance(second, SendJoinGroup)
    assert second.request["member_id"] == "m1-uuid"
    m.join_response(join_ok("m1-uuid", 7), 0.0)
    assert m.commit_identity() is None  # between JoinGroup and the assignment
    applied = finish_sync(m, tps(0, 1))
    assert applied == ApplyAssignment(tps(0, 1), added=tps(0, 1), revoked=frozenset())
    assert m.owned == tps(0, 1)
    assert m.commit_identity() == CommitIdentity(7, "m1-uuid", None)
    assert m.next_action(0.0) == Wait(POLL_S)


def test_the_leader_assigns_every_members_share_with_its_subscription_version() -> None:
    m = membership("range")
    start_join(m)
    old_member = encode_subscription(Subscription(frozenset({"t"})).to_protocol(), version=0)
    members = [
        {"member_id": "a", "group_instance_id": None,
         "metadata": encode_subscription(Subscription(frozenset({"t"})).to_protocol())},
        {"member_id": "b", "group_instance_id": None, "metadata": old_member},
        {"member_id": "c", "group_instance_id": None, "metadata": b"\x00"},  # corrupt
    ]  # fmt: skip
    m.join_response(join_ok("a", 1, leader="a", members=members), 0.0)
    action = m.next_action(0.0)
    assert action == Assign(frozenset({"t"}))
    m.assign({"t": 5})
    sync = m.next_action(0.0)
    assert isinstance(sync, SendSyncGroup)
    assignments = {a["member_id"]: a["assignment"] for a in sync.request["assignments"]}
    assert set(assignments) == {"a", "b", "c"}
    shares = {
        member: Assignment.from_protocol(decode_assignment(data)).partitions
        for member, data in assignments.items()
    }
    # range over the two members that can read their subscription: 3 + 2 partitions.
    assert shares == {"a": tuple(sorted(tps(0, 1, 2))), "b": tuple(sorted(tps(3, 4))), "c": ()}
    assert assignments["b"][:2] == b"\x00\x00"  # v0 subscription, v0 assignment
    m.sync_response(sync_ok(tps(0, 1, 2)), 0.0)
    assert m.next_action(0.0) == ApplyAssignment(tps(0, 1, 2), tps(0, 1, 2), frozenset())
    m.assignment_applied()
    # The leader watches the partition counts it assigned with.
    m.metadata_updated({"t": 5})
    assert isinstance(m.next_action(0.0), Wait)
    m.metadata_updated({"t": 6})
    assert m.next_action(0.0) == Revoke(tps(0, 1, 2), lost=False)


def test_heartbeats_keep_time_and_a_silent_coordinator_is_looked_up_again() -> None:
    m = membership("range")
    assert m.heartbeat_action(0.0) == Wait(INF)  # not in a group yet
    stable(m, tps(0))
    assert m.heartbeat_action(1.0) == Wait(HEARTBEAT_S)
    beat = m.heartbeat_action(HEARTBEAT_S)
    assert isinstance(beat, SendHeartbeat)
    assert beat.request == {
        "group_id": "g", "generation_id": 1, "member_id": "m1", "group_instance_id": None,
    }  # fmt: skip
    assert m.heartbeat_action(HEARTBEAT_S) == Wait(INF)  # one at a time
    m.heartbeat_response(0, HEARTBEAT_S + 0.01)
    assert m.heartbeat_action(4.0) == Wait(2 * HEARTBEAT_S)
    # A retriable error: try again after the backoff, not a whole interval.
    assert isinstance(m.heartbeat_action(6.0), SendHeartbeat)
    m.heartbeat_response(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, 6.0)
    assert m.heartbeat_action(6.0) == Wait(6.0 + BACKOFF_S)
    # Nothing heard for a whole session: the coordinator is taken to be gone.
    assert m.heartbeat_action(6.0 + SESSION_S) == Wait(INF)
    assert not m.coordinator_known
    lost_at = 6.0 + SESSION_S
    assert m.next_action(lost_at) == Wait(lost_at + BACKOFF_S)
    assert m.next_action(lost_at + BACKOFF_S) == FindCoordinator()
    m.coordinator_found()
    assert m.state is MemberState.STABLE and m.owned == tps(0)  # no rebalance needed
    assert isinstance(m.heartbeat_action(lost_at + BACKOFF_S), SendHeartbeat)


def test_eager_members_revoke_everything_before_they_rejoin() -> None:
    m = membership("range")
    stable(m, tps(0, 1))
    assert isinstance(m.heartbeat_action(HEARTBEAT_S), SendHeartbeat)
    m.heartbeat_response(ErrorCode.REBALANCE_IN_PROGRESS, HEARTBEAT_S)
    assert m.rebalance_in_progress
    assert m.next_action(HEARTBEAT_S) == Revoke(tps(0, 1), lost=False)
    # While the callbacks run the member is still in its generation: it heartbeats and
    # may commit.
    assert m.commit_identity() == CommitIdentity(1, "m1", None)
    assert isinstance(m.heartbeat_action(2 * HEARTBEAT_S), SendHeartbeat)
    m.heartbeat_response(ErrorCode.REBALANCE_IN_PROGRESS, 2 * HEARTBEAT_S)
    m.revoked(tps(0, 1))
    join = m.next_action(2 * HEARTBEAT_S)
    assert isinstance(join, SendJoinGroup)
    assert join.request["member_id"] == "m1"
    assert subscription_of(join, "range").owned_partitions == ()
    assert m.heartbeat_action(2 * HEARTBEAT_S) == Wait(INF)  # the JoinGroup keeps us alive
    m.join_response(join_ok("m1", 2), 10.0)
    applied = finish_sync(m, tps(1, 2), now=10.0)
    assert applied == ApplyAssignment(tps(1, 2), added=tps(1, 2), revoked=frozenset())


def test_cooperative_members_keep_their_partitions_and_hand_on_only_what_moves() -> None:
    m = membership("cooperative-sticky")
    stable(m, tps(0, 1, 2, 3), generation=4)
    m.heartbeat_action(HEARTBEAT_S)
    m.heartbeat_response(ErrorCode.REBALANCE_IN_PROGRESS, HEARTBEAT_S)
    join = m.next_action(HEARTBEAT_S)  # no revocation first
    assert isinstance(join, SendJoinGroup)
    sent = subscription_of(join, "cooperative-sticky")
    assert sent.generation_id == 4
    assert [tuple(g) for g in sent.owned_partitions] == [("t", (0, 1, 2, 3))]
    assert m.commit_identity() == CommitIdentity(4, "m1", None)  # still consuming them
    m.join_response(join_ok("m1", 5, protocol="cooperative-sticky"), 4.0)
    assert m.commit_identity() is None
    applied = finish_sync(m, tps(0, 1), now=4.0)
    assert applied == ApplyAssignment(tps(0, 1), added=frozenset(), revoked=tps(2, 3))
    assert m.owned == tps(0, 1)
    # Something was revoked: rejoin at once so that it can be handed on.
    second = m.next_action(4.0)
    assert isinstance(second, SendJoinGroup)
    owned = subscription_of(second, "cooperative-sticky").owned_partitions
    assert [tuple(g) for g in owned] == [("t", (0, 1))]
    m.join_response(join_ok("m1", 6, protocol="cooperative-sticky"), 5.0)
    assert finish_sync(m, tps(0, 1), now=5.0) == ApplyAssignment(
        tps(0, 1), frozenset(), frozenset()
    )
    assert isinstance(m.next_action(5.0), Wait)


def test_a_cooperative_member_revokes_topics_it_no_longer_subscribes_before_joining() -> None:
    m = membership("cooperative-sticky", topics=["t", "u"])
    stable(m, tps(0) | tps(0, topic="u"))
    m.set_subscription(frozenset({"t"}), 1.0)
    assert m.next_action(1.0) == Revoke(tps(0, topic="u"), lost=False)
    m.revoked(tps(0, topic="u"))
    join = m.next_action(1.0)
    assert isinstance(join, SendJoinGroup)
    assert subscription_of(join, "cooperative-sticky").topics == ("t",)


@pytest.mark.parametrize(
    ("code", "keeps_member_id"),
    [(ErrorCode.UNKNOWN_MEMBER_ID, False), (ErrorCode.ILLEGAL_GENERATION, True)],
)
def test_a_member_whose_generation_is_gone_loses_its_partitions(
    code: ErrorCode, keeps_member_id: bool
) -> None:
    m = membership("cooperative-sticky")
    stable(m, tps(0, 1))
    m.heartbeat_action(HEARTBEAT_S)
    m.heartbeat_response(code, HEARTBEAT_S)
    assert m.commit_identity() is None
    assert m.next_action(HEARTBEAT_S) == Revoke(tps(0, 1), lost=True)
    m.revoked(tps(0, 1))
    join = m.next_action(HEARTBEAT_S)
    assert isinstance(join, SendJoinGroup)
    assert join.request["member_id"] == ("m1" if keeps_member_id else "")
    sent = subscription_of(join, "cooperative-sticky")
    assert (sent.generation_id, sent.owned_partitions) == (-1, ())


def test_answers_about_an_older_generation_are_ignored() -> None:
    m = membership("range")
    stable(m, tps(0))
    m.heartbeat_action(HEARTBEAT_S)
    m.set_subscription(frozenset({"t", "u"}), HEARTBEAT_S)  # rejoin while it is in flight
    assert m.next_action(HEARTBEAT_S) == Revoke(tps(0), lost=False)
    m.revoked(tps(0))
    assert isinstance(m.next_action(HEARTBEAT_S), SendJoinGroup)
    m.join_response(join_ok("m1", 2), 4.0)
    m.heartbeat_response(ErrorCode.ILLEGAL_GENERATION, 4.0)  # about generation 1
    assert m.generation_id == 2 and m.state is MemberState.SYNCING
    m.commit_failed(ErrorCode.UNKNOWN_MEMBER_ID, CommitIdentity(1, "m1", None))
    assert m.generation_id == 2


def test_coordinator_moves_and_load_errors_are_retried() -> None:
    m = membership("range")
    start_join(m)
    m.join_response(join_error(ErrorCode.NOT_COORDINATOR), 0.0)
    assert m.next_action(0.0) == Wait(BACKOFF_S)
    assert m.next_action(BACKOFF_S) == FindCoordinator()
    m.coordinator_found()
    assert isinstance(m.next_action(BACKOFF_S), SendJoinGroup)
    m.join_response(join_error(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS), 1.0)
    assert m.next_action(1.0) == Wait(1.0 + BACKOFF_S)
    assert isinstance(m.next_action(1.0 + BACKOFF_S), SendJoinGroup)
    m.join_response(join_error(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS), 2.0)
    assert m.next_action(2.0) == Wait(2.0 + 2 * BACKOFF_S)  # backs off further
    assert isinstance(m.next_action(3.0), SendJoinGroup)
    m.request_failed(3.0, KafkaConnectionError("connection lost"))
    assert not m.coordinator_known
    assert m.next_action(3.0 + BACKOFF_S) == FindCoordinator()
    m.coordinator_found()
    assert isinstance(m.next_action(3.0 + BACKOFF_S), SendJoinGroup)
    m.join_response(join_ok("m1", 1), 4.0)
    sync = m.next_action(4.0)
    assert isinstance(sync, SendSyncGroup)
    m.sync_response({"error_code": ErrorCode.REBALANCE_IN_PROGRESS, "assignment": b""}, 5.0)
    assert isinstance(m.next_action(5.0), SendJoinGroup)


def test_a_failed_heartbeat_to_a_replaced_coordinator_is_ignored() -> None:
    m = membership("range")
    stable(m, tps(0))
    assert isinstance(m.heartbeat_action(HEARTBEAT_S), SendHeartbeat)
    m.coordinator_lost(HEARTBEAT_S, "test")
    m.coordinator_found()
    m.heartbeat_failed(HEARTBEAT_S, KafkaConnectionError("old connection closed"))
    assert m.coordinator_known
    assert isinstance(m.heartbeat_action(2 * HEARTBEAT_S), SendHeartbeat)


@pytest.mark.parametrize(
    "response",
    [
        join_error(ErrorCode.GROUP_AUTHORIZATION_FAILED),
        join_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
        join_ok("m1", 1, protocol="roundrobin"),  # a protocol we never offered
    ],
)
def test_errors_that_retrying_cannot_cure_stop_the_membership(response: dict[str, Any]) -> None:
    m = membership("range")
    start_join(m)
    m.join_response(response, 0.0)
    action = m.next_action(0.0)
    assert isinstance(action, Fail)
    assert m.heartbeat_action(HEARTBEAT_S) == Wait(INF)


def test_a_fenced_static_member_stops() -> None:
    m = membership("range", instance="host-1")
    join = start_join(m)
    assert join.request["group_instance_id"] == "host-1"
    m.join_response(join_ok("host-1-uuid", 1), 0.0)
    finish_sync(m, tps(0))
    m.heartbeat_action(HEARTBEAT_S)
    m.heartbeat_response(ErrorCode.FENCED_INSTANCE_ID, HEARTBEAT_S)
    action = m.next_action(HEARTBEAT_S)
    assert isinstance(action, Fail) and isinstance(action.error, FencedInstanceIdError)


def test_a_broker_without_group_apis_is_fatal() -> None:
    m = membership("range")
    start_join(m)
    m.request_failed(0.0, IncompatibleBrokerError("no JoinGroup"))
    assert isinstance(m.next_action(1.0), Fail)


def test_a_stuck_application_leaves_the_group_and_rejoins_when_it_polls_again() -> None:
    m = membership("range")
    stable(m, tps(0))
    m.poll_started(10.0)
    assert m.next_action(10.0 + 2 * POLL_S) == Wait(INF)  # waiting inside a poll is fine
    m.poll_finished(20.0)
    assert m.next_action(21.0) == Wait(20.0 + POLL_S)
    leave = m.next_action(20.0 + POLL_S)
    assert isinstance(leave, SendLeaveGroup)
    assert leave.request is not None and leave.request["members"][0]["member_id"] == "m1"
    m.left()
    assert m.next_action(20.0 + POLL_S) == Revoke(tps(0), lost=True)
    m.revoked(tps(0))
    assert m.next_action(20.0 + POLL_S) == Wait(INF)
    assert m.waiting_for_poll
    m.poll_started(400.0)
    join = m.next_action(400.0)
    assert isinstance(join, SendJoinGroup) and join.request["member_id"] == ""


def test_unsubscribing_revokes_then_leaves_and_static_members_never_send_leave() -> None:
    m = membership("range")
    stable(m, tps(0, 1))
    m.set_subscription(None, 1.0)
    assert m.next_action(1.0) == Revoke(tps(0, 1), lost=False)
    m.revoked(tps(0, 1))
    leave = m.next_action(1.0)
    assert isinstance(leave, SendLeaveGroup) and leave.request is not None
    m.left()
    assert m.next_action(1.0) == Wait(INF)
    assert m.commit_identity() == CommitIdentity(-1, "", None)  # manual assignment again

    static = membership("range", instance="host-1")
    stable(static, tps(0))
    close = static.leave_on_close()
    assert close is not None and close.request is None


def test_subscribing_with_different_assignors_offers_each_in_order() -> None:
    m = membership("cooperative-sticky", "range")
    join = start_join(m)
    assert [p["name"] for p in join.request["protocols"]] == ["cooperative-sticky", "range"]
    # With an eager assignor among them, the whole consumer rebalances eagerly.
    m.join_response(join_ok("m1", 1, protocol="cooperative-sticky"), 0.0)
    finish_sync(m, tps(0, 1))
    m.heartbeat_action(HEARTBEAT_S)
    m.heartbeat_response(ErrorCode.REBALANCE_IN_PROGRESS, HEARTBEAT_S)
    assert m.next_action(HEARTBEAT_S) == Revoke(tps(0, 1), lost=False)
