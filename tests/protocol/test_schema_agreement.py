"""Every schema we declare agrees with Kafka's own message definitions.

The reference is the copy of Kafka's message JSON that kafka-python ships. For each API in
`ALL_APIS`, request and response, our valid range and first flexible version must equal the
JSON's, and at every valid version each struct must hold the same fields in the same order,
with the same types, presence, nullability, tags and defaults, down to the innermost struct.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import uuid
from typing import Any

import pytest

from tidelog.client.protocol.apis import ALL_APIS, API_BY_KEY
from tidelog.client.protocol.schema import Api, Field, Versions

resources = pytest.importorskip(
    "kafka.protocol.schemas.resources",
    reason="kafka-python, which ships Kafka's message JSON definitions, is not installed",
)

JsonField = dict[str, Any]

# Keys of a field definition that this codec models, and those that only document or drive
# Kafka's Java code generation. Any other key is a feature we would silently ignore.
MODELLED_KEYS = {"name", "type", "versions", "nullableVersions", "tag", "taggedVersions",
                 "default", "fields"}  # fmt: skip
DOCUMENTATION_KEYS = {"about", "mapKey", "entityType", "ignorable"}

INT_TYPES = {"int8", "int16", "uint16", "int32", "uint32", "int64"}

SERVED_API_KEYS = {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                   29, 30, 31, 32, 33, 36, 37, 42, 44, 47, 60, 61}  # fmt: skip


def load_definition(name: str) -> dict[str, Any]:
    """One message definition, with its `//` comment lines removed and commonStructs inlined."""
    text = (importlib.resources.files(resources) / f"{name}.json").read_text("utf-8")
    definition: dict[str, Any] = json.loads(re.sub(r"(?m)^\s*//.*$", "", text))
    common = {s["name"]: s["fields"] for s in definition.get("commonStructs", [])}
    return {**definition, "fields": inline_common_structs(definition["fields"], common)}


def inline_common_structs(
    fields: list[JsonField], common: dict[str, list[JsonField]]
) -> list[JsonField]:
    resolved = []
    for f in fields:
        element = f["type"].removeprefix("[]")
        if "fields" in f:
            f = {**f, "fields": inline_common_structs(f["fields"], common)}
        elif element in common:
            f = {**f, "fields": inline_common_structs(common[element], common)}
        resolved.append(f)
    return resolved


def json_default(f: JsonField) -> Any:
    """The value a field takes when it is absent, by Kafka's rules for `default`."""
    t: str = f["type"]
    given = f.get("default")
    text = None if given is None else str(given)
    if t.startswith("[]"):
        return None if text == "null" else []
    if t == "bool":
        return text == "true"
    if t in INT_TYPES:
        return 0 if text is None else int(text, 0)
    if t == "float64":
        return 0.0 if text is None else float(text)
    if t == "string":
        return None if text == "null" else (text or "")
    if t == "bytes":
        return None if text == "null" else b""
    if t == "records":
        return None
    if t == "uuid":
        return uuid.UUID(int=0) if text is None else uuid.UUID(text)
    raise AssertionError(f"{f['name']}: default of a struct field is its fields' defaults")


def is_struct_type(type_name: str) -> bool:
    return type_name.removeprefix("[]")[:1].isupper()


def describe_json(fields: list[JsonField], version: int, path: str) -> list[tuple[str, Any]]:
    """(path, facts) for every field at `version`, depth first, in declaration order."""
    rows: list[tuple[str, Any]] = []
    for f in fields:
        unknown = set(f) - MODELLED_KEYS - DOCUMENTATION_KEYS
        assert not unknown, f"{path}.{f['name']} uses {unknown}, which the codec does not model"
        here = f"{path}.{f['name']}"
        present = version in Versions.parse(f["versions"])
        tagged = "tag" in f and version in Versions.parse(f.get("taggedVersions", "none"))
        facts = {
            "type": f["type"],
            "present": present,
            "nullable": present and version in Versions.parse(f.get("nullableVersions", "none")),
            "tag": f["tag"] if present and tagged else None,
            "default": None if f["type"][:1].isupper() else json_default(f),
        }
        rows.append((here, facts))
        if is_struct_type(f["type"]):
            assert "fields" in f, f"{here}: struct type {f['type']} has no definition"
            rows.extend(describe_json(f["fields"], version, here))
    return rows


def describe_ours(fields: tuple[Field, ...], version: int, path: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for f in fields:
        here = f"{path}.{f.kafka_name}"
        present = version in f.versions
        facts = {
            "type": f.type,
            "present": present,
            "nullable": present and version in f.nullable,
            "tag": f.tag if present and f.tag is not None and version in f.tagged else None,
            "default": None if f.is_struct and not f.is_array else f.default(),
        }
        rows.append((here, facts))
        rows.extend(describe_ours(f.fields, version, here))
    return rows


def first_flexible(spec: str) -> int | None:
    flexible = Versions.parse(spec)
    if flexible.empty:
        return None
    assert flexible.highest == Versions.parse("0+").highest, f"flexibleVersions {spec} closed"
    return flexible.lowest


CASES = [
    pytest.param(api, kind, id=f"{api.name}-{kind}")
    for api in ALL_APIS
    for kind in ("request", "response")
]


@pytest.mark.parametrize(("api", "kind"), CASES)
def test_schema_agrees_with_kafka_definition(api: Api, kind: str) -> None:
    definition = load_definition(f"{api.name}{kind.capitalize()}")
    assert definition["apiKey"] == api.key
    assert definition["type"] == kind
    assert api.valid == Versions.parse(definition["validVersions"])
    assert api.flexible == first_flexible(definition["flexibleVersions"])
    ours = api.request if kind == "request" else api.response
    for version in range(api.valid.lowest, api.valid.highest + 1):
        expected = describe_json(definition["fields"], version, f"v{version}")
        assert describe_ours(ours, version, f"v{version}") == expected


def test_every_served_api_is_declared() -> None:
    assert set(API_BY_KEY) == SERVED_API_KEYS


def test_definition_loader_reads_versions_and_defaults() -> None:
    # Guards the comparison above against a loader that reads nothing: ApiVersions v3 is
    # well known (flexible since 3, a tagged epoch defaulting to -1).
    definition = load_definition("ApiVersionsResponse")
    rows = dict(describe_json(definition["fields"], 3, "v3"))
    assert rows["v3.FinalizedFeaturesEpoch"] == {
        "type": "int64", "present": True, "nullable": False, "tag": 1, "default": -1,
    }  # fmt: skip
    assert rows["v3.ApiKeys.MaxVersion"]["present"]
    assert first_flexible(definition["flexibleVersions"]) == 3
