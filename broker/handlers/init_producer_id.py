"""InitProducerId (22): producer ids for idempotent, non-transactional producers.

Each request gets a fresh producer id with epoch 0 (`ProducerIdAllocator`). A
request naming its current id and epoch (v3+, recovering after a sequence error) also gets
a fresh id: partitions accept any starting sequence from an unknown id, which is what the
recovering producer needs. There is no transaction coordinator: a transactional id gets
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients treat as fatal instead of retrying.
"""

from __future__ import annotations

from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1


async def handle(ctx: RequestContext, request: Message) -> Message:
    if request["transactional_id"] is not None:
        return error_response(
            request, ctx.api_version, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        )
    return {
        "throttle_time_ms": 0,
        "error_code": int(ErrorCode.NONE),
        "producer_id": ctx.broker.producer_ids.allocate(),
        "producer_epoch": 0,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "producer_id": NO_PRODUCER_ID,
        "producer_epoch": NO_PRODUCER_EPOCH,
    }
