"""Partition replication across three real `tidelog broker` processes on 127.0.0.1
(`cluster_support`), with real clients, `kill -9`, SIGSTOP and restarts:

- an idempotent acks=all producer under load loses and duplicates nothing while partition
  leaders are killed again and again and a broker is frozen past its session timeout —
  confluent-kafka, kafka-python and our own consumer each read every acknowledged record
  once, at its acknowledged offset, in send order, and every replica stores the same log;
- a frozen active controller gets only itself fenced;
- with `min.insync.replicas=2`, the last replica standing refuses acks=all
  (NOT_ENOUGH_REPLICAS), loses nothing committed, and takes acks=all again once a second
  replica has caught up;
- a consumer group keeps consuming, and keeps its committed offsets, when its coordinator
  is killed.

Every wait is bounded; every process is stopped by its pid.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from tests.integration.cluster_support import NODES, Cluster, create_topic, stored_values
from tests.integration.wire import produce_request
from tidelog.client.admin import Admin
from tidelog.client.consumer import Consumer
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, encode_batch
from tidelog.client.structs import NewTopic, TopicPartition

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

PRODUCE = 0
MIN_ISR = {"min.insync.replicas": "2"}
ALL = sorted(NODES)
FAILOVER_TIMEOUT_S = 20
"""Fencing (the session timeout) and a new leader, on a busy machine."""
REJOIN_TIMEOUT_S = 30
"""A restarted (or resumed) broker registers again, catches up and rejoins every ISR."""
READ_TIMEOUT_S = 30
MAX_FAILOVER_S = 30
"""A sanity bound on kill -> first acknowledgement from the new leader (not a target)."""

Image = dict[str, Any]
Read = dict[int, list[tuple[int, int]]]
"""partition -> [(offset, sequence number)] in the order read."""


def leader_of(image: Image, topic: str, partition: int = 0) -> int:
    leader: int = image["topics"][topic][partition][0]
    return leader


def in_sync(topic: str, members: list[int]) -> Callable[[Image], bool]:
    """Every partition of `topic` has exactly `members` as its ISR and a leader among them."""

    def check(image: Image) -> bool:
        partitions = image["topics"].get(topic, {})
        return bool(partitions) and all(
            sorted(isr) == members and leader in members for leader, _, isr in partitions.values()
        )

    return check


def led_by(topic: str, brokers: tuple[int, ...]) -> Callable[[Image], bool]:
    """Every partition of `topic` is led by one of `brokers`, which are all the live ones."""

    def check(image: Image) -> bool:
        leaders = [leader for leader, _, _ in image["topics"][topic].values()]
        return image["brokers"] == sorted(brokers) and all(x in brokers for x in leaders)

    return check


def confluent_config(bootstrap: str, **settings: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4", **settings}


# -- 1. failover under load


@dataclass(frozen=True, slots=True)
class Ack:
    at: float
    """time.monotonic() when the delivery report was served."""
    partition: int
    offset: int
    sequence: int


@dataclass
class Load:
    """An idempotent acks=all producer (confluent-kafka) in a thread: record `n` has value
    `n` and one of `KEYS` keys, sent at about `rate` records a second with at most
    `MAX_UNSETTLED` awaiting their delivery reports, until `stop` is set and at least
    `min_records` are sent (at most `MAX_RECORDS`, for at most `TIMEOUT_S`); then flushed."""

    bootstrap: str
    topic: str
    min_records: int = 20_000
    rate: int = 1000
    stop: threading.Event = field(default_factory=threading.Event)
    acks: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0

    MAX_RECORDS = 200_000
    KEYS = 64
    MAX_UNSETTLED = 10_000
    TIMEOUT_S = 150
    FLUSH_TIMEOUT_S = 60

    def run(self) -> int:
        """Produce (see the class docstring); how many records were left unsettled."""
        settings = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "message.timeout.ms": self.TIMEOUT_S * 1000,
        }
        producer = confluent_kafka.Producer(confluent_config(self.bootstrap, **settings))

        def delivered(error: Any, message: Any) -> None:
            sequence = int(message.value())
            if error is None:
                ack = Ack(time.monotonic(), message.partition(), message.offset(), sequence)
                self.acks.append(ack)
            else:
                self.errors.append(f"{sequence}: {error}")

        started = time.monotonic()
        deadline = started + self.TIMEOUT_S
        while self.sent < self.MAX_RECORDS and time.monotonic() < deadline:
            if self.stop.is_set() and self.sent >= self.min_records:
                break
            due = int(self.rate * (time.monotonic() - started)) - self.sent
            unsettled = self.sent - len(self.acks) - len(self.errors)
            if due <= 0 or unsettled >= self.MAX_UNSETTLED:
                producer.poll(0.01)
                continue
            for _ in range(min(due, 100)):
                key = b"key-%d" % (self.sent % self.KEYS)
                producer.produce(self.topic, b"%d" % self.sent, key, on_delivery=delivered)
                self.sent += 1
            producer.poll(0)
        left: int = producer.flush(self.FLUSH_TIMEOUT_S)
        return left

    async def wait_acks(self, count: int, timeout_s: float) -> None:
        with trio.fail_after(timeout_s):
            while len(self.acks) < count:
                await trio.sleep(0.05)

    async def wait_ack_after(self, partition: int, after: float, timeout_s: float) -> None:
        """Wait for an acknowledgement for `partition` reported after `after`."""
        with trio.fail_after(timeout_s):
            # Acks are appended in report order: only the new ones need looking at.
            seen = 0
            while True:
                acks = self.acks[seen:]
                if any(a.partition == partition and a.at > after for a in acks):
                    return
                seen += len(acks)
                await trio.sleep(0.05)


@dataclass(slots=True)
class Kill:
    broker: int
    was_controller: bool
    signalled_at: float
    gone_at: float
    """When the process had exited: a later delivery report comes from another leader."""
    led_at: float = 0.0
    """When the survivors' metadata first had other leaders for every partition."""


