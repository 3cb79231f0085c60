"""OffsetForLeaderEpoch (23): where a leader epoch ends in this partition's log.

Consumers (librdkafka's KIP-320 offset validation) and followers ask after a leader change
whether their position is still on the log: the answer is the largest epoch at or below the
asked one and the offset where it ends (the log end offset for the current epoch), or
UNDEFINED (-1, -1) when the log knows no such epoch. `current_leader_epoch` is checked as in
Fetch.
"""

from __future__ import annotations

from tidelog.broker.handlers.partitions import leader_partition, per_partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1


async def handle(ctx: RequestContext, request: Message) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(
            request, lambda name, p: _end_offset(ctx, name, p), topic_field="topic"
        ),
    }


def _end_offset(ctx: RequestContext, topic: str, request: Message) -> Message:
    index: int = request["partition"]
    found = leader_partition(ctx, topic, index, request["current_leader_epoch"])
    if isinstance(found, ErrorCode):
        return _partition_result(index, found)
    epoch: int = request["leader_epoch"]
    try:
        if epoch == found.state.leader_epoch:
            # The current epoch ends at the log end, even before any batch carries it.
            return _partition_result(index, ErrorCode.NONE, epoch, found.log_end_offset)
        end_epoch, end_offset = found.log.end_offset_for_epoch(epoch)
    except StorageError as exc:
        return _partition_result(index, exc.error_code)
    return _partition_result(index, ErrorCode.NONE, end_epoch, end_offset)


def _partition_result(
    index: int,
    code: ErrorCode,
    leader_epoch: int = UNDEFINED_EPOCH,
    end_offset: int = UNDEFINED_OFFSET,
) -> Message:
    return {
        "error_code": int(code),
        "partition": index,
        "leader_epoch": leader_epoch,
        "end_offset": end_offset,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": per_partition(
            request, lambda _, p: _partition_result(p["partition"], code), topic_field="topic"
        ),
    }
