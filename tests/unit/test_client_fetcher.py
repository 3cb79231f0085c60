"""Fetched-data decoding and the consumer's partition bookkeeping (no I/O)."""

from __future__ import annotations

import pytest

from tidelog.client.fetcher import FetchedChunk, SubscriptionState, decode_partition_records
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.records import (
    Compression,
    ControlRecordType,
    RecordInput,
    TimestampType,
    assign_offsets,
    encode_batch,
    end_transaction_marker_record,
)
from tidelog.client.structs import TopicPartition

TP = TopicPartition("t", 0)


def batch_at(base_offset: int, values: list[bytes], **kwargs: object) -> bytes:
    records = [RecordInput(v, timestamp_ms=1000 + i) for i, v in enumerate(values)]
    buf = bytearray(encode_batch(records, **kwargs))  # type: ignore[arg-type]
    assign_offsets(buf, 0, base_offset)
    return bytes(buf)


def decode(data: bytes, fetch_offset: int = 0, **kwargs: object) -> tuple[list[bytes], int]:
    options: dict[str, object] = {
        "aborted_transactions": None,
        "read_committed": False,
        "check_crcs": True,
    }
    options.update(kwargs)
    records, next_offset = decode_partition_records(TP, data, fetch_offset, **options)  # type: ignore[arg-type]
    return [r.value for r in records if r.value is not None], next_offset


@pytest.mark.parametrize("codec", list(Compression))
def test_every_codec_decodes_and_records_below_the_fetch_offset_are_skipped(
    codec: Compression,
) -> None:
    values = [b"value-%d" % i * 20 for i in range(10)]
    data = batch_at(100, values, compression=codec) + batch_at(110, [b"next"], compression=codec)
    assert decode(data, fetch_offset=100) == ([*values, b"next"], 111)
    # A compressed batch is fetched whole; the consumer drops what it already had.
    assert decode(data, fetch_offset=105) == ([*values[5:], b"next"], 111)
    assert decode(data, fetch_offset=110) == ([b"next"], 111)


def test_records_carry_their_metadata() -> None:
    data = batch_at(7, [b"a"], partition_leader_epoch=3)
    records, _ = decode_partition_records(
        TP, data, 0, aborted_transactions=None, read_committed=False, check_crcs=True
    )
    (record,) = records
    assert (record.topic, record.partition, record.offset) == ("t", 0, 7)
    assert record.timestamp_ms == 1000 and record.timestamp_type is TimestampType.CREATE_TIME


def test_a_partial_trailing_batch_is_ignored() -> None:
    whole = batch_at(0, [b"a", b"b"])
    cut = batch_at(2, [b"c" * 100])[:40]
    assert decode(whole + cut) == ([b"a", b"b"], 2)
    assert decode(cut) == ([], 0)


def test_corrupt_data_raises() -> None:
    data = bytearray(batch_at(0, [b"abc"]))
    data[-2] ^= 0x01  # the value's last byte ("c" -> "b"), just before the header count
    with pytest.raises(CorruptMessageError, match="CRC"):
        decode(bytes(data))
    assert decode(bytes(data), check_crcs=False) == ([b"abb"], 1)


def transactional(base_offset: int, producer_id: int, values: list[bytes]) -> bytes:
    return batch_at(base_offset, values, producer_id=producer_id, producer_epoch=0,
                    base_sequence=0, is_transactional=True)  # fmt: skip


def marker(base_offset: int, producer_id: int, kind: ControlRecordType) -> bytes:
    buf = bytearray(
        encode_batch(
            [end_transaction_marker_record(kind, 0, 5000)],
            producer_id=producer_id,
            producer_epoch=0,
            is_transactional=True,
            is_control=True,
        )
    )
    assign_offsets(buf, 0, base_offset)
    return bytes(buf)


