"""Consumer groups with real clients against a broker process (issue #6).

Members run as subprocesses (`group_member.py`), one per member, so a test can stop one with
SIGTERM (it leaves the group) or SIGKILL (its session has to time out). Their JSON-line
reports (assignments with their generation, records read, commits) come back through one
queue; the test waits on that queue for the group states it needs, never on a timer.

The churn scenario, for confluent-kafka, kafka-python and aiokafka alike: three members
share a topic of 12 partitions; one leaves, one is killed, one joins, while records are
produced in phases between the steps. Then:

- every produced record was read at least once, and nothing was read that was not produced;
- within a generation no partition was assigned to, or read by, two members, and a member
  read only partitions it held in the generation it reported;
- no two members held a partition at the same time (from the members' monotonic clock
  stamps, shared by every process on the machine; a killed member holds its partitions
  until it is dead);
- the group's committed offsets (OffsetFetch through the admin client) end at the log end.

Also: committed offsets survive a clean restart and `kill -9` of the broker, and the admin
client lists and describes a group with its members and their assignments.
"""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from tests.interop.conftest import BrokerProcess, run_broker_process

MEMBER_SCRIPT = Path(__file__).with_name("group_member.py")
TOPIC_PARTITIONS = 12
RECORDS_PER_PARTITION = 5
"""Records each production phase writes to every partition."""
SESSION_TIMEOUT_MS = 3000
"""Short, so a killed member is noticed soon; long enough for a busy machine's heartbeats."""
HEARTBEAT_INTERVAL_MS = 300
STEP_TIMEOUT_S = 30
"""How long one step may wait for the group (only reached when something is wrong)."""
MEMBER_TIMEOUT_S = 90
"""A member's own deadline: it exits by itself if a test forgets it."""
EXIT_TIMEOUT_S = 15
CLIENT_TIMEOUT_S = 20
CLIENT_MODULES = {"confluent": "confluent_kafka", "kafka-python": "kafka", "aiokafka": "aiokafka"}

Record = tuple[int, int, str]
"""(partition, offset, value)"""


# --- the broker through confluent-kafka's admin client and producer ---------------------------


