"""Topic management on a single node: create topics, persist their metadata, open their logs.

The `TopicManager` is the writer of the `Cluster` image while there is no controller. It
validates names and settings the way Kafka does, assigns replicas over the registered
brokers, writes the topic's metadata file durably, opens a `PartitionLog` for every
partition this node hosts, and only then publishes the topic in the `Cluster`.

Data dir layout (next to the partition directories that `LogDirectory` owns):

    meta.properties            Kafka's format: "version=1", "cluster.id=...", "node.id=..."
    __topic.<topic>.json       one file per topic (below), replaced atomically

(Plain files, so `LogDirectory`, which owns the subdirectories, passes over them.)

Topic file (UTF-8 JSON object, `version` 1):

    {"version": 1, "name": "orders", "topic_id": "<uuid>", "is_internal": false,
     "partitions": [{"replicas": [0]}, ...], "configs": {"retention.ms": "60000"}}

Writes go through the `FileSystem` seam: temp file, fsync, rename, fsync of the directory.
A topic's file is written before its partition logs are created, so after a crash at any
point a restart finds either no topic or the whole topic (its missing logs are created).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import posixpath
import random
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from tidelog.broker.cluster import Cluster, PartitionMetadata, TopicMetadata
from tidelog.broker.config import BrokerConfig
from tidelog.broker.topic_config import InvalidTopicConfigError, log_config, validate_topic_configs
from tidelog.client.protocol.errors import ErrorCode
from tidelog.storage.checkpoint import TEMP_SUFFIX, read_file_if_exists, write_atomic
from tidelog.storage.filesystem import FileSystem
from tidelog.storage.log import PartitionLog
from tidelog.storage.log_directory import LogDirectory

log = logging.getLogger(__name__)

TOPIC_FILE_PREFIX = "__topic."
TOPIC_FILE_SUFFIX = ".json"
META_PROPERTIES = "meta.properties"
TOPIC_FILE_VERSION = 1
META_PROPERTIES_VERSION = 1

TOPIC_NAME_MAX_CHARS = 249
MAX_PARTITIONS_PER_TOPIC = 10_000
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})

_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


class TopicError(Exception):
    """A topic request that breaks a rule; `error_code` is what the client gets."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


class MetadataStoreError(Exception):
    """The data dir's metadata is unreadable or belongs to another node or cluster."""


def validate_topic_name(name: str) -> None:
    """Kafka's rules: 1-249 characters of [a-zA-Z0-9._-], not "." or ".."."""
    if not name:
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, "topic name is empty")
    if name in (".", ".."):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"topic name cannot be {name!r}")
    if len(name) > TOPIC_NAME_MAX_CHARS:
        raise TopicError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"topic name is {len(name)} characters, more than {TOPIC_NAME_MAX_CHARS}",
        )
    if not _LEGAL_TOPIC_NAME.fullmatch(name):
        raise TopicError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"topic name {name!r} has characters other than ASCII letters, digits, '.', '_', '-'",
        )


def _collision_key(name: str) -> str:
    # Kafka's metric names map '.' to '_', so two topics differing only there collide.
    return name.replace(".", "_")


def random_cluster_id(rng: random.Random) -> str:
    """Kafka's cluster id format: 16 random bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode("ascii")


def random_topic_id(rng: random.Random) -> uuid.UUID:
    """A version 4 UUID; never the zero UUID nor Kafka's reserved metadata topic id (1)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def load_cluster_identity(
    fs: FileSystem, data_dir: str, config: BrokerConfig, rng: random.Random
) -> str:
    """Ensure `data_dir` exists and carries meta.properties for this node; return the
    cluster id. The first start writes the file (with `config.cluster_id`, or a new random
    id); later starts refuse a data dir of another node or cluster."""
    _ensure_dir(fs, data_dir)
    path = posixpath.join(data_dir, META_PROPERTIES)
    data = read_file_if_exists(fs, path)
    if data is None:
        cluster_id = config.cluster_id or random_cluster_id(rng)
        body = (
            f"version={META_PROPERTIES_VERSION}\ncluster.id={cluster_id}\n"
            f"node.id={config.node_id}\n"
        )
        write_atomic(fs, path, body.encode())
        return cluster_id
    properties = _parse_properties(path, data)
    stored_node = properties.get("node.id")
    stored_cluster = properties.get("cluster.id")
    if stored_cluster is None or stored_node is None:
        raise MetadataStoreError(f"{path}: cluster.id and node.id are required")
    if stored_node != str(config.node_id):
        raise MetadataStoreError(
            f"{path}: data dir belongs to node {stored_node}, this is node {config.node_id}"
        )
    if config.cluster_id is not None and config.cluster_id != stored_cluster:
        raise MetadataStoreError(
            f"{path}: data dir belongs to cluster {stored_cluster}, "
            f"configured cluster_id is {config.cluster_id}"
        )
    return stored_cluster


