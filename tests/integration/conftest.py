"""Fixtures that run a real broker in-process.

`broker` is one broker on 127.0.0.1, port 0, over real TCP and the real filesystem (a
tmp_path data dir), with default configuration:

    async def test_something(broker: RunningBroker) -> None:
        async with await broker.client() as client:          # tests.integration.wire
            response = await client.request(18, 3, {...})
        broker.broker.image.topic("t")                      # the Broker object itself

`start_broker` starts more (other configs, MemoryNetwork, MemoryFileSystem) in the test's
nursery; each is shut down cleanly when the test ends, and the test fails if that shutdown
does not finish.

`cluster` is three combined broker+controller nodes as real processes
(`cluster_support.running_cluster`), each SIGKILLed by its pid when the test ends; more
broker settings for every node come from a `cluster_settings` mark, and a failed test's
report shows the end of every node's log:

    @pytest.mark.cluster_settings(group_initial_rebalance_delay_ms=0)
    async def test_something(cluster: Cluster) -> None: ...
"""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.cluster_support import Cluster, running_cluster
from tests.integration.wire import WireClient
from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.network import Network, TcpNetwork
from tidelog.broker.router import Router
from tidelog.broker.server import Broker, wall_clock_ms
from tidelog.client.protocol.records import parse_batch_header
from tidelog.storage.filesystem import FileSystem, OsFileSystem

SHUTDOWN_TIMEOUT_S = 10


@dataclass
class RunningBroker:
    broker: Broker
    network: Network
    host: str
    port: int
    stopped: trio.Event
    scope: trio.CancelScope

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def address(self, listener_name: str) -> tuple[str, int]:
        return self.broker.bound_addresses[listener_name]

    async def client(self, ssl_context: ssl.SSLContext | None = None) -> WireClient:
        return await WireClient.connect(self.network, self.host, self.port, ssl_context=ssl_context)

    async def kill(self) -> None:
        """Stop at once, as a killed process does (no shutdown); returns once stopped."""
        self.scope.cancel()
        await self.stopped.wait()

    async def stop(self) -> None:
        """Clean shutdown; returns once `serve` has returned."""
        self.broker.request_shutdown()
        with trio.fail_after(SHUTDOWN_TIMEOUT_S):
            await self.stopped.wait()


StartBroker = Callable[..., Awaitable[RunningBroker]]


def append_as_leader(broker: Broker, topic: str, index: int, batch: bytes) -> None:
    """Append one batch through the partition's leader, as a produce does, without a client."""
    partition = broker.replicas.partition(topic, index)
    assert partition is not None, f"no local replica of {topic}-{index}"
    partition.append_as_leader(batch, parse_batch_header(batch), broker.now_ms())


def local_config(data_dir: Path | str, **overrides: Any) -> BrokerConfig:
    """A broker on 127.0.0.1 port 0 with `data_dir`, plus any BrokerConfig overrides."""
    config = BrokerConfig(
        listeners=(ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),),
        data_dir=str(data_dir),
    )
    return replace(config, **overrides)


@pytest.fixture
async def start_broker(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[StartBroker]:
    running: list[RunningBroker] = []

    async def start(
        config: BrokerConfig | None = None,
        *,
        network: Network | None = None,
        fs: FileSystem | None = None,
        seed: int = 0,
        router: Router | None = None,
    ) -> RunningBroker:
        config = config or local_config(tmp_path / f"data-{len(running)}")
        network = network or TcpNetwork()
        broker = Broker(
            config,
            network=network,
            fs=fs or OsFileSystem(),
            now_ms=wall_clock_ms,
            random=random.Random(seed),
            router=router,
        )
        stopped = trio.Event()
        scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    await broker.serve(task_status=task_status)
            finally:
                stopped.set()

        await nursery.start(serve)
        host, port = broker.bound_addresses[config.listeners[0].name]
        handle = RunningBroker(broker, network, host, port, stopped, scope)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.stopped.is_set():
            await handle.stop()


@pytest.fixture
async def broker(start_broker: StartBroker) -> RunningBroker:
    return await start_broker()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster_settings(**settings): more broker settings for `cluster`'s nodes"
    )


@pytest.fixture
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Cluster]:
    mark = request.node.get_closest_marker("cluster_settings")
    async with running_cluster(tmp_path, nursery, **(mark.kwargs if mark else {})) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test with a `cluster` shows the end of each node's log in its report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    running = getattr(item, "funcargs", {}).get("cluster")
    running = getattr(running, "fixture_value", running)  # pytest-trio's holder of the value
    if report.when == "call" and report.failed and isinstance(running, Cluster):
        report.sections.append(("cluster logs", running.log_tails()))
