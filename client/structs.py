"""The small value types the producer, consumer and admin client hand to their callers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tidelog.client.protocol.records import TimestampType

Header = tuple[str, bytes | None]
"""A record header: a UTF-8 key and a value that may be null."""


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where the broker stored a produced record.

    `offset` is -1 when the broker did not report it (acks=0, or a retried batch that the
    broker recognised as a duplicate without naming its offset). `timestamp_ms` is the
    broker's append time for topics with `message.timestamp.type=LogAppendTime`, else the
    record's own (create) timestamp.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: TimestampType


class ConsumerRecord(NamedTuple):
    """One record read from a partition (a named tuple: cheap to build per record)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: TimestampType
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] = ()
    leader_epoch: int = -1
    """The partition leader epoch stamped on the record's batch (-1 when unknown)."""

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class NewTopic:
    """A topic to create. `num_partitions`/`replication_factor` of -1 take broker defaults.

    `replica_assignment`, when given, maps partition index -> broker ids and replaces
    `num_partitions` and `replication_factor`. `configs` are topic-level configs by their
    Kafka names (`retention.ms`, `cleanup.policy`, ...).
    """

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    replica_assignment: dict[int, list[int]] | None = None
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed consumer-group offset: the offset of the next record to consume, an
    optional application string stored with it, and the leader epoch of the last consumed
    record (-1 when unknown)."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadata:
    """A consumer's place in its group: the generation it belongs to and its member id
    (-1 and "" outside a generation)."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None
