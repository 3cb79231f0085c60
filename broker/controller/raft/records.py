"""Raft entries as RecordBatch v2 (PURE): the one format of the metadata log on disk and in
Fetch responses of `__cluster_metadata`.

An entry is one record, offset = entry offset. Consecutive entries of the same epoch and
the same kind (data or control) share a batch whose PartitionLeaderEpoch is that epoch,
up to a byte limit. A data entry is a record with a null key and `value`; a control entry is
a record of a control batch whose key is Kafka's ControlRecordType layout (int16 version 0,
int16 type) and whose value is `value`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from tidelog.broker.controller.raft.types import Entry
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.records import (
    BatchHeader,
    Record,
    RecordInput,
    decode_batches,
    encode_batch,
)

CONTROL_KEY = struct.Struct(">hh")
CONTROL_KEY_VERSION = 0
BATCH_OVERHEAD_BYTES = 61
RECORD_OVERHEAD_BYTES = 40
"""Upper bounds of a batch header's and a record's framing, for sizing batches."""


class EntryFormatError(CorruptMessageError):
    """Batches that do not hold Raft entries (bad CRC, null value, malformed control key)."""


def encode_entries(
    entries: Sequence[Entry], *, timestamp_ms: int, batch_bytes_max: int
) -> Iterator[bytes]:
    """The batches holding `entries` (consecutive offsets), each under `batch_bytes_max`
    unless a single entry is larger."""
    group: list[Entry] = []
    group_bytes = BATCH_OVERHEAD_BYTES
    for entry in entries:
        entry_bytes = len(entry.value) + RECORD_OVERHEAD_BYTES
        if group and (
            entry.epoch != group[0].epoch
            or (entry.control_type is None) != (group[0].control_type is None)
            or group_bytes + entry_bytes > batch_bytes_max
        ):
            yield _encode_group(group, timestamp_ms)
            group = []
            group_bytes = BATCH_OVERHEAD_BYTES
        group.append(entry)
        group_bytes += entry_bytes
    if group:
        yield _encode_group(group, timestamp_ms)


def _encode_group(group: list[Entry], timestamp_ms: int) -> bytes:
    first = group[0]
    records = [
        RecordInput(
            value=entry.value,
            key=(
                None
                if entry.control_type is None
                else CONTROL_KEY.pack(CONTROL_KEY_VERSION, entry.control_type)
            ),
            timestamp_ms=timestamp_ms,
        )
        for entry in group
    ]
    return encode_batch(
        records,
        base_offset=first.offset,
        is_control=first.control_type is not None,
        partition_leader_epoch=first.epoch,
    )


def decode_entries(data: bytes | bytearray | memoryview) -> list[Entry]:
    """Every entry of the whole batches in `data` (a partial batch at the end is ignored,
    as Fetch responses may cut one); EntryFormatError for anything else malformed."""
    try:
        return [entry_of(header, record) for header, records in decode_batches(data)
                for record in records]  # fmt: skip
    except EntryFormatError:
        raise
    except CorruptMessageError as exc:
        raise EntryFormatError(str(exc)) from None


def entry_of(header: BatchHeader, record: Record) -> Entry:
    if record.value is None:
        raise EntryFormatError(f"record {record.offset} has a null value")
    control_type: int | None = None
    if header.is_control:
        key = record.key
        if key is None or len(key) != CONTROL_KEY.size:
            raise EntryFormatError(f"control record {record.offset} has a malformed key")
        version, control_type = CONTROL_KEY.unpack(key)
        if version < 0 or control_type < 0:
            raise EntryFormatError(
                f"control record {record.offset} has key version {version}, type {control_type}"
            )
    return Entry(record.offset, header.partition_leader_epoch, bytes(record.value), control_type)
