"""Kafka's metadata record schemas (the `__cluster_metadata` log), in the `F` DSL.

Transcribed from Apache Kafka 4.x, `metadata/src/main/resources/common/metadata/<Name>.json`:
every version, field order, type, nullability, tag and default as Kafka declares them (the
agreement test compares them with fact-only copies under
tests/protocol/kafka_definitions/metadata/). Every record here is flexible from version 0
(compact strings and arrays, a tagged-field section), as all of Kafka's metadata records are
since KRaft's metadata frame version 1.

`RECORD_SCHEMAS` maps an apiKey to its `RecordSchema`; `serde.py` encodes and decodes with
them. The Raft control records (LeaderChangeMessage, SnapshotHeaderRecord,
SnapshotFooterRecord) and the control record key are in `control_records.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidelog.client.protocol.schema import F, Field, Versions


@dataclass(frozen=True)
class RecordSchema:
    """One record type: its apiKey (None for a control record's value), Kafka's name, the
    versions Kafka makes valid and those that are flexible, and the fields."""

    api_key: int | None
    name: str
    valid: Versions
    flexible: Versions
    fields: tuple[Field, ...]

    @property
    def highest(self) -> int:
        return self.valid.highest

    def is_flexible(self, version: int) -> bool:
        return version in self.flexible


def _schema(
    api_key: int | None, name: str, valid: str, flexible: str, fields: tuple[Field, ...]
) -> RecordSchema:
    return RecordSchema(api_key, name, Versions.parse(valid), Versions.parse(flexible), fields)


# apiKey 0. Version 1 adds InControlledShutdown, 2 IsMigratingZkBroker, 3 LogDirs.
REGISTER_BROKER_RECORD = _schema(0, "RegisterBrokerRecord", "0-3", "0+", (
    F("BrokerId", "int32"),
    F("IsMigratingZkBroker", "bool", "2+", default=False),
    F("IncarnationId", "uuid"),
    F("BrokerEpoch", "int64"),
    F("EndPoints", "[]BrokerEndpoint", fields=(
        F("Name", "string"),
        F("Host", "string"),
        F("Port", "uint16"),
        F("SecurityProtocol", "int16"),
    )),
    F("Features", "[]BrokerFeature", fields=(
        F("Name", "string"),
        F("MinSupportedVersion", "int16"),
        F("MaxSupportedVersion", "int16"),
    )),
    F("Rack", "string", nullable="0+"),
    F("Fenced", "bool", default=True),
    F("InControlledShutdown", "bool", "1+", default=False),
    F("LogDirs", "[]uuid", "3+", tag=0),
))  # fmt: skip

UNREGISTER_BROKER_RECORD = _schema(1, "UnregisterBrokerRecord", "0", "0+", (
    F("BrokerId", "int32"),
    F("BrokerEpoch", "int64"),
))  # fmt: skip

TOPIC_RECORD = _schema(2, "TopicRecord", "0", "0+", (
    F("Name", "string"),
    F("TopicId", "uuid"),
))  # fmt: skip

# Version 1 adds Directories (KIP-858), 2 EligibleLeaderReplicas and LastKnownElr (KIP-966).
PARTITION_RECORD = _schema(3, "PartitionRecord", "0-2", "0+", (
    F("PartitionId", "int32", default=-1),
    F("TopicId", "uuid"),
    F("Replicas", "[]int32"),
    F("Isr", "[]int32"),
    F("RemovingReplicas", "[]int32"),
    F("AddingReplicas", "[]int32"),
    F("Leader", "int32", default=-1),
    F("LeaderRecoveryState", "int8", tag=0, default=0),
    F("LeaderEpoch", "int32", default=-1),
    F("PartitionEpoch", "int32", default=-1),
    F("Directories", "[]uuid", "1+"),
    F("EligibleLeaderReplicas", "[]int32", "2+", nullable="2+", tag=1, default=None),
    F("LastKnownElr", "[]int32", "2+", nullable="2+", tag=2, default=None),
))  # fmt: skip

CONFIG_RECORD = _schema(4, "ConfigRecord", "0", "0+", (
    F("ResourceType", "int8"),
    F("ResourceName", "string"),
    F("Name", "string"),
    F("Value", "string", nullable="0+"),
))  # fmt: skip

# Every field after TopicId is tagged: null (or the sentinel default) means "no change".
PARTITION_CHANGE_RECORD = _schema(5, "PartitionChangeRecord", "0-2", "0+", (
    F("PartitionId", "int32", default=-1),
    F("TopicId", "uuid"),
    F("Isr", "[]int32", nullable="0+", tag=0, default=None),
    F("Leader", "int32", tag=1, default=-2),
    F("Replicas", "[]int32", nullable="0+", tag=2, default=None),
    F("RemovingReplicas", "[]int32", nullable="0+", tag=3, default=None),
    F("AddingReplicas", "[]int32", nullable="0+", tag=4, default=None),
    F("LeaderRecoveryState", "int8", tag=5, default=-1),
    F("Directories", "[]uuid", "1+", nullable="1+", tag=8, default=None),
    F("EligibleLeaderReplicas", "[]int32", "2+", nullable="2+", tag=6, default=None),
    F("LastKnownElr", "[]int32", "2+", nullable="2+", tag=7, default=None),
))  # fmt: skip

FENCE_BROKER_RECORD = _schema(7, "FenceBrokerRecord", "0", "0+", (
    F("Id", "int32"),
    F("Epoch", "int64"),
))  # fmt: skip

UNFENCE_BROKER_RECORD = _schema(8, "UnfenceBrokerRecord", "0", "0+", (
    F("Id", "int32"),
    F("Epoch", "int64"),
))  # fmt: skip

REMOVE_TOPIC_RECORD = _schema(9, "RemoveTopicRecord", "0", "0+", (
    F("TopicId", "uuid"),
))  # fmt: skip

# New metadata logs and snapshots begin with the metadata.version FeatureLevelRecord; its
# version cannot advance beyond 0 (Kafka's note in the file).
FEATURE_LEVEL_RECORD = _schema(12, "FeatureLevelRecord", "0", "0+", (
    F("Name", "string"),
    F("FeatureLevel", "int16"),
))  # fmt: skip

PRODUCER_IDS_RECORD = _schema(15, "ProducerIdsRecord", "0", "0+", (
    F("BrokerId", "int32"),
    F("BrokerEpoch", "int64", default=-1),
    F("NextProducerId", "int64"),
))  # fmt: skip

# Version 1 adds InControlledShutdown, 2 LogDirs. Fenced: -1 unfenced, 0 no change, 1 fenced.
BROKER_REGISTRATION_CHANGE_RECORD = _schema(17, "BrokerRegistrationChangeRecord", "0-2", "0+", (
    F("BrokerId", "int32"),
    F("BrokerEpoch", "int64"),
    F("Fenced", "int8", tag=0),
    F("InControlledShutdown", "int8", "1+", tag=1),
    F("LogDirs", "[]uuid", "2+", tag=2),
))  # fmt: skip

NO_OP_RECORD = _schema(20, "NoOpRecord", "0", "0+", ())

RECORD_SCHEMAS: dict[int, RecordSchema] = {
    schema.api_key: schema
    for schema in (
        REGISTER_BROKER_RECORD,
        UNREGISTER_BROKER_RECORD,
        TOPIC_RECORD,
        PARTITION_RECORD,
        CONFIG_RECORD,
        PARTITION_CHANGE_RECORD,
        FENCE_BROKER_RECORD,
        UNFENCE_BROKER_RECORD,
        REMOVE_TOPIC_RECORD,
        FEATURE_LEVEL_RECORD,
        PRODUCER_IDS_RECORD,
        BROKER_REGISTRATION_CHANGE_RECORD,
        NO_OP_RECORD,
    )
    if schema.api_key is not None
}
"""Every metadata record type we model, by apiKey."""
