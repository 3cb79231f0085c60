"""The network seam: every byte the broker sends or receives goes through a `Network`.

`TcpNetwork` is the real one (trio sockets, TLS through `trio.SSLStream`).
`tidelog.broker.memory_network.MemoryNetwork` runs listeners and connections inside one
process, addressed by (host, port) like TCP, with injectable faults, so a whole broker (or
cluster) can run in a test or a simulation with no sockets. Both wrap a TLS listener's
streams in `SSLStream` and finish the handshake (bounded by `tls_handshake_timeout_ms`)
before the handler sees the stream, so a handler always gets an established stream and can
ask `stream_peer` who is on the other end.

Contract of `serve_tcp`: binds, reports the bound port through `task_status.started(port)`
(port 0 asks for an ephemeral one), then accepts until cancelled, running
`handler(stream)` for each connection in `handler_nursery` (default: its own). The stream is
closed after the handler returns; a handler should not raise.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio

from tidelog.broker.config import TlsConfig

log = logging.getLogger(__name__)

StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]

TLS_HANDSHAKE_TIMEOUT_MS = 10_000


class Network(Protocol):
    """Listen and connect; see the module docstring for the `serve_tcp` contract."""

    async def serve_tcp(
        self,
        handler: StreamHandler,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn: ...

    async def connect(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> trio.abc.Stream:
        """An established stream to (host, port); OSError if nothing listens there."""
        ...


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is on the other end of an accepted stream."""

    host: str
    port: int
    tls_version: str | None = None
    """"TLSv1.3" etc. on a TLS stream, None on plaintext."""
    certificate_subject: str | None = None
    """The verified client certificate's subject (RFC 4514-ish), when one was presented."""


class AddressedStream(trio.abc.HalfCloseableStream):
    """A stream that is no OS socket but knows both ends' (host, port), such as a
    `MemoryStream`: what `stream_peer` reads instead of a socket's addresses."""

    local_address: tuple[str, int]
    peer_address: tuple[str, int]


def stream_peer(stream: trio.abc.Stream) -> PeerInfo:
    """The peer of a stream made by `TcpNetwork` or `MemoryNetwork`."""
    tls_version: str | None = None
    subject: str | None = None
    transport = stream
    if isinstance(stream, trio.SSLStream):
        tls_version = stream.version()
        cert = stream.getpeercert()
        if cert:
            subject = ",".join(
                f"{name}={value}" for rdn in cert.get("subject", ()) for name, value in rdn
            )
        transport = stream.transport_stream
    if isinstance(transport, trio.SocketStream):
        address = transport.socket.getpeername()
        return PeerInfo(str(address[0]), int(address[1]), tls_version, subject)
    if isinstance(transport, AddressedStream):
        host, port = transport.peer_address
        return PeerInfo(host, port, tls_version, subject)
    raise TypeError(f"not a stream from a broker network: {type(stream).__name__}")


def plain_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The OS socket under a plaintext TCP stream (for os.sendfile), else None."""
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context for a listener: TLS 1.2 minimum, client certificates verified against
    `cafile` when `client_auth` is "required"."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.cafile:
        context.load_verify_locations(cafile=tls.cafile)
    context.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_NONE
    return context


async def serve_accepted(
    handler: StreamHandler,
    stream: trio.abc.Stream,
    ssl_context: ssl.SSLContext | None,
    handshake_timeout_ms: int,
) -> None:
    """Run `handler` on an accepted stream, first finishing the server's TLS handshake when
    `ssl_context` is given (a failed or slow handshake drops the connection unhandled)."""
    if ssl_context is None:
        await handler(stream)
        return
    tls_stream = trio.SSLStream(stream, ssl_context, server_side=True)
    try:
        with trio.fail_after(handshake_timeout_ms / 1000):
            await tls_stream.do_handshake()
    except (trio.BrokenResourceError, trio.TooSlowError) as exc:
        # A client that cannot complete the handshake (wrong CA, no certificate, a plaintext
        # client on a TLS port) is the client's problem: note it and drop the connection.
        log.info("TLS handshake failed: %s", exc.__cause__ or exc)
        await trio.aclose_forcefully(tls_stream)
        return
    try:
        await handler(tls_stream)
    finally:
        await trio.aclose_forcefully(tls_stream)


async def client_tls(
    stream: trio.abc.Stream, ssl_context: ssl.SSLContext, server_hostname: str
) -> trio.SSLStream[trio.abc.Stream]:
    """`stream` wrapped in TLS with the client's handshake done; closed if it fails."""
    tls_stream = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname)
    try:
        await tls_stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls_stream)
        raise
    return tls_stream


class TcpNetwork:
    """The operating system's TCP stack."""

    def __init__(self, *, tls_handshake_timeout_ms: int = TLS_HANDSHAKE_TIMEOUT_MS) -> None:
        self.tls_handshake_timeout_ms = tls_handshake_timeout_ms

    async def serve_tcp(
        self,
        handler: StreamHandler,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        if port == 0 and len(listeners) > 1:
            # Each address family would get its own ephemeral port; keep one, so that the
            # port we report is the port every listener has.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        bound_port = int(listeners[0].socket.getsockname()[1])

        async def handle(stream: trio.SocketStream) -> None:
            await serve_accepted(handler, stream, ssl_context, self.tls_handshake_timeout_ms)

        async with trio.open_nursery() as nursery:
            task_status.started(bound_port)
            await trio.serve_listeners(
                handle, listeners, handler_nursery=handler_nursery or nursery
            )
        raise AssertionError("serve_listeners returned")  # it only ever raises

    async def connect(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(host, port)
        if ssl_context is None:
            return stream
        return await client_tls(stream, ssl_context, server_hostname or host)