def failover_times(kills: list[Kill], acks: list[Ack], partition: int) -> list[float]:
    """For each kill, seconds from the signal to the first acknowledgement for `partition`
    after the process was gone."""
    times = []
    for kill in kills:
        after = (a.at for a in acks if a.partition == partition and a.at > kill.gone_at)
        first = min(after, default=float("inf"))
        times.append(first - kill.signalled_at)
    return times


def read_confluent(bootstrap: str, topic: str, ends: dict[int, int]) -> Read:
    consumer = confluent_kafka.Consumer(
        confluent_config(bootstrap, **{"group.id": "unused", "enable.auto.commit": False})
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in ends
            ]
        )
        read: Read = {p: [] for p in ends}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while not _read_to(read, ends) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                assert message.error() is None, message.error()
                read[message.partition()].append((message.offset(), int(message.value())))
        return read
    finally:
        consumer.close()


def read_kafka_python(bootstrap: str, topic: str, ends: dict[int, int]) -> Read:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in ends])
        consumer.seek_to_beginning()
        read: Read = {p: [] for p in ends}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while not _read_to(read, ends) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
                read[tp.partition] += [(r.offset, int(r.value)) for r in records]
        return read
    finally:
        consumer.close()


async def read_ours(bootstrap: str, topic: str, ends: dict[int, int]) -> Read:
    read: Read = {p: [] for p in ends}
    async with Consumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100
    ) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in ends])
        with trio.move_on_after(READ_TIMEOUT_S):
            while not _read_to(read, ends):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    assert all(r.value is not None for r in records)
                    read[tp.partition] += [(r.offset, int(r.value or b"")) for r in records]
    return read


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    async with Consumer(bootstrap_servers=bootstrap) as consumer:
        with trio.fail_after(READ_TIMEOUT_S):
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    return {tp.partition: offset for tp, offset in ends.items()}


def _read_to(read: Read, ends: dict[int, int]) -> bool:
    """Every partition has been read up to its end offset."""
    return all((read[p][-1][0] + 1 if read[p] else 0) >= end for p, end in ends.items())


def check_read(reader: str, read: Read, ends: dict[int, int], acks: list[Ack], sent: int) -> None:
    """`read` holds each partition from offset 0 to its end, each offset once, in send
    order; no record twice; every acknowledged record where its acknowledgement said."""
    where: dict[int, tuple[int, int]] = {}
    for partition, records in read.items():
        offsets = [offset for offset, _ in records]
        assert offsets == list(range(ends[partition])), f"{reader}: offsets of {partition}"
        sequences = [sequence for _, sequence in records]
        assert sequences == sorted(sequences), f"{reader}: {partition} out of send order"
        for offset, sequence in records:
            assert 0 <= sequence < sent, f"{reader}: {sequence} was never sent"
            assert sequence not in where, f"{reader}: {sequence} at {where[sequence]} and here"
            where[sequence] = (partition, offset)
    misplaced = [a for a in acks if where.get(a.sequence) != (a.partition, a.offset)]
    assert not misplaced, f"{reader}: {len(misplaced)} acked records not read, e.g. {misplaced[:5]}"


