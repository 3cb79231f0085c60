"""Topic rules and replica placement: a topic request in, metadata records out.

Every function here is pure: it reads the current `MetadataImage`, checks the request the
way Kafka does (raising TopicError with the code the client gets) and returns the records
that carry it out; nothing changes until the caller publishes them. Randomness (replica
placement's start, topic ids) comes from the `random.Random` passed in.

Leadership of a new partition is decided in one place, `new_partition`: the first live
replica of the assignment leads, in leader epoch 0, with the whole assignment in sync
(Kafka's controller does the same for a new partition).
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Collection, Mapping, Sequence

from tidelog.broker.config import BrokerConfig
from tidelog.broker.metadata.image import MetadataImage, TopicMetadata
from tidelog.broker.metadata.records import (
    ConfigRecord,
    MetadataRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from tidelog.broker.topic_config import InvalidTopicConfigError, log_config, validate_topic_configs
from tidelog.client.protocol.configs import ConfigResourceType
from tidelog.client.protocol.errors import ErrorCode

TOPIC_NAME_MAX_CHARS = 249
METADATA_TOPIC = "__cluster_metadata"
"""Reserved: the controller quorum's log (KRaft's)."""
MAX_PARTITIONS_PER_TOPIC = 10_000

_LEGAL_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


class TopicError(Exception):
    """A topic request that breaks a rule; `error_code` is what the client gets."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


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


def collision_key(name: str) -> str:
    """Kafka's metric names map '.' to '_', so two topics differing only there collide."""
    return name.replace(".", "_")


def random_topic_id(rng: random.Random) -> uuid.UUID:
    """A version 4 UUID; never the zero UUID nor Kafka's reserved metadata topic id (1)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def topic_config(topic: str, name: str, value: str | None) -> ConfigRecord:
    """The ConfigRecord of one topic config override (None: removed)."""
    return ConfigRecord(ConfigResourceType.TOPIC, topic, name, value)


def new_partition(
    topic_id: uuid.UUID, index: int, replicas: tuple[int, ...], live_brokers: Collection[int]
) -> PartitionRecord:
    """A new partition's record: the first live replica leads (-1 if none is live)."""
    leader = next((replica for replica in replicas if replica in live_brokers), -1)
    return PartitionRecord(topic_id, index, replicas, replicas, leader)


def create_topic(
    image: MetadataImage,
    config: BrokerConfig,
    rng: random.Random,
    name: str,
    *,
    num_partitions: int = -1,
    replication_factor: int = -1,
    configs: Mapping[str, str | None] | None = None,
    assignments: Sequence[Sequence[int]] | None = None,
) -> list[MetadataRecord]:
    """The records of a new topic; -1 takes the broker default for partitions / replication
    factor. `assignments[p]` places partition p's replicas by hand (the first is the
    preferred leader) and replaces both counts.

    Raises TopicError: INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS,
    INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT, INVALID_CONFIG."""
    validate_topic_name(name)
    if name == METADATA_TOPIC:
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"{name} is the cluster's metadata log")
    if image.topic(name) is not None:
        raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
    key = collision_key(name)
    colliding = next((t.name for t in image.topics() if collision_key(t.name) == key), None)
    if colliding is not None:
        raise TopicError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"topic {name!r} collides with existing topic {colliding!r} ('.' and '_' "
            f"are the same in metric names)",
        )
    if assignments is not None:
        placement = _checked_assignments(assignments, [b.node_id for b in image.brokers()])
    else:
        partitions = config.num_partitions if num_partitions == -1 else num_partitions
        _check_partition_count(partitions)
        factor = (
            config.default_replication_factor if replication_factor == -1 else replication_factor
        )
        brokers = placement_brokers(image)
        if factor < 1 or factor > len(brokers):
            raise TopicError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {factor} must be in [1, {len(brokers)}] "
                f"(the number of available brokers)",
            )
        placement = assign_replicas(brokers, partitions, factor, rng)
    _check_partition_count(len(placement))
    overrides = checked_configs(config, configs or {})
    topic_id = _new_topic_id(image, rng)
    records: list[MetadataRecord] = [TopicRecord(name, topic_id)]
    live = {b for b, _rack in placement_brokers(image)}
    records.extend(
        new_partition(topic_id, index, replicas, live) for index, replicas in enumerate(placement)
    )
    records.extend(topic_config(name, key, value) for key, value in sorted(overrides.items()))
    return records


def create_partitions(
    image: MetadataImage, rng: random.Random, name: str, count: int
) -> list[MetadataRecord]:
    """The records that grow topic `name` to `count` partitions (never shrink).

    Raises TopicError: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS."""
    topic = existing_topic(image, name)
    current = len(topic.partitions)
    if count <= current:
        raise TopicError(
            ErrorCode.INVALID_PARTITIONS,
            f"topic {name!r} has {current} partitions; the new count must be larger, got {count}",
        )
    if count > MAX_PARTITIONS_PER_TOPIC:
        raise TopicError(
            ErrorCode.INVALID_PARTITIONS,
            f"number of partitions must be at most {MAX_PARTITIONS_PER_TOPIC}, got {count}",
        )
    brokers = placement_brokers(image)
    factor = len(topic.partitions[0].replicas)
    if factor > len(brokers):
        raise TopicError(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"replication factor {factor} is more than the {len(brokers)} available brokers",
        )
    added = assign_replicas(brokers, count - current, factor, rng, first_index=current)
    live = {b for b, _rack in brokers}
    return [
        new_partition(topic.topic_id, current + offset, replicas, live)
        for offset, replicas in enumerate(added)
    ]


