"""Broker configuration: one frozen dataclass, loaded from TOML or built in code.

Names are Kafka's broker config names in snake_case (`log.retention.ms` is
`log_retention_ms`). A TOML file may spell a key either way: nested tables are joined with
underscores, so `log.retention.ms = 1000` (a dotted TOML key) and `log_retention_ms = 1000`
mean the same thing. Listeners are an array of tables:

    node_id = 1
    data_dir = "/var/lib/tidelog"

    [[listeners]]
    name = "PLAINTEXT"
    host = "0.0.0.0"
    port = 9092
    advertised_host = "broker1.example.com"

    [[listeners]]
    name = "SSL"
    host = "0.0.0.0"
    port = 9093
    advertised_host = "broker1.example.com"
    tls = { certfile = "server.pem", keyfile = "server.key", cafile = "ca.pem",
            client_auth = "required" }

Every key is checked: an unknown key, a value of the wrong type or out of range raises
`ConfigError` naming the key as it was written.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

ClientAuth = Literal["required", "none"]

MiB = 1024 * 1024
GiB = 1024 * MiB
_DAY_MS = 24 * 60 * 60 * 1000
_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_LISTENER_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """A listener's TLS settings (PEM files). `cafile` verifies client certificates."""

    certfile: str
    keyfile: str | None = None
    cafile: str | None = None
    client_auth: ClientAuth = "none"


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listening socket. Port 0 binds an ephemeral port (see `Broker.bound_addresses`).

    `advertised_host`/`advertised_port` are what Metadata tells clients to connect to; they
    default to the bind host and the bound port. A wildcard bind host needs an explicit
    `advertised_host`, because clients cannot connect to 0.0.0.0.
    """

    name: str = "PLAINTEXT"
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    tls: TlsConfig | None = None


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything a broker reads at startup. Defaults are Kafka's where Kafka has one."""

    node_id: int = 0
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    data_dir: str = "./tidelog-data"
    cluster_id: str | None = None
    """None: the id stored in the data dir; on first start, one derived from
    `controller_quorum_voters` when the quorum has several voters, else a random one."""
    rack: str | None = None

    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    default_replication_factor: int = 1

    socket_request_max_bytes: int = 100 * MiB
    max_inflight_requests_per_connection: int = 100
    max_connections: int = 10_000
    connections_max_idle_ms: int = 10 * 60 * 1000
    message_max_bytes: int = 1_048_588
    shutdown_timeout_ms: int = 10_000
    """How long a clean shutdown waits for in-flight requests before cutting connections."""

    log_segment_bytes: int = GiB
    log_retention_ms: int = 7 * _DAY_MS
    log_retention_bytes: int = -1
    log_roll_ms: int = 7 * _DAY_MS
    log_flush_interval_messages: int = _INT64_MAX
    log_flush_interval_ms: int | None = None
    """None: flush only by message count and on shutdown (Kafka's default leaves it unset)."""
    log_retention_check_interval_ms: int = 5 * 60 * 1000
    log_cleaner_backoff_ms: int = 15_000
    """How often compacted topics (cleanup.policy=compact) are checked for cleaning."""

    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 3
    """Replicas of `__consumer_offsets`, capped by the brokers alive when it is created."""
    offsets_topic_segment_bytes: int = 100 * MiB
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_retention_check_interval_ms: int = 10 * 60 * 1000
    offset_metadata_max_bytes: int = 4096
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 30 * 60 * 1000
    group_max_size: int = 10_000
    """Kafka leaves it unbounded; a bound keeps one group from taking all memory."""

    process_roles: str = "broker,controller"
    """`broker`, `controller` or both (combined): what this node runs."""
    controller_quorum_voters: str = ""
    """The controller quorum, `id@host:port,...` (each voter's controller listener). Empty:
    this node alone is the quorum (a single-node cluster, no controller listener needed)."""
    controller_listener_names: str = "CONTROLLER"
    """Listeners that speak to the quorum (the first is where this controller listens)."""
    replica_lag_time_max_ms: int = 30_000
    """A follower that has not caught up with its leader for this long leaves the ISR."""
    replica_fetch_max_bytes: int = MiB
    """How much a follower's fetch asks of one partition (the first batch comes whole)."""
    replica_fetch_response_max_bytes: int = 10 * MiB
    """How much one of a follower's fetches asks for over all its partitions."""
    replica_fetch_wait_max_ms: int = 500
    """How long the leader holds a follower's fetch that finds nothing new."""
    replica_fetch_min_bytes: int = 1
    replica_fetch_backoff_ms: int = 1000
    """How long a follower waits before fetching a partition again after an error."""
    inter_broker_listener_name: str | None = None
    """The listener followers fetch from (None: the first listener that is not a
    controller listener). Every broker must have a listener of this name."""
    min_insync_replicas: int = 1
    auto_leader_rebalance_enable: bool = True
    """The active controller moves leadership back to preferred replicas periodically."""
    leader_imbalance_check_interval_seconds: int = 300
    """The default of the topic config `min.insync.replicas`."""
    broker_heartbeat_interval_ms: int = 2000
    broker_session_timeout_ms: int = 9000
    """A broker whose last heartbeat is older than this is fenced by the controller."""
    controller_quorum_fetch_timeout_ms: int = 2000
    controller_quorum_election_timeout_ms: int = 1000
    controller_quorum_election_backoff_max_ms: int = 1000
    controller_quorum_request_timeout_ms: int = 2000
    controller_quorum_retry_backoff_ms: int = 20
    metadata_log_max_record_bytes_between_snapshots: int = 20 * MiB
    metadata_log_max_snapshot_interval_ms: int = 60 * 60 * 1000
    """A snapshot is taken once this much time has passed with new records (0: never)."""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(role.strip() for role in self.process_roles.split(","))

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def is_broker(self) -> bool:
        return "broker" in self.roles

    @property
    def quorum_voters(self) -> dict[int, tuple[str, int]]:
        """`controller_quorum_voters` parsed: voter id -> (host, port); empty for a quorum of
        this node alone."""
        return parse_quorum_voters(self.controller_quorum_voters)

    @property
    def voter_ids(self) -> tuple[int, ...]:
        voters = self.quorum_voters
        return tuple(sorted(voters)) if voters else (self.node_id,)

    @property
    def controller_listener_name_list(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.controller_listener_names.split(",") if n.strip())

    def is_controller_listener(self, name: str) -> bool:
        return name in self.controller_listener_name_list

    @property
    def client_listeners(self) -> tuple[ListenerConfig, ...]:
        """The listeners Kafka clients use (every one but the controller listeners)."""
        return tuple(lst for lst in self.listeners if not self.is_controller_listener(lst.name))

    @property
    def inter_broker_listener(self) -> ListenerConfig:
        """The listener brokers replicate over (see `inter_broker_listener_name`)."""
        if self.inter_broker_listener_name is not None:
            return self.listener(self.inter_broker_listener_name)
        return self.client_listeners[0]

    def listener(self, name: str) -> ListenerConfig:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


