"""Test helpers: record batches made by the protocol codec, and full-scan references."""

from __future__ import annotations

from tidelog.client.protocol.records import BatchHeader, RecordInput, encode_batch, iter_batches
from tidelog.storage.index import IndexBuilder, OffsetIndex, TimeIndex
from tidelog.storage.log import PartitionLog
from tidelog.storage.segment import Segment, scan_batches


def make_batch(
    count: int = 1, *, value_bytes: int = 16, timestamp_ms: int = 1_000, tag: int = 0
) -> bytes:
    """An uncompressed batch of `count` records whose values identify (tag, index)."""
    records = [
        RecordInput(
            value=f"{tag}:{index}:".encode().ljust(value_bytes, b"."),
            timestamp_ms=timestamp_ms + index,
        )
        for index in range(count)
    ]
    return encode_batch(records)


def payload(batch: bytes | memoryview) -> bytes:
    """A batch's bytes from the CRC on: what the log must keep unchanged."""
    return bytes(batch[17:])


def read_everything(log: PartitionLog, max_bytes: int = 1 << 20) -> list[tuple[BatchHeader, bytes]]:
    """Every batch readable from the log start to the log end, via `read` ranges."""
    found: list[tuple[BatchHeader, bytes]] = []
    offset = log.log_start_offset
    for _ in range(100_000):
        file_range = log.read(offset, max_bytes)
        if file_range is None:
            return found
        data = file_range.read_bytes()
        assert len(data) == file_range.length
        position = 0
        for header in iter_batches(data):
            found.append((header, data[position : position + header.total_bytes]))
            position += header.total_bytes
        offset = found[-1][0].next_offset
    raise AssertionError("read loop did not reach the log end")


def full_scan_indexes(segment: Segment) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The indexes that a scan of the segment's log file builds from scratch."""
    builder = IndexBuilder(
        OffsetIndex(segment.base_offset),
        TimeIndex(segment.base_offset),
        segment.index_interval_bytes,
    )
    for position, header in scan_batches(segment.log, 0, segment.log.size(), validate=True):
        builder.add(header.base_offset, header.max_timestamp, header.total_bytes, position)
    return builder.offset_index.entries(), builder.time_index.entries()
