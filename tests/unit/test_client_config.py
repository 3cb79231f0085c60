"""Client configuration: Kafka's defaults, parsing, and the contradictions it refuses."""

from __future__ import annotations

import ssl

import pytest

from tidelog.client.config import (
    AdminConfig,
    CommonConfig,
    ConsumerConfig,
    ProducerConfig,
    parse_bootstrap_servers,
)
from tidelog.client.errors import ConfigError
from tidelog.client.protocol.records import Compression


def test_bootstrap_servers_forms() -> None:
    assert parse_bootstrap_servers("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap_servers(["a:1", "b"]) == [("a", 1), ("b", 9092)]
    assert parse_bootstrap_servers("[::1]:9093,PLAINTEXT://h:7") == [("::1", 9093), ("h", 7)]
    assert parse_bootstrap_servers("[::1]") == [("::1", 9092)]


@pytest.mark.parametrize("servers", ["", " , ", "a:x", "a:0", "a:70000", "[::1:9092", ":9092"])
def test_bad_bootstrap_servers(servers: str) -> None:
    with pytest.raises(ConfigError):
        parse_bootstrap_servers(servers)


def test_producer_defaults_follow_the_java_client() -> None:
    config = ProducerConfig()
    assert config.acks == -1
    assert config.idempotent
    assert config.batch_size == 16_384
    assert config.buffer_memory == 32 * 1024 * 1024
    assert config.max_in_flight_requests_per_connection == 5
    assert config.compression is Compression.NONE
    assert config.partitioner == "murmur2"


def test_idempotence_defaults_off_when_settings_conflict_and_refuses_explicit_conflicts() -> None:
    assert not ProducerConfig(acks=1).idempotent
    assert not ProducerConfig(max_in_flight_requests_per_connection=6).idempotent
    assert not ProducerConfig(retries=0).idempotent
    with pytest.raises(ConfigError, match="acks"):
        ProducerConfig(acks=1, enable_idempotence=True)
    with pytest.raises(ConfigError, match="max_in_flight"):
        ProducerConfig(max_in_flight_requests_per_connection=6, enable_idempotence=True)
    assert not ProducerConfig(enable_idempotence=False).idempotent


@pytest.mark.parametrize(
    "overrides",
    [
        {"acks": 2},
        {"acks": "some"},
        {"compression_type": "brotli"},
        {"batch_size": -1},
        {"linger_ms": -5},
        {"buffer_memory": 10},
        {"delivery_timeout_ms": 1000},  # < linger_ms + request_timeout_ms
        {"partitioner": "crc32"},
        {"request_timeout_ms": 0},
        {"retry_backoff_max_ms": 10, "retry_backoff_ms": 100},
        {"security_protocol": "SASL_SSL"},
        {"max_in_flight_requests_per_connection": 0},
        {"linger_ms": True},
    ],
)
def test_producer_rejects_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ProducerConfig(**overrides)  # type: ignore[arg-type]


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ProducerConfig(lingerms=5)  # type: ignore[call-arg]


def test_compression_names() -> None:
    for name, codec in [
        ("gzip", Compression.GZIP),
        ("snappy", Compression.SNAPPY),
        ("lz4", Compression.LZ4),
        ("zstd", Compression.ZSTD),
    ]:
        assert ProducerConfig(compression_type=name).compression is codec  # type: ignore[arg-type]


def test_consumer_settings() -> None:
    config = ConsumerConfig(isolation_level="read_committed", auto_offset_reset="earliest")
    assert config.isolation_level_code == 1
    assert ConsumerConfig().isolation_level_code == 0
    with pytest.raises(ConfigError):
        ConsumerConfig(auto_offset_reset="smallest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ConsumerConfig(isolation_level="serializable")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ConsumerConfig(max_partition_fetch_bytes=0)
    with pytest.raises(ConfigError):
        AdminConfig(default_api_timeout_ms=0)


def test_ssl_context_only_for_ssl() -> None:
    assert CommonConfig().build_ssl_context() is None
    context = CommonConfig(security_protocol="SSL").build_ssl_context()
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    given = ssl.create_default_context()
    assert CommonConfig(security_protocol="SSL", ssl_context=given).build_ssl_context() is given
    with pytest.raises(ConfigError):
        CommonConfig(ssl_keyfile="key.pem")
