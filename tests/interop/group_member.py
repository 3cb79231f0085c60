"""One consumer-group member, run as a subprocess by the interop tests so that it can be
stopped with SIGTERM (it leaves the group) or SIGKILL (it just stops answering):

    python group_member.py {confluent,kafka-python,aiokafka} BOOTSTRAP TOPIC GROUP
        [--client-id ID] [--session-timeout-ms 3000] [--heartbeat-interval-ms 300]
        [--uncommitted-prefix PREFIX] [--timeout-s 60]

The member subscribes to TOPIC in GROUP (eager assignors, offsets reset to earliest, no
auto-commit) and prints JSON lines to stdout, flushed one by one:

    {"event": "assigned", "member_id", "generation", "partitions": [p, ...], "time_s"}
    {"event": "revoked",  "member_id", "generation", "partitions": [p, ...], "time_s"}
    {"event": "records",  "generation", "records": [[partition, offset, value], ...]}
    {"event": "committed", "generation", "offsets": [[partition, next offset], ...]}
    {"event": "commit_failed", "generation", "error": "..."}
    {"event": "closing", "time_s"}
    {"event": "closed"}

`generation` is the generation of the assignment the member holds (taken when it was
assigned, so records and commits carry the generation they were read and committed in).
`value` is the record value as text. `time_s` is `time.monotonic()`, one clock for every
process on the machine, so the test can order the events of different members.

Each batch the consumer returns is printed, then committed synchronously: for every
partition in it, the offset after its last record. A commit the group refuses (it is
rebalancing, the generation moved on) is reported and the loop goes on; the records are
then read again by the partition's next owner, which is at-least-once delivery. With
`--uncommitted-prefix`, once the member reads a record whose value starts with PREFIX it
commits nothing more, like a member stuck in its processing, so that what it read last is
surely uncommitted when the test kills it.

On SIGTERM the member stops polling, prints `closing`, closes the consumer (which sends
LeaveGroup), prints `closed` and exits 0. Past `--timeout-s` it exits 3; any other failure
exits non-zero with a traceback on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

POLL_TIMEOUT_S = 0.2
BATCH_RECORDS_MAX = 100
DEADLINE_EXIT_STATUS = 3


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def last_offsets(records: Sequence[tuple[int, int, str]]) -> dict[int, int]:
    """Partition -> the offset to commit after `records` (one past the last one read)."""
    offsets: dict[int, int] = {}
    for partition, offset, _ in records:
        offsets[partition] = max(offsets.get(partition, 0), offset + 1)
    return offsets


class Membership:
    """Reports what happens to the member, tagged with the generation of the assignment it
    holds; decides whether to commit (see `--uncommitted-prefix`)."""

    def __init__(self, uncommitted_prefix: str | None) -> None:
        self.generation = -1
        self._uncommitted_prefix = uncommitted_prefix
        self._committing = True

    def assigned(self, member_id: str, generation: int, partitions: list[int]) -> None:
        self.generation = generation
        emit(
            "assigned",
            member_id=member_id,
            generation=generation,
            partitions=sorted(partitions),
            time_s=time.monotonic(),
        )

    def revoked(self, member_id: str, partitions: list[int]) -> None:
        emit(
            "revoked",
            member_id=member_id,
            generation=self.generation,
            partitions=sorted(partitions),
            time_s=time.monotonic(),
        )

    def consumed(self, records: Sequence[tuple[int, int, str]]) -> bool:
        """Report `records`; whether to commit them (see `--uncommitted-prefix`)."""
        emit("records", generation=self.generation, records=[list(r) for r in records])
        prefix = self._uncommitted_prefix
        if prefix is not None and any(value.startswith(prefix) for _, _, value in records):
            self._committing = False
        return self._committing

    def committed(self, offsets: dict[int, int]) -> None:
        emit("committed", generation=self.generation, offsets=sorted(offsets.items()))

    def commit_failed(self, error: object) -> None:
        emit("commit_failed", generation=self.generation, error=str(error))


class StopFlag:
    """Set by SIGTERM; the synchronous poll loops check it between polls."""

    def __init__(self) -> None:
        self.is_set = False
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.is_set = True


def confluent_record(message: Any) -> tuple[int, int, str]:
    if message.error() is not None:
        raise RuntimeError(f"consume failed: {message.error()}")
    partition, offset, value = message.partition(), message.offset(), message.value()
    assert partition is not None and offset is not None and value is not None
    return partition, offset, value.decode()


def run_confluent(args: argparse.Namespace, deadline_s: float) -> None:
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "broker.address.family": "v4",
            "group.id": args.group,
            "client.id": args.client_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": args.heartbeat_interval_ms,
            "partition.assignment.strategy": "range,roundrobin",
        }
    )
    membership = Membership(args.uncommitted_prefix)

    def generation() -> int:
        # librdkafka hands the generation out only inside its serialised group metadata
        # (for transactional producers): "CGMDv2:" followed by the generation id as a
        # native-endian int32. Anything else means the layout changed: fail loudly.
        metadata: bytes = consumer.consumer_group_metadata()
        magic = b"CGMDv2:"
        if not metadata.startswith(magic):
            raise RuntimeError(f"unknown consumer group metadata layout: {metadata[:16]!r}")
        return int.from_bytes(metadata[len(magic) : len(magic) + 4], sys.byteorder, signed=True)

    def on_assign(_: Any, partitions: list[Any]) -> None:
        membership.assigned(consumer.memberid(), generation(), [p.partition for p in partitions])

    def on_revoke(_: Any, partitions: list[Any]) -> None:
        membership.revoked(consumer.memberid(), [p.partition for p in partitions])

    stop = StopFlag()
    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    try:
        while not stop.is_set:
            check_deadline(deadline_s)
            messages = consumer.consume(BATCH_RECORDS_MAX, POLL_TIMEOUT_S)
            records = [confluent_record(message) for message in messages]
            if not records:
                continue
            if not membership.consumed(records):
                continue
            offsets = last_offsets(records)
            try:
                results = consumer.commit(
                    offsets=[
                        confluent_kafka.TopicPartition(args.topic, partition, offset)
                        for partition, offset in offsets.items()
                    ],
                    asynchronous=False,
                )
            except confluent_kafka.KafkaException as exc:
                membership.commit_failed(exc)
                continue
            failed = [tp for tp in results or [] if tp.error is not None]
            if failed:
                membership.commit_failed("; ".join(f"{tp.partition}: {tp.error}" for tp in failed))
            else:
                membership.committed(offsets)
        emit("closing", time_s=time.monotonic())
    finally:
        consumer.close()
    emit("closed")


def python_client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """kafka-python and aiokafka take the same consumer settings under the same names."""
    return {
        "bootstrap_servers": args.bootstrap,
        "group_id": args.group,
        "client_id": args.client_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": args.session_timeout_ms,
        "heartbeat_interval_ms": args.heartbeat_interval_ms,
    }


def run_kafka_python(args: argparse.Namespace, deadline_s: float) -> None:
    from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.errors import CommitFailedError, KafkaError

    consumer = KafkaConsumer(**python_client_settings(args))
    membership = Membership(args.uncommitted_prefix)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: Any) -> None:
            metadata = consumer.group_metadata()
            membership.assigned(
                metadata.member_id, metadata.generation_id, [tp.partition for tp in assigned]
            )

        def on_partitions_revoked(self, revoked: Any) -> None:
            metadata = consumer.group_metadata()
            membership.revoked(metadata.member_id, [tp.partition for tp in revoked])

    stop = StopFlag()
    consumer.subscribe([args.topic], listener=Listener())
    # Learn the topic's partitions before the first join. A leader that assigned without
    # them rejoins once they arrive, and kafka-python 3.0.12 loses that rejoin when it
    # outlasts a poll() timeout: JoinGroup and SyncGroup succeed, but the assignment is
    # never applied and heartbeats stay off, so the member is expired and sits idle.
    if not consumer.partitions_for_topic(args.topic):
        raise RuntimeError(f"no partitions for {args.topic}")
    try:
        while not stop.is_set:
            check_deadline(deadline_s)
            batches = consumer.poll(
                timeout_ms=int(POLL_TIMEOUT_S * 1000), max_records=BATCH_RECORDS_MAX
            )
            records = [
                (message.partition, message.offset, message.value.decode())
                for messages in batches.values()
                for message in messages
            ]
            if not records:
                continue
            if not membership.consumed(records):
                continue
            offsets = last_offsets(records)
            try:
                consumer.commit(
                    {
                        TopicPartition(args.topic, partition): OffsetAndMetadata(offset, "", -1)
                        for partition, offset in offsets.items()
                    }
                )
            except (CommitFailedError, KafkaError) as exc:
                membership.commit_failed(exc)
                continue
            membership.committed(offsets)
        emit("closing", time_s=time.monotonic())
    finally:
        consumer.close()
    emit("closed")


async def run_aiokafka(args: argparse.Namespace, deadline_s: float) -> None:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import CommitFailedError, KafkaError

    consumer = AIOKafkaConsumer(**python_client_settings(args))
    membership = Membership(args.uncommitted_prefix)

    # aiokafka keeps the member id and generation on its group coordinator object only.
    class Listener(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: Any) -> None:
            coordinator = consumer._coordinator
            membership.assigned(
                coordinator.member_id, coordinator.generation, [tp.partition for tp in assigned]
            )

        def on_partitions_revoked(self, revoked: Any) -> None:
            membership.revoked(consumer._coordinator.member_id, [tp.partition for tp in revoked])

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    try:
        consumer.subscribe([args.topic], listener=Listener())
        while not stop.is_set():
            check_deadline(deadline_s)
            batches = await consumer.getmany(
                timeout_ms=int(POLL_TIMEOUT_S * 1000), max_records=BATCH_RECORDS_MAX
            )
            records = [
                (message.partition, message.offset, message.value.decode())
                for messages in batches.values()
                for message in messages
            ]
            if not records:
                continue
            if not membership.consumed(records):
                continue
            offsets = last_offsets(records)
            try:
                await consumer.commit(
                    {TopicPartition(args.topic, p): offset for p, offset in offsets.items()}
                )
            except (CommitFailedError, KafkaError) as exc:
                membership.commit_failed(exc)
                continue
            membership.committed(offsets)
        emit("closing", time_s=time.monotonic())
    finally:
        await consumer.stop()
    emit("closed")


def check_deadline(deadline_s: float) -> None:
    if time.monotonic() > deadline_s:
        print("group_member: deadline passed", file=sys.stderr, flush=True)
        sys.exit(DEADLINE_EXIT_STATUS)


RUNNERS: dict[str, Callable[[argparse.Namespace, float], None]] = {
    "confluent": run_confluent,
    "kafka-python": run_kafka_python,
    "aiokafka": lambda args, deadline_s: asyncio.run(run_aiokafka(args, deadline_s)),
}


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("client", choices=sorted(RUNNERS))
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("--client-id", default="group-member")
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=300)
    parser.add_argument("--uncommitted-prefix")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    RUNNERS[args.client](args, time.monotonic() + args.timeout_s)


if __name__ == "__main__":
    main(sys.argv[1:])
