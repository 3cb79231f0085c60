"""The bytes of metadata records and KRaft control records, exactly as Kafka writes them.

A metadata record is a record value of the `__cluster_metadata` log (and of its snapshots)
in Kafka's ApiMessageAndVersion framing (MetadataRecordSerde / AbstractApiMessageSerde):

    frame version  unsigned varint, 1 (0 was KRaft's 2.8 preview, which Kafka refuses too)
    apiKey         unsigned varint, the record type (`schemas.RECORD_SCHEMAS`)
    version        unsigned varint, the record's version
    fields         the record at that version, in Kafka's message encoding

Encoding writes the highest version we model of each type (`RecordSchema.highest`, Kafka
4.x's newest): one rule, every field of the dataclass carried, and what Kafka's controller
writes at the latest metadata.version. Kafka picks the version from the cluster's
metadata.version instead; `encode_record(record, version)` writes an older version, and
refuses (ValueError) a record holding a value that version cannot carry rather than drop it.
Decoding accepts every valid version; fields a version lacks take Kafka's defaults.

A control record (`control_records.py`) is a key and a value: `encode_control_record` and
`decode_control_record`. As Kafka's ControlRecordType and ControlRecordUtils do, a key of a
higher version is read as version 0 and the value is read at its schema version 0, ignoring
bytes after it (a newer writer may append fields).

Malformed input (truncated, an unknown frame version or apiKey, a version the type does not
have, trailing bytes after a metadata record, an array count beyond the bytes that remain,
invalid UTF-8, ...) raises `MetadataRecordError` and nothing else. It is a
`CorruptMessageError`: like a corrupt record batch, it is bad bytes, not a record that does
not fit the image (that is `image.MetadataError`). Unknown tagged fields are skipped, as in
every Kafka message, and not kept.

PURE: no clock, no files, no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from tidelog.broker.metadata.control_records import (
    CONTROL_RECORD_KEY,
    CONTROL_RECORD_KEY_SIZE,
    CONTROL_RECORD_KEY_VERSION,
    CONTROL_RECORD_SCHEMAS,
    ControlRecord,
    ControlRecordType,
    LeaderChangeMessage,
    SnapshotFooterRecord,
    SnapshotHeaderRecord,
    Voter,
)
from tidelog.broker.metadata.records import (
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    Endpoint,
    FeatureLevelRecord,
    FenceBrokerRecord,
    MetadataRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
)
from tidelog.broker.metadata.schemas import (
    BROKER_REGISTRATION_CHANGE_RECORD,
    CONFIG_RECORD,
    FEATURE_LEVEL_RECORD,
    FENCE_BROKER_RECORD,
    NO_OP_RECORD,
    PARTITION_CHANGE_RECORD,
    PARTITION_RECORD,
    PRODUCER_IDS_RECORD,
    RECORD_SCHEMAS,
    REGISTER_BROKER_RECORD,
    REMOVE_TOPIC_RECORD,
    TOPIC_RECORD,
    UNFENCE_BROKER_RECORD,
    UNREGISTER_BROKER_RECORD,
    RecordSchema,
)
from tidelog.client.protocol.errors import CorruptMessageError, ProtocolError
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import Field, Message, StructCodec

FRAME_VERSION = 1
"""The ApiMessageAndVersion frame version Kafka writes and reads (AbstractApiMessageSerde)."""


class MetadataRecordError(CorruptMessageError):
    """Bytes that are not a valid metadata or control record (see the module docstring)."""


SCHEMA_OF: dict[type[MetadataRecord], RecordSchema] = {
    RegisterBrokerRecord: REGISTER_BROKER_RECORD,
    UnregisterBrokerRecord: UNREGISTER_BROKER_RECORD,
    TopicRecord: TOPIC_RECORD,
    PartitionRecord: PARTITION_RECORD,
    ConfigRecord: CONFIG_RECORD,
    PartitionChangeRecord: PARTITION_CHANGE_RECORD,
    FenceBrokerRecord: FENCE_BROKER_RECORD,
    UnfenceBrokerRecord: UNFENCE_BROKER_RECORD,
    RemoveTopicRecord: REMOVE_TOPIC_RECORD,
    FeatureLevelRecord: FEATURE_LEVEL_RECORD,
    ProducerIdsRecord: PRODUCER_IDS_RECORD,
    BrokerRegistrationChangeRecord: BROKER_REGISTRATION_CHANGE_RECORD,
    NoOpRecord: NO_OP_RECORD,
}
"""Each record dataclass's schema."""