def _parse_properties(path: str, data: bytes) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataStoreError(f"{path}: not UTF-8: {exc}") from None
    properties = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise MetadataStoreError(f"{path}: line {line!r} is not key=value")
        properties[key.strip()] = value.strip()
    return properties


def _ensure_dir(fs: FileSystem, path: str) -> None:
    if fs.is_dir(path):
        return
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path and not fs.exists(parent):
        _ensure_dir(fs, parent)
    fs.mkdir(path)
    if parent:
        fs.fsync_dir(parent)


class TopicManager:
    """Creates, deletes and loads topics for node `config.node_id` (see module docstring).

    Owns the data dir's `LogDirectory`: `open` recovers it, `close` flushes, checkpoints and
    closes every log. Blocking calls (`open`, `create_topic`, `delete_topic`, `close`) do
    little I/O besides the fsyncs of small metadata files and new directories.
    """

    def __init__(
        self,
        *,
        config: BrokerConfig,
        fs: FileSystem,
        cluster: Cluster,
        rng: random.Random,
        now_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self._fs = fs
        self._cluster = cluster
        self._rng = rng
        self._now_ms = now_ms
        self._log_directory: LogDirectory | None = None
        self._collision_keys: dict[str, str] = {}

    @classmethod
    def open(
        cls,
        *,
        config: BrokerConfig,
        fs: FileSystem,
        cluster: Cluster,
        rng: random.Random,
        now_ms: Callable[[], int],
    ) -> TopicManager:
        """Publish every persisted topic in `cluster` and recover its local partition logs.

        Partition logs of topics that no longer exist (a deletion cut short by a crash) are
        deleted, so that a new topic of the same name starts empty.
        """
        manager = cls(config=config, fs=fs, cluster=cluster, rng=rng, now_ms=now_ms)
        manager._load()
        return manager

    def _load(self) -> None:
        _ensure_dir(self._fs, self.config.data_dir)
        topics: dict[str, TopicMetadata] = {}
        for file_name in self._fs.listdir(self.config.data_dir):
            if not file_name.startswith(TOPIC_FILE_PREFIX):
                continue
            path = posixpath.join(self.config.data_dir, file_name)
            if file_name.endswith(TEMP_SUFFIX):
                # An interrupted write; the rename never happened, so the topic never existed.
                self._fs.remove(path)
                continue
            topic = _decode_topic(path, self._fs.read_file(path))
            topics[topic.name] = topic
        configs = {name: topic.configs for name, topic in topics.items()}
        self._log_directory = LogDirectory.open(
            self.config.data_dir,
            self._fs,
            self._now_ms,
            config_for=lambda name: log_config(self.config, configs.get(name, {})),
        )
        for (name, partition), _ in self._log_directory:
            owner = topics.get(name)
            if owner is None or not self._hosts(owner, partition):
                log.warning("deleting the log of %s-%d: not a replica of a topic", name, partition)
                self._log_directory.delete(name, partition)
        for topic in topics.values():
            self._open_logs(topic)
            self._publish(topic)
        log.info("loaded %d topics, %d local partitions", len(topics), len(self._log_directory))

    def close(self) -> None:
        """Flush every log, write the checkpoints, close the files. Idempotent."""
        if self._log_directory is not None:
            directory, self._log_directory = self._log_directory, None
            directory.close()

    @property
    def log_directory(self) -> LogDirectory:
        if self._log_directory is None:
            raise RuntimeError("the topic manager is closed")
        return self._log_directory

    # -- reads

    def log(self, topic: str, partition: int) -> PartitionLog | None:
        """The local log of a partition, or None if this node hosts no replica of it."""
        return self.log_directory.get(topic, partition)

    def logs(self) -> Iterator[tuple[tuple[str, int], PartitionLog]]:
        """Every local partition log as ((topic, partition), log)."""
        return iter(self.log_directory)

    # -- writes

    def create_topic(
        self,
        name: str,
        *,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str | None] | None = None,
        assignments: Sequence[Sequence[int]] | None = None,
        validate_only: bool = False,
    ) -> TopicMetadata:
        """Create a topic; -1 takes the broker default for partitions / replication factor.

        `assignments` places the replicas by hand (`assignments[p]` lists partition p's
        broker ids, the first is the preferred leader); it replaces both counts.
        Raises TopicError: INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS,
        INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT,
        INVALID_CONFIG. With `validate_only` nothing is written and the would-be topic is
        returned. Storage failures propagate as OSError (the caller answers
        KAFKA_STORAGE_ERROR).
        """
        validate_topic_name(name)
        if self._cluster.topic(name) is not None:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        colliding = self._collision_keys.get(_collision_key(name))
        if colliding is not None:
            raise TopicError(
                ErrorCode.INVALID_TOPIC_EXCEPTION,
                f"topic {name!r} collides with existing topic {colliding!r} ('.' and '_' "
                f"are the same in metric names)",
            )
        brokers = [b.node_id for b in self._cluster.brokers()]
        if assignments is not None:
            placement = _manual_placement(assignments, brokers)
            num_partitions = len(placement)
            replication_factor = len(placement[0].replicas) if placement else 0
        partitions = self.config.num_partitions if num_partitions == -1 else num_partitions
        if not 1 <= partitions <= MAX_PARTITIONS_PER_TOPIC:
            raise TopicError(
                ErrorCode.INVALID_PARTITIONS,
                f"number of partitions must be in [1, {MAX_PARTITIONS_PER_TOPIC}], "
                f"got {partitions}",
            )
        factor = (
            self.config.default_replication_factor
            if replication_factor == -1
            else replication_factor
        )
        if factor < 1 or factor > len(brokers):
            raise TopicError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {factor} must be in [1, {len(brokers)}] "
                f"(the number of available brokers)",
            )
        try:
            overrides = validate_topic_configs(configs or {})
            log_config(self.config, overrides)
        except (InvalidTopicConfigError, ValueError) as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        topic = TopicMetadata(
            name=name,
            topic_id=self._new_topic_id(),
            partitions=(
                placement if assignments is not None else self._assign(partitions, factor, brokers)
            ),
            is_internal=name in INTERNAL_TOPICS,
            configs=MappingProxyType(overrides),
        )
        if validate_only:
            return topic
        self._persist(topic)
        log.info(
            "created topic %s (%s) with %d partitions, replication factor %d",
            name,
            topic.topic_id,
            partitions,
            factor,
        )
        return topic

    def delete_topic(self, name: str) -> TopicMetadata:
        """Delete a topic and its local logs; TopicError UNKNOWN_TOPIC_OR_PARTITION if absent.

        The metadata file goes first: after a crash midway the remaining logs are strays,
        which `open` deletes.
        """
        topic = self._existing(name)
        self._fs.remove(self._topic_path(name))
        self._fs.fsync_dir(self.config.data_dir)
        self._cluster.remove_topic(name)
        del self._collision_keys[_collision_key(name)]
        for partition in topic.partitions:
            self.log_directory.delete(name, partition.partition_index)
        log.info("deleted topic %s (%s)", name, topic.topic_id)
        return topic

    def create_partitions(
        self, name: str, count: int, *, validate_only: bool = False
    ) -> TopicMetadata:
        """Grow topic `name` to `count` partitions (never shrink); returns the new metadata.

        Raises TopicError: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS. The topic file is
        rewritten before the new logs are created (see `create_topic` for why).
        """
        topic = self._existing(name)
        current = len(topic.partitions)
        if count <= current:
            raise TopicError(
                ErrorCode.INVALID_PARTITIONS,
                f"topic {name!r} has {current} partitions; the new count must be larger, "
                f"got {count}",
            )
        if count > MAX_PARTITIONS_PER_TOPIC:
            raise TopicError(
                ErrorCode.INVALID_PARTITIONS,
                f"number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}, got {count}",
            )
        brokers = [b.node_id for b in self._cluster.brokers()]
        factor = len(topic.partitions[0].replicas)
        added = self._assign(count - current, factor, brokers, first_index=current)
        grown = dataclasses.replace(topic, partitions=topic.partitions + added)
        if not validate_only:
            self._persist(grown)
            log.info("topic %s now has %d partitions (was %d)", name, count, current)
        return grown

    def alter_configs(
        self, name: str, overrides: Mapping[str, str | None], *, validate_only: bool = False
    ) -> TopicMetadata:
        """Replace topic `name`'s config overrides with `overrides` (None values dropped).

        Raises TopicError: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG. The new configs apply
        to the topic's open logs at once (segment settings from the next roll).
        """
        topic = self._existing(name)
        try:
            accepted = validate_topic_configs(overrides)
            config = log_config(self.config, accepted)
        except (InvalidTopicConfigError, ValueError) as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        altered = dataclasses.replace(topic, configs=MappingProxyType(accepted))
        if not validate_only:
            write_atomic(self._fs, self._topic_path(name), _encode_topic(altered))
            for partition in altered.partitions:
                partition_log = self.log(name, partition.partition_index)
                if partition_log is not None:
                    partition_log.update_config(config)
            self._publish(altered)
            log.info("topic %s configs are now %s", name, accepted)
        return altered

    def _existing(self, name: str) -> TopicMetadata:
        topic = self._cluster.topic(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        return topic

    def _persist(self, topic: TopicMetadata) -> None:
        """Write the topic file, open the local logs, publish: the order `open` relies on."""
        write_atomic(self._fs, self._topic_path(topic.name), _encode_topic(topic))
        self._open_logs(topic)
        self._publish(topic)

    def _new_topic_id(self) -> uuid.UUID:
        for _ in range(100):
            topic_id = random_topic_id(self._rng)
            if self._cluster.topic_by_id(topic_id) is None:
                return topic_id
        raise AssertionError("100 random topic ids collided: the random source is broken")

    def _assign(
        self, partitions: int, factor: int, brokers: list[int], *, first_index: int = 0
    ) -> tuple[PartitionMetadata, ...]:
        # Round-robin from a random start, as Kafka's rack-unaware assignment: leaders
        # spread over the brokers, each partition's followers are the next brokers.
        start = self._rng.randrange(len(brokers))
        assigned = []
        for p in range(first_index, first_index + partitions):
            replicas = tuple(brokers[(start + p + j) % len(brokers)] for j in range(factor))
            assigned.append(
                PartitionMetadata(
                    partition_index=p,
                    leader_id=replicas[0],
                    leader_epoch=0,
                    replicas=replicas,
                    isr=replicas,
                )
            )
        return tuple(assigned)

    def _topic_path(self, name: str) -> str:
        return posixpath.join(self.config.data_dir, TOPIC_FILE_PREFIX + name + TOPIC_FILE_SUFFIX)

    def _hosts(self, topic: TopicMetadata, partition: int) -> bool:
        metadata = topic.partition(partition)
        return metadata is not None and self.config.node_id in metadata.replicas

    def _open_logs(self, topic: TopicMetadata) -> None:
        config = log_config(self.config, topic.configs)
        for partition in topic.partitions:
            if self.config.node_id in partition.replicas:
                self.log_directory.get_or_create(topic.name, partition.partition_index, config)

    def _publish(self, topic: TopicMetadata) -> None:
        self._cluster.put_topic(topic)
        self._collision_keys[_collision_key(topic.name)] = topic.name


def _manual_placement(
    assignments: Sequence[Sequence[int]], brokers: list[int]
) -> tuple[PartitionMetadata, ...]:
    """Partition metadata from explicit replica lists, checked as Kafka checks them."""
    placement = []
    for index, replicas in enumerate(assignments):
        if not replicas or len(set(replicas)) != len(replicas):
            raise TopicError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"partition {index}: replicas {list(replicas)} are empty or repeat a broker",
            )
        if len(replicas) != len(assignments[0]):
            raise TopicError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"partition {index}: {len(replicas)} replicas, partition 0 has "
                f"{len(assignments[0])}: every partition needs the same replication factor",
            )
        unknown = sorted(set(replicas) - set(brokers))
        if unknown:
            raise TopicError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"partition {index}: unknown broker ids {unknown}",
            )
        replica_ids = tuple(replicas)
        placement.append(
            PartitionMetadata(
                partition_index=index,
                leader_id=replica_ids[0],
                leader_epoch=0,
                replicas=replica_ids,
                isr=replica_ids,
            )
        )
    return tuple(placement)


