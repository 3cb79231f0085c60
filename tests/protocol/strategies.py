"""Hypothesis strategies that build valid messages from a schema, for any struct at any version.

`message(api, version, kind)` draws a dict holding a value for every field of the schema:
fields the version carries get random values within the wire type's range (nullable only
where the version allows null, tagged fields only in flexible versions); fields the version
does not carry get junk (None or their default), which the encoder must ignore.
`expected_decoded(...)` is what decoding the encoded message must give back: the same values,
with every field the version does not carry replaced by its default.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tidelog.client.protocol.schema import Api, Field, Message

Kind = Literal["request", "response"]

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)
"""Every run checks the same examples, and nothing is written to an example database."""

CODEC_SETTINGS = settings(
    DETERMINISTIC,
    max_examples=6,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""For the schema-driven property tests: few examples per (API, version, kind), because
there are hundreds of those."""

ARRAY_SIZE_MAX = 3
STRING_SIZE_MAX = 12
BYTES_SIZE_MAX = 24

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def schema_fields(api: Api, kind: Kind) -> tuple[Field, ...]:
    return api.request if kind == "request" else api.response


def carried(f: Field, version: int, flexible: bool) -> bool:
    """Whether `f` is on the wire at `version`: in its versions, and, when it has a tag in
    this version, only if the version is flexible (tagged fields need the flexible format)."""
    if version not in f.versions:
        return False
    return not (f.tag is not None and version in f.tagged and not flexible)


def is_tagged(f: Field, version: int, flexible: bool) -> bool:
    return flexible and f.tag is not None and version in f.tagged


def scalar_values(type_name: str) -> st.SearchStrategy[Any]:
    """Values of one primitive wire type, over its whole range."""
    if type_name in _INT_RANGES:
        lo, hi = _INT_RANGES[type_name]
        return st.integers(lo, hi)
    if type_name == "bool":
        return st.booleans()
    if type_name == "float64":
        return st.floats(allow_nan=False)
    if type_name == "string":
        return st.text(max_size=STRING_SIZE_MAX)
    if type_name in ("bytes", "records"):
        return st.binary(max_size=BYTES_SIZE_MAX)
    if type_name == "uuid":
        return st.integers(0, 2**128 - 1).map(lambda n: uuid.UUID(int=n))
    raise AssertionError(f"no strategy for wire type {type_name}")


_struct_cache: dict[tuple[int, int, bool], st.SearchStrategy[Message]] = {}


def struct_values(
    fields: tuple[Field, ...], version: int, flexible: bool
) -> st.SearchStrategy[Message]:
    """Dicts holding every field of `fields`, valid for `version`."""
    key = (id(fields), version, flexible)
    strategy = _struct_cache.get(key)
    if strategy is None:
        strategy = st.fixed_dictionaries(
            {f.name: field_values(f, version, flexible) for f in fields}
        )
        _struct_cache[key] = strategy
    return strategy


def field_values(f: Field, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    if not carried(f, version, flexible):
        return st.sampled_from([None, f.default()])
    if f.is_struct:
        element = struct_values(f.fields, version, flexible)
    else:
        element = scalar_values(f.element_type)
    nullable = version in f.nullable
    if f.is_array:
        values = st.lists(element, max_size=ARRAY_SIZE_MAX)
        return st.none() | values if nullable else values
    return st.none() | element if nullable and not f.is_struct else element


def message(api: Api, version: int, kind: Kind) -> st.SearchStrategy[Message]:
    """A full `kind` message of `api` at `version`."""
    return struct_values(schema_fields(api, kind), version, api.is_flexible(version))


def expected_decoded(
    fields: tuple[Field, ...], version: int, flexible: bool, msg: Message
) -> Message:
    """`msg` as decoding its encoding must return it: fields the version does not carry (at
    any depth) hold their defaults, keys missing from `msg` too."""
    out: Message = {}
    for f in fields:
        if not carried(f, version, flexible) or f.name not in msg:
            out[f.name] = f.default()
            continue
        value = msg[f.name]
        if f.is_struct and value is not None:
            if f.is_array:
                value = [expected_decoded(f.fields, version, flexible, v) for v in value]
            else:
                value = expected_decoded(f.fields, version, flexible, value)
        out[f.name] = value
    return out


def api_versions(apis: tuple[Api, ...]) -> list[tuple[Api, int]]:
    """Every (API, version) pair the APIs declare valid."""
    return [
        (api, version) for api in apis for version in range(api.valid.lowest, api.valid.highest + 1)
    ]
