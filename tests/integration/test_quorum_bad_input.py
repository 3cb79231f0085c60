"""Bad input to the controller quorum, over real TCP against a running node: each request
gets its Kafka error (or is served without effect, as Kafka serves an observer's Fetch),
nothing is applied, and the node keeps serving.

The node is a combined broker and controller, alone in its quorum (voter 0), with a
CONTROLLER listener besides its client listener, so the quorum and lifecycle APIs are
reached as a peer reaches them. Any other node id is outside its voter set.

Kafka's rules, as KRaft with a static voter set (KIP-595) applies them:

- Vote, BeginQuorumEpoch and EndQuorumEpoch are between voters: a sender outside the voter
  set is INCONSISTENT_VOTER_SET, an epoch older than the receiver's FENCED_LEADER_EPOCH.
- Fetch and FetchSnapshot are for the leader of the epoch they name: an older epoch is
  FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH. A Fetch from a replica outside the
  voter set is served as an observer's: it shows among DescribeQuorum's observers and never
  counts toward the high watermark.
- Any of them naming another cluster id is INCONSISTENT_CLUSTER_ID, and reaches nothing.
- BrokerRegistration of another cluster is INCONSISTENT_CLUSTER_ID; a heartbeat from a
  broker that is not registered BROKER_ID_NOT_REGISTERED, of another broker epoch
  STALE_BROKER_EPOCH.
- A metadata log entry that does not decode, or does not apply, is skipped (logged) the
  same way on every node; a corrupt batch on disk is cut at recovery with what follows it.
"""

from __future__ import annotations

import logging
import posixpath
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tests.integration.wire import WireClient, metadata_request
from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.controller.quorum import METADATA_LOG_DIR
from tidelog.broker.controller.raft.messages import (
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchSnapshotRequest,
    RaftRequest,
    VoteRequest,
)
from tidelog.broker.controller.raft.records import decode_entries
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.types import Entry, OffsetAndEpoch, QuorumState, SnapshotId
from tidelog.broker.controller.raft.wire import VERSIONS, api_of, encode_request
from tidelog.broker.metadata.records import PartitionRecord, TopicRecord
from tidelog.broker.metadata.serde import encode_record, encode_records
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.cluster import (
    ALLOCATE_PRODUCER_IDS,
    BROKER_HEARTBEAT,
    BROKER_REGISTRATION,
    UNREGISTER_BROKER,
)
from tidelog.client.protocol.messages.data import FETCH
from tidelog.client.protocol.messages.quorum import DESCRIBE_QUORUM
from tidelog.client.protocol.schema import Message
from tidelog.storage.filesystem import OsFileSystem

CONTROLLER = "CONTROLLER"
NODE_ID = 0
"""The node's id: `local_config`'s, and the only voter."""
UNKNOWN = (1, 7, 99, 2**31 - 1)
"""Node ids outside the voter set."""
OTHER_CLUSTER = "another-cluster"
METADATA, CREATE_TOPICS, DESCRIBE_CLUSTER = 3, 19, 60


# ---- the node ----------------------------------------------------------------------------


def quorum_node_config(data_dir: Path) -> BrokerConfig:
    """`local_config` plus a CONTROLLER listener: a quorum of this node alone that serves
    the controller APIs on their own listener, as a voter of a larger quorum would."""
    return local_config(
        data_dir,
        listeners=(
            ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),
            ListenerConfig(name=CONTROLLER, host="127.0.0.1", port=0),
        ),
    )


@asynccontextmanager
async def controller_client(node: RunningBroker) -> AsyncIterator[WireClient]:
    host, port = node.address(CONTROLLER)
    async with await WireClient.connect(node.network, host, port) as client:
        yield client


@pytest.fixture
async def node(start_broker: StartBroker, tmp_path: Path) -> AsyncIterator[RunningBroker]:
    """The node in epoch 2 or later, so that an older epoch (>= 1) is one Kafka checks as
    stale rather than refusing as malformed (a Vote's last epoch must be below its epoch)."""
    config = quorum_node_config(tmp_path / "node")
    first = await start_broker(config)
    await first.stop()
    running = await start_broker(config)
    assert running.broker.quorum.epoch >= 2
    yield running


# ---- requests and answers ----------------------------------------------------------------