async def test_failover_under_load_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    """Five `kill -9`s of partition 0's leader (each restarted and back in every ISR before
    the next) and a broker frozen past its session timeout, under an idempotent acks=all
    producer with min.insync.replicas=2: every acknowledged record is read by three
    clients exactly once, at its acknowledged offset, in send order, and the three replicas
    store the same logs. Prints kill -> first acknowledgement from the new leader."""
    topic, partitions, kill_count = "flow", 3, 5
    await create_topic(
        cluster.bootstrap, topic, num_partitions=partitions, replication_factor=3, config=MIN_ISR
    )
    await cluster.wait_agreed(NODES, in_sync(topic, ALL))
    load = Load(cluster.bootstrap, topic)
    kills: list[Kill] = []
    unsettled: list[int] = []

    async def produce() -> None:
        unsettled.append(await trio.to_thread.run_sync(load.run))

    async def disrupt() -> None:
        await load.wait_acks(1000, READ_TIMEOUT_S)  # under load before the first kill
        for _ in range(kill_count):
            leader = leader_of(await cluster.wait_agreed(NODES, in_sync(topic, ALL)), topic)
            controller = await cluster.quorum_leader(leader)
            signalled_at = time.monotonic()
            await cluster.nodes[leader].kill()
            kill = Kill(leader, controller == leader, signalled_at, time.monotonic())
            kills.append(kill)
            survivors = tuple(i for i in NODES if i != leader)
            await cluster.wait_agreed(survivors, led_by(topic, survivors), FAILOVER_TIMEOUT_S)
            kill.led_at = time.monotonic()
            await cluster.start(leader)
            await cluster.wait_agreed(NODES, in_sync(topic, ALL), REJOIN_TIMEOUT_S)
            # Measured before anything else happens to the cluster.
            await load.wait_ack_after(0, kill.gone_at, MAX_FAILOVER_S)
        # Frozen past its session timeout, a broker is fenced and leaves every ISR; resumed,
        # it finds out it lost its leaderships, catches up and rejoins. (Not the active
        # controller: see test_a_frozen_active_controller_fences_no_other_broker.)
        leader = leader_of(await cluster.metadata(1), topic)
        controller = await cluster.quorum_leader(1)
        frozen = next(i for i in NODES if i not in (leader, controller))
        others = tuple(i for i in NODES if i != frozen)
        async with freeze(cluster, frozen):
            await cluster.wait_agreed(
                others,
                lambda m: led_by(topic, others)(m) and in_sync(topic, sorted(others))(m),
                FAILOVER_TIMEOUT_S,
            )
        await cluster.wait_agreed(NODES, in_sync(topic, ALL), REJOIN_TIMEOUT_S)

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        try:
            await disrupt()
        finally:
            load.stop.set()
    produced_s = time.monotonic() - started

    times = failover_times(kills, load.acks, 0)
    p50 = statistics.median(times)
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
    figures = (
        f"{load.sent} records in {produced_s:.1f} s, {len(load.acks)} acked; kill -9 of "
        f"partition 0's leader -> first ack from the new leader: "
        f"{', '.join(f'{t:.2f}' for t in times)} s (p50 {p50:.2f} s, p99 {p99:.2f} s); "
        "-> new leaders in the metadata: "
        + ", ".join(
            f"{k.led_at - k.signalled_at:.2f}{' (controller)' if k.was_controller else ''}"
            for k in kills
        )
        + " s"
    )
    print(figures)
    assert len(times) == kill_count, figures
    assert max(times) < MAX_FAILOVER_S, figures
    assert unsettled == [0] and not load.errors, f"{load.errors[:10]}; {figures}"
    assert len(load.acks) == load.sent >= load.min_records, figures

    ends = await end_offsets(cluster.bootstrap, topic, partitions)
    assert sum(ends.values()) == load.sent, (ends, load.sent)
    reads = {
        "confluent-kafka": await trio.to_thread.run_sync(
            read_confluent, cluster.bootstrap, topic, ends
        ),
        "kafka-python": await trio.to_thread.run_sync(
            read_kafka_python, cluster.bootstrap, topic, ends
        ),
        "tidelog": await read_ours(cluster.bootstrap, topic, ends),
    }
    for reader, read in reads.items():
        check_read(reader, read, ends, load.acks, load.sent)

    await cluster.stop_all()
    for partition in range(partitions):
        expected = [b"%d" % sequence for _, sequence in reads["tidelog"][partition]]
        for node in cluster.nodes.values():
            stored = stored_values(node.directory, topic, partition)
            assert stored == expected, f"node {node.node_id}, partition {partition}"


