"""The controller listener's APIs: the quorum's own (Vote, BeginQuorumEpoch, EndQuorumEpoch,
Fetch and FetchSnapshot of `__cluster_metadata`), DescribeQuorum, and the broker lifecycle
(BrokerRegistration, BrokerHeartbeat, UnregisterBroker, AllocateProducerIds) and partition
leaders' AlterPartition.

Quorum requests go to this node's Raft member (`wire` converts them; another cluster's,
another partition's or a malformed one is answered with its error code and nothing
reaches the core). Lifecycle requests go to the active controller (`QuorumController`):
NOT_CONTROLLER where this node is not it, REQUEST_TIMED_OUT when the change was not
committed in time. DescribeQuorum and UnregisterBroker, which admin clients send to any
broker, are forwarded to the active controller from a broker listener.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from tidelog.broker.controller.controller import QuorumController
from tidelog.broker.controller.quorum import NotControllerError
from tidelog.broker.controller.raft.driver import now_ms
from tidelog.broker.controller.raft.wire import (
    WireError,
    decode_request,
    describe_quorum_response,
    encode_response,
    error_response,
    sender_of,
)
from tidelog.broker.handlers.forwarding import to_controller
from tidelog.broker.router import Handler, RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message


async def raft(ctx: RequestContext, request: Message) -> Message:
    """Vote, BeginQuorumEpoch, EndQuorumEpoch, Fetch (v12) and FetchSnapshot."""
    quorum = ctx.broker.quorum
    api_key = ctx.header.api_key
    try:
        raft_request = decode_request(api_key, request, quorum.cluster_id)
    except WireError as refused:
        return encode_response(error_response(api_key, refused.error), now_ms=now_ms())
    response = await quorum.handle(sender_of(raft_request), raft_request)
    return encode_response(response, now_ms=now_ms())


async def describe_quorum(ctx: RequestContext, request: Message) -> Message:
    forwarded = await to_controller(ctx, request, describe_quorum_error_response)
    if forwarded is not None:
        return forwarded
    core = ctx.broker.quorum.core
    return describe_quorum_response(
        core.quorum_info(),
        leader_id=core.leader_id,
        epoch=core.epoch,
        wall_offset_ms=ctx.broker.now_ms() - now_ms(),
    )


def describe_quorum_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {"error_code": int(code), "error_message": None, "topics": [], "nodes": []}


def _lifecycle(
    call: Callable[[QuorumController, Message], Awaitable[Message]],
    error_response: Callable[[Message, int, ErrorCode], Message],
    *,
    forward: bool = False,
) -> Handler:
    async def handle(ctx: RequestContext, request: Message) -> Message:
        controller = ctx.broker.controller
        if forward:
            forwarded = await to_controller(ctx, request, error_response)
            if forwarded is not None:
                return forwarded
        if controller is None:
            return error_response(request, ctx.api_version, ErrorCode.NOT_CONTROLLER)
        try:
            return await call(controller, request)
        except NotControllerError:
            return error_response(request, ctx.api_version, ErrorCode.NOT_CONTROLLER)
        except trio.TooSlowError:
            return error_response(request, ctx.api_version, ErrorCode.REQUEST_TIMED_OUT)

    return handle


def heartbeat_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "is_caught_up": False,
        "is_fenced": True,
        "should_shut_down": False,
    }


def registration_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {"throttle_time_ms": 0, "error_code": int(code), "broker_epoch": -1}


def unregister_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {"throttle_time_ms": 0, "error_code": int(code), "error_message": None}


def producer_ids_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "producer_id_start": -1,
        "producer_id_len": 0,
    }


def alter_partition_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {"throttle_time_ms": 0, "error_code": int(code), "topics": []}


broker_registration = _lifecycle(QuorumController.broker_registration, registration_error_response)
alter_partition = _lifecycle(QuorumController.alter_partition, alter_partition_error_response)
broker_heartbeat = _lifecycle(QuorumController.heartbeat, heartbeat_error_response)
unregister_broker = _lifecycle(
    QuorumController.unregister_broker, unregister_error_response, forward=True
)
allocate_producer_ids = _lifecycle(
    QuorumController.allocate_producer_ids, producer_ids_error_response
)
