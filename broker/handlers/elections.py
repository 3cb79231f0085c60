"""ElectLeaders (43): preferred or unclean leader elections, carried out by the active
controller (`controller.brokers.elect_leaders` has the rules); brokers forward it there.
The answer comes once the elections are committed and applied on the controller."""

from __future__ import annotations

import trio

from tidelog.broker.controller.controller import elect_leaders_error_response
from tidelog.broker.controller.quorum import NotControllerError
from tidelog.broker.handlers.forwarding import to_controller
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message


async def elect_leaders(ctx: RequestContext, request: Message) -> Message:
    forwarded = await to_controller(ctx, request, error_response)
    if forwarded is not None:
        return forwarded
    controller = ctx.broker.controller
    assert controller is not None
    try:
        return await controller.elect_leaders(request)
    except NotControllerError:
        return error_response(request, ctx.api_version, ErrorCode.NOT_CONTROLLER)
    except trio.TooSlowError:
        return error_response(request, ctx.api_version, ErrorCode.REQUEST_TIMED_OUT)


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return elect_leaders_error_response(request, code)
