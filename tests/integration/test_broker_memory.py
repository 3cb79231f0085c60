"""The same broker in one process: MemoryNetwork + MemoryFileSystem, restarts and crashes."""

from __future__ import annotations

import pytest

from tests.integration.conftest import StartBroker, local_config
from tests.integration.wire import metadata_request
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.storage.filesystem import MemoryFileSystem

API_VERSIONS, METADATA = 18, 3


@pytest.mark.parametrize("crash", [False, True])
async def test_topics_survive_restart_and_crash(start_broker: StartBroker, crash: bool) -> None:
    fs = MemoryFileSystem(seed=7)
    network = MemoryNetwork()
    config = local_config("/data", num_partitions=3)

    first = await start_broker(config, network=network, fs=fs)
    async with await first.client() as client:
        assert (await client.request(API_VERSIONS, 3, {
            "client_software_name": "t", "client_software_version": "1"
        }))["error_code"] == 0  # fmt: skip
        created = await client.request(METADATA, 12, metadata_request("events"))
    (topic,) = created["topics"]
    assert topic["error_code"] == 0
    assert len(topic["partitions"]) == 3
    cluster_id = created["cluster_id"]

    if crash:
        # Power loss right after the answer: only what was fsynced survives. The first
        # broker dies with its disk (what it writes after the crash is lost); a successor
        # process recovers the crashed disk.
        fs.crash()
        await first.kill()
    else:
        await first.stop()

    second = await start_broker(config, network=network, fs=fs)
    async with await second.client() as client:
        again = await client.request(METADATA, 12, metadata_request("events"))
    assert again["cluster_id"] == cluster_id
    (same,) = again["topics"]
    assert same["topic_id"] == topic["topic_id"]
    assert [p["partition_index"] for p in same["partitions"]] == [0, 1, 2]
    assert second.broker.replicas.log("events", 2) is not None


async def test_two_brokers_share_one_memory_network(start_broker: StartBroker) -> None:
    network = MemoryNetwork()
    one = await start_broker(local_config("/one"), network=network, fs=MemoryFileSystem())
    two = await start_broker(
        local_config("/two", node_id=1), network=network, fs=MemoryFileSystem(seed=1)
    )
    assert one.port != two.port
    async with await two.client() as client:
        response = await client.request(METADATA, 1, {"topics": None})
    assert response["controller_id"] == 1
    assert [b["node_id"] for b in response["brokers"]] == [1]
