"""Topic management on a one-node cluster: Kafka's validation rules, topics durable in the
metadata log, logs opened and deleted, an older data dir's topic files migrated. Each node
runs for real (its quorum of one, its controller) over MemoryNetwork and MemoryFileSystem
on a virtual clock."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.controller.topics import TopicError, validate_topic_name
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.meta_properties import MetadataStoreError, load_cluster_identity
from tidelog.broker.runner import run_inline
from tidelog.broker.server import Broker
from tidelog.client.protocol.errors import ErrorCode
from tidelog.storage.checkpoint import write_atomic
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import MemoryFileSystem
from tidelog.storage.log_directory import LogDirectory

DATA = "/data"


def make_node(fs: MemoryFileSystem, seed: int = 0, **overrides: Any) -> Broker:
    config = BrokerConfig(
        data_dir=DATA,
        listeners=(ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),),
        **overrides,
    )
    return Broker(
        config,
        network=MemoryNetwork(),
        fs=fs,
        now_ms=lambda: 0,
        random=random.Random(seed),
        run_blocking=run_inline,
    )


@asynccontextmanager
async def running(fs: MemoryFileSystem, seed: int = 0, **overrides: Any) -> AsyncIterator[Broker]:
    """A node, serving until the block ends (then shut down cleanly)."""
    node = make_node(fs, seed, **overrides)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        yield node
        node.request_shutdown()


async def error_of(call: Any) -> ErrorCode:
    with pytest.raises(TopicError) as info:
        await call()
    return info.value.error_code


async def test_the_node_registers_with_its_own_controller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(MemoryFileSystem(), node_id=3, rack="r1") as node:
        image = node.image
        me = image.broker(3)
        assert me is not None and not me.fenced and me.rack == "r1"
        assert image.controller_id == 3
        # Kafka's broker epoch: the metadata offset of the registration.
        assert me.broker_epoch == node.lifecycle.broker_epoch
        assert 0 < me.broker_epoch < image.offset
        assert me.incarnation_id == node.lifecycle.incarnation_id
        assert me.incarnation_id.version == 4


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 249, "__consumer_offsets"])
def test_legal_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "a/b", "a b", "é", "a\0"])
async def test_illegal_topic_names(name: str) -> None:
    async def validate() -> None:
        validate_topic_name(name)

    assert await error_of(validate) == ErrorCode.INVALID_TOPIC_EXCEPTION


async def test_create_validates_like_kafka(autojump_clock: trio.testing.MockClock) -> None:
    async with running(MemoryFileSystem(), num_partitions=4) as node:
        topics = node.topics
        topic = await topics.create_topic("events")
        assert len(topic.partitions) == 4  # -1 takes num_partitions
        assert await error_of(lambda: topics.create_topic("events")) == (
            ErrorCode.TOPIC_ALREADY_EXISTS
        )
        # '.' and '_' collide in metric names.
        await topics.create_topic("a.b")
        assert await error_of(lambda: topics.create_topic("a_b")) == (
            ErrorCode.INVALID_TOPIC_EXCEPTION
        )
        assert await error_of(lambda: topics.create_topic("p", num_partitions=0)) == (
            ErrorCode.INVALID_PARTITIONS
        )
        assert await error_of(lambda: topics.create_topic("r", replication_factor=2)) == (
            ErrorCode.INVALID_REPLICATION_FACTOR
        )
        assert await error_of(lambda: topics.create_topic("__cluster_metadata")) == (
            ErrorCode.INVALID_TOPIC_EXCEPTION
        )
        for configs in ({"no.such.config": "1"}, {"retention.ms": "soon"},
                        {"cleanup.policy": "shred"}, {"segment.bytes": "1"}):  # fmt: skip
            assert await error_of(lambda c=configs: topics.create_topic("c", configs=c)) == (
                ErrorCode.INVALID_CONFIG
            )
        assert (await topics.create_topic("v", validate_only=True)).name == "v"
        assert node.replicas.log("v", 0) is None
        assert [t.name for t in node.image.topics()] == ["a.b", "events"]


async def test_topics_and_their_configs_survive_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = MemoryFileSystem()
    async with running(fs) as node:
        created = await node.topics.create_topic(
            "orders", num_partitions=2, configs={"retention.ms": "60000", "flush.ms": None}
        )
    async with running(fs, seed=99) as reopened:
        topic = reopened.image.topic("orders")
        assert topic is not None
        assert topic.topic_id == created.topic_id
        assert dict(topic.configs) == {"retention.ms": "60000"}
        # The same assignment and leader; the shutdown fenced the node (no leader) and its
        # return elected it again, each in a new leader epoch.
        for before, after in zip(created.partitions, topic.partitions, strict=True):
            assert (after.replicas, after.isr, after.leader_id) == (
                before.replicas,
                before.isr,
                before.leader_id,
            )
            assert after.leader_epoch == before.leader_epoch + 2
        log = reopened.replicas.log("orders", 1)
        assert log is not None and log.config.retention_ms == 60000


async def test_created_topic_survives_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    fs = MemoryFileSystem(seed=3)
    node = make_node(fs)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        created = await node.topics.create_topic("durable", num_partitions=3)
        nursery.cancel_scope.cancel()  # no clean shutdown
    fs.crash()
    async with running(fs) as reopened:
        topic = reopened.image.topic("durable")
        assert topic is not None and topic.topic_id == created.topic_id
        assert all(reopened.replicas.log("durable", p) is not None for p in range(3))


async def test_delete_then_recreate_starts_empty(autojump_clock: trio.testing.MockClock) -> None:
    fs = MemoryFileSystem()
    async with running(fs) as node:
        first = await node.topics.create_topic("gone")
        await node.topics.delete_topic("gone")
        assert node.replicas.log("gone", 0) is None
        assert await error_of(lambda: node.topics.delete_topic("gone")) == (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        )
        second = await node.topics.create_topic("gone")
        assert second.topic_id != first.topic_id
    async with running(fs) as reopened:
        topic = reopened.image.topic("gone")
        assert topic is not None and topic.topic_id == second.topic_id


async def test_stray_partition_logs_are_deleted_at_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = MemoryFileSystem()
    async with running(fs):
        pass
    # A log left behind by a deletion cut short: no topic of the metadata names it.
    directory = LogDirectory.open(DATA, fs, lambda: 0, reserved=frozenset({"__cluster_metadata-0"}))
    directory.get_or_create("stray", 0, LogConfig())
    directory.close()
    async with running(fs) as node:
        assert node.replicas.log("stray", 0) is None
        assert not fs.exists(f"{DATA}/stray-0")
        assert fs.exists(f"{DATA}/__cluster_metadata-0")


async def test_topic_files_of_an_older_data_dir_are_migrated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = MemoryFileSystem()
    async with running(fs) as node:
        cluster_id = node.image.cluster_id
    # What a single node wrote before the metadata log: one JSON file per topic, and a log.
    topic_id = uuid.UUID(int=random.Random(5).getrandbits(128), version=4)
    document = {
        "version": 1, "name": "legacy", "topic_id": str(topic_id), "is_internal": False,
        "partitions": [{"replicas": [0]}, {"replicas": [0]}],
        "configs": {"retention.ms": "5000"},
    }  # fmt: skip
    write_atomic(fs, f"{DATA}/__topic.legacy.json", json.dumps(document).encode())
    directory = LogDirectory.open(DATA, fs, lambda: 0, reserved=frozenset({"__cluster_metadata-0"}))
    directory.get_or_create("legacy", 1, LogConfig())
    directory.close()
    async with running(fs) as node:
        assert node.image.cluster_id == cluster_id
        topic = node.image.topic("legacy")
        assert topic is not None and topic.topic_id == topic_id
        assert dict(topic.configs) == {"retention.ms": "5000"}
        assert [p.leader_id for p in topic.partitions] == [0, 0]  # elected on registration
        assert node.replicas.log("legacy", 1) is not None  # its data is kept
        assert not fs.exists(f"{DATA}/__topic.legacy.json")
    async with running(fs) as reopened:
        assert reopened.image.topic("legacy") is not None


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