def alter_configs(
    image: MetadataImage, config: BrokerConfig, name: str, overrides: Mapping[str, str | None]
) -> list[MetadataRecord]:
    """The records that make `overrides` (None values dropped) topic `name`'s whole set of
    config overrides. Raises TopicError: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG."""
    topic = existing_topic(image, name)
    accepted = checked_configs(config, overrides)
    records: list[MetadataRecord] = [
        topic_config(name, key, None) for key in sorted(topic.configs) if key not in accepted
    ]
    records.extend(
        topic_config(name, key, value)
        for key, value in sorted(accepted.items())
        if topic.configs.get(key) != value
    )
    return records


def delete_topic(image: MetadataImage, name: str) -> list[MetadataRecord]:
    """Raises TopicError UNKNOWN_TOPIC_OR_PARTITION if there is no such topic."""
    return [RemoveTopicRecord(existing_topic(image, name).topic_id)]


def existing_topic(image: MetadataImage, name: str) -> TopicMetadata:
    topic = image.topic(name)
    if topic is None:
        raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
    return topic


def checked_configs(config: BrokerConfig, configs: Mapping[str, str | None]) -> dict[str, str]:
    """Topic config overrides as Kafka accepts them, or TopicError INVALID_CONFIG."""
    try:
        overrides = validate_topic_configs(configs)
        log_config(config, overrides)
    except (InvalidTopicConfigError, ValueError) as exc:
        raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
    return overrides


def placement_brokers(image: MetadataImage) -> list[tuple[int, str | None]]:
    """(id, rack) of the brokers new replicas may go to: registered, unfenced and not
    shutting down (Kafka's usable brokers), by id."""
    return [
        (b.node_id, b.rack)
        for b in image.brokers()
        if not b.fenced and not b.in_controlled_shutdown
    ]


def rack_alternated(brokers: Sequence[tuple[int, str | None]]) -> list[int]:
    """Broker ids taking one from each rack in turn (racks by name, brokers by id within a
    rack), as Kafka's rack-aware assignment orders them; brokers without a rack count as
    one rack of their own."""
    by_rack: dict[str, list[int]] = {}
    for node_id, rack in sorted(brokers):
        by_rack.setdefault(rack if rack is not None else "", []).append(node_id)
    racks = [by_rack[r] for r in sorted(by_rack)]
    ordered: list[int] = []
    for i in range(max((len(r) for r in racks), default=0)):
        ordered.extend(r[i] for r in racks if i < len(r))
    return ordered


def assign_replicas(
    brokers: Sequence[tuple[int, str | None]],
    partitions: int,
    factor: int,
    rng: random.Random,
    *,
    first_index: int = 0,
) -> list[tuple[int, ...]]:
    """Replica lists for partitions first_index.. over `brokers` ((id, rack) pairs): the
    leaders go round-robin over the rack-alternated brokers from a random start, so they
    spread evenly; each partition's followers are the next brokers in that order whose
    rack the partition does not use yet, and only once every rack is used, the next
    brokers whatever their rack. Without racks this is Kafka's rack-unaware round-robin."""
    ordered = rack_alternated(brokers)
    rack_of = {node_id: rack for node_id, rack in brokers}
    racks = len(set(rack_of.values()))
    start = rng.randrange(len(ordered))
    placement = []
    for p in range(first_index, first_index + partitions):
        first = (start + p) % len(ordered)
        replicas = [ordered[first]]
        candidates = [ordered[(first + j) % len(ordered)] for j in range(1, len(ordered))]
        for candidate in candidates:
            if len(replicas) == factor:
                break
            used = {rack_of[r] for r in replicas}
            if rack_of[candidate] not in used or len(used) >= racks:
                replicas.append(candidate)
        placement.append(tuple(replicas))
    return placement


def _check_partition_count(partitions: int) -> None:
    if not 1 <= partitions <= MAX_PARTITIONS_PER_TOPIC:
        raise TopicError(
            ErrorCode.INVALID_PARTITIONS,
            f"number of partitions must be in [1, {MAX_PARTITIONS_PER_TOPIC}], got {partitions}",
        )


def _checked_assignments(
    assignments: Sequence[Sequence[int]], brokers: Sequence[int]
) -> list[tuple[int, ...]]:
    """Explicit replica lists, checked as Kafka checks them."""
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
        placement.append(tuple(replicas))
    return placement


def _new_topic_id(image: MetadataImage, rng: random.Random) -> uuid.UUID:
    for _ in range(100):
        topic_id = random_topic_id(rng)
        if image.topic_by_id(topic_id) is None:
            return topic_id
    raise AssertionError("100 random topic ids collided: the random source is broken")
