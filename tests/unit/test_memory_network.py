"""MemoryNetwork hosts and faults, observed on trio's MockClock (autojump): partitions, delay,
resets, pauses, crashes, connection reordering, backpressure and deterministic traces."""

from __future__ import annotations

import errno
import math
import random
import ssl
from dataclasses import dataclass

import pytest
import trio
import trio.testing
import trustme

from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.network import Network, stream_peer

A, B = "10.0.0.1", "10.0.0.2"
QUIET_S = 60.0
"""Virtual time a test waits to see that nothing arrives."""


@dataclass
class Server:
    port: int
    accepted: trio.MemoryReceiveChannel[trio.abc.Stream]

    async def next(self) -> trio.abc.Stream:
        return await self.accepted.receive()


async def serve(nursery: trio.Nursery, network: Network, host: str, port: int = 0) -> Server:
    """A listener whose handler hands each accepted stream to the test and keeps it open."""
    send, receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def handler(stream: trio.abc.Stream) -> None:
        send.send_nowait(stream)
        await trio.sleep_forever()

    bound: int = await nursery.start(network.serve_tcp, handler, host, port)
    return Server(bound, receive)


async def pair(
    network: MemoryNetwork, server: Server, client_host: str = A, server_host: str = B
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    client = await network.host(client_host).connect(server_host, server.port)
    return client, await server.next()


async def nothing_arrives(stream: trio.abc.Stream) -> bool:
    with trio.move_on_after(QUIET_S):
        await stream.receive_some()
        return False
    return True


async def test_a_host_listens_on_its_name_and_connects_from_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    server = await serve(nursery, network.host(B), "0.0.0.0", 9092)
    client = await network.host(A).connect(B, 9092)
    accepted = await server.next()
    peer = stream_peer(accepted)
    assert (peer.host, peer.tls_version) == (A, None)
    assert peer.port >= MemoryNetwork.EPHEMERAL_PORT_FIRST
    assert stream_peer(client).host == B and stream_peer(client).port == 9092
    await client.send_all(b"hello")
    assert await accepted.receive_some() == b"hello"
    # A host binds only its own addresses; the plain network is 127.0.0.1 as a client.
    with pytest.raises(OSError) as info:
        await serve(nursery, network.host(A), B, 0)
    assert info.value.errno == errno.EADDRNOTAVAIL
    await network.connect(B, 9092)
    assert stream_peer(await server.next()).host == "127.0.0.1"


async def test_connector_dials_from_its_host_with_tls(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("broker-1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    network = MemoryNetwork()
    peers = []

    async def handler(stream: trio.abc.Stream) -> None:
        peers.append(stream_peer(stream))
        await stream.send_all(await stream.receive_some())

    port = await nursery.start(
        lambda task_status: network.host("broker-1").serve_tcp(
            handler, "broker-1", 0, ssl_context=server_context, task_status=task_status
        )
    )
    connect = network.host("client-1").connector(client_context)
    stream = await connect("broker-1", port)
    await stream.send_all(b"secret")
    assert await stream.receive_some() == b"secret"
    assert peers[0].host == "client-1" and peers[0].tls_version in ("TLSv1.2", "TLSv1.3")


async def test_symmetric_partition_stalls_connections_and_connects_until_healed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    network = MemoryNetwork(connect_timeout_ms=30_000, on_event=events.append)
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)

    network.partition(A, B)
    await client.send_all(b"held")
    await accepted.send_all(b"held too")
    assert await nothing_arrives(accepted) and await nothing_arrives(client)
    started = trio.current_time()
    with pytest.raises(TimeoutError) as info:
        await network.host(B).connect(A, 1)  # not even a refusal crosses a partition
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - started == pytest.approx(30.0, abs=1e-9)
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await network.host(A).connector(timeout_ms=2_000)(B, server.port)
    assert trio.current_time() - started == pytest.approx(2.0, abs=1e-9)

    connected: list[float] = []

    async def connect_during_partition() -> None:
        await network.host(A).connect(B, server.port)
        connected.append(trio.current_time())

    nursery.start_soon(connect_during_partition)
    await trio.sleep(5)
    assert connected == []
    network.heal(B, A)
    assert await accepted.receive_some() == b"held"
    assert await client.receive_some() == b"held too"
    await server.next()
    assert connected == [pytest.approx(trio.current_time(), abs=1e-9)]
    assert events == [f"partition {A} <-> {B}", f"heal {B} <-> {A}"]


async def test_one_way_partition_delivers_only_the_other_direction(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(connect_timeout_ms=1_000)
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)

    network.partition(A, B, one_way=True)
    await client.send_all(b"a to b")
    await accepted.send_all(b"b to a")
    assert await client.receive_some() == b"b to a"
    assert await nothing_arrives(accepted)
    with pytest.raises(TimeoutError):  # a connect needs both directions
        await network.host(A).connect(B, server.port)
    network.heal(A, B, one_way=True)
    assert await accepted.receive_some() == b"a to b"


async def test_delay_per_link_on_the_mock_clock_keeps_byte_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    network.set_default_delay(5)
    network.set_delay(A, B, 20, one_way=True)
    server = await serve(nursery, network.host(B), B)
    started = trio.current_time()
    client, accepted = await pair(network, server)
    assert trio.current_time() - started == pytest.approx(0.025, abs=1e-9)  # one round trip

    started = trio.current_time()
    await client.send_all(b"first")
    assert await accepted.receive_some() == b"first"
    assert trio.current_time() - started == pytest.approx(0.020, abs=1e-9)
    started = trio.current_time()
    await accepted.send_all(b"back")
    assert await client.receive_some() == b"back"
    assert trio.current_time() - started == pytest.approx(0.005, abs=1e-9)

    # A later chunk on a faster link never overtakes an earlier one.
    started = trio.current_time()
    await client.send_all(b"slow ")
    network.set_delay(A, B, 1, one_way=True)
    await client.send_all(b"fast")
    assert await accepted.receive_some() == b"slow fast"
    assert trio.current_time() - started == pytest.approx(0.020, abs=1e-9)


async def test_reset_breaks_both_ends_of_every_connection_between_the_hosts(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    network = MemoryNetwork(on_event=events.append)
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)
    other_client, other_accepted = await pair(network, server, client_host="10.0.0.3")
    await accepted.send_all(b"lost in the reset")
    failures: list[type[BaseException]] = []

    async def receive_until_reset() -> None:
        with pytest.raises(trio.BrokenResourceError) as info:
            await accepted.receive_some()
        failures.append(info.type)

    nursery.start_soon(receive_until_reset)
    await trio.testing.wait_all_tasks_blocked()
    assert network.reset(B, A) == 1
    await trio.testing.wait_all_tasks_blocked()
    assert failures == [trio.BrokenResourceError]
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await accepted.send_all(b"x")
    await other_client.send_all(b"unaffected")
    assert await other_accepted.receive_some() == b"unaffected"
    assert events == [f"reset {B} <-> {A} connections=1"]


async def test_reset_probability_resets_instead_of_delivering(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    network = MemoryNetwork(reset_probability=1.0, rng=random.Random(1), on_event=events.append)
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)
    await client.send_all(b"never delivered")
    with pytest.raises(trio.BrokenResourceError):
        await accepted.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    peer = stream_peer(accepted)
    assert events == [f"reset {A}:{peer.port} -> {B}:{server.port}: random"]


async def test_pause_holds_everything_and_resume_delivers_it_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)

    network.pause(B)
    for chunk in (b"1", b"2", b"3"):
        await client.send_all(chunk)
    await accepted.send_all(b"sent while paused")
    # A connect to a paused host completes (its kernel answers) but is not accepted.
    late_client = await network.host(A).connect(B, server.port)
    assert await nothing_arrives(accepted) and await nothing_arrives(client)
    with trio.move_on_after(QUIET_S):
        await server.next()
        pytest.fail("a paused host accepted a connection")

    network.resume(B)
    assert await accepted.receive_some() == b"123"
    assert await client.receive_some() == b"sent while paused"
    late_accepted = await server.next()
    await late_client.send_all(b"late")
    assert await late_accepted.receive_some() == b"late"


async def test_crash_resets_connections_and_frees_the_port(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    network = MemoryNetwork(on_event=events.append)
    host = network.host(B)
    old = await serve(nursery, host, B, 9092)
    client, accepted = await pair(network, old)
    network.pause(B)

    network.crash(B)
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await accepted.receive_some()
    # The old listener still runs (nobody cancelled it) but the port is free again, and a
    # crash ends a pause.
    new = await serve(nursery, host, B, 9092)
    fresh, fresh_accepted = await pair(network, new)
    await fresh.send_all(b"after restart")
    assert await fresh_accepted.receive_some() == b"after restart"
    with trio.move_on_after(QUIET_S):
        await old.next()
        pytest.fail("a crashed listener accepted a connection")
    assert events == [f"pause {B}", f"crash {B} connections=1 listeners=1"]


async def test_a_closed_end_sends_eof_after_its_bytes_and_rejects_more(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)
    await client.send_all(b"bye")
    await client.aclose()
    assert await accepted.receive_some() == b"bye"
    assert await accepted.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await accepted.send_all(b"to nobody")
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"after close")


async def test_a_full_buffer_blocks_the_sender(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(buffer_bytes=8)
    server = await serve(nursery, network.host(B), B)
    client, accepted = await pair(network, server)
    data = bytes(range(20))
    sent = trio.Event()

    async def send() -> None:
        await client.send_all(data)
        sent.set()

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert not sent.is_set()
    chunks = []
    while sum(map(len, chunks)) < len(data):
        chunks.append(await accepted.receive_some())
    await sent.wait()
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) == 8


@pytest.mark.parametrize("jitter_ms", [0.0, 10.0])
async def test_accept_jitter_reorders_concurrent_connects(
    jitter_ms: float, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork(accept_jitter_ms=jitter_ms, rng=random.Random(3))
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, network.host(B), B)
        for _ in range(6):
            # One connect a millisecond: each takes its client port before the next starts.
            nursery.start_soon(network.host(A).connect, B, server.port)
            await trio.sleep(0.001)
        accepted = [stream_peer(await server.next()).port for _ in range(6)]
        nursery.cancel_scope.cancel()
    in_call_order = sorted(accepted)
    assert in_call_order == list(range(server.port + 1, server.port + 7))
    assert (accepted == in_call_order) is (jitter_ms == 0)


async def _scenario(seed: int, trace: list[str]) -> None:
    """Faults, random resets and reordering over a fixed sequence of calls."""
    network = MemoryNetwork(
        accept_jitter_ms=5, reset_probability=0.2, rng=random.Random(seed), on_event=trace.append
    )
    async with trio.open_nursery() as nursery:
        server = await serve(nursery, network.host(B), B)
        network.set_delay(A, B, 3)
        for round_number in range(12):
            client, accepted = await pair(network, server)
            try:
                for _ in range(4):
                    await client.send_all(b"ping")
                    await accepted.receive_some()
            except trio.BrokenResourceError:
                trace.append(f"round {round_number} broken at {trio.current_time():.6f}")
            if round_number == 5:
                network.partition(A, B, one_way=True)
                network.heal_all()
                network.pause(B)
                network.resume(B)
        network.crash(B)
        nursery.cancel_scope.cancel()


def run_scenario(seed: int) -> list[str]:
    trace: list[str] = []
    trio.run(_scenario, seed, trace, clock=trio.testing.MockClock(autojump_threshold=0))
    return trace


def test_same_calls_and_seed_give_the_same_trace() -> None:
    first = run_scenario(seed=11)
    assert first == run_scenario(seed=11)
    assert any(event.endswith(": random") for event in first)
    assert first != run_scenario(seed=12)
