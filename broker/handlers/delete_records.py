"""DeleteRecords (21): move partitions' log start offsets up.

Offset -1 means the high watermark (everything written so far). Records below the new log
start offset are no longer served; whole segments below it are deleted. The answer's
`low_watermark` is the partition's log start offset afterwards. An offset beyond the high
watermark is OFFSET_OUT_OF_RANGE. A compact-only topic (cleanup.policy=compact without
delete) refuses with POLICY_VIOLATION, as in Kafka: its records leave by compaction only.
"""

from __future__ import annotations

from tidelog.broker.handlers.partitions import leader_partition, per_partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

HIGH_WATERMARK = -1
NO_LOW_WATERMARK = -1


async def handle(ctx: RequestContext, request: Message) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(request, lambda name, p: _delete(ctx, name, p)),
    }


def _delete(ctx: RequestContext, topic: str, request: Message) -> Message:
    index: int = request["partition_index"]
    found = leader_partition(ctx, topic, index)
    if isinstance(found, ErrorCode):
        return _partition_result(index, found)
    config = found.log.config
    if config.compaction_enabled and not config.deletion_enabled:
        return _partition_result(index, ErrorCode.POLICY_VIOLATION)
    offset: int = request["offset"]
    high_watermark = found.high_watermark
    if offset == HIGH_WATERMARK:
        offset = high_watermark
    if not 0 <= offset <= high_watermark:
        return _partition_result(index, ErrorCode.OFFSET_OUT_OF_RANGE)
    try:
        low_watermark = found.log.delete_records(offset)
    except StorageError as exc:
        return _partition_result(index, exc.error_code)
    return _partition_result(index, ErrorCode.NONE, low_watermark)


def _partition_result(
    index: int, code: ErrorCode, low_watermark: int = NO_LOW_WATERMARK
) -> Message:
    return {"partition_index": index, "low_watermark": low_watermark, "error_code": int(code)}


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(
            request, lambda _, p: _partition_result(p["partition_index"], code)
        ),
    }
