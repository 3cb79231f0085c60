"""`MemoryNetwork`: TCP inside one process, with hosts and injectable faults.

Addresses are (host, port) as in TCP; a host is a name ("10.0.0.1", "node-0"), one
namespace for all (there is no per-host loopback). `network.host(name)` is the `Network` of
one machine: it listens on its own name ("", "0.0.0.0" and "::" mean that name too; any
other address is EADDRNOTAVAIL) and its connections come from (name, ephemeral port). The
network itself is the default host, 127.0.0.1, as before hosts existed: its connections
come from 127.0.0.1 and it listens on whatever address it is given (that address is then
the listener's host for faults). Ports are per host; port 0 and client ports come from one
counter from 49152 up, so runs are deterministic. Connecting where nothing listens, or to a
full accept backlog (`accept_backlog`), raises ConnectionRefusedError.

Each direction of a connection is a bounded pipe (`buffer_bytes`; a sender blocks while it
is full) of chunks, each stamped with the trio time it is due at the receiver, delivered in
order. The network runs no tasks and needs no nursery: every wait happens in a caller of
`connect`, `send_all`, `receive_some` or in `serve_tcp`.

Faults. Each fault call, and each random reset, is reported to `on_event` as one line:

- `partition(a, b)` stops both directions between hosts a and b, `one_way=True` only
  a -> b; `heal` and `heal_all` undo it. As TCP retransmits across a partition, bytes on a
  stopped direction of an open connection are held, not dropped (the sender fills its
  buffer, then blocks) and flow in order once it heals; nothing breaks by itself, the
  endpoints' own timeouts decide. A connect needs both directions (SYN, SYN-ACK): it waits
  for a heal and fails with TimeoutError (ETIMEDOUT, an OSError) after `connect_timeout_ms`
  (Linux's SYN retries give up after about 127 s).
- `set_delay(a, b, delay_ms)`: one-way latency of bytes a -> b (and b -> a unless
  `one_way`); `set_default_delay` for links without their own. A chunk is due `delay_ms`
  after it was sent, never before the chunk sent ahead of it; held bytes are delivered as
  soon as their link opens if already due. A connect takes one round trip.
- `reset(a, b)` resets (RST) every connection between a and b: on both ends every pending
  and later `send_all`, `receive_some`, `send_eof` raises BrokenResourceError, and
  undelivered bytes are gone. TCP loses no bytes inside a connection, so loss is modelled
  as resets: `reset_probability` resets a connection instead of delivering a chunk, drawn
  from `rng` at each delivery.
- `accept_jitter_ms`: each connect takes uniform(0, accept_jitter_ms) longer (from `rng`),
  so concurrent connects may complete, and be accepted, in another order than made.
- `pause(host)` / `resume(host)` (SIGSTOP / SIGCONT of its process): nothing is delivered
  to or from the host's connections, its listeners accept nothing and its own connects
  wait (counting towards `connect_timeout_ms`) until it resumes; then what was held flows
  in order. Peers see silence, not resets. A connect to a paused host completes (its
  kernel answers) and waits in the accept backlog.
- `crash(host)` (its process dies): resets every connection of the host, unbinds its
  listeners (the old `serve_tcp` accepts nothing more and waits to be cancelled; a new one
  may bind the same port) and ends a pause. Partitions and delays stay: they belong to the
  network, not to the process.

Closing an end is a FIN: the peer reads what was sent before it, then EOF. A `send_all` to
a closed end raises BrokenResourceError (the RST) while its direction delivers; while that
direction is held, the bytes are discarded.
"""

from __future__ import annotations

import errno
import math
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from tidelog.broker.network import (
    TLS_HANDSHAKE_TIMEOUT_MS,
    AddressedStream,
    StreamHandler,
    client_tls,
    serve_accepted,
)
from tidelog.client.connection import Connector

Address = tuple[str, int]

DEFAULT_HOST = "127.0.0.1"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
LINUX_CONNECT_TIMEOUT_MS = 127_000
"""How long Linux retries a SYN (tcp_syn_retries=6) before ETIMEDOUT."""


