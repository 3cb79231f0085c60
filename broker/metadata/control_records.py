"""KRaft's control records: leader changes and snapshot boundaries in the metadata log.

A control record sits in a control batch (`RecordBatch` attribute bit 5) of the Raft log,
beside the metadata records. Kafka 4.x (`clients/src/main/resources/common/message/`):

    key    ControlRecordType: Version int16 (0), Type int16
           (ABORT 0, COMMIT 1, LEADER_CHANGE 2, SNAPSHOT_HEADER 3, SNAPSHOT_FOOTER 4,
           KRAFT_VERSION 5, KRAFT_VOTERS 6)
    value  the message of that type, written at its schema version 0 (ControlRecordUtils'
           *_CURRENT_VERSION); each message's first field is its own int16 `Version`

The three types here, LeaderChangeMessage, SnapshotHeaderRecord and SnapshotFooterRecord,
are flexible from version 0. `serde.encode_control_record` / `decode_control_record` do the
bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tidelog.broker.metadata.schemas import RecordSchema
from tidelog.client.protocol.schema import F, Versions


class ControlRecordType(enum.IntEnum):
    """The `Type` of a control record's key (Kafka's ControlRecordType)."""

    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    SNAPSHOT_HEADER = 3
    SNAPSHOT_FOOTER = 4
    KRAFT_VERSION = 5
    KRAFT_VOTERS = 6


CONTROL_RECORD_KEY_VERSION = 0
"""The key schema version Kafka writes; a reader parses a higher one as this version."""
CONTROL_RECORD_KEY_SIZE = 4

# Kafka's ControlRecordType.json: the key after its int16 version prefix (never flexible).
CONTROL_RECORD_KEY = RecordSchema(
    None, "ControlRecordType", Versions.parse("0"), Versions.parse("none"),
    (F("Type", "int16"),),
)  # fmt: skip

LEADER_CHANGE_MESSAGE = RecordSchema(
    None, "LeaderChangeMessage", Versions.parse("0"), Versions.parse("0+"), (
        F("Version", "int16"),
        F("LeaderId", "int32"),
        F("Voters", "[]Voter", fields=(F("VoterId", "int32"),)),
        F("GrantingVoters", "[]Voter", fields=(F("VoterId", "int32"),)),
    ),
)  # fmt: skip

SNAPSHOT_HEADER_RECORD = RecordSchema(
    None, "SnapshotHeaderRecord", Versions.parse("0"), Versions.parse("0+"), (
        F("Version", "int16"),
        F("LastContainedLogTimestamp", "int64"),
    ),
)  # fmt: skip

SNAPSHOT_FOOTER_RECORD = RecordSchema(
    None, "SnapshotFooterRecord", Versions.parse("0"), Versions.parse("0+"), (
        F("Version", "int16"),
    ),
)  # fmt: skip

LEADER_CHANGE_CURRENT_VERSION = 0
SNAPSHOT_HEADER_CURRENT_VERSION = 0
SNAPSHOT_FOOTER_CURRENT_VERSION = 0


@dataclass(frozen=True, slots=True)
class Voter:
    voter_id: int


@dataclass(frozen=True, slots=True)
class LeaderChangeMessage:
    """A new leader of an epoch: written by the leader as the first record of its epoch."""

    leader_id: int
    voters: tuple[Voter, ...]
    """The voters of the quorum in this epoch."""
    granting_voters: tuple[Voter, ...]
    """The voters that voted for the leader."""
    version: int = LEADER_CHANGE_CURRENT_VERSION


@dataclass(frozen=True, slots=True)
class SnapshotHeaderRecord:
    """The first record of a snapshot."""

    last_contained_log_timestamp: int
    """The append time of the last log record the snapshot contains."""
    version: int = SNAPSHOT_HEADER_CURRENT_VERSION


@dataclass(frozen=True, slots=True)
class SnapshotFooterRecord:
    """The last record of a snapshot."""

    version: int = SNAPSHOT_FOOTER_CURRENT_VERSION


ControlRecord = LeaderChangeMessage | SnapshotHeaderRecord | SnapshotFooterRecord

CONTROL_RECORD_SCHEMAS: dict[ControlRecordType, tuple[RecordSchema, type[ControlRecord]]] = {
    ControlRecordType.LEADER_CHANGE: (LEADER_CHANGE_MESSAGE, LeaderChangeMessage),
    ControlRecordType.SNAPSHOT_HEADER: (SNAPSHOT_HEADER_RECORD, SnapshotHeaderRecord),
    ControlRecordType.SNAPSHOT_FOOTER: (SNAPSHOT_FOOTER_RECORD, SnapshotFooterRecord),
}
"""The control record types we decode: schema and dataclass."""
