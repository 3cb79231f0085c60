"""Client configuration: Kafka's config names in snake_case, validated on construction.

`Producer(**kwargs)`, `Consumer(**kwargs)` and `Admin(**kwargs)` build a `ProducerConfig`,
`ConsumerConfig` or `AdminConfig` from their keyword arguments; an unknown name is a
TypeError and a bad value a `ConfigError`. Each field's docstring names the Kafka config it
mirrors (`linger_ms` is `linger.ms`) and its default, which follows the Java client unless
said otherwise.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tidelog.client.errors import ConfigError
from tidelog.client.protocol.records import Compression

INT32_MAX = 2**31 - 1

CompressionName = Literal["none", "gzip", "snappy", "lz4", "zstd"]
COMPRESSION_BY_NAME: dict[str, Compression] = {
    "none": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}


def parse_bootstrap_servers(servers: str | Sequence[str]) -> list[tuple[str, int]]:
    """Parse "host:port,host:port" (or a list of "host:port") into [(host, port)].

    IPv6 addresses go in brackets: "[::1]:9092".

    A missing port means 9092, Kafka's default.
    """
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        if "://" in text:  # "PLAINTEXT://host:port", as listeners are written
            text = text.split("://", 1)[1]
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep:
                raise ConfigError(f"bad bootstrap server {item!r}")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, ""
        try:
            port = int(port_text) if port_text else 9092
        except ValueError:
            raise ConfigError(f"bad port in bootstrap server {item!r}") from None
        if not host or not 0 < port < 65536:
            raise ConfigError(f"bad bootstrap server {item!r}")
        out.append((host, port))
    if not out:
        raise ConfigError("bootstrap_servers names no server")
    return out


def _at_least(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(kw_only=True)
class CommonConfig:
    """Settings every client shares: where the cluster is, how to talk to it, how long to wait."""

    bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092"
    """`bootstrap.servers`: brokers to ask for cluster metadata first ("host:port,...")."""
    client_id: str = "tidelog"
    """`client.id`: sent with every request, for the broker's logs and quotas."""
    request_timeout_ms: int = 30_000
    """`request.timeout.ms`: how long to wait for a response before the connection is closed
    and the request failed (and retried, where that is safe)."""
    retry_backoff_ms: int = 100
    """`retry.backoff.ms`: the first wait before retrying after a retriable error; it doubles
    on each further attempt (with jitter) up to `retry_backoff_max_ms`."""
    retry_backoff_max_ms: int = 1_000
    """`retry.backoff.max.ms`: the longest wait between retries."""
    reconnect_backoff_ms: int = 50
    """`reconnect.backoff.ms`: the first wait before reconnecting to a broker that failed."""
    reconnect_backoff_max_ms: int = 1_000
    """`reconnect.backoff.max.ms`: the longest wait between connection attempts."""
    socket_connection_setup_timeout_ms: int = 10_000
    """`socket.connection.setup.timeout.ms`: TCP connect plus TLS handshake time limit."""
    metadata_max_age_ms: int = 300_000
    """`metadata.max.age.ms`: refresh cluster metadata at least this often, even without
    errors, to see new brokers and partitions."""
    receive_message_max_bytes: int = 100 * 1024 * 1024 + 512
    """`receive.message.max.bytes` (librdkafka's name): the largest response frame accepted;
    a larger one closes the connection."""
    security_protocol: Literal["PLAINTEXT", "SSL"] = "PLAINTEXT"
    """`security.protocol`: "SSL" wraps every connection in TLS."""
    ssl_context: ssl.SSLContext | None = None
    """The TLS context for "SSL"; when None, one is built from `ssl_cafile`,
    `ssl_certfile` and `ssl_keyfile` (or the system trust store)."""
    ssl_cafile: str | None = None
    """`ssl.truststore.location` equivalent: PEM file of CA certificates to trust."""
    ssl_certfile: str | None = None
    """`ssl.keystore.location` equivalent: PEM client certificate (mutual TLS)."""
    ssl_keyfile: str | None = None
    """PEM private key for `ssl_certfile`."""
    ssl_check_hostname: bool = True
    """`ssl.endpoint.identification.algorithm=https`: verify the broker's host name."""
    bootstrap_addresses: list[tuple[str, int]] = field(init=False, repr=False)
    """`bootstrap_servers`, parsed."""

    def __post_init__(self) -> None:
        self.bootstrap_addresses = parse_bootstrap_servers(self.bootstrap_servers)
        _at_least("request_timeout_ms", self.request_timeout_ms, 1)
        _at_least("retry_backoff_ms", self.retry_backoff_ms, 0)
        _at_least("retry_backoff_max_ms", self.retry_backoff_max_ms, self.retry_backoff_ms)
        _at_least("reconnect_backoff_ms", self.reconnect_backoff_ms, 0)
        _at_least(
            "reconnect_backoff_max_ms", self.reconnect_backoff_max_ms, self.reconnect_backoff_ms
        )
        _at_least("socket_connection_setup_timeout_ms", self.socket_connection_setup_timeout_ms, 1)
        _at_least("metadata_max_age_ms", self.metadata_max_age_ms, 0)
        _at_least("receive_message_max_bytes", self.receive_message_max_bytes, 1024)
        if self.security_protocol not in ("PLAINTEXT", "SSL"):
            raise ConfigError(
                f"security_protocol must be PLAINTEXT or SSL, got {self.security_protocol!r}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("ssl_keyfile needs ssl_certfile")

    def build_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context connections use, or None for PLAINTEXT."""
        if self.security_protocol != "SSL":
            return None
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


@dataclass(kw_only=True)
class ProducerConfig(CommonConfig):
    """Producer settings. See `Producer` for how they interact."""

    acks: int | Literal["all"] = "all"
    """`acks`: 0 = no response, 1 = the leader wrote it, "all"/-1 = every in-sync replica did."""
    enable_idempotence: bool | None = None
    """`enable.idempotence`: exactly-once per partition across retries (producer id and
    sequence numbers). None means on unless `acks`, `retries` or
    `max_in_flight_requests_per_connection` are set to values it cannot work with; True
    with such values is a ConfigError."""
    compression_type: CompressionName = "none"
    """`compression.type`: codec for produced batches."""
    batch_size: int = 16_384
    """`batch.size`: bytes (uncompressed estimate) per partition batch before it is sent
    without waiting for `linger_ms`; a larger record gets a batch of its own."""
    linger_ms: int = 5
    """`linger.ms`: how long a batch waits for more records before it is sent."""
    buffer_memory: int = 32 * 1024 * 1024
    """`buffer.memory`: bytes of records waiting or in flight; `send` blocks (up to
    `max_block_ms`) while it is used up."""
    max_block_ms: int = 60_000
    """`max.block.ms`: how long `send` may wait for buffer space or topic metadata."""
    max_request_size: int = 1_048_576
    """`max.request.size`: the largest record (and produce request) the producer builds."""
    delivery_timeout_ms: int = 120_000
    """`delivery.timeout.ms`: upper bound from `send` to success or failure, retries
    included. Must be >= `linger_ms` + `request_timeout_ms`."""
    retries: int = INT32_MAX
    """`retries`: how often a batch is re-sent after a retriable error (within
    `delivery_timeout_ms`)."""
    max_in_flight_requests_per_connection: int = 5
    """`max.in.flight.requests.per.connection`: produce requests awaiting a response per
    broker; at most 5 with idempotence, which keeps order across retries."""
    partitioner: Literal["murmur2", "mmh3"] = "murmur2"
    """`partitioner.class`: hash for keyed records. "murmur2" places keys exactly as the
    Java client (and librdkafka's murmur2_random) does; "mmh3" uses MurmurHash3. Records
    without a key always go to a sticky partition (KIP-480)."""
    transaction_timeout_ms: int = 60_000
    """`transaction.timeout.ms`: sent with InitProducerId; unused without transactions."""
    idempotence_defaulted: bool = field(init=False, repr=False)
    """Whether `enable_idempotence` was left to its default (not set by the caller)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.acks == "all":
            self.acks = -1
        if self.acks not in (-1, 0, 1):
            raise ConfigError(f"acks must be 0, 1, -1 or 'all', got {self.acks!r}")
        if self.compression_type not in COMPRESSION_BY_NAME:
            raise ConfigError(f"unknown compression_type {self.compression_type!r}")
        _at_least("batch_size", self.batch_size, 0)
        _at_least("linger_ms", self.linger_ms, 0)
        _at_least("buffer_memory", self.buffer_memory, 1024)
        _at_least("max_block_ms", self.max_block_ms, 0)
        _at_least("max_request_size", self.max_request_size, 1024)
        _at_least("retries", self.retries, 0)
        _at_least(
            "max_in_flight_requests_per_connection", self.max_in_flight_requests_per_connection, 1
        )
        _at_least(
            "delivery_timeout_ms",
            self.delivery_timeout_ms,
            self.linger_ms + self.request_timeout_ms,
        )
        if self.partitioner not in ("murmur2", "mmh3"):
            raise ConfigError(f"partitioner must be 'murmur2' or 'mmh3', got {self.partitioner!r}")
        conflicts = []
        if self.acks != -1:
            conflicts.append("acks must be 'all'")
        if self.retries == 0:
            conflicts.append("retries must be > 0")
        if self.max_in_flight_requests_per_connection > 5:
            conflicts.append("max_in_flight_requests_per_connection must be <= 5")
        self.idempotence_defaulted = self.enable_idempotence is None
        if self.enable_idempotence is None:
            self.enable_idempotence = not conflicts
        elif self.enable_idempotence and conflicts:
            raise ConfigError("enable_idempotence needs: " + "; ".join(conflicts))

    @property
    def compression(self) -> Compression:
        return COMPRESSION_BY_NAME[self.compression_type]

    @property
    def idempotent(self) -> bool:
        return bool(self.enable_idempotence)


PARTITION_ASSIGNMENT_STRATEGIES = ("range", "roundrobin", "cooperative-sticky")
"""The `partition.assignment.strategy` names the client implements (see client.assignors)."""


@dataclass(kw_only=True)
class ConsumerConfig(CommonConfig):
    """Consumer settings: fetching, and (with `group_id`) consumer-group membership."""

    auto_offset_reset: Literal["earliest", "latest", "none"] = "latest"
    """`auto.offset.reset`: where to start a partition without a position, or whose
    position is out of range; "none" raises `NoOffsetForPartitionError` /
    `OffsetOutOfRangeError` instead."""
    isolation_level: Literal["read_uncommitted", "read_committed"] = "read_uncommitted"
    """`isolation.level`: "read_committed" returns only committed transactional records,
    up to the last stable offset."""
    fetch_min_bytes: int = 1
    """`fetch.min.bytes`: the broker holds a fetch until this much data is available (or
    `fetch_max_wait_ms` passes)."""
    fetch_max_wait_ms: int = 500
    """`fetch.max.wait.ms`: longest the broker holds a fetch waiting for `fetch_min_bytes`."""
    fetch_max_bytes: int = 52_428_800
    """`fetch.max.bytes`: soft limit on one fetch response (the first batch is returned even
    when larger, so the consumer always progresses)."""
    max_partition_fetch_bytes: int = 1_048_576
    """`max.partition.fetch.bytes`: soft limit per partition per fetch response. Up to
    twice this per partition waits in memory for the application (the response being
    handed out and the next, fetched ahead)."""
    max_poll_records: int = 500
    """`max.poll.records`: most records `getmany` returns at once."""
    check_crcs: bool = True
    """`check.crcs`: verify each fetched batch's CRC-32C."""
    default_api_timeout_ms: int = 60_000
    """`default.api.timeout.ms`: how long `commit`, `committed` and similar calls may take,
    retries included."""
    group_id: str | None = None
    """`group.id`: the consumer group to join (`subscribe`) or commit offsets for. None means
    no group: only manual assignment, no commits."""
    group_instance_id: str | None = None
    """`group.instance.id`: makes this a static member (KIP-345): a restart within
    `session_timeout_ms` takes back the same assignment without a rebalance, and closing does
    not leave the group."""
    session_timeout_ms: int = 45_000
    """`session.timeout.ms`: the coordinator drops a member it has not heard from this long."""
    heartbeat_interval_ms: int = 3_000
    """`heartbeat.interval.ms`: time between heartbeats; must be below `session_timeout_ms`
    (a third of it or less is usual)."""
    max_poll_interval_ms: int = 300_000
    """`max.poll.interval.ms`: an application that takes longer than this between calls to
    `getone`/`getmany` (or async iteration steps) is taken to be stuck: the consumer leaves
    the group, giving up its partitions, and rejoins on its next call. Also the default
    rebalance timeout."""
    rebalance_timeout_ms: int | None = None
    """How long the coordinator waits for every member to rejoin in a rebalance (the
    JoinGroup RebalanceTimeoutMs); None means `max_poll_interval_ms`, as the Java client
    sends."""
    enable_auto_commit: bool = True
    """`enable.auto.commit`: with a `group_id`, commit the positions of records the
    application has finished with every `auto_commit_interval_ms`, before partitions are
    revoked, and on close."""
    auto_commit_interval_ms: int = 5_000
    """`auto.commit.interval.ms`: time between automatic commits."""
    partition_assignment_strategy: str | Sequence[str] = ("range", "roundrobin")
    """`partition.assignment.strategy`: assignors in order of preference, by name ("range",
    "roundrobin", "cooperative-sticky"; a list or a comma-separated string). The default is
    librdkafka's. The group's rebalance protocol is cooperative when every listed assignor
    supports it (i.e. only "cooperative-sticky"), else eager."""
    exclude_internal_topics: bool = True
    """`exclude.internal.topics`: a pattern subscription never matches internal topics
    (`__consumer_offsets`)."""
    assignment_strategies: tuple[str, ...] = field(init=False, repr=False)
    """`partition_assignment_strategy`, parsed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.auto_offset_reset not in ("earliest", "latest", "none"):
            raise ConfigError(f"bad auto_offset_reset {self.auto_offset_reset!r}")
        if self.isolation_level not in ("read_uncommitted", "read_committed"):
            raise ConfigError(f"bad isolation_level {self.isolation_level!r}")
        _at_least("fetch_min_bytes", self.fetch_min_bytes, 0)
        _at_least("fetch_max_wait_ms", self.fetch_max_wait_ms, 0)
        _at_least("fetch_max_bytes", self.fetch_max_bytes, 1)
        _at_least("max_partition_fetch_bytes", self.max_partition_fetch_bytes, 1)
        _at_least("max_poll_records", self.max_poll_records, 1)
        _at_least("default_api_timeout_ms", self.default_api_timeout_ms, 1)
        if self.group_id is not None and not isinstance(self.group_id, str):
            raise ConfigError(f"group_id must be a string, got {self.group_id!r}")
        if self.group_instance_id is not None:
            if self.group_id is None:
                raise ConfigError("group_instance_id needs a group_id")
            if not self.group_instance_id:
                raise ConfigError("group_instance_id must not be empty")
        _at_least("session_timeout_ms", self.session_timeout_ms, 1)
        _at_least("heartbeat_interval_ms", self.heartbeat_interval_ms, 1)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError("heartbeat_interval_ms must be lower than session_timeout_ms")
        _at_least("max_poll_interval_ms", self.max_poll_interval_ms, 1)
        if self.rebalance_timeout_ms is not None:
            _at_least("rebalance_timeout_ms", self.rebalance_timeout_ms, 1)
        _at_least("auto_commit_interval_ms", self.auto_commit_interval_ms, 1)
        strategies = self.partition_assignment_strategy
        names = strategies.split(",") if isinstance(strategies, str) else list(strategies)
        parsed = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
        if not parsed:
            raise ConfigError("partition_assignment_strategy names no assignor")
        unknown = [name for name in parsed if name not in PARTITION_ASSIGNMENT_STRATEGIES]
        if unknown:
            raise ConfigError(
                f"unknown partition_assignment_strategy {', '.join(unknown)} "
                f"(known: {', '.join(PARTITION_ASSIGNMENT_STRATEGIES)})"
            )
        self.assignment_strategies = parsed

    @property
    def effective_rebalance_timeout_ms(self) -> int:
        """The JoinGroup rebalance timeout: `rebalance_timeout_ms`, else
        `max_poll_interval_ms`."""
        if self.rebalance_timeout_ms is None:
            return self.max_poll_interval_ms
        return self.rebalance_timeout_ms

    @property
    def isolation_level_code(self) -> int:
        """The wire value: 0 read_uncommitted, 1 read_committed."""
        return 1 if self.isolation_level == "read_committed" else 0


@dataclass(kw_only=True)
class AdminConfig(CommonConfig):
    """Admin client settings."""

    default_api_timeout_ms: int = 60_000
    """`default.api.timeout.ms`: how long an admin call may take, retries included; also the
    timeout the broker is given for topic operations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("default_api_timeout_ms", self.default_api_timeout_ms, 1)