async def raft_call(
    client: WireClient, request: RaftRequest, cluster_id: str | None, **overrides: Any
) -> Message:
    """`request` on the wire as a peer sends it (`overrides` replace top-level fields)."""
    api = api_of(request)
    body = dict(encode_request(request, cluster_id or ""))
    body["cluster_id"] = cluster_id
    body.update(overrides)
    return await client.request(api.key, VERSIONS[api.key], body)


def partition_of(api_key: int, response: Message) -> dict[str, Any]:
    topics = response["responses" if api_key == FETCH.key else "topics"]
    ((partition,),) = [t["partitions"] for t in topics]
    return dict(partition)


def error_of(api_key: int, response: Message) -> ErrorCode:
    """The error a quorum response carries: Kafka answers a refused request (another
    cluster) at the top level, with no partitions; a partition-level error otherwise."""
    top = ErrorCode(response["error_code"])
    if top is not ErrorCode.NONE:
        return top
    return ErrorCode(partition_of(api_key, response)["error_code"])


async def describe_quorum(node: RunningBroker) -> dict[str, Any]:
    body = {"topics": [{"topic_name": "__cluster_metadata",
                        "partitions": [{"partition_index": 0}]}]}  # fmt: skip
    async with controller_client(node) as client:
        response = await client.request(DESCRIBE_QUORUM.key, 2, body)
    assert response["error_code"] == ErrorCode.NONE
    partition = partition_of(DESCRIBE_QUORUM.key, response)
    assert partition["error_code"] == ErrorCode.NONE, partition
    return partition


def quorum_of(described: dict[str, Any]) -> tuple[int, int, int, list[tuple[int, int]]]:
    """What bad input must not change: leader, epoch, high watermark, voters' log ends."""
    voters = [(v["replica_id"], v["log_end_offset"]) for v in described["current_voters"]]
    return described["leader_id"], described["leader_epoch"], described["high_watermark"], voters


def observer_ids(described: dict[str, Any]) -> list[int]:
    return [o["replica_id"] for o in described["observers"]]


def local_state(node: RunningBroker) -> tuple[QuorumState, int, int]:
    """The node's own view: its quorum state (vote included), log end, image offset."""
    quorum = node.broker.quorum
    return quorum.core.quorum_state, quorum.next_offset, quorum.image.offset


def last_offset(node: RunningBroker) -> OffsetAndEpoch:
    return node.broker.quorum.core.log.last


async def create_topic(node: RunningBroker, name: str) -> uuid.UUID:
    """Create `name` through the client listener; its topic id, as Metadata gives it."""
    body = {
        "topics": [{"name": name, "num_partitions": 1, "replication_factor": 1,
                    "assignments": [], "configs": []}],
        "timeout_ms": 5_000,
        "validate_only": False,
    }  # fmt: skip
    async with await node.client() as client:
        (created,) = (await client.request(CREATE_TOPICS, 7, body))["topics"]
        assert created["error_code"] == ErrorCode.NONE, created
        (described,) = (
            await client.request(METADATA, 12, metadata_request(name, allow_auto_create=False))
        )["topics"]
    assert described["error_code"] == ErrorCode.NONE, described
    topic_id: uuid.UUID = described["topic_id"]
    assert topic_id == created["topic_id"]
    return topic_id


async def assert_keeps_serving(node: RunningBroker, new_topic: str) -> None:
    """The node still commits metadata, and answers on both listeners."""
    await create_topic(node, new_topic)
    assert node.broker.image.topic(new_topic) is not None
    await describe_quorum(node)


# ---- 1. senders outside the voter set ----------------------------------------------------


