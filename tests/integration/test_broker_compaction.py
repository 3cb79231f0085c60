"""A topic with cleanup.policy=compact keeps the latest record per key once the cleaner runs."""

from __future__ import annotations

from tests.integration.conftest import RunningBroker, append_as_leader
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import RecordInput, decode_batches, encode_batch
from tidelog.client.protocol.schema import Message

KEYS = 5
ROUNDS = 40


async def test_the_cleaner_keeps_the_latest_record_per_key(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic(
        "compacted",
        configs={"cleanup.policy": "compact", "segment.bytes": "2048",
                 "min.cleanable.dirty.ratio": "0.1"},
    )  # fmt: skip
    partition_log = broker.broker.replicas.log("compacted", 0)
    assert partition_log is not None
    for round_number in range(ROUNDS):
        batch = [RecordInput(key=b"k%d" % k, value=b"r%d" % round_number) for k in range(KEYS)]
        append_as_leader(broker.broker, "compacted", 0, encode_batch(batch))
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
    # Every round rewrote every key (record offset = round * KEYS + key). The cleaner keeps,
    # below the active segment (never cleaned), only each key's last value below it, once.
    active_base = partition_log.segment_base_offsets[-1]
    cleaned = {r.offset: (r.key, r.value) for r in records if r.offset < active_base}
    last_cleanable = {
        b"k%d" % k: b"r%d" % max(r for r in range(ROUNDS) if r * KEYS + k < active_base)
        for k in range(KEYS)
    }
    assert sorted(cleaned.values()) == sorted(last_cleanable.items())
    latest = {r.key: r.value for r in records}
    assert latest == {b"k%d" % k: b"r%d" % (ROUNDS - 1) for k in range(KEYS)}
    assert len(records) < KEYS * ROUNDS
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and partition_log.log_end_offset == end_before


async def test_a_compacted_topic_takes_only_keyed_records(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("keyed-only", configs={"cleanup.policy": "compact"})
    keyed = encode_batch([RecordInput(key=b"k", value=b"v")])
    keyless = encode_batch([RecordInput(key=b"k", value=b"v"), RecordInput(value=b"no key")])

    async def produce(records: bytes) -> Message:
        async with await broker.client() as client:
            response = await client.request(
                0,
                8,
                {"transactional_id": None, "acks": 1, "timeout_ms": 5_000,
                 "topic_data": [{"name": "keyed-only",
                                 "partition_data": [{"index": 0, "records": records}]}]},
            )  # fmt: skip
        result: Message = response["responses"][0]["partition_responses"][0]
        return result

    refused = await produce(keyless)
    assert refused["error_code"] == ErrorCode.INVALID_RECORD
    assert "key" in refused["error_message"]
    assert (await produce(keyed))["error_code"] == 0
    partition_log = broker.broker.replicas.log("keyed-only", 0)
    assert partition_log is not None and partition_log.log_end_offset == 1


async def test_delete_records_is_refused_on_a_compact_only_topic(broker: RunningBroker) -> None:
    await broker.broker.topics.create_topic("compact-only", configs={"cleanup.policy": "compact"})
    await broker.broker.topics.create_topic("both", configs={"cleanup.policy": "compact,delete"})
    for name in ("compact-only", "both"):
        append_as_leader(broker.broker, name, 0, encode_batch([RecordInput(key=b"k", value=b"v")]))
    async with await broker.client() as client:
        response = await client.request(
            21,
            2,
            {"topics": [{"name": name, "partitions": [{"partition_index": 0, "offset": 1}]}
                        for name in ("compact-only", "both")],
             "timeout_ms": 5_000},
        )  # fmt: skip
    codes = [t["partitions"][0]["error_code"] for t in response["topics"]]
    assert codes == [ErrorCode.POLICY_VIOLATION, ErrorCode.NONE]