_CLASS_OF: dict[int, type[MetadataRecord]] = {
    schema.api_key: cls for cls, schema in SCHEMA_OF.items() if schema.api_key is not None
}
assert set(_CLASS_OF) == set(RECORD_SCHEMAS), "a schema without a dataclass, or the reverse"

# The dataclass of each nested struct type, by the schemas' struct type names.
_STRUCT_CLASSES: dict[str, type[Any]] = {
    "BrokerEndpoint": Endpoint,
    "BrokerFeature": BrokerFeature,
    "Voter": Voter,
}

_CONTROL_TYPE_OF: dict[type[ControlRecord], ControlRecordType] = {
    LeaderChangeMessage: ControlRecordType.LEADER_CHANGE,
    SnapshotHeaderRecord: ControlRecordType.SNAPSHOT_HEADER,
    SnapshotFooterRecord: ControlRecordType.SNAPSHOT_FOOTER,
}

_DECODE_ERRORS = (ProtocolError, struct.error, IndexError, ValueError, OverflowError)


# --- metadata records ---------------------------------------------------------------------


def encode_record(record: MetadataRecord, version: int | None = None) -> bytes:
    """`record` framed as Kafka's MetadataRecordSerde writes it, at `version` (default: the
    highest version of its type). ValueError if `version` is not one of the type's, or
    cannot carry a value `record` holds, or a value is out of its field's range."""
    schema = SCHEMA_OF[type(record)]
    assert schema.api_key is not None
    if version is None:
        version = schema.highest
    elif version not in schema.valid:
        raise ValueError(f"{schema.name} has no version {version}")
    message = _to_message(record, schema.fields)
    _check_carried(schema.fields, message, version, schema.name)
    writer = Writer()
    writer.uvarint(FRAME_VERSION)
    writer.uvarint(schema.api_key)
    writer.uvarint(version)
    _encode_struct(schema, version, writer, message)
    return writer.getvalue()


def decode_record(data: bytes | bytearray | memoryview) -> MetadataRecord:
    """The metadata record `data` holds, of any valid version; MetadataRecordError if
    `data` is not exactly one."""
    return decode_record_and_version(data)[0]


def decode_record_and_version(data: bytes | bytearray | memoryview) -> tuple[MetadataRecord, int]:
    """`decode_record`, and the version the record was written at (Kafka's
    ApiMessageAndVersion)."""
    reader = Reader(data)
    try:
        frame_version = reader.uvarint()
        if frame_version == 0:
            raise MetadataRecordError(
                "metadata record frame version 0 (KRaft's 2.8 preview) is not supported"
            )
        if frame_version != FRAME_VERSION:
            raise MetadataRecordError(
                f"unknown metadata record frame version {frame_version} "
                f"(only {FRAME_VERSION} exists)"
            )
        api_key = reader.uvarint()
        version = reader.uvarint()
    except MetadataRecordError:
        raise
    except _DECODE_ERRORS as exc:
        raise MetadataRecordError(f"truncated metadata record header: {exc}") from None
    schema = RECORD_SCHEMAS.get(api_key)
    if schema is None:
        raise MetadataRecordError(f"unknown metadata record type (apiKey) {api_key}")
    if version not in schema.valid:
        raise MetadataRecordError(
            f"{schema.name} has no version {version} "
            f"(valid: {schema.valid.lowest}-{schema.valid.highest})"
        )
    message = _decode_struct(schema, version, reader)
    if reader.remaining:
        raise MetadataRecordError(f"{reader.remaining} byte(s) after {schema.name} v{version}")
    return _from_message(_CLASS_OF[api_key], schema.fields, message), version


def encode_records(records: Sequence[MetadataRecord]) -> bytes:
    """The records of one controller operation as one metadata log entry: each record's
    `encode_record` bytes preceded by their length (unsigned varint). An entry is applied
    whole or not at all, as Kafka's controller appends an operation as one atomic batch."""
    writer = Writer()
    for record in records:
        data = encode_record(record)
        writer.uvarint(len(data))
        writer.raw(data)
    return writer.getvalue()


def decode_records(data: bytes | bytearray | memoryview) -> list[MetadataRecord]:
    """The records of an `encode_records` entry; MetadataRecordError if `data` is not a
    sequence of whole, valid records."""
    reader = Reader(data)
    records = []
    while reader.remaining:
        try:
            size = reader.uvarint()
            body = reader.raw(size)
        except _DECODE_ERRORS as exc:
            raise MetadataRecordError(f"truncated metadata record entry: {exc}") from None
        records.append(decode_record(body))
    return records


# --- control records ----------------------------------------------------------------------


