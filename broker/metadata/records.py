"""Metadata records: the only way the metadata image changes.

They follow Kafka's metadata record types (`metadata/src/main/resources/common/metadata/`
in Kafka's sources), so that the controller's metadata log can carry them unchanged:

    RegisterBrokerRecord    a broker and its endpoints (re-registration replaces it)
    UnregisterBrokerRecord  a broker leaves
    TopicRecord             a topic's name and id (its partitions follow as PartitionRecords)
    PartitionRecord         a partition's full state: replicas, ISR, leader, epochs
    PartitionChangeRecord   a change of leader and/or ISR and/or replicas
    ConfigRecord            one topic config override set (value) or removed (None)
    RemoveTopicRecord       a topic and its partitions are gone

Epoch rules (Kafka's): a PartitionChangeRecord that names a new leader bumps the leader
epoch; every PartitionChangeRecord bumps the partition epoch (KIP-497).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where clients reach a broker on one listener."""

    listener_name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    broker_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class UnregisterBrokerRecord:
    broker_id: int


@dataclass(frozen=True, slots=True)
class TopicRecord:
    name: str
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    topic_id: uuid.UUID
    partition_id: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    """-1: no leader."""
    leader_epoch: int = 0
    partition_epoch: int = 0


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord:
    """Fields left None do not change."""

    topic_id: uuid.UUID
    partition_id: int
    leader: int | None = None
    isr: tuple[int, ...] | None = None
    replicas: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A topic config override: `value` None removes it (back to the broker default)."""

    topic: str
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    topic_id: uuid.UUID


MetadataRecord = (
    RegisterBrokerRecord
    | UnregisterBrokerRecord
    | TopicRecord
    | PartitionRecord
    | PartitionChangeRecord
    | ConfigRecord
    | RemoveTopicRecord
)
