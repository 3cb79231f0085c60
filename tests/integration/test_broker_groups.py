"""Consumer groups with confluent-kafka against the broker: join, consume, commit, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import confluent_kafka
import trio

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tidelog.client.protocol.errors import ErrorCode

CLIENT_TIMEOUT_S = 30
POLLS_MAX = 300


def group_broker_config(data_dir: Path, **overrides: Any) -> Any:
    """Fast groups for tests: no initial rebalance delay, few offsets partitions."""
    settings: dict[str, Any] = {
        "group_initial_rebalance_delay_ms": 0,
        "offsets_topic_num_partitions": 4,
        "num_partitions": 3,
    }
    return local_config(data_dir, **{**settings, **overrides})


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "linger.ms": 5}
    )
    for i in range(count):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % partitions)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0


def consume_in_group(
    bootstrap: str, topic: str, group: str, count: int, *, commit: bool = True
) -> list[tuple[int, int, bytes]]:
    """Subscribe in `group`, read `count` records (partition, offset, value), commit, close."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    seen: list[tuple[int, int, bytes]] = []
    try:
        for _ in range(POLLS_MAX):
            if len(seen) >= count:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            partition, offset, value = message.partition(), message.offset(), message.value()
            assert partition is not None and offset is not None and value is not None
            seen.append((partition, offset, value))
        if commit:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


async def test_a_group_consumes_commits_and_resumes(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    broker: RunningBroker = await start_broker(group_broker_config(tmp_path / "data"))
    with trio.fail_after(3 * CLIENT_TIMEOUT_S):
        await trio.to_thread.run_sync(produce, broker.bootstrap, "grouped", 30, 3)
        first = await trio.to_thread.run_sync(
            consume_in_group, broker.bootstrap, "grouped", "readers", 30
        )
        await trio.to_thread.run_sync(produce, broker.bootstrap, "grouped", 9, 3)
        second = await trio.to_thread.run_sync(
            consume_in_group, broker.bootstrap, "grouped", "readers", 9
        )
    assert sorted(v for _, _, v in first) == sorted(b"v%d" % i for i in range(30))
    # The second member starts where the group's commit left off: only the new records.
    assert sorted(v for _, _, v in second) == sorted(b"v%d" % i for i in range(9))
    assert all(offset >= 10 for _, offset, _ in second)


async def test_shutdown_answers_a_parked_join_with_not_coordinator(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    # A long initial rebalance delay parks the first JoinGroup; shutdown must not wait it out.
    broker = await start_broker(
        group_broker_config(tmp_path / "data", group_initial_rebalance_delay_ms=600_000)
    )
    async with await broker.client() as client:
        found = await client.request(10, 3, {"key": "parked", "key_type": 0})
        assert found["error_code"] == 0
        await client.send(
            11,
            3,
            {"group_id": "parked", "session_timeout_ms": 10_000,
             "rebalance_timeout_ms": 600_000, "member_id": "", "protocol_type": "consumer",
             "protocols": [{"name": "range", "metadata": b""}]},
        )  # fmt: skip
        with trio.fail_after(CLIENT_TIMEOUT_S):
            await wait_until_parked(broker)
            broker.broker.request_shutdown()
            _, response = await client.receive(11, 3)
            await broker.stopped.wait()
    assert response["error_code"] == ErrorCode.NOT_COORDINATOR


async def wait_until_parked(broker: RunningBroker) -> None:
    """The join is parked once ListGroups shows the group (bounded polling: nothing
    announces it)."""
    async with await broker.client() as observer:
        for _ in range(1000):
            listed = await observer.request(16, 4, {"states_filter": []})
            if any(g["group_id"] == "parked" for g in listed["groups"]):
                return
            await trio.sleep(0.01)
    raise AssertionError("the JoinGroup never reached the coordinator")