@asynccontextmanager
async def freeze(cluster: Cluster, node_id: int) -> AsyncIterator[None]:
    """SIGSTOP node `node_id` for the block, SIGCONT after it."""
    cluster.nodes[node_id].signal(signal.SIGSTOP)
    try:
        yield
    finally:
        cluster.nodes[node_id].signal(signal.SIGCONT)


async def test_a_frozen_active_controller_fences_no_other_broker(cluster: Cluster) -> None:
    """The active controller frozen (SIGSTOP) past the session timeout: a successor is
    elected, fences only the frozen broker, and the others keep leading every partition
    and taking acks=all; resumed, the frozen one rejoins every ISR."""
    topic = "steady"
    await create_topic(cluster.bootstrap, topic, num_partitions=3, replication_factor=3)
    await cluster.wait_agreed(NODES, in_sync(topic, ALL))
    frozen = await cluster.quorum_leader(1)
    others = tuple(i for i in NODES if i != frozen)
    fenced: list[tuple[float, list[int]]] = []
    """Times the others' metadata listed fewer live brokers than the others themselves."""
    async with freeze(cluster, frozen):
        frozen_at = time.monotonic()
        with trio.move_on_after(FAILOVER_TIMEOUT_S):
            while True:
                image = await cluster.metadata(others[0])
                if not set(others) <= set(image["brokers"]):
                    fenced.append((time.monotonic() - frozen_at, image["brokers"]))
                if image["brokers"] == list(others) and in_sync(topic, list(others))(image):
                    break
                await trio.sleep(0.1)
        assert not fenced, f"live brokers fenced: {fenced[0]} .. {fenced[-1]} (s, brokers)"
        assert await cluster.quorum_leader(others[0]) in others
        image = await cluster.wait_agreed(others, in_sync(topic, list(others)))
        assert image["brokers"] == list(others)
        outcomes = await trio.to_thread.run_sync(
            lambda: produce_acks_all(
                ",".join(cluster.nodes[i].bootstrap for i in others), topic, [b"during"]
            )
        )
        assert outcomes == [None]
    await cluster.wait_agreed(NODES, in_sync(topic, ALL), REJOIN_TIMEOUT_S)


# -- 2. the last replica standing


def produce_acks_all(bootstrap: str, topic: str, values: list[bytes], **settings: Any) -> list[Any]:
    """Produce with acks=all (confluent-kafka); each record's delivery error (None: acked)."""
    producer = confluent_kafka.Producer(confluent_config(bootstrap, acks="all", **settings))
    outcomes: list[Any] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda e, m: outcomes.append(e))
    assert producer.flush(30) == 0
    return outcomes