def _encode_topic(topic: TopicMetadata) -> bytes:
    document = {
        "version": TOPIC_FILE_VERSION,
        "name": topic.name,
        "topic_id": str(topic.topic_id),
        "is_internal": topic.is_internal,
        "partitions": [{"replicas": list(p.replicas)} for p in topic.partitions],
        "configs": dict(topic.configs),
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _decode_topic(path: str, data: bytes) -> TopicMetadata:
    try:
        document: Any = json.loads(data)
        if document["version"] != TOPIC_FILE_VERSION:
            raise MetadataStoreError(f"{path}: unknown topic file version {document['version']}")
        name = document["name"]
        validate_topic_name(name)
        if posixpath.basename(path) != TOPIC_FILE_PREFIX + name + TOPIC_FILE_SUFFIX:
            raise MetadataStoreError(f"{path}: holds topic {name!r}")
        partitions = []
        for index, entry in enumerate(document["partitions"]):
            replicas = tuple(int(r) for r in entry["replicas"])
            if not replicas:
                raise MetadataStoreError(f"{path}: partition {index} has no replicas")
            partitions.append(
                PartitionMetadata(
                    partition_index=index,
                    leader_id=replicas[0],
                    leader_epoch=0,
                    replicas=replicas,
                    isr=replicas,
                )
            )
        configs = {str(k): str(v) for k, v in document["configs"].items()}
        return TopicMetadata(
            name=name,
            topic_id=uuid.UUID(document["topic_id"]),
            partitions=tuple(partitions),
            is_internal=bool(document["is_internal"]),
            configs=MappingProxyType(validate_topic_configs(configs)),
        )
    except MetadataStoreError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, TopicError) as exc:
        raise MetadataStoreError(f"{path}: unreadable topic file: {exc}") from None
