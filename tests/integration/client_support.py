"""Helpers for the client's integration tests.

`start_target` starts what the client talks to over TCP on 127.0.0.1, once per kind:
"tidelog", the real in-process broker, and "scripted", the scripted peer of the client's
unit tests, which stores batches byte for byte.
`DroppingConnector` opens real TCP connections and can cut them at chosen moments, to check
what the client does when a connection dies with requests in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from tests.integration.conftest import StartBroker, local_config
from tests.unit.client_fake_broker import FakeBroker


@dataclass
class Target:
    bootstrap: str
    scripted: FakeBroker | None = None
    """The scripted peer, whose stored batches a test can inspect (None for tidelog)."""


StartTarget = Callable[..., Awaitable[Target]]


@pytest.fixture(params=["tidelog", "scripted"])
async def start_target(
    request: pytest.FixtureRequest,
    start_broker: StartBroker,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> StartTarget:
    """`await start_target(num_partitions=n)`: a target whose auto-created topics have n
    partitions."""
    started = 0

    async def start(num_partitions: int = 1) -> Target:
        nonlocal started
        started += 1
        if request.param == "tidelog":
            config = local_config(tmp_path / f"data-{started}", num_partitions=num_partitions)
            return Target((await start_broker(config)).bootstrap)
        fake = FakeBroker(topics={}, auto_create_partitions=num_partitions)
        await nursery.start(fake.serve)
        await nursery.start(fake.serve_tcp)
        return Target(f"{fake.host}:{fake.port}", fake)

    return start


class _DroppableStream(trio.abc.Stream):
    """A TCP stream that the connector can cut when a response arrives."""

    def __init__(self, inner: trio.abc.Stream, connector: DroppingConnector) -> None:
        self.inner = inner
        self.connector = connector
        self.produce_requests_sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # The client writes one whole request frame per send_all.
        if len(data) >= 6 and int.from_bytes(bytes(data[4:6]), "big") == 0:
            self.produce_requests_sent += 1
            self.connector.produce_requests_sent += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data and self.produce_requests_sent and self.connector.take_drop():
            # The broker has answered (so it appended): lose the answer and the connection.
            await trio.aclose_forcefully(self.inner)
            raise trio.BrokenResourceError("connection dropped by the test")
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class DroppingConnector:
    """Connects over TCP; cuts a connection when a response arrives after the
    `drop_after_produce_requests[i]`-th Produce request (counted over all connections)."""

    def __init__(self, drop_after_produce_requests: list[int]) -> None:
        self.triggers = sorted(drop_after_produce_requests)
        self.produce_requests_sent = 0
        self.drops = 0
        self.connections = 0

    def take_drop(self) -> bool:
        if self.triggers and self.produce_requests_sent >= self.triggers[0]:
            self.triggers.pop(0)
            self.drops += 1
            return True
        return False

    async def __call__(self, host: str, port: int) -> trio.abc.Stream:
        self.connections += 1
        return _DroppableStream(await trio.open_tcp_stream(host, port), self)
