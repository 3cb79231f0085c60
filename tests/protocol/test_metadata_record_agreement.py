"""Our metadata record schemas agree with Kafka's own definitions.

The reference is tests/protocol/kafka_definitions/metadata/: fact-only copies of Kafka
4.x's `metadata/src/main/resources/common/metadata/<Name>.json` (the metadata records) and
`clients/src/main/resources/common/message/<Name>.json` (LeaderChangeMessage,
SnapshotHeaderRecord, SnapshotFooterRecord, ControlRecordType), keeping only the keys
`schema_reference` lists. For each record type the apiKey, valid versions and flexible
versions must equal the JSON's, and at every valid version the fields must agree in order,
type, presence, nullability, tag and default, down to the innermost struct.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.schema_reference import (
    assert_only_facts,
    field_differences,
    load_definition,
    valid_versions,
)
from tidelog.broker.metadata import control_records, serde
from tidelog.broker.metadata.schemas import RECORD_SCHEMAS, RecordSchema
from tidelog.client.protocol.schema import Field, Versions

METADATA_DIR = Path(__file__).parent / "kafka_definitions" / "metadata"

CONTROL_SCHEMAS = (
    control_records.LEADER_CHANGE_MESSAGE,
    control_records.SNAPSHOT_HEADER_RECORD,
    control_records.SNAPSHOT_FOOTER_RECORD,
    control_records.CONTROL_RECORD_KEY,
)
ALL_SCHEMAS = (*RECORD_SCHEMAS.values(), *CONTROL_SCHEMAS)


def _ids(schema: RecordSchema) -> str:
    return schema.name


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=_ids)
def test_schema_agrees_with_kafkas_definition(schema: RecordSchema) -> None:
    definition = load_definition(schema.name, [METADATA_DIR])
    assert definition.get("apiKey") == schema.api_key
    assert valid_versions(definition) == schema.valid
    assert Versions.parse(definition["flexibleVersions"]) == schema.flexible
    for version in range(schema.valid.lowest, schema.valid.highest + 1):
        assert field_differences(schema.fields, definition["fields"], version) == []


def test_every_vendored_definition_is_modelled() -> None:
    vendored = {p.stem for p in METADATA_DIR.glob("*.json")}
    assert vendored == {schema.name for schema in ALL_SCHEMAS}


@pytest.mark.parametrize("path", sorted(METADATA_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_vendored_definitions_hold_only_facts(path: Path) -> None:
    assert_only_facts(path)


def _dataclass_matches(cls: type[Any], fields: tuple[Field, ...]) -> list[str]:
    """Where a record dataclass's fields differ from its schema's (by snake_case name)."""
    ours = {f.name for f in dataclasses.fields(cls)}
    theirs = {f.name for f in fields}
    return sorted(ours ^ theirs)


@pytest.mark.parametrize("cls", sorted(serde.SCHEMA_OF, key=lambda c: c.__name__), ids=str)
def test_record_dataclasses_hold_exactly_kafkas_fields(cls: type[Any]) -> None:
    schema = serde.SCHEMA_OF[cls]
    assert cls.__name__ == schema.name
    assert _dataclass_matches(cls, schema.fields) == []
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for f in schema.fields:
        if f.is_struct:
            nested = serde._STRUCT_CLASSES[f.element_type]
            assert _dataclass_matches(nested, f.fields) == [], f"{cls.__name__}.{f.name}"
        assert f.name in hints


@pytest.mark.parametrize(
    ("schema", "cls"), list(control_records.CONTROL_RECORD_SCHEMAS.values()), ids=str
)
def test_control_record_dataclasses_hold_exactly_kafkas_fields(
    schema: RecordSchema, cls: type[Any]
) -> None:
    assert cls.__name__ == schema.name
    assert _dataclass_matches(cls, schema.fields) == []
    for f in schema.fields:
        if f.is_struct:
            assert _dataclass_matches(serde._STRUCT_CLASSES[f.element_type], f.fields) == []


def test_the_loader_reads_the_metadata_copies() -> None:
    # Guards the comparison above against a loader that reads nothing: PartitionRecord v2
    # has the tagged ELR lists, v0 lacks Directories.
    from tests.protocol.schema_reference import describe_json

    definition = load_definition("PartitionRecord", [METADATA_DIR])
    v2 = dict(describe_json(definition["fields"], 2, "v2"))
    assert v2["v2.EligibleLeaderReplicas"] == {
        "type": "[]int32", "present": True, "nullable": True, "tag": 1, "default": None,
    }  # fmt: skip
    assert not dict(describe_json(definition["fields"], 0, "v0"))["v0.Directories"]["present"]
