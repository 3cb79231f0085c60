"""InitProducerId (22): producer ids for idempotent, non-transactional producers.

Each request gets a fresh producer id with epoch 0 (`ProducerIdAllocator`, in blocks from
the active controller; COORDINATOR_NOT_AVAILABLE, which clients retry, if no block arrives
within `ALLOCATE_TIMEOUT_MS`). A
request naming its current id and epoch (v3+, recovering after a sequence error) also gets
a fresh id: partitions accept any starting sequence from an unknown id, which is what the
recovering producer needs. There is no transaction coordinator: a transactional id gets
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients treat as fatal instead of retrying.
"""

from __future__ import annotations

import trio

from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
ALLOCATE_TIMEOUT_MS = 10_000


async def handle(ctx: RequestContext, request: Message) -> Message:
    if request["transactional_id"] is not None:
        return error_response(
            request, ctx.api_version, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        )
    with trio.move_on_after(ALLOCATE_TIMEOUT_MS / 1000):
        producer_id = await ctx.broker.producer_ids.allocate()
        return {
            "throttle_time_ms": 0,
            "error_code": int(ErrorCode.NONE),
            "producer_id": producer_id,
            "producer_epoch": 0,
        }
    return error_response(request, ctx.api_version, ErrorCode.COORDINATOR_NOT_AVAILABLE)


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "producer_id": NO_PRODUCER_ID,
        "producer_epoch": NO_PRODUCER_EPOCH,
    }
