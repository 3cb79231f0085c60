"""DescribeCluster (60): cluster id, controller and brokers, from the metadata image.

Brokers are listed with their endpoint on the listener the request came in on (as in
Metadata): the live ones, and the fenced ones too (IsFenced set) when the request asks
(IncludeFencedBrokers, v2). ControllerId is a live broker that forwards admin requests to
the active controller (`MetadataImage.controller_for_clients`). Only broker endpoints are
described (EndpointType 1); asking a broker for controller endpoints (2) is
MISMATCHED_ENDPOINT_TYPE, as a Kafka broker answers.
"""

from __future__ import annotations

from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

ENDPOINT_TYPE_BROKER = 1
NO_AUTHORIZED_OPERATIONS = -(2**31)


async def handle(ctx: RequestContext, request: Message) -> Message:
    if request["endpoint_type"] != ENDPOINT_TYPE_BROKER:
        return error_response(request, ctx.api_version, ErrorCode.MISMATCHED_ENDPOINT_TYPE)
    image = ctx.broker.image
    listener = ctx.connection.listener_name
    brokers = [
        {
            "broker_id": node.node_id,
            "host": endpoint.host,
            "port": endpoint.port,
            "rack": node.rack,
            "is_fenced": node.fenced,
        }
        for node, endpoint in image.reachable_brokers(
            listener, include_fenced=request["include_fenced_brokers"]
        )
    ]
    return {
        "throttle_time_ms": 0,
        "error_code": int(ErrorCode.NONE),
        "error_message": None,
        "endpoint_type": ENDPOINT_TYPE_BROKER,
        "cluster_id": image.cluster_id,
        "controller_id": image.controller_for_clients(listener, ctx.broker.config.node_id),
        "brokers": brokers,
        "cluster_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "error_message": None,
        "endpoint_type": request["endpoint_type"],
        "cluster_id": "",
        "controller_id": -1,
        "brokers": [],
        "cluster_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }
