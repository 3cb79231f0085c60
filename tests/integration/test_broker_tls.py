"""TLS listeners over real TCP, with certificates from trustme."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from broker.config import ListenerConfig, TlsConfig
from tests.integration.conftest import StartBroker, local_config
from tests.integration.wire import WireClient

API_VERSIONS, METADATA = 18, 3


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_listener(ca: trustme.CA, directory: Path, client_auth: str) -> ListenerConfig:
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return ListenerConfig(
        name="SSL",
        host="127.0.0.1",
        port=0,
        tls=TlsConfig(
            certfile=str(directory / "server.pem"),
            cafile=str(directory / "ca.pem"),
            client_auth=client_auth,  # type: ignore[arg-type]
        ),
    )


def client_context(ca: trustme.CA, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if with_cert:
        ca.issue_cert("client.example").configure_cert(context)
    return context


async def test_server_only_tls(start_broker: StartBroker, tmp_path: Path, ca: trustme.CA) -> None:
    plain = ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0)
    config = local_config(tmp_path, listeners=(tls_listener(ca, tmp_path, "none"), plain))
    running = await start_broker(config)
    async with await running.client(client_context(ca, with_cert=False)) as client:
        assert (await client.request(API_VERSIONS, 2))["error_code"] == 0
        response = await client.request(METADATA, 9, {"topics": None})
        # Clients learn the TLS listener's address on the TLS listener.
        assert [(b["host"], b["port"]) for b in response["brokers"]] == [running.address("SSL")]
    # A client that does not trust the server's CA cannot connect.
    with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
        await WireClient.connect(
            running.network, running.host, running.port, ssl_context=ssl.create_default_context()
        )
    # The plaintext listener alongside answers with its own address.
    host, port = running.address("PLAINTEXT")
    async with await WireClient.connect(running.network, host, port) as client:
        response = await client.request(METADATA, 9, {"topics": None})
        assert [(b["host"], b["port"]) for b in response["brokers"]] == [(host, port)]


async def test_required_client_certificates(
    start_broker: StartBroker, tmp_path: Path, ca: trustme.CA
) -> None:
    config = local_config(tmp_path, listeners=(tls_listener(ca, tmp_path, "required"),))
    running = await start_broker(config)
    async with await running.client(client_context(ca, with_cert=True)) as client:
        assert (await client.request(API_VERSIONS, 2))["error_code"] == 0
        assert running.broker.connection_count == 1

    refused = False
    try:
        client = await running.client(client_context(ca, with_cert=False))
        # TLS 1.3 completes the client's side of the handshake before the server checks
        # the certificate: the refusal shows on the first exchange.
        await client.send(API_VERSIONS, 2)
        refused = await client.read_frame() is None
    except (ssl.SSLError, trio.BrokenResourceError):
        refused = True
    assert refused