class _Pipe:
    """One direction of a connection: chunks in order, each with the trio time it is due
    at the receiver, at most `capacity_bytes` of them; a b"" chunk is the EOF (last)."""

    def __init__(self, source: str, target: str, capacity_bytes: int) -> None:
        self.source = source
        self.target = target
        self.capacity_bytes = capacity_bytes
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.buffered_bytes = 0
        self.eof = False
        self.reader_closed = False
        self.broken = False
        self.waiters = trio.lowlevel.ParkingLot()
        """Both the sender (for room) and the receiver (for bytes) park here."""

    def room_bytes(self) -> int:
        return self.capacity_bytes - self.buffered_bytes

    def push(self, data: bytes, due: float) -> None:
        """Queue `data` (b"": the EOF); discarded once the reader has closed."""
        if self.reader_closed:
            return
        self.chunks.append((due, data))
        self.buffered_bytes += len(data)
        self.waiters.unpark_all()

    def next_due(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None

    def at_eof(self) -> bool:
        return bool(self.chunks) and not self.chunks[0][1]

    def take(self, now: float, max_bytes: int | None) -> bytes:
        """The bytes due by `now` from the head, at most `max_bytes`; b"" at the EOF."""
        limit = self.buffered_bytes if max_bytes is None else max_bytes
        out = bytearray()
        while self.chunks and len(out) < limit:
            due, data = self.chunks[0]
            if due > now or not data:
                break
            wanted = limit - len(out)
            if len(data) > wanted:
                self.chunks[0] = (due, data[wanted:])
                data = data[:wanted]
            else:
                self.chunks.popleft()
            out += data
        self.buffered_bytes -= len(out)
        self.waiters.unpark_all()
        return bytes(out)

    def discard(self) -> None:
        self.chunks.clear()
        self.buffered_bytes = 0
        self.waiters.unpark_all()


@dataclass(eq=False)
class _Connection:
    client: Address
    server: Address
    upstream: _Pipe
    """Client to server."""
    downstream: _Pipe
    open_ends: int = 2

    def hosts(self) -> tuple[str, str]:
        return self.client[0], self.server[0]

    def describe(self) -> str:
        return f"{self.client[0]}:{self.client[1]} -> {self.server[0]}:{self.server[1]}"


class MemoryStream(AddressedStream):
    """One end of a `MemoryNetwork` connection; see the module docstring for its faults."""

    def __init__(
        self,
        network: MemoryNetwork,
        connection: _Connection,
        *,
        server_side: bool,
    ) -> None:
        self._network = network
        self._connection = connection
        if server_side:
            self._outgoing, self._incoming = connection.downstream, connection.upstream
            self.local_address, self.peer_address = connection.server, connection.client
        else:
            self._outgoing, self._incoming = connection.upstream, connection.downstream
            self.local_address, self.peer_address = connection.client, connection.server
        self._closed = False
        self._sending = False
        self._receiving = False

    def _check_usable(self, pipe: _Pipe) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream is closed")
        if pipe.broken:
            raise trio.BrokenResourceError("connection reset")

    @staticmethod
    def _check_not_busy(busy: bool, what: str) -> None:
        if busy:
            raise trio.BusyResourceError(f"another task is {what} on this stream")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_not_busy(self._sending, "sending")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._outgoing
            pending = bytes(data)
            while True:
                self._check_usable(pipe)
                if pipe.eof:
                    raise trio.ClosedResourceError("EOF was sent on this stream")
                if pipe.reader_closed and self._network._delivers(pipe):
                    raise trio.BrokenResourceError("the peer closed the connection")
                if not pending:
                    return
                room = pipe.room_bytes()
                if room > 0:
                    pipe.push(pending[:room], self._network._due(pipe))
                    pending = pending[room:]
                else:
                    await pipe.waiters.park()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_not_busy(self._sending, "sending")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._outgoing
            while not (self._closed or pipe.broken or pipe.eof or pipe.room_bytes() > 0):
                await pipe.waiters.park()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        self._check_not_busy(self._sending, "sending")
        await trio.lowlevel.checkpoint()
        self._check_usable(self._outgoing)
        self._push_eof()

    def _push_eof(self) -> None:
        pipe = self._outgoing
        if not (pipe.eof or pipe.broken):
            pipe.eof = True
            pipe.push(b"", self._network._due(pipe))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._check_not_busy(self._receiving, "receiving")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._incoming
            while True:
                self._check_usable(pipe)
                due = pipe.next_due()
                deadline = math.inf
                if due is not None and self._network._delivers(pipe):
                    now = trio.current_time()
                    if due > now:
                        deadline = due
                    elif pipe.at_eof():
                        return b""
                    elif self._network._random_reset(self._connection):
                        raise trio.BrokenResourceError("connection reset")
                    else:
                        return pipe.take(now, max_bytes)
                with trio.move_on_at(deadline):
                    await pipe.waiters.park()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._push_eof()
            self._incoming.reader_closed = True
            self._incoming.discard()
            self._outgoing.waiters.unpark_all()
            self._network._end_closed(self._connection)
        await trio.lowlevel.checkpoint()


@dataclass(eq=False)
class _Listener:
    address: Address
    backlog: deque[MemoryStream] = field(default_factory=deque)
    waiters: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    bound: bool = True


class MemoryHost:
    """The `Network` of one host of a `MemoryNetwork` (see the module docstring)."""

    def __init__(self, network: MemoryNetwork, name: str, *, any_address: bool = False) -> None:
        self.network = network
        self.name = name
        self._any_address = any_address

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
        if host in WILDCARD_HOSTS:
            host = self.name
        elif host != self.name and not self._any_address:
            raise OSError(errno.EADDRNOTAVAIL, f"{host} is not an address of host {self.name}")
        await self.network._serve(handler, (host, port), ssl_context, handler_nursery, task_status)

    async def connect(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> trio.abc.Stream:
        """A stream from (this host, an ephemeral port) to (host, port), TLS when
        `ssl_context` is given; ConnectionRefusedError or TimeoutError (OSErrors) if not."""
        stream = await self.network._connect(self.name, (host, port))
        if ssl_context is None:
            return stream
        return await client_tls(stream, ssl_context, server_hostname or host)

    def connector(
        self, ssl_context: ssl.SSLContext | None = None, *, timeout_ms: int = 10_000
    ) -> Connector:
        """A client `Connector` dialling from this host, like `tcp_connector`: bounded by
        `timeout_ms` (trio.TooSlowError), TLS when `ssl_context` is given."""

        async def connect(host: str, port: int) -> trio.abc.Stream:
            with trio.fail_after(timeout_ms / 1000):
                return await self.connect(host, port, ssl_context=ssl_context)

        return connect


class MemoryNetwork:
    """In-process TCP look-alike with hosts and faults; see the module docstring. Used as
    a `Network` itself, it is the default host (127.0.0.1) that may listen anywhere.

    `rng` (default: seeded with 0, never the global one) draws `accept_jitter_ms` and
    `reset_probability`; both may be changed at any time. `on_event` receives every fault."""

    EPHEMERAL_PORT_FIRST = 49152

    def __init__(
        self,
        *,
        accept_backlog: int = 128,
        tls_handshake_timeout_ms: int = TLS_HANDSHAKE_TIMEOUT_MS,
        buffer_bytes: int = 256 * 1024,
        connect_timeout_ms: int = LINUX_CONNECT_TIMEOUT_MS,
        accept_jitter_ms: float = 0.0,
        reset_probability: float = 0.0,
        rng: random.Random | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.accept_backlog = accept_backlog
        self.tls_handshake_timeout_ms = tls_handshake_timeout_ms
        self.buffer_bytes = buffer_bytes
        self.connect_timeout_ms = connect_timeout_ms
        self.accept_jitter_ms = accept_jitter_ms
        self.reset_probability = reset_probability
        self.rng = rng if rng is not None else random.Random(0)
        self.on_event = on_event
        self._default_host = MemoryHost(self, DEFAULT_HOST, any_address=True)
        self._listeners: dict[Address, _Listener] = {}
        self._connections: dict[_Connection, None] = {}
        """Open connections in the order they were made (deterministic iteration)."""
        self._used_ports: set[Address] = set()
        self._next_port = self.EPHEMERAL_PORT_FIRST
        self._stopped_links: set[tuple[str, str]] = set()
        self._paused_hosts: set[str] = set()
        self._link_delays_s: dict[tuple[str, str], float] = {}
        self._default_delay_s = 0.0
        self._connect_waiters = trio.lowlevel.ParkingLot()

    def host(self, name: str) -> MemoryHost:
        """The `Network` of host `name`: it listens on `name` and connects from it."""
        return MemoryHost(self, name)

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
        await self._default_host.serve_tcp(
            handler,
            host,
            port,
            ssl_context=ssl_context,
            handler_nursery=handler_nursery,
            task_status=task_status,
        )

    async def connect(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> trio.abc.Stream:
        return await self._default_host.connect(
            host, port, ssl_context=ssl_context, server_hostname=server_hostname
        )

    def connector(
        self, ssl_context: ssl.SSLContext | None = None, *, timeout_ms: int = 10_000
    ) -> Connector:
        return self._default_host.connector(ssl_context, timeout_ms=timeout_ms)

    # Faults: see the module docstring for their semantics.

    def partition(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Stop bytes and connects from a to b, and from b to a unless `one_way`."""
        self._stopped_links.update(_links(a, b, one_way))
        self._changed(f"partition {_arrow(a, b, one_way)}")

    def heal(self, a: str, b: str, *, one_way: bool = False) -> None:
        """Undo `partition(a, b, one_way=one_way)`."""
        self._stopped_links.difference_update(_links(a, b, one_way))
        self._changed(f"heal {_arrow(a, b, one_way)}")

    def heal_all(self) -> None:
        """Undo every partition."""
        self._stopped_links.clear()
        self._changed("heal all")

    def set_delay(self, a: str, b: str, delay_ms: float, *, one_way: bool = False) -> None:
        """One-way latency of bytes from a to b (and from b to a unless `one_way`)."""
        for link in _links(a, b, one_way):
            self._link_delays_s[link] = delay_ms / 1000
        self._changed(f"delay {_arrow(a, b, one_way)} {delay_ms:g}ms")

    def set_default_delay(self, delay_ms: float) -> None:
        """One-way latency of every link without a `set_delay` of its own."""
        self._default_delay_s = delay_ms / 1000
        self._changed(f"delay default {delay_ms:g}ms")

    def reset(self, a: str, b: str) -> int:
        """Reset every connection between hosts a and b; returns how many there were."""
        between = [c for c in self._connections if sorted(c.hosts()) == sorted((a, b))]
        for connection in between:
            self._reset(connection)
        self._changed(f"reset {a} <-> {b} connections={len(between)}")
        return len(between)

    def pause(self, host: str) -> None:
        """Freeze `host`: its connections and listeners are silent until `resume(host)`."""
        self._paused_hosts.add(host)
        self._changed(f"pause {host}")

    def resume(self, host: str) -> None:
        """End `pause(host)`: what was held is delivered in order."""
        self._paused_hosts.discard(host)
        self._changed(f"resume {host}")

    def crash(self, host: str) -> None:
        """The process on `host` died: its connections reset, its listeners unbound."""
        connections = [c for c in self._connections if host in c.hosts()]
        for connection in connections:
            self._reset(connection)
        listeners = [
            listener for listener in self._listeners.values() if listener.address[0] == host
        ]
        for listener in listeners:
            self._unbind(listener)
        self._paused_hosts.discard(host)
        self._changed(f"crash {host} connections={len(connections)} listeners={len(listeners)}")

    # Internals, used by MemoryHost and MemoryStream.

    def _changed(self, event: str) -> None:
        """Report a fault and wake every waiter to re-check its condition."""
        if self.on_event is not None:
            self.on_event(event)
        self._connect_waiters.unpark_all()
        for listener in self._listeners.values():
            listener.waiters.unpark_all()
        for connection in self._connections:
            connection.upstream.waiters.unpark_all()
            connection.downstream.waiters.unpark_all()

    def _delivers(self, pipe: _Pipe) -> bool:
        return (
            (pipe.source, pipe.target) not in self._stopped_links
            and pipe.source not in self._paused_hosts
            and pipe.target not in self._paused_hosts
        )

    def _delay_s(self, source: str, target: str) -> float:
        return self._link_delays_s.get((source, target), self._default_delay_s)

    def _due(self, pipe: _Pipe) -> float:
        return trio.current_time() + self._delay_s(pipe.source, pipe.target)

    def _random_reset(self, connection: _Connection) -> bool:
        if self.reset_probability <= 0 or self.rng.random() >= self.reset_probability:
            return False
        self._reset(connection)
        self._changed(f"reset {connection.describe()}: random")
        return True

    def _reset(self, connection: _Connection) -> None:
        for pipe in (connection.upstream, connection.downstream):
            pipe.broken = True
            pipe.discard()
        self._forget(connection)

    def _end_closed(self, connection: _Connection) -> None:
        connection.open_ends -= 1
        if connection.open_ends == 0:
            self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        if connection in self._connections:
            del self._connections[connection]
            self._used_ports.discard(connection.client)

    def _allocate_port(self, host: str) -> int:
        for _ in range(65536 - self.EPHEMERAL_PORT_FIRST):
            port = self._next_port
            self._next_port = port + 1 if port < 65535 else self.EPHEMERAL_PORT_FIRST
            if (host, port) not in self._used_ports:
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"no free port on memory host {host}")

    async def _serve(
        self,
        handler: StreamHandler,
        address: Address,
        ssl_context: ssl.SSLContext | None,
        handler_nursery: trio.Nursery | None,
        task_status: trio.TaskStatus[int],
    ) -> NoReturn:
        await trio.lowlevel.checkpoint()
        host, port = address
        if port == 0:
            port = self._allocate_port(host)
        if (host, port) in self._used_ports:
            raise OSError(errno.EADDRINUSE, f"memory address {host}:{port} is in use")
        listener = self._listeners[host, port] = _Listener((host, port))
        self._used_ports.add(listener.address)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(port)
                while True:
                    stream = await self._accept(listener)
                    (handler_nursery or nursery).start_soon(
                        self._run_handler, handler, stream, ssl_context
                    )
        finally:
            if listener.bound:
                self._unbind(listener)

    async def _accept(self, listener: _Listener) -> MemoryStream:
        """The next connection of the backlog, once the listener's host runs; never after
        the listener was unbound."""
        while not (
            listener.bound and listener.backlog and listener.address[0] not in self._paused_hosts
        ):
            await listener.waiters.park()
        return listener.backlog.popleft()

    def _unbind(self, listener: _Listener) -> None:
        """Free the listener's address; connections not yet accepted are reset."""
        listener.bound = False
        del self._listeners[listener.address]
        self._used_ports.discard(listener.address)
        for stream in listener.backlog:
            self._reset(stream._connection)
        listener.backlog.clear()
        listener.waiters.unpark_all()

    async def _run_handler(
        self, handler: StreamHandler, stream: MemoryStream, ssl_context: ssl.SSLContext | None
    ) -> None:
        try:
            await serve_accepted(handler, stream, ssl_context, self.tls_handshake_timeout_ms)
        finally:
            await trio.aclose_forcefully(stream)

    async def _connect(self, source: str, server: Address) -> MemoryStream:
        await trio.lowlevel.checkpoint()
        client = (source, self._allocate_port(source))
        self._used_ports.add(client)
        try:
            await self._wait_for_route(source, server)
            setup_s = self._delay_s(source, server[0]) + self._delay_s(server[0], source)
            if self.accept_jitter_ms > 0:
                setup_s += self.rng.uniform(0, self.accept_jitter_ms) / 1000
            if setup_s > 0:
                await trio.sleep(setup_s)
            listener = self._listeners.get(server)
            if listener is None:
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"nothing listens on {server[0]}:{server[1]}"
                )
            if len(listener.backlog) >= self.accept_backlog:
                raise ConnectionRefusedError(
                    errno.ECONNREFUSED, f"{server[0]}:{server[1]} is not accepting connections"
                )
        except BaseException:
            self._used_ports.discard(client)
            raise
        connection = _Connection(
            client,
            server,
            upstream=_Pipe(source, server[0], self.buffer_bytes),
            downstream=_Pipe(server[0], source, self.buffer_bytes),
        )
        self._connections[connection] = None
        listener.backlog.append(MemoryStream(self, connection, server_side=True))
        listener.waiters.unpark_all()
        return MemoryStream(self, connection, server_side=False)

    async def _wait_for_route(self, source: str, server: Address) -> None:
        """Until SYN and SYN-ACK can pass between `source` and the server's host and
        `source` runs; TimeoutError (ETIMEDOUT) after `connect_timeout_ms`."""
        target = server[0]
        deadline = trio.current_time() + self.connect_timeout_ms / 1000
        while (
            (source, target) in self._stopped_links
            or (target, source) in self._stopped_links
            or source in self._paused_hosts
        ):
            if trio.current_time() >= deadline:
                raise TimeoutError(
                    errno.ETIMEDOUT, f"connecting {source} to {server[0]}:{server[1]} timed out"
                )
            with trio.move_on_at(deadline):
                await self._connect_waiters.park()


def _links(a: str, b: str, one_way: bool) -> list[tuple[str, str]]:
    return [(a, b)] if one_way else [(a, b), (b, a)]


def _arrow(a: str, b: str, one_way: bool) -> str:
    return f"{a} -> {b}" if one_way else f"{a} <-> {b}"
