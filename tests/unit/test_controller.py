"""The active controller over a real quorum of one (MemoryFileSystem, MemoryNetwork, the
virtual clock): broker registration, heartbeats, sessions, controlled shutdown, producer id
blocks, unregistration. The node's own broker is not started: the tests send the requests
the brokers would, and every change must be in the quorum's image once a call returns."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.controller.controller import PRODUCER_ID_BLOCK_SIZE, QuorumController
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.metadata.image import BrokerNode, MetadataImage
from tidelog.broker.metadata.records import NO_LEADER
from tidelog.broker.node_state import NodeState, open_node_state
from tidelog.broker.runner import run_inline
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.filesystem import MemoryFileSystem

DATA = "/data"
SESSION_TIMEOUT_MS = BrokerConfig().broker_session_timeout_ms


@asynccontextmanager
async def active_controller(**overrides: Any) -> AsyncIterator[NodeState]:
    """Node 0's quorum of one, running and caught up (so its controller is active)."""
    config = BrokerConfig(
        data_dir=DATA,
        listeners=(ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),),
        **overrides,
    )
    node = open_node_state(
        config,
        fs=MemoryFileSystem(),
        network=MemoryNetwork(),
        rng=random.Random(0),
        wall_clock_ms=lambda: 0,
        run_blocking=run_inline,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.transport.serve)
            await nursery.start(node.channel_transport.serve)
            await nursery.start(node.quorum.serve)
            await node.quorum.caught_up.wait()
            assert node.quorum.is_active
            yield node
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def controller_of(node: NodeState) -> QuorumController:
    assert node.controller is not None
    return node.controller


def incarnation(n: int) -> uuid.UUID:
    return uuid.UUID(int=n, version=4)


def registration(broker_id: int, incarnation_id: uuid.UUID, cluster_id: str) -> Message:
    """A BrokerRegistration request body, as `BrokerLifecycle.register` builds it."""
    return {
        "broker_id": broker_id,
        "cluster_id": cluster_id,
        "incarnation_id": incarnation_id,
        "listeners": [
            {"name": "PLAINTEXT", "host": f"b{broker_id}", "port": 9092, "security_protocol": 0}
        ],
        "features": [],
        "rack": None,
        "is_migrating_zk_broker": False,
        "log_dirs": [],
        "previous_broker_epoch": -1,
    }


def heartbeat(broker_id: int, broker_epoch: int, offset: int, **fields: Any) -> Message:
    """A BrokerHeartbeat request body, as `BrokerLifecycle.heartbeat` builds it."""
    request: Message = {
        "broker_id": broker_id,
        "broker_epoch": broker_epoch,
        "current_metadata_offset": offset,
        "want_fence": False,
        "want_shut_down": False,
        "offline_log_dirs": [],
    }
    request.update(fields)
    return request


async def register(node: NodeState, broker_id: int, incarnation_id: uuid.UUID) -> int:
    """Register; the broker epoch."""
    answer = await controller_of(node).broker_registration(
        registration(broker_id, incarnation_id, node.quorum.cluster_id)
    )
    assert answer["error_code"] == ErrorCode.NONE
    epoch: int = answer["broker_epoch"]
    return epoch


async def live_broker(node: NodeState, broker_id: int) -> int:
    """Register and unfence `broker_id` (incarnation `broker_id`); its broker epoch."""
    epoch = await register(node, broker_id, incarnation(broker_id))
    answer = await controller_of(node).heartbeat(
        heartbeat(broker_id, epoch, node.quorum.image.offset)
    )
    assert answer["error_code"] == ErrorCode.NONE and not answer["is_fenced"]
    return epoch


def broker(image: MetadataImage, broker_id: int) -> BrokerNode:
    node = image.broker(broker_id)
    assert node is not None
    return node


def leaders(image: MetadataImage, topic: str) -> list[tuple[int, tuple[int, ...]]]:
    metadata = image.topic(topic)
    assert metadata is not None
    return [(p.leader_id, p.isr) for p in metadata.partitions]


# -- registration


