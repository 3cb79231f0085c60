"""The single node's metadata on disk: meta.properties and one file per topic.

Data dir layout (next to the partition directories that `LogDirectory` owns):

    meta.properties            Kafka's format: "version=1", "cluster.id=...", "node.id=..."
    __topic.<topic>.json       one file per topic (below), replaced atomically

(Plain files, so `LogDirectory`, which owns the subdirectories, passes over them.)

Topic file (UTF-8 JSON object, `version` 1):

    {"version": 1, "name": "orders", "topic_id": "<uuid>", "is_internal": false,
     "partitions": [{"replicas": [0]}, ...], "configs": {"retention.ms": "60000"}}

It holds what a topic is (its id, its replicas' placement, its config overrides), not who
leads it: leadership is decided again at every start (`controller.topics.new_partition`).
Writes go through the `FileSystem` seam: temp file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import base64
import json
import posixpath
import random
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.topics import (
    TopicError,
    new_partition,
    topic_config,
    validate_topic_name,
)
from tidelog.broker.metadata.image import INTERNAL_TOPICS, TopicMetadata
from tidelog.broker.metadata.records import MetadataRecord, TopicRecord
from tidelog.broker.topic_config import validate_topic_configs
from tidelog.storage.checkpoint import TEMP_SUFFIX, read_file_if_exists, write_atomic
from tidelog.storage.filesystem import FileSystem

TOPIC_FILE_PREFIX = "__topic."
TOPIC_FILE_SUFFIX = ".json"
META_PROPERTIES = "meta.properties"
TOPIC_FILE_VERSION = 1
META_PROPERTIES_VERSION = 1


class MetadataStoreError(Exception):
    """The data dir's metadata is unreadable or belongs to another node or cluster."""


@dataclass(frozen=True, slots=True)
class StoredTopic:
    """What a topic file holds: `replicas[p]` is partition p's replica list."""

    name: str
    topic_id: uuid.UUID
    replicas: tuple[tuple[int, ...], ...]
    configs: Mapping[str, str]

    @classmethod
    def of(cls, topic: TopicMetadata) -> StoredTopic:
        return cls(
            topic.name,
            topic.topic_id,
            tuple(p.replicas for p in topic.partitions),
            dict(topic.configs),
        )

    def records(self, live_brokers: Collection[int]) -> list[MetadataRecord]:
        """The records that publish this topic, with leaders chosen among `live_brokers`."""
        records: list[MetadataRecord] = [TopicRecord(self.name, self.topic_id)]
        records.extend(
            new_partition(self.topic_id, index, replicas, live_brokers)
            for index, replicas in enumerate(self.replicas)
        )
        records.extend(
            topic_config(self.name, key, value) for key, value in sorted(self.configs.items())
        )
        return records


class TopicStore:
    """The topic files of one data dir (see module docstring)."""

    def __init__(self, fs: FileSystem, data_dir: str) -> None:
        self._fs = fs
        self._data_dir = data_dir

    def load(self) -> list[StoredTopic]:
        """Every stored topic, by name. An interrupted write (a temp file never renamed)
        is removed: that topic never existed."""
        ensure_dir(self._fs, self._data_dir)
        topics = []
        for file_name in sorted(self._fs.listdir(self._data_dir)):
            if not file_name.startswith(TOPIC_FILE_PREFIX):
                continue
            path = posixpath.join(self._data_dir, file_name)
            if file_name.endswith(TEMP_SUFFIX):
                self._fs.remove(path)
                continue
            topics.append(_decode_topic(path, self._fs.read_file(path)))
        return topics

    def write(self, topic: StoredTopic) -> None:
        """Durably create or replace the topic's file."""
        write_atomic(self._fs, self._path(topic.name), _encode_topic(topic))

    def remove(self, name: str) -> None:
        """Durably remove the topic's file."""
        self._fs.remove(self._path(name))
        self._fs.fsync_dir(self._data_dir)

    def _path(self, name: str) -> str:
        return posixpath.join(self._data_dir, TOPIC_FILE_PREFIX + name + TOPIC_FILE_SUFFIX)


def random_cluster_id(rng: random.Random) -> str:
    """Kafka's cluster id format: 16 random bytes in URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode("ascii")


def load_cluster_identity(
    fs: FileSystem, data_dir: str, config: BrokerConfig, rng: random.Random
) -> str:
    """Ensure `data_dir` exists and carries meta.properties for this node; return the
    cluster id. The first start writes the file (with `config.cluster_id`, or a new random
    id); later starts refuse a data dir of another node or cluster."""
    ensure_dir(fs, data_dir)
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


def ensure_dir(fs: FileSystem, path: str) -> None:
    if fs.is_dir(path):
        return
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path and not fs.exists(parent):
        ensure_dir(fs, parent)
    fs.mkdir(path)
    if parent:
        fs.fsync_dir(parent)


def _encode_topic(topic: StoredTopic) -> bytes:
    document = {
        "version": TOPIC_FILE_VERSION,
        "name": topic.name,
        "topic_id": str(topic.topic_id),
        "is_internal": topic.name in INTERNAL_TOPICS,
        "partitions": [{"replicas": list(replicas)} for replicas in topic.replicas],
        "configs": dict(topic.configs),
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _decode_topic(path: str, data: bytes) -> StoredTopic:
    try:
        document: Any = json.loads(data)
        if document["version"] != TOPIC_FILE_VERSION:
            raise MetadataStoreError(f"{path}: unknown topic file version {document['version']}")
        name = document["name"]
        validate_topic_name(name)
        if posixpath.basename(path) != TOPIC_FILE_PREFIX + name + TOPIC_FILE_SUFFIX:
            raise MetadataStoreError(f"{path}: holds topic {name!r}")
        replicas = []
        for index, entry in enumerate(document["partitions"]):
            partition_replicas = tuple(int(r) for r in entry["replicas"])
            if not partition_replicas:
                raise MetadataStoreError(f"{path}: partition {index} has no replicas")
            replicas.append(partition_replicas)
        configs = {str(k): str(v) for k, v in document["configs"].items()}
        return StoredTopic(
            name=name,
            topic_id=uuid.UUID(document["topic_id"]),
            replicas=tuple(replicas),
            configs=validate_topic_configs(configs),
        )
    except MetadataStoreError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, TopicError) as exc:
        raise MetadataStoreError(f"{path}: unreadable topic file: {exc}") from None
