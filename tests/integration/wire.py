"""A minimal Kafka wire client for broker tests: raw frames, requests, responses.

It uses the protocol codec directly so tests can also send what no real client would
(truncated frames, unknown keys, hostile lengths) and see exactly what comes back.
"""

from __future__ import annotations

import itertools
import ssl
from typing import Any

import trio

from tidelog.broker.network import Network
from tidelog.client.protocol.apis import API_BY_KEY, decode_response, encode_request
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.schema import Message

TIMEOUT_S = 10


class WireClient:
    """One connection; every wait is bounded by `TIMEOUT_S`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._decoder = FrameDecoder(256 * 1024 * 1024)
        self._correlation_ids = itertools.count(1)
        self.client_id = "tidelog-tests"

    @classmethod
    async def connect(
        cls,
        network: Network,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WireClient:
        with trio.fail_after(TIMEOUT_S):
            return cls(await network.connect(host, port, ssl_context=ssl_context))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def __aenter__(self) -> WireClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def encode(self, api_key: int, version: int, body: Message, correlation_id: int) -> bytes:
        return encode_request(api_key, version, correlation_id, self.client_id, body)

    async def send_raw(self, data: bytes) -> None:
        with trio.fail_after(TIMEOUT_S):
            await self.stream.send_all(data)

    async def send(self, api_key: int, version: int, body: Message | None = None) -> int:
        """Send one request; return its correlation id."""
        correlation_id = next(self._correlation_ids)
        await self.send_raw(self.encode(api_key, version, body or {}, correlation_id))
        return correlation_id

    async def read_frame(self) -> bytes | None:
        """The next response frame, or None when the broker closed the connection."""
        with trio.fail_after(TIMEOUT_S):
            while True:
                frame = self._decoder.next_frame()
                if frame is not NEED_DATA:
                    return frame
                try:
                    data = await self.stream.receive_some()
                except trio.BrokenResourceError:
                    return None
                if not data:
                    return None
                self._decoder.receive_data(data)

    async def receive(self, api_key: int, version: int) -> tuple[int, Message]:
        frame = await self.read_frame()
        assert frame is not None, "the broker closed the connection"
        return decode_response(API_BY_KEY[api_key], version, frame)

    async def request(self, api_key: int, version: int, body: Message | None = None) -> Message:
        correlation_id = await self.send(api_key, version, body)
        got, response = await self.receive(api_key, version)
        assert got == correlation_id
        return response

    async def assert_closed_by_broker(self) -> None:
        """The broker closes the connection without sending anything more."""
        frame = await self.read_frame()
        assert frame is None, f"expected the connection to close, got a {len(frame)}-byte frame"


def api_ranges(response: Message) -> dict[int, tuple[int, int]]:
    return {k["api_key"]: (k["min_version"], k["max_version"]) for k in response["api_keys"]}


def metadata_request(*topics: str, allow_auto_create: bool = True) -> dict[str, Any]:
    return {
        "topics": [{"name": name} for name in topics],
        "allow_auto_topic_creation": allow_auto_create,
    }


def produce_request(
    topic: str, records: bytes | None, *, partition: int = 0, acks: int = 1
) -> Message:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 5000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


def fetch_request(
    topic: str,
    offset: int,
    *,
    partition: int = 0,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
    partition_max_bytes: int = 1 << 20,
) -> Message:
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": partition,
                        "current_leader_epoch": -1,
                        "fetch_offset": offset,
                        "log_start_offset": -1,
                        "partition_max_bytes": partition_max_bytes,
                    }
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }
