"""Admin APIs over the wire: topics, partitions, configs, records, cluster, epochs, producers.

The confluent-kafka AdminClient test is the "real client" check; the wire tests pin the
error codes and edge cases a client relies on.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.conftest import RunningBroker, StartBroker, append_as_leader, local_config
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, encode_batch

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")

CLIENT_TIMEOUT_S = 20
TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4


def create_topic_body(name: str, partitions: int = 1, **fields: Any) -> dict[str, Any]:
    topic = {
        "name": name,
        "num_partitions": partitions,
        "replication_factor": 1,
        "assignments": [],
        "configs": [],
    }
    topic.update(fields)
    return {"topics": [topic], "timeout_ms": 5_000, "validate_only": False}


async def create(broker: RunningBroker, name: str, partitions: int = 1, **fields: Any) -> Any:
    async with await broker.client() as client:
        response = await client.request(19, 7, create_topic_body(name, partitions, **fields))
    return response["topics"][0]


async def describe_topic_configs(broker: RunningBroker, name: str) -> dict[str, Any]:
    async with await broker.client() as client:
        response = await client.request(
            32,
            4,
            {
                "resources": [
                    {"resource_type": TOPIC_RESOURCE, "resource_name": name,
                     "configuration_keys": None}
                ],
                "include_synonyms": True,
                "include_documentation": True,
            },
        )  # fmt: skip
    [result] = response["results"]
    assert result["error_code"] == 0, result
    return {c["name"]: c for c in result["configs"]}


# -- confluent-kafka AdminClient


def admin_round_trip(bootstrap: str) -> dict[str, Any]:
    """Create, describe, alter, grow, delete with AdminClient; what it saw at each step."""
    admin = admin_module.AdminClient(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}
    )
    seen: dict[str, Any] = {}
    futures = admin.create_topics(
        [
            admin_module.NewTopic("orders", 3, 1, config={"retention.ms": "3600000"}),
            admin_module.NewTopic("too-replicated", 1, 3),
        ],
        operation_timeout=10,
    )
    futures["orders"].result(CLIENT_TIMEOUT_S)
    try:
        futures["too-replicated"].result(CLIENT_TIMEOUT_S)
    except confluent_kafka.KafkaException as exc:
        seen["too_replicated_error"] = exc.args[0].code()
    try:
        admin.create_topics([admin_module.NewTopic("orders", 1, 1)])["orders"].result(
            CLIENT_TIMEOUT_S
        )
    except confluent_kafka.KafkaException as exc:
        seen["duplicate_error"] = exc.args[0].code()

    metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    seen["partitions"] = sorted(metadata.topics["orders"].partitions)
    resource = admin_module.ConfigResource(admin_module.ResourceType.TOPIC, "orders")
    configs = admin.describe_configs([resource])[resource].result(CLIENT_TIMEOUT_S)
    seen["retention_before"] = (
        configs["retention.ms"].value,
        configs["retention.ms"].source,
        configs["segment.bytes"].is_default,
    )

    altered = admin_module.ConfigResource(
        admin_module.ResourceType.TOPIC,
        "orders",
        incremental_configs=[
            admin_module.ConfigEntry(
                "retention.ms", "7200000",
                incremental_operation=admin_module.AlterConfigOpType.SET,
            ),
            admin_module.ConfigEntry(
                "max.message.bytes", "65536",
                incremental_operation=admin_module.AlterConfigOpType.SET,
            ),
        ],
    )  # fmt: skip
    admin.incremental_alter_configs([altered])[altered].result(CLIENT_TIMEOUT_S)
    configs = admin.describe_configs([resource])[resource].result(CLIENT_TIMEOUT_S)
    seen["after_alter"] = (configs["retention.ms"].value, configs["max.message.bytes"].value)

    grow = admin.create_partitions([admin_module.NewPartitions("orders", 5)])
    grow["orders"].result(CLIENT_TIMEOUT_S)
    metadata = admin.list_topics(timeout=CLIENT_TIMEOUT_S)
    seen["partitions_after_grow"] = sorted(metadata.topics["orders"].partitions)

    cluster = admin.describe_cluster().result(CLIENT_TIMEOUT_S)
    seen["cluster"] = (cluster.cluster_id, [node.id for node in cluster.nodes])

    admin.delete_topics(["orders"], operation_timeout=10)["orders"].result(CLIENT_TIMEOUT_S)
    seen["topics_after_delete"] = sorted(admin.list_topics(timeout=CLIENT_TIMEOUT_S).topics)
    return seen


async def test_confluent_admin_client_creates_describes_alters_deletes(
    broker: RunningBroker,
) -> None:
    with trio.fail_after(4 * CLIENT_TIMEOUT_S):
        seen = await trio.to_thread.run_sync(admin_round_trip, broker.bootstrap)

    kafka_error = confluent_kafka.KafkaError
    assert seen["too_replicated_error"] == kafka_error.INVALID_REPLICATION_FACTOR
    assert seen["duplicate_error"] == kafka_error.TOPIC_ALREADY_EXISTS
    assert seen["partitions"] == [0, 1, 2]
    assert seen["retention_before"] == (
        "3600000",
        admin_module.ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
        True,
    )
    assert seen["after_alter"] == ("7200000", "65536")
    assert seen["partitions_after_grow"] == [0, 1, 2, 3, 4]
    assert seen["cluster"] == (broker.broker.image.cluster_id, [0])
    assert "orders" not in seen["topics_after_delete"]
    assert broker.broker.replicas.log("orders", 0) is None


# -- CreateTopics


async def test_create_topics_answers_each_topic_on_its_own(broker: RunningBroker) -> None:
    body = {
        "topics": [
            create_topic_body("good", 2)["topics"][0],
            create_topic_body("twice")["topics"][0],
            create_topic_body("twice")["topics"][0],
            create_topic_body("bad/name")["topics"][0],
            create_topic_body("bad-config", configs=[{"name": "retention.ms", "value": "x"}])[
                "topics"
            ][0],
            create_topic_body("unknown-config", configs=[{"name": "no.such", "value": "1"}])[
                "topics"
            ][0],
            create_topic_body("zero", 0)["topics"][0],
        ],
        "timeout_ms": 5_000,
        "validate_only": False,
    }
    async with await broker.client() as client:
        response = await client.request(19, 7, body)
    codes = [(t["name"], t["error_code"]) for t in response["topics"]]
    assert codes == [
        ("good", 0),
        ("twice", ErrorCode.INVALID_REQUEST),
        ("twice", ErrorCode.INVALID_REQUEST),
        ("bad/name", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("bad-config", ErrorCode.INVALID_CONFIG),
        ("unknown-config", ErrorCode.INVALID_CONFIG),
        ("zero", ErrorCode.INVALID_PARTITIONS),
    ]
    assert all(t["error_message"] for t in response["topics"][1:])
    assert sorted(broker.broker.image.topic_names()) == ["good"]
    good = response["topics"][0]
    assert good["topic_id"] == broker.broker.image.topic("good").topic_id  # type: ignore[union-attr]
    assert (good["num_partitions"], good["replication_factor"]) == (2, 1)
    assert {c["name"] for c in good["configs"]} >= {"retention.ms", "segment.bytes"}


async def test_validate_only_creates_nothing(broker: RunningBroker) -> None:
    body = create_topic_body("dry-run", 4)
    body["validate_only"] = True
    async with await broker.client() as client:
        response = await client.request(19, 5, body)
    [topic] = response["topics"]
    assert (topic["error_code"], topic["num_partitions"]) == (0, 4)
    assert broker.broker.image.topic("dry-run") is None


async def test_replication_factor_above_the_cluster_size_is_refused(
    broker: RunningBroker,
) -> None:
    topic = await create(broker, "replicated", replication_factor=2)
    assert topic["error_code"] == ErrorCode.INVALID_REPLICATION_FACTOR


async def test_manual_assignment_must_name_known_brokers(broker: RunningBroker) -> None:
    assigned = await create(
        broker,
        "assigned",
        -1,
        replication_factor=-1,
        assignments=[
            {"partition_index": 0, "broker_ids": [0]},
            {"partition_index": 1, "broker_ids": [0]},
        ],
    )
    unknown = await create(
        broker,
        "unknown-broker",
        -1,
        replication_factor=-1,
        assignments=[{"partition_index": 0, "broker_ids": [7]}],
    )
    assert assigned["error_code"] == 0
    assert assigned["num_partitions"] == 2
    assert unknown["error_code"] == ErrorCode.INVALID_REPLICA_ASSIGNMENT


# -- DeleteTopics


async def test_delete_topics_by_name_and_by_id(broker: RunningBroker) -> None:
    first = await create(broker, "by-name")
    second = await create(broker, "by-id")
    missing_id = uuid.UUID(int=12345)
    async with await broker.client() as client:
        response = await client.request(
            20,
            6,
            {
                "topics": [
                    {"name": "by-name", "topic_id": uuid.UUID(int=0)},
                    {"name": None, "topic_id": second["topic_id"]},
                    {"name": None, "topic_id": missing_id},
                    {"name": "never-existed", "topic_id": uuid.UUID(int=0)},
                ],
                "timeout_ms": 5_000,
            },
        )
    results = [(r["name"], r["topic_id"], r["error_code"]) for r in response["responses"]]
    assert results == [
        ("by-name", first["topic_id"], 0),
        ("by-id", second["topic_id"], 0),
        (None, missing_id, ErrorCode.UNKNOWN_TOPIC_ID),
        ("never-existed", uuid.UUID(int=0), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert broker.broker.image.topic_names() == []


async def test_a_deleted_topic_can_be_created_again_empty(broker: RunningBroker) -> None:
    await create(broker, "reborn")
    partition_log = broker.broker.replicas.log("reborn", 0)
    assert partition_log is not None
    partition_log.append(encode_batch([RecordInput(value=b"old")]), leader_epoch=0)
    async with await broker.client() as client:
        deleted = await client.request(20, 4, {"topic_names": ["reborn"], "timeout_ms": 5_000})
    assert deleted["responses"][0]["error_code"] == 0
    await create(broker, "reborn")
    reborn_log = broker.broker.replicas.log("reborn", 0)
    assert reborn_log is not None and reborn_log.log_end_offset == 0


# -- CreatePartitions


async def test_partitions_grow_but_never_shrink(broker: RunningBroker) -> None:
    await create(broker, "growing", 2)

    async def grow(count: int, validate_only: bool = False) -> int:
        async with await broker.client() as client:
            response = await client.request(
                37,
                3,
                {
                    "topics": [{"name": "growing", "count": count, "assignments": None}],
                    "timeout_ms": 5_000,
                    "validate_only": validate_only,
                },
            )
        return int(response["results"][0]["error_code"])

    assert await grow(6, validate_only=True) == 0
    assert len(broker.broker.image.topic("growing").partitions) == 2  # type: ignore[union-attr]
    assert await grow(4) == 0
    assert await grow(3) == ErrorCode.INVALID_PARTITIONS
    assert await grow(4) == ErrorCode.INVALID_PARTITIONS
    assert [broker.broker.replicas.log("growing", p) is not None for p in range(5)] == [
        True, True, True, True, False,
    ]  # fmt: skip


# -- configs


async def test_alter_configs_replaces_and_incremental_alter_edits(broker: RunningBroker) -> None:
    await create(
        broker, "tuned", configs=[{"name": "retention.ms", "value": "1000"},
                                  {"name": "segment.bytes", "value": "1048576"}]
    )  # fmt: skip

    async def incremental(*ops: tuple[str, int, str | None]) -> Any:
        async with await broker.client() as client:
            response = await client.request(
                44,
                1,
                {
                    "resources": [
                        {
                            "resource_type": TOPIC_RESOURCE,
                            "resource_name": "tuned",
                            "configs": [
                                {"name": n, "config_operation": op, "value": v} for n, op, v in ops
                            ],
                        }
                    ],
                    "validate_only": False,
                },
            )
        return response["responses"][0]

    result = await incremental(("retention.ms", 0, "2000"), ("segment.bytes", 1, None))
    assert result["error_code"] == 0
    configs = await describe_topic_configs(broker, "tuned")
    assert configs["retention.ms"]["value"] == "2000"
    assert configs["segment.bytes"]["config_source"] == 5  # DEFAULT_CONFIG again
    assert configs["segment.bytes"]["value"] == str(broker.broker.config.log_segment_bytes)
    partition_log = broker.broker.replicas.log("tuned", 0)
    assert partition_log is not None and partition_log.config.retention_ms == 2000

    bad = await incremental(("retention.ms", 0, "soon"))
    assert bad["error_code"] == ErrorCode.INVALID_CONFIG
    assert "retention.ms" in bad["error_message"]
    not_a_list = await incremental(("retention.ms", 2, "5"))
    assert not_a_list["error_code"] == ErrorCode.INVALID_CONFIG
    unknown_op = await incremental(("retention.ms", 9, "5"))
    assert unknown_op["error_code"] == ErrorCode.INVALID_REQUEST
    assert (await describe_topic_configs(broker, "tuned"))["retention.ms"]["value"] == "2000"

    async with await broker.client() as client:
        replaced = await client.request(
            33,
            2,
            {
                "resources": [
                    {
                        "resource_type": TOPIC_RESOURCE,
                        "resource_name": "tuned",
                        "configs": [{"name": "max.message.bytes", "value": "4096"}],
                    }
                ],
                "validate_only": False,
            },
        )
    assert replaced["responses"][0]["error_code"] == 0
    configs = await describe_topic_configs(broker, "tuned")
    overridden = {name for name, c in configs.items() if c["config_source"] == 1}
    assert overridden == {"max.message.bytes"}


async def test_describe_configs_shows_sources_synonyms_and_broker_configs(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    broker = await start_broker(local_config(tmp_path / "data", log_retention_ms=60_000))
    await create(broker, "plain")
    configs = await describe_topic_configs(broker, "plain")
    retention = configs["retention.ms"]
    assert (retention["value"], retention["config_source"]) == ("60000", 4)
    assert [(s["name"], s["source"]) for s in retention["synonyms"]] == [
        ("log.retention.ms", 4),
        ("log.retention.ms", 5),
    ]
    assert retention["documentation"]
    async with await broker.client() as client:
        response = await client.request(
            32,
            1,
            {
                "resources": [
                    {"resource_type": BROKER_RESOURCE, "resource_name": "0",
                     "configuration_keys": ["log.retention.ms", "num.partitions"]},
                    {"resource_type": BROKER_RESOURCE, "resource_name": "9",
                     "configuration_keys": None},
                    {"resource_type": TOPIC_RESOURCE, "resource_name": "absent",
                     "configuration_keys": None},
                ],
                "include_synonyms": False,
            },
        )  # fmt: skip
    this_broker, other_broker, absent = response["results"]
    assert {c["name"]: (c["value"], c["read_only"]) for c in this_broker["configs"]} == {
        "log.retention.ms": ("60000", True),
        "num.partitions": ("1", True),
    }
    assert other_broker["error_code"] == ErrorCode.INVALID_REQUEST
    assert absent["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_topic_changes_survive_a_restart(start_broker: StartBroker, tmp_path: Path) -> None:
    config = local_config(tmp_path / "data")
    first = await start_broker(config)
    await create(first, "durable", configs=[{"name": "retention.ms", "value": "5000"}])
    async with await first.client() as client:
        await client.request(
            37,
            3,
            {"topics": [{"name": "durable", "count": 3, "assignments": None}],
             "timeout_ms": 5_000, "validate_only": False},
        )  # fmt: skip
        await client.request(
            44,
            1,
            {"resources": [{"resource_type": TOPIC_RESOURCE, "resource_name": "durable",
                            "configs": [{"name": "segment.ms", "config_operation": 0,
                                         "value": "60000"}]}],
             "validate_only": False},
        )  # fmt: skip
    await first.stop()
    second = await start_broker(config)
    topic = second.broker.image.topic("durable")
    assert topic is not None
    assert len(topic.partitions) == 3
    assert dict(topic.configs) == {"retention.ms": "5000", "segment.ms": "60000"}
    log_2 = second.broker.replicas.log("durable", 2)
    assert log_2 is not None and log_2.config.segment_ms == 60000


# -- DeleteRecords, OffsetForLeaderEpoch, DescribeProducers, DescribeCluster


async def test_delete_records_moves_the_log_start(broker: RunningBroker) -> None:
    await create(broker, "trimmed", 2)
    partition_log = broker.broker.replicas.log("trimmed", 0)
    assert partition_log is not None
    for i in range(10):
        append_as_leader(broker.broker, "trimmed", 0, encode_batch([RecordInput(value=b"%d" % i)]))
    async with await broker.client() as client:
        response = await client.request(
            21,
            2,
            {
                "topics": [
                    {"name": "trimmed", "partitions": [
                        {"partition_index": 0, "offset": 4},
                        {"partition_index": 1, "offset": 1},
                        {"partition_index": 7, "offset": 0},
                    ]},
                    {"name": "absent", "partitions": [{"partition_index": 0, "offset": -1}]},
                ],
                "timeout_ms": 5_000,
            },
        )  # fmt: skip
        [trimmed, absent] = response["topics"]
        assert [(p["error_code"], p["low_watermark"]) for p in trimmed["partitions"]] == [
            (0, 4),
            (ErrorCode.OFFSET_OUT_OF_RANGE, -1),
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
        ]
        assert absent["partitions"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        everything = await client.request(
            21,
            0,
            {"topics": [{"name": "trimmed", "partitions": [{"partition_index": 0, "offset": -1}]}],
             "timeout_ms": 5_000},
        )  # fmt: skip
    assert everything["topics"][0]["partitions"][0]["low_watermark"] == 10
    assert partition_log.log_start_offset == 10


async def test_offset_for_leader_epoch_answers_the_current_epoch_end(
    broker: RunningBroker,
) -> None:
    await create(broker, "epochs")
    partition_log = broker.broker.replicas.log("epochs", 0)
    assert partition_log is not None
    async with await broker.client() as client:

        async def ask(epoch: int, current: int = -1) -> tuple[int, int, int]:
            response = await client.request(
                23,
                2,
                {"topics": [{"topic": "epochs", "partitions": [
                    {"partition": 0, "current_leader_epoch": current, "leader_epoch": epoch}]}]},
            )  # fmt: skip
            p = response["topics"][0]["partitions"][0]
            return p["error_code"], p["leader_epoch"], p["end_offset"]

        assert await ask(0) == (0, 0, 0)
        for i in range(3):
            batch = encode_batch([RecordInput(value=b"%d" % i)])
            append_as_leader(broker.broker, "epochs", 0, batch)
        assert await ask(0) == (0, 0, 3)
        assert await ask(5) == (0, -1, -1)
        assert await ask(0, current=3) == (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1)


async def test_describe_producers_lists_idempotent_producers(broker: RunningBroker) -> None:
    await create(broker, "idempotent")
    batch = encode_batch(
        [RecordInput(value=b"a"), RecordInput(value=b"b")],
        producer_id=4242,
        producer_epoch=3,
        base_sequence=0,
    )
    async with await broker.client() as client:
        produced = await client.request(
            0,
            8,
            {"transactional_id": None, "acks": -1, "timeout_ms": 5_000,
             "topic_data": [{"name": "idempotent",
                             "partition_data": [{"index": 0, "records": batch}]}]},
        )  # fmt: skip
        assert produced["responses"][0]["partition_responses"][0]["error_code"] == 0
        response = await client.request(
            61, 0, {"topics": [{"name": "idempotent", "partition_indexes": [0, 3]}]}
        )
    present, missing = response["topics"][0]["partitions"]
    assert [
        (p["producer_id"], p["producer_epoch"], p["last_sequence"])
        for p in present["active_producers"]
    ] == [(4242, 3, 1)]
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_describe_cluster(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        response = await client.request(60, 1, {"include_cluster_authorized_operations": False,
                                                "endpoint_type": 1})  # fmt: skip
        controllers = await client.request(
            60, 1, {"include_cluster_authorized_operations": False, "endpoint_type": 2}
        )
    assert response["error_code"] == 0
    assert response["cluster_id"] == broker.broker.image.cluster_id
    assert [(b["broker_id"], b["host"], b["port"]) for b in response["brokers"]] == [
        (0, broker.host, broker.port)
    ]
    assert controllers["error_code"] == ErrorCode.MISMATCHED_ENDPOINT_TYPE
