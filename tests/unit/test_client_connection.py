"""BrokerConnection over trio memory streams, against a hand-driven peer."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tidelog.client.connection import BrokerConnection, backoff_s
from tidelog.client.errors import (
    ClientClosedError,
    IncompatibleBrokerError,
    KafkaConnectionError,
    KafkaProtocolError,
    KafkaTimeoutError,
)
from tidelog.client.protocol.apis import API_BY_KEY, decode_request_header, encode_response_header
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.messages.api_versions import API_VERSIONS
from tidelog.client.protocol.messages.data import METADATA
from tidelog.client.protocol.primitives import Writer
from tidelog.client.protocol.schema import Message

TIMEOUT_S = 5


class Peer:
    """The broker end of the stream, driven step by step by the test."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 20)

    async def next_request(self) -> tuple[int, int, int, Message]:
        """(api key, version, correlation id, body) of the next request."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not NEED_DATA:
                header, reader = decode_request_header(frame)
                body = API_BY_KEY[header.api_key].decode_request(reader, header.api_version)
                return header.api_key, header.api_version, header.correlation_id, body
            data = await self.stream.receive_some()
            assert data, "client closed the connection"
            self.decoder.receive_data(data)

    async def answer(self, api_key: int, version: int, correlation_id: int, body: Message) -> None:
        api = API_BY_KEY[api_key]
        w = Writer()
        encode_response_header(w, api, version, correlation_id)
        api.encode_response(w, body, version)
        payload = w.getvalue()
        await self.stream.send_all(len(payload).to_bytes(4, "big") + payload)


def metadata_response(cluster_id: str) -> Message:
    return {"brokers": [], "cluster_id": cluster_id, "controller_id": 0, "topics": []}


async def open_pair(nursery: trio.Nursery, **kwargs: object) -> tuple[BrokerConnection, Peer]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    settings: dict[str, object] = {
        "node_id": 1,
        "host": "h",
        "port": 1,
        "client_id": "tests",
        "request_timeout_s": 30.0,
        "max_frame_bytes": 1 << 20,
    }
    settings.update(kwargs)
    connection = BrokerConnection(client_stream, **settings)  # type: ignore[arg-type]
    await nursery.start(connection.serve)
    connection.api_versions = {3: (0, 12), 18: (0, 3)}
    return connection, Peer(server_stream)


async def test_negotiation_falls_back_to_the_brokers_api_versions_range(
    nursery: trio.Nursery,
) -> None:
    connection, peer = await open_pair(nursery)
    connection.api_versions = {}

    async def broker() -> None:
        key, version, correlation_id, _ = await peer.next_request()
        assert (key, version) == (18, API_VERSIONS.valid.highest)
        # A broker that knows ApiVersions only up to v2 answers in the v0 layout.
        await peer.answer(18, 0, correlation_id, {
            "error_code": ErrorCode.UNSUPPORTED_VERSION,
            "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 2}],
        })  # fmt: skip
        key, version, correlation_id, _ = await peer.next_request()
        assert (key, version) == (18, 2)
        await peer.answer(18, 2, correlation_id, {
            "error_code": 0,
            "api_keys": [
                {"api_key": 18, "min_version": 0, "max_version": 2},
                {"api_key": 3, "min_version": 1, "max_version": 7},
                {"api_key": 0, "min_version": 3, "max_version": 99},
            ],
        })  # fmt: skip

    nursery.start_soon(broker)
    with trio.fail_after(TIMEOUT_S):
        await connection.negotiate_api_versions()
    assert connection.api_version(3) == 7
    assert connection.api_version(3, max_version=5) == 5
    assert connection.api_version(0) == API_BY_KEY[0].valid.highest
    with pytest.raises(IncompatibleBrokerError):
        connection.api_version(3, max_version=0)
    with pytest.raises(IncompatibleBrokerError):
        connection.api_version(22)  # not offered by the broker


async def test_pipelined_responses_are_matched_by_correlation_id(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery)
    results: dict[int, str] = {}

    async def ask(i: int) -> None:
        response = await connection.request(METADATA.key, {"topics": []})
        results[i] = response["cluster_id"]

    async with trio.open_nursery() as callers:
        for i in range(5):
            callers.start_soon(ask, i)
        with trio.fail_after(TIMEOUT_S):
            received = [await peer.next_request() for _ in range(5)]
        assert connection.in_flight_count == 5
        # Answer newest first; each caller must still get the answer to its own request.
        for key, version, correlation_id, _ in reversed(received):
            await peer.answer(key, version, correlation_id, metadata_response(f"c{correlation_id}"))
    assert sorted(results.values()) == [f"c{c}" for _, _, c, _ in received]
    assert connection.in_flight_count == 0


async def test_in_flight_limit_holds_back_further_requests(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery, max_in_flight=2)
    done = 0

    async def ask() -> None:
        nonlocal done
        await connection.request(METADATA.key, {"topics": []})
        done += 1

    async with trio.open_nursery() as callers:
        for _ in range(3):
            callers.start_soon(ask)
        with trio.fail_after(TIMEOUT_S):
            first = [await peer.next_request() for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert connection.in_flight_count == 2  # the third waits for a slot
        key, version, correlation_id, _ = first[0]
        await peer.answer(key, version, correlation_id, metadata_response("a"))
        with trio.fail_after(TIMEOUT_S):
            third = await peer.next_request()
        for key, version, correlation_id, _ in (first[1], third):
            await peer.answer(key, version, correlation_id, metadata_response("b"))
    assert done == 3


async def test_timeout_closes_the_connection_and_fails_everything_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    connection, _peer = await open_pair(nursery, request_timeout_s=2.0)
    early = await connection.send(METADATA.key, {"topics": []})
    await trio.sleep(1.5)
    late = await connection.send(METADATA.key, {"topics": []})
    started = trio.current_time()
    with pytest.raises(KafkaTimeoutError):
        await early.wait()
    assert trio.current_time() - started == pytest.approx(0.5)
    with pytest.raises(KafkaConnectionError):
        await late.wait()
    assert connection.closed
    with pytest.raises(KafkaConnectionError):
        await connection.send(METADATA.key, {"topics": []})


async def test_peer_closing_fails_requests_in_flight(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery)
    pending = await connection.send(METADATA.key, {"topics": []})
    await peer.stream.aclose()
    with trio.fail_after(TIMEOUT_S), pytest.raises(KafkaConnectionError):
        await pending.wait()
    assert connection.closed


async def test_unknown_correlation_id_is_a_protocol_violation(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery)
    pending = await connection.send(METADATA.key, {"topics": []})
    _, version, correlation_id, _ = await peer.next_request()
    await peer.answer(3, version, correlation_id + 1000, metadata_response("x"))
    with trio.fail_after(TIMEOUT_S), pytest.raises(KafkaConnectionError, match="correlation"):
        await pending.wait()


async def test_oversized_response_frame_closes_the_connection(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery, max_frame_bytes=1024)
    pending = await connection.send(METADATA.key, {"topics": []})
    await peer.stream.send_all((10_000).to_bytes(4, "big"))
    with trio.fail_after(TIMEOUT_S), pytest.raises(KafkaConnectionError, match="bad frame"):
        await pending.wait()


async def test_malformed_response_body_fails_only_that_request(nursery: trio.Nursery) -> None:
    connection, peer = await open_pair(nursery)
    bad = await connection.send(METADATA.key, {"topics": []})
    good = await connection.send(METADATA.key, {"topics": []})
    (_, version, first, _), (_, _, second, _) = [await peer.next_request() for _ in range(2)]
    await peer.stream.send_all((6).to_bytes(4, "big") + first.to_bytes(4, "big") + b"\xff\xff")
    await peer.answer(3, version, second, metadata_response("fine"))
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(KafkaProtocolError):
            await bad.wait()
        assert (await good.wait())["cluster_id"] == "fine"
    assert not connection.closed


async def test_aclose_fails_pending_requests_as_closed(nursery: trio.Nursery) -> None:
    connection, _peer = await open_pair(nursery)
    pending = await connection.send(METADATA.key, {"topics": []})
    with trio.fail_after(TIMEOUT_S):
        await connection.aclose()
        with pytest.raises(ClientClosedError):
            await pending.wait()


def test_backoff_grows_exponentially_to_its_cap() -> None:
    assert backoff_s(1, 100, 1000, 0.0) == pytest.approx(0.1)
    assert backoff_s(3, 100, 1000, 0.0) == pytest.approx(0.4)
    assert backoff_s(10, 100, 1000, 0.0) == pytest.approx(1.0)
    assert backoff_s(2, 100, 1000, -1.0) == pytest.approx(0.16)
    assert backoff_s(2, 100, 1000, 0.99) < 0.24
