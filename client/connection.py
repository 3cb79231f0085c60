"""One connection to one broker: pipelined requests matched to responses by correlation id.

A `BrokerConnection` wraps an established `trio.abc.Stream` (TCP, TLS, or a memory stream
in tests). Its `serve` task, run in the owner's nursery, reads response frames and hands each
to the request with the same correlation id; any number of tasks may send concurrently, up
to `max_in_flight` requests awaiting responses. `negotiate_api_versions` runs ApiVersions
first (highest version both sides know; a broker that does not know ours answers
UNSUPPORTED_VERSION in the v0 layout with its own range, and we retry with that) and
`api_version` then picks, per API, the highest version both sides support.

Failure model: when the stream breaks, the broker sends garbage, or a request times out
(`request_timeout_s`, as the Java client does), the connection closes and every request in
flight fails with `KafkaConnectionError` (the timed-out one with `KafkaTimeoutError`). A
closed connection is never reused; the owner makes a new one.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable

import trio

from tidelog.client.errors import (
    ClientClosedError,
    IncompatibleBrokerError,
    KafkaConnectionError,
    KafkaError,
    KafkaProtocolError,
    KafkaTimeoutError,
    raise_for_code,
)
from tidelog.client.protocol.apis import API_BY_KEY, decode_response, encode_request
from tidelog.client.protocol.errors import ErrorCode, ProtocolError
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.messages.api_versions import API_VERSIONS
from tidelog.client.protocol.schema import Api, Message

log = logging.getLogger(__name__)

Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""Opens an established stream to (host, port); raises OSError (or KafkaError) on failure."""

CLIENT_SOFTWARE_NAME = "tidelog-python"
CLIENT_SOFTWARE_VERSION = "0.1.0"
_RECEIVE_CHUNK_BYTES = 256 * 1024
_CORRELATION_MODULUS = 2**31


def tcp_connector(ssl_context: ssl.SSLContext | None, connect_timeout_s: float) -> Connector:
    """A `Connector` for TCP (with TLS when `ssl_context` is given), bounded in time."""

    async def connect(host: str, port: int) -> trio.abc.Stream:
        with trio.fail_after(connect_timeout_s):
            tcp = await trio.open_tcp_stream(host, port)
            if ssl_context is None:
                return tcp
            tls = trio.SSLStream(tcp, ssl_context, server_hostname=host)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            return tls

    return connect


