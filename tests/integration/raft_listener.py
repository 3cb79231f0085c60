"""A quorum listener on its own: the Raft APIs over one accepted stream, with no broker.

`serve_quorum_connection` answers the Raft APIs at the versions of `wire.VERSIONS`, each
handled in its own task (a parked fetch does not hold up a vote) and answered in request
order, as Kafka requires on a connection. A frame above `QUORUM_FRAME_BYTES_MAX`, an API or
version outside those, or an unparsable request closes the connection; a request of another
cluster or topic is answered with its error code. A broker serves the same APIs on its
controller listener (`handlers.quorum`); this test support runs a Raft node by itself, with
no broker around it (the quorum's TCP and process tests).
"""

from __future__ import annotations

import logging

import trio

from tidelog.broker.connection import encode_response as encode_response_frame
from tidelog.broker.controller.raft.driver import RaftDriver, now_ms
from tidelog.broker.controller.raft.transport import QUORUM_FRAME_BYTES_MAX
from tidelog.broker.controller.raft.wire import (
    VERSIONS,
    WireError,
    decode_request,
    encode_response,
    error_response,
    sender_of,
)
from tidelog.client.protocol.apis import API_BY_KEY, RequestHeader, decode_request_header
from tidelog.client.protocol.errors import CorruptMessageError, ProtocolError
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Reader

log = logging.getLogger(__name__)

QUORUM_INFLIGHT_MAX = 16
"""Requests read from one connection and not answered yet: a peer sends a handful."""


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