async def test_the_last_replica_standing_refuses_acks_all_and_loses_nothing(
    cluster: Cluster,
) -> None:
    """RF=3, min.insync.replicas=2: with two replicas killed (the leader first), the one
    left refuses acks=all with NOT_ENOUGH_REPLICAS before appending; restarted (the
    last-killed first), the replicas catch up, acks=all is taken again as soon as two are
    in sync, and every replica holds every committed record and nothing else. (The two
    killed are broker-only nodes, so that the controller quorum stays.)"""
    topic, first, second, last = "last", 4, 5, 1
    await cluster.add_broker(first)
    await cluster.add_broker(second)
    everyone = (*NODES, first, second)
    await cluster.wait_agreed(everyone, lambda m: m["brokers"] == sorted(everyone))
    # Our admin client: confluent-kafka 2.16 refuses a replica assignment (a ValueError).
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        assignment = {0: [first, second, last]}
        new = NewTopic(topic, replica_assignment=assignment, configs=MIN_ISR)
        await admin.create_topics([new], timeout_ms=15_000)
    image = await cluster.wait_agreed(everyone, in_sync(topic, sorted((first, second, last))))
    assert leader_of(image, topic) == first

    def produce(values: list[bytes], **settings: Any) -> Any:
        return trio.to_thread.run_sync(
            lambda: produce_acks_all(cluster.bootstrap, topic, values, **settings)
        )

    committed = [b"first-%d" % i for i in range(100)]
    assert await produce(committed) == [None] * len(committed)

    await cluster.nodes[first].kill()
    standing = (*NODES, second)
    await cluster.wait_agreed(standing, in_sync(topic, sorted((second, last))), FAILOVER_TIMEOUT_S)
    more = [b"second-%d" % i for i in range(100)]
    assert await produce(more) == [None] * len(more)
    committed += more

    await cluster.nodes[second].kill()
    await cluster.wait_agreed(NODES, in_sync(topic, [last]), FAILOVER_TIMEOUT_S)
    refused = await produce([b"refused"], retries=0, **{"message.timeout.ms": 5000})
    assert [e.code() for e in refused] == [confluent_kafka.KafkaError.NOT_ENOUGH_REPLICAS]
    batch = encode_batch([RecordInput(value=b"refused-on-the-wire")])
    response = await cluster.request(last, PRODUCE, 8, produce_request(topic, batch, acks=-1))
    (answer,) = response["responses"][0]["partition_responses"]
    assert answer["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS == 19

    await cluster.start(second)
    await cluster.wait_agreed(standing, in_sync(topic, sorted((second, last))), REJOIN_TIMEOUT_S)
    again = [b"again-%d" % i for i in range(100)]
    assert await produce(again) == [None] * len(again)
    committed += again
    await cluster.start(first)
    await cluster.wait_agreed(
        everyone, in_sync(topic, sorted((first, second, last))), REJOIN_TIMEOUT_S
    )

    read = await trio.to_thread.run_sync(read_values, cluster.bootstrap, topic)
    assert read == committed
    await cluster.stop_all()
    for node_id in (first, second, last):
        assert stored_values(cluster.nodes[node_id].directory, topic) == committed, node_id


def read_values(bootstrap: str, topic: str) -> list[bytes]:
    """Partition 0 of `topic` from the beginning to its end offset, by confluent-kafka."""
    consumer = confluent_kafka.Consumer(
        confluent_config(bootstrap, **{"group.id": "unused", "enable.auto.commit": False})
    )
    try:
        tp = confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)
        _, end = consumer.get_watermark_offsets(tp, timeout=10)
        consumer.assign([tp])
        values: list[bytes] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(values) < end and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                assert message.error() is None, message.error()
                values.append(message.value())
        return values
    finally:
        consumer.close()


# -- 3. a consumer group loses its coordinator

GROUP = "survivors"


