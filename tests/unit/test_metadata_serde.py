"""Metadata and control records in Kafka's bytes: round trips, every version, exact bytes
derived by hand from Kafka's rules, and malformed input refused with MetadataRecordError."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.broker.metadata import serde
from tidelog.broker.metadata.control_records import (
    CONTROL_RECORD_SCHEMAS,
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
    FencingChange,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RegisterBrokerRecord,
    SecurityProtocol,
    TopicRecord,
)
from tidelog.broker.metadata.schemas import RECORD_SCHEMAS
from tidelog.broker.metadata.serde import (
    MetadataRecordError,
    control_record_type,
    decode_control_record,
    decode_record,
    decode_record_and_version,
    encode_control_record,
    encode_record,
)
from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.schema import Field

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
_STRUCTS: dict[str, type[Any]] = {"BrokerEndpoint": Endpoint, "BrokerFeature": BrokerFeature}

RECORD_TYPES = sorted(serde.SCHEMA_OF, key=lambda cls: serde.SCHEMA_OF[cls].api_key or 0)
TYPE_VERSIONS = [
    (cls, version)
    for cls in RECORD_TYPES
    for version in range(serde.SCHEMA_OF[cls].valid.lowest, serde.SCHEMA_OF[cls].valid.highest + 1)
]


def _default(f: Field) -> Any:
    value = f.default()
    return tuple(value) if isinstance(value, list) else value


def _scalar(t: str) -> st.SearchStrategy[Any]:
    if t in _INT_RANGES:
        low, high = _INT_RANGES[t]
        return st.integers(low, high)
    if t == "bool":
        return st.booleans()
    if t == "string":
        return st.text(max_size=12)
    if t == "uuid":
        return st.uuids()
    raise AssertionError(t)


def _value(f: Field, version: int) -> st.SearchStrategy[Any]:
    """A value of `f` that `version` can carry (its default where the version lacks it)."""
    if version not in f.versions:
        return st.just(_default(f))
    if f.is_struct:
        element: st.SearchStrategy[Any] = _struct(_STRUCTS[f.element_type], f.fields, version)
    else:
        element = _scalar(f.element_type)
    value = st.lists(element, max_size=3).map(tuple) if f.is_array else element
    return st.none() | value if version in f.nullable else value


def _struct(cls: type[Any], fields: tuple[Field, ...], version: int) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _value(f, version) for f in fields})


def records(cls: type[Any], version: int | None = None) -> st.SearchStrategy[Any]:
    """Records of type `cls` whose every value `version` (default: the highest) carries."""
    schema = serde.SCHEMA_OF[cls]
    return _struct(cls, schema.fields, schema.highest if version is None else version)


any_record = st.sampled_from(RECORD_TYPES).flatmap(records)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda cls: cls.__name__)
@SETTINGS
@given(data=st.data())
def test_every_record_type_round_trips_at_its_highest_version(cls: type[Any], data: Any) -> None:
    record = data.draw(records(cls))
    encoded = encode_record(record)
    assert decode_record_and_version(encoded) == (record, serde.SCHEMA_OF[cls].highest)


@pytest.mark.parametrize(
    ("cls", "version"), TYPE_VERSIONS, ids=lambda v: v.__name__ if isinstance(v, type) else str(v)
)
@SETTINGS
@given(data=st.data())
def test_every_valid_version_decodes(cls: type[Any], version: int, data: Any) -> None:
    record = data.draw(records(cls, version))
    encoded = encode_record(record, version)
    assert decode_record_and_version(encoded) == (record, version)


def test_a_version_that_cannot_carry_a_value_is_refused_not_lossy() -> None:
    partition = PartitionRecord(uuid.UUID(int=1), 0, (1,), (1,), 1, directories=(uuid.UUID(int=5),))
    with pytest.raises(ValueError, match="Directories"):
        encode_record(partition, 0)
    with pytest.raises(ValueError, match="no version 3"):
        encode_record(partition, 3)
    broker = RegisterBrokerRecord(1, (), in_controlled_shutdown=True)
    with pytest.raises(ValueError, match="InControlledShutdown"):
        encode_record(broker, 0)
    assert decode_record(
        encode_record(dataclasses.replace(broker, in_controlled_shutdown=False), 0)
    )


def test_out_of_range_values_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        encode_record(RegisterBrokerRecord(1, (Endpoint("PLAINTEXT", "h", 70000),)))


def test_every_schema_has_its_record_type() -> None:
    assert {serde.SCHEMA_OF[cls].api_key for cls in RECORD_TYPES} == set(RECORD_SCHEMAS)
    assert all(schema.is_flexible(0) for schema in RECORD_SCHEMAS.values())


# --- exact bytes --------------------------------------------------------------------------


def test_topic_record_bytes_are_kafkas() -> None:
    record = TopicRecord("foo", uuid.UUID(int=1))
    expected = bytes.fromhex(
        "01"  # frame version 1 (unsigned varint)
        "02"  # apiKey 2: TopicRecord
        "00"  # version 0
        "04" "666f6f"  # Name: compact string, length + 1 = 4, "foo"
        "00000000000000000000000000000001"  # TopicId: 16 bytes, big-endian
        "00"  # no tagged fields
    )  # fmt: skip
    assert encode_record(record) == expected
    assert decode_record(expected) == record


def test_config_record_bytes_are_kafkas() -> None:
    record = ConfigRecord(2, "orders", "retention.ms", None)
    expected = bytes.fromhex(
        "01" "04" "00"  # frame 1, apiKey 4: ConfigRecord, version 0
        "02"  # ResourceType int8: 2 (topic)
        "07" "6f7264657273"  # ResourceName: length 6 + 1, "orders"
        "0d" "726574656e74696f6e2e6d73"  # Name: length 12 + 1, "retention.ms"
        "00"  # Value: compact nullable string, 0 = null (the config is removed)
        "00"  # no tagged fields
    )  # fmt: skip
    assert encode_record(record) == expected
    assert decode_record(expected) == record


def test_partition_change_record_bytes_are_kafkas() -> None:
    record = PartitionChangeRecord(uuid.UUID(int=7), 3, leader=1, isr=(1, 2))
    expected = bytes.fromhex(
        "01" "05" "02"  # frame 1, apiKey 5: PartitionChangeRecord, version 2 (the highest)
        "00000003"  # PartitionId int32
        "00000000000000000000000000000007"  # TopicId
        "02"  # two tagged fields, ascending tags; fields at their default are left out
        "00" "09" "03" "00000001" "00000002"  # tag 0 Isr: 9 bytes, compact array of 2
        "01" "04" "00000001"  # tag 1 Leader: 4 bytes, int32 1
    )  # fmt: skip
    assert encode_record(record) == expected
    assert decode_record(expected) == record


def test_register_broker_record_bytes_are_kafkas() -> None:
    record = RegisterBrokerRecord(
        1,
        (Endpoint("PLAINTEXT", "h", 9092, SecurityProtocol.PLAINTEXT),),
        rack=None,
        broker_epoch=5,
        incarnation_id=uuid.UUID(int=2),
        features=(BrokerFeature("metadata.version", 7, 27),),
        log_dirs=(uuid.UUID(int=3),),
    )
    expected = bytes.fromhex(
        "01" "00" "03"  # frame 1, apiKey 0: RegisterBrokerRecord, version 3
        "00000001"  # BrokerId
        "00"  # IsMigratingZkBroker false (v2+)
        "00000000000000000000000000000002"  # IncarnationId
        "0000000000000005"  # BrokerEpoch int64
        "02"  # EndPoints: compact array of 1
        "0a" "504c41494e54455854"  # Name "PLAINTEXT"
        "02" "68"  # Host "h"
        "2384"  # Port uint16 9092
        "0000"  # SecurityProtocol int16 0
        "00"  # no tagged fields in the endpoint
        "02"  # Features: compact array of 1
        "11" "6d657461646174612e76657273696f6e"  # Name "metadata.version"
        "0007" "001b"  # MinSupportedVersion 7, MaxSupportedVersion 27
        "00"  # no tagged fields in the feature
        "00"  # Rack: null
        "01"  # Fenced true
        "00"  # InControlledShutdown false (v1+)
        "01"  # one tagged field
        "00" "11" "02" "00000000000000000000000000000003"  # tag 0 LogDirs: 17 bytes
    )  # fmt: skip
    assert encode_record(record) == expected
    assert decode_record(expected) == record


def test_no_op_record_is_three_bytes_and_a_tag_count() -> None:
    assert encode_record(NoOpRecord()) == bytes.fromhex("01140000")
    assert decode_record(bytes.fromhex("01140000")) == NoOpRecord()


def test_control_record_bytes_are_kafkas() -> None:
    leader_change = LeaderChangeMessage(1, (Voter(1), Voter(2)), (Voter(1),))
    key, value = encode_control_record(leader_change)
    assert key == bytes.fromhex("00000002")  # key version 0, type 2: LEADER_CHANGE
    assert value == bytes.fromhex(
        "0000"  # Version int16 0 (the message's own first field)
        "00000001"  # LeaderId
        "03" "00000001" "00" "00000002" "00"  # Voters: 2 x {VoterId, no tagged fields}
        "02" "00000001" "00"  # GrantingVoters: 1
        "00"  # no tagged fields
    )  # fmt: skip
    assert decode_control_record(key, value) == leader_change
    header = SnapshotHeaderRecord(last_contained_log_timestamp=1000)
    assert encode_control_record(header) == (
        bytes.fromhex("00000003"),
        bytes.fromhex("000000000000000003e800"),
    )
    assert encode_control_record(SnapshotFooterRecord()) == (
        bytes.fromhex("00000004"),
        bytes.fromhex("000000"),
    )


@SETTINGS
@given(
    record=st.one_of(
        st.builds(
            LeaderChangeMessage,
            st.integers(-(2**31), 2**31 - 1),
            st.lists(st.builds(Voter, st.integers(0, 2**31 - 1)), max_size=4).map(tuple),
            st.lists(st.builds(Voter, st.integers(0, 2**31 - 1)), max_size=4).map(tuple),
        ),
        st.builds(SnapshotHeaderRecord, st.integers(-(2**63), 2**63 - 1)),
        st.just(SnapshotFooterRecord()),
    )
)
def test_control_records_round_trip(record: Any) -> None:
    key, value = encode_control_record(record)
    assert decode_control_record(key, value) == record


def test_control_record_keys_follow_kafkas_parse_rules() -> None:
    # A newer key version is read as version 0; trailing key bytes are ignored.
    assert control_record_type(bytes.fromhex("00010003ffff")) == 3
    assert control_record_type(bytes.fromhex("00000001")) == ControlRecordType.COMMIT
    for bad in (b"", bytes.fromhex("0000"), bytes.fromhex("000000"), bytes.fromhex("ffff0002")):
        with pytest.raises(MetadataRecordError):
            control_record_type(bad)
    footer = bytes.fromhex("000000")
    for other in (0, 1, 5, 6, 99):  # markers, KRaft version/voters, unknown: not decoded here
        with pytest.raises(MetadataRecordError):
            decode_control_record(bytes.fromhex("0000") + other.to_bytes(2, "big"), footer)
    assert set(CONTROL_RECORD_SCHEMAS) == {2, 3, 4}
    # The value is read at schema version 0 whatever its Version field says, and bytes after
    # it (a newer writer's fields) are ignored, as ControlRecordUtils does.
    assert decode_control_record(bytes.fromhex("00000004"), bytes.fromhex("000100ff")) == (
        SnapshotFooterRecord(version=1)
    )


# --- malformed input ----------------------------------------------------------------------


def _valid_encodings() -> list[bytes]:
    return [
        encode_record(TopicRecord("topic", uuid.UUID(int=9))),
        encode_record(PartitionRecord(uuid.UUID(int=9), 0, (1, 2), (1,), 1)),
        encode_record(PartitionChangeRecord(uuid.UUID(int=9), 0, isr=(1,))),
        encode_record(BrokerRegistrationChangeRecord(1, 2, fenced=FencingChange.UNFENCE)),
        encode_record(RegisterBrokerRecord(1, (Endpoint("A", "h", 1),), rack="r")),
    ]


@pytest.mark.parametrize("encoded", _valid_encodings(), ids=lambda b: b[:3].hex())
def test_every_truncation_is_refused(encoded: bytes) -> None:
    for end in range(len(encoded)):
        with pytest.raises(MetadataRecordError):
            decode_record(encoded[:end])
    with pytest.raises(MetadataRecordError, match="byte"):
        decode_record(encoded + b"\x00")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (bytes.fromhex("00020004666f6f"), "frame version 0"),
        (bytes.fromhex("02020004666f6f"), "unknown metadata record frame version 2"),
        (bytes.fromhex("01060000"), "apiKey\\) 6"),  # AccessControlRecord: not modelled
        (bytes.fromhex("01ff7f0000"), "apiKey\\) 16383"),
        (bytes.fromhex("0102010400"), "no version 1"),  # TopicRecord has only version 0
        (bytes.fromhex("010003"), "truncated|malformed"),
        (bytes.fromhex("01ffffffffff"), "header"),  # a varint longer than 5 bytes
        # PartitionRecord v0 announcing 1000 replicas in a handful of bytes:
        (bytes.fromhex("01030000000000" + "00" * 16 + "e90700"), "1000 elements"),
        # TopicRecord whose name is not UTF-8:
        (bytes.fromhex("01020003ff fe" + "00" * 16 + "00"), "UTF-8"),
    ],
)
def test_malformed_records_are_refused_clearly(data: bytes, match: str) -> None:
    with pytest.raises(MetadataRecordError, match=match):
        decode_record(data)


def test_metadata_record_errors_are_corrupt_message_errors() -> None:
    assert issubclass(MetadataRecordError, CorruptMessageError)


def _headers() -> list[bytes]:
    return [
        bytes([1, schema.api_key or 0, version])
        for schema in RECORD_SCHEMAS.values()
        for version in range(schema.valid.lowest, schema.valid.highest + 1)
    ]


@SETTINGS
@given(
    data=st.binary(max_size=64)
    | st.tuples(st.sampled_from(_headers()), st.binary()).map(lambda pair: pair[0] + pair[1])
)
def test_random_bytes_decode_or_raise_metadata_record_error(data: bytes) -> None:
    try:
        record = decode_record(data)
    except MetadataRecordError:
        return
    assert encode_record(record, decode_record_and_version(data)[1])  # decoded: re-encodable


@SETTINGS
@given(key=st.binary(max_size=8), value=st.binary(max_size=40))
def test_random_control_records_decode_or_raise_metadata_record_error(
    key: bytes, value: bytes
) -> None:
    with contextlib.suppress(MetadataRecordError):
        decode_control_record(key, value)


@SETTINGS
@given(record=any_record, data=st.data())
def test_flipped_bytes_decode_or_raise_metadata_record_error(record: Any, data: Any) -> None:
    encoded = bytearray(encode_record(record))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(MetadataRecordError):
        decode_record(bytes(encoded))
