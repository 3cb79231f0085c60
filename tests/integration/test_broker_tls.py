"""TLS listeners over real TCP, with certificates from trustme."""

from __future__ import annotations

import ssl
from pathlib import Path

import confluent_kafka
import confluent_kafka.admin
import pytest
import trio
import trustme

from tests.integration.conftest import StartBroker, local_config
from tests.integration.wire import WireClient
from tidelog.broker.config import ListenerConfig, TlsConfig

API_VERSIONS, METADATA = 18, 3
CLIENT_TIMEOUT_S = 20
REFUSED_TIMEOUT_S = 3

ClientConfig = dict[str, str | int | float | bool]


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


def confluent_ssl_config(
    bootstrap: str, directory: Path, ca: trustme.CA, *, with_cert: bool
) -> ClientConfig:
    ca.cert_pem.write_to_path(str(directory / "client-ca.pem"))
    config: ClientConfig = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "security.protocol": "SSL",
        "ssl.ca.location": str(directory / "client-ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
    }
    if with_cert:
        cert = ca.issue_cert("client.example")
        cert.private_key_pem.write_to_path(str(directory / "client.key"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
        config["ssl.key.location"] = str(directory / "client.key")
        config["ssl.certificate.location"] = str(directory / "client.pem")
    return config


def confluent_round_trip(
    config: ClientConfig, topic: str, count: int
) -> list[tuple[bytes | None, int | None]]:
    """Produce `count` keyed records with acks=all over `config`, read them back by assign."""
    producer = confluent_kafka.Producer({**config, "acks": "all", "linger.ms": 1})
    for i in range(count):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0)
    assert producer.flush(CLIENT_TIMEOUT_S) == 0
    consumer = confluent_kafka.Consumer(
        {**config, "group.id": "unused-assign-only", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    seen: list[tuple[bytes | None, int | None]] = []
    try:
        for _ in range(count * 10):
            if len(seen) == count:
                break
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            assert message.key() == b"k%d" % len(seen)
            seen.append((message.value(), message.offset()))
    finally:
        consumer.close()
    return seen


def confluent_list_topics(config: ClientConfig) -> object:
    return confluent_kafka.admin.AdminClient(config).list_topics(timeout=REFUSED_TIMEOUT_S)


async def test_confluent_kafka_over_tls(
    start_broker: StartBroker, tmp_path: Path, ca: trustme.CA
) -> None:
    config = local_config(tmp_path, listeners=(tls_listener(ca, tmp_path, "none"),))
    running = await start_broker(config)
    # Verify the server's name: the certificate is for "localhost" and 127.0.0.1.
    client_config = confluent_ssl_config(f"localhost:{running.port}", tmp_path, ca, with_cert=False)
    with trio.fail_after(3 * CLIENT_TIMEOUT_S):
        seen = await trio.to_thread.run_sync(confluent_round_trip, client_config, "secure", 50)
    assert seen == [(b"v%d" % i, i) for i in range(50)]


async def test_confluent_kafka_needs_a_client_certificate_when_required(
    start_broker: StartBroker, tmp_path: Path, ca: trustme.CA
) -> None:
    config = local_config(tmp_path, listeners=(tls_listener(ca, tmp_path, "required"),))
    running = await start_broker(config)
    bootstrap = f"localhost:{running.port}"
    with_cert = confluent_ssl_config(bootstrap, tmp_path, ca, with_cert=True)
    with trio.fail_after(3 * CLIENT_TIMEOUT_S):
        seen = await trio.to_thread.run_sync(confluent_round_trip, with_cert, "mutual", 5)
    assert [offset for _, offset in seen] == [0, 1, 2, 3, 4]

    without_cert = confluent_ssl_config(bootstrap, tmp_path, ca, with_cert=False)
    with trio.fail_after(3 * CLIENT_TIMEOUT_S), pytest.raises(confluent_kafka.KafkaException):
        await trio.to_thread.run_sync(confluent_list_topics, without_cert)
