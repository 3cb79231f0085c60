"""The quorum on Kafka's wire: requests to the other voters over the Network seam.

`WireTransport` (a `RaftTransport`) keeps one connection per voter, made on first use and
replaced once it breaks; a request that cannot be sent, times out or gets an answer that is
not about `__cluster_metadata-0` yields None (the core's timers retry). `call` sends any
other request the controller listener serves; a node keeps a second transport for its
requests to the active controller (`ControllerChannel`), because responses on one
connection come back in request order: a heartbeat waiting for its commit must never sit
in front of the Fetch response that would carry the commit. The answering side is the
controller listener (`handlers.quorum`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from tidelog.broker.controller.raft.messages import RaftRequest, RaftResponse
from tidelog.broker.controller.raft.wire import (
    VERSIONS,
    WireError,
    api_of,
    decode_response,
    encode_request,
)
from tidelog.broker.network import Network
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import KafkaError
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)

QUORUM_FRAME_BYTES_MAX = 64 * 1024 * 1024
"""Above the largest Fetch response or snapshot chunk a peer sends (8 MiB by default)."""


class WireTransport:
    def __init__(
        self,
        network: Network,
        voters: Mapping[int, tuple[str, int]],
        *,
        node_id: int,
        cluster_id: str,
        request_timeout_ms: int,
        client_name: str = "raft",
    ) -> None:
        self._network = network
        self._client_id = f"{client_name}-{node_id}"
        self._voters = dict(voters)
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._request_timeout_s = request_timeout_ms / 1000
        self._connections: dict[int, BrokerConnection] = {}
        self._connecting: dict[int, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the connections' reader tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def send(self, destination: int, request: RaftRequest) -> RaftResponse | None:
        api = api_of(request)
        body = encode_request(request, self._cluster_id)
        answer = await self.call(destination, api.key, body, version=VERSIONS[api.key])
        if answer is None:
            return None
        try:
            return decode_response(api.key, answer)
        except WireError as exc:
            log.debug("node %d: %s from node %d: %s", self._node_id, api.name, destination, exc)
            self._drop(destination)
            return None

    async def call(
        self, destination: int, api_key: int, body: Message, *, version: int
    ) -> Message | None:
        """Any request to a voter's controller listener: its decoded answer, or None when
        it could not be sent or answered in time (the connection is then replaced)."""
        connection = await self._connection(destination)
        if connection is None:
            return None
        try:
            return await connection.request(api_key, body, version=version)
        except KafkaError as exc:
            log.debug(
                "node %d: API %d to node %d failed: %s", self._node_id, api_key, destination, exc
            )
            self._drop(destination)
            return None

    def _drop(self, destination: int) -> None:
        connection = self._connections.pop(destination, None)
        if connection is not None:
            connection.close()

    async def _connection(self, destination: int) -> BrokerConnection | None:
        address = self._voters.get(destination)
        if address is None or self._nursery is None:
            return None
        lock = self._connecting.setdefault(destination, trio.Lock())
        async with lock:
            existing = self._connections.get(destination)
            if existing is not None and not existing.closed:
                return existing
            host, port = address
            try:
                with trio.fail_after(self._request_timeout_s):
                    stream = await self._network.connect(host, port)
            except (OSError, trio.TooSlowError) as exc:
                log.debug("node %d: cannot reach voter %d: %s", self._node_id, destination, exc)
                return None
            connection = BrokerConnection(
                stream,
                node_id=destination,
                host=host,
                port=port,
                client_id=self._client_id,
                request_timeout_s=self._request_timeout_s + 1,
                max_frame_bytes=QUORUM_FRAME_BYTES_MAX,
            )
            await self._nursery.start(connection.serve)
            self._connections[destination] = connection
            return connection
