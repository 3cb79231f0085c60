"""The record accumulator: batching, linger, memory accounting and ordered retries."""

from __future__ import annotations

import random

import pytest

from tidelog.client.accumulator import (
    BATCH_OVERHEAD_BYTES,
    ProducerBatch,
    RecordAccumulator,
    estimate_record_bytes,
)
from tidelog.client.idempotence import IdempotenceState
from tidelog.client.protocol.records import Compression, RecordInput, decode_batch, encode_batch
from tidelog.client.structs import TopicPartition

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)
U0 = TopicPartition("u", 0)
LEADERS = {T0: 1, T1: 2, U0: 1}


def leader_of(tp: TopicPartition) -> int | None:
    return LEADERS.get(tp)


class Flag:
    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        assert not self.is_set, "a batch completes once"
        self.is_set = True


def make(**overrides: float) -> RecordAccumulator:
    settings: dict[str, float] = {
        "batch_size": 1000,
        "linger_s": 0.010,
        "buffer_memory": 100_000,
        "max_in_flight": 5,
    }
    settings.update(overrides)
    return RecordAccumulator(
        batch_size=int(settings["batch_size"]),
        linger_s=settings["linger_s"],
        buffer_memory=int(settings["buffer_memory"]),
        max_in_flight=int(settings["max_in_flight"]),
        completion_factory=Flag,
    )


def add(acc: RecordAccumulator, tp: TopicPartition, value: bytes, now: float = 0.0):
    size = estimate_record_bytes(None, value)
    return acc.append(tp, RecordInput(value), size, now)


def test_size_estimate_bounds_the_encoded_size() -> None:
    cases = [
        (None, b""),
        (b"k", b"v" * 100),
        (b"key" * 50, b"x" * 100_000),
    ]
    for key, value in cases:
        headers = [("h1", b"a" * 300), ("h2", None)]
        records = [RecordInput(value, key, headers, 1_700_000_000_000)] * 3
        encoded = encode_batch(records, compression=Compression.NONE)
        estimate = BATCH_OVERHEAD_BYTES + 3 * estimate_record_bytes(key, value, headers)
        assert len(encoded) <= estimate


def test_records_fill_a_batch_then_start_the_next() -> None:
    acc = make(batch_size=BATCH_OVERHEAD_BYTES + 3 * estimate_record_bytes(None, b"x" * 100))
    batches = [add(acc, T0, b"x" * 100)[0] for _ in range(7)]
    assert [b.serial for b in batches] == [0, 0, 0, 1, 1, 1, 2]
    assert [i for _, i, _ in (add(acc, T1, b"y"), add(acc, T1, b"y"))] == [0, 1]


def test_a_record_larger_than_batch_size_gets_its_own_batch() -> None:
    acc = make(batch_size=200)
    small, _, _ = add(acc, T0, b"a")
    big, index, wake = add(acc, T0, b"b" * 5000)
    after, _, _ = add(acc, T0, b"c")
    assert small is not big is not after and index == 0 and wake
    assert big.record_count == 1


def test_readiness_by_linger_full_batch_and_flush() -> None:
    acc = make(linger_s=0.5)
    add(acc, T0, b"a", now=10.0)
    check = acc.ready(10.1, leader_of)
    assert check.ready_nodes == set() and check.next_check_at == pytest.approx(10.5)
    assert acc.ready(10.5, leader_of).ready_nodes == {1}
    acc.flushes_in_progress += 1
    assert acc.ready(10.1, leader_of).ready_nodes == {1}
    acc.flushes_in_progress -= 1
    for _ in range(20):  # overflow into a second batch: the first is full
        add(acc, T1, b"z" * 100, now=10.0)
    assert acc.ready(10.0, leader_of).ready_nodes == {2}


def test_unknown_leaders_are_reported() -> None:
    acc = make(linger_s=0)
    add(acc, TopicPartition("nowhere", 0), b"a")
    check = acc.ready(0.0, leader_of)
    assert check.unknown_leader_topics == {"nowhere"} and not check.ready_nodes


def test_drain_takes_one_batch_per_partition_of_the_node_within_the_request_size() -> None:
    acc = make(linger_s=0)
    for _ in range(30):
        add(acc, T0, b"x" * 100)
        add(acc, U0, b"x" * 100)
        add(acc, T1, b"x" * 100)
    drained = acc.drain(1, 0.0, leader_of, max_request_bytes=10_000)
    assert sorted(b.tp for b in drained) == [T0, U0]
    assert all(b.in_flight and b.attempts == 1 for b in drained)
    assert acc.in_flight_count(T0) == 1
    # A request size that fits one batch still sends one (never zero).
    single = acc.drain(1, 0.0, leader_of, max_request_bytes=1)
    assert len(single) == 1