def parse_quorum_voters(text: str) -> dict[int, tuple[str, int]]:
    """Kafka's `controller.quorum.voters` form, `1@host:port,2@[::1]:port`; ConfigError
    for anything else."""
    voters: dict[int, tuple[str, int]] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(\d+)@(\[[0-9A-Fa-f:.]+\]|[^:\[\]@]+):(\d+)", item)
        if match is None:
            raise ConfigError(f"controller_quorum_voters: {item!r} is not of the form id@host:port")
        node_id, host, port = int(match[1]), match[2].strip("[]"), int(match[3])
        if node_id > _INT32_MAX or not 1 <= port <= 65535:
            raise ConfigError(f"controller_quorum_voters: {item!r} has an id or port out of range")
        if node_id in voters:
            raise ConfigError(f"controller_quorum_voters: voter {node_id} is listed twice")
        voters[node_id] = (host, port)
    return voters


def _check_int(key: str, value: object, lo: int, hi: int = _INT64_MAX) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: {value} is outside [{lo}, {hi}]")


def _validate(config: BrokerConfig) -> None:
    _check_int("node_id", config.node_id, 0, _INT32_MAX)
    if config.rack is not None and not isinstance(config.rack, str):
        raise ConfigError(f"rack: expected a string, got {config.rack!r}")
    if not isinstance(config.data_dir, str) or not config.data_dir:
        raise ConfigError(f"data_dir: expected a non-empty path, got {config.data_dir!r}")
    if config.cluster_id is not None and not re.fullmatch(
        r"[A-Za-z0-9_-]{1,64}", config.cluster_id
    ):
        raise ConfigError(
            f"cluster_id: {config.cluster_id!r} must be 1-64 characters of [A-Za-z0-9_-]"
        )
    if not isinstance(config.auto_create_topics_enable, bool):
        raise ConfigError("auto_create_topics_enable: expected true or false")
    _check_int("num_partitions", config.num_partitions, 1, 100_000)
    _check_int("default_replication_factor", config.default_replication_factor, 1, 32_767)
    _check_int("socket_request_max_bytes", config.socket_request_max_bytes, 1024, _INT32_MAX)
    _check_int(
        "max_inflight_requests_per_connection",
        config.max_inflight_requests_per_connection,
        1,
        100_000,
    )
    _check_int("max_connections", config.max_connections, 1, 10_000_000)
    _check_int("connections_max_idle_ms", config.connections_max_idle_ms, 1)
    _check_int("message_max_bytes", config.message_max_bytes, 0, _INT32_MAX)
    _check_int("shutdown_timeout_ms", config.shutdown_timeout_ms, 0)
    _check_int("log_segment_bytes", config.log_segment_bytes, 14, _INT32_MAX)
    _check_int("log_retention_ms", config.log_retention_ms, -1)
    _check_int("log_retention_bytes", config.log_retention_bytes, -1)
    _check_int("log_roll_ms", config.log_roll_ms, 1)
    _check_int("log_flush_interval_messages", config.log_flush_interval_messages, 1)
    if config.log_flush_interval_ms is not None:
        _check_int("log_flush_interval_ms", config.log_flush_interval_ms, 0)
    _check_int("log_retention_check_interval_ms", config.log_retention_check_interval_ms, 1)
    _check_int("log_cleaner_backoff_ms", config.log_cleaner_backoff_ms, 1)
    _check_int("offsets_topic_num_partitions", config.offsets_topic_num_partitions, 1, 10_000)
    _check_int(
        "offsets_topic_replication_factor", config.offsets_topic_replication_factor, 1, 32_767
    )
    _check_int("offsets_topic_segment_bytes", config.offsets_topic_segment_bytes, 1024, _INT32_MAX)
    _check_int("offsets_retention_minutes", config.offsets_retention_minutes, 1, _INT32_MAX)
    _check_int("offsets_retention_check_interval_ms", config.offsets_retention_check_interval_ms, 1)
    _check_int("offset_metadata_max_bytes", config.offset_metadata_max_bytes, 0, _INT32_MAX)
    _check_int(
        "group_initial_rebalance_delay_ms", config.group_initial_rebalance_delay_ms, 0, _INT32_MAX
    )
    _check_int("group_min_session_timeout_ms", config.group_min_session_timeout_ms, 1, _INT32_MAX)
    _check_int(
        "group_max_session_timeout_ms",
        config.group_max_session_timeout_ms,
        config.group_min_session_timeout_ms,
        _INT32_MAX,
    )
    _check_int("group_max_size", config.group_max_size, 1, _INT32_MAX)
    _validate_quorum(config)
    if not config.listeners:
        raise ConfigError("listeners: at least one listener is required")
    names: set[str] = set()
    for i, listener in enumerate(config.listeners):
        _validate_listener(f"listeners[{i}]", listener)
        if listener.name in names:
            raise ConfigError(f"listeners[{i}].name: duplicate listener name {listener.name!r}")
        names.add(listener.name)