@dataclass
class Member:
    """One confluent-kafka consumer of the group in a thread: it reads in batches and
    commits each batch synchronously; a commit that fails (the coordinator is gone, the
    group rebalances) is recorded and the next one covers it."""

    bootstrap: str
    topic: str
    stop: threading.Event
    records: list[tuple[int, int, int]] = field(default_factory=list)
    """(partition, offset, sequence number) of every record read."""
    commits: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    """(time.monotonic() once acknowledged, {partition: offset}) of every commit made."""
    errors: list[str] = field(default_factory=list)

    TIMEOUT_S = 90

    def run(self) -> None:
        settings = {
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 500,
        }
        consumer = confluent_kafka.Consumer(confluent_config(self.bootstrap, **settings))
        try:
            consumer.subscribe([self.topic])
            deadline = time.monotonic() + self.TIMEOUT_S
            while not self.stop.is_set() and time.monotonic() < deadline:
                messages = consumer.consume(500, 0.1)
                for message in messages:
                    if message.error() is not None:
                        self.errors.append(str(message.error()))
                    else:
                        read = (message.partition(), message.offset(), int(message.value()))
                        self.records.append(read)
                if messages:
                    self._commit(consumer)
        finally:
            consumer.close()

    def _commit(self, consumer: Any) -> None:
        try:
            committed = consumer.commit(asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            self.errors.append(f"commit: {exc}")
            return
        offsets = {tp.partition: tp.offset for tp in committed if tp.error is None}
        self.commits.append((time.monotonic(), offsets))


def group_admin(bootstrap: str) -> Admin:
    """Our admin client for the group's offsets and coordinator: confluent-kafka's
    coordinator requests (ListConsumerGroupOffsets, DescribeConsumerGroups) can abort the
    process when the coordinator's connection drops (librdkafka issue #4605)."""
    return Admin(bootstrap_servers=bootstrap, request_timeout_ms=3000, default_api_timeout_ms=5000)


async def group_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of `topic` (OffsetFetch), by partition."""
    async with group_admin(bootstrap) as admin:
        offsets = await admin.list_group_offsets(GROUP)
    return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}


async def group_coordinator(bootstrap: str) -> int:
    async with group_admin(bootstrap) as admin:
        description = (await admin.describe_groups([GROUP]))[GROUP]
    return description.coordinator.node_id


async def poll(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout_s: float, what: str
) -> Any:
    """Await `probe()` until `done` accepts its answer (an exception counts as not yet);
    the answer. Fails after `timeout_s` with the last answer or exception."""
    last: Any = None
    with trio.move_on_after(timeout_s):
        while True:
            try:
                last = await probe()
                if done(last):
                    return last
            except Exception as exc:
                last = exc
            await trio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s; last {last!r}")


@pytest.mark.cluster_settings(offsets_topic_num_partitions=3, group_initial_rebalance_delay_ms=0)
async def test_a_consumer_group_survives_the_loss_of_its_coordinator(cluster: Cluster) -> None:
    """Three confluent-kafka consumers of one group read a topic (RF=3) while an idempotent
    producer writes to it; `kill -9` of the group coordinator loses no acknowledged commit
    (the next coordinator answers offsets at least as far), the group goes on consuming,
    skips nothing, and ends with its committed offsets at the log ends."""
    topic, partitions = "watched", 3
    await create_topic(
        cluster.bootstrap, topic, num_partitions=partitions, replication_factor=3, config=MIN_ISR
    )
    await cluster.wait_agreed(NODES, in_sync(topic, ALL))
    load = Load(cluster.bootstrap, topic, min_records=6000, rate=400)
    stop_members = threading.Event()
    members = [Member(cluster.bootstrap, topic, stop_members) for _ in range(3)]

    def committed_before(at: float) -> dict[int, int]:
        """The furthest acknowledged commit of each partition before `at`."""
        furthest: dict[int, int] = {}
        for member in members:
            for when, offsets in member.commits:
                if when < at:
                    for partition, offset in offsets.items():
                        furthest[partition] = max(furthest.get(partition, 0), offset)
        return furthest

    async def committed_so_far() -> dict[int, int]:
        return committed_before(time.monotonic())

    produced = trio.Event()

    async def run_load() -> None:
        try:
            assert await trio.to_thread.run_sync(load.run) == 0
        finally:
            produced.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_load)
        for member in members:
            nursery.start_soon(trio.to_thread.run_sync, member.run)
        try:
            # Every partition committed, then the coordinator goes.
            await poll(
                committed_so_far,
                lambda c: len(c) == partitions and min(c.values()) > 0,
                READ_TIMEOUT_S,
                "the group commits every partition",
            )
            coordinator = await group_coordinator(cluster.bootstrap)
            killed_at = time.monotonic()
            await cluster.nodes[coordinator].kill()
            survivors = ",".join(n.bootstrap for i, n in cluster.nodes.items() if i != coordinator)
            before = committed_before(killed_at)
            after = await poll(
                lambda: group_offsets(survivors, topic),
                lambda c: all(c.get(p, -1) >= offset for p, offset in before.items()),
                FAILOVER_TIMEOUT_S,
                f"the new coordinator has the commits acknowledged before the kill, {before}",
            )
            new_coordinator = await group_coordinator(survivors)
            assert new_coordinator != coordinator
            # The group goes on: it commits past where it was.
            await poll(
                lambda: group_offsets(survivors, topic),
                lambda c: sum(c.values()) > sum(after.values()),
                READ_TIMEOUT_S,
                "the group commits after the kill",
            )
            load.stop.set()
            with trio.fail_after(Load.TIMEOUT_S):
                await produced.wait()
            ends = await end_offsets(survivors, topic, partitions)
            await poll(
                lambda: group_offsets(survivors, topic),
                lambda c: c == ends,
                READ_TIMEOUT_S,
                f"the group commits everything, {ends}",
            )
        finally:
            load.stop.set()
            stop_members.set()

    assert not load.errors, load.errors[:10]
    assert sum(ends.values()) == load.sent
    read: dict[tuple[int, int], int] = {}
    for member in members:
        for partition, offset, sequence in member.records:
            assert read.setdefault((partition, offset), sequence) == sequence, (partition, offset)
    for partition, end in ends.items():
        skipped = [o for o in range(end) if (partition, o) not in read]
        assert not skipped, f"partition {partition}: {len(skipped)} skipped, e.g. {skipped[:10]}"
    misplaced = [a for a in load.acks if read.get((a.partition, a.offset)) != a.sequence]
    assert not misplaced, misplaced[:10]
    print(
        f"group coordinator {coordinator} killed, {new_coordinator} took over; "
        f"{len(read)} records, {sum(len(m.records) for m in members)} reads; "
        f"commit errors: {sum(len(m.errors) for m in members)}"
    )
