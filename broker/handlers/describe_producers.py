"""DescribeProducers (61): the idempotent producers a partition remembers.

For each partition: every producer id in its producer state table with its epoch, the last
sequence and timestamp it wrote. Without transactions `coordinator_epoch` and
`current_txn_start_offset` are -1.
"""

from __future__ import annotations

from tidelog.broker.handlers.partitions import leader_partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message


async def handle(ctx: RequestContext, request: Message) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": topic["name"],
                "partitions": [
                    _describe(ctx, topic["name"], index) for index in topic["partition_indexes"]
                ],
            }
            for topic in request["topics"]
        ],
    }


def _describe(ctx: RequestContext, topic: str, index: int) -> Message:
    found = leader_partition(ctx, topic, index)
    if isinstance(found, ErrorCode):
        return _partition_result(index, found)
    table = found.producer_state()
    producers = [
        {
            "producer_id": entry.producer_id,
            "producer_epoch": entry.epoch,
            "last_sequence": entry.last_sequence,
            "last_timestamp": entry.last_timestamp_ms,
            "coordinator_epoch": entry.coordinator_epoch,
            "current_txn_start_offset": entry.current_txn_start_offset,
        }
        for entry in table.entries()
    ]
    return _partition_result(index, ErrorCode.NONE, producers)


def _partition_result(
    index: int, code: ErrorCode, producers: list[Message] | None = None
) -> Message:
    return {
        "partition_index": index,
        "error_code": int(code),
        "error_message": None,
        "active_producers": producers or [],
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": topic["name"],
                "partitions": [_partition_result(i, code) for i in topic["partition_indexes"]],
            }
            for topic in request["topics"]
        ],
    }
