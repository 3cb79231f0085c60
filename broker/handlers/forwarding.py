"""Requests only the active controller may carry out, from any broker: forwarded there.

`to_controller(ctx, request, error_response)` returns None when this node is the active
controller (the handler then carries the request out itself). Otherwise it sends the same
request (same API and version) to the active controller through the node's
`ControllerChannel` and returns its answer; REQUEST_TIMED_OUT everywhere when no controller
answered within `FORWARD_TIMEOUT_MS`. A request that arrived on a controller listener is
never forwarded again (two nodes that each think the other leads would bounce it): it is
answered NOT_CONTROLLER, which the sending broker retries at the new leader.

`wait_reflected(ctx, predicate)` then waits, briefly, for this node's image to show the
change, so that a client's next Metadata request to this broker sees what its admin request
did.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.router import ErrorResponse, RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

FORWARD_TIMEOUT_MS = 30_000
REFLECT_TIMEOUT_MS = 5_000


async def to_controller(
    ctx: RequestContext, request: Message, error_response: ErrorResponse
) -> Message | None:
    broker = ctx.broker
    if broker.controller is not None and broker.quorum.is_active:
        return None
    if broker.config.is_controller_listener(ctx.connection.listener_name):
        return error_response(request, ctx.api_version, ErrorCode.NOT_CONTROLLER)
    try:
        return await broker.channel.call(
            ctx.header.api_key, request, version=ctx.api_version, timeout_ms=FORWARD_TIMEOUT_MS
        )
    except trio.TooSlowError:
        return error_response(request, ctx.api_version, ErrorCode.REQUEST_TIMED_OUT)


async def wait_reflected(ctx: RequestContext, predicate: Callable[[MetadataImage], bool]) -> None:
    with trio.move_on_after(REFLECT_TIMEOUT_MS / 1000):
        await ctx.broker.quorum.wait_for(predicate)
