"""The data path end to end: Produce, Fetch, ListOffsets and InitProducerId, through
librdkafka (confluent-kafka) and over the raw wire."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tests.integration.wire import fetch_request, produce_request
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, decode_batches, encode_batch
from tidelog.client.protocol.schema import Message

confluent_kafka = pytest.importorskip("confluent_kafka")

PRODUCE, FETCH, LIST_OFFSETS, INIT_PRODUCER_ID = 0, 1, 2, 22
RECORDS_PER_RUN = 60
PARTITIONS = 3
CLIENT_TIMEOUT_S = 30


def list_offsets_request(topic: str, timestamp: int) -> Message:
    return {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [
            {
                "name": topic,
                "partitions": [
                    {"partition_index": 0, "current_leader_epoch": -1, "timestamp": timestamp}
                ],
            }
        ],
    }


def one_partition(response: Message) -> Message:
    (topic,) = response["responses"] if "responses" in response else response["topics"]
    key = "partition_responses" if "partition_responses" in topic else "partitions"
    (partition,) = topic[key]
    return partition


def batch(values: list[bytes], **kwargs: Any) -> bytes:
    return encode_batch(
        [RecordInput(value=v, timestamp_ms=1000 + i) for i, v in enumerate(values)], **kwargs
    )


def fetched_values(partition: Message) -> list[tuple[int, bytes | None]]:
    records = partition["records"]
    if records is None:
        return []
    return [
        (r.offset, r.value)
        for _, batch_records in decode_batches(bytes(records))
        for r in batch_records
    ]


# -- librdkafka


def produce_with_librdkafka(bootstrap: str, topic: str, config: dict[str, Any]) -> list[Any]:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "linger.ms": 5, **config}
    )
    reports: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        reports.append((error, message.partition(), message.offset()))

    for i in range(RECORDS_PER_RUN):
        producer.produce(
            topic,
            value=b"value-%d" % i,
            key=b"key-%d" % i if i % 7 else None,
            headers=[("h", b"%d" % i), ("empty", None)] if i % 2 else None,
            partition=i % PARTITIONS,
            on_delivery=on_delivery,
        )
        producer.poll(0)
    remaining = producer.flush(CLIENT_TIMEOUT_S)
    assert remaining == 0, f"{remaining} records not delivered"
    return reports


def consume_with_librdkafka(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": "unused-assign-only",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(PARTITIONS)
            ]
        )
        # Seeking partition 0 back to 0 explicitly exercises seek as well as the
        # ListOffsets lookup of OFFSET_BEGINNING.
        consumer.seek(confluent_kafka.TopicPartition(topic, 0, 0))
        received: list[Any] = []
        for _ in range(400):
            if len(received) >= count:
                break
            message = consumer.poll(0.1)
            if message is None:
                continue
            assert message.error() is None, message.error()
            received.append(
                (
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    message.headers(),
                )
            )
        return received
    finally:
        consumer.close()


CLIENT_CONFIGS = [
    pytest.param({"compression.type": codec, "acks": "all"}, id=f"{codec}-acks-all")
    for codec in ("none", "gzip", "snappy", "lz4", "zstd")
] + [
    pytest.param({"acks": "0"}, id="acks-0"),
    pytest.param({"acks": "1"}, id="acks-1"),
    pytest.param({"enable.idempotence": True, "compression.type": "lz4"}, id="idempotent-lz4"),
    pytest.param({"enable.idempotence": True, "compression.type": "zstd"}, id="idempotent-zstd"),
]


@pytest.mark.parametrize("config", CLIENT_CONFIGS)
async def test_librdkafka_produce_then_consume(
    broker: RunningBroker, config: dict[str, Any]
) -> None:
    topic = "rdk-data"
    await broker.broker.topics.create_topic(topic, num_partitions=PARTITIONS)

    with trio.fail_after(CLIENT_TIMEOUT_S):
        reports = await trio.to_thread.run_sync(
            produce_with_librdkafka, broker.bootstrap, topic, config
        )
    assert [error for error, _, _ in reports] == [None] * RECORDS_PER_RUN
    if config.get("acks") != "0":
        # Offsets in each partition are dense and follow the produce order.
        per_partition: dict[int, list[int]] = {}
        for _, partition, offset in reports:
            per_partition.setdefault(partition, []).append(offset)
        assert {p: sorted(o) for p, o in per_partition.items()} == {
            p: list(range(RECORDS_PER_RUN // PARTITIONS)) for p in range(PARTITIONS)
        }

    with trio.fail_after(CLIENT_TIMEOUT_S):
        received = await trio.to_thread.run_sync(
            consume_with_librdkafka, broker.bootstrap, topic, RECORDS_PER_RUN
        )
    assert len(received) == RECORDS_PER_RUN
    expected = {}
    for i in range(RECORDS_PER_RUN):
        partition = i % PARTITIONS
        expected[(partition, i // PARTITIONS)] = (
            b"key-%d" % i if i % 7 else None,
            b"value-%d" % i,
            [("h", b"%d" % i), ("empty", None)] if i % 2 else None,
        )
    got = {(p, o): (k, v, h) for p, o, k, v, h in received}
    assert got == expected
    for p in range(PARTITIONS):
        offsets = [o for partition, o, *_ in received if partition == p]
        assert offsets == sorted(offsets), "records of a partition arrive in order"

    # Checked after consuming: with acks=0 the delivery reports precede the appends.
    producer_ids = set()
    for p in range(PARTITIONS):
        partition_log = broker.broker.replicas.log(topic, p)
        assert partition_log is not None
        producer_ids |= {h.producer_id for h in partition_log.batches_from(0)}
    # An idempotent producer's batches carry the id InitProducerId gave it.
    assert (-1 not in producer_ids) == bool(config.get("enable.idempotence"))


# -- raw wire


async def test_bad_crc_is_corrupt_message_and_the_broker_keeps_serving(
    broker: RunningBroker,
) -> None:
    await broker.broker.topics.create_topic("crc")
    good = batch([b"a", b"b"])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    async with await broker.client() as client:
        response = await client.request(PRODUCE, 8, produce_request("crc", bytes(corrupt)))
        assert one_partition(response)["error_code"] == ErrorCode.CORRUPT_MESSAGE
        response = await client.request(PRODUCE, 8, produce_request("crc", good))
        assert one_partition(response)["error_code"] == ErrorCode.NONE
        assert one_partition(response)["base_offset"] == 0
        fetched = one_partition(await client.request(FETCH, 12, fetch_request("crc", 0)))
    assert fetched["error_code"] == ErrorCode.NONE
    assert fetched["high_watermark"] == 2
    assert fetched_values(fetched) == [(0, b"a"), (1, b"b")]


async def test_batch_validation_errors(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("invalid", configs={"max.message.bytes": "2000"})
    big = batch([b"x" * 5000])
    legacy = bytearray(batch([b"a"]))
    legacy[16] = 1  # magic
    async with await broker.client() as client:
        too_big = await client.request(PRODUCE, 8, produce_request("invalid", big))
        two = await client.request(
            PRODUCE, 8, produce_request("invalid", batch([b"1"]) + batch([b"2"]))
        )
        old_format = await client.request(PRODUCE, 8, produce_request("invalid", bytes(legacy)))
        missing = await client.request(PRODUCE, 8, produce_request("invalid", None))
        bad_partition = await client.request(
            PRODUCE, 8, produce_request("invalid", batch([b"1"]), partition=7)
        )
        ok = await client.request(PRODUCE, 8, produce_request("invalid", batch([b"ok"])))
    assert one_partition(too_big)["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
    assert one_partition(two)["error_code"] == ErrorCode.INVALID_RECORD
    assert one_partition(old_format)["error_code"] == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert one_partition(missing)["error_code"] == ErrorCode.INVALID_RECORD
    assert one_partition(bad_partition)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert one_partition(ok)["error_code"] == ErrorCode.NONE
    assert one_partition(ok)["base_offset"] == 0


async def test_produce_errors_stay_in_their_partition(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("mixed", num_partitions=2)
    corrupt = bytearray(batch([b"bad"]))
    corrupt[-1] ^= 0x01
    request = produce_request("mixed", batch([b"good"]))
    request["topic_data"][0]["partition_data"].append({"index": 1, "records": bytes(corrupt)})
    async with await broker.client() as client:
        response = await client.request(PRODUCE, 7, request)
    partitions = {p["index"]: p for p in response["responses"][0]["partition_responses"]}
    assert partitions[0]["error_code"] == ErrorCode.NONE
    assert partitions[1]["error_code"] == ErrorCode.CORRUPT_MESSAGE
    log0 = broker.broker.replicas.log("mixed", 0)
    log1 = broker.broker.replicas.log("mixed", 1)
    assert log0 is not None and log1 is not None
    assert (log0.log_end_offset, log1.log_end_offset) == (1, 0)


async def test_unknown_topic_is_auto_created_or_refused(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    allowing = await start_broker(local_config(tmp_path / "a"))
    refusing = await start_broker(local_config(tmp_path / "r", auto_create_topics_enable=False))
    async with await allowing.client() as client:
        created = await client.request(PRODUCE, 8, produce_request("fresh", batch([b"v"])))
    async with await refusing.client() as client:
        refused = await client.request(PRODUCE, 8, produce_request("fresh", batch([b"v"])))
    assert one_partition(created)["error_code"] == ErrorCode.NONE
    assert allowing.broker.image.topic("fresh") is not None
    assert one_partition(refused)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert refusing.broker.image.topic("fresh") is None


async def test_acks_zero_gets_no_response_and_failure_closes(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("quiet")
    corrupt = bytearray(batch([b"bad"]))
    corrupt[-1] ^= 0x01
    async with await broker.client() as client:
        await client.send(PRODUCE, 8, produce_request("quiet", batch([b"v"]), acks=0))
        # The next answer on the connection is the ListOffsets one: acks=0 sent nothing.
        latest = one_partition(
            await client.request(LIST_OFFSETS, 5, list_offsets_request("quiet", -1))
        )
        assert latest["offset"] == 1
        await client.send(PRODUCE, 8, produce_request("quiet", bytes(corrupt), acks=0))
        await client.assert_closed_by_broker()
    async with await broker.client() as client:
        response = await client.request(PRODUCE, 8, produce_request("quiet", batch([b"v"]), acks=7))
    assert one_partition(response)["error_code"] == ErrorCode.INVALID_REQUIRED_ACKS


async def test_old_produce_versions_are_unsupported(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        versions = await client.request(
            18, 3, {"client_software_name": "t", "client_software_version": "1"}
        )
    ranges = {k["api_key"]: (k["min_version"], k["max_version"]) for k in versions["api_keys"]}
    # Produce 0-2 are advertised (old librdkafka compresses with gzip/snappy only then) but
    # not served: such a request closes the connection, and the broker serves on.
    assert ranges[PRODUCE] == (0, 8)
    assert ranges[FETCH] == (4, 12)
    assert ranges[LIST_OFFSETS] == (1, 5)
    assert ranges[INIT_PRODUCER_ID] == (0, 4)
    async with await broker.client() as client:
        header = struct.pack(">hhih", PRODUCE, 2, 7, -1)
        body = struct.pack(">hii", 1, 1000, 0)
        await client.send_raw(struct.pack(">i", len(header + body)) + header + body)
        await client.assert_closed_by_broker()
    async with await broker.client() as client:
        assert (
            await client.request(
                18, 3, {"client_software_name": "t", "client_software_version": "1"}
            )
        )["error_code"] == 0


async def test_idempotent_produce_duplicates_and_sequence_errors(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("idem")
    async with await broker.client() as client:
        init = await client.request(
            INIT_PRODUCER_ID, 4, {"transactional_id": None, "transaction_timeout_ms": 60000}
        )
        assert init["error_code"] == ErrorCode.NONE
        pid, epoch = init["producer_id"], init["producer_epoch"]
        other = await client.request(
            INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60000}
        )
        assert other["producer_id"] != pid

        def idempotent(values: list[bytes], sequence: int, producer_epoch: int = epoch) -> bytes:
            return batch(
                values, producer_id=pid, producer_epoch=producer_epoch, base_sequence=sequence
            )

        async def produce(records: bytes) -> Message:
            return one_partition(await client.request(PRODUCE, 8, produce_request("idem", records)))

        first = await produce(idempotent([b"a", b"b"], 0))
        second = await produce(idempotent([b"c"], 2))
        retried_first = await produce(idempotent([b"a", b"b"], 0))
        gap = await produce(idempotent([b"d"], 5))
        bumped = await produce(idempotent([b"e"], 0, producer_epoch=epoch + 1))
        fenced = await produce(idempotent([b"f"], 1, producer_epoch=epoch))
    assert (first["error_code"], first["base_offset"]) == (ErrorCode.NONE, 0)
    assert (second["error_code"], second["base_offset"]) == (ErrorCode.NONE, 2)
    assert (retried_first["error_code"], retried_first["base_offset"]) == (ErrorCode.NONE, 0)
    assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert (bumped["error_code"], bumped["base_offset"]) == (ErrorCode.NONE, 3)
    assert fenced["error_code"] == ErrorCode.INVALID_PRODUCER_EPOCH
    log = broker.broker.replicas.log("idem", 0)
    assert log is not None and log.log_end_offset == 4


async def test_producer_state_survives_a_restart(start_broker: StartBroker, tmp_path: Path) -> None:
    config = local_config(tmp_path / "data")
    records = batch([b"x", b"y"], producer_id=77, producer_epoch=0, base_sequence=0)
    first = await start_broker(config)
    await first.broker.topics.create_topic("durable")
    async with await first.client() as client:
        await client.request(PRODUCE, 8, produce_request("durable", batch([b"plain"])))
        original = one_partition(
            await client.request(PRODUCE, 8, produce_request("durable", records))
        )
    await first.stop()
    second = await start_broker(config)
    async with await second.client() as client:
        retried = one_partition(
            await client.request(PRODUCE, 8, produce_request("durable", records))
        )
        out_of_order = one_partition(
            await client.request(
                PRODUCE,
                8,
                produce_request(
                    "durable", batch([b"z"], producer_id=77, producer_epoch=0, base_sequence=9)
                ),
            )
        )
    assert (original["error_code"], original["base_offset"]) == (ErrorCode.NONE, 1)
    assert (retried["error_code"], retried["base_offset"]) == (ErrorCode.NONE, 1)
    assert out_of_order["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


async def test_fetch_long_poll_wakes_on_append(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("poll")
    result: list[Message] = []
    async with await broker.client() as fetcher, await broker.client() as producer:

        async def fetch() -> None:
            result.append(
                await fetcher.request(FETCH, 12, fetch_request("poll", 0, max_wait_ms=20_000))
            )

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                # The fetch is parked once the broker has registered its watch; wait for that
                # state instead of sleeping.
                await trio.testing.wait_all_tasks_blocked()
                await client_produce(producer, "poll", b"wake")
    (response,) = result
    assert fetched_values(one_partition(response)) == [(0, b"wake")]


async def client_produce(client: Any, topic: str, value: bytes) -> None:
    response = await client.request(PRODUCE, 8, produce_request(topic, batch([value])))
    assert one_partition(response)["error_code"] == ErrorCode.NONE


async def test_fetch_returns_empty_after_max_wait(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("idle")
    async with await broker.client() as client:
        with trio.fail_after(5):
            response = await client.request(FETCH, 12, fetch_request("idle", 0, max_wait_ms=50))
    partition = one_partition(response)
    assert response["session_id"] == 0
    # An empty record set, not null: librdkafka rejects a null one.
    assert partition["records"] is not None
    assert (partition["error_code"], bytes(partition["records"])) == (ErrorCode.NONE, b"")
    assert (partition["high_watermark"], partition["last_stable_offset"]) == (0, 0)


async def test_fetch_limits_and_offset_out_of_range(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("limits")
    async with await broker.client() as client:
        for i in range(3):
            await client_produce(client, "limits", b"%d" % i * 300)
        tiny = one_partition(
            await client.request(FETCH, 11, fetch_request("limits", 0, max_bytes=10))
        )
        middle = one_partition(await client.request(FETCH, 4, fetch_request("limits", 1)))
        beyond = one_partition(await client.request(FETCH, 12, fetch_request("limits", 4)))
        at_end = one_partition(await client.request(FETCH, 12, fetch_request("limits", 3)))
    # KIP-74: the first batch comes whole even over MaxBytes, and only that one.
    assert [offset for offset, _ in fetched_values(tiny)] == [0]
    assert [offset for offset, _ in fetched_values(middle)] == [1, 2]
    assert beyond["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
    assert (at_end["error_code"], bytes(at_end["records"])) == (ErrorCode.NONE, b"")


async def test_list_offsets(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("times")
    records = encode_batch([RecordInput(value=b"%d" % t, timestamp_ms=t) for t in (100, 200, 300)])
    async with await broker.client() as client:
        await client.request(PRODUCE, 8, produce_request("times", records))

        async def lookup(timestamp: int) -> tuple[int, int]:
            partition = one_partition(
                await client.request(LIST_OFFSETS, 5, list_offsets_request("times", timestamp))
            )
            assert partition["error_code"] == ErrorCode.NONE
            return partition["offset"], partition["timestamp"]

        assert (await lookup(-2))[0] == 0
        assert (await lookup(-1))[0] == 3
        assert await lookup(150) == (1, 200)
        assert await lookup(300) == (2, 300)
        assert (await lookup(301))[0] == -1
        missing = one_partition(
            await client.request(LIST_OFFSETS, 1, list_offsets_request("no-such-topic", -1))
        )
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_log_append_time_topic(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic(
        "stamped", configs={"message.timestamp.type": "LogAppendTime"}
    )
    before = broker.broker.now_ms()
    async with await broker.client() as client:
        response = one_partition(
            await client.request(PRODUCE, 8, produce_request("stamped", batch([b"v"])))
        )
    assert response["error_code"] == ErrorCode.NONE
    assert before <= response["log_append_time_ms"] <= broker.broker.now_ms()
