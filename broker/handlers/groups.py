"""Consumer-group APIs: FindCoordinator (10), JoinGroup (11), Heartbeat (12), LeaveGroup (13),
SyncGroup (14), OffsetCommit (8), OffsetFetch (9), DescribeGroups (15), ListGroups (16),
DeleteGroups (42), OffsetDelete (47).

Each handler hands its request to the broker's `GroupService` (the trio driver of the pure
coordinator in `broker.groups`) and returns the response the core produces, which may come
after other requests (a JoinGroup waits for its rebalance). FindCoordinator creates and
loads `__consumer_offsets` on first use and names the leader of the group's partition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tidelog.broker.groups.coordinator import GroupCoordinator
from tidelog.broker.groups.effects import Output, RequestId
from tidelog.broker.groups.find_coordinator import (
    GROUP_KEY_TYPE,
    CoordinatorNode,
    find_coordinator_response,
)
from tidelog.broker.groups.service import GroupService
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message


def _service(ctx: RequestContext) -> GroupService:
    return ctx.broker.groups


async def find_coordinator(ctx: RequestContext, request: Message) -> Message:
    service = _service(ctx)
    ready = await service.offsets_topic_ready()

    def locate(key_type: int, key: str) -> CoordinatorNode | ErrorCode:
        if key_type != GROUP_KEY_TYPE:
            return ErrorCode.INVALID_REQUEST  # no transaction coordinator
        if not ready:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        leader = service.partition_leader(key)
        node = ctx.broker.image.broker(leader) if leader is not None else None
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


CoreCall = Callable[[GroupCoordinator, RequestId, Message, int, int], Output]
"""An unbound `GroupCoordinator` method taking (request id, request, version, now_ms)."""


def _delegate(call: CoreCall) -> Callable[[RequestContext, Message], Awaitable[Message]]:
    """A handler that runs `call` on the broker's coordinator and returns its response."""

    async def handle(ctx: RequestContext, request: Message) -> Message:
        service = _service(ctx)
        return await service.call(
            lambda request_id, now_ms: call(
                service.core, request_id, request, ctx.api_version, now_ms
            )
        )

    return handle


sync_group = _delegate(GroupCoordinator.sync_group)
heartbeat = _delegate(GroupCoordinator.heartbeat)
leave_group = _delegate(GroupCoordinator.leave_group)
offset_commit = _delegate(GroupCoordinator.commit_offsets)
offset_fetch = _delegate(GroupCoordinator.fetch_offsets)
describe_groups = _delegate(GroupCoordinator.describe_groups)
list_groups = _delegate(GroupCoordinator.list_groups)
delete_groups = _delegate(GroupCoordinator.delete_groups)
offset_delete = _delegate(GroupCoordinator.delete_offsets)
