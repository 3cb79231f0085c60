"""The broker's periodic services: retention and the flush policy, on a virtual clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.runner import run_inline
from tidelog.broker.server import Broker
from tidelog.client.protocol.records import RecordInput, encode_batch
from tidelog.storage.filesystem import MemoryFileSystem

START_MS = 1_700_000_000_000


@dataclass
class FakeWallClock:
    now: int = START_MS

    def __call__(self) -> int:
        return self.now


@dataclass
class Running:
    broker: Broker
    wall: FakeWallClock


@pytest.fixture
async def running(nursery: trio.Nursery) -> AsyncIterator[Running]:
    wall = FakeWallClock()
    config = BrokerConfig(
        listeners=(ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),),
        data_dir="/data",
        log_retention_check_interval_ms=60_000,
    )
    broker = Broker(
        config, network=MemoryNetwork(), fs=MemoryFileSystem(seed=1), now_ms=wall,
        random=random.Random(1), run_blocking=run_inline,
    )  # fmt: skip
    await nursery.start(broker.serve)
    yield Running(broker, wall)
    broker.request_shutdown()


def _batch(timestamp_ms: int) -> bytes:
    return encode_batch([RecordInput(b"value", key=b"k", timestamp_ms=timestamp_ms)])


async def test_retention_ticker_deletes_expired_segments(
    running: Running, autojump_clock: trio.testing.MockClock
) -> None:
    broker, wall = running.broker, running.wall
    await broker.topics.create_topic("old", num_partitions=1, configs={"retention.ms": "10000"})
    await broker.topics.create_topic("kept", num_partitions=1)
    for topic in ("old", "kept"):
        log = broker.replicas.log(topic, 0)
        log.append(_batch(wall.now), leader_epoch=0)
        log.roll()
        log.append(_batch(wall.now), leader_epoch=0)

    wall.now += 5_000
    assert broker.enforce_retention() == 0

    wall.now += 10_000
    await trio.sleep(61)  # virtual time: one retention tick
    old, kept = broker.replicas.log("old", 0), broker.replicas.log("kept", 0)
    assert old.log_start_offset == old.log_end_offset == 2
    assert kept.log_start_offset == 0 and kept.log_end_offset == 2


async def test_flush_due_logs_follows_flush_ms(running: Running) -> None:
    broker, wall = running.broker, running.wall
    await broker.topics.create_topic("t", num_partitions=1, configs={"flush.ms": "2000"})
    log = broker.replicas.log("t", 0)
    log.append(_batch(wall.now), leader_epoch=0)
    assert log.unflushed_messages == 1
    wall.now += 1_999
    assert await broker.flush_due_logs() == 0
    wall.now += 1
    assert await broker.flush_due_logs() == 1
    assert log.unflushed_messages == 0
    assert log.recovery_point == log.log_end_offset == 1


async def test_flush_due_logs_follows_flush_messages(running: Running) -> None:
    broker, wall = running.broker, running.wall
    await broker.topics.create_topic("t", num_partitions=1, configs={"flush.messages": "2"})
    log = broker.replicas.log("t", 0)
    log.append(_batch(wall.now), leader_epoch=0)
    assert await broker.flush_due_logs() == 0
    log.append(_batch(wall.now), leader_epoch=0)
    assert await broker.flush_due_logs() == 1
    assert log.unflushed_messages == 0
    assert log.recovery_point == 2
