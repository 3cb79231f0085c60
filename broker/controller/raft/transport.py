"""The quorum on Kafka's wire: requests to the other voters over the Network seam, and the
controller listener that answers them.

`WireTransport` (a `RaftTransport`) keeps one connection per voter, made on first use and
replaced once it breaks; a request that cannot be sent, times out or gets an answer that is
not about `__cluster_metadata-0` yields None (the core's timers retry).

`serve_quorum_connection` answers one accepted stream: the Raft APIs at the versions of
`wire.VERSIONS`, each handled in its own task (a parked fetch does not hold up a vote) and
answered in request order, as Kafka requires on a connection. A frame above
`max_frame_bytes`, an API or version outside those, or an unparsable request closes the
connection; a request of another cluster or topic is answered with its error code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from tidelog.broker.connection import encode_response as encode_response_frame
from tidelog.broker.controller.raft.driver import RaftDriver, now_ms
from tidelog.broker.controller.raft.messages import RaftRequest, RaftResponse
from tidelog.broker.controller.raft.wire import (
    VERSIONS,
    WireError,
    api_of,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    sender_of,
)
from tidelog.broker.network import Network
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import KafkaError
from tidelog.client.protocol.apis import API_BY_KEY, RequestHeader, decode_request_header
from tidelog.client.protocol.errors import CorruptMessageError, ProtocolError
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Reader

log = logging.getLogger(__name__)

QUORUM_FRAME_BYTES_MAX = 64 * 1024 * 1024
"""Above the largest Fetch response or snapshot chunk a peer sends (8 MiB by default)."""
QUORUM_INFLIGHT_MAX = 16
"""Requests read from one connection and not answered yet: a peer sends a handful."""


class WireTransport:
    def __init__(
        self,
        network: Network,
        voters: Mapping[int, tuple[str, int]],
        *,
        node_id: int,
        cluster_id: str,
        request_timeout_ms: int,
    ) -> None:
        self._network = network
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
        connection = await self._connection(destination)
        if connection is None:
            return None
        api = api_of(request)
        body = encode_request(request, self._cluster_id)
        try:
            answer = await connection.request(api.key, body, version=VERSIONS[api.key])
            return decode_response(api.key, answer)
        except (KafkaError, WireError) as exc:
            log.debug(
                "node %d: %s to node %d failed: %s", self._node_id, api.name, destination, exc
            )
            connection.close()
            self._connections.pop(destination, None)
            return None

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
                client_id=f"raft-{self._node_id}",
                request_timeout_s=self._request_timeout_s + 1,
                max_frame_bytes=QUORUM_FRAME_BYTES_MAX,
            )
            await self._nursery.start(connection.serve)
            self._connections[destination] = connection
            return connection


async def serve_quorum_connection(
    stream: trio.abc.Stream, driver: RaftDriver, *, cluster_id: str
) -> None:
    """Answer one peer's requests until it closes the connection, or until it sends what is
    not served (module docstring); the stream is closed on return."""
    decoder = FrameDecoder(QUORUM_FRAME_BYTES_MAX)
    permits = trio.Semaphore(QUORUM_INFLIGHT_MAX)
    send_slot, slots = trio.open_memory_channel[_Slot](QUORUM_INFLIGHT_MAX)

    async def answer(header: RequestHeader, reader: Reader, slot: _Slot) -> None:
        api = API_BY_KEY[header.api_key]
        try:
            try:
                body = api.decode_request(reader, header.api_version)
                request = decode_request(header.api_key, body, cluster_id)
            except CorruptMessageError:
                return  # unparsable: the slot stays empty and the connection closes
            except WireError as refused:
                response = error_response(header.api_key, refused.error)
            else:
                response = await driver.handle(sender_of(request), request)
            encoded = encode_response(response, now_ms=now_ms())
            chunks = encode_response_frame(api, header.api_version, header.correlation_id, encoded)
            frame = bytearray()
            for chunk in chunks:
                assert isinstance(chunk, bytes), "a quorum answer holds no file ranges"
                frame += chunk
            slot.frame = bytes(frame)
        finally:
            slot.done.set()

    async def write_answers() -> None:
        async for slot in slots:
            await slot.done.wait()
            if slot.frame is None:
                await stream.aclose()
                return
            await stream.send_all(slot.frame)
            permits.release()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(write_answers)
        try:
            async with send_slot:
                while data := await stream.receive_some(65536):
                    decoder.receive_data(data)
                    while (frame := decoder.next_frame()) is not NEED_DATA:
                        header, reader = decode_request_header(frame)
                        api = API_BY_KEY.get(header.api_key)
                        if api is None or header.api_version != VERSIONS.get(api.key):
                            log.info(
                                "quorum listener: %s v%d refused",
                                header.api_key,
                                header.api_version,
                            )
                            nursery.cancel_scope.cancel()
                            return
                        await permits.acquire()
                        slot = _Slot()
                        await send_slot.send(slot)
                        nursery.start_soon(answer, header, reader, slot)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("quorum listener: connection closed: %s", exc)
            nursery.cancel_scope.cancel()


class _Slot:
    """One request's place in the answer order."""

    __slots__ = ("done", "frame")

    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.done = trio.Event()
