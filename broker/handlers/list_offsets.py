"""ListOffsets (2): offsets by timestamp.

Only the leader answers, and a CurrentLeaderEpoch (v4+) other than -1 must be its epoch
(FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH otherwise). Timestamp -2 is the log start
offset, -1 the end offset consumers see (the high watermark, which without transactions is
also the last stable offset), -3 (v7+) the offset of the record with the largest
timestamp; any other timestamp the first committed offset whose record timestamp is at or
after it, or -1 with timestamp -1 when there is none. Answers carry the partition's leader
epoch (v4+).
"""

from __future__ import annotations

from tidelog.broker.handlers.partitions import NO_LEADER_EPOCH, leader_partition, per_partition
from tidelog.broker.replica_manager import Partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError
from tidelog.storage.log import PartitionLog

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
MAX_TIMESTAMP = -3
NO_TIMESTAMP = -1
NO_OFFSET = -1


async def handle(ctx: RequestContext, request: Message) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(request, lambda name, p: _list_partition(ctx, name, p)),
    }


def _list_partition(ctx: RequestContext, topic: str, request: Message) -> Message:
    index: int = request["partition_index"]
    found = leader_partition(ctx, topic, index, request["current_leader_epoch"])
    if isinstance(found, ErrorCode):
        return _partition_error(index, found)
    try:
        timestamp, offset = _lookup(found, request["timestamp"])
    except StorageError as exc:
        return _partition_error(index, exc.error_code)
    return {
        "partition_index": index,
        "error_code": int(ErrorCode.NONE),
        "timestamp": timestamp,
        "offset": offset,
        "leader_epoch": found.state.leader_epoch if offset != NO_OFFSET else NO_LEADER_EPOCH,
    }


def _lookup(partition: Partition, timestamp_ms: int) -> tuple[int, int]:
    """(timestamp, offset) answering `timestamp_ms` (see module docstring); the latest
    offset is the high watermark, what consumers can read."""
    partition_log = partition.log
    if timestamp_ms == EARLIEST_TIMESTAMP:
        return NO_TIMESTAMP, partition_log.log_start_offset
    if timestamp_ms == LATEST_TIMESTAMP:
        return NO_TIMESTAMP, partition.high_watermark
    if timestamp_ms == MAX_TIMESTAMP:
        return _max_timestamp(partition_log)
    found = partition_log.offset_for_timestamp(timestamp_ms)
    if found is None or found[0] >= partition.high_watermark:  # not committed yet
        return NO_TIMESTAMP, NO_OFFSET
    offset, timestamp = found
    return timestamp, offset


def _max_timestamp(partition_log: PartitionLog) -> tuple[int, int]:
    best_timestamp = NO_TIMESTAMP
    best_offset = NO_OFFSET
    for header in partition_log.batches_from(partition_log.log_start_offset):
        if header.max_timestamp > best_timestamp:
            best_timestamp = header.max_timestamp
            best_offset = header.base_offset
    if best_offset == NO_OFFSET:
        return NO_TIMESTAMP, NO_OFFSET
    # The batch holds the record; pick it exactly through the timestamp index lookup.
    found = partition_log.offset_for_timestamp(best_timestamp)
    if found is None:
        return best_timestamp, max(best_offset, partition_log.log_start_offset)
    return found[1], found[0]


def _partition_error(index: int, code: ErrorCode) -> Message:
    return {
        "partition_index": index,
        "error_code": int(code),
        "timestamp": NO_TIMESTAMP,
        "offset": NO_OFFSET,
        "leader_epoch": NO_LEADER_EPOCH,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    """Every requested partition with `code`."""
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(request, lambda _, p: _partition_error(p["partition_index"], code)),
    }
