"""`tidelog group ...` run as a user runs it (a subprocess per command) against an
in-process broker with fast group settings; group members are confluent-kafka consumers,
and stopped groups get their offsets from `Admin.alter_group_offsets`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
import trio

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tests.integration.test_cli import Cli, Result, concurrently
from tidelog.client.admin import Admin
from tidelog.client.errors import GroupIdNotFoundError, UnknownMemberIdError
from tidelog.client.producer import Producer
from tidelog.client.structs import NewTopic, OffsetAndMetadata, TopicPartition

CLIENT_TIMEOUT_S = 20
COMMANDS_AT_ONCE = 4
"""Subprocesses run at the same time: enough to overlap their start-up, few enough that a
busy machine does not push one past its timeout."""
STATE_POLL_S = 0.05
STATE_POLLS_MAX = int(CLIENT_TIMEOUT_S / STATE_POLL_S)
CONSUMER_POLLS_MAX = 200
"""Polls of 0.1 s each, 20 s in all, for a member to read its records."""
T0_MS = 1_700_000_000_000
"""Records of the timestamp test are stamped T0_MS + 1000 * offset."""


@pytest.fixture
async def broker(start_broker: StartBroker, tmp_path: Path) -> RunningBroker:
    return await start_broker(
        local_config(
            tmp_path / "data", group_initial_rebalance_delay_ms=0, offsets_topic_num_partitions=4
        )
    )


@pytest.fixture
def cli(broker: RunningBroker) -> Cli:
    return Cli(broker.bootstrap)


async def create_topic(broker: RunningBroker, topic: str, partitions: int) -> None:
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions)])


async def produce(
    broker: RunningBroker, topic: str, counts: dict[int, int], timestamp: Callable[[int], int]
) -> None:
    """`counts[p]` records to partition p, the i-th of a call stamped `timestamp(i)`."""
    async with Producer(bootstrap_servers=broker.bootstrap) as producer:
        futures = [
            await producer.send(topic, b"v%d" % i, partition=p, timestamp_ms=timestamp(i))
            for p, count in counts.items()
            for i in range(count)
        ]
        for future in futures:
            await future


def now_ms(_: int) -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


async def committed(broker: RunningBroker, group: str) -> dict[tuple[str, int], int]:
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        offsets = await admin.list_group_offsets(group)
    return {(tp.topic, tp.partition): c.offset for tp, c in offsets.items()}


async def commit(broker: RunningBroker, group: str, offsets: dict[tuple[str, int], int]) -> None:
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        await admin.alter_group_offsets(
            group, {TopicPartition(*tp): OffsetAndMetadata(o) for tp, o in offsets.items()}
        )


async def wait_for_state(broker: RunningBroker, group: str, state: str) -> None:
    """Return once the group is in `state` (polled: the broker announces nothing)."""
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        with trio.fail_after(CLIENT_TIMEOUT_S):
            for _ in range(STATE_POLLS_MAX):
                if (await admin.describe_groups([group]))[group].state == state:
                    return
                await trio.sleep(STATE_POLL_S)
    raise AssertionError(f"group {group!r} did not reach state {state}")


class GroupMember:
    """A confluent-kafka consumer in a thread: joins `group`, consumes `count` records,
    commits them, then stays in the group (heartbeating) until `stop()`."""

    def __init__(self, bootstrap: str, topic: str, group: str, count: int) -> None:
        self.bootstrap, self.topic, self.group, self.count = bootstrap, topic, group, count
        self.committed = trio.Event()
        self._stop = threading.Event()
        self.consumed = 0

    def run(self, token: trio.lowlevel.TrioToken) -> None:
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "broker.address.family": "v4",
                "group.id": self.group,
                "client.id": "lag-reader",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        try:
            consumer.subscribe([self.topic])
            for _ in range(CONSUMER_POLLS_MAX):
                if self.consumed >= self.count:
                    break
                message = consumer.poll(0.1)
                if message is not None:
                    assert message.error() is None, message.error()
                    self.consumed += 1
            consumer.commit(asynchronous=False)
            trio.from_thread.run_sync(self.committed.set, trio_token=token)
            self._stop.wait(CLIENT_TIMEOUT_S)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()


def documents(stdout: bytes) -> dict[str, Any]:
    return {d["group_id"]: d for d in json.loads(stdout)}


def table(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines]


# --- describe, list, delete while a consumer is behind -----------------------------------


async def test_describe_shows_the_lag_of_a_consumer_that_is_behind(
    cli: Cli, broker: RunningBroker
) -> None:
    await create_topic(broker, "lagging", 2)
    await produce(broker, "lagging", {0: 5, 1: 5}, now_ms)
    member = GroupMember(broker.bootstrap, "lagging", "lag-readers", 10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, member.run, trio.lowlevel.current_trio_token())
        try:
            with trio.fail_after(CLIENT_TIMEOUT_S):
                await member.committed.wait()
            assert member.consumed == 10
            await produce(broker, "lagging", {0: 3, 1: 1}, now_ms)  # the member reads no more

            text, as_json, listed, stable, plan, refused, not_deleted = await concurrently(
                cli.ok("group", "describe", "lag-readers"),
                cli.ok("group", "describe", "lag-readers", "--format", "json"),
                cli.ok("group", "list", "--format", "json"),
                cli.ok("group", "list", "--state", "stable"),
                cli.ok("group", "reset-offsets", "lag-readers", "--to-earliest"),
                cli("group", "reset-offsets", "lag-readers", "--to-earliest", "--execute"),
                cli("group", "delete", "lag-readers"),
            )
        finally:
            member.stop()

    rows = table(text.lines)
    assert rows[0] == [
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
        "CONSUMER-ID", "HOST", "CLIENT-ID",
    ]  # fmt: skip
    member_ids = {row[6] for row in rows[1:]}
    assert len(member_ids) == 1 and member_ids != {"-"}
    assert [row[:6] + row[7:] for row in rows[1:]] == [
        ["lag-readers", "lagging", "0", "5", "8", "3", "/127.0.0.1", "lag-reader"],
        ["lag-readers", "lagging", "1", "5", "6", "1", "/127.0.0.1", "lag-reader"],
    ]

    document = documents(as_json.stdout)["lag-readers"]
    assert document["state"] == "Stable"
    assert document["protocol_type"] == "consumer"
    assert document["protocol"] in ("range", "roundrobin")
    assert document["coordinator"]["node_id"] == broker.broker.config.node_id
    [described_member] = document["members"]
    assert described_member["member_id"] in member_ids
    assert described_member["client_id"] == "lag-reader"
    assert described_member["assignment"] == [
        {"topic": "lagging", "partition": 0},
        {"topic": "lagging", "partition": 1},
    ]
    assert [
        (r["partition"], r["current_offset"], r["log_end_offset"], r["lag"], r["member_id"])
        for r in document["partitions"]
    ] == [(0, 5, 8, 3, described_member["member_id"]), (1, 5, 6, 1, described_member["member_id"])]

    assert {"group_id": "lag-readers", "state": "Stable", "protocol_type": "consumer"} in (
        json.loads(listed.stdout)
    )
    assert stable.lines == ["lag-readers"]

    # A dry run of an active group shows the plan and warns; --execute is refused.
    assert table(plan.lines)[1:] == [
        ["lag-readers", "lagging", "0", "5", "0"],
        ["lag-readers", "lagging", "1", "5", "0"],
    ]
    assert "is active" in plan.stderr and "dry run" in plan.stderr
    assert refused.status == 1
    assert refused.error_line == (
        "tidelog: error: group 'lag-readers' is active (Stable, 1 member(s)): "
        "stop its consumers before resetting its offsets"
    )
    assert not_deleted.status == 1
    assert not_deleted.error_line == (
        "tidelog: error: group 'lag-readers' is active: stop its consumers before deleting it"
    )
    assert await committed(broker, "lag-readers") == {("lagging", 0): 5, ("lagging", 1): 5}

    # Stopped: the offsets and lag stay; no consumer; now the offsets can be reset.
    await wait_for_state(broker, "lag-readers", "Empty")
    stopped = await cli.ok("group", "describe", "lag-readers")
    assert table(stopped.lines)[1:] == [
        ["lag-readers", "lagging", "0", "5", "8", "3", "-", "-", "-"],
        ["lag-readers", "lagging", "1", "5", "6", "1", "-", "-", "-"],
    ]
    assert stopped.stderr == "tidelog: group 'lag-readers' has no active members\n"
    await cli.ok("group", "reset-offsets", "lag-readers", "--to-latest", "--execute")
    assert await committed(broker, "lag-readers") == {("lagging", 0): 8, ("lagging", 1): 6}


async def test_an_active_group_refuses_offsets_from_the_admin_client(
    broker: RunningBroker,
) -> None:
    await create_topic(broker, "busy", 1)
    await produce(broker, "busy", {0: 2}, now_ms)
    member = GroupMember(broker.bootstrap, "busy", "busy-readers", 2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, member.run, trio.lowlevel.current_trio_token())
        with trio.fail_after(CLIENT_TIMEOUT_S):
            await member.committed.wait()
        try:
            with pytest.raises(UnknownMemberIdError, match="group 'busy-readers' is active"):
                await commit(broker, "busy-readers", {("busy", 0): 0})
        finally:
            member.stop()
    assert await committed(broker, "busy-readers") == {("busy", 0): 2}


# --- reset-offsets -----------------------------------------------------------------------


async def test_reset_offsets_dry_run_and_each_target(cli: Cli, broker: RunningBroker) -> None:
    await create_topic(broker, "timed", 2)
    await produce(broker, "timed", {0: 10, 1: 10}, lambda i: T0_MS + 1000 * i)
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        await admin.delete_records({TopicPartition("timed", 0): 2})  # p0 now starts at 2
    await commit(broker, "stopped", {("timed", 0): 4, ("timed", 1): 7})

    dry_text, dry_json = await concurrently(
        cli.ok("group", "reset-offsets", "stopped", "--to-earliest"),
        cli.ok("group", "reset-offsets", "stopped", "--to-earliest", "--format", "json"),
    )
    assert table(dry_text.lines) == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        ["stopped", "timed", "0", "4", "2"],
        ["stopped", "timed", "1", "7", "0"],
    ]
    assert dry_text.stderr == "tidelog: dry run: no offsets changed (add --execute to store them)\n"
    assert json.loads(dry_json.stdout) == {
        "group_id": "stopped",
        "executed": False,
        "partitions": [
            {"topic": "timed", "partition": 0, "current_offset": 4, "new_offset": 2},
            {"topic": "timed", "partition": 1, "current_offset": 7, "new_offset": 0},
        ],
    }
    assert await committed(broker, "stopped") == {("timed", 0): 4, ("timed", 1): 7}

    # Each case resets its own copy of the group (committed at 4 and 7), all at once.
    after_all = datetime.fromtimestamp((T0_MS + 60_000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases: dict[str, tuple[list[str], tuple[int, int]]] = {
        "earliest": (["--to-earliest"], (2, 0)),
        "latest": (["--to-latest"], (10, 10)),
        "offset": (["--to-offset", "5"], (5, 5)),
        "offset-clamped": (["--to-offset", "1"], (2, 1)),
        "shift": (["--shift-by", "3"], (7, 10)),
        "shift-back-clamped": (["--shift-by", "-4"], (2, 3)),
        # The record stamped T0 + 6000 ms is at offset 6; 6.5 s finds the one after it.
        "datetime": (["--to-datetime", _iso_utc(T0_MS + 6500)], (7, 7)),
        "datetime-offset": (["--to-datetime", _iso_utc(T0_MS + 3000, "+02:00")], (3, 3)),
        "datetime-ms": (["--to-datetime", str(T0_MS + 3000)], (3, 3)),
        "datetime-after-all": (["--to-datetime", after_all], (10, 10)),
        "one-partition": (["--to-earliest", "--topic", "timed:1"], (4, 0)),
    }
    for case in cases:
        await commit(broker, case, {("timed", 0): 4, ("timed", 1): 7})
    limiter = trio.CapacityLimiter(COMMANDS_AT_ONCE)

    async def reset(case: str, options: list[str]) -> Result:
        async with limiter:
            return await cli.ok("group", "reset-offsets", case, *options, "--execute")

    results = await concurrently(*(reset(case, options) for case, (options, _) in cases.items()))
    for case, result in zip(cases, results, strict=True):
        assert result.stderr.endswith(f"of group {case!r}\n"), result.stderr
        expected = dict(zip([("timed", 0), ("timed", 1)], cases[case][1], strict=True))
        assert await committed(broker, case) == expected, case

    executed = await cli.ok(
        "group", "reset-offsets", "stopped", "--to-offset", "6", "--execute", "--format", "json"
    )
    assert json.loads(executed.stdout)["executed"] is True
    assert await committed(broker, "stopped") == {("timed", 0): 6, ("timed", 1): 6}


def _iso_utc(timestamp_ms: int, zone: str = "+00:00") -> str:
    """`timestamp_ms` as ISO 8601 in the time zone `zone` (a fixed UTC offset)."""
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])) * sign
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone(offset)).isoformat()


async def test_reset_offsets_of_a_new_group_needs_topics(cli: Cli, broker: RunningBroker) -> None:
    await create_topic(broker, "fresh", 2)
    await produce(broker, "fresh", {0: 4, 1: 2}, now_ms)
    unknown = await cli("group", "reset-offsets", "newcomers", "--to-latest", "--execute")
    assert unknown.status == 1
    assert unknown.error_line == "tidelog: error: group 'newcomers' does not exist"
    # Naming the topic gives a new group its starting offsets (every partition).
    await cli.ok(
        "group", "reset-offsets", "newcomers", "--topic", "fresh", "--to-latest", "--execute"
    )
    assert await committed(broker, "newcomers") == {("fresh", 0): 4, ("fresh", 1): 2}

    missing_topic, missing_partition, shift_without_commit = await concurrently(
        cli("group", "reset-offsets", "newcomers", "--topic", "absent", "--to-earliest"),
        cli("group", "reset-offsets", "newcomers", "--topic", "fresh:5", "--to-earliest"),
        cli("group", "reset-offsets", "others", "--topic", "fresh", "--shift-by", "1"),
    )
    assert missing_topic.error_line == "tidelog: error: topic 'absent' does not exist"
    assert missing_partition.error_line == (
        "tidelog: error: topic 'fresh' has no partition 5 (it has 2)"
    )
    assert shift_without_commit.error_line == (
        "tidelog: error: cannot shift fresh:0: it has no committed offset"
    )


# --- list, delete, errors ----------------------------------------------------------------


async def test_group_list_and_delete(cli: Cli, broker: RunningBroker) -> None:
    await create_topic(broker, "kept", 1)
    await commit(broker, "first", {("kept", 0): 0})
    await commit(broker, "second", {("kept", 0): 0})

    listed, listed_json = await concurrently(
        cli.ok("group", "list"), cli.ok("group", "list", "--format", "json")
    )
    assert listed.lines == ["first", "second"]
    assert json.loads(listed_json.stdout) == [
        {"group_id": "first", "state": "Empty", "protocol_type": ""},
        {"group_id": "second", "state": "Empty", "protocol_type": ""},
    ]

    deleted = await cli.ok("group", "delete", "first")
    assert deleted.stderr == "tidelog: deleted group 'first'\n"
    after, again = await concurrently(cli.ok("group", "list"), cli("group", "delete", "first"))
    assert after.lines == ["second"]
    assert again.status == 1
    assert again.error_line == "tidelog: error: group 'first' does not exist"
    assert await committed(broker, "first") == {}
    if_exists = await cli.ok("group", "delete", "first", "second", "--if-exists")
    assert if_exists.stderr == (
        "tidelog: group 'first' does not exist\ntidelog: deleted group 'second'\n"
    )
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        assert await admin.list_groups() == []
        with pytest.raises(GroupIdNotFoundError):
            await admin.describe_groups(["second"])


async def test_errors_for_an_unknown_group_and_bad_options(cli: Cli, broker: RunningBroker) -> None:
    described, reset, deleted, bad_time, bad_topic, no_target = await concurrently(
        cli("group", "describe", "ghosts"),
        cli("group", "reset-offsets", "ghosts", "--to-earliest"),
        cli("group", "delete", "ghosts"),
        cli("group", "reset-offsets", "ghosts", "--to-datetime", "yesterday"),
        cli("group", "reset-offsets", "ghosts", "--to-earliest", "--topic", "t:x"),
        cli("group", "reset-offsets", "ghosts"),
    )
    for result in (described, reset, deleted):
        assert result.status == 1
        assert result.error_line == "tidelog: error: group 'ghosts' does not exist"
    for result in (bad_time, bad_topic, no_target):
        assert result.status == 2
    assert "expected an ISO 8601 date/time" in bad_time.stderr
    assert "expected partition numbers" in bad_topic.stderr
    assert "one of the arguments --to-earliest" in no_target.stderr
