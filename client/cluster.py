"""Connections and metadata shared by one producer, consumer or admin client.

`Cluster.run` is a service: start it with `await nursery.start(cluster.run)`; every
connection's reader task then runs inside it, and cancelling it closes them all.

Connections: one per broker (`connection(node_id)`), made on first use, reused while
healthy, re-made after a failure no sooner than the reconnect backoff allows. Before the
first metadata arrives the bootstrap servers are reached under negative node ids (-1, -2,
...); once real broker ids are known those bootstrap connections are closed.

Metadata: refreshed when a caller asks (`request_update`, after errors that mean it is
stale), when a topic of interest is added, and every `metadata_max_age_ms` regardless;
never more often than `retry_backoff_ms`. Only topics of interest are requested (all topics
with `all_topics=True`), so a producer's metadata stays small.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack

import trio

from tidelog.client.broadcast import Broadcast
from tidelog.client.config import CommonConfig
from tidelog.client.connection import BrokerConnection, Connector, backoff_s, tcp_connector
from tidelog.client.errors import (
    ClientClosedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    error_for_code,
    raise_for_code,
)
from tidelog.client.metadata import ClusterMetadata, TopicInfo
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.data import METADATA
from tidelog.client.protocol.primitives import ZERO_UUID
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)

METADATA_MAX_VERSION = 12
"""v13 only adds a top-level error code; 12 is what we need (leader epochs, topic ids)."""

# Topic errors that waiting will not cure.
_FATAL_TOPIC_ERRORS = frozenset(
    {
        ErrorCode.INVALID_TOPIC_EXCEPTION,
        ErrorCode.TOPIC_AUTHORIZATION_FAILED,
        ErrorCode.INVALID_REQUEST,
    }
)


async def enter_owned_nursery(
    start: Callable[[trio.Nursery], Awaitable[None]],
) -> tuple[AsyncExitStack, trio.Nursery]:
    """Open a client's nursery in an exit stack and run `start(nursery)` to start its tasks.

    If `start` fails, the nursery is closed (its tasks cancelled) before the error
    propagates. Pair with `exit_owned_nursery`.
    """
    stack = AsyncExitStack()
    await stack.__aenter__()
    try:
        nursery = await stack.enter_async_context(trio.open_nursery())
        await start(nursery)
    except BaseException as exc:
        await stack.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    return stack, nursery


async def exit_owned_nursery(stack: AsyncExitStack, exc: BaseException | None) -> bool:
    """Exit the exit stack holding a client's nursery (already cancelled by the caller).

    `exc` is what the client's `async with` body raised. A nursery wraps it in an
    exception group; when the group holds nothing else, this returns False so that the
    body's exception propagates unchanged. Errors of background tasks propagate as groups.
    Returns True when the nursery absorbed `exc` (a cancellation of its own).
    """
    if exc is None:
        await stack.aclose()
        return False
    try:
        return bool(await stack.__aexit__(type(exc), exc, exc.__traceback__))
    except BaseExceptionGroup as group:
        _, rest = group.split(lambda e: e is exc)
        if rest is not None:
            raise
        return False


class _NodeBackoff:
    __slots__ = ("failures", "next_attempt_at")

    def __init__(self) -> None:
        self.failures = 0
        self.next_attempt_at = float("-inf")


class Cluster:
    """Broker connections and the metadata cache for one client."""

    def __init__(
        self,
        config: CommonConfig,
        *,
        connector: Connector | None = None,
        max_in_flight_per_connection: int = 100,
        allow_auto_topic_creation: bool = True,
        all_topics: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.metadata = ClusterMetadata()
        self.metadata_changed = Broadcast()
        """Notified after every metadata update attempt, successful or not."""
        self.update_listeners: list[Callable[[], None]] = []
        """Called (synchronously) after every metadata update attempt, like
        `metadata_changed`, for owners that wait on a wake-up signal of their own."""
        self._connector = connector or tcp_connector(
            config.build_ssl_context(), config.socket_connection_setup_timeout_ms / 1000
        )
        self._max_in_flight = max_in_flight_per_connection
        self._allow_auto_topic_creation = allow_auto_topic_creation
        self._all_topics = all_topics
        self._rng = rng or random.Random()
        self._topics: set[str] = set()
        self._connections: dict[int, BrokerConnection] = {}
        self._connect_locks: dict[int, trio.Lock] = {}
        self._backoff: dict[int, _NodeBackoff] = {}
        self._nursery: trio.Nursery | None = None
        self._update_requested = True
        self._refresh_wakeup = trio.Event()
        self._last_error: KafkaError | None = None

    # --- service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the connections and refresh metadata until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._refresh_loop()
        finally:
            self._nursery = None
            for connection in self._connections.values():
                connection.close(ClientClosedError("client closed"))

    def _spawn_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise ClientClosedError("the client is not running (use `async with`)")
        return self._nursery

    # --- connections ---------------------------------------------------------------------

    def _address(self, node_id: int) -> tuple[str, int] | None:
        if node_id < 0:
            index = -node_id - 1
            addresses = self.config.bootstrap_addresses
            return addresses[index] if index < len(addresses) else None
        broker = self.metadata.brokers.get(node_id)
        return None if broker is None else (broker.host, broker.port)

    def live_connection(self, node_id: int) -> BrokerConnection | None:
        """The open connection to `node_id`, if there is one; never connects."""
        connection = self._connections.get(node_id)
        return connection if connection is not None and not connection.closed else None

    async def connection(self, node_id: int) -> BrokerConnection:
        """An open, version-negotiated connection to `node_id` (connecting if needed).

        Raises `KafkaConnectionError` when the broker cannot be reached.
        """
        connection = self.live_connection(node_id)
        if connection is not None:
            return connection
        lock = self._connect_locks.setdefault(node_id, trio.Lock())
        async with lock:
            connection = self.live_connection(node_id)
            if connection is not None:
                return connection
            return await self._connect(node_id)

    async def _connect(self, node_id: int) -> BrokerConnection:
        address = self._address(node_id)
        if address is None:
            self.request_update()
            raise KafkaConnectionError(f"broker {node_id} is not in the cluster metadata")
        host, port = address
        backoff = self._backoff.setdefault(node_id, _NodeBackoff())
        await trio.sleep_until(backoff.next_attempt_at)
        try:
            connection = await self._open(node_id, host, port)
        except KafkaError:
            backoff.failures += 1
            backoff.next_attempt_at = trio.current_time() + backoff_s(
                backoff.failures,
                self.config.reconnect_backoff_ms,
                self.config.reconnect_backoff_max_ms,
                self._rng.uniform(-1, 1),
            )
            if node_id >= 0:
                self.request_update()
            raise
        backoff.failures = 0
        backoff.next_attempt_at = float("-inf")
        self._connections[node_id] = connection
        log.debug("connected to broker %d at %s:%d", node_id, host, port)
        return connection

    async def open_dedicated_connection(
        self, node_id: int, host: str, port: int
    ) -> BrokerConnection:
        """A new connection to a broker, not shared with other requests: for requests a
        broker may hold for long (JoinGroup, SyncGroup), which would otherwise hold up
        every later response on their connection (brokers answer in request order). The
        caller closes it; it is closed with the cluster at the latest. Raises
        `KafkaConnectionError` when the broker cannot be reached."""
        return await self._open(node_id, host, port)

    async def _open(self, node_id: int, host: str, port: int) -> BrokerConnection:
        """Connect, start the reader task, negotiate versions."""
        nursery = self._spawn_nursery()
        try:
            stream = await self._connector(host, port)
        except trio.TooSlowError:
            raise KafkaConnectionError(
                f"connecting to broker {node_id} at {host}:{port} timed out"
            ) from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise KafkaConnectionError(
                f"cannot connect to broker {node_id} at {host}:{port}: {exc}"
            ) from exc
        connection = BrokerConnection(
            stream,
            node_id=node_id,
            host=host,
            port=port,
            client_id=self.config.client_id,
            request_timeout_s=self.config.request_timeout_ms / 1000,
            max_frame_bytes=self.config.receive_message_max_bytes,
            max_in_flight=self._max_in_flight,
        )
        await nursery.start(connection.serve)
        try:
            await connection.negotiate_api_versions()
        except BaseException:
            connection.close()
            raise
        return connection

    def candidate_nodes(self) -> list[int]:
        """Nodes to try for a request any broker can answer, best first: open connections
        with the fewest requests in flight, then known brokers, then bootstrap servers."""
        live = sorted(
            (c for c in self._connections.values() if not c.closed and c.node_id >= 0),
            key=lambda c: c.in_flight_count,
        )
        order = [c.node_id for c in live]
        known = [n for n in self.metadata.brokers if n not in order]
        self._rng.shuffle(known)
        order.extend(known)
        if not self.metadata.brokers:
            bootstrap = [-(i + 1) for i in range(len(self.config.bootstrap_addresses))]
            self._rng.shuffle(bootstrap)
            order.extend(bootstrap)
        return order

    async def any_connection(self) -> BrokerConnection:
        """A connection to some broker (see `candidate_nodes`)."""
        last_error: KafkaError | None = None
        for node_id in self.candidate_nodes():
            try:
                return await self.connection(node_id)
            except KafkaError as exc:
                last_error = exc
        raise last_error or KafkaConnectionError("no broker to connect to")

    # --- metadata ------------------------------------------------------------------------

    def add_topics(self, topics: Iterable[str]) -> None:
        """Track these topics' metadata from now on (a refresh follows if any is new)."""
        new = set(topics) - self._topics
        if new:
            self._topics |= new
            self.request_update()

    def set_topics(self, topics: Iterable[str]) -> None:
        """Track exactly these topics."""
        wanted = set(topics)
        if wanted != self._topics:
            grew = bool(wanted - self._topics)
            self._topics = wanted
            if grew:
                self.request_update()

    def track_all_topics(self, enabled: bool) -> None:
        """Request the metadata of every topic (for pattern subscriptions), or only of the
        tracked ones."""
        if enabled != self._all_topics:
            self._all_topics = enabled
            self.request_update()

    def request_update(self) -> None:
        """Ask for a metadata refresh soon (rate-limited by `retry_backoff_ms`)."""
        self._update_requested = True
        self._refresh_wakeup.set()

    async def refresh(self, deadline: float | None = None) -> None:
        """Request a metadata refresh and wait for its outcome (or `deadline`)."""
        version = self.metadata.version
        self.request_update()
        wait_until = float("inf") if deadline is None else deadline
        while self.metadata.version == version:
            if not await self.metadata_changed.wait_until(wait_until):
                raise KafkaTimeoutError("metadata refresh timed out") from self._last_error
            if self.metadata.version == version and self._last_error is not None:
                raise self._last_error

    async def wait_for_topic(self, topic: str, deadline: float) -> TopicInfo:
        """The metadata of `topic` once it has partitions; waits (and refreshes) until
        `deadline`, then raises `KafkaTimeoutError`. Errors that waiting cannot cure (invalid
        name, not authorized) are raised at once."""
        self.add_topics((topic,))
        while True:
            info = self.metadata.topics.get(topic)
            if info is not None and info.partitions:
                return info
            error = self.metadata.topic_errors.get(topic)
            if error is not None and error in _FATAL_TOPIC_ERRORS:
                raise error_for_code(error, f"topic {topic!r}")
            if error is not None:
                self.request_update()
            if not await self.metadata_changed.wait_until(deadline):
                detail = "" if error is None else f" (last error {ErrorCode(error).name})"
                raise KafkaTimeoutError(f"topic {topic!r} not available in time{detail}")

    async def _refresh_loop(self) -> None:
        failures = 0
        last_attempt_at = float("-inf")
        retry_backoff_s = self.config.retry_backoff_ms / 1000
        max_age_s = self.config.metadata_max_age_ms / 1000
        while True:
            due_at = self.metadata.updated_at + max_age_s
            if not self._update_requested and trio.current_time() < due_at:
                self._refresh_wakeup = trio.Event()
                with trio.move_on_at(due_at):
                    await self._refresh_wakeup.wait()
                continue
            await trio.sleep_until(last_attempt_at + retry_backoff_s)
            last_attempt_at = trio.current_time()
            self._update_requested = False
            try:
                await self._update_metadata()
            except KafkaError as exc:
                failures += 1
                self._last_error = exc
                self._update_requested = True
                log.warning("metadata refresh failed (attempt %d): %s", failures, exc)
                self._notify_update()
                await trio.sleep(
                    backoff_s(
                        failures,
                        self.config.retry_backoff_ms,
                        self.config.retry_backoff_max_ms,
                        self._rng.uniform(-1, 1),
                    )
                )
            else:
                failures = 0
                self._last_error = None
                self._notify_update()

    def _notify_update(self) -> None:
        self.metadata_changed.notify()
        for listener in self.update_listeners:
            listener()

    def _metadata_request(self) -> tuple[Message, list[str] | None]:
        """The Metadata request body for the tracked topics, and the topics it asks for."""
        if self._all_topics:
            requested: list[str] | None = None
            topics: list[Message] | None = None
        else:
            requested = sorted(self._topics)
            topics = [{"topic_id": ZERO_UUID, "name": name} for name in requested]
        body = {
            "topics": topics,
            "allow_auto_topic_creation": self._allow_auto_topic_creation,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False,
        }
        return body, requested

    async def _update_metadata(self) -> None:
        connection = await self.any_connection()
        body, requested = self._metadata_request()
        response = await connection.request(METADATA.key, body, max_version=METADATA_MAX_VERSION)
        raise_for_code(response.get("error_code", 0), "Metadata")
        self.metadata.update(response, trio.current_time(), requested)
        if self.metadata.brokers:
            # Real broker ids are known: bootstrap connections are no longer handed out;
            # close them once nothing is in flight on them.
            for node_id, connection in list(self._connections.items()):
                if node_id < 0 and connection.in_flight_count == 0:
                    del self._connections[node_id]
                    connection.close(KafkaConnectionError("bootstrap connection retired"))
