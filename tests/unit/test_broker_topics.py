"""Topic management: Kafka's validation rules, durable metadata, logs opened and deleted."""

from __future__ import annotations

import random

import pytest

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.topics import TopicError, validate_topic_name
from tidelog.broker.node_state import NodeState, open_node_state
from tidelog.broker.topic_store import MetadataStoreError, load_cluster_identity
from tidelog.client.protocol.errors import ErrorCode
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import MemoryFileSystem
from tidelog.storage.log_directory import LogDirectory

DATA = "/data"


def open_manager(fs: MemoryFileSystem, seed: int = 0, **overrides: object) -> NodeState:
    config = BrokerConfig(data_dir=DATA, **overrides)  # type: ignore[arg-type]
    return open_node_state(config, fs, random.Random(seed), lambda: 0)


def error_of(call: object) -> ErrorCode:
    with pytest.raises(TopicError) as info:
        call()  # type: ignore[operator]
    return info.value.error_code


def test_the_node_registers_itself_unfenced_as_kafkas_controller_would() -> None:
    node = open_manager(MemoryFileSystem(), node_id=3, rack="r1")
    me = node.publisher.image.broker(3)
    assert me is not None and not me.fenced and me.rack == "r1"
    assert me.broker_epoch == 0  # the offset of its RegisterBrokerRecord
    assert me.incarnation_id == node.incarnation_id and node.incarnation_id.version == 4


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 249, "__consumer_offsets"])
def test_legal_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "a/b", "a b", "é", "a\0"])
def test_illegal_topic_names(name: str) -> None:
    assert error_of(lambda: validate_topic_name(name)) == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_create_validates_like_kafka() -> None:
    node = open_manager(MemoryFileSystem(), num_partitions=4)
    topic = node.topics.create_topic("events")
    assert len(topic.partitions) == 4  # -1 takes num_partitions
    assert error_of(lambda: node.topics.create_topic("events")) == ErrorCode.TOPIC_ALREADY_EXISTS
    # '.' and '_' collide in metric names.
    node.topics.create_topic("a.b")
    assert error_of(lambda: node.topics.create_topic("a_b")) == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert error_of(lambda: node.topics.create_topic("p", num_partitions=0)) == (
        ErrorCode.INVALID_PARTITIONS
    )
    assert error_of(lambda: node.topics.create_topic("r", replication_factor=2)) == (
        ErrorCode.INVALID_REPLICATION_FACTOR
    )
    for configs in ({"no.such.config": "1"}, {"retention.ms": "soon"},
                    {"cleanup.policy": "shred"}, {"segment.bytes": "1"}):  # fmt: skip
        assert error_of(lambda c=configs: node.topics.create_topic("c", configs=c)) == (
            ErrorCode.INVALID_CONFIG
        )
    assert node.topics.create_topic("v", validate_only=True).name == "v"
    assert node.replicas.log("v", 0) is None
    assert [t.name for t in node.publisher.image.topics()] == ["a.b", "events"]


def test_topics_and_their_configs_survive_reopen() -> None:
    fs = MemoryFileSystem()
    node = open_manager(fs)
    created = node.topics.create_topic(
        "orders", num_partitions=2, configs={"retention.ms": "60000", "flush.ms": None}
    )
    node.close()

    reopened = open_manager(fs, seed=99)
    topic = reopened.publisher.image.topic("orders")
    assert topic is not None
    assert topic.topic_id == created.topic_id
    assert dict(topic.configs) == {"retention.ms": "60000"}
    log = reopened.replicas.log("orders", 1)
    assert log is not None and log.config.retention_ms == 60000
    assert reopened.publisher.image.topic_by_id(created.topic_id) is topic


def test_created_topic_survives_a_crash() -> None:
    fs = MemoryFileSystem(seed=3)
    node = open_manager(fs)
    created = node.topics.create_topic("durable", num_partitions=3)
    fs.crash()
    reopened = open_manager(fs)
    topic = reopened.publisher.image.topic("durable")
    assert topic is not None and topic.topic_id == created.topic_id
    assert all(reopened.replicas.log("durable", p) is not None for p in range(3))


def test_delete_then_recreate_starts_empty() -> None:
    fs = MemoryFileSystem()
    node = open_manager(fs)
    first = node.topics.create_topic("gone")
    node.topics.delete_topic("gone")
    assert node.replicas.log("gone", 0) is None
    assert (
        error_of(lambda: node.topics.delete_topic("gone")) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )
    second = node.topics.create_topic("gone")
    assert second.topic_id != first.topic_id
    node.close()
    assert open_manager(fs).publisher.image.topic("gone").topic_id == second.topic_id  # type: ignore[union-attr]


def test_stray_partition_logs_are_deleted_at_open() -> None:
    fs = MemoryFileSystem()
    open_manager(fs).close()
    # A log left behind by a deletion cut short: no topic file names it.
    directory = LogDirectory.open(DATA, fs, lambda: 0)
    directory.get_or_create("stray", 0, LogConfig())
    directory.close()
    node = open_manager(fs)
    assert node.replicas.log("stray", 0) is None
    assert not fs.exists(f"{DATA}/stray-0")


def test_cluster_identity_is_generated_once_and_checked() -> None:
    fs = MemoryFileSystem()
    rng = random.Random(1)
    config = BrokerConfig(data_dir=DATA, node_id=2)
    cluster_id = load_cluster_identity(fs, DATA, config, rng)
    assert len(cluster_id) == 22
    assert load_cluster_identity(fs, DATA, config, random.Random(2)) == cluster_id
    with pytest.raises(MetadataStoreError, match="node 2"):
        load_cluster_identity(fs, DATA, BrokerConfig(data_dir=DATA, node_id=3), rng)
    with pytest.raises(MetadataStoreError, match="cluster"):
        load_cluster_identity(fs, DATA, BrokerConfig(data_dir=DATA, node_id=2,
                                                     cluster_id="other"), rng)  # fmt: skip
