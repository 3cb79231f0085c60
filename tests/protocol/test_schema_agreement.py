"""Every schema we declare agrees with Kafka's own message definitions.

The reference is the copy of Kafka's message JSON that kafka-python ships, and for the APIs it
lacks (the quorum and cluster-control APIs) the fact-only copies in
tests/protocol/kafka_definitions (see tests/protocol/schema_reference.py). For each API in
`ALL_APIS`, request and response, our valid range and first flexible version must equal the
JSON's, and at every valid version each struct must hold the same fields in the same order,
with the same types, presence, nullability, tags and defaults, down to the innermost struct.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol.schema_reference import (
    DOCUMENTATION_KEYS,
    MODELLED_KEYS,
    VENDORED_DIR,
    assert_only_facts,
    describe_json,
    field_differences,
    find_definition,
    first_flexible,
    kafka_python_dir,
    load_definition,
    valid_versions,
)
from tidelog.client.protocol.apis import ALL_APIS, API_BY_KEY
from tidelog.client.protocol.schema import Api

CLIENT_API_KEYS = {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                   29, 30, 31, 32, 33, 36, 37, 42, 43, 44, 47, 60, 61}  # fmt: skip
QUORUM_AND_CLUSTER_API_KEYS = {52, 53, 54, 55, 56, 58, 59, 62, 63, 64, 67}
"""Declared for the KRaft controller; the broker neither routes nor advertises them."""

CASES = [
    pytest.param(api, kind, id=f"{api.name}-{kind}")
    for api in ALL_APIS
    for kind in ("request", "response")
]


@pytest.mark.parametrize(("api", "kind"), CASES)
def test_schema_agrees_with_kafka_definition(api: Api, kind: str) -> None:
    name = f"{api.name}{kind.capitalize()}"
    if find_definition(name) is None:
        pytest.skip(f"{name}.json: kafka-python, which ships it, is not installed")
    definition = load_definition(name)
    assert definition["apiKey"] == api.key
    assert definition["type"] == kind
    assert api.valid == valid_versions(definition)
    assert api.flexible == first_flexible(definition["flexibleVersions"])
    ours = api.request if kind == "request" else api.response
    for version in range(api.valid.lowest, api.valid.highest + 1):
        problems = field_differences(ours, definition["fields"], version)
        assert not problems, "\n".join(problems)


def test_every_declared_api_is_expected() -> None:
    assert set(API_BY_KEY) == CLIENT_API_KEYS | QUORUM_AND_CLUSTER_API_KEYS


def test_every_api_has_exactly_one_reference_definition() -> None:
    kafka_python = kafka_python_dir()
    if kafka_python is None:
        pytest.skip("kafka-python, which ships Kafka's message JSON definitions, is not installed")
    vendored = {p.stem for p in VENDORED_DIR.glob("*.json")}
    shipped = {p.stem for p in kafka_python.glob("*.json")}
    assert not vendored & shipped, "vendor only what kafka-python lacks"
    needed = {f"{api.name}{kind}" for api in ALL_APIS for kind in ("Request", "Response")}
    assert needed <= vendored | shipped
    assert vendored <= needed, "a vendored definition no schema is checked against"


@pytest.mark.parametrize("path", sorted(VENDORED_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_vendored_definitions_hold_only_facts(path: Path) -> None:
    assert_only_facts(path)


def test_definition_loader_reads_versions_and_defaults() -> None:
    # Guards the comparison above against a loader that reads nothing: ApiVersions v3 is
    # well known (flexible since 3, a tagged epoch defaulting to -1), and so is Vote v1
    # from our copies (a tagged NodeEndpoints list from v1).
    if find_definition("ApiVersionsResponse") is not None:
        definition = load_definition("ApiVersionsResponse")
        rows = dict(describe_json(definition["fields"], 3, "v3"))
        assert rows["v3.FinalizedFeaturesEpoch"] == {
            "type": "int64", "present": True, "nullable": False, "tag": 1, "default": -1,
        }  # fmt: skip
        assert rows["v3.ApiKeys.MaxVersion"]["present"]
        assert first_flexible(definition["flexibleVersions"]) == 3
    vote = load_definition("VoteResponse", [VENDORED_DIR])
    rows = dict(describe_json(vote["fields"], 1, "v1"))
    assert rows["v1.NodeEndpoints"]["tag"] == 0
    assert rows["v1.NodeEndpoints.Port"]["type"] == "uint16"
    assert not dict(describe_json(vote["fields"], 0, "v0"))["v0.NodeEndpoints"]["present"]
    assert DOCUMENTATION_KEYS.isdisjoint(MODELLED_KEYS)
