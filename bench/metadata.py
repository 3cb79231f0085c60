"""Metadata benchmark: a controller's 10,000 partitions over 3 brokers, through the metadata
log and a snapshot, and back on restart.

Phases, each timed: the controller's rules create the topics (records) and the image
applies them; the records are encoded (Kafka's metadata record bytes) and appended to a
RaftStore on disk with an fsync; leadership and ISR changes grow the log to `--records`
records; a snapshot of the image is encoded and written; then a restart replays the whole
log from disk (load, decode, apply) and, separately, loads the snapshot instead.

    python -m bench.metadata [--topics 100] [--partitions 100] [--records 100000]
                             [--dir PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.raft.records import decode_entries, encode_entries
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.types import Entry, Snapshot, SnapshotId
from tidelog.broker.controller.topics import create_topic
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import (
    Endpoint,
    MetadataRecord,
    PartitionChangeRecord,
    unfenced_registration,
)
from tidelog.broker.metadata.serde import decode_record, encode_record
from tidelog.broker.metadata.snapshot import image_records
from tidelog.storage.filesystem import OsFileSystem

T = TypeVar("T")
BROKERS = (1, 2, 3)
EPOCH = 1


@dataclass
class Phase:
    name: str
    seconds: float
    items: int
    unit: str

    def line(self) -> str:
        rate = self.items / self.seconds if self.seconds > 0 else float("inf")
        return f"{self.name:<34} {self.seconds * 1000:10.1f} ms  {rate:12.0f} {self.unit}/s"


def timed(phases: list[Phase], name: str, items: int, unit: str, work: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = work()
    phases.append(Phase(name, time.perf_counter() - start, items, unit))
    return result


def _entries(records: Sequence[MetadataRecord], first_offset: int) -> list[Entry]:
    return [Entry(first_offset + i, EPOCH, encode_record(r)) for i, r in enumerate(records)]


def run(topics: int, partitions: int, total_records: int, work_dir: str) -> list[Phase]:
    phases: list[Phase] = []
    rng = random.Random(1)
    config = BrokerConfig()
    image = MetadataImage.empty("bench", 1)
    records: list[MetadataRecord] = []
    for broker in BROKERS:
        endpoint = Endpoint("PLAINTEXT", "127.0.0.1", 9090 + broker)
        registration = unfenced_registration(
            broker, image.offset, uuid.UUID(int=broker), (endpoint,)
        )
        image = image.apply_all(registration)
        records.extend(registration)

    def create() -> MetadataImage:
        nonlocal image
        for t in range(topics):
            new = create_topic(
                image,
                config,
                rng,
                f"topic-{t:05d}",
                num_partitions=partitions,
                replication_factor=len(BROKERS),
            )
            image = image.apply_all(new)
            records.extend(new)
        return image

    timed(phases, "create topics (rules + apply)", topics * partitions, "partitions", create)
    topic_ids = [t.topic_id for t in image.topics()]
    changes: list[MetadataRecord] = []
    while len(records) + len(changes) < total_records:
        topic_id = rng.choice(topic_ids)
        leader = rng.choice(BROKERS)
        isr = tuple(sorted({leader, *rng.sample(BROKERS, 1)}))
        changes.append(PartitionChangeRecord(topic_id, rng.randrange(partitions), leader, isr))

    def apply_changes() -> MetadataImage:
        return image.apply_all(changes)

    image = timed(phases, "apply leader/ISR changes", len(changes), "records", apply_changes)
    records.extend(changes)

    fs = OsFileSystem()
    directory = f"{work_dir}/__cluster_metadata-0"
    store = RaftStore.open(fs, directory, now_ms=lambda: 0)

    def write_log() -> None:
        entries = _entries(records, 0)
        store.append(entries)
        store.flush()

    timed(phases, "encode + append + fsync the log", len(records), "records", write_log)
    end_offset = len(records)

    store.close()

    def replay_log() -> MetadataImage:
        # The restart path without a snapshot: every record from offset 0.
        loaded = RaftStore.open(fs, directory, now_ms=lambda: 0).load()
        assert len(loaded.entries) == len(records)
        return MetadataImage.empty("bench", 1).apply_all(
            decode_record(e.value) for e in loaded.entries
        )

    replayed = timed(
        phases, "restart: load + decode + apply log", len(records), "records", replay_log
    )
    assert replayed.topic_names() == image.topic_names()
    store = RaftStore.open(fs, directory, now_ms=lambda: 0)

    def write_snapshot() -> int:
        snapshot_records = list(image_records(image))
        data = b"".join(
            encode_entries(_entries(snapshot_records, 0), timestamp_ms=0, batch_bytes_max=1 << 20)
        )
        store.write_snapshot(Snapshot(SnapshotId(end_offset, EPOCH), data))
        return len(snapshot_records)

    snapshot_size = timed(
        phases, "snapshot (encode + write)", topics * partitions, "partitions", write_snapshot
    )
    store.close()

    def restart_from_snapshot() -> MetadataImage:
        loaded = RaftStore.open(fs, directory, now_ms=lambda: 0).load()
        assert loaded.snapshot is not None and not loaded.entries
        return MetadataImage.empty("bench", 1).apply_all(
            decode_record(e.value) for e in decode_entries(loaded.snapshot.data)
        )

    restored = timed(
        phases, "restart: load + apply snapshot", snapshot_size, "records", restart_from_snapshot
    )
    for name in ("topic-00000", f"topic-{topics - 1:05d}"):
        assert restored.topic(name) == image.topic(name) == replayed.topic(name)
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=100, help="partitions per topic")
    parser.add_argument("--records", type=int, default=100_000, help="metadata log length")
    parser.add_argument("--dir", help="work directory (default: a temporary directory)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    topics, partitions, total = (
        (5, 10, 500) if args.smoke else (args.topics, args.partitions, args.records)
    )
    work_dir = tempfile.mkdtemp(prefix="tidelog-bench-", dir=args.dir)
    try:
        phases = run(topics, partitions, total, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"metadata: {topics * partitions} partitions of RF {len(BROKERS)}, {total} records")
    for phase in phases:
        print(phase.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
