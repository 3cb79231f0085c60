"""A topic with cleanup.policy=compact keeps the latest record per key once the cleaner runs."""

from __future__ import annotations

from client.protocol.records import RecordInput, decode_batches, encode_batch
from tests.integration.conftest import RunningBroker

KEYS = 5
ROUNDS = 40


async def test_the_cleaner_keeps_the_latest_record_per_key(broker: RunningBroker) -> None:
    broker.broker.topics.create_topic(
        "compacted",
        configs={"cleanup.policy": "compact", "segment.bytes": "2048",
                 "min.cleanable.dirty.ratio": "0.1"},
    )  # fmt: skip
    partition_log = broker.broker.topics.log("compacted", 0)
    assert partition_log is not None
    for round_number in range(ROUNDS):
        batch = [RecordInput(key=b"k%d" % k, value=b"r%d" % round_number) for k in range(KEYS)]
        partition_log.append(encode_batch(batch), leader_epoch=0)
    end_before = partition_log.log_end_offset

    assert await broker.broker.compact_due_logs() == 1

    records = []
    offset = partition_log.log_start_offset
    while offset < partition_log.log_end_offset:  # one segment per read
        chunk = partition_log.read(offset, 1024 * 1024)
        assert chunk is not None
        for header, batch_records in decode_batches(chunk.read_bytes()):
            records.extend(batch_records)
            offset = header.last_offset + 1
    latest: dict[bytes | None, tuple[int, bytes | None]] = {}
    for record in records:
        latest[record.key] = (record.offset, record.value)
    # Only the active segment may still hold older versions; everything cleaned is latest.
    assert {key: value for key, (_, value) in latest.items()} == {
        b"k%d" % k: b"r%d" % (ROUNDS - 1) for k in range(KEYS)
    }
    assert len(records) < KEYS * ROUNDS
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and partition_log.log_end_offset == end_before