class PendingResponse:
    """A request that was sent and awaits its response; `await pending.wait()`."""

    __slots__ = ("_connection", "_decode", "_error", "_event", "_result", "api", "deadline")

    def __init__(
        self,
        connection: BrokerConnection,
        api: Api,
        decode: Callable[[bytes], Message],
        deadline: float,
    ) -> None:
        self._connection = connection
        self.api = api
        self._decode = decode
        self.deadline = deadline
        self._event = trio.Event()
        self._result: Message | None = None
        self._error: KafkaError | None = None

    def _resolve(self, frame: bytes) -> None:
        try:
            self._result = self._decode(frame)
        except ProtocolError as exc:
            self._error = KafkaProtocolError(f"malformed {self.api.name} response: {exc}")
        self._event.set()

    def _fail(self, error: KafkaError) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> Message:
        """The decoded response body; raises `KafkaError` if it never comes."""
        with trio.move_on_at(self.deadline):
            await self._event.wait()
        if not self._event.is_set():
            error = KafkaTimeoutError(
                f"{self.api.name} request to {self._connection.describe()} timed out"
            )
            self._fail(error)
            self._connection.close(error)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class BrokerConnection:
    """A live connection to one broker; see the module docstring for the contract."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        node_id: int,
        host: str,
        port: int,
        client_id: str | None,
        request_timeout_s: float,
        max_frame_bytes: int,
        max_in_flight: int = 100,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.client_id = client_id
        self.request_timeout_s = request_timeout_s
        self.max_in_flight = max_in_flight
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_bytes)
        self._pending: dict[int, PendingResponse] = {}
        self._next_correlation_id = 0
        self._send_lock = trio.Lock()
        self._capacity = trio.lowlevel.ParkingLot()
        self._serve_scope: trio.CancelScope | None = None
        self._closed_error: KafkaError | None = None
        self._served = trio.Event()
        self.api_versions: dict[int, tuple[int, int]] = {}
        """Broker's supported (min, max) version per API key, after negotiation."""

    def describe(self) -> str:
        return f"broker {self.node_id} at {self.host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def in_flight_count(self) -> int:
        """Requests sent and awaiting their response."""
        return len(self._pending)

    # --- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read responses until the connection closes; never raises for network trouble."""
        with trio.CancelScope() as scope:
            self._serve_scope = scope
            if self._closed_error is not None:
                scope.cancel()
            task_status.started()
            try:
                await self._read_loop()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.close(KafkaConnectionError(f"{self.describe()}: connection lost: {exc}"))
            except ProtocolError as exc:
                self.close(KafkaProtocolError(f"{self.describe()} sent a bad frame: {exc}"))
            except KafkaError as exc:
                self.close(exc)
            finally:
                self.close(ClientClosedError(f"connection to {self.describe()} closed"))
                try:
                    await trio.aclose_forcefully(self._stream)
                finally:
                    self._served.set()

    async def _read_loop(self) -> None:
        decoder = self._decoder
        while True:
            data = await self._stream.receive_some(_RECEIVE_CHUNK_BYTES)
            if not data:
                raise KafkaConnectionError(f"{self.describe()} closed the connection")
            decoder.receive_data(data)
            while True:
                frame = decoder.next_frame()
                if frame is NEED_DATA:
                    break
                self._dispatch(frame)

    def _dispatch(self, frame: bytes) -> None:
        if len(frame) < 4:
            raise KafkaProtocolError(f"{self.describe()} sent a {len(frame)}-byte response")
        correlation_id = int.from_bytes(frame[:4], "big", signed=True)
        pending = self._pending.pop(correlation_id, None)
        if pending is None:
            raise KafkaProtocolError(
                f"{self.describe()} answered correlation id {correlation_id}, "
                "which no request in flight has"
            )
        self._capacity.unpark()
        pending._resolve(frame)

    def close(self, error: KafkaError | None = None) -> None:
        """Close now (synchronously): fail every request in flight because of `error`."""
        if self._closed_error is None:
            self._closed_error = error or ClientClosedError(f"{self.describe()}: closed")
            if not isinstance(self._closed_error, ClientClosedError):
                log.info("closing connection to %s: %s", self.describe(), self._closed_error)
        reason = self._closed_error
        pending, self._pending = self._pending, {}
        for request in pending.values():
            if isinstance(reason, ClientClosedError):
                request._fail(ClientClosedError(str(reason)))
            elif isinstance(reason, KafkaConnectionError):
                request._fail(KafkaConnectionError(str(reason)))
            else:
                request._fail(KafkaConnectionError(f"{self.describe()}: {reason}"))
        self._capacity.unpark_all()
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    async def aclose(self) -> None:
        """Close and wait until the stream is released (when `serve` was running)."""
        self.close()
        if self._serve_scope is not None:
            await self._served.wait()
        else:
            await trio.aclose_forcefully(self._stream)

    # --- requests ------------------------------------------------------------------------

    def api_version(self, api_key: int, *, max_version: int | None = None) -> int:
        """The highest version of `api_key` that the broker, our codec and the caller
        (`max_version`) all support; `IncompatibleBrokerError` if there is none."""
        api = API_BY_KEY[api_key]
        broker_range = self.api_versions.get(api_key)
        if broker_range is None:
            raise IncompatibleBrokerError(f"{self.describe()} does not support {api.name}")
        highest = min(api.valid.highest, broker_range[1])
        if max_version is not None:
            highest = min(highest, max_version)
        lowest = max(api.valid.lowest, broker_range[0])
        if highest < lowest:
            raise IncompatibleBrokerError(
                f"{self.describe()} supports {api.name} v{broker_range[0]}-{broker_range[1]}, "
                f"this client v{api.valid.lowest}-{min(api.valid.highest, max_version or 99)}"
            )
        return highest

    def supports(self, api_key: int) -> bool:
        return api_key in self.api_versions

    async def wait_for_capacity(self) -> None:
        """Wait until fewer than `max_in_flight` requests await responses (or it closed).

        Returns without a checkpoint after the last check, so a caller that registers a
        request right away (as `send` does) cannot be overtaken.
        """
        await trio.lowlevel.checkpoint()
        while len(self._pending) >= self.max_in_flight and not self.closed:
            await self._capacity.park()

    async def send(
        self,
        api_key: int,
        body: Message,
        *,
        version: int | None = None,
        max_version: int | None = None,
        timeout_s: float | None = None,
        decode: Callable[[bytes], Message] | None = None,
    ) -> PendingResponse:
        """Send a request now; returns the pending response to await later (pipelining).

        Waits for a free in-flight slot first. `version` defaults to `api_version(api_key,
        max_version=...)`; `timeout_s` (default `request_timeout_s`) counts from now.
        """
        await self.wait_for_capacity()
        self._raise_if_closed()
        api = API_BY_KEY[api_key]
        if version is None:
            version = self.api_version(api_key, max_version=max_version)
        correlation_id = self._take_correlation_id()
        frame = encode_request(api_key, version, correlation_id, self.client_id, body)
        if decode is None:
            decode = _body_decoder(api, version)
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        pending = PendingResponse(self, api, decode, trio.current_time() + timeout)
        self._pending[correlation_id] = pending
        await self._write(frame)
        return pending

    async def send_without_response(self, api_key: int, body: Message, *, version: int) -> None:
        """Send a request the broker does not answer (Produce with acks=0)."""
        self._raise_if_closed()
        frame = encode_request(api_key, version, self._take_correlation_id(), self.client_id, body)
        await self._write(frame)

    async def request(
        self,
        api_key: int,
        body: Message,
        *,
        version: int | None = None,
        max_version: int | None = None,
        timeout_s: float | None = None,
    ) -> Message:
        """Send a request and wait for its decoded response body."""
        pending = await self.send(
            api_key, body, version=version, max_version=max_version, timeout_s=timeout_s
        )
        return await pending.wait()

    async def negotiate_api_versions(self) -> None:
        """Learn which API versions the broker supports (ApiVersions)."""
        version = API_VERSIONS.valid.highest
        body = {
            "client_software_name": CLIENT_SOFTWARE_NAME,
            "client_software_version": CLIENT_SOFTWARE_VERSION,
        }
        for _attempt in range(3):
            pending = await self.send(
                API_VERSIONS.key, body, version=version, decode=_api_versions_decoder(version)
            )
            response = await pending.wait()
            ranges = {
                entry["api_key"]: (entry["min_version"], entry["max_version"])
                for entry in response["api_keys"]
            }
            if response["error_code"] == ErrorCode.UNSUPPORTED_VERSION:
                broker_range = ranges.get(API_VERSIONS.key)
                lower = None if broker_range is None else min(broker_range[1], version - 1)
                if lower is None or lower < API_VERSIONS.valid.lowest:
                    raise IncompatibleBrokerError(
                        f"{self.describe()} supports no ApiVersions version we know"
                    )
                version = lower
                continue
            raise_for_code(response["error_code"], f"ApiVersions from {self.describe()}")
            self.api_versions = ranges
            return
        raise IncompatibleBrokerError(f"{self.describe()}: ApiVersions negotiation did not settle")

    def _take_correlation_id(self) -> int:
        correlation_id = self._next_correlation_id
        self._next_correlation_id = (correlation_id + 1) % _CORRELATION_MODULUS
        return correlation_id

    def _raise_if_closed(self) -> None:
        if self._closed_error is not None:
            raise KafkaConnectionError(f"connection to {self.describe()} is closed") from (
                self._closed_error
            )

    async def _write(self, frame: bytes) -> None:
        async with self._send_lock:
            self._raise_if_closed()
            sent = False
            try:
                await self._stream.send_all(frame)
                sent = True
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                error = KafkaConnectionError(f"{self.describe()}: send failed: {exc}")
                self.close(error)
                raise error from exc
            finally:
                if not sent and not self.closed:
                    # Cancelled mid-frame: the stream may hold half a request, so it is
                    # unusable.
                    self.close(KafkaConnectionError(f"{self.describe()}: send interrupted"))


def _body_decoder(api: Api, version: int) -> Callable[[bytes], Message]:
    def decode(frame: bytes) -> Message:
        return decode_response(api, version, frame)[1]

    return decode


def _api_versions_decoder(version: int) -> Callable[[bytes], Message]:
    """ApiVersions answers a version it does not know in the v0 layout, with error 35."""

    def decode(frame: bytes) -> Message:
        error_code = int.from_bytes(frame[4:6], "big", signed=True) if len(frame) >= 6 else 0
        used = 0 if error_code == ErrorCode.UNSUPPORTED_VERSION else version
        return decode_response(API_VERSIONS, used, frame)[1]

    return decode


def backoff_s(attempt: int, initial_ms: int, max_ms: int, jitter: float) -> float:
    """Exponential backoff in seconds for the `attempt`-th retry (1-based), with `jitter`
    (a value in [-1, 1)) spreading it by up to ±20%."""
    base_ms = initial_ms * math.pow(2, max(attempt - 1, 0))
    return min(base_ms, max_ms) * (1 + 0.2 * jitter) / 1000
