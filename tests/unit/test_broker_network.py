"""The network seam: MemoryNetwork behaves like TCP (addresses, refusals, TLS)."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable

import pytest
import trio
import trustme

from tidelog.broker.config import TlsConfig
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.network import PeerInfo, server_ssl_context, stream_peer


async def echo_once(peers: list[PeerInfo]) -> Callable[[trio.abc.Stream], object]:
    async def handler(stream: trio.abc.Stream) -> None:
        peers.append(stream_peer(stream))
        data = await stream.receive_some()
        await stream.send_all(data)

    return handler


async def test_connect_where_nothing_listens_is_refused() -> None:
    network = MemoryNetwork()
    with pytest.raises(ConnectionRefusedError):
        await network.connect("127.0.0.1", 9092)


async def test_listen_connect_and_peer_addresses() -> None:
    network = MemoryNetwork()
    peers: list[PeerInfo] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(network.serve_tcp, await echo_once(peers), "10.0.0.1", 0)
        assert port >= MemoryNetwork.EPHEMERAL_PORT_FIRST
        stream = await network.connect("10.0.0.1", port)
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        # The handler returned, so the broker side closed: the client sees EOF.
        assert await stream.receive_some() == b""
        assert peers[0].host == "127.0.0.1" and peers[0].tls_version is None
        with pytest.raises(OSError) as info:
            await nursery.start(network.serve_tcp, await echo_once(peers), "10.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        nursery.cancel_scope.cancel()
    # A stopped listener frees its address.
    with pytest.raises(ConnectionRefusedError):
        await network.connect("10.0.0.1", port)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return TlsConfig(
        certfile=str(directory / "server.pem"),
        cafile=str(directory / "ca.pem"),
        client_auth="required",
    )


async def test_tls_with_required_client_certificates_over_memory(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> None:
    network = MemoryNetwork()
    peers: list[PeerInfo] = []
    server_context = server_ssl_context(tls_files(ca, tmp_path_factory))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_echo, network, peers, server_context)
        with_cert = ssl.create_default_context()
        ca.configure_trust(with_cert)
        ca.issue_cert("client.example").configure_cert(with_cert)
        stream = await network.connect("localhost", port, ssl_context=with_cert)
        await stream.send_all(b"hello")
        assert await stream.receive_some() == b"hello"
        assert peers[0].tls_version in ("TLSv1.2", "TLSv1.3")
        # trustme names the holder in the SAN; the subject carries its organisation.
        assert peers[0].certificate_subject is not None
        assert "organizationName=trustme" in peers[0].certificate_subject

        without_cert = ssl.create_default_context()
        ca.configure_trust(without_cert)
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
            stream = await network.connect("localhost", port, ssl_context=without_cert)
            # TLS 1.3 finishes the client's side of the handshake before the server has
            # checked the certificate; the refusal arrives on the first read.
            await stream.send_all(b"hello")
            assert await stream.receive_some() == b""
            raise trio.BrokenResourceError("closed without an answer")
        assert len(peers) == 1
        nursery.cancel_scope.cancel()


async def _serve_echo(
    network: MemoryNetwork,
    peers: list[PeerInfo],
    context: ssl.SSLContext,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    await network.serve_tcp(
        await echo_once(peers), "localhost", 0, ssl_context=context, task_status=task_status
    )
