"""Broker configuration from TOML: Kafka's names, both spellings, every bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidelog.broker.config import BrokerConfig, ConfigError, ListenerConfig, TlsConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def test_defaults_are_kafkas() -> None:
    config = BrokerConfig()
    assert config.socket_request_max_bytes == 100 * 1024 * 1024
    assert config.message_max_bytes == 1_048_588
    assert config.log_segment_bytes == 1024**3
    assert config.log_retention_ms == 7 * 24 * 3600 * 1000
    assert config.log_retention_bytes == -1
    assert config.log_retention_check_interval_ms == 300_000
    assert config.auto_create_topics_enable is True
    assert config.num_partitions == 1
    assert config.default_replication_factor == 1


def test_dotted_and_underscored_keys_mean_the_same(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
node.id = 3
log.retention.ms = 60000
log_segment_bytes = 1048576
auto.create.topics.enable = false
data_dir = "data"

[[listeners]]
name = "PLAINTEXT"
host = "127.0.0.1"
port = 0
""",
        )
    )
    assert config.node_id == 3
    assert config.log_retention_ms == 60000
    assert config.log_segment_bytes == 1048576
    assert config.auto_create_topics_enable is False
    # Relative paths are relative to the config file, not the working directory.
    assert config.data_dir == str(tmp_path / "data")
    assert config.listeners == (ListenerConfig(name="PLAINTEXT", host="127.0.0.1", port=0),)


def test_tls_listener_paths_resolve_next_to_the_file(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
[[listeners]]
name = "SSL"
port = 9093
tls = { certfile = "server.pem", cafile = "ca.pem", client_auth = "required" }
""",
        )
    )
    assert config.listeners[0].tls == TlsConfig(
        certfile=str(tmp_path / "server.pem"),
        cafile=str(tmp_path / "ca.pem"),
        client_auth="required",
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("log.retention.mss = 1", "log.retention.mss"),
        ("bogus = 1", "bogus"),
        ("log.retention.ms = 'soon'", "log.retention.ms"),
        ("num_partitions = 0", "num_partitions"),
        ("auto_create_topics_enable = 1", "auto_create_topics_enable"),
        ("[[listeners]]\nport = 70000", "listeners[0].port"),
        ("[[listeners]]\nportt = 1", "listeners[0].portt"),
        ("[[listeners]]\nhost = '0.0.0.0'", "listeners[0].advertised_host"),
        (
            "[[listeners]]\ntls = { certfile = 'a.pem', client_auth = 'maybe' }",
            "listeners[0].tls.client_auth",
        ),
        (
            "[[listeners]]\ntls = { certfile = 'a.pem', client_auth = 'required' }",
            "listeners[0].tls.cafile",
        ),
        ("[[listeners]]\nname='A'\n[[listeners]]\nname='A'", "listeners[1].name"),
        ("listeners = []", "listeners"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).startswith(named + ":"), str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "node_id = = 1"))
