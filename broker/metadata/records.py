"""Metadata records: the only way the metadata image changes.

They are Kafka's metadata record types (`metadata/src/main/resources/common/metadata/` in
Kafka 4.x), field for field: each dataclass field is the snake_case form of Kafka's field
name, nested structs are dataclasses too, arrays are tuples. `schemas.py` holds Kafka's
schemas for them and `serde.py` Kafka's byte encoding, so the controller's metadata log and
its snapshots carry them unchanged:

    RegisterBrokerRecord            a broker, its endpoints and features; fenced until a
                                    later record unfences it (re-registration replaces it)
    UnregisterBrokerRecord          a broker leaves
    TopicRecord                     a topic's name and id (its partitions follow)
    PartitionRecord                 a partition's full state: replicas, ISR, leader, epochs
    ConfigRecord                    one config of a resource set (value) or removed (None)
    PartitionChangeRecord           a change of leader, ISR, replicas, ...: None (or the
                                    sentinel, for leader and leader_recovery_state) keeps
    FenceBrokerRecord               a broker is fenced (legacy; BrokerRegistrationChange
    UnfenceBrokerRecord             a broker is unfenced      says the same since Kafka 3.3)
    RemoveTopicRecord               a topic and its partitions are gone
    FeatureLevelRecord              a finalized feature level (0: the feature is off)
    ProducerIdsRecord               the next block of producer ids starts here
    BrokerRegistrationChangeRecord  a broker's fencing / controlled shutdown / log dirs
    NoOpRecord                      nothing (the controller's heartbeat into the log)

Python-side defaults are for building records in code and are not always Kafka's schema
defaults: a new partition starts at leader epoch 0 and partition epoch 0, as Kafka's
controller writes it, where the schema's default (for a field absent from a version) is -1.

Epoch rules (Kafka's): a PartitionChangeRecord that names a leader (anything but
NO_LEADER_CHANGE) bumps the leader epoch; every PartitionChangeRecord bumps the partition
epoch (KIP-497).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from tidelog.client.protocol.primitives import ZERO_UUID

NO_LEADER = -1
"""PartitionRecord / PartitionChangeRecord `leader`: the partition has no leader."""
NO_LEADER_CHANGE = -2
"""PartitionChangeRecord `leader`: the leader does not change (Kafka's default)."""
NO_LEADER_RECOVERY_STATE_CHANGE = -1
"""PartitionChangeRecord `leader_recovery_state`: it does not change (Kafka's default)."""


class SecurityProtocol(enum.IntEnum):
    """Kafka's SecurityProtocol ids, as RegisterBrokerRecord's endpoints carry them."""

    PLAINTEXT = 0
    SSL = 1
    SASL_PLAINTEXT = 2
    SASL_SSL = 3


class LeaderRecoveryState(enum.IntEnum):
    """Kafka's LeaderRecoveryState (KIP-704)."""

    RECOVERED = 0
    RECOVERING = 1
    """The leader was elected uncleanly and is still recovering."""


class FencingChange(enum.IntEnum):
    """BrokerRegistrationChangeRecord `fenced` (Kafka's BrokerRegistrationFencingChange)."""

    UNFENCE = -1
    NONE = 0
    FENCE = 1


class ControlledShutdownChange(enum.IntEnum):
    """BrokerRegistrationChangeRecord `in_controlled_shutdown` (Kafka's
    BrokerRegistrationInControlledShutdownChange)."""

    NONE = 0
    IN_CONTROLLED_SHUTDOWN = 1


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Kafka's BrokerEndpoint: where clients reach a broker on one listener (`name`)."""

    name: str
    host: str
    port: int
    security_protocol: int = SecurityProtocol.PLAINTEXT


@dataclass(frozen=True, slots=True)
class BrokerFeature:
    """A feature a broker supports, and the levels it supports it at."""

    name: str
    min_supported_version: int
    max_supported_version: int


@dataclass(frozen=True, slots=True)
class RegisterBrokerRecord:
    broker_id: int
    end_points: tuple[Endpoint, ...] = ()
    rack: str | None = None
    broker_epoch: int = 0
    """Kafka's controller gives the offset of this record in the metadata log."""
    incarnation_id: uuid.UUID = ZERO_UUID
    """A random id per broker process start."""
    features: tuple[BrokerFeature, ...] = ()
    fenced: bool = True
    in_controlled_shutdown: bool = False
    is_migrating_zk_broker: bool = False
    log_dirs: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class UnregisterBrokerRecord:
    broker_id: int
    broker_epoch: int


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
    """NO_LEADER (-1): no leader."""
    leader_epoch: int = 0
    partition_epoch: int = 0
    removing_replicas: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()
    leader_recovery_state: int = LeaderRecoveryState.RECOVERED
    directories: tuple[uuid.UUID, ...] = ()
    """Each replica's log directory, in `replicas` order; empty: not assigned."""
    eligible_leader_replicas: tuple[int, ...] | None = None
    last_known_elr: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class PartitionChangeRecord:
    """None (or the NO_..._CHANGE sentinel) keeps a field as it is."""

    topic_id: uuid.UUID
    partition_id: int
    leader: int = NO_LEADER_CHANGE
    isr: tuple[int, ...] | None = None
    replicas: tuple[int, ...] | None = None
    removing_replicas: tuple[int, ...] | None = None
    adding_replicas: tuple[int, ...] | None = None
    leader_recovery_state: int = NO_LEADER_RECOVERY_STATE_CHANGE
    directories: tuple[uuid.UUID, ...] | None = None
    eligible_leader_replicas: tuple[int, ...] | None = None
    last_known_elr: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """One config of a resource (`resource_type` is Kafka's ConfigResource type: 2 topic,
    4 broker, ...): `value` None removes it (back to the default)."""

    resource_type: int
    resource_name: str
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class FenceBrokerRecord:
    id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class UnfenceBrokerRecord:
    id: int
    epoch: int


@dataclass(frozen=True, slots=True)
class RemoveTopicRecord:
    topic_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class FeatureLevelRecord:
    """A finalized feature level for the cluster; level 0 means the feature is off."""

    name: str
    feature_level: int


@dataclass(frozen=True, slots=True)
class ProducerIdsRecord:
    """The controller handed a block of producer ids to `broker_id`; `next_producer_id` is
    the first id of the next block."""

    broker_id: int
    broker_epoch: int
    next_producer_id: int


@dataclass(frozen=True, slots=True)
class BrokerRegistrationChangeRecord:
    """`fenced` is a FencingChange, `in_controlled_shutdown` a ControlledShutdownChange;
    empty `log_dirs` leaves them as they are."""

    broker_id: int
    broker_epoch: int
    fenced: int = FencingChange.NONE
    in_controlled_shutdown: int = ControlledShutdownChange.NONE
    log_dirs: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class NoOpRecord:
    pass


MetadataRecord = (
    RegisterBrokerRecord
    | UnregisterBrokerRecord
    | TopicRecord
    | PartitionRecord
    | ConfigRecord
    | PartitionChangeRecord
    | FenceBrokerRecord
    | UnfenceBrokerRecord
    | RemoveTopicRecord
    | FeatureLevelRecord
    | ProducerIdsRecord
    | BrokerRegistrationChangeRecord
    | NoOpRecord
)


def unfenced_registration(
    broker_id: int,
    broker_epoch: int,
    incarnation_id: uuid.UUID,
    end_points: tuple[Endpoint, ...] = (),
    rack: str | None = None,
) -> tuple[RegisterBrokerRecord, BrokerRegistrationChangeRecord]:
    """A broker's registration followed by its unfencing, as Kafka's controller writes them:
    the registration is fenced, and once the broker has caught up a
    BrokerRegistrationChangeRecord with FencingChange.UNFENCE (Kafka 3.3+; older metadata
    versions wrote an UnfenceBrokerRecord) unfences it at the same broker epoch. A single
    node is caught up at once, so the two go together."""
    return (
        RegisterBrokerRecord(
            broker_id,
            end_points,
            rack,
            broker_epoch=broker_epoch,
            incarnation_id=incarnation_id,
            fenced=True,
        ),
        BrokerRegistrationChangeRecord(broker_id, broker_epoch, fenced=FencingChange.UNFENCE),
    )