_ROLES = frozenset({"broker", "controller"})


def _validate_quorum(config: BrokerConfig) -> None:
    if not isinstance(config.process_roles, str) or not config.roles <= _ROLES:
        raise ConfigError(
            f"process_roles: {config.process_roles!r} must be 'broker', 'controller' or "
            f"'broker,controller'"
        )
    if not isinstance(config.controller_quorum_voters, str):
        raise ConfigError("controller_quorum_voters: expected a string such as '1@host:9093'")
    voters = config.quorum_voters
    for key in (
        "replica_lag_time_max_ms",
        "replica_fetch_max_bytes",
        "replica_fetch_response_max_bytes",
        "replica_fetch_wait_max_ms",
        "replica_fetch_min_bytes",
        "replica_fetch_backoff_ms",
        "min_insync_replicas",
        "leader_imbalance_check_interval_seconds",
        "broker_heartbeat_interval_ms",
        "broker_session_timeout_ms",
        "controller_quorum_fetch_timeout_ms",
        "controller_quorum_election_timeout_ms",
        "controller_quorum_election_backoff_max_ms",
        "controller_quorum_request_timeout_ms",
    ):
        _check_int(key, getattr(config, key), 1, _INT32_MAX)
    _check_int("controller_quorum_retry_backoff_ms", config.controller_quorum_retry_backoff_ms, 0)
    _check_int(
        "metadata_log_max_record_bytes_between_snapshots",
        config.metadata_log_max_record_bytes_between_snapshots,
        1,
    )
    _check_int(
        "metadata_log_max_snapshot_interval_ms", config.metadata_log_max_snapshot_interval_ms, 0
    )
    if config.broker_heartbeat_interval_ms >= config.broker_session_timeout_ms:
        raise ConfigError(
            "broker_heartbeat_interval_ms: must be below broker_session_timeout_ms "
            f"({config.broker_session_timeout_ms})"
        )
    if not voters:
        if config.roles != _ROLES:
            raise ConfigError(
                "controller_quorum_voters: required unless the node runs both roles "
                "(process_roles = 'broker,controller' alone is a quorum of one)"
            )
        return
    if config.is_controller and config.node_id not in voters:
        raise ConfigError(
            f"controller_quorum_voters: this node ({config.node_id}) runs the controller "
            f"role but is not one of the voters {sorted(voters)}"
        )
    if not config.is_controller and config.node_id in voters:
        raise ConfigError(
            f"controller_quorum_voters: node {config.node_id} is a voter, so process_roles "
            f"must include 'controller'"
        )
    names = config.controller_listener_name_list
    if not names:
        raise ConfigError("controller_listener_names: at least one listener name is required")
    listener_names = {listener.name for listener in config.listeners}
    if config.is_controller and names[0] not in listener_names:
        raise ConfigError(
            f"controller_listener_names: no listener named {names[0]!r}; a controller needs "
            f"one to serve the quorum"
        )
    if config.is_broker and not listener_names - set(names):
        raise ConfigError("listeners: a broker needs a listener besides the controller's")
    inter_broker = config.inter_broker_listener_name
    if (
        config.is_broker
        and inter_broker is not None
        and (inter_broker not in listener_names or inter_broker in names)
    ):
        raise ConfigError(f"inter_broker_listener_name: no client listener named {inter_broker!r}")


