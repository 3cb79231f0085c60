"""Our consumer in consumer groups, against the real broker over TCP: members share a
topic's partitions, commits survive a restart (subscribed or manually assigned),
auto-commit stores what the application finished with, eager members commit and revoke
before sharing, cooperative-sticky moves only what must move while the other partitions
keep being consumed, groups mix our consumers with librdkafka's (confluent-kafka, in a
thread), pattern subscriptions follow new topics, and static members come back without a
rebalance."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.conftest import RunningBroker, StartBroker, local_config
from tidelog.client.admin import Admin
from tidelog.client.consumer import Consumer
from tidelog.client.producer import Producer
from tidelog.client.structs import ConsumerRecord, NewTopic, OffsetAndMetadata, TopicPartition

TIMEOUT_S = 20
FAST_GROUP = {
    "heartbeat_interval_ms": 100,
    "session_timeout_ms": 6_000,
    "fetch_max_wait_ms": 100,
    "auto_offset_reset": "earliest",
}
"""Members notice rebalances within a tenth of a second; fetches at the end of the log
return quickly."""


@pytest.fixture
async def broker(start_broker: StartBroker, tmp_path: Path) -> RunningBroker:
    config = local_config(
        tmp_path / "data",
        group_initial_rebalance_delay_ms=0,
        offsets_topic_num_partitions=2,
    )
    return await start_broker(config)


async def create_topic(broker: RunningBroker, name: str, partitions: int) -> list[TopicPartition]:
    async with Admin(bootstrap_servers=broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, num_partitions=partitions)])
    return [TopicPartition(name, p) for p in range(partitions)]


async def produce(broker: RunningBroker, tps: list[TopicPartition], per_partition: int) -> None:
    async with Producer(bootstrap_servers=broker.bootstrap, linger_ms=1) as producer:
        for tp in tps:
            for i in range(per_partition):
                await producer.send(tp.topic, b"%d" % i, partition=tp.partition)


def group_consumer(broker: RunningBroker, group_id: str, **config: Any) -> Consumer:
    return Consumer(
        bootstrap_servers=broker.bootstrap, group_id=group_id, **{**FAST_GROUP, **config}
    )


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    """Bounded polling for a condition that no event announces."""
    with trio.move_on_after(timeout_s):
        while not condition():
            await trio.sleep(0.01)
    assert condition(), f"timed out waiting for {what}"


@dataclass
class Member:
    """A consumer that consumes in the background, noting the generation of every record."""

    consumer: Consumer
    records: list[tuple[int, ConsumerRecord]] = field(default_factory=list)

    async def consume(self) -> None:
        async for record in self.consumer:
            self.records.append((self.consumer.group_metadata().generation_id, record))


async def test_members_share_the_partitions_and_consume_each_record_once_per_generation(
    broker: RunningBroker,
) -> None:
    tps = await create_topic(broker, "shared", 6)
    async with AsyncExitStack() as stack:
        members = [
            Member(await stack.enter_async_context(group_consumer(broker, "sharers")))
            for _ in range(3)
        ]
        async with trio.open_nursery() as nursery:
            for member in members:
                member.consumer.subscribe(["shared"])
                nursery.start_soon(member.consume)

            def settled() -> bool:
                assignments = [m.consumer.assignment() for m in members]
                generations = {m.consumer.group_metadata().generation_id for m in members}
                return (
                    len(generations) == 1
                    and all(len(a) == 2 for a in assignments)
                    and set().union(*assignments) == set(tps)
                )

            await wait_for(settled, "three members with two partitions each")
            await produce(broker, tps, 10)
            await wait_for(lambda: sum(len(m.records) for m in members) >= 60, "every record")
            nursery.cancel_scope.cancel()
        # Before closing: a member that leaves makes the others rebalance.
        assignments = [m.consumer.assignment() for m in members]
    seen = Counter(
        (generation, r.topic, r.partition, r.offset) for m in members for generation, r in m.records
    )
    assert max(seen.values()) == 1
    expected = {(tp.topic, tp.partition, offset) for tp in tps for offset in range(10)}
    assert {(t, p, o) for _, t, p, o in seen} == expected
    for member, assignment in zip(members, assignments, strict=True):
        assert {r.topic_partition for _, r in member.records} == assignment


async def take(consumer: Consumer, count: int) -> list[ConsumerRecord]:
    with trio.fail_after(TIMEOUT_S):
        return [await consumer.getone() for _ in range(count)]


async def wait_for_committed(
    consumer: Consumer, expected: dict[TopicPartition, int | None]
) -> None:
    """Bounded polling of OffsetFetch until the group's committed offsets are `expected`."""
    with trio.fail_after(TIMEOUT_S):
        while True:
            committed = await consumer.committed(expected)
            offsets = {tp: None if c is None else c.offset for tp, c in committed.items()}
            if offsets == expected:
                return
            await trio.sleep(0.02)


