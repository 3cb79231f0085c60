"""kafka_definitions/: fact-only copies of Kafka 4.x's message JSON, for APIs kafka-python lacks.

(Copied from Apache Kafka's clients/src/main/resources/common/message/<Name>.json.)

Reference definitions for schema agreement tests: find and load one of Kafka's message JSON
definitions, inline its commonStructs, and compare a list of our `Field`s with its fields at
one version, down to the innermost struct.

A definition is looked up by file stem (`VoteRequest`) along a search path of directories,
first match wins; the default path is kafka-python's copy of Kafka's JSON (when kafka-python
is installed), then `VENDORED_DIR`. Other agreement tests (metadata records, say) pass their
own directories. The vendored copies keep only what the codec models: apiKey, type, name,
validVersions, flexibleVersions, fields and commonStructs, and per field name, type,
versions, nullableVersions, tag, taggedVersions, default and fields. Their values are
Kafka's, verbatim (`"default": "-1"`, `"tag": "0"` where Kafka writes strings).
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidelog.client.protocol.schema import Field, Versions

JsonField = dict[str, Any]
Definition = dict[str, Any]

VENDORED_DIR = Path(__file__).parent / "kafka_definitions"

# Keys of a field definition that this codec models, and those that only document or drive
# Kafka's Java code generation (zeroCopy: a ByteBuffer instead of a copy). Any other key is a
# feature we would silently ignore.
MODELLED_KEYS = {"name", "type", "versions", "nullableVersions", "tag", "taggedVersions",
                 "default", "fields"}  # fmt: skip
DOCUMENTATION_KEYS = {"about", "mapKey", "entityType", "ignorable", "zeroCopy"}

# Top-level keys a vendored copy keeps (see the module docstring).
VENDORED_TOP_LEVEL_KEYS = {"apiKey", "type", "name", "validVersions", "flexibleVersions",
                           "fields", "commonStructs"}  # fmt: skip

INT_TYPES = {"int8", "int16", "uint16", "int32", "uint32", "int64"}


def kafka_python_dir() -> Path | None:
    """The directory of kafka-python's copy of Kafka's message JSON, if it is installed."""
    try:
        spec = importlib.util.find_spec("kafka.protocol.schemas.resources")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_search_path() -> tuple[Path, ...]:
    """kafka-python's copy first (where it has a definition it is the reference), then ours."""
    kafka_python = kafka_python_dir()
    return (VENDORED_DIR,) if kafka_python is None else (kafka_python, VENDORED_DIR)


def find_definition(name: str, search_path: Sequence[Path] | None = None) -> Path | None:
    """The first `<name>.json` along `search_path` (default: `default_search_path()`)."""
    for directory in default_search_path() if search_path is None else search_path:
        candidate = Path(directory) / f"{name}.json"
        if candidate.is_file():
            return candidate
    return None


def load_definition(name: str, search_path: Sequence[Path] | None = None) -> Definition:
    """One message definition, found along `search_path` (see `find_definition`), with its
    `//` comment lines removed and commonStructs inlined. FileNotFoundError if none is."""
    path = find_definition(name, search_path)
    if path is None:
        searched = default_search_path() if search_path is None else search_path
        raise FileNotFoundError(f"no {name}.json in {', '.join(map(str, searched))}")
    return parse_definition(path.read_text("utf-8"))


def parse_definition(text: str) -> Definition:
    """A definition's JSON text (Kafka's files carry `//` comment lines) as a dict, with
    commonStructs inlined into the fields that use them."""
    definition: Definition = json.loads(re.sub(r"(?m)^\s*//.*$", "", text))
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


def valid_versions(definition: Definition) -> Versions:
    """The versions a definition makes valid, as its validVersions says. (Kafka's own files
    may mark the latest of them `"latestVersionUnstable": true`; a vendored copy drops that
    key, so when vendoring such a definition, cut the unstable version from validVersions
    and say so here. No current copy needed it.)"""
    return Versions.parse(definition["validVersions"])


def first_flexible(spec: str) -> int | None:
    """The first version of a `flexibleVersions` spec, None for "none"."""
    flexible = Versions.parse(spec)
    if flexible.empty:
        return None
    assert flexible.highest == Versions.parse("0+").highest, f"flexibleVersions {spec} closed"
    return flexible.lowest


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
            "tag": int(f["tag"]) if present and tagged else None,
            "default": None if f["type"][:1].isupper() else json_default(f),
        }
        rows.append((here, facts))
        if is_struct_type(f["type"]):
            assert "fields" in f, f"{here}: struct type {f['type']} has no definition"
            rows.extend(describe_json(f["fields"], version, here))
    return rows


def describe_ours(fields: Sequence[Field], version: int, path: str) -> list[tuple[str, Any]]:
    """`describe_json`'s rows for our fields: the same facts, so the two compare equal."""
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


def field_differences(
    ours: Sequence[Field], theirs: list[JsonField], version: int, path: str = ""
) -> list[str]:
    """Where our fields and a definition's (commonStructs inlined) disagree at `version`:
    one line per differing, missing or extra field, empty when they agree in order, type,
    presence, nullability, tag and default at every depth."""
    path = path or f"v{version}"
    mine = describe_ours(ours, version, path)
    expected = describe_json(theirs, version, path)
    if mine == expected:
        return []
    problems = []
    for i in range(max(len(mine), len(expected))):
        got = mine[i] if i < len(mine) else None
        want = expected[i] if i < len(expected) else None
        if got == want:
            continue
        if got is None or want is None or got[0] != want[0]:
            problems.append(f"field #{i}: ours {got}, Kafka's {want}")
            break  # the rest is shifted: one line says where the lists part
        diff = {k: (got[1][k], want[1][k]) for k in want[1] if got[1][k] != want[1][k]}
        problems.append(f"{want[0]}: (ours, Kafka's) {diff}")
    return problems


def assert_only_facts(path: Path) -> None:
    """A vendored definition is plain JSON (no comments, no licence) holding only the keys
    this codec models, and is named after the message it defines."""
    definition = json.loads(path.read_text("utf-8"))
    assert set(definition) <= VENDORED_TOP_LEVEL_KEYS
    assert definition["name"] == path.stem

    def check(fields: list[JsonField]) -> None:
        for f in fields:
            assert set(f) <= MODELLED_KEYS, f"{path.stem}.{f['name']}: {set(f) - MODELLED_KEYS}"
            check(f.get("fields", []))

    check(definition["fields"])
    for struct in definition.get("commonStructs", []):
        check(struct["fields"])