def test_drain_rotates_so_no_partition_starves() -> None:
    acc = make(linger_s=0, max_in_flight=100)
    for _ in range(40):
        add(acc, T0, b"x" * 600)
        add(acc, U0, b"x" * 600)
    first = [acc.drain(1, 0.0, leader_of, max_request_bytes=700)[0].tp for _ in range(6)]
    assert set(first) == {T0, U0}


def test_in_flight_limit_per_partition() -> None:
    acc = make(linger_s=0, max_in_flight=2)
    for _ in range(10):
        add(acc, T0, b"x" * 900)
    assert len(acc.drain(1, 0.0, leader_of, 10**6)) == 1
    assert len(acc.drain(1, 0.0, leader_of, 10**6)) == 1
    assert acc.drain(1, 0.0, leader_of, 10**6) == []
    assert acc.ready(0.0, leader_of).ready_nodes == set()


def drain_all(acc: RecordAccumulator, node: int = 1) -> list[ProducerBatch]:
    out: list[ProducerBatch] = []
    for _ in range(100):
        got = acc.drain(node, 100.0, leader_of, 10**6)
        if not got:
            return out
        out.extend(got)
    raise AssertionError("drain did not settle")


def test_retries_go_first_in_order_one_at_a_time_after_in_flight_drains() -> None:
    acc = make(linger_s=0, max_in_flight=5)
    for _ in range(6):
        add(acc, T0, b"x" * 900)
    in_flight = drain_all(acc)
    assert [b.serial for b in in_flight] == [0, 1, 2, 3, 4]
    # The connection drops: responses fail in any order; re-queued in append order.
    for batch in (in_flight[2], in_flight[0], in_flight[4]):
        acc.requeue(batch, retry_at=0.0)
    assert [b.serial for b in acc.queued(T0)] == [0, 2, 4, 5]
    # Batches 1 and 3 are still in flight: nothing of T0 may go yet.
    assert drain_all(acc) == []
    acc.requeue(in_flight[3], retry_at=0.0)
    acc.complete(in_flight[1], 10, -1)
    assert [b.serial for b in acc.queued(T0)] == [0, 2, 3, 4, 5]
    resent = []
    for _ in range(4):
        (batch,) = acc.drain(1, 100.0, leader_of, 10**6)
        resent.append(batch.serial)
        if acc.queued(T0)[0].attempts:
            # Another retry waits behind it: retries go strictly one at a time.
            assert acc.drain(1, 100.0, leader_of, 10**6) == []
        acc.complete(batch, 0, -1)
    assert resent == [0, 2, 3, 4]
    # Once no retry waits, never-sent batches are pipelined again.
    add(acc, T0, b"x" * 900)
    assert [b.serial for b in drain_all(acc)] == [5, 6]


def test_retry_waits_for_its_backoff() -> None:
    acc = make(linger_s=0)
    add(acc, T0, b"x")
    (batch,) = acc.drain(1, 0.0, leader_of, 10**6)
    acc.requeue(batch, retry_at=5.0)
    check = acc.ready(1.0, leader_of)
    assert check.ready_nodes == set() and check.next_check_at == 5.0
    assert acc.drain(1, 1.0, leader_of, 10**6) == []
    assert acc.drain(1, 5.0, leader_of, 10**6) == [batch]
    assert batch.attempts == 2


def test_memory_is_held_until_completion_and_bounded() -> None:
    record_bytes = estimate_record_bytes(None, b"x" * 1000)
    acc = make(buffer_memory=5 * (record_bytes + BATCH_OVERHEAD_BYTES), batch_size=1)
    appended = []
    while acc.has_room(record_bytes):
        appended.append(add(acc, T0, b"x" * 1000)[0])
    assert len(appended) == 5
    assert acc.memory_used_bytes <= acc.buffer_memory
    with pytest.raises(AssertionError):
        add(acc, T0, b"x" * 1000)
    (batch,) = acc.drain(1, 0.0, leader_of, 10**6)
    assert not acc.has_room(record_bytes)  # in flight still counts
    acc.complete(batch, 0, -1)
    assert acc.has_room(record_bytes)
    assert batch.done and batch.completion.is_set  # type: ignore[attr-defined]


