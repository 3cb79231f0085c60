"""Consumer-group APIs: FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13),
SyncGroup (14), OffsetCommit (8), OffsetFetch (9), DescribeGroups (15), ListGroups (16),
DeleteGroups (42), OffsetDelete (47).

Each handler hands its request to the broker's `GroupService` (the trio driver of the pure
coordinator in `broker.groups`) and returns the response the core produces, which may come
after other requests (a JoinGroup waits for its rebalance). FindCoordinator creates and
loads `__consumer_offsets` on first use and names the leader of the group's partition.
"""

from __future__ import annotations

from broker.groups.find_coordinator import (
    GROUP_KEY_TYPE,
    CoordinatorNode,
    find_coordinator_response,
)
from broker.groups.service import GroupService
from broker.router import RequestContext
from client.protocol.errors import ErrorCode
from client.protocol.schema import Message


def _service(ctx: RequestContext) -> GroupService:
    return ctx.broker.groups


async def find_coordinator(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)

    def locate(key_type: int, key: str) -> CoordinatorNode | ErrorCode:
        if key_type != GROUP_KEY_TYPE:
            return ErrorCode.INVALID_REQUEST  # no transaction coordinator
        if not service.offsets_topic_ready():
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        leader = service.partition_leader(key)
        node = ctx.broker.cluster.broker(leader) if leader is not None else None
        endpoint = node.endpoint(ctx.connection.listener_name) if node is not None else None
        if node is None or endpoint is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return CoordinatorNode(node.node_id, endpoint.host, endpoint.port)

    return find_coordinator_response(request, ctx.api_version, locate)


async def join_group(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    client_host = "/" + ctx.connection.peer.host
    return await service.call(
        lambda request_id, now_ms: service.core.join_group(
            request_id, request, ctx.api_version, ctx.client_id or "", client_host, now_ms
        )
    )


async def sync_group(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.sync_group(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def heartbeat(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.heartbeat(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def leave_group(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.leave_group(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def offset_commit(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.commit_offsets(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def offset_fetch(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.fetch_offsets(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def describe_groups(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.describe_groups(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def list_groups(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.list_groups(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def delete_groups(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.delete_groups(
            request_id, request, ctx.api_version, now_ms
        )
    )


async def offset_delete(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    return await service.call(
        lambda request_id, now_ms: service.core.delete_offsets(
            request_id, request, ctx.api_version, now_ms
        )
    )
