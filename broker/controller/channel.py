"""Requests from this node to the active controller, over the quorum's controller listeners.

`ControllerChannel.call` sends a Kafka request (any API the controller listener serves) to
the node this one knows leads the quorum, and retries, after `RETRY_BACKOFF_MS`, while no
leader is known, the leader cannot be reached, or it answers NOT_CONTROLLER anywhere in its
response (leadership moved on). An attempt in flight is abandoned as soon as the quorum's
leadership changes (and the request sent to the new leader): a controller that stopped
without closing its connections (a paused process: the kernel still accepts, nobody
answers) must not hold heartbeats until their sessions expire. It returns None as soon as
this node is the active controller itself (the caller then acts locally), and raises
trio.TooSlowError once `timeout_ms` has passed.
"""

from __future__ import annotations

from typing import Any

import trio

from tidelog.broker.controller.quorum import MetadataQuorum
from tidelog.broker.controller.raft.transport import WireTransport
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

RETRY_BACKOFF_MS = 100
"""Kafka's retry.backoff.ms."""


def mentions_not_controller(value: Any) -> bool:
    """Whether any `error_code` in a response body is NOT_CONTROLLER."""
    if isinstance(value, dict):
        if value.get("error_code") == ErrorCode.NOT_CONTROLLER:
            return True
        return any(mentions_not_controller(v) for v in value.values() if isinstance(v, list))
    if isinstance(value, list):
        return any(mentions_not_controller(v) for v in value)
    return False


class ControllerChannel:
    """See the module docstring."""

    def __init__(self, quorum: MetadataQuorum, transport: WireTransport, *, node_id: int) -> None:
        self._quorum = quorum
        self._transport = transport
        self._node_id = node_id

    async def call(
        self, api_key: int, body: Message, *, version: int, timeout_ms: int
    ) -> Message | None:
        with trio.fail_after(timeout_ms / 1000):
            while True:
                if self._quorum.is_active:
                    return None
                leader = self._quorum.leader_id
                if leader >= 0 and leader != self._node_id:
                    answer = await self._attempt(leader, api_key, body, version)
                    if answer is not None and not mentions_not_controller(answer):
                        return answer
                await trio.sleep(RETRY_BACKOFF_MS / 1000)

    async def _attempt(
        self, leader: int, api_key: int, body: Message, version: int
    ) -> Message | None:
        """The leader's answer, or None if there was none before leadership moved."""
        answer: Message | None = None

        async def send(cancel_scope: trio.CancelScope) -> None:
            nonlocal answer
            answer = await self._transport.call(leader, api_key, body, version=version)
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, nursery.cancel_scope)
            await self._quorum.wait_leadership_changed()
            nursery.cancel_scope.cancel()
        return answer
