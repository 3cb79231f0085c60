"""The broker over real TCP: ApiVersions, Metadata, pipelining, and hostile input."""

from __future__ import annotations

import random
import struct
import uuid
from pathlib import Path

import trio

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tests.integration.wire import WireClient, api_ranges, metadata_request
from tidelog.broker.connection import REQUEST_ARRAY_ELEMENTS_MAX
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages import cluster, quorum

API_VERSIONS, METADATA = 18, 3


async def assert_still_serving(broker: RunningBroker) -> None:
    async with await broker.client() as other:
        assert (await other.request(API_VERSIONS, 0))["error_code"] == 0


async def test_api_versions_v0_to_v3_are_answered(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        for version in range(4):
            body = {"client_software_name": "tests", "client_software_version": "1.0"}
            response = await client.request(API_VERSIONS, version, body)
            assert response["error_code"] == 0
            ranges = api_ranges(response)
            assert ranges[API_VERSIONS] == (0, 3)
            assert ranges[METADATA][0] == 0 and ranges[METADATA][1] >= 8


async def test_api_versions_with_invalid_software_name_is_an_invalid_request(
    broker: RunningBroker,
) -> None:
    async with await broker.client() as client:
        body = {"client_software_name": "bad name!", "client_software_version": "1"}
        response = await client.request(API_VERSIONS, 3, body)
        assert response["error_code"] == ErrorCode.INVALID_REQUEST


async def test_unknown_api_versions_version_gets_error_35_and_the_range(
    broker: RunningBroker,
) -> None:
    async with await broker.client() as client:
        # v4 is in the codec but not advertised; its flexible header and body are not parsed.
        correlation_id = await client.send(API_VERSIONS, 4, {})
        frame = await client.read_frame()
        assert frame is not None
        got, error_code, count = struct.unpack_from(">ihi", frame)
        assert (got, error_code, count) == (correlation_id, 35, 1)
        assert struct.unpack_from(">hhh", frame, 10) == (API_VERSIONS, 0, 3)
        assert len(frame) == 16  # the v0 layout: nothing after the array
        # The client retries lower on the same connection.
        body = {"client_software_name": "tests", "client_software_version": "1.0"}
        assert (await client.request(API_VERSIONS, 3, body))["error_code"] == 0


async def test_pipelined_requests_are_answered_in_order(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        frames = []
        expected = []
        for i in range(60):
            api, version = (METADATA, 1 + i % 12) if i % 3 else (API_VERSIONS, i % 3)
            body = metadata_request(f"pipelined-{i % 5}") if api == METADATA else {}
            frames.append(client.encode(api, version, body, correlation_id=1000 + i))
            expected.append((api, version, 1000 + i))
        await client.send_raw(b"".join(frames))
        for api, version, correlation_id in expected:
            got, _ = await client.receive(api, version)
            assert got == correlation_id


async def test_metadata_auto_creates_and_describes_topics(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        response = await client.request(METADATA, 12, metadata_request("orders"))
    cluster = broker.broker.image
    (topic,) = response["topics"]
    assert topic["error_code"] == 0 and topic["name"] == "orders"
    assert topic["topic_id"] == cluster.topic("orders").topic_id
    assert [p["partition_index"] for p in topic["partitions"]] == [0]
    partition = topic["partitions"][0]
    assert partition["leader_id"] == 0 and partition["leader_epoch"] == 0
    assert partition["replica_nodes"] == [0] and partition["isr_nodes"] == [0]
    assert response["controller_id"] == 0
    assert response["cluster_id"] == cluster.cluster_id
    assert [(b["node_id"], b["host"], b["port"]) for b in response["brokers"]] == [
        (0, broker.host, broker.port)
    ]


async def test_metadata_errors(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        no_create = metadata_request("absent", allow_auto_create=False)
        (absent,) = (await client.request(METADATA, 4, no_create))["topics"]
        assert absent["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        (bad,) = (await client.request(METADATA, 4, metadata_request("bad/name")))["topics"]
        assert bad["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        by_id = {"topics": [{"name": None, "topic_id": uuid.uuid4()}]}
        (unknown,) = (await client.request(METADATA, 12, by_id))["topics"]
        assert unknown["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID
        # Nothing was created along the way; all-topics (null at v1+, empty at v0) agree.
        assert (await client.request(METADATA, 1, {"topics": None}))["topics"] == []
        assert (await client.request(METADATA, 0, {"topics": []}))["topics"] == []
    assert broker.broker.image.topic_names() == []


async def test_oversized_frame_closes_the_connection(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    running = await start_broker(local_config(tmp_path, socket_request_max_bytes=4096))
    async with await running.client() as client:
        await client.send_raw(struct.pack(">i", 4097) + b"\0" * 100)
        await client.assert_closed_by_broker()
    await assert_still_serving(running)


async def test_truncated_frame_then_eof_closes(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        frame = client.encode(API_VERSIONS, 0, {}, correlation_id=1)
        await client.send_raw(frame[:-3])
        await client.stream.send_eof()
        await client.assert_closed_by_broker()
    await assert_still_serving(broker)


async def test_random_bytes_close_the_connection(broker: RunningBroker) -> None:
    rng = random.Random(1234)
    for _ in range(5):
        async with await broker.client() as client:
            # A plausible size prefix so the broker reads the whole frame, then noise.
            noise = rng.randbytes(200)
            await client.send_raw(struct.pack(">i", len(noise)) + noise)
            await client.assert_closed_by_broker()
    await assert_still_serving(broker)


async def test_unknown_api_key_closes_the_connection(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        body = struct.pack(">hhih", 1000, 0, 5, -1)
        await client.send_raw(struct.pack(">i", len(body)) + body)
        await client.assert_closed_by_broker()
    await assert_still_serving(broker)


BROKER_SERVED = (quorum.DESCRIBE_QUORUM, cluster.UNREGISTER_BROKER)
"""Served on client listeners too, as Kafka's brokers do (forwarded to the controller)."""
CONTROLLER_APIS = tuple(api for api in (*quorum.APIS, *cluster.APIS) if api not in BROKER_SERVED)
"""Served on the controller listener only: neither advertised nor served to clients."""


async def test_controller_apis_are_not_advertised(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        body = {"client_software_name": "tests", "client_software_version": "1.0"}
        ranges = api_ranges(await client.request(API_VERSIONS, 3, body))
        assert not {api.key for api in CONTROLLER_APIS} & set(ranges)
        assert {api.key for api in BROKER_SERVED} <= set(ranges)


async def test_describe_quorum_names_the_quorum_of_one(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        body = {"topics": [{"topic_name": "__cluster_metadata",
                            "partitions": [{"partition_index": 0}]}]}  # fmt: skip
        answer = await client.request(quorum.DESCRIBE_QUORUM.key, 2, body)
    (partition,) = answer["topics"][0]["partitions"]
    assert partition["error_code"] == 0
    assert partition["leader_id"] == 0 and partition["leader_epoch"] >= 1
    assert [v["replica_id"] for v in partition["current_voters"]] == [0]
    assert partition["high_watermark"] == broker.broker.image.offset


async def test_a_well_formed_controller_api_request_closes_the_connection(
    broker: RunningBroker,
) -> None:
    # As for any API the broker does not route: no answer, the connection closes.
    for api in CONTROLLER_APIS:
        async with await broker.client() as client:
            await client.send(api.key, api.valid.highest, {})
            await client.assert_closed_by_broker()
    await assert_still_serving(broker)


async def test_unsupported_version_of_another_api_closes(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        await client.send(METADATA, 13, {"topics": None})
        await client.assert_closed_by_broker()


async def test_huge_array_count_closes_the_connection(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        frame = client.encode(METADATA, 1, {"topics": []}, correlation_id=9)
        hostile = frame[:-4] + struct.pack(">i", 2**31 - 1)
        await client.send_raw(hostile)
        await client.assert_closed_by_broker()
    await assert_still_serving(broker)


async def test_a_request_beyond_the_array_element_budget_closes(broker: RunningBroker) -> None:
    # Small in bytes (two bytes per empty topic name) but costly once decoded.
    names = REQUEST_ARRAY_ELEMENTS_MAX + 1
    async with await broker.client() as client:
        header = struct.pack(">hhih", METADATA, 1, 11, -1)
        body = struct.pack(">i", names) + b"\0\0" * names
        await client.send_raw(struct.pack(">i", len(header) + len(body)) + header + body)
        await client.assert_closed_by_broker()
    async with await broker.client() as client:
        names_within = [f"t{i}" for i in range(1000)]
        within = await client.request(
            METADATA, 9, metadata_request(*names_within, allow_auto_create=False)
        )
        assert [t["name"] for t in within["topics"]] == names_within
    await assert_still_serving(broker)


async def test_many_clients_at_once(broker: RunningBroker) -> None:
    async def one(i: int) -> None:
        async with await broker.client() as client:
            for version in range(3):
                assert (await client.request(API_VERSIONS, version))["error_code"] == 0

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(one, i)


async def test_clean_shutdown_answers_in_flight_and_refuses_new(broker: RunningBroker) -> None:
    client = await broker.client()
    await client.request(API_VERSIONS, 0)
    await broker.stop()
    await client.assert_closed_by_broker()
    try:
        await WireClient.connect(broker.network, broker.host, broker.port)
    except OSError:
        pass
    else:
        raise AssertionError("a stopped broker accepted a connection")


async def test_connections_beyond_max_connections_are_closed(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    running = await start_broker(local_config(tmp_path, max_connections=2))
    async with await running.client() as one, await running.client() as two:
        assert (await one.request(API_VERSIONS, 0))["error_code"] == 0
        assert (await two.request(API_VERSIONS, 0))["error_code"] == 0
        async with await running.client() as three:
            await three.send(API_VERSIONS, 0)
            await three.assert_closed_by_broker()
    # Closed connections free their places.
    await assert_still_serving(running)