async def test_registration_answers_the_offset_of_its_record_as_broker_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        next_offset = node.quorum.next_offset
        epoch = await register(node, 1, incarnation(1))
        image = node.quorum.image
        assert epoch == next_offset
        assert image.offset == epoch + 1  # the registration is applied
        registered = broker(image, 1)
        assert (registered.broker_epoch, registered.incarnation_id) == (epoch, incarnation(1))
        assert registered.fenced
        assert [e.host for e in registered.endpoints] == ["b1"]


async def test_registration_for_another_cluster_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        answer = await controller_of(node).broker_registration(
            registration(1, incarnation(1), "another-cluster")
        )
        assert answer["error_code"] == ErrorCode.INCONSISTENT_CLUSTER_ID
        assert answer["broker_epoch"] == -1
        assert node.quorum.image.broker(1) is None


async def test_another_incarnation_is_refused_while_the_live_one_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        answer = await controller.broker_registration(
            registration(1, incarnation(99), node.quorum.cluster_id)
        )
        assert answer["error_code"] == ErrorCode.DUPLICATE_BROKER_REGISTRATION
        assert broker(node.quorum.image, 1).broker_epoch == epoch
        # The same incarnation may register again (its registration was lost).
        again = await register(node, 1, incarnation(1))
        assert again > epoch and broker(node.quorum.image, 1).broker_epoch == again


