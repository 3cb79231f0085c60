"""Random client behaviour against the pure coordinator: invariants hold after every step,
every request is answered exactly once, and the log replays to the same groups and offsets."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.group_harness import REBALANCE_MS, SESSION_MS, Harness
from tidelog.broker.groups.group import GroupState
from tidelog.client.protocol.errors import ErrorCode

G = "prop"
CLIENTS = ("a", "b", "c")


@dataclass
class Client:
    name: str
    instance_id: str | None
    member_id: str = ""
    generation_id: int = -1
    members: tuple[str, ...] = ()
    synced: bool = False
    must_join: bool = True
    parked: int | None = None


_client = st.sampled_from(CLIENTS)
_act = st.tuples(st.just("act"), _client)
_advance = st.tuples(st.just("advance"), st.sampled_from([1, 50, 1_000, SESSION_MS // 2]))
_op = st.one_of(
    # Mostly well-behaved clients (their next protocol step) and time passing.
    *[_act] * 24,
    *[_advance] * 6,
    st.tuples(st.just("join"), _client),
    st.tuples(st.just("sync"), _client),
    st.tuples(st.just("heartbeat"), _client),
    st.tuples(st.just("leave"), _client),
    st.tuples(st.just("commit"), _client, st.integers(0, 2), st.integers(0, 1000)),
    st.tuples(st.just("advance"), st.just(SESSION_MS)),
    st.tuples(st.just("hold")),
    st.tuples(st.just("release"), st.booleans()),
    st.tuples(st.just("failover")),
)


def _check_invariants(h: Harness) -> None:
    group = h.core._groups.get(G)
    if group is None:
        return
    members = group.members
    if group.state is GroupState.EMPTY:
        assert not members
    if members:
        assert group.leader_id in members
    if group.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
        assert members and group.protocol_name is not None
    assert set(group.static_members.values()) <= set(members)
    assert group.pending_sync <= set(members)
    assert group.awaiting_join_count == sum(m.join_request is not None for m in members.values())
    support: dict[str, int] = {}
    for member in members.values():
        for name in {name for name, _ in member.protocols}:
            support[name] = support.get(name, 0) + 1
    assert group.protocol_support == support
    for member in members.values():
        if member.join_request is not None:
            # Parked joins wait for a rebalance, or for a static takeover to be written.
            assert group.state is GroupState.PREPARING_REBALANCE or (
                group.state is GroupState.STABLE and member.is_static
            )
        if member.sync_request is not None:
            assert group.state is GroupState.COMPLETING_REBALANCE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=20, max_size=120), st.booleans())
def test_random_clients(ops: list[tuple[object, ...]], static: bool) -> None:
    h = Harness()
    clients = {n: Client(n, f"instance-{n}" if static and n != "c" else None) for n in CLIENTS}
    parked: dict[int, Client] = {}
    commits: list[tuple[int, tuple[str, int], int]] = []
    generations: list[int] = []
    failed_appends = False

    def settle() -> None:
        for rid, client in list(parked.items()):
            if not h.answered(rid):
                continue
            del parked[rid]
            if client.parked == rid:
                client.parked = None
            answer = h.answer(rid)
            code = answer["error_code"]
            if "generation_id" not in answer:  # a sync
                client.synced = code == ErrorCode.NONE
                client.must_join = code != ErrorCode.NONE
            elif code == ErrorCode.MEMBER_ID_REQUIRED:
                client.member_id = answer["member_id"]
            elif code == ErrorCode.NONE:
                client.member_id = answer["member_id"]
                client.generation_id = answer["generation_id"]
                client.members = tuple(m["member_id"] for m in answer["members"])
                client.synced, client.must_join = False, False
                generations.append(answer["generation_id"])
            if code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_INSTANCE_ID):
                client.member_id, client.generation_id, client.must_join = "", -1, True

    def join(client: Client) -> None:
        rid = h.join(G, client.member_id, instance_id=client.instance_id, client_id=client.name)
        parked[rid] = client
        client.parked = rid

    def sync(client: Client) -> None:
        assignments = {m: m.encode() for m in client.members}
        rid = h.sync(
            G, client.member_id, client.generation_id, assignments, instance_id=client.instance_id
        )
        parked[rid] = client
        client.parked = rid

    def heartbeat(client: Client) -> None:
        code = h.heartbeat(
            G, client.member_id, client.generation_id, instance_id=client.instance_id
        )
        if code in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION):
            client.must_join = True
        elif code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_INSTANCE_ID):
            client.member_id, client.generation_id, client.must_join = "", -1, True

    for op in ops:
        kind = op[0]
        if kind in ("act", "join", "sync", "heartbeat", "leave", "commit"):
            client = clients[str(op[1])]
        if kind == "act":
            if client.parked is not None:
                pass  # waiting for an answer
            elif client.must_join:
                join(client)
            elif not client.synced:
                sync(client)
            else:
                heartbeat(client)
        elif kind == "join":
            join(client)
        elif kind == "sync":
            sync(client)
        elif kind == "heartbeat":
            heartbeat(client)
        elif kind == "leave":
            h.leave_batch(G, [(client.member_id, client.instance_id)])
        elif kind == "commit":
            tp = ("t", int(str(op[2])))
            offset = int(str(op[3]))
            rid = h.commit(
                G, {tp: offset}, member_id=client.member_id, generation_id=client.generation_id
            )
            commits.append((rid, tp, offset))
        elif kind == "advance":
            h.advance(int(str(op[1])))
        elif kind == "hold":
            h.hold_appends = True
        elif kind == "release":
            h.hold_appends = False
            failed_appends = failed_appends or (not op[1] and bool(h.held))
            h.release(ErrorCode.NONE if op[1] else ErrorCode.NOT_ENOUGH_REPLICAS)
        else:
            assert kind == "failover"
            h.failover()
            generations.clear()  # a generation never written may be handed out again
        settle()
        _check_invariants(h)
        assert generations == sorted(generations), "generations only grow"

    h.hold_appends = False
    h.release()
    for _ in range(20):
        h.advance(REBALANCE_MS)
    assert h.unanswered() == [], "every request is answered"
    assert h.state(G) in ("Empty", "Dead")

    # Offsets: the last acknowledged commit per partition, also after a replay of the log.
    expected: dict[tuple[str, int], int] = {}
    for rid, tp, offset in commits:
        if h.commit_errors(rid)[tp] == ErrorCode.NONE:
            expected[tp] = offset
    fresh = Harness(log=h.log)
    assert h.committed(G) == expected
    assert fresh.committed(G) == expected
    if not failed_appends:
        # (A group's memberless record may fail to be written without failing a request, as
        # in Kafka: memory then keeps a generation the log does not have.)
        assert fresh.describe(G) == h.describe(G)
