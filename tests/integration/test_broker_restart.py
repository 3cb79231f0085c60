"""kill -9 in the middle of an acks=all stream: after a restart on the same data directory
every acknowledged record is there once, offsets are dense, and new writes continue them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import confluent_kafka
import trio

from tests.integration.test_broker_cli import tidelog

TOPIC = "restart"
RECORDS_MAX = 20_000
ACKED_BEFORE_KILL = 2_000
CLIENT_TIMEOUT_S = 30


def produce_until_stopped(
    bootstrap: str, acked_enough: trio.Event, trio_token: trio.lowlevel.TrioToken
) -> dict[bytes, int]:
    """Produce numbered values with acks=all until the broker dies; value -> acked offset."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 3_000,
            "enable.idempotence": False,
        }
    )
    acked: dict[bytes, int] = {}

    def on_delivery(error: Any, message: Any) -> None:
        if error is None:
            acked[message.value()] = message.offset()
            if len(acked) == ACKED_BEFORE_KILL:
                trio.from_thread.run_sync(acked_enough.set, trio_token=trio_token)

    for i in range(RECORDS_MAX):
        try:
            producer.produce(TOPIC, value=b"%08d" % i, partition=0, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.05)
            continue
        producer.poll(0)
    producer.flush(CLIENT_TIMEOUT_S)
    return acked


def consume_all(bootstrap: str) -> list[tuple[int, bytes]]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": "unused-assign-only",
            "enable.auto.commit": False,
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(TOPIC, 0), timeout=CLIENT_TIMEOUT_S
        )
        consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, 0)])
        received: list[tuple[int, bytes]] = []
        for _ in range(200):
            if len(received) >= high:
                break
            for message in consumer.consume(num_messages=1_000, timeout=0.5):
                assert message.error() is None, message.error()
                received.append((message.offset(), message.value()))
        assert len(received) == high
        return received
    finally:
        consumer.close()


async def test_acknowledged_records_survive_kill_9(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    acked_enough = trio.Event()
    async with tidelog(tmp_path, "dev", "--port", "0", "--data-dir", data_dir) as broker:
        bootstrap = f"{broker.host}:{broker.port}"
        async with trio.open_nursery() as nursery:
            result: dict[str, dict[bytes, int]] = {}

            async def produce() -> None:
                result["acked"] = await trio.to_thread.run_sync(
                    produce_until_stopped,
                    bootstrap,
                    acked_enough,
                    trio.lowlevel.current_trio_token(),
                )

            nursery.start_soon(produce)
            with trio.fail_after(CLIENT_TIMEOUT_S):
                await acked_enough.wait()
            broker.process.kill()  # SIGKILL, mid-stream
            await broker.process.wait()
    acked = result["acked"]
    assert len(acked) >= ACKED_BEFORE_KILL

    async with tidelog(tmp_path, "dev", "--port", "0", "--data-dir", data_dir) as broker:
        bootstrap = f"{broker.host}:{broker.port}"
        with trio.fail_after(CLIENT_TIMEOUT_S):
            received = await trio.to_thread.run_sync(consume_all, bootstrap)
        offsets = [offset for offset, _ in received]
        assert offsets == list(range(len(received))), "offsets are dense from 0"
        values = [value for _, value in received]
        assert len(set(values)) == len(values), "nothing is duplicated"
        stored = dict((value, offset) for offset, value in received)
        missing = [value for value in acked if value not in stored]
        assert missing == [], f"{len(missing)} acknowledged records lost"
        assert all(stored[value] == offset for value, offset in acked.items())

        # New writes continue the offsets.
        with trio.fail_after(CLIENT_TIMEOUT_S):
            after = await trio.to_thread.run_sync(produce_one, bootstrap, b"after-restart")
        assert after == len(received)


def produce_one(bootstrap: str, value: bytes) -> int:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": "all"}
    )
    offsets: list[int] = []
    producer.produce(
        TOPIC, value=value, partition=0, on_delivery=lambda e, m: offsets.append(m.offset())
    )
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    return offsets[0]