async def test_another_incarnation_replaces_a_broker_whose_session_expired(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        await live_broker(node, 1)
        await trio.sleep(SESSION_TIMEOUT_MS / 1000)
        epoch = await register(node, 1, incarnation(99))
        registered = broker(node.quorum.image, 1)
        assert (registered.broker_epoch, registered.incarnation_id) == (epoch, incarnation(99))


async def test_a_controller_that_has_not_heard_from_a_broker_lets_another_incarnation_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        await live_broker(node, 1)
        # A newly active controller: the broker's session starts afresh, unheard.
        fresh = QuorumController(node.quorum, node.quorum.config, random.Random(1))
        answer = await fresh.broker_registration(
            registration(1, incarnation(99), node.quorum.cluster_id)
        )
        assert answer["error_code"] == ErrorCode.NONE
        assert broker(node.quorum.image, 1).incarnation_id == incarnation(99)


async def test_a_restarted_broker_leaves_its_leaderships_and_isrs_until_it_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A new incarnation may have lost what it had not fsynced: it must not lead with its
    old leader epoch, nor count as in sync, before it has fetched again."""
    async with active_controller() as node:
        controller = controller_of(node)
        await live_broker(node, 1)
        await live_broker(node, 2)
        await controller.create_topic("t", assignments=[[1, 2], [2, 1]])
        before = node.quorum.image.topic("t")
        assert before is not None
        epochs = [p.leader_epoch for p in before.partitions]
        # Broker 1 restarts; a controller that has not heard from it lets it register.
        fresh = QuorumController(node.quorum, node.quorum.config, random.Random(1))
        answer = await fresh.broker_registration(
            registration(1, incarnation(99), node.quorum.cluster_id)
        )
        assert answer["error_code"] == ErrorCode.NONE
        image = node.quorum.image
        assert leaders(image, "t") == [(2, (2,)), (2, (2,))]
        after = image.topic("t")
        assert after is not None
        assert after.partitions[0].leader_epoch > epochs[0]  # a new leader for partition 0
        assert after.partitions[1].leader_epoch == epochs[1]  # its leader stays


# -- heartbeats


async def test_heartbeat_of_an_unregistered_broker_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        answer = await controller_of(node).heartbeat(heartbeat(7, 1, 100))
        assert answer["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED


async def test_heartbeat_with_a_stale_broker_epoch_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        epoch = await register(node, 1, incarnation(1))
        answer = await controller_of(node).heartbeat(heartbeat(1, epoch - 1, epoch + 10))
        assert answer["error_code"] == ErrorCode.STALE_BROKER_EPOCH
        assert broker(node.quorum.image, 1).fenced


async def test_heartbeat_unfences_a_broker_once_its_metadata_reaches_its_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await register(node, 1, incarnation(1))
        behind = await controller.heartbeat(heartbeat(1, epoch, epoch - 1))
        assert behind["error_code"] == ErrorCode.NONE
        assert (behind["is_caught_up"], behind["is_fenced"]) == (False, True)
        assert broker(node.quorum.image, 1).fenced
        caught_up = await controller.heartbeat(heartbeat(1, epoch, epoch))
        assert (caught_up["is_caught_up"], caught_up["is_fenced"]) == (True, False)
        assert not broker(node.quorum.image, 1).fenced


async def test_unfencing_elects_the_broker_for_its_leaderless_partitions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await controller.create_topic("t", assignments=[[1]])
        await controller.heartbeat(heartbeat(1, epoch, node.quorum.image.offset, want_fence=True))
        assert leaders(node.quorum.image, "t") == [(NO_LEADER, (1,))]
        await controller.heartbeat(heartbeat(1, epoch, node.quorum.image.offset))
        assert leaders(node.quorum.image, "t") == [(1, (1,))]


# -- sessions


async def test_session_expiry_fences_a_silent_broker_and_moves_its_leaderships(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        await live_broker(node, 1)
        epoch_2 = await live_broker(node, 2)
        await controller.create_topic("t", assignments=[[1, 2], [2, 1]])
        last_heartbeat_s = trio.current_time()
        # Broker 2 keeps heartbeating; broker 1 says nothing.
        interval_s = node.quorum.config.broker_heartbeat_interval_ms / 1000
        while trio.current_time() + interval_s < last_heartbeat_s + SESSION_TIMEOUT_MS / 1000:
            await trio.sleep(interval_s)
            await controller.heartbeat(heartbeat(2, epoch_2, node.quorum.image.offset))
        await trio.sleep_until(last_heartbeat_s + (SESSION_TIMEOUT_MS - 1) / 1000)
        assert await controller.fence_expired() == []
        assert not broker(node.quorum.image, 1).fenced
        await trio.sleep_until(last_heartbeat_s + (SESSION_TIMEOUT_MS + 1) / 1000)
        assert await controller.fence_expired() == [1]
        image = node.quorum.image
        assert broker(image, 1).fenced and not broker(image, 2).fenced
        assert leaders(image, "t") == [(2, (2,)), (2, (2,))]


async def test_the_controller_fences_expired_sessions_by_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        await live_broker(node, 1)
        registered_s = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(controller.serve)
            await node.quorum.wait_for(lambda image: broker(image, 1).fenced)
            nursery.cancel_scope.cancel()
        waited_ms = (trio.current_time() - registered_s) * 1000
        assert SESSION_TIMEOUT_MS <= waited_ms <= SESSION_TIMEOUT_MS + 1000


async def test_an_expiry_check_overtaken_by_a_heartbeat_fences_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await trio.sleep(SESSION_TIMEOUT_MS / 1000)
        fenced: list[int] = []

        async def expire() -> None:
            fenced.extend(await controller.fence_expired())

        # Another operation holds the controller (its lock, held here so that it stays
        # held); a heartbeat of broker 1 queues up behind it, then the expiry check,
        # which saw broker 1 expired, behind that.
        async with trio.open_nursery() as nursery, controller._lock:
            request = heartbeat(1, epoch, node.quorum.image.offset)
            nursery.start_soon(controller.heartbeat, request)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(expire)
            await trio.testing.wait_all_tasks_blocked()
        assert fenced == []
        assert not broker(node.quorum.image, 1).fenced


# -- controlled shutdown


async def test_controlled_shutdown_moves_leaderships_and_fences_when_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await live_broker(node, 2)
        await controller.create_topic("t", assignments=[[1, 2], [2, 1]])
        answer = await controller.heartbeat(
            heartbeat(1, epoch, node.quorum.image.offset, want_shut_down=True)
        )
        assert answer["error_code"] == ErrorCode.NONE
        assert (answer["should_shut_down"], answer["is_fenced"]) == (True, True)
        image = node.quorum.image
        assert broker(image, 1).fenced and broker(image, 1).in_controlled_shutdown
        assert leaders(image, "t") == [(2, (2,)), (2, (2,))]


async def test_a_broker_shutting_down_alone_keeps_its_partitions_in_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await controller.create_topic("t", assignments=[[1]])
        answer = await controller.heartbeat(
            heartbeat(1, epoch, node.quorum.image.offset, want_shut_down=True)
        )
        assert (answer["should_shut_down"], answer["is_fenced"]) == (True, True)
        # Nothing could lead instead: no leader, and it stays the in-sync replica.
        assert leaders(node.quorum.image, "t") == [(NO_LEADER, (1,))]


# -- producer ids


async def test_producer_id_blocks_are_distinct_and_increasing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epochs = {1: await live_broker(node, 1), 2: await live_broker(node, 2)}
        starts = []
        for broker_id in (1, 2, 1):
            answer = await controller.allocate_producer_ids(
                {"broker_id": broker_id, "broker_epoch": epochs[broker_id]}
            )
            assert answer["error_code"] == ErrorCode.NONE
            assert answer["producer_id_len"] == PRODUCER_ID_BLOCK_SIZE == 1000
            starts.append(answer["producer_id_start"])
        assert starts == sorted(starts)
        assert all(b - a >= PRODUCER_ID_BLOCK_SIZE for a, b in itertools.pairwise(starts))
        assert node.quorum.image.next_producer_id == starts[-1] + PRODUCER_ID_BLOCK_SIZE


async def test_producer_ids_go_to_registered_brokers_at_their_epoch_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        unknown = await controller.allocate_producer_ids({"broker_id": 5, "broker_epoch": epoch})
        stale = await controller.allocate_producer_ids({"broker_id": 1, "broker_epoch": epoch + 1})
        assert unknown["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED
        assert stale["error_code"] == ErrorCode.STALE_BROKER_EPOCH
        assert unknown["producer_id_len"] == stale["producer_id_len"] == 0
        assert node.quorum.image.next_producer_id == -1


# -- unregistering


async def test_unregistering_removes_the_broker_and_moves_its_leaderships(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await live_broker(node, 2)
        await controller.create_topic("t", assignments=[[1, 2]])
        answer = await controller.unregister_broker({"broker_id": 1})
        assert answer["error_code"] == ErrorCode.NONE
        image = node.quorum.image
        assert image.broker(1) is None
        assert leaders(image, "t") == [(2, (2,))]
        again = await controller.unregister_broker({"broker_id": 1})
        assert again["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED
        beat = await controller.heartbeat(heartbeat(1, epoch, image.offset))
        assert beat["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED


# -- partitions


async def test_alter_partition_commits_the_leaders_isr_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with active_controller() as node:
        controller = controller_of(node)
        epoch = await live_broker(node, 1)
        await live_broker(node, 2)
        topic = await controller.create_topic("t", assignments=[[1, 2]])
        partition = topic.partitions[0]
        shrink = {
            "broker_id": 1,
            "broker_epoch": epoch,
            "topics": [
                {
                    "topic_id": topic.topic_id,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "leader_epoch": partition.leader_epoch,
                            "new_isr": [1],
                            "new_isr_with_epochs": [],
                            "leader_recovery_state": 0,
                            "partition_epoch": partition.partition_epoch,
                        }
                    ],
                }
            ],
        }
        answer = await controller.alter_partition(shrink)
        (changed,) = answer["topics"][0]["partitions"]
        assert changed["error_code"] == ErrorCode.NONE and changed["isr"] == [1]
        assert leaders(node.quorum.image, "t") == [(1, (1,))]
        after = node.quorum.image.topic("t")
        assert after is not None
        assert after.partitions[0].partition_epoch == changed["partition_epoch"]
        # The same request again is of an older partition epoch, but asks for what is.
        again = await controller.alter_partition(shrink)
        assert again["topics"][0]["partitions"][0]["error_code"] == ErrorCode.NONE