def _validate_listener(key: str, listener: ListenerConfig) -> None:
    if not isinstance(listener.name, str) or not _LISTENER_NAME.match(listener.name):
        raise ConfigError(f"{key}.name: {listener.name!r} must be 1-64 of [A-Za-z0-9_]")
    if not isinstance(listener.host, str):
        raise ConfigError(f"{key}.host: expected a string, got {listener.host!r}")
    _check_int(f"{key}.port", listener.port, 0, 65535)
    if listener.advertised_port is not None:
        _check_int(f"{key}.advertised_port", listener.advertised_port, 1, 65535)
    if listener.advertised_host is not None and (
        not isinstance(listener.advertised_host, str) or listener.advertised_host in _WILDCARD_HOSTS
    ):
        raise ConfigError(
            f"{key}.advertised_host: {listener.advertised_host!r} is not a connectable host"
        )
    if listener.advertised_host is None and listener.host in _WILDCARD_HOSTS:
        raise ConfigError(
            f"{key}.advertised_host: required when binding the wildcard address "
            f"{listener.host!r}, because clients cannot connect to it"
        )
    tls = listener.tls
    if tls is not None:
        if not isinstance(tls.certfile, str) or not tls.certfile:
            raise ConfigError(f"{key}.tls.certfile: a PEM certificate file is required")
        if tls.client_auth not in get_args(ClientAuth):
            raise ConfigError(
                f"{key}.tls.client_auth: {tls.client_auth!r} is not one of "
                f"{', '.join(get_args(ClientAuth))}"
            )
        if tls.client_auth == "required" and not tls.cafile:
            raise ConfigError(f"{key}.tls.cafile: required to verify client certificates")