async def test_a_vote_from_outside_the_voter_set_is_refused_and_changes_nothing(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    cluster_id = node.broker.quorum.cluster_id
    async with controller_client(node) as client:
        for candidate in UNKNOWN:
            for vote_epoch in (epoch, epoch + 1, epoch + 10):
                for pre_vote in (False, True):
                    # The most up-to-date log there is: only the voter set refuses it.
                    request = VoteRequest(
                        candidate, vote_epoch, OffsetAndEpoch(vote_epoch - 1, 2**40), pre_vote
                    )
                    answer = await raft_call(client, request, cluster_id)
                    assert error_of(52, answer) is ErrorCode.INCONSISTENT_VOTER_SET, request
                    partition = partition_of(52, answer)
                    assert partition["vote_granted"] is False
                    assert (partition["leader_id"], partition["leader_epoch"]) == (NODE_ID, epoch)
        # A negative candidate id: Kafka answers INVALID_REQUEST; refused either way.
        answer = await raft_call(client, VoteRequest(-1, epoch + 1, last_offset(node)), cluster_id)
        assert error_of(52, answer) in (ErrorCode.INVALID_REQUEST, ErrorCode.INCONSISTENT_VOTER_SET)
        assert partition_of(52, answer)["vote_granted"] is False

    after = await describe_quorum(node)
    assert quorum_of(after) == quorum_of(before)
    assert local_state(node) == state, "a refused vote was recorded"
    await assert_keeps_serving(node, "after-unknown-votes")


async def test_begin_quorum_epoch_from_outside_the_voter_set_is_refused(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    cluster_id = node.broker.quorum.cluster_id
    async with controller_client(node) as client:
        for leader in UNKNOWN:
            for begin_epoch in (epoch, epoch + 1):
                answer = await raft_call(
                    client, BeginQuorumEpochRequest(leader, begin_epoch), cluster_id
                )
                assert error_of(53, answer) is ErrorCode.INCONSISTENT_VOTER_SET
                partition = partition_of(53, answer)
                assert (partition["leader_id"], partition["leader_epoch"]) == (NODE_ID, epoch)
    assert quorum_of(await describe_quorum(node)) == quorum_of(before)
    assert local_state(node) == state
    await assert_keeps_serving(node, "after-unknown-begin-quorum-epoch")


async def test_end_quorum_epoch_from_outside_the_voter_set_is_refused(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    cluster_id = node.broker.quorum.cluster_id
    async with controller_client(node) as client:
        for leader in (99, -1):
            answer = await raft_call(
                client, EndQuorumEpochRequest(leader, epoch + 1, (NODE_ID,)), cluster_id
            )
            assert error_of(54, answer) is ErrorCode.INCONSISTENT_VOTER_SET
            partition = partition_of(54, answer)
            assert (partition["leader_id"], partition["leader_epoch"]) == (NODE_ID, epoch)
    assert local_state(node) == state
    assert quorum_of(await describe_quorum(node)) == quorum_of(before)


# ---- 2. stale epochs ---------------------------------------------------------------------


async def test_requests_of_an_older_epoch_are_fenced_and_change_nothing(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    stale = epoch - 1
    end = before["current_voters"][0]["log_end_offset"]
    cluster_id = node.broker.quorum.cluster_id
    fenced: list[RaftRequest] = [
        # A voter's candidacy in an older epoch, whatever its log.
        VoteRequest(NODE_ID, stale, OffsetAndEpoch(stale - 1, 0)),
        VoteRequest(NODE_ID, stale, OffsetAndEpoch(stale - 1, 2**40)),
        # A leader of an older epoch announcing itself, or resigning.
        BeginQuorumEpochRequest(NODE_ID, stale),
        EndQuorumEpochRequest(NODE_ID, stale, (NODE_ID,)),
        EndQuorumEpochRequest(NODE_ID, 0, ()),
        # A fetch from a follower of an older epoch, voter or observer.
        FetchRequest(NODE_ID, stale, 0, 0),
        FetchRequest(99, stale, end, stale),
        FetchRequest(99, 0, 0, 0),
        FetchSnapshotRequest(99, stale, SnapshotId(1, 1), 0, 1024),
    ]
    unknown_epoch: list[RaftRequest] = [
        FetchRequest(99, epoch + 1, end, epoch),
        FetchSnapshotRequest(99, epoch + 1, SnapshotId(1, 1), 0, 1024),
    ]
    async with controller_client(node) as client:
        for request in fenced:
            api_key = api_of(request).key
            answer = await raft_call(client, request, cluster_id)
            assert error_of(api_key, answer) is ErrorCode.FENCED_LEADER_EPOCH, request
        for request in unknown_epoch:
            api_key = api_of(request).key
            answer = await raft_call(client, request, cluster_id)
            assert error_of(api_key, answer) is ErrorCode.UNKNOWN_LEADER_EPOCH, request
        # A pre-vote for an older epoch is not granted (Kafka answers it
        # FENCED_LEADER_EPOCH; the core refuses it without an error).
        pre_vote = VoteRequest(NODE_ID, stale, OffsetAndEpoch(stale - 1, 2**40), pre_vote=True)
        answer = await raft_call(client, pre_vote, cluster_id)
        assert error_of(52, answer) in (ErrorCode.NONE, ErrorCode.FENCED_LEADER_EPOCH)
        assert partition_of(52, answer)["vote_granted"] is False
        # The epoch's own leader is not fooled into a vote in its own epoch either.
        same = VoteRequest(NODE_ID, epoch, OffsetAndEpoch(epoch, 2**40))
        answer = await raft_call(client, same, cluster_id)
        assert partition_of(52, answer)["vote_granted"] is False

    after = await describe_quorum(node)
    assert quorum_of(after) == quorum_of(before)
    assert 99 not in observer_ids(after), "a fenced fetch was tracked"
    assert local_state(node) == state
    await assert_keeps_serving(node, "after-stale-epochs")


# ---- 3. a Fetch from a replica outside the voter set --------------------------------------


async def test_a_fetch_from_outside_the_voter_set_is_served_as_an_observer(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    leader, epoch, high_watermark, voters = quorum_of(before)
    ((_, end),) = voters
    assert high_watermark == end, "a quorum of one commits its whole log"
    cluster_id = node.broker.quorum.cluster_id
    async with controller_client(node) as client:
        # From the start: the whole log, as any observer (a broker) reads it.
        answer = await raft_call(client, FetchRequest(99, epoch, 0, 0), cluster_id)
        assert error_of(FETCH.key, answer) is ErrorCode.NONE
        partition = partition_of(FETCH.key, answer)
        assert partition["high_watermark"] == high_watermark
        assert partition["current_leader"] == {"leader_id": leader, "leader_epoch": epoch}
        entries = list(decode_entries(partition["records"]))
        assert entries and entries[0].offset == 0
        # Caught up: nothing more, the same high watermark.
        answer = await raft_call(client, FetchRequest(99, epoch, end, epoch), cluster_id)
        partition = partition_of(FETCH.key, answer)
        assert error_of(FETCH.key, answer) is ErrorCode.NONE
        assert (partition["high_watermark"], partition["records"] or b"") == (high_watermark, b"")
        # Claiming more than the leader has: told where the leader's log diverges, and the
        # claim is not taken as the observer's position.
        for claim_offset, claim_epoch in ((end + 1000, epoch), (end, epoch + 5)):
            request = FetchRequest(99, epoch, claim_offset, claim_epoch)
            answer = await raft_call(client, request, cluster_id)
            partition = partition_of(FETCH.key, answer)
            assert error_of(FETCH.key, answer) is ErrorCode.NONE
            diverging = partition["diverging_epoch"]
            assert diverging["end_offset"] <= end, diverging
            assert partition["high_watermark"] == high_watermark
        # A fetch without a replica id (-1) is answered and not tracked at all.
        answer = await raft_call(client, FetchRequest(-1, epoch, end, epoch), cluster_id)
        assert error_of(FETCH.key, answer) is ErrorCode.NONE

    after = await describe_quorum(node)
    assert quorum_of(after) == (leader, epoch, high_watermark, voters)
    assert observer_ids(after) == [99]
    (observer,) = after["observers"]
    assert observer["log_end_offset"] == end, "the observer's position is its last valid fetch"
    assert observer["last_fetch_timestamp"] > 0
    assert local_state(node) == state
    await assert_keeps_serving(node, "after-observer-fetches")


# ---- 4. another cluster ------------------------------------------------------------------


async def test_quorum_requests_of_another_cluster_are_refused_before_the_core(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    end = before["current_voters"][0]["log_end_offset"]
    # Each would change the node's state if it came from this cluster: a newer epoch's
    # vote or announcements depose the leader, a fetch registers an observer.
    requests: list[RaftRequest] = [
        VoteRequest(NODE_ID, epoch + 1, OffsetAndEpoch(epoch, 2**40)),
        VoteRequest(NODE_ID, epoch + 1, OffsetAndEpoch(epoch, 2**40), pre_vote=True),
        VoteRequest(99, epoch + 1, OffsetAndEpoch(epoch, 2**40)),
        BeginQuorumEpochRequest(NODE_ID, epoch + 1),
        EndQuorumEpochRequest(NODE_ID, epoch + 1, (NODE_ID,)),
        FetchRequest(77, epoch, end, epoch),
        FetchSnapshotRequest(77, epoch, SnapshotId(1, 1), 0, 1024),
    ]
    async with controller_client(node) as client:
        for request in requests:
            api_key = api_of(request).key
            for cluster_id in (OTHER_CLUSTER, node.broker.quorum.cluster_id + "x", ""):
                answer = await raft_call(client, request, cluster_id)
                assert error_of(api_key, answer) is ErrorCode.INCONSISTENT_CLUSTER_ID, (
                    request,
                    cluster_id,
                )
    after = await describe_quorum(node)
    assert quorum_of(after) == quorum_of(before)
    assert 77 not in observer_ids(after), "another cluster's fetch reached the core"
    assert local_state(node) == state

    # As Kafka does, a request without a cluster id is not checked: this one is served.
    async with controller_client(node) as client:
        answer = await raft_call(client, FetchRequest(78, epoch, end, epoch), None)
    assert error_of(FETCH.key, answer) is ErrorCode.NONE
    assert 78 in observer_ids(await describe_quorum(node))
    await assert_keeps_serving(node, "after-other-cluster")


async def test_quorum_requests_for_another_partition_or_malformed_are_refused(
    node: RunningBroker,
) -> None:
    before = await describe_quorum(node)
    state = local_state(node)
    epoch = before["leader_epoch"]
    end = before["current_voters"][0]["log_end_offset"]
    cluster_id = node.broker.quorum.cluster_id
    vote = VoteRequest(NODE_ID, epoch + 1, OffsetAndEpoch(epoch, 2**40))
    fetch = FetchRequest(77, epoch, end, epoch)
    vote_partition = encode_request(vote, cluster_id)["topics"][0]["partitions"][0]
    fetch_topic = encode_request(fetch, cluster_id)["topics"][0]
    # Kafka answers a request for a partition it does not replicate INVALID_REQUEST.
    elsewhere = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_REQUEST)
    async with controller_client(node) as client:
        for topics in (
            [{"topic_name": "__consumer_offsets", "partitions": [vote_partition]}],
            [{"topic_name": "__cluster_metadata",
              "partitions": [{**vote_partition, "partition_index": 1}]}],
            [{"topic_name": "__cluster_metadata", "partitions": [vote_partition] * 2}],
            [],
        ):  # fmt: skip
            answer = await raft_call(client, vote, cluster_id, topics=topics)
            assert error_of(52, answer) in elsewhere, topics
        for topics in (
            [{**fetch_topic, "topic": "orders"}],
            [fetch_topic, fetch_topic],
            [{**fetch_topic, "partitions": []}],
        ):
            answer = await raft_call(client, fetch, cluster_id, topics=topics)
            assert error_of(FETCH.key, answer) in elsewhere, topics
        for bad in (FetchRequest(77, epoch, -1, epoch), FetchRequest(77, epoch, end, -1)):
            answer = await raft_call(client, bad, cluster_id)
            assert error_of(FETCH.key, answer) is ErrorCode.INVALID_REQUEST, bad
        # A snapshot that does not exist, at any position.
        for position in (0, -1, 2**40):
            request = FetchSnapshotRequest(77, epoch, SnapshotId(end, epoch), position, 1024)
            answer = await raft_call(client, request, cluster_id)
            assert error_of(59, answer) is ErrorCode.SNAPSHOT_NOT_FOUND
    after = await describe_quorum(node)
    assert quorum_of(after) == quorum_of(before)
    assert 77 not in observer_ids(after)
    assert local_state(node) == state
    await assert_keeps_serving(node, "after-malformed")


# ---- 5. the broker lifecycle -------------------------------------------------------------


def registration_body(broker_id: int, cluster_id: str) -> Message:
    return {
        "broker_id": broker_id,
        "cluster_id": cluster_id,
        "incarnation_id": uuid.uuid4(),
        "listeners": [
            {"name": "PLAINTEXT", "host": "127.0.0.1", "port": 1, "security_protocol": 0}
        ],
        "features": [],
        "rack": None,
        "is_migrating_zk_broker": False,
        "log_dirs": [],
        "previous_broker_epoch": -1,
    }


def heartbeat_body(broker_id: int, broker_epoch: int, *, shut_down: bool = False) -> Message:
    return {
        "broker_id": broker_id,
        "broker_epoch": broker_epoch,
        "current_metadata_offset": 2**40,
        "want_fence": False,
        "want_shut_down": shut_down,
        "offline_log_dirs": [],
    }


async def cluster_view(node: RunningBroker) -> tuple[Any, ...]:
    """The brokers as clients see them (Metadata, DescribeCluster)."""
    async with await node.client() as client:
        all_topics = {"topics": None, "allow_auto_topic_creation": False}
        metadata = await client.request(METADATA, 12, all_topics)
        cluster = await client.request(
            DESCRIBE_CLUSTER,
            1,
            {"include_cluster_authorized_operations": False, "endpoint_type": 1},
        )
    assert cluster["error_code"] == ErrorCode.NONE
    return (
        [(b["node_id"], b["host"], b["port"]) for b in metadata["brokers"]],
        [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]],
        metadata["cluster_id"],
        cluster["cluster_id"],
    )


async def test_lifecycle_requests_of_strangers_are_refused_and_register_nothing(
    node: RunningBroker,
) -> None:
    image = node.broker.image
    registered = image.broker(NODE_ID)
    assert registered is not None and not registered.fenced
    view = await cluster_view(node)
    assert view[0] == [(NODE_ID, node.host, node.port)]
    offset = node.broker.quorum.next_offset
    next_producer_id = image.next_producer_id
    epoch = registered.broker_epoch

    async with controller_client(node) as client:
        # Another cluster's broker, new or taking over this node's id.
        for broker_id in (5, NODE_ID):
            for cluster_id in (OTHER_CLUSTER, ""):
                body = registration_body(broker_id, cluster_id)
                answer = await client.request(BROKER_REGISTRATION.key, 3, body)
                assert answer["error_code"] == ErrorCode.INCONSISTENT_CLUSTER_ID
                assert answer["broker_epoch"] == -1
        # Heartbeats of a broker never registered.
        for broker_id in (5, 77):
            answer = await client.request(BROKER_HEARTBEAT.key, 1, heartbeat_body(broker_id, 0))
            assert answer["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED
            assert answer["is_fenced"] is True and answer["should_shut_down"] is False
        # This broker's id at another broker epoch: an old incarnation, or a made-up one;
        # asking to shut down does not start a controlled shutdown.
        for stale in (epoch - 1, epoch + 1000, -1):
            for shut_down in (False, True):
                body = heartbeat_body(NODE_ID, stale, shut_down=shut_down)
                answer = await client.request(BROKER_HEARTBEAT.key, 1, body)
                assert answer["error_code"] == ErrorCode.STALE_BROKER_EPOCH
                assert answer["should_shut_down"] is False
        # Producer ids for a stranger, or for a stale epoch, are not handed out.
        for broker_id, broker_epoch in ((77, 0), (NODE_ID, epoch - 1)):
            body = {"broker_id": broker_id, "broker_epoch": broker_epoch}
            answer = await client.request(ALLOCATE_PRODUCER_IDS.key, 0, body)
            assert answer["error_code"] in (
                ErrorCode.BROKER_ID_NOT_REGISTERED,
                ErrorCode.STALE_BROKER_EPOCH,
            )
            assert answer["producer_id_len"] == 0
    async with await node.client() as client:
        answer = await client.request(UNREGISTER_BROKER.key, 0, {"broker_id": 77})
        assert answer["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED

    after = node.broker.image
    assert node.broker.quorum.next_offset == offset, "a refused request was committed"
    assert after.broker(NODE_ID) == registered
    assert after.broker(5) is None and after.broker(77) is None
    assert after.next_producer_id == next_producer_id
    assert await cluster_view(node) == view
    await assert_keeps_serving(node, "after-strangers")


# ---- 6. bad metadata on disk -------------------------------------------------------------


def metadata_log_dir(config: BrokerConfig) -> str:
    return posixpath.join(config.data_dir, METADATA_LOG_DIR)


def append_to_metadata_log(config: BrokerConfig, values: list[bytes]) -> list[int]:
    """Append data entries of `values` in the stored epoch (the node is stopped), as a
    leader of that epoch would have; their offsets."""
    store = RaftStore.open(OsFileSystem(), metadata_log_dir(config), now_ms=lambda: 0)
    try:
        epoch = store.quorum_state.epoch
        start = store.log_end_offset
        store.append([Entry(start + i, epoch, value) for i, value in enumerate(values)])
        store.flush()
    finally:
        store.close()
    return list(range(start, start + len(values)))


async def test_metadata_entries_that_do_not_decode_or_apply_are_skipped_at_startup(
    start_broker: StartBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = quorum_node_config(tmp_path / "node")
    first = await start_broker(config)
    kept_id = await create_topic(first, "kept")
    await first.stop()

    stowaway = uuid.uuid4()
    valid = encode_record(TopicRecord("torn", uuid.uuid4()))
    offsets = append_to_metadata_log(
        config,
        [
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01garbage",  # not a record at all
            encode_records([TopicRecord("never", uuid.uuid4())])[:-3],  # a truncated record
            b"\x02" + valid[1:],  # an unknown frame version
            bytes([len(valid) + 5]) + valid,  # a record length beyond the entry
            # Well-formed records that do not apply: the entry is skipped whole, so the
            # first one, which would apply, is not applied either.
            encode_records([
                TopicRecord("stowaway", stowaway),
                PartitionRecord(stowaway, 0, (NODE_ID,), (NODE_ID,), NODE_ID),
                TopicRecord("kept", uuid.uuid4()),
            ]),
            encode_records([PartitionRecord(uuid.uuid4(), 0, (0,), (0,), 0)]),
        ],
    )  # fmt: skip

    caplog.set_level(logging.ERROR, logger="tidelog.broker.controller.quorum")
    second = await start_broker(config)
    skipped = {
        int(match[1])
        for r in caplog.records
        if (match := re.fullmatch(r"metadata log entry (\d+) is skipped: .+", r.getMessage()))
    }
    assert skipped == set(offsets)
    image = second.broker.image
    assert image.offset > offsets[-1], "the entries after the bad ones were not applied"
    assert image.topic_names() == ["kept"]
    kept = image.topic("kept")
    assert kept is not None and kept.topic_id == kept_id
    assert stowaway not in image.topics_by_id
    assert second.broker.quorum.is_active
    await assert_keeps_serving(second, "after-bad-entries")
    assert sorted(second.broker.image.topic_names()) == ["after-bad-entries", "kept"]


def flip_a_byte_of(config: BrokerConfig, marker: bytes) -> None:
    """Corrupt the metadata log where `marker` is first written (inside a batch's records,
    which its CRC covers)."""
    directory = Path(metadata_log_dir(config))
    hits = [
        (path, data.index(marker))
        for path in sorted(directory.glob("*.log"))
        if marker in (data := path.read_bytes())
    ]
    assert len(hits) == 1, hits
    path, position = hits[0]
    damaged = bytearray(path.read_bytes())
    damaged[position] ^= 0x20
    path.write_bytes(bytes(damaged))


async def test_a_corrupt_metadata_batch_is_cut_at_recovery_with_what_follows(
    start_broker: StartBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = quorum_node_config(tmp_path / "node")
    first = await start_broker(config)
    kept_id = await create_topic(first, "kept-before-the-damage")
    await create_topic(first, "damaged-by-a-flipped-bit")
    await create_topic(first, "after-the-damage")
    await first.stop()
    flip_a_byte_of(config, b"damaged-by-a-flipped-bit")

    caplog.set_level(logging.WARNING, logger="tidelog.storage")
    second = await start_broker(config)
    cuts = [r for r in caplog.records if r.name.startswith("tidelog.storage")]
    assert any("truncating" in r.getMessage() for r in cuts), caplog.text
    image = second.broker.image
    assert image.topic_names() == ["kept-before-the-damage"]
    kept = image.topic("kept-before-the-damage")
    assert kept is not None and kept.topic_id == kept_id
    assert second.broker.quorum.is_active
    # The names cut from the log are free again, and the node commits anew.
    await assert_keeps_serving(second, "damaged-by-a-flipped-bit")
    await assert_keeps_serving(second, "after-the-damage")
