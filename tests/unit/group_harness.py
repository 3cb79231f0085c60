"""A driver for the pure group coordinator in tests: a virtual clock and an in-memory log.

Requests are built the way the broker receives them (encoded, then decoded by the codec at
the given version, so every field of the schema is present) and every response is encoded
and decoded at its request's version, which proves it is valid on the wire. Appends become
durable at once (`hold_appends` keeps them back so that a test can complete or fail them),
and each request must be answered exactly once.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.coordinator import GroupCoordinator
from tidelog.broker.groups.effects import Append, Output
from tidelog.broker.groups.records import CoordinatorRecord
from tidelog.client.protocol.apis import API_BY_NAME
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import Api, Message

START_MS = 1_700_000_000_000
SESSION_MS = 10_000
REBALANCE_MS = 30_000
DELAY_MS = 100

TEST_CONFIG = GroupConfig(
    offsets_topic_num_partitions=4,
    group_initial_rebalance_delay_ms=DELAY_MS,
    group_min_session_timeout_ms=1_000,
    group_max_session_timeout_ms=60_000,
)


def roundtrip(api: Api, body: Message, version: int, *, request: bool) -> Message:
    w = Writer()
    if request:
        api.encode_request(w, body, version)
        decoded = api.decode_request(Reader(w.getvalue()), version)
    else:
        api.encode_response(w, body, version)
        decoded = api.decode_response(Reader(w.getvalue()), version)
    return decoded


def consumer_subscription(*topics: str) -> bytes:
    """A ConsumerProtocolSubscription v0: int16 version, topics, null user data."""
    w = Writer()
    w.int16(0)
    w.array_length(len(topics), compact=False)
    for topic in topics:
        w.string(topic, compact=False)
    w.bytes_(None, compact=False)
    return w.getvalue()


class Harness:
    def __init__(
        self,
        config: GroupConfig = TEST_CONFIG,
        *,
        seed: int = 1,
        load: bool = True,
        log: dict[int, list[CoordinatorRecord]] | None = None,
    ) -> None:
        self.config = config
        self.core = GroupCoordinator(config, rng=random.Random(seed))
        self.now_ms = START_MS
        self.log: dict[int, list[CoordinatorRecord]] = defaultdict(list)
        self.hold_appends = False
        self.held: list[Append] = []
        self.answers: dict[int, Message] = {}
        self.asked: dict[int, tuple[Api, int]] = {}
        self.next_deadline_ms: int | None = None
        self._next_request_id = 1
        if load:
            for partition in range(config.offsets_topic_num_partitions):
                records = (log or {}).get(partition, [])
                self.run(self.core.load(partition, records, self.now_ms))

    # --- plumbing -------------------------------------------------------------------------

    def run(self, output: Output) -> None:
        for request_id, response in output.responses:
            assert isinstance(request_id, int)
            assert request_id not in self.answers, f"request {request_id} answered twice"
            api, version = self.asked[request_id]
            self.answers[request_id] = roundtrip(api, response, version, request=False)
        self.next_deadline_ms = output.next_deadline_ms
        for append in output.appends:
            if self.hold_appends:
                self.held.append(append)
            else:
                self.complete(append)

    def failover(self, seed: int = 2) -> None:
        """Another coordinator takes over from the log; appends still held never landed."""
        for partition in range(self.config.offsets_topic_num_partitions):
            self.run(self.core.unload(partition, self.now_ms))
        self.held = []
        self.core = GroupCoordinator(self.config, rng=random.Random(seed))
        for partition in range(self.config.offsets_topic_num_partitions):
            self.run(self.core.load(partition, list(self.log[partition]), self.now_ms))

    def complete(self, append: Append, error: ErrorCode = ErrorCode.NONE) -> None:
        if error is ErrorCode.NONE:
            self.log[append.partition].extend(append.records)
        self.run(self.core.append_completed(append.append_id, error, self.now_ms))

    def release(self, error: ErrorCode = ErrorCode.NONE) -> None:
        """Complete every held append, in order, with `error`."""
        held, self.held = self.held, []
        for append in held:
            self.complete(append, error)

    def advance(self, ms: int) -> None:
        """Move the clock, firing every deadline on the way at its own time."""
        target = self.now_ms + ms
        for _ in range(100_000):
            deadline = self.next_deadline_ms
            if deadline is None or deadline > target:
                break
            self.now_ms = max(self.now_ms, deadline)
            self.run(self.core.tick(self.now_ms))
        else:
            raise AssertionError("deadlines keep coming")
        self.now_ms = target
        self.run(self.core.tick(self.now_ms))

    def send(self, api_name: str, version: int, body: Message, **extra: Any) -> int:
        api = API_BY_NAME[api_name]
        request = roundtrip(api, body, version, request=True)
        request_id = self._next_request_id
        self._next_request_id += 1
        self.asked[request_id] = (api, version)
        methods: dict[str, Callable[..., Output]] = {
            "JoinGroup": self.core.join_group,
            "SyncGroup": self.core.sync_group,
            "Heartbeat": self.core.heartbeat,
            "LeaveGroup": self.core.leave_group,
            "OffsetCommit": self.core.commit_offsets,
            "OffsetFetch": self.core.fetch_offsets,
            "OffsetDelete": self.core.delete_offsets,
            "ListGroups": self.core.list_groups,
            "DescribeGroups": self.core.describe_groups,
            "DeleteGroups": self.core.delete_groups,
        }
        method = methods[api_name]
        if api_name == "JoinGroup":
            extra.setdefault("client_id", "client")
            extra.setdefault("client_host", "/127.0.0.1")
        self.run(method(request_id, request, version, now_ms=self.now_ms, **extra))
        return request_id

    def answer(self, request_id: int) -> Message:
        assert request_id in self.answers, f"request {request_id} is not answered"
        return self.answers[request_id]

    def answered(self, request_id: int) -> bool:
        return request_id in self.answers

    def unanswered(self) -> list[int]:
        return [r for r in self.asked if r not in self.answers]

    # --- requests -------------------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str = "",
        *,
        version: int = 5,
        instance_id: str | None = None,
        protocols: list[tuple[str, bytes]] | None = None,
        protocol_type: str = "consumer",
        session_ms: int = SESSION_MS,
        rebalance_ms: int = REBALANCE_MS,
        client_id: str = "client",
    ) -> int:
        body = {
            "group_id": group_id,
            "session_timeout_ms": session_ms,
            "rebalance_timeout_ms": rebalance_ms,
            "member_id": member_id,
            "group_instance_id": instance_id,
            "protocol_type": protocol_type,
            "protocols": [
                {"name": n, "metadata": m}
                for n, m in (
                    [("range", consumer_subscription("t"))] if protocols is None else protocols
                )
            ],
        }
        return self.send("JoinGroup", version, body, client_id=client_id)

    def join_new(self, group_id: str, *, version: int = 5, **kwargs: Any) -> tuple[str, int]:
        """A dynamic member's first join (with the KIP-394 round from v4): (member id, rid)."""
        request_id = self.join(group_id, version=version, **kwargs)
        if version < 4:
            return "", request_id
        first = self.answer(request_id)
        assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, first
        member_id = first["member_id"]
        return member_id, self.join(group_id, member_id, version=version, **kwargs)

    def sync(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        assignments: dict[str, bytes] | None = None,
        *,
        version: int = 3,
        instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> int:
        body = {
            "group_id": group_id,
            "generation_id": generation_id,
            "member_id": member_id,
            "group_instance_id": instance_id,
            "protocol_type": protocol_type,
            "protocol_name": protocol_name,
            "assignments": [
                {"member_id": m, "assignment": a} for m, a in (assignments or {}).items()
            ],
        }
        return self.send("SyncGroup", version, body)

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        *,
        version: int = 3,
        instance_id: str | None = None,
    ) -> int:
        rid = self.send(
            "Heartbeat",
            version,
            {
                "group_id": group_id,
                "generation_id": generation_id,
                "member_id": member_id,
                "group_instance_id": instance_id,
            },
        )
        return int(self.answer(rid)["error_code"])

    def commit(
        self,
        group_id: str,
        offsets: dict[tuple[str, int], int],
        *,
        member_id: str = "",
        generation_id: int = -1,
        version: int = 8,
        metadata: str | None = "",
        instance_id: str | None = None,
        retention_ms: int = -1,
    ) -> int:
        topics: dict[str, list[Message]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                {
                    "partition_index": partition,
                    "committed_offset": offset,
                    "committed_leader_epoch": 7,
                    "committed_metadata": metadata,
                }
            )
        body = {
            "group_id": group_id,
            "generation_id_or_member_epoch": generation_id,
            "member_id": member_id,
            "group_instance_id": instance_id,
            "retention_time_ms": retention_ms,
            "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()],
        }
        return self.send("OffsetCommit", version, body)

    def commit_errors(self, request_id: int) -> dict[tuple[str, int], int]:
        return {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in self.answer(request_id)["topics"]
            for p in t["partitions"]
        }

    def fetch(
        self, group_id: str, topics: dict[str, list[int]] | None = None, *, version: int = 6
    ) -> Message:
        body = {
            "group_id": group_id,
            "topics": None
            if topics is None
            else [{"name": t, "partition_indexes": ps} for t, ps in topics.items()],
        }
        return self.answer(self.send("OffsetFetch", version, body))

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        """Every committed offset of the group (OffsetFetch with null topics)."""
        response = self.fetch(group_id)
        assert response["error_code"] == 0, response
        return {
            (t["name"], p["partition_index"]): p["committed_offset"]
            for t in response["topics"]
            for p in t["partitions"]
        }

    def describe(self, group_id: str, *, version: int = 5) -> Message:
        response = self.answer(self.send("DescribeGroups", version, {"groups": [group_id]}))
        (group,) = response["groups"]
        return group

    def state(self, group_id: str) -> str:
        return str(self.describe(group_id)["group_state"])

    def leave(self, group_id: str, member_id: str, *, version: int = 0) -> Message:
        return self.answer(
            self.send("LeaveGroup", version, {"group_id": group_id, "member_id": member_id})
        )

    def leave_batch(
        self, group_id: str, members: list[tuple[str, str | None]], *, version: int = 3
    ) -> Message:
        body = {
            "group_id": group_id,
            "members": [{"member_id": m, "group_instance_id": i} for m, i in members],
        }
        return self.answer(self.send("LeaveGroup", version, body))

    # --- scenarios ------------------------------------------------------------------------

    def stable_group(self, group_id: str, size: int, **join_kwargs: Any) -> tuple[list[str], int]:
        """Form a Stable group of `size` dynamic members: (member ids, leader first; gen)."""
        rids = []
        for i in range(size):
            _, rid = self.join_new(group_id, client_id=f"c{i}", **join_kwargs)
            rids.append(rid)
        self.advance(self.config.group_initial_rebalance_delay_ms * (size + 1))
        joined = [self.answer(r) for r in rids]
        generation_id = joined[0]["generation_id"]
        leader = joined[0]["leader"]
        members = [leader] + [j["member_id"] for j in joined if j["member_id"] != leader]
        assignments = {m: f"assignment-{m}".encode() for m in members}
        syncs = [self.sync(group_id, leader, generation_id, assignments)]
        syncs += [self.sync(group_id, m, generation_id) for m in members[1:]]
        for rid, member in zip(syncs, members, strict=True):
            assert self.answer(rid)["assignment"] == assignments[member]
        assert self.state(group_id) == "Stable"
        return members, generation_id