# --- TOML ---------------------------------------------------------------------------------

_BROKER_FIELDS = {f.name: f for f in dataclasses.fields(BrokerConfig)}
_LISTENER_FIELDS = {f.name: f for f in dataclasses.fields(ListenerConfig)}
_TLS_FIELDS = {f.name: f for f in dataclasses.fields(TlsConfig)}


def load_config(path: str | Path) -> BrokerConfig:
    """Read a TOML file into a validated `BrokerConfig`; `ConfigError` names the bad key.

    A relative `data_dir` is taken relative to the file's directory, and so are TLS file
    paths, so a config file works from any working directory.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return config_from_mapping(document, base_dir=path.parent)


def config_from_mapping(
    document: Mapping[str, Any], *, base_dir: Path | None = None
) -> BrokerConfig:
    """Build a `BrokerConfig` from parsed TOML (see the module docstring for the layout)."""
    flat = _flatten(document, _BROKER_FIELDS, prefix="", keep={"listeners"})
    values: dict[str, Any] = {}
    for name, (written, value) in flat.items():
        if name == "listeners":
            values[name] = _listeners(written, value, base_dir)
        elif name == "data_dir" and isinstance(value, str) and base_dir is not None:
            values[name] = str(base_dir / value) if value else value
        else:
            values[name] = value
    try:
        return BrokerConfig(**values)
    except ConfigError as exc:
        # Validation names fields; say the key the way the file spelled it.
        message = str(exc)
        name, sep, rest = message.partition(":")
        if sep and name in flat:
            raise ConfigError(f"{flat[name][0]}:{rest}") from None
        raise


def _flatten(
    table: Mapping[str, Any], fields: Mapping[str, Any], prefix: str, keep: set[str]
) -> dict[str, tuple[str, Any]]:
    """Join nested tables' keys with "_" until they name a field; return name -> (as written,
    value). Raises ConfigError for a key that names no field."""
    out: dict[str, tuple[str, Any]] = {}

    def walk(sub: Mapping[str, Any], name: str, written: str) -> None:
        for key, value in sub.items():
            joined = f"{name}_{key}" if name else key
            shown = f"{written}.{key}" if written else key
            joined = joined.replace(".", "_").replace("-", "_")
            if joined in fields:
                if joined in out:
                    raise ConfigError(f"{prefix}{shown}: given twice (as {out[joined][0]})")
                out[joined] = (prefix + shown, value)
            elif (
                isinstance(value, Mapping)
                and joined not in keep
                and any(f.startswith(joined + "_") for f in fields)
            ):
                walk(value, joined, shown)
            else:
                raise ConfigError(f"{prefix}{shown}: unknown configuration key")

    walk(table, "", "")
    return out


def _listeners(written: str, value: Any, base_dir: Path | None) -> tuple[ListenerConfig, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{written}: expected an array of tables ([[listeners]])")
    listeners = []
    for i, entry in enumerate(value):
        key = f"{written}[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{key}: expected a table")
        flat = _flatten(entry, _LISTENER_FIELDS, prefix=key + ".", keep={"tls"})
        kwargs: dict[str, Any] = {}
        for name, (shown, v) in flat.items():
            if name == "tls":
                kwargs[name] = _tls(shown, v, base_dir)
            else:
                kwargs[name] = v
        listeners.append(ListenerConfig(**kwargs))
    return tuple(listeners)


def _tls(written: str, value: Any, base_dir: Path | None) -> TlsConfig:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{written}: expected a table")
    flat = _flatten(value, _TLS_FIELDS, prefix=written + ".", keep=set())
    kwargs: dict[str, Any] = {}
    for name, (shown, v) in flat.items():
        if name in ("certfile", "keyfile", "cafile"):
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{shown}: expected a file path")
            kwargs[name] = str(base_dir / v) if base_dir is not None else v
        else:
            kwargs[name] = v
    if "certfile" not in kwargs:
        raise ConfigError(f"{written}.certfile: a PEM certificate file is required")
    return TlsConfig(**kwargs)
