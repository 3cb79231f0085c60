"""The metadata cache, and the cluster service that refreshes it and owns connections."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest
import trio
import trio.testing

from tests.unit.client_fake_broker import FakeBroker
from tidelog.client.cluster import Cluster
from tidelog.client.config import CommonConfig
from tidelog.client.errors import KafkaConnectionError
from tidelog.client.metadata import ClusterMetadata
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition


def response(leader_epoch: int, leader: int = 1, error: int = 0) -> Message:
    return {
        "brokers": [
            {"node_id": 1, "host": "a", "port": 1, "rack": None},
            {"node_id": 2, "host": "b", "port": 2, "rack": "r2"},
        ],
        "cluster_id": "c",
        "controller_id": 2,
        "topics": [
            {
                "error_code": error,
                "name": "t",
                "topic_id": uuid.UUID(int=5),
                "is_internal": False,
                "partitions": [
                    {
                        "error_code": 0,
                        "partition_index": 0,
                        "leader_id": leader,
                        "leader_epoch": leader_epoch,
                        "replica_nodes": [1, 2],
                        "isr_nodes": [1],
                        "offline_replicas": [],
                    },
                    {
                        "error_code": ErrorCode.LEADER_NOT_AVAILABLE,
                        "partition_index": 1,
                        "leader_id": -1,
                        "leader_epoch": 0,
                        "replica_nodes": [2],
                        "isr_nodes": [],
                        "offline_replicas": [2],
                    },
                ],
            },
            {"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": "gone", "partitions": []},
        ],
    }


def test_update_describes_brokers_topics_and_leaders() -> None:
    metadata = ClusterMetadata()
    metadata.update(response(leader_epoch=3), now=1.0, requested=["t", "gone", "silent"])
    assert metadata.controller_id == 2 and metadata.cluster_id == "c"
    assert metadata.brokers[2].rack == "r2"
    assert metadata.leader_for(TopicPartition("t", 0)) == 1
    assert metadata.leader_for(TopicPartition("t", 1)) is None
    assert metadata.leader_for(TopicPartition("t", 9)) is None
    assert metadata.partition_count("t") == 2
    assert metadata.available_partitions("t") == [0]
    assert metadata.topic_errors == {
        "gone": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        "silent": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert metadata.version == 1 and metadata.updated_at == 1.0


def test_older_leader_epochs_do_not_replace_newer_ones() -> None:
    metadata = ClusterMetadata()
    metadata.update(response(leader_epoch=5, leader=2), now=1.0, requested=["t"])
    metadata.update(response(leader_epoch=4, leader=1), now=2.0, requested=["t"])
    assert metadata.leader_for(TopicPartition("t", 0)) == 2
    metadata.update(response(leader_epoch=6, leader=1), now=3.0, requested=["t"])
    assert metadata.leader_for(TopicPartition("t", 0)) == 1
    assert metadata.leader_epoch(TopicPartition("t", 0)) == 6


def test_invalidated_leader_waits_for_the_next_update() -> None:
    metadata = ClusterMetadata()
    metadata.update(response(leader_epoch=1), now=1.0, requested=["t"])
    metadata.invalidate_leader(TopicPartition("t", 0))
    assert metadata.leader_for(TopicPartition("t", 0)) is None
    metadata.update(response(leader_epoch=1), now=2.0, requested=["t"])
    assert metadata.leader_for(TopicPartition("t", 0)) == 1


def test_all_topics_request_forgets_deleted_topics() -> None:
    metadata = ClusterMetadata()
    metadata.update(response(leader_epoch=1), now=1.0, requested=None)
    assert set(metadata.topics) == {"t"}
    empty = response(leader_epoch=1)
    empty["topics"] = []
    metadata.update(empty, now=2.0, requested=None)
    assert metadata.topics == {}


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBroker:
    broker = FakeBroker(topics={"t": 2})
    await nursery.start(broker.serve)
    return broker


def metadata_requests(fake: FakeBroker) -> int:
    return sum(1 for key, _, _ in fake.requests if key == 3)


async def test_cluster_refreshes_periodically_and_on_request(
    fake: FakeBroker, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = CommonConfig(
        bootstrap_servers="fake:9092", metadata_max_age_ms=60_000, retry_backoff_ms=500
    )
    cluster = Cluster(config, connector=fake.connect, rng=random.Random(1))
    await nursery.start(cluster.run)
    cluster.add_topics(["t"])
    await cluster.refresh()
    assert cluster.metadata.partition_count("t") == 2
    first = metadata_requests(fake)
    # Many requests for an update within the backoff become one refresh.
    for _ in range(10):
        cluster.request_update()
    await trio.sleep(0.6)
    assert metadata_requests(fake) == first + 1
    # Nothing asks: the next refresh comes when the metadata is metadata_max_age_ms old.
    await trio.sleep(59)
    assert metadata_requests(fake) == first + 1
    await trio.sleep(2)
    assert metadata_requests(fake) == first + 2
    # The bootstrap connection was retired once the real broker id was known.
    assert fake.connections == 2
    assert cluster.live_connection(-1) is None and cluster.live_connection(0) is not None


async def test_reconnects_back_off(
    fake: FakeBroker, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = CommonConfig(
        bootstrap_servers="fake:9092", reconnect_backoff_ms=1_000, reconnect_backoff_max_ms=4_000
    )
    cluster = Cluster(config, connector=fake.connect, rng=random.Random(1))
    await nursery.start(cluster.run)
    await cluster.refresh()
    fake.refuse_connections = True
    await fake.drop_connections()
    await trio.testing.wait_all_tasks_blocked()
    attempts_at = []
    for _ in range(4):
        with pytest.raises(KafkaConnectionError):
            await cluster.connection(0)
        attempts_at.append(trio.current_time())
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    # The metadata refresher also retries node 0 and shares its backoff, so a gap can
    # hold two backoff waits; never less than one, never more than two at the cap.
    assert all(gap >= 0.8 for gap in gaps)
    assert gaps[-1] >= 0.8 * 4.0
    assert all(gap <= 2 * 1.2 * 4.0 for gap in gaps)
    fake.refuse_connections = False
    await trio.sleep(5)
    assert (await cluster.connection(0)).node_id == 0