async def test_a_restarted_member_resumes_from_its_commit(broker: RunningBroker) -> None:
    tps = await create_topic(broker, "resumed", 2)
    await produce(broker, tps, 10)
    async with group_consumer(broker, "resumers", enable_auto_commit=False) as consumer:
        consumer.subscribe(["resumed"])
        first = await take(consumer, 12)
        await consumer.commit()
        taken = Counter(r.topic_partition for r in first)
        assert await consumer.committed(tps) == {
            tp: OffsetAndMetadata(taken[tp]) if taken[tp] else None for tp in tps
        }
        # Without auto-commit, what is consumed after the commit is not committed.
        await take(consumer, 3)
    async with group_consumer(broker, "resumers") as consumer:
        consumer.subscribe(["resumed"])
        rest = await take(consumer, 8)
    keys = Counter((r.partition, r.offset) for r in first + rest)
    assert set(keys) == {(p, o) for p in range(2) for o in range(10)}
    assert max(keys.values()) == 1


async def test_a_manually_assigned_consumer_commits_in_its_group_and_resumes(
    broker: RunningBroker,
) -> None:
    (tp,) = await create_topic(broker, "manual", 1)
    await produce(broker, [tp], 10)
    async with group_consumer(broker, "manual-group", enable_auto_commit=False) as consumer:
        consumer.assign([tp])
        await take(consumer, 4)
        await consumer.commit()
    async with group_consumer(broker, "manual-group") as consumer:
        consumer.assign([tp])
        assert [r.offset for r in await take(consumer, 6)] == list(range(4, 10))


async def test_auto_commit_stores_what_the_application_has_finished_with(
    broker: RunningBroker,
) -> None:
    (tp,) = await create_topic(broker, "autocommitted", 1)
    await produce(broker, [tp], 10)
    async with group_consumer(broker, "autocommitters", auto_commit_interval_ms=50) as consumer:
        consumer.subscribe(["autocommitted"])
        records = await take(consumer, 10)
        assert [r.offset for r in records] == list(range(10))
        # The application may still be working on the record it got last...
        await wait_for_committed(consumer, {tp: 9})
        # ...until it asks for the next one.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer.getone)
            await wait_for_committed(consumer, {tp: 10})
            nursery.cancel_scope.cancel()