def encode_control_record(record: ControlRecord) -> tuple[bytes, bytes]:
    """(key, value) of a control record, as Kafka's MemoryRecordsBuilder appends it: the
    key is ControlRecordType v0 (Version, Type), the value the message at version 0."""
    record_type = _CONTROL_TYPE_OF[type(record)]
    key = Writer()
    key.int16(CONTROL_RECORD_KEY_VERSION)
    key.int16(record_type)
    schema = CONTROL_RECORD_SCHEMAS[record_type][0]
    value = Writer()
    _encode_struct(schema, 0, value, _to_message(record, schema.fields))
    return key.getvalue(), value.getvalue()


def control_record_type(key: bytes | bytearray | memoryview) -> int:
    """The `Type` of a control record key (any value: ControlRecordType names the known
    ones). Kafka's ControlRecordType.parseTypeId: at least 4 bytes, a non-negative version,
    and a version above 0 read as 0."""
    if len(key) < CONTROL_RECORD_KEY_SIZE:
        raise MetadataRecordError(
            f"control record key of {len(key)} bytes, at least {CONTROL_RECORD_KEY_SIZE} needed"
        )
    reader = Reader(key)
    try:
        version = reader.int16()
        if version < 0:
            raise MetadataRecordError(f"control record key version {version} is negative")
        codec = StructCodec.build(CONTROL_RECORD_KEY.fields, 0, flexible=False)
        message = codec.decode_from(reader)
    except MetadataRecordError:
        raise
    except _DECODE_ERRORS as exc:
        raise MetadataRecordError(f"malformed control record key: {exc}") from None
    record_type: int = message["type"]
    return record_type


def decode_control_record(
    key: bytes | bytearray | memoryview, value: bytes | bytearray | memoryview
) -> ControlRecord:
    """The LeaderChangeMessage, SnapshotHeaderRecord or SnapshotFooterRecord of a control
    record; MetadataRecordError for a malformed one or one of another type (transaction
    markers, KRaft version and voters records, unknown types)."""
    record_type = control_record_type(key)
    known = [entry for kind, entry in CONTROL_RECORD_SCHEMAS.items() if kind == record_type]
    if not known:
        raise MetadataRecordError(f"control record type {record_type} is not decoded here")
    schema, cls = known[0]
    reader = Reader(value)
    return _from_message(cls, schema.fields, _decode_struct(schema, 0, reader))


# --- dataclasses <-> messages -------------------------------------------------------------


def _encode_struct(schema: RecordSchema, version: int, writer: Writer, message: Message) -> None:
    codec = StructCodec.build(schema.fields, version, schema.is_flexible(version))
    try:
        codec.encode_into(writer, message)
    except struct.error as exc:
        raise ValueError(f"{schema.name} v{version}: a value is out of range: {exc}") from None


def _decode_struct(schema: RecordSchema, version: int, reader: Reader) -> Message:
    codec = StructCodec.build(schema.fields, version, schema.is_flexible(version))
    try:
        return codec.decode_from(reader)
    except _DECODE_ERRORS as exc:
        raise MetadataRecordError(f"malformed {schema.name} v{version}: {exc}") from None


def _to_message(obj: object, fields: Sequence[Field]) -> Message:
    """A dataclass as the codec's dict: the dataclass's fields are the schema's, by name."""
    message: Message = {}
    for f in fields:
        value = getattr(obj, f.name)
        if value is not None and f.is_array:
            value = [_to_message(e, f.fields) for e in value] if f.is_struct else list(value)
        elif value is not None and f.is_struct:
            value = _to_message(value, f.fields)
        message[f.name] = value
    return message


def _from_message(cls: type[Any], fields: Sequence[Field], message: Message) -> Any:
    """The dataclass `cls` of a decoded dict: arrays become tuples, structs dataclasses."""
    values: dict[str, Any] = {}
    for f in fields:
        value = message[f.name]
        if value is not None and f.is_struct:
            nested = _STRUCT_CLASSES[f.element_type]
            if f.is_array:
                value = tuple(_from_message(nested, f.fields, e) for e in value)
            else:
                value = _from_message(nested, f.fields, value)
        elif value is not None and f.is_array:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def _check_carried(fields: Sequence[Field], message: Message, version: int, where: str) -> None:
    """ValueError if `message` holds a non-default value in a field `version` lacks (Kafka's
    "Attempted to write a non-default ... at version ..."), at any depth."""
    for f in fields:
        value = message[f.name]
        if version not in f.versions:
            if value != f.default():
                raise ValueError(f"{where} v{version} has no {f.kafka_name}, which holds {value!r}")
            continue
        if f.is_struct and value is not None:
            for element in value if f.is_array else [value]:
                _check_carried(f.fields, element, version, f"{where}.{f.kafka_name}")
