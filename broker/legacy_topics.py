"""Topic files of data dirs from before the metadata log, read once to migrate them.

A single node used to keep one file per topic next to its partition directories,
`__topic.<topic>.json`; the metadata log replaces them. On the first start with an empty
metadata log, the node's controller commits `LegacyTopic.records` of every file, and only
then are the files removed (`remove_legacy_topic_files`), so a crash in between migrates
them again on the next start (the log is then no longer empty, and the files are just
removed).

Topic file (UTF-8 JSON object, `version` 1):

    {"version": 1, "name": "orders", "topic_id": "<uuid>", "is_internal": false,
     "partitions": [{"replicas": [0]}, ...], "configs": {"retention.ms": "60000"}}

It held what a topic is (its id, its replicas' placement, its config overrides), not who
leads it: the migrated partitions get leaders from `controller.topics.new_partition`.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tidelog.broker.controller.topics import (
    TopicError,
    new_partition,
    topic_config,
    validate_topic_name,
)
from tidelog.broker.meta_properties import MetadataStoreError
from tidelog.broker.metadata.records import MetadataRecord, TopicRecord
from tidelog.broker.topic_config import validate_topic_configs
from tidelog.storage.checkpoint import TEMP_SUFFIX
from tidelog.storage.filesystem import FileSystem

TOPIC_FILE_PREFIX = "__topic."
TOPIC_FILE_SUFFIX = ".json"
TOPIC_FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LegacyTopic:
    """What a topic file holds: `replicas[p]` is partition p's replica list."""

    name: str
    topic_id: uuid.UUID
    replicas: tuple[tuple[int, ...], ...]
    configs: Mapping[str, str]

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


def load_legacy_topics(fs: FileSystem, data_dir: str) -> list[LegacyTopic]:
    """Every topic file of `data_dir`, by name; MetadataStoreError for an unreadable one.
    An interrupted write (a temp file never renamed) is removed: that topic never existed."""
    topics = []
    for file_name in sorted(fs.listdir(data_dir)):
        if not file_name.startswith(TOPIC_FILE_PREFIX):
            continue
        path = posixpath.join(data_dir, file_name)
        if file_name.endswith(TEMP_SUFFIX):
            fs.remove(path)
            continue
        topics.append(_decode_topic(path, fs.read_file(path)))
    return topics


def remove_legacy_topic_files(fs: FileSystem, data_dir: str) -> None:
    """Durably remove every topic file of `data_dir` (once the metadata log holds them)."""
    names = [n for n in fs.listdir(data_dir) if n.startswith(TOPIC_FILE_PREFIX)]
    for name in names:
        fs.remove(posixpath.join(data_dir, name))
    if names:
        fs.fsync_dir(data_dir)


def _decode_topic(path: str, data: bytes) -> LegacyTopic:
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
        return LegacyTopic(
            name=name,
            topic_id=uuid.UUID(document["topic_id"]),
            replicas=tuple(replicas),
            configs=validate_topic_configs(configs),
        )
    except MetadataStoreError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, TopicError) as exc:
        raise MetadataStoreError(f"{path}: unreadable topic file: {exc}") from None
