"""The connection driver over memory streams: ordering, concurrency, backpressure, errors."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing

from tests.integration.wire import WireClient, api_ranges
from tidelog.broker.connection import Answer, Connection, Dispatch, Reject, parse_request
from tidelog.broker.handlers import ROUTES
from tidelog.broker.network import PeerInfo
from tidelog.broker.router import CloseConnection, RequestContext, Router, route
from tidelog.client.protocol.apis import API_BY_KEY, decode_response, encode_request
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

API_VERSIONS, METADATA = 18, 3
Handler = Callable[[RequestContext, Message], Awaitable[Message | None]]


async def versions_ok(ctx: RequestContext, request: Message) -> Message:
    return {"error_code": 0, "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 3}]}


def make_router(versions: Handler = versions_ok, metadata: Handler | None = None) -> Router:
    async def metadata_empty(ctx: RequestContext, request: Message) -> Message:
        return {"brokers": [], "topics": []}

    return Router(
        [route(API_VERSIONS, "0-3", versions), route(METADATA, "0-12", metadata or metadata_empty)]
    )


@asynccontextmanager
async def serving(
    router: Router, *, max_inflight: int = 10, idle_timeout_ms: int = 60_000
) -> AsyncIterator[tuple[WireClient, Connection]]:
    client_end, server_end = trio.testing.memory_stream_pair()
    connection = Connection(
        server_end,
        connection_number=0,
        listener_name="PLAINTEXT",
        local=("127.0.0.1", 9092),
        peer=PeerInfo("127.0.0.1", 50000),
        router=router,
        broker=None,  # type: ignore[arg-type]  # these handlers do not use it
        max_frame_bytes=1024 * 1024,
        max_inflight=max_inflight,
        idle_timeout_ms=idle_timeout_ms,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve)
        client = WireClient(client_end)
        yield client, connection
        nursery.cancel_scope.cancel()


async def test_responses_keep_request_order_while_handlers_run_concurrently() -> None:
    second_ran = trio.Event()

    async def versions(ctx: RequestContext, request: Message) -> Message:
        second_ran.set()
        return await versions_ok(ctx, request)

    async def metadata(ctx: RequestContext, request: Message) -> Message:
        # Finishes only after the later request's handler ran: a serial broker deadlocks.
        await second_ran.wait()
        return {"brokers": [], "topics": []}

    async with serving(make_router(versions, metadata)) as (client, _):
        first = await client.send(METADATA, 1, {"topics": None})
        second = await client.send(API_VERSIONS, 0)
        assert (await client.receive(METADATA, 1))[0] == first
        assert (await client.receive(API_VERSIONS, 0))[0] == second


async def test_backpressure_stops_reading_at_the_inflight_bound() -> None:
    release = trio.Event()
    started = 0

    async def metadata(ctx: RequestContext, request: Message) -> Message:
        nonlocal started
        started += 1
        await release.wait()
        return {"brokers": [], "topics": []}

    async with serving(make_router(metadata=metadata), max_inflight=3) as (client, conn):
        ids = [await client.send(METADATA, 1, {"topics": None}) for _ in range(10)]
        await trio.testing.wait_all_tasks_blocked()
        assert started == 3
        assert conn.inflight == 3
        release.set()
        got = [(await client.receive(METADATA, 1))[0] for _ in ids]
        assert got == ids
        assert started == 10


async def test_a_handler_bug_answers_unknown_server_error_when_the_schema_allows() -> None:
    async def broken(ctx: RequestContext, request: Message) -> Message:
        raise RuntimeError("bug")

    async with serving(make_router(versions=broken)) as (client, _):
        response = await client.request(API_VERSIONS, 1)
        assert response["error_code"] == ErrorCode.UNKNOWN_SERVER_ERROR
        # The connection stays usable.
        assert (await client.request(METADATA, 1, {"topics": None}))["topics"] == []


async def test_a_handler_bug_without_an_error_field_closes_after_earlier_responses() -> None:
    async def broken(ctx: RequestContext, request: Message) -> Message:
        raise RuntimeError("bug")

    async with serving(make_router(metadata=broken)) as (client, _):
        first = await client.send(API_VERSIONS, 0)
        await client.send(METADATA, 1, {"topics": None})
        assert (await client.receive(API_VERSIONS, 0))[0] == first
        await client.assert_closed_by_broker()


async def test_a_handler_returning_none_sends_nothing_and_keeps_order() -> None:
    async def silent(ctx: RequestContext, request: Message) -> None:
        return None

    async with serving(make_router(metadata=silent)) as (client, _):
        await client.send(METADATA, 1, {"topics": None})
        second = await client.send(API_VERSIONS, 2)
        assert (await client.receive(API_VERSIONS, 2))[0] == second


async def test_stop_reading_answers_what_was_read_then_closes() -> None:
    release = trio.Event()

    async def metadata(ctx: RequestContext, request: Message) -> Message:
        await release.wait()
        return {"brokers": [], "topics": []}

    async with serving(make_router(metadata=metadata)) as (client, conn):
        first = await client.send(METADATA, 1, {"topics": None})
        await trio.testing.wait_all_tasks_blocked()
        conn.stop_reading()
        await client.send(API_VERSIONS, 0)  # arrives after reading stopped: never answered
        release.set()
        assert (await client.receive(METADATA, 1))[0] == first
        await client.assert_closed_by_broker()


async def test_idle_connections_are_closed(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(make_router(), idle_timeout_ms=5_000) as (client, _):
        await client.request(API_VERSIONS, 0)
        start = trio.current_time()
        await client.assert_closed_by_broker()
        assert trio.current_time() - start >= 5


# --- parse_request: the pure decisions ------------------------------------------------------


def frame_body(api_key: int, version: int, body: Message, correlation_id: int = 7) -> bytes:
    return encode_request(api_key, version, correlation_id, "t", body)[4:]


def test_unknown_api_key_is_rejected() -> None:
    header = struct.pack(">hhih", 1000, 0, 7, -1)
    assert isinstance(parse_request(header, Router(ROUTES)), Reject)


def test_unrouted_known_api_is_rejected() -> None:
    # An API with a schema but no route is neither advertised nor answered.
    router = Router(ROUTES)
    api = next(api for key, api in sorted(API_BY_KEY.items()) if key not in router)
    header = struct.pack(">hhih", api.key, api.valid.lowest, 7, -1)
    assert isinstance(parse_request(header, router), Reject)


def test_unsupported_api_versions_version_gets_error_35_in_v0_layout() -> None:
    # A v127 request: the header is readable, the body is not (and is not parsed).
    frame = struct.pack(">hhih", 18, 127, 42, -1) + b"\xff\xff garbage"
    outcome = parse_request(frame, Router(ROUTES))
    assert isinstance(outcome, Answer)
    data = b"".join(c for c in outcome.chunks if isinstance(c, bytes))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    correlation_id, body = decode_response(API_BY_KEY[18], 0, data[4:])
    assert correlation_id == 42
    assert body["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    assert api_ranges(body) == {18: (0, 3)}


def test_unsupported_version_of_other_apis_is_rejected() -> None:
    assert isinstance(parse_request(frame_body(3, 13, {"topics": None}), Router(ROUTES)), Reject)


def test_hostile_array_length_is_rejected_without_allocating() -> None:
    header = frame_body(3, 1, {"topics": []})[:-4]
    frame = header + struct.pack(">i", 2**31 - 1)
    assert isinstance(parse_request(frame, Router(ROUTES)), Reject)


def test_valid_request_dispatches() -> None:
    body = {"topics": [{"name": "a"}], "allow_auto_topic_creation": False}
    outcome = parse_request(frame_body(3, 4, body), Router(ROUTES))
    assert isinstance(outcome, Dispatch)
    assert outcome.header.correlation_id == 7
    assert outcome.request["topics"][0]["name"] == "a"
    assert outcome.request["allow_auto_topic_creation"] is False


async def test_close_connection_from_a_handler_sends_earlier_responses_first() -> None:
    async def dropping(ctx: RequestContext, request: Message) -> None:
        raise CloseConnection("acks=0 produce failed")

    async with serving(make_router(metadata=dropping)) as (client, _):
        first = await client.send(API_VERSIONS, 1)
        await client.send(METADATA, 1, {"topics": None})
        await client.send(API_VERSIONS, 1)  # after the close: never answered
        assert (await client.receive(API_VERSIONS, 1))[0] == first
        await client.assert_closed_by_broker()


async def test_large_and_small_responses_interleave_intact() -> None:
    big_name = "t" * 30_000

    async def metadata(ctx: RequestContext, request: Message) -> Message:
        names = [t["name"] for t in request["topics"]]
        return {"brokers": [], "topics": [
            {"error_code": 0, "name": name, "partitions": []} for name in names
        ] * (20 if names and names[0] == big_name else 1)}  # fmt: skip

    async with serving(make_router(metadata=metadata)) as (client, _):
        sent = []
        for i in range(30):
            name = big_name if i % 3 == 0 else f"small-{i}"
            sent.append((await client.send(METADATA, 1, {"topics": [{"name": name}]}), name))
        for correlation_id, name in sent:
            got, response = await client.receive(METADATA, 1)
            assert got == correlation_id
            assert {t["name"] for t in response["topics"]} == {name}
            assert len(response["topics"]) == (20 if name == big_name else 1)