def test_fail_and_expire() -> None:
    acc = make(linger_s=0)
    old, _, _ = add(acc, T0, b"a", now=0.0)
    new, _, _ = add(acc, T1, b"b", now=50.0)
    assert acc.expired(60.0, delivery_timeout_s=30.0) == [old]
    assert acc.oldest_queued_at() == 0.0
    error = RuntimeError("gone")
    acc.fail(old, error)
    assert old.done and old.error is error and acc.queued(T0) == []
    assert acc.incomplete() == [new]
    assert acc.memory_used_bytes == new.size_bytes


def test_closing_makes_everything_ready() -> None:
    acc = make(linger_s=1000)
    add(acc, T0, b"a")
    assert acc.ready(0.0, leader_of).ready_nodes == set()
    acc.closing = True
    assert acc.ready(0.0, leader_of).ready_nodes == {1}


def test_sequences_follow_append_order_and_survive_a_roundtrip() -> None:
    state = IdempotenceState()
    state.set_producer_id(7, 0)
    assert state.assign(T0, 3) == 0
    assert state.assign(T0, 2) == 3
    assert state.assign(T1, 1) == 0
    encoded = encode_batch([RecordInput(b"v")], producer_id=7, producer_epoch=0, base_sequence=3)
    header, records = decode_batch(encoded)
    assert (header.producer_id, header.base_sequence, len(records)) == (7, 3, 1)


def test_sequence_bookkeeping() -> None:
    state = IdempotenceState()
    assert not state.has_producer_id
    state.set_producer_id(1, 0)
    first = state.assign(T0, 5)
    second = state.assign(T0, 5)
    assert state.is_first_unacknowledged(T0, first)
    assert not state.is_first_unacknowledged(T0, second)
    state.acknowledged(T0, first)
    assert state.is_first_unacknowledged(T0, second)
    state.abandon()
    assert not state.has_producer_id
    state.set_producer_id(1, 1)
    assert state.assign(T0, 1) == 0  # a new epoch restarts every sequence


def test_sequences_wrap_at_int32_max() -> None:
    state = IdempotenceState()
    state.set_producer_id(1, 0)
    state.assign(T0, 2**31 - 3)
    assert state.assign(T0, 5) == 2**31 - 3
    assert state.assign(T0, 1) == 2
    with pytest.raises(ValueError):
        state.set_producer_id(-1, 0)


@pytest.mark.parametrize("seed", range(20))
def test_random_schedules_keep_partition_order_and_memory_accounting(seed: int) -> None:
    """Appends, drains, acks, retries and failures in random order; after every step:
    first sends of a partition go out in append order, a retry goes out only when nothing
    else of its partition is in flight and no earlier batch waits, and memory in use is
    exactly what incomplete batches hold."""
    rng = random.Random(seed)
    acc = make(linger_s=0, max_in_flight=3, batch_size=300)
    partitions = [T0, T1, U0]
    in_flight: list[ProducerBatch] = []
    first_sends: dict[TopicPartition, list[int]] = {tp: [] for tp in partitions}
    now = 0.0
    for _ in range(400):
        now += 0.01
        action = rng.random()
        if action < 0.4:
            tp = rng.choice(partitions)
            if acc.has_room(estimate_record_bytes(None, b"x" * 50)):
                add(acc, tp, b"x" * 50, now=now)
        elif action < 0.7:
            node = rng.choice([1, 2])
            for batch in acc.drain(node, now, leader_of, max_request_bytes=rng.randrange(1, 2000)):
                others = [b for b in in_flight if b.tp == batch.tp]
                if batch.attempts == 1:
                    assert all(o.serial < batch.serial for o in others)
                    first_sends[batch.tp].append(batch.serial)
                else:
                    assert not others, "a retry went out while its partition had one in flight"
                earlier = [b for b in acc.queued(batch.tp) if b.serial < batch.serial]
                assert not earlier
                in_flight.append(batch)
        elif in_flight:
            batch = in_flight.pop(rng.randrange(len(in_flight)))
            outcome = rng.random()
            if outcome < 0.6:
                acc.complete(batch, 0, -1)
            elif outcome < 0.9:
                acc.requeue(batch, retry_at=now + rng.choice([0.0, 0.05]))
            else:
                acc.fail(batch, RuntimeError("failed"))
        expected = sum(b.size_bytes for b in acc.incomplete())
        assert acc.memory_used_bytes == expected
        for tp in partitions:
            assert first_sends[tp] == sorted(first_sends[tp])
            queued = acc.queued(tp)
            retried = [b.serial for b in queued if b.attempts]
            assert retried == sorted(retried)
            assert queued == sorted(queued, key=lambda b: (not b.attempts, b.serial))