def test_read_committed_drops_aborted_transactions_and_control_records() -> None:
    # Producer 1 commits, producer 2 aborts; their batches interleave.
    data = (
        transactional(0, 1, [b"c1", b"c2"])
        + transactional(2, 2, [b"x1"])
        + batch_at(3, [b"plain"])
        + transactional(4, 2, [b"x2"])
        + marker(5, 2, ControlRecordType.ABORT)
        + marker(6, 1, ControlRecordType.COMMIT)
        + transactional(7, 2, [b"after-abort"])
    )
    aborted = [{"producer_id": 2, "first_offset": 2}]
    committed = decode(data, aborted_transactions=aborted, read_committed=True)
    assert committed == ([b"c1", b"c2", b"plain", b"after-abort"], 8)
    everything = decode(data, aborted_transactions=None, read_committed=False)
    assert everything == ([b"c1", b"c2", b"x1", b"plain", b"x2", b"after-abort"], 8)


def test_positions_follow_the_records_handed_out() -> None:
    subscription = SubscriptionState()
    other = TopicPartition("t", 1)
    subscription.assign([TP, other])
    assert set(subscription.needing_reset()) == {TP, other}
    state = subscription.state(TP)
    state.set_position(10)
    records, next_offset = decode_partition_records(
        TP,
        batch_at(10, [b"a", b"b", b"c"]) + batch_at(13, [b"d"]),
        10,
        aborted_transactions=None,
        read_committed=False,
        check_crcs=True,
    )
    state.add_chunk(FetchedChunk(records, next_offset + 5, 500, state.seek_epoch))
    assert state.fetch_position == 19 and state.position == 10
    assert subscription.fetchable(0.0, lambda tp: 1, max_buffered_bytes=500) == {}
    assert subscription.fetchable(0.0, lambda tp: 1, max_buffered_bytes=501) == {1: [TP]}
    first = subscription.take(2)
    assert [r.offset for r in first[TP]] == [10, 11] and state.position == 12
    rest = subscription.take(10)
    # Handing out the chunk's last record moves past the batches' end (e.g. control records).
    assert [r.offset for r in rest[TP]] == [12, 13] and state.position == 19
    assert state.buffered_bytes == 0 and not subscription.has_records()


def test_seek_drops_buffered_data_and_fences_old_fetches() -> None:
    subscription = SubscriptionState()
    subscription.assign([TP])
    state = subscription.state(TP)
    state.set_position(0)
    epoch = state.seek_epoch
    records, next_offset = decode_partition_records(
        TP, batch_at(0, [b"a"]), 0, aborted_transactions=None, read_committed=False,
        check_crcs=True,
    )  # fmt: skip
    state.add_chunk(FetchedChunk(records, next_offset, 100, epoch))
    state.set_position(50)
    assert state.seek_epoch != epoch and not state.chunks and state.position == 50
    state.request_reset(-2)
    assert subscription.needing_reset() == [TP] and state.fetch_position is None
    with pytest.raises(Exception, match="not assigned"):
        subscription.state(TopicPartition("nope", 0))


def test_take_rotates_between_partitions() -> None:
    subscription = SubscriptionState()
    partitions = [TopicPartition("t", i) for i in range(3)]
    subscription.assign(partitions)
    for i, tp in enumerate(partitions):
        state = subscription.state(tp)
        state.set_position(0)
        records, next_offset = decode_partition_records(
            tp, batch_at(0, [b"%d" % i] * 10), 0, aborted_transactions=None,
            read_committed=False, check_crcs=True,
        )  # fmt: skip
        state.add_chunk(FetchedChunk(records, next_offset, 100, state.seek_epoch))
    firsts = [next(iter(subscription.take(1))) for _ in range(3)]
    assert sorted(firsts) == partitions


def test_empty_chunk_only_moves_the_position() -> None:
    subscription = SubscriptionState()
    subscription.assign([TP])
    state = subscription.state(TP)
    state.set_position(5)
    state.add_chunk(FetchedChunk([], 9, 80, state.seek_epoch))
    assert state.position == 9 and state.fetch_position == 9 and not state.chunks
