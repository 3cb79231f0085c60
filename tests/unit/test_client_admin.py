"""Admin client behaviour against the scripted in-memory broker."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from tests.unit.client_fake_broker import FakeBroker
from tidelog.client.admin import Admin, ConfigResource
from tidelog.client.admin_cluster import ReplicaState
from tidelog.client.errors import (
    ClusterAuthorizationFailedError,
    IncompatibleBrokerError,
    InvalidPartitionsError,
    KafkaTimeoutError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.metadata import BrokerInfo
from tidelog.client.protocol.configs import ConfigResourceType, ConfigSource
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, encode_batch
from tidelog.client.structs import NewTopic, TopicPartition

TIMEOUT_S = 10


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBroker:
    broker = FakeBroker(topics={"existing": 2})
    await nursery.start(broker.serve)
    return broker


def admin(fake: FakeBroker, **config: Any) -> Admin:
    return Admin(
        bootstrap_servers=f"{fake.host}:{fake.port}",
        connector=fake.connect,
        rng=random.Random(3),
        retry_backoff_ms=1,
        **config,
    )


def requests_of(fake: FakeBroker, api_key: int) -> list[dict[str, object]]:
    return [body for key, _, body in fake.requests if key == api_key]


async def test_create_topics_with_settings_and_per_topic_errors(fake: FakeBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            await a.create_topics(
                [
                    NewTopic("new", num_partitions=4, configs={"retention.ms": "1000"}),
                    NewTopic("assigned", replica_assignment={0: [0], 1: [0]}),
                ]
            )
            with pytest.raises(TopicAlreadyExistsError, match="existing"):
                await a.create_topics([NewTopic("existing"), NewTopic("also-new")])
            await a.create_topics([NewTopic("dry-run", num_partitions=1)], validate_only=True)
            assert await a.list_topics() == ["also-new", "assigned", "existing", "new"]
    assert fake.topics["new"] == 4 and fake.topic_configs["new"] == {"retention.ms": "1000"}
    (first, *_) = requests_of(fake, 19)
    assigned = first["topics"][1]  # type: ignore[index]
    assert (assigned["num_partitions"], assigned["assignments"]) == (
        -1,
        [{"partition_index": 0, "broker_ids": [0]}, {"partition_index": 1, "broker_ids": [0]}],
    )


async def test_not_controller_is_retried_and_other_errors_are_not(fake: FakeBroker) -> None:
    fake.admin_faults.extend([ErrorCode.NOT_CONTROLLER, ErrorCode.NOT_CONTROLLER])
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            await a.create_topics([NewTopic("eventually", num_partitions=1)])
            fake.admin_faults.append(ErrorCode.POLICY_VIOLATION)
            with pytest.raises(PolicyViolationError):
                await a.create_topics([NewTopic("refused")])
    assert len(requests_of(fake, 19)) == 4
    assert "eventually" in fake.topics and "refused" not in fake.topics


async def test_retries_end_at_the_api_timeout(
    fake: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    fake.admin_faults.extend([ErrorCode.NOT_CONTROLLER] * 10_000)
    async with admin(fake, default_api_timeout_ms=3_000) as a:
        started = trio.current_time()
        with pytest.raises(KafkaTimeoutError, match="CreateTopics"):
            await a.create_topics([NewTopic("never")])
        assert trio.current_time() - started <= 3.0 + 1e-6


async def test_delete_topics_and_partitions(fake: FakeBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            await a.create_partitions({"existing": 5})
            with pytest.raises(InvalidPartitionsError):
                await a.create_partitions({"existing": 3})
            described = await a.describe_topics(["existing"])
            assert sorted(described["existing"].partitions) == [0, 1, 2, 3, 4]
            await a.delete_topics(["existing"])
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.delete_topics(["existing"])
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.describe_topics(["existing"])


async def test_configs_describe_set_and_delete(fake: FakeBroker) -> None:
    resource = ConfigResource(ConfigResourceType.TOPIC, "existing")
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            before = (await a.describe_configs([resource]))[resource]
            await a.alter_configs({resource: {"retention.ms": "60000"}})
            changed = (await a.describe_configs([resource]))[resource]
            await a.alter_configs({resource: {"retention.ms": None}})
            restored = (await a.describe_configs([resource]))[resource]
            missing = ConfigResource(ConfigResourceType.TOPIC, "missing")
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.describe_configs([missing])
    assert before["retention.ms"].is_default and before["retention.ms"].value == "604800000"
    assert changed["retention.ms"].value == "60000"
    assert changed["retention.ms"].source is ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert restored["retention.ms"] == before["retention.ms"]


async def test_offsets_records_and_cluster(fake: FakeBroker) -> None:
    tp = TopicPartition("existing", 1)
    fake.append_batch(tp, encode_batch([RecordInput(b"%d" % i) for i in range(10)]))
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            assert (await a.list_offsets({tp: "latest"}))[tp].offset == 10
            assert await a.delete_records({tp: 4}) == {tp: 4}
            assert (await a.list_offsets({tp: "earliest"}))[tp].offset == 4
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.list_offsets({TopicPartition("existing", 7): "latest"})
            cluster = await a.describe_cluster()
    assert (cluster.cluster_id, cluster.controller_id) == ("fake", 0)
    assert cluster.brokers == [
        BrokerInfo(0, "fake", 9092),
        BrokerInfo(1, "fenced", 9093, fenced=True),
    ]
    assert [(version, body["include_fenced_brokers"]) for key, version, body in fake.requests
            if key == 60] == [(2, True)]  # fmt: skip


async def test_describe_cluster_below_v2_lists_live_brokers_only(fake: FakeBroker) -> None:
    fake.api_versions[60] = (0, 1)
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            cluster = await a.describe_cluster()
    assert cluster.brokers == [BrokerInfo(0, "fake", 9092, fenced=False)]


async def test_describe_quorum_retries_a_moving_leader(fake: FakeBroker) -> None:
    fake.admin_faults.append(ErrorCode.NOT_LEADER_OR_FOLLOWER)
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            quorum = await a.describe_quorum()
    assert (quorum.leader_id, quorum.leader_epoch, quorum.high_watermark) == (0, 3, 120)
    assert quorum.voters == [ReplicaState(0, 120, 5, -1), ReplicaState(1, 118, -1, -1)]
    assert quorum.observers == [ReplicaState(2, 125, -1, -1)]
    assert [quorum.lag(r) for r in (*quorum.voters, *quorum.observers)] == [0, 2, 0]
    asked = requests_of(fake, 55)
    assert len(asked) == 2
    assert asked[0] == {
        "topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]
    }


async def test_describe_quorum_errors(fake: FakeBroker) -> None:
    fake.admin_faults.append(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    with trio.fail_after(TIMEOUT_S):
        async with admin(fake) as a:
            with pytest.raises(ClusterAuthorizationFailedError, match="__cluster_metadata-0"):
                await a.describe_quorum()
        del fake.api_versions[55]
        async with admin(fake) as a:
            with pytest.raises(IncompatibleBrokerError, match="DescribeQuorum"):
                await a.describe_quorum()
    assert len(requests_of(fake, 55)) == 1
