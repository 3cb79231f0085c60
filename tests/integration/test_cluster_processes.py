"""Three combined broker+controller nodes as three processes (`tidelog broker --config`) on
127.0.0.1, driven by confluent-kafka's AdminClient and checked node by node over the wire:
every node agrees on topics, replicas and leaders; `kill -9` of the active controller is
survived (a successor takes CreateTopics within 10 s, the killed broker is fenced within
its session timeout and loses its leaderships, and it comes back caught up); a whole
cluster restarted keeps its topics, configs and assignments. Every process is stopped by
its pid."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import trio

from tests.integration.cluster_support import (
    AGREE_TIMEOUT_S,
    NODES,
    REPLICA_LAG_MS,
    SESSION_TIMEOUT_MS,
    Cluster,
    admin,
    create_topic,
    stored_values,
)
from tests.integration.test_cli import run_tidelog

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_module = pytest.importorskip("confluent_kafka.admin")


async def test_nodes_agree_and_survive_the_active_controller_being_killed(
    cluster: Cluster,
) -> None:
    await create_topic(cluster.nodes[2].bootstrap, "orders", num_partitions=6, replication_factor=3)
    image = await cluster.wait_agreed(NODES, lambda m: "orders" in m["topics"])
    assert image["brokers"] == [1, 2, 3]
    orders = image["topics"]["orders"]
    assert sorted(sorted(r) for _, r, _ in orders.values()) == [[1, 2, 3]] * 6
    assert {leader for leader, _, _ in orders.values()} == {1, 2, 3}  # balanced
    assert all(
        leader == replicas[0] and isr == replicas for leader, replicas, isr in orders.values()
    )

    controller = await cluster.quorum_leader(1)
    assert controller in NODES
    survivors = tuple(i for i in NODES if i != controller)
    cluster.nodes[controller].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await create_topic(cluster.nodes[survivors[0]].bootstrap, "after", replication_factor=2)
    assert time.monotonic() - killed_at < 10, "CreateTopics after the controller died"
    assert await cluster.quorum_leader(survivors[1]) in survivors

    def failed_over(m: dict[str, Any]) -> bool:
        leaders = {leader for leader, _, _ in m["topics"]["orders"].values()}
        return m["brokers"] == list(survivors) and controller not in leaders

    image = await cluster.wait_agreed(survivors, failed_over)
    fenced_after = time.monotonic() - killed_at
    assert fenced_after < (SESSION_TIMEOUT_MS / 1000) + AGREE_TIMEOUT_S
    for index, (leader, replicas, isr) in image["topics"]["orders"].items():
        assert leader in survivors and sorted(replicas) == [1, 2, 3], index
        assert controller not in isr
    # Placed before the killed broker was fenced, "after" may have a replica on it.
    assert len(image["topics"]["after"][0][1]) == 2

    await cluster.start(controller)
    image = await cluster.wait_agreed(NODES, lambda m: m["brokers"] == [1, 2, 3])
    assert set(image["topics"]) == {"orders", "after"}
    info = await run_tidelog("cluster", "info", "--format", "json", "-b", cluster.bootstrap)
    assert info.status == 0, info.stderr
    brokers = {b["node_id"]: b for b in json.loads(info.stdout)["brokers"]}
    assert sorted(brokers) == [1, 2, 3]
    assert not brokers[controller].get("fenced", False)
    for node in cluster.nodes.values():
        assert await node.stop() == 0, node.log_tail()


async def test_a_restarted_cluster_keeps_topics_configs_and_assignments(cluster: Cluster) -> None:
    await create_topic(
        cluster.bootstrap,
        "kept",
        num_partitions=3,
        replication_factor=3,
        config={"retention.ms": "123456", "cleanup.policy": "compact"},
    )
    await create_topic(cluster.bootstrap, "single", replication_factor=1)
    before = await cluster.wait_agreed(NODES, lambda m: {"kept", "single"} <= set(m["topics"]))

    await cluster.stop_all()
    await cluster.start()

    after = await cluster.wait_agreed(NODES, lambda m: m["brokers"] == [1, 2, 3])
    assert set(after["topics"]) == {"kept", "single"}
    for name in ("kept", "single"):
        for index, (_, replicas, _) in after["topics"][name].items():
            assert replicas == before["topics"][name][index][1]
    (single_leader, single_replicas, _) = after["topics"]["single"][0]
    assert single_leader == single_replicas[0]  # its only replica leads it again

    def describe() -> dict[str, str]:
        resource = admin_module.ConfigResource("topic", "kept")
        client = admin(cluster.bootstrap)
        future = client.describe_configs([resource])[resource]
        return {name: entry.value for name, entry in future.result(timeout=15).items()}

    configs = await trio.to_thread.run_sync(describe)
    assert configs["retention.ms"] == "123456"
    assert configs["cleanup.policy"] == "compact"


async def test_a_broker_only_node_joins_as_an_observer(cluster: Cluster) -> None:
    await cluster.add_broker(4)
    image = await cluster.wait_agreed((1, 2, 3, 4), lambda m: m["brokers"] == [1, 2, 3, 4])
    assert image["brokers"] == [1, 2, 3, 4]
    await create_topic(cluster.nodes[4].bootstrap, "wide", num_partitions=4, replication_factor=4)
    image = await cluster.wait_agreed((1, 2, 3, 4), lambda m: "wide" in m["topics"])
    assert {leader for leader, _, _ in image["topics"]["wide"].values()} == {1, 2, 3, 4}
    quorum = await cluster.describe_quorum(4)
    assert sorted(v["replica_id"] for v in quorum["current_voters"]) == [1, 2, 3]
    assert [o["replica_id"] for o in quorum["observers"]] == [4]


async def test_a_stopped_follower_leaves_the_isr_and_rejoins_once_it_has_caught_up(
    cluster: Cluster,
) -> None:
    await create_topic(cluster.bootstrap, "lagging", replication_factor=3)
    image = await cluster.wait_agreed(NODES, lambda m: "lagging" in m["topics"])
    leader, replicas, isr = image["topics"]["lagging"][0]
    assert sorted(isr) == sorted(replicas) == [1, 2, 3]
    stopped = next(r for r in replicas if r != leader)
    in_sync = sorted(r for r in replicas if r != stopped)

    def produce(values: list[bytes]) -> tuple[list[Any], float]:
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": cluster.bootstrap, "acks": "all", "broker.address.family": "v4"}
        )
        outcomes: list[Any] = []
        started = time.monotonic()
        for value in values:
            producer.produce("lagging", value, on_delivery=lambda e, m: outcomes.append(e))
        producer.flush(20)
        return outcomes, time.monotonic() - started

    first = [b"before-%d" % i for i in range(100)]
    outcomes, _ = await trio.to_thread.run_sync(produce, first)
    assert outcomes == [None] * len(first)

    # A follower that stops fetching holds acks=all back until the leader takes it out of
    # the ISR (after replica.lag.time.max.ms, through AlterPartition).
    cluster.nodes[stopped].signal(signal.SIGSTOP)
    try:
        second = [b"during-%d" % i for i in range(100)]
        outcomes, waited_s = await trio.to_thread.run_sync(produce, second)
        assert outcomes == [None] * len(second)
        assert waited_s >= REPLICA_LAG_MS / 1000
        running = tuple(r for r in NODES if r != stopped)
        image = await cluster.wait_agreed(
            running, lambda m: sorted(m["topics"]["lagging"][0][2]) == in_sync
        )
        assert image["topics"]["lagging"][0][1] == replicas  # the assignment stays
    finally:
        cluster.nodes[stopped].signal(signal.SIGCONT)

    # Resumed, it fetches what it missed and joins the ISR again; every replica then holds
    # every record, at the same offsets.
    await cluster.wait_agreed(NODES, lambda m: sorted(m["topics"]["lagging"][0][2]) == [1, 2, 3])
    for node_id in NODES:
        assert await cluster.nodes[node_id].stop() == 0
    for node_id in NODES:
        assert stored_values(cluster.root / f"node{node_id}", "lagging") == first + second
