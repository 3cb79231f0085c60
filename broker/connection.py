"""One client connection: frames in, handlers run concurrently, responses out in order.

The protocol decisions are pure functions (`parse_request`, `encode_response`): a frame
either dispatches to a route, is answered at once (ApiVersions at an unknown version), or
closes the connection, as Kafka does for an unparsable request, an unknown API key, an
unsupported version of any other API, or an oversized frame.

`Connection.serve` drives them over a stream with two tasks:

- the reader decodes frames (at most `max_frame_bytes` each) and starts one handler task per
  request; it takes one of `max_inflight` permits per request, so a client that pipelines
  more than that stops being read until responses go out (backpressure);
- the writer sends responses strictly in request order, coalescing consecutive ready
  responses into one send; `Splice` chunks that name a file (log `FileRange`s) go out with
  os.sendfile on plaintext TCP, and as bytes otherwise (TLS, memory streams).

A request whose handler returns None (acks=0 Produce) takes its turn and sends nothing.
When reading stops (peer EOF, rejected frame, `stop_reading()` at shutdown) the writer
still delivers every response to requests read so far, then the connection closes. A
connection with no traffic in either direction for `idle_timeout_ms` is closed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from tidelog.broker.network import PeerInfo, plain_socket
from tidelog.broker.router import CloseConnection, ConnectionInfo, RequestContext, Route, Router
from tidelog.client.protocol.apis import (
    RequestHeader,
    decode_request_header,
    encode_response_header,
)
from tidelog.client.protocol.errors import ErrorCode, ProtocolError
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.messages.api_versions import API_VERSIONS
from tidelog.client.protocol.primitives import Splice, Writer
from tidelog.client.protocol.schema import Api, Message

if TYPE_CHECKING:
    from tidelog.broker.router import BrokerContext

log = logging.getLogger(__name__)

Chunk = bytes | Splice

RECEIVE_BYTES_MIN = 64 * 1024
RECEIVE_BYTES_MAX = 1024 * 1024
COALESCE_BYTES_MAX = 256 * 1024
"""Responses are joined into one send up to this size; larger ones go out on their own."""


@runtime_checkable
class FileSplice(Protocol):
    """A Splice that lives in a file (storage's `FileRange`): what the writer needs to send it.

    `fileno()` is a descriptor for os.sendfile from `position`, or None (an in-memory file
    system); `read_bytes()` returns the range's bytes, fewer only if the file was truncated.
    A short range closes the connection, since the response's length is already on the wire.
    """

    @property
    def nbytes(self) -> int: ...

    @property
    def position(self) -> int: ...

    def fileno(self) -> int | None: ...

    def read_bytes(self) -> bytes: ...


# --- pure protocol decisions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run `route.handler` on `request`."""

    route: Route
    header: RequestHeader
    request: Message


@dataclass(frozen=True, slots=True)
class Answer:
    """Send `chunks` (a whole response frame) without running a handler."""

    chunks: list[Chunk]


@dataclass(frozen=True, slots=True)
class Reject:
    """Close the connection; `reason` is for the log."""

    reason: str


REQUEST_ARRAY_ELEMENTS_MAX = 200_000
"""Array elements one request may hold in all (partitions, topics, configs...). Decoding
turns a few wire bytes per element into a dict of hundreds of bytes, so the frame size alone
does not bound a request's memory; this does (tens of MB at worst). Real clients stay far
below it: a Fetch of 10,000 partitions is about 10,000 elements."""


def parse_request(frame: bytes, router: Router) -> Dispatch | Answer | Reject:
    """Decide what to do with one request frame (size prefix removed)."""
    try:
        header, body = decode_request_header(frame, array_elements_max=REQUEST_ARRAY_ELEMENTS_MAX)
    except ProtocolError as exc:
        return Reject(f"unparsable request header: {exc}")
    r = router.get(header.api_key)
    if r is None:
        return Reject(f"unknown or unserved API key {header.api_key}")
    version = header.api_version
    if version not in r.advertised:
        if header.api_key == API_VERSIONS.key:
            return Answer(_api_versions_unsupported(header.correlation_id, r))
        return Reject(f"{r.api.name} v{version} is not supported")
    if version not in r.api.valid:
        return Reject(f"{r.api.name} v{version} is advertised for feature checks, not served")
    try:
        request = r.api.decode_request(body, version)
    except ProtocolError as exc:
        return Reject(f"unparsable {r.api.name} v{version} request: {exc}")
    if version not in r.served:
        assert r.error_response is not None, "route() requires it for unserved versions"
        response = r.error_response(request, version, ErrorCode.UNSUPPORTED_VERSION)
        return Answer(encode_response(r.api, version, header.correlation_id, response))
    return Dispatch(r, header, request)


def _api_versions_unsupported(correlation_id: int, r: Route) -> list[Chunk]:
    # Kafka's answer to an ApiVersions version it does not know: parse nothing, reply in the
    # v0 layout with UNSUPPORTED_VERSION and ApiVersions' own range so the client retries.
    body = {
        "error_code": int(ErrorCode.UNSUPPORTED_VERSION),
        "api_keys": [
            {
                "api_key": API_VERSIONS.key,
                "min_version": r.advertised.lowest,
                "max_version": r.advertised.highest,
            }
        ],
    }
    return encode_response(API_VERSIONS, 0, correlation_id, body)


def encode_response(api: Api, version: int, correlation_id: int, body: Message) -> list[Chunk]:
    """A whole response frame (size prefix, header, body) as chunks to send in order."""
    w = Writer()
    encode_response_header(w, api, version, correlation_id)
    api.encode_response(w, body, version)
    size = w.nbytes
    chunks = w.chunks()
    prefix = size.to_bytes(4, "big", signed=True)
    first = chunks[0]
    if isinstance(first, bytes):
        return [prefix + first, *chunks[1:]]
    return [prefix, *chunks]


# --- the trio driver ----------------------------------------------------------------------


class _Slot:
    """A request's place in the response order."""

    __slots__ = ("chunks", "close", "done")

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.close = False
        self.done = trio.Event()


class ResponseLengthError(Exception):
    """A spliced file range yielded fewer bytes than its declared size."""


class Connection:
    """Serves one accepted stream until either side closes it (see module docstring)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        connection_number: int,
        listener_name: str,
        local: tuple[str, int],
        peer: PeerInfo,
        router: Router,
        broker: BrokerContext,
        max_frame_bytes: int,
        max_inflight: int,
        idle_timeout_ms: int,
    ) -> None:
        self.stream = stream
        self.info = ConnectionInfo(
            connection_id=(
                f"{listener_name}-{local[0]}:{local[1]}-{peer.host}:{peer.port}-{connection_number}"
            ),
            listener_name=listener_name,
            peer=peer,
        )
        self._router = router
        self._broker = broker
        self._decoder = FrameDecoder(max_frame_bytes)
        self._permits = trio.Semaphore(max_inflight)
        self._max_inflight = max_inflight
        self._idle_timeout_s = idle_timeout_ms / 1000
        self._idle_scope = trio.CancelScope()
        self._read_scope = trio.CancelScope()
        self._socket = plain_socket(stream)

    def stop_reading(self) -> None:
        """Read no more requests; answer those already read, then close (clean shutdown)."""
        self._read_scope.cancel()

    @property
    def inflight(self) -> int:
        """Requests read whose responses have not been written yet."""
        return self._max_inflight - self._permits.value

    def _touch(self) -> None:
        self._idle_scope.deadline = trio.current_time() + self._idle_timeout_s

    async def serve(self) -> None:
        """Run until the connection is closed; never raises for the peer's misbehaviour."""
        send_slots, receive_slots = trio.open_memory_channel[_Slot](self._max_inflight)
        self._touch()
        try:
            with self._idle_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_loop, send_slots, nursery)
                    try:
                        await self._write_loop(receive_slots)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        log.debug("%s: peer went away: %s", self.info.connection_id, exc)
                    except (ResponseLengthError, OSError) as exc:
                        log.warning("%s: closing: %s", self.info.connection_id, exc)
                    nursery.cancel_scope.cancel()
            if self._idle_scope.cancelled_caught:
                log.info("%s: idle, closing", self.info.connection_id)
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(
        self, send_slots: trio.MemorySendChannel[_Slot], nursery: trio.Nursery
    ) -> None:
        decoder = self._decoder
        async with send_slots:
            with self._read_scope:
                while True:
                    try:
                        frame = decoder.next_frame()
                    except ProtocolError as exc:
                        log.info("%s: closing: %s", self.info.connection_id, exc)
                        return
                    if frame is NEED_DATA:
                        pending = decoder.pending_frame_bytes()
                        want = RECEIVE_BYTES_MIN
                        if pending is not None:
                            missing = pending + 4 - decoder.buffered_bytes
                            want = min(max(missing, RECEIVE_BYTES_MIN), RECEIVE_BYTES_MAX)
                        try:
                            data = await self.stream.receive_some(want)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        if not data:
                            return
                        self._touch()
                        decoder.receive_data(data)
                        continue
                    await self._permits.acquire()
                    outcome = parse_request(frame, self._router)
                    if isinstance(outcome, Reject):
                        self._permits.release()
                        log.info("%s: closing: %s", self.info.connection_id, outcome.reason)
                        return
                    slot = _Slot()
                    if isinstance(outcome, Answer):
                        slot.chunks = outcome.chunks
                        slot.done.set()
                    else:
                        nursery.start_soon(self._handle, slot, outcome)
                    send_slots.send_nowait(slot)

    async def _handle(self, slot: _Slot, dispatch: Dispatch) -> None:
        header = dispatch.header
        r = dispatch.route
        ctx = RequestContext(
            header=header, connection=self.info, broker=self._broker, router=self._router
        )
        try:
            try:
                response = await r.handler(ctx, dispatch.request)
                if response is not None:
                    slot.chunks = encode_response(
                        r.api, header.api_version, header.correlation_id, response
                    )
            except CloseConnection as exc:
                log.info(
                    "%s: closing after %s v%d: %s",
                    self.info.connection_id,
                    r.api.name,
                    header.api_version,
                    exc,
                )
                slot.close = True
            except Exception:
                log.exception(
                    "%s: %s v%d handler failed (client %r, correlation id %d)",
                    self.info.connection_id,
                    r.api.name,
                    header.api_version,
                    header.client_id,
                    header.correlation_id,
                )
                slot.chunks = self._error_chunks(dispatch)
                slot.close = not slot.chunks
        finally:
            slot.done.set()

    def _error_chunks(self, dispatch: Dispatch) -> list[Chunk]:
        r, header = dispatch.route, dispatch.header
        if r.error_response is None:
            return []
        try:
            body = r.error_response(
                dispatch.request, header.api_version, ErrorCode.UNKNOWN_SERVER_ERROR
            )
            return encode_response(r.api, header.api_version, header.correlation_id, body)
        except Exception:
            log.exception("%s: %s error response failed", self.info.connection_id, r.api.name)
            return []

    async def _write_loop(self, receive_slots: trio.MemoryReceiveChannel[_Slot]) -> None:
        pending: _Slot | None = None
        async with receive_slots:
            while True:
                if pending is None:
                    try:
                        pending = await receive_slots.receive()
                    except trio.EndOfChannel:
                        return
                slot, pending = pending, None
                await slot.done.wait()
                batch = [slot]
                batch_bytes = _chunks_bytes(slot.chunks)
                while not batch[-1].close and batch_bytes < COALESCE_BYTES_MAX:
                    try:
                        following = receive_slots.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if not following.done.is_set():
                        pending = following
                        break
                    batch.append(following)
                    batch_bytes += _chunks_bytes(following.chunks)
                closing = await self._send_batch(batch)
                if closing:
                    return

    async def _send_batch(self, batch: list[_Slot]) -> bool:
        """Send the batch's responses; True if one of them asks to close the connection.

        Small byte chunks are joined into sends of up to COALESCE_BYTES_MAX; larger ones and
        splices go out on their own, uncopied.
        """
        buffered: list[bytes] = []
        buffered_bytes = 0

        async def flush() -> None:
            nonlocal buffered_bytes
            if buffered:
                await self.stream.send_all(
                    buffered[0] if len(buffered) == 1 else b"".join(buffered)
                )
                buffered.clear()
                buffered_bytes = 0

        closing = False
        for slot in batch:
            if slot.close:
                closing = True
                break
            for chunk in slot.chunks:
                if isinstance(chunk, bytes) and len(chunk) < COALESCE_BYTES_MAX:
                    buffered.append(chunk)
                    buffered_bytes += len(chunk)
                    if buffered_bytes >= COALESCE_BYTES_MAX:
                        await flush()
                    continue
                await flush()
                if isinstance(chunk, bytes):
                    await self.stream.send_all(chunk)
                else:
                    await self._send_splice(chunk)
        await flush()
        self._touch()
        for slot in batch:
            if slot.close:
                break
            self._permits.release()
        return closing

    async def _send_splice(self, splice: Splice) -> None:
        if not isinstance(splice, FileSplice):
            raise TypeError(f"cannot send a {type(splice).__name__} splice")
        if splice.nbytes == 0:
            return
        fd = splice.fileno() if self._socket is not None else None
        if fd is None or self._socket is None:
            data = splice.read_bytes()
            if len(data) != splice.nbytes:
                raise ResponseLengthError(f"file range gave {len(data)} of {splice.nbytes} bytes")
            await self.stream.send_all(data)
            return
        await _sendfile(self._socket, fd, splice.position, splice.nbytes)


async def _sendfile(sock: trio.socket.SocketType, fd: int, offset: int, count: int) -> None:
    """Send `count` bytes of file `fd` from `offset` with os.sendfile, yielding to trio when
    the socket buffer is full."""
    out = sock.fileno()
    while count > 0:
        try:
            sent = os.sendfile(out, fd, offset, count)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        if sent == 0:
            raise ResponseLengthError(f"file ended with {count} bytes of the range unsent")
        offset += sent
        count -= sent
        await trio.lowlevel.checkpoint()


def _chunks_bytes(chunks: list[Chunk]) -> int:
    return sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)
