"""The admin client against the real in-process broker, over TCP and TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tidelog.broker.config import ListenerConfig, TlsConfig
from tidelog.client.admin import Admin, ConfigResource
from tidelog.client.errors import (
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.client.producer import Producer
from tidelog.client.protocol.configs import ConfigResourceType
from tidelog.client.structs import NewTopic, TopicPartition

TIMEOUT_S = 30


def admin(broker: RunningBroker, **config: Any) -> Admin:
    return Admin(bootstrap_servers=broker.bootstrap, **config)


async def test_describe_cluster_and_topics_through_metadata(broker: RunningBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with Producer(bootstrap_servers=broker.bootstrap) as producer:
            assert await producer.partitions_for("described") == [0]  # auto-created
        async with admin(broker) as a:
            cluster = await a.describe_cluster()
            topics = await a.list_topics()
            described = await a.describe_topics(["described"])
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.describe_topics(["never-created"])
    assert cluster.cluster_id == broker.broker.image.cluster_id
    assert [(b.node_id, b.host, b.port) for b in cluster.brokers] == [(0, broker.host, broker.port)]
    assert cluster.controller_id == 0
    assert "described" in topics
    partition = described["described"].partitions[0]
    assert (partition.leader, partition.replicas, partition.isr) == (0, (0,), (0,))


async def test_unreachable_cluster_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def refuse(host: str, port: int) -> trio.abc.Stream:
        raise OSError("connection refused")

    async with Admin(
        bootstrap_servers="127.0.0.1:1", connector=refuse, default_api_timeout_ms=5_000
    ) as a:
        started = trio.current_time()
        with pytest.raises(KafkaTimeoutError):
            await a.list_topics()
        assert trio.current_time() - started <= 5.0 + 1e-6


async def test_tls_connection(start_broker: StartBroker, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    listener = ListenerConfig(
        name="SSL", host="127.0.0.1", port=0, tls=TlsConfig(certfile=str(tmp_path / "server.pem"))
    )
    running = await start_broker(local_config(tmp_path / "data", listeners=(listener,)))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(TIMEOUT_S):
        async with Admin(
            bootstrap_servers=running.bootstrap, security_protocol="SSL", ssl_context=context
        ) as a:
            cluster = await a.describe_cluster()
    assert [(b.host, b.port) for b in cluster.brokers] == [running.address("SSL")]
    # Without trusting the broker's CA the handshake fails and nothing is learned.
    async with Admin(
        bootstrap_servers=running.bootstrap,
        security_protocol="SSL",
        default_api_timeout_ms=1_000,
        reconnect_backoff_ms=10,
    ) as untrusting:
        with pytest.raises(KafkaTimeoutError):
            await untrusting.describe_cluster()


async def test_create_list_describe_delete_topics(broker: RunningBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin(broker) as a:
            await a.create_topics(
                [
                    NewTopic(
                        "orders",
                        num_partitions=3,
                        replication_factor=1,
                        configs={"retention.ms": "3600000"},
                    )
                ]
            )
            with pytest.raises(TopicAlreadyExistsError, match="orders"):
                await a.create_topics([NewTopic("orders", num_partitions=1)])
            await a.create_topics([NewTopic("checked", num_partitions=2)], validate_only=True)
            assert "orders" in await a.list_topics()
            assert "checked" not in await a.list_topics()
            described = await a.describe_topics(["orders"])
            assert sorted(described["orders"].partitions) == [0, 1, 2]
            await a.delete_topics(["orders"])
            assert "orders" not in await a.list_topics()
            with pytest.raises(UnknownTopicOrPartitionError):
                await a.delete_topics(["orders"])


async def test_create_partitions(broker: RunningBroker) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with admin(broker) as a:
            await a.create_topics([NewTopic("growing", num_partitions=1)])
            await a.create_partitions({"growing": 4})
            described = await a.describe_topics(["growing"])
    assert sorted(described["growing"].partitions) == [0, 1, 2, 3]


async def test_describe_and_alter_topic_configs(broker: RunningBroker) -> None:
    resource = ConfigResource(ConfigResourceType.TOPIC, "configured")
    with trio.fail_after(TIMEOUT_S):
        async with admin(broker) as a:
            await a.create_topics([NewTopic("configured", num_partitions=1)])
            before = (await a.describe_configs([resource]))[resource]
            await a.alter_configs({resource: {"retention.ms": "12345"}})
            after = (await a.describe_configs([resource]))[resource]
            await a.alter_configs({resource: {"retention.ms": None}})
            restored = (await a.describe_configs([resource]))[resource]
    assert after["retention.ms"].value == "12345" and not after["retention.ms"].is_default
    assert restored["retention.ms"].value == before["retention.ms"].value


async def test_list_offsets_and_delete_records(broker: RunningBroker) -> None:
    tp = TopicPartition("trimmed", 0)
    with trio.fail_after(TIMEOUT_S):
        async with Producer(bootstrap_servers=broker.bootstrap) as p:
            for i in range(10):
                await p.send(tp.topic, b"%d" % i, timestamp_ms=1_000_000 + i)
        async with admin(broker) as a:
            offsets = await a.list_offsets({tp: "earliest"})
            assert offsets[tp].offset == 0
            assert (await a.list_offsets({tp: "latest"}))[tp].offset == 10
            assert (await a.list_offsets({tp: 1_000_004}))[tp].offset == 4
            assert await a.delete_records({tp: 6}) == {tp: 6}
            assert (await a.list_offsets({tp: "earliest"}))[tp].offset == 6