async def test_eager_members_commit_and_revoke_everything_then_share(
    broker: RunningBroker,
) -> None:
    tps = await create_topic(broker, "eager", 2)
    await produce(broker, tps, 10)
    events: list[tuple[str, str, set[TopicPartition]]] = []

    def listener(name: str) -> dict[str, Any]:
        async def on_assign(partitions: set[TopicPartition]) -> None:
            events.append((name, "assign", partitions))

        async def on_revoke(partitions: set[TopicPartition]) -> None:
            events.append((name, "revoke", partitions))

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    # Only commits on revoke and on close: the interval is longer than the test.
    slow_auto_commit = {"auto_commit_interval_ms": 600_000}
    async with AsyncExitStack() as stack:
        first, second = [
            Member(await stack.enter_async_context(
                group_consumer(broker, "eager-group", **slow_auto_commit)
            ))
            for _ in range(2)
        ]  # fmt: skip
        first.consumer.subscribe(["eager"], **listener("first"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.consume)
            await wait_for(lambda: len(first.records) == 20, "the first member reads all")
            second.consumer.subscribe(["eager"], **listener("second"))
            nursery.start_soon(second.consume)
            await wait_for(
                lambda: len(first.consumer.assignment()) == len(second.consumer.assignment()) == 1,
                "one partition each",
            )
            await produce(broker, tps, 5)
            await wait_for(
                lambda: len(first.records) + len(second.records) == 30, "the new records"
            )
            nursery.cancel_scope.cancel()
        shares = first.consumer.assignment(), second.consumer.assignment()
        rebalances = list(events)  # closing one member rebalances the other
    # The first member gave up both partitions before the group shared them, and committed
    # what it had read: the second member starts where it stopped.
    assert rebalances[:2] == [("first", "assign", set(tps)), ("first", "revoke", set(tps))]
    assert sorted(rebalances[2:]) == [
        ("first", "assign", shares[0]),
        ("second", "assign", shares[1]),
    ]
    assert sorted(r.offset for _, r in second.records) == list(range(10, 15))
    assert sorted(r.offset for _, r in first.records[20:]) == list(range(10, 15))


async def test_cooperative_sticky_moves_only_what_must_move_and_keeps_consuming_the_rest(
    broker: RunningBroker,
) -> None:
    tps = await create_topic(broker, "sticky", 4)
    sticky = {"partition_assignment_strategy": "cooperative-sticky"}
    calls: list[tuple[float, str, set[TopicPartition]]] = []

    async def on_assign(partitions: set[TopicPartition]) -> None:
        calls.append((trio.current_time(), "assign", partitions))

    async def on_revoke(partitions: set[TopicPartition]) -> None:
        calls.append((trio.current_time(), "revoke", partitions))

    consumed: list[tuple[float, TopicPartition]] = []

    async def consume(consumer: Consumer) -> None:
        async for record in consumer:
            consumed.append((trio.current_time(), record.topic_partition))

    async def keep_producing() -> None:
        async with Producer(bootstrap_servers=broker.bootstrap, linger_ms=1) as producer:
            for i in range(10_000):
                for tp in tps:
                    await producer.send(tp.topic, b"%d" % i, partition=tp.partition)
                await trio.sleep(0.005)

    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(group_consumer(broker, "sticky-group", **sticky))
        # The newcomer hears of the hand-over phase only at its next heartbeat: the first
        # member's JoinGroup of that phase waits this long, while it goes on consuming.
        second = await stack.enter_async_context(
            group_consumer(broker, "sticky-group", heartbeat_interval_ms=1_000, **sticky)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_producing)
            first.subscribe(["sticky"], on_assign=on_assign, on_revoke=on_revoke)
            nursery.start_soon(consume, first)
            await wait_for(lambda: {tp for _, tp in consumed} == set(tps), "all four consumed")
            second.subscribe(["sticky"])
            newcomer = Member(second)
            nursery.start_soon(newcomer.consume)
            await wait_for(lambda: len(calls) == 4, "two rebalances after the first")
            await wait_for(
                lambda: {r.topic_partition for _, r in newcomer.records} == second.assignment(),
                "the newcomer consumes its partitions",
            )
            nursery.cancel_scope.cancel()
        kept, moved = first.assignment(), second.assignment()
        rebalances = list(calls)  # closing revokes the rest
    assert len(kept) == len(moved) == 2 and kept | moved == set(tps)
    # Only the two partitions that had to move were revoked, once; nothing was added to
    # the first member in either phase.
    assert [(kind, partitions) for _, kind, partitions in rebalances] == [
        ("assign", set(tps)),
        ("revoke", moved),
        ("assign", set()),
        ("assign", set()),
    ]
    revoked_at, done_at = rebalances[1][0], rebalances[3][0]
    during_hand_over = {tp for at, tp in consumed if revoked_at < at < done_at}
    assert during_hand_over == kept
    assert done_at - revoked_at > 0.2  # the phase really waited for the newcomer


@pytest.mark.parametrize("strategy", ["roundrobin", "cooperative-sticky"])
@pytest.mark.parametrize("leader", ["ours", "librdkafka"])
async def test_a_group_of_our_consumer_and_librdkafkas_shares_the_partitions(
    broker: RunningBroker, leader: str, strategy: str
) -> None:
    """The first member to join leads, gets all four partitions and gives two to the
    second; with cooperative-sticky it gives up only those two."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    tps = await create_topic(broker, "mixed", 4)
    stop = threading.Event()
    theirs: list[tuple[int, int]] = []
    their_assignment: set[TopicPartition] = set()
    revoked: dict[str, list[set[TopicPartition]]] = {"ours": [], "librdkafka": []}

    def run_librdkafka() -> None:
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": broker.bootstrap,
            "broker.address.family": "v4",
            "group.id": "mixed-group",
            "partition.assignment.strategy": strategy,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 100,
            "fetch.wait.max.ms": 100,
        })  # fmt: skip

        def tps_of(partitions: list[Any]) -> set[TopicPartition]:
            return {TopicPartition(p.topic, p.partition) for p in partitions}

        # Eager callbacks name the whole assignment, cooperative ones the change.
        def on_assign(_: Any, partitions: list[Any]) -> None:
            their_assignment.update(tps_of(partitions))

        def on_revoke(_: Any, partitions: list[Any]) -> None:
            if partitions:
                revoked["librdkafka"].append(tps_of(partitions))
            their_assignment.difference_update(tps_of(partitions))

        consumer.subscribe(["mixed"], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not stop.is_set():
                message = consumer.poll(0.05)
                if message is not None and message.error() is None:
                    theirs.append((message.partition(), message.offset()))
        finally:
            consumer.close()

    async def on_revoke(partitions: set[TopicPartition]) -> None:
        revoked["ours"].append(partitions)

    async with group_consumer(
        broker, "mixed-group", partition_assignment_strategy=strategy
    ) as ours:
        member = Member(ours)
        try:
            async with trio.open_nursery() as nursery:
                if leader == "ours":
                    ours.subscribe(["mixed"], on_revoke=on_revoke)
                    await wait_for(lambda: ours.assignment() == set(tps), "ours leads")
                    nursery.start_soon(trio.to_thread.run_sync, run_librdkafka)
                else:
                    nursery.start_soon(trio.to_thread.run_sync, run_librdkafka)
                    await wait_for(lambda: their_assignment == set(tps), "librdkafka leads")
                    ours.subscribe(["mixed"], on_revoke=on_revoke)
                nursery.start_soon(member.consume)

                def shared() -> bool:
                    mine = ours.assignment()
                    return len(mine) == 2 and mine | their_assignment == set(tps)

                await wait_for(shared, "two partitions each")
                await produce(broker, tps, 10)
                await wait_for(lambda: len(member.records) + len(theirs) >= 40, "every record")
                # Before librdkafka leaves, which rebalances the group.
                assignments = {"ours": ours.assignment(), "librdkafka": set(their_assignment)}
                stop.set()
                nursery.cancel_scope.cancel()
        finally:
            stop.set()
    mine = Counter((r.partition, r.offset) for _, r in member.records)
    everything = Counter(theirs) + mine
    assert set(everything) == {(p, o) for p in range(4) for o in range(10)}
    assert max(everything.values()) == 1
    assert {p for p, _ in mine} == {tp.partition for tp in assignments["ours"]}
    assert {p for p, _ in theirs} == {tp.partition for tp in assignments["librdkafka"]}
    newcomer = "librdkafka" if leader == "ours" else "ours"
    handed_over = revoked[leader][0]
    if strategy == "cooperative-sticky":
        assert handed_over == assignments[newcomer]
    else:
        assert handed_over == set(tps)


async def test_a_pattern_subscription_follows_new_matching_topics(broker: RunningBroker) -> None:
    (a0,) = await create_topic(broker, "metrics-a", 1)
    await create_topic(broker, "other", 1)
    async with group_consumer(broker, "pattern-group", metadata_max_age_ms=100) as consumer:
        consumer.subscribe(pattern=r"metrics-.*")
        await wait_for(lambda: consumer.assignment() == {a0}, "the matching topic")
        added = await create_topic(broker, "metrics-b", 2)
        await wait_for(lambda: consumer.assignment() == {a0, *added}, "the new topic too")
        assert consumer.subscription() == {"metrics-a", "metrics-b"}


async def test_a_static_member_restarting_in_time_takes_its_place_back_without_a_rebalance(
    broker: RunningBroker,
) -> None:
    tps = await create_topic(broker, "static", 2)
    revoked: list[set[TopicPartition]] = []

    async def on_revoke(partitions: set[TopicPartition]) -> None:
        revoked.append(partitions)

    async with group_consumer(broker, "static-group", group_instance_id="b") as stays:
        stays.subscribe(["static"], on_revoke=on_revoke)
        await wait_for(lambda: stays.assignment() == set(tps), "the first member has both")
        async with group_consumer(broker, "static-group", group_instance_id="a") as restarts:
            restarts.subscribe(["static"])
            await wait_for(lambda: len(restarts.assignment()) == 1, "one partition each")
            share = restarts.assignment()
            await wait_for(lambda: len(stays.assignment()) == 1, "the other gave one up")
            generation = stays.group_metadata().generation_id
            revoked.clear()
        # Closing a static member does not leave the group: nothing moves...
        async with group_consumer(broker, "static-group", group_instance_id="a") as restarted:
            restarted.subscribe(["static"])
            await wait_for(lambda: restarted.assignment() == share, "its old partition")
            # ...and taking the place back needs no rebalance either.
            assert restarted.group_metadata().generation_id == generation
            assert stays.group_metadata().generation_id == generation
            assert stays.assignment() == set(tps) - share
            assert revoked == []
