"""librdkafka (confluent-kafka) accepts our ApiVersions and Metadata answers."""

from __future__ import annotations

import pytest
import trio

from tests.integration.conftest import RunningBroker
from tests.integration.wire import metadata_request

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")


async def test_admin_client_lists_auto_created_topics(broker: RunningBroker) -> None:
    async with await broker.client() as client:
        created = await client.request(3, 12, metadata_request("rdkafka-topic"))
    assert created["topics"][0]["error_code"] == 0

    def list_topics() -> object:
        admin = admin_module.AdminClient(
            {"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"}
        )
        return admin.list_topics(timeout=10)

    with trio.fail_after(20):
        metadata = await trio.to_thread.run_sync(list_topics)

    assert metadata.cluster_id == broker.broker.image.cluster_id
    assert metadata.controller_id == 0
    assert {node_id: (b.host, b.port) for node_id, b in metadata.brokers.items()} == {
        0: (broker.host, broker.port)
    }
    topic = metadata.topics["rdkafka-topic"]
    assert topic.error is None
    assert list(topic.partitions) == [0]
    partition = topic.partitions[0]
    assert (partition.leader, partition.replicas, partition.isrs) == (0, [0], [0])
