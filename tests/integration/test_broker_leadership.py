"""Only the leader serves produce and fetch, acks=all waits for the high watermark within
the request's timeout, and the broker follows leadership from the metadata image."""

from __future__ import annotations

import trio

from tests.integration.conftest import RunningBroker
from tests.integration.wire import fetch_request, produce_request
from tidelog.broker.controller.controller import QuorumController
from tidelog.broker.metadata.records import PartitionChangeRecord, RegisterBrokerRecord
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, encode_batch

PRODUCE, FETCH, METADATA = 0, 1, 3


def _batch(value: bytes) -> bytes:
    return encode_batch([RecordInput(value=value)])


def _controller(broker: RunningBroker) -> QuorumController:
    controller = broker.broker.controller
    assert controller is not None
    return controller


async def _create(broker: RunningBroker, name: str) -> None:
    await broker.broker.topics.create_topic(name)
    await _controller(broker).commit([RegisterBrokerRecord(1, ())])


async def _change(broker: RunningBroker, name: str, **change: object) -> None:
    topic = broker.broker.image.topic(name)
    assert topic is not None
    await _controller(broker).commit(
        [PartitionChangeRecord(topic.topic_id, 0, **change)]  # type: ignore[arg-type]
    )


async def test_a_follower_answers_not_leader_and_metadata_names_the_leader(
    broker: RunningBroker,
) -> None:
    await _create(broker, "moved")
    async with await broker.client() as client:
        ok = await client.request(PRODUCE, 8, produce_request("moved", _batch(b"a")))
        assert ok["responses"][0]["partition_responses"][0]["error_code"] == ErrorCode.NONE
        await _change(broker, "moved", leader=1, replicas=(0, 1), isr=(0, 1))
        refused = await client.request(PRODUCE, 8, produce_request("moved", _batch(b"b")))
        assert refused["responses"][0]["partition_responses"][0]["error_code"] == (
            ErrorCode.NOT_LEADER_OR_FOLLOWER
        )
        fetched = await client.request(FETCH, 11, fetch_request("moved", 0))
        assert fetched["responses"][0]["partitions"][0]["error_code"] == (
            ErrorCode.NOT_LEADER_OR_FOLLOWER
        )
        metadata = await client.request(
            METADATA, 8, {"topics": [{"name": "moved"}], "allow_auto_topic_creation": False,
                          "include_cluster_authorized_operations": False,
                          "include_topic_authorized_operations": False},
        )  # fmt: skip
        partition = metadata["topics"][0]["partitions"][0]
        assert (partition["leader_id"], partition["leader_epoch"]) == (1, 1)
        # Leadership comes back in a newer epoch; the log kept what it had.
        await _change(broker, "moved", leader=0)
        fetched = await client.request(FETCH, 11, fetch_request("moved", 0))
        entry = fetched["responses"][0]["partitions"][0]
        assert (entry["error_code"], entry["high_watermark"]) == (ErrorCode.NONE, 1)


async def test_acks_all_waits_for_the_isr_within_the_timeout(broker: RunningBroker) -> None:
    await _create(broker, "replicated")
    # A second in-sync replica that never fetches: nothing can be committed.
    await _change(broker, "replicated", replicas=(0, 1), isr=(0, 1))
    async with await broker.client() as client:
        request = produce_request("replicated", _batch(b"x"), acks=-1)
        request["timeout_ms"] = 300
        started = trio.current_time()
        response = await client.request(PRODUCE, 8, request)
        waited_s = trio.current_time() - started
        assert response["responses"][0]["partition_responses"][0]["error_code"] == (
            ErrorCode.REQUEST_TIMED_OUT
        )
        assert waited_s >= 0.3
        leader_only = await client.request(
            PRODUCE, 8, produce_request("replicated", _batch(b"y"), acks=1)
        )
        assert leader_only["responses"][0]["partition_responses"][0]["base_offset"] == 1
        # Consumers see only what the ISR holds: nothing yet.
        fetched = await client.request(FETCH, 11, fetch_request("replicated", 0))
        entry = fetched["responses"][0]["partitions"][0]
        assert (entry["high_watermark"], bytes(entry["records"])) == (0, b"")
        # The follower catches up: the high watermark moves and a parked acks=all returns.
        partition = broker.broker.replicas.partition("replicated", 0)
        assert partition is not None
        async with trio.open_nursery() as nursery:
            answers: list[int] = []

            async def produce_all() -> None:
                parked = produce_request("replicated", _batch(b"z"), acks=-1)
                reply = await client.request(PRODUCE, 8, parked)
                answers.append(reply["responses"][0]["partition_responses"][0]["error_code"])

            with broker.broker.replicas.watch([partition.key]) as appended:
                nursery.start_soon(produce_all)
                await appended.wait()
            assert partition.log_end_offset == 3 and answers == []
            assert partition.state.on_follower_fetch(1, 3, broker.broker.now_ms())
            partition.wake()
        assert answers == [ErrorCode.NONE]
        assert partition.high_watermark == 3