def admin_client(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4"})


def create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    futures[topic].result(CLIENT_TIMEOUT_S)


def record_of(message: confluent_kafka.Message) -> Record:
    partition, offset, value = message.partition(), message.offset(), message.value()
    assert partition is not None and offset is not None and value is not None
    return partition, offset, value.decode()


class PhasedProducer:
    """Writes numbered records round-robin over a topic's partitions and remembers where
    each one landed."""

    def __init__(self, broker: BrokerProcess, topic: str, partitions: int) -> None:
        self._producer = confluent_kafka.Producer(
            {"bootstrap.servers": broker.bootstrap, "broker.address.family": "v4", "acks": "all"}
        )
        self._topic = topic
        self._partitions = partitions
        self.produced: list[Record] = []

    @staticmethod
    def value_prefix(phase: int) -> str:
        return f"phase{phase}-"

    def produce_phase(self, phase: int) -> None:
        """`RECORDS_PER_PARTITION` records to every partition, all acknowledged."""

        def on_delivery(error: Any, message: confluent_kafka.Message) -> None:
            assert error is None, error
            self.produced.append(record_of(message))

        count = RECORDS_PER_PARTITION * self._partitions
        before = len(self.produced)
        for i in range(count):
            self._producer.produce(
                self._topic,
                value=f"{self.value_prefix(phase)}{i}".encode(),
                partition=i % self._partitions,
                on_delivery=on_delivery,
            )
        assert self._producer.flush(CLIENT_TIMEOUT_S) == 0
        assert len(self.produced) == before + count


def log_end_offsets(admin: AdminClient, topic: str, partitions: int) -> dict[int, int]:
    futures = admin.list_offsets(
        {confluent_kafka.TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
        request_timeout=CLIENT_TIMEOUT_S,
    )
    return {tp.partition: f.result(CLIENT_TIMEOUT_S).offset for tp, f in futures.items()}


def committed_offsets(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the group's committed offset, as OffsetFetch answers."""
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=CLIENT_TIMEOUT_S
    )
    result = futures[group].result(CLIENT_TIMEOUT_S)
    assert all(tp.error is None for tp in result.topic_partitions), result.topic_partitions
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


# --- member processes and what they report ----------------------------------------------------


@dataclass
class Ownership:
    """One member holding one assignment: from its `assigned` report until it reported the
    revocation or its closing, or until it was killed (`end_s` None: still held)."""

    member: str
    generation: int
    partitions: list[int]
    start_s: float
    end_s: float | None = None


@dataclass
class MemberState:
    process: subprocess.Popen[bytes]
    reader: threading.Thread
    stderr_path: Path
    member_id: str | None = None
    holding: Ownership | None = None
    exited: bool = False
    """Its stdout is closed (the process is gone or going)."""
    reports: list[dict[str, Any]] = field(default_factory=list)


class Group:
    """The member processes of one group and everything they have reported, applied in the
    order it arrived."""

    def __init__(
        self, client: str, broker: BrokerProcess, topic: str, partitions: int, name: str, logs: Path
    ) -> None:
        self.client = client
        self.broker = broker
        self.topic = topic
        self.partitions = partitions
        self.name = name
        self._logs = logs
        self._inbox: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        self.members: dict[str, MemberState] = {}
        self.ownerships: list[Ownership] = []
        self.consumed: list[tuple[str, int, Record]] = []
        """(member, generation, record) for every record read, in report order."""
        self.committed: dict[int, int] = {}
        """Partition -> the highest offset a member reported committed."""
        self.violations: list[str] = []
        """Partitions handed to two members in one generation, and reads outside the
        reader's assignment, found as reports are applied (a wait fails on the first)."""

    def start(self, member: str, *options: str) -> None:
        stderr_path = self._logs / f"{self.name}-{member}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(MEMBER_SCRIPT),
                    self.client,
                    self.broker.bootstrap,
                    self.topic,
                    self.name,
                    "--client-id",
                    member,
                    "--session-timeout-ms",
                    str(SESSION_TIMEOUT_MS),
                    "--heartbeat-interval-ms",
                    str(HEARTBEAT_INTERVAL_MS),
                    "--timeout-s",
                    str(MEMBER_TIMEOUT_S),
                    *options,
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        reader = threading.Thread(target=self._pump, args=(member, process), daemon=True)
        self.members[member] = MemberState(process, reader, stderr_path)
        reader.start()

    def _pump(self, member: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._inbox.put((member, json.loads(line)))
        self._inbox.put((member, None))

    def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Apply reports as they come until `condition()` holds; fail after `STEP_TIMEOUT_S`."""
        deadline_s = time.monotonic() + STEP_TIMEOUT_S
        while not condition():
            assert self.violations == [], self.violations
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise AssertionError(
                    f"{self.client}: no {what} within {STEP_TIMEOUT_S} s; {self._describe()}"
                )
            try:
                member, report = self._inbox.get(timeout=remaining_s)
            except queue.Empty:
                continue
            self._apply(member, report)

    def _apply(self, member: str, report: dict[str, Any] | None) -> None:
        state = self.members[member]
        if report is None:
            state.exited = True
            return
        state.reports.append(report)
        event = report["event"]
        if event == "assigned":
            self._release(state, report["time_s"])
            state.member_id = report["member_id"]
            state.holding = Ownership(
                member, report["generation"], report["partitions"], report["time_s"]
            )
            for other in self.ownerships:
                shared = set(other.partitions) & set(state.holding.partitions)
                same_generation = other.generation == state.holding.generation
                if other.member != member and same_generation and shared:
                    self.violations.append(f"{state.holding} and {other} share {shared}")
            self.ownerships.append(state.holding)
        elif event in ("revoked", "closing"):
            self._release(state, report["time_s"])
        elif event == "records":
            held = state.holding
            for partition, offset, value in report["records"]:
                if (
                    held is None
                    or held.generation != report["generation"]
                    or (partition not in held.partitions)
                ):
                    self.violations.append(
                        f"{member} read {partition}@{offset} in generation "
                        f"{report['generation']} holding {held}"
                    )
                self.consumed.append((member, report["generation"], (partition, offset, value)))
        elif event == "committed":
            for partition, offset in report["offsets"]:
                self.committed[partition] = max(self.committed.get(partition, 0), offset)

    @staticmethod
    def _release(state: MemberState, time_s: float) -> None:
        if state.holding is not None:
            state.holding.end_s = time_s
            state.holding = None

    def stable(self, *names: str) -> bool:
        """The named members hold assignments of one generation that split the topic."""
        held = [self.members[name].holding for name in names]
        if any(h is None for h in held):
            return False
        generations = {h.generation for h in held if h is not None}
        partitions = [p for h in held if h is not None for p in h.partitions]
        return len(generations) == 1 and sorted(partitions) == list(range(self.partitions))

    def generation_of(self, name: str) -> int:
        holding = self.members[name].holding
        assert holding is not None
        return holding.generation

    def has_read(self, name: str, records: list[Record]) -> bool:
        wanted = set(records)
        return any(m == name and r in wanted for m, _, r in self.consumed)

    def has_read_all(self, records: list[Record]) -> bool:
        return set(records) <= {r for _, _, r in self.consumed}

    def terminate(self, name: str) -> None:
        """SIGTERM: the member closes its consumer (LeaveGroup) and must exit 0."""
        state = self.members[name]
        state.process.send_signal(signal.SIGTERM)
        self.wait_until(f"exit of {name}", lambda: state.exited)
        assert state.process.wait(EXIT_TIMEOUT_S) == 0, state.stderr_path.read_text()
        assert state.reports[-1]["event"] == "closed", state.reports[-3:]

    def kill(self, name: str) -> None:
        """SIGKILL: no LeaveGroup; what it held is held until now, when it is surely dead."""
        state = self.members[name]
        state.process.kill()
        state.process.wait(EXIT_TIMEOUT_S)
        # Reports it wrote before dying are still in the pipe: take them first.
        self.wait_until(f"end of {name}'s output", lambda: state.exited)
        self._release(state, time.monotonic())

    def stop_all(self) -> None:
        """Kill whatever is still running (after a failure); only our own processes."""
        for state in self.members.values():
            if state.process.poll() is None:
                state.process.kill()
            state.process.wait(EXIT_TIMEOUT_S)
            state.reader.join(EXIT_TIMEOUT_S)
            assert state.process.stdout is not None
            state.process.stdout.close()

    def _describe(self) -> str:
        lines = []
        for name, state in self.members.items():
            status = state.process.poll()
            lines.append(
                f"{name}: exit {status}, holding {state.holding}, last reports "
                f"{state.reports[-3:]}, stderr {state.stderr_path.read_text()[-2000:]!r}"
            )
        return "\n".join(lines)


@contextmanager
def group_of(
    client: str, broker: BrokerProcess, topic: str, partitions: int, name: str, logs: Path
) -> Iterator[Group]:
    group = Group(client, broker, topic, partitions, name, logs)
    try:
        yield group
    finally:
        group.stop_all()


# --- checks -----------------------------------------------------------------------------------


def check_one_owner_per_generation(group: Group) -> None:
    assigned: dict[tuple[int, int], set[str]] = defaultdict(set)
    for ownership in group.ownerships:
        for partition in ownership.partitions:
            assigned[ownership.generation, partition].add(ownership.member)
    shared = {key: members for key, members in assigned.items() if len(members) > 1}
    assert shared == {}, "partitions assigned to two members in one generation"

    readers: dict[tuple[int, int], set[str]] = defaultdict(set)
    for member, generation, (partition, _, _) in group.consumed:
        readers[generation, partition].add(member)
    shared = {key: members for key, members in readers.items() if len(members) > 1}
    assert shared == {}, "partitions read by two members in one generation"
    assert group.violations == []


def check_no_overlapping_ownership(group: Group) -> None:
    by_partition: dict[int, list[Ownership]] = defaultdict(list)
    for ownership in group.ownerships:
        assert ownership.end_s is not None, f"{ownership} never ended"
        for partition in ownership.partitions:
            by_partition[partition].append(ownership)
    for partition, held in by_partition.items():
        held.sort(key=lambda o: o.start_s)
        for earlier, later in itertools.pairwise(held):
            assert earlier.end_s is not None
            if earlier.member != later.member:
                assert earlier.end_s <= later.start_s, (
                    f"partition {partition}: {later} taken while {earlier} still held it"
                )


def check_every_record_read(group: Group, produced: list[Record]) -> None:
    consumed = {record for _, _, record in group.consumed}
    missing = set(produced) - consumed
    assert missing == set(), f"{len(missing)} records never read: {sorted(missing)[:5]}"
    unexpected = consumed - set(produced)
    assert unexpected == set(), f"read but not produced: {sorted(unexpected)[:5]}"


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka"])
def test_group_shares_partitions_through_leave_kill_and_join(
    tidelog_broker: BrokerProcess, unique_topic: str, tmp_path: Path, client: str
) -> None:
    pytest.importorskip(CLIENT_MODULES[client])
    broker = tidelog_broker
    admin = admin_client(broker)
    create_topic(admin, unique_topic, TOPIC_PARTITIONS)
    producer = PhasedProducer(broker, unique_topic, TOPIC_PARTITIONS)
    group_name = f"{unique_topic}-group"

    with group_of(client, broker, unique_topic, TOPIC_PARTITIONS, group_name, tmp_path) as group:
        group.start("a")
        # b stops committing at phase 3, so it dies with records read but not committed.
        group.start("b", "--uncommitted-prefix", PhasedProducer.value_prefix(3))
        group.start("c")
        group.wait_until("three-member generation", lambda: group.stable("a", "b", "c"))
        first_generation = group.generation_of("a")
        producer.produce_phase(1)
        group.wait_until("phase 1 read", lambda: group.has_read_all(producer.produced))

        group.terminate("a")  # leaves: the others take its partitions over at once
        producer.produce_phase(2)
        group.wait_until("two-member generation", lambda: group.stable("b", "c"))
        assert group.generation_of("b") > first_generation

        before_kill = len(producer.produced)
        producer.produce_phase(3)
        phase_3 = producer.produced[before_kill:]
        group.wait_until("b reading phase 3", lambda: group.has_read("b", phase_3))
        killed_generation = group.generation_of("b")
        group.kill("b")  # no LeaveGroup: the broker notices when b's session times out
        producer.produce_phase(4)
        group.start("d")  # joins while b still counts as a member
        group.wait_until("generation without b", lambda: group.stable("c", "d"))
        # Every partition gets records in the last generation, so every one gets a commit
        # there, whatever commits the rebalances refused before.
        producer.produce_phase(5)

        log_end = log_end_offsets(admin, unique_topic, TOPIC_PARTITIONS)
        group.wait_until("commits at the log end", lambda: group.committed == log_end)
        group.terminate("c")
        group.terminate("d")

    produced_per_partition = {p: 0 for p in range(TOPIC_PARTITIONS)}
    for partition, _, _ in producer.produced:
        produced_per_partition[partition] += 1
    assert log_end == produced_per_partition
    assert committed_offsets(admin, group_name) == {
        (unique_topic, p): end for p, end in log_end.items()
    }
    check_every_record_read(group, producer.produced)
    check_one_owner_per_generation(group)
    check_no_overlapping_ownership(group)
    # What b read but never committed went to the next owners: at-least-once, not at-most.
    uncommitted = {r for m, _, r in group.consumed if m == "b" and r in set(phase_3)}
    reread = {r for m, g, r in group.consumed if m != "b" and g > killed_generation}
    assert uncommitted and uncommitted <= reread


def consume_and_commit(broker: BrokerProcess, topic: str, group: str, count: int) -> list[Record]:
    """Join `group`, read `count` records, commit them (synchronously) and leave."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "broker.address.family": "v4",
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        }
    )
    consumer.subscribe([topic])
    records: list[Record] = []
    try:
        deadline_s = time.monotonic() + STEP_TIMEOUT_S
        while len(records) < count:
            assert time.monotonic() < deadline_s, f"read {len(records)} of {count} records"
            for message in consumer.consume(count - len(records), 0.2):
                assert message.error() is None, message.error()
                records.append(record_of(message))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return records


def test_committed_offsets_survive_restart_and_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    topic, group, partitions = "resumed", "survivors", 4

    with run_broker_process(tmp_path, data_dir, "first") as (broker, _):
        admin = admin_client(broker)
        create_topic(admin, topic, partitions)
        producer = PhasedProducer(broker, topic, partitions)
        producer.produce_phase(1)
        first = consume_and_commit(broker, topic, group, len(producer.produced))
        assert sorted(first) == sorted(producer.produced)
        committed_before = committed_offsets(admin, group)
        assert committed_before == {(topic, p): RECORDS_PER_PARTITION for p in range(partitions)}
    # A clean shutdown (SIGTERM, exit 0) and a start on the same data directory.
    with run_broker_process(tmp_path, data_dir, "second") as (broker, process):
        admin = admin_client(broker)
        assert committed_offsets(admin, group) == committed_before
        producer = PhasedProducer(broker, topic, partitions)
        producer.produce_phase(2)
        # The group resumes at its commits: only the new records.
        second = consume_and_commit(broker, topic, group, len(producer.produced))
        assert sorted(second) == sorted(producer.produced)
        committed_before_kill = committed_offsets(admin, group)
        assert committed_before_kill == {
            (topic, p): 2 * RECORDS_PER_PARTITION for p in range(partitions)
        }
        process.kill()  # kill -9
        assert process.wait(EXIT_TIMEOUT_S) == -signal.SIGKILL
    with run_broker_process(tmp_path, data_dir, "third") as (broker, _):
        admin = admin_client(broker)
        assert committed_offsets(admin, group) == committed_before_kill
        producer = PhasedProducer(broker, topic, partitions)
        producer.produce_phase(3)
        third = consume_and_commit(broker, topic, group, len(producer.produced))
        assert sorted(third) == sorted(producer.produced)


def test_admin_client_lists_and_describes_a_group(
    tidelog_broker: BrokerProcess, unique_topic: str, tmp_path: Path
) -> None:
    broker = tidelog_broker
    partitions = 4
    admin = admin_client(broker)
    create_topic(admin, unique_topic, partitions)
    group_name = f"{unique_topic}-group"

    def describe() -> Any:
        return admin.describe_consumer_groups([group_name], request_timeout=CLIENT_TIMEOUT_S)[
            group_name
        ].result(CLIENT_TIMEOUT_S)

    def listed() -> dict[str, Any]:
        result = admin.list_consumer_groups(request_timeout=CLIENT_TIMEOUT_S).result(
            CLIENT_TIMEOUT_S
        )
        assert result.errors == []
        return {listing.group_id: listing for listing in result.valid}

    with group_of("confluent", broker, unique_topic, partitions, group_name, tmp_path) as group:
        group.start("x")
        group.start("y")
        group.wait_until("two-member generation", lambda: group.stable("x", "y"))

        listing = listed()[group_name]
        assert listing.state == ConsumerGroupState.STABLE
        assert not listing.is_simple_consumer_group

        description = describe()
        assert description.group_id == group_name
        assert description.state == ConsumerGroupState.STABLE
        assert not description.is_simple_consumer_group
        # Both members prefer range (then roundrobin): the group's vote picks range.
        assert description.partition_assignor == "range"
        assert (description.coordinator.host, description.coordinator.port) == (
            broker.host,
            broker.port,
        )
        members = {m.client_id: m for m in description.members}
        assert set(members) == {"x", "y"}
        for name, member in members.items():
            state = group.members[name]
            assert member.member_id == state.member_id
            assert member.host.lstrip("/") == "127.0.0.1"
            assert state.holding is not None
            assert sorted(
                (tp.topic, tp.partition) for tp in member.assignment.topic_partitions
            ) == [(unique_topic, p) for p in state.holding.partitions]

        group.terminate("x")
        group.terminate("y")

    description = describe()
    assert description.state == ConsumerGroupState.EMPTY
    assert description.members == []
    assert listed()[group_name].state == ConsumerGroupState.EMPTY
