"""Byte-for-byte agreement with kafka-python's independent, JSON-driven protocol classes.

For every API and version that both codecs declare, a random message built from our schema is
encoded by both (body alone, and as a whole frame with header), the bytes must be identical,
and each side must decode the other's bytes to the same values. Fields are matched by their
Kafka JSON names; values are converted generically by wire type.

kafka-python renames a few fields and models 32-bit authorized-operations masks as sets of
bit numbers ("bitfield"); the mapping below handles that generically (a renamed field is
matched by the suffix of our name, a bitfield is an int32 on the wire). Tagged fields that
only one side declares (Kafka adds tagged fields to existing flexible versions over time)
are left at their defaults.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.protocol.strategies import (
    CODEC_SETTINGS,
    Kind,
    carried,
    expected_decoded,
    is_tagged,
    message,
    schema_fields,
)
from tidelog.client.protocol.apis import ALL_APIS, encode_request, encode_response_header
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import Api, Field, Message, Versions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's resource loading
    import kafka.protocol.admin
    import kafka.protocol.consumer
    import kafka.protocol.metadata
    import kafka.protocol.producer  # noqa: F401  (imported for its message classes)
    from kafka.protocol.api_message import ApiMessage

INT32_MIN = -(2**31)


def _subclasses(cls: Any) -> Iterator[Any]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _kafka_python_classes() -> dict[tuple[int, str], Any]:
    """kafka-python's primary message class per (API key, "request" | "response")."""
    found: dict[tuple[int, str], Any] = {}
    for cls in _subclasses(ApiMessage):
        if getattr(cls, "_class_version", None) is None and "_json" in vars(cls):
            found[(cls.API_KEY, cls.type)] = cls
    return found


KP_CLASSES = _kafka_python_classes()


def kp_valid(cls: Any) -> range:
    """The versions kafka-python's message definition declares valid ("3-13" or "0")."""
    versions = Versions.parse(cls._json["validVersions"])
    return range(versions.lowest, versions.highest + 1)


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


# --- field matching -----------------------------------------------------------------------


def kp_children(kf: Any) -> tuple[Any, ...]:
    """The member fields of a kafka-python struct or struct-array field."""
    inner = kf.array_of if kf.is_struct_array() else kf
    return tuple(inner._fields)


def kp_carried(kf: Any, version: int, flexible: bool) -> bool:
    if not kf.for_version_q(version):
        return False
    return not (kf.tagged_field_q(version) and not flexible)


def kp_wire_type(kf: Any) -> str:
    """kafka-python's field type as a wire shape (struct names do not reach the wire)."""
    if kf.is_struct_array():
        return "[]struct"
    if kf.is_struct():
        return "struct"
    t = str(kf._type_str)
    return t.replace("bitfield", "int32")


def our_wire_type(f: Field) -> str:
    if f.is_struct:
        return "[]struct" if f.is_array else "struct"
    return f.type


def match(kf: Any, ours: tuple[Field, ...]) -> Field | None:
    """Our field for kafka-python's `kf`: same JSON name, else the one whose name ends with
    kafka-python's (its renames drop a prefix: ClusterAuthorizedOperations -> ...)."""
    name = _norm(kf._name)
    exact = [f for f in ours if _norm(f.kafka_name) == name]
    if exact:
        return exact[0]
    suffix = [f for f in ours if _norm(f.kafka_name).endswith(name)]
    return suffix[0] if len(suffix) == 1 else None


@dataclass(frozen=True)
class Pair:
    ours: Field
    kp: Any
    tagged: bool


def pairs(
    ours: tuple[Field, ...], kp_fields: tuple[Any, ...], version: int, flexible: bool
) -> tuple[list[Pair], list[str]]:
    """Matched carried fields at `version`, and a description of every layout difference."""
    problems: list[str] = []
    matched: list[Pair] = []
    our_regular = [
        f for f in ours if carried(f, version, flexible) and not is_tagged(f, version, flexible)
    ]
    kp_regular = [
        k
        for k in kp_fields
        if kp_carried(k, version, flexible) and not (flexible and k.tagged_field_q(version))
    ]
    if len(our_regular) != len(kp_regular):
        problems.append(
            f"v{version}: fields {[f.kafka_name for f in our_regular]} "
            f"vs kafka-python {[k._name for k in kp_regular]}"
        )
    for f, k in zip(our_regular, kp_regular, strict=False):
        if match(k, (f,)) is None or our_wire_type(f) != kp_wire_type(k):
            problems.append(
                f"v{version}: {f.kafka_name}:{our_wire_type(f)} vs {k._name}:{kp_wire_type(k)}"
            )
            continue
        nullable = version in f.nullable
        if nullable != bool(k.nullable_for_version_q(version)):
            problems.append(f"v{version}: {f.kafka_name} nullable {nullable} differs")
            continue
        matched.append(Pair(f, k, tagged=False))
    if flexible:
        our_tagged = {f.tag: f for f in ours if is_tagged(f, version, flexible)}
        for k in kp_fields:
            if not (kp_carried(k, version, flexible) and k.tagged_field_q(version)):
                continue
            tagged = our_tagged.get(k.tag)
            if tagged is None:
                continue  # a tagged field only kafka-python knows: left at its default
            if match(k, (tagged,)) is None or our_wire_type(tagged) != kp_wire_type(k):
                problems.append(f"v{version}: tag {k.tag} is {tagged.kafka_name} vs {k._name}")
                continue
            matched.append(Pair(tagged, k, tagged=True))
    for p in matched:
        if p.ours.is_struct:
            _, inner = pairs(p.ours.fields, kp_children(p.kp), version, flexible)
            problems.extend(f"{p.ours.kafka_name}.{x}" for x in inner)
    return matched, problems


# --- value conversion ---------------------------------------------------------------------


def _bits(value: int) -> set[int] | None:
    bits = {i for i in range(32) if (value & 0xFFFFFFFF) >> i & 1}
    return None if bits == {31} else bits


def _from_bits(bits: set[int] | None) -> int:
    unsigned = 1 << 31 if bits is None else sum(1 << b for b in bits)
    return unsigned - (1 << 32) if unsigned >= 1 << 31 else unsigned


def only_shared(
    ours: tuple[Field, ...], kp_fields: tuple[Any, ...], version: int, flexible: bool, msg: Message
) -> Message:
    """`msg` with tagged fields that kafka-python does not declare reset to their defaults."""
    matched, _ = pairs(ours, kp_fields, version, flexible)
    by_name = {p.ours.name: p for p in matched}
    out: Message = {}
    for f in ours:
        value = msg.get(f.name, f.default())
        p = by_name.get(f.name)
        if p is None:
            if carried(f, version, flexible):
                value = f.default()  # only tagged fields can be unmatched in a valid layout
        elif f.is_struct and value is not None:
            children = kp_children(p.kp)
            if f.is_array:
                value = [only_shared(f.fields, children, version, flexible, v) for v in value]
            else:
                value = only_shared(f.fields, children, version, flexible, value)
        out[f.name] = value
    return out


def to_kp_kwargs(
    ours: tuple[Field, ...], kp_fields: tuple[Any, ...], version: int, flexible: bool, msg: Message
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for p in pairs(ours, kp_fields, version, flexible)[0]:
        value = msg[p.ours.name]
        if p.tagged and value == p.ours.default():
            continue
        kwargs[p.kp.name] = _to_kp_value(p, version, flexible, value)
    return kwargs


def _to_kp_value(p: Pair, version: int, flexible: bool, value: Any) -> Any:
    if value is None:
        return None
    if p.ours.is_struct:
        children = kp_children(p.kp)

        def build(v: Message) -> Any:
            return p.kp.data_class(**to_kp_kwargs(p.ours.fields, children, version, flexible, v))

        return [build(v) for v in value] if p.ours.is_array else build(value)
    if p.kp._type_str == "bitfield":
        return _bits(value)
    if p.ours.type in ("bytes", "records"):
        return bytes(value)
    return value


def from_kp(
    ours: tuple[Field, ...], kp_fields: tuple[Any, ...], version: int, flexible: bool, obj: Any
) -> Message:
    by_name = {p.ours.name: p for p in pairs(ours, kp_fields, version, flexible)[0]}
    out: Message = {}
    for f in ours:
        p = by_name.get(f.name)
        if p is None:
            out[f.name] = f.default()
            continue
        value = getattr(obj, p.kp.name)
        out[f.name] = _from_kp_value(p, version, flexible, value)
    return out


def _from_kp_value(p: Pair, version: int, flexible: bool, value: Any) -> Any:
    f = p.ours
    if p.kp._type_str == "bitfield":
        return _from_bits(value)
    if value is None:
        nullable = version in f.nullable
        return None if nullable else f.default()
    if f.is_struct:
        children = kp_children(p.kp)
        if f.is_array:
            return [from_kp(f.fields, children, version, flexible, v) for v in value]
        return from_kp(f.fields, children, version, flexible, value)
    if f.type in ("bytes", "records"):
        return bytes(value)
    if f.type == "uuid" and not isinstance(value, uuid.UUID):
        return uuid.UUID(str(value))
    return value


# --- cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    api: Api
    version: int
    kind: Kind
    kp_cls: Any

    def __repr__(self) -> str:
        return f"Case({self.api.name} v{self.version} {self.kind})"

    @property
    def flexible(self) -> bool:
        return self.api.is_flexible(self.version)

    @property
    def ours(self) -> tuple[Field, ...]:
        return schema_fields(self.api, self.kind)

    @property
    def kp_fields(self) -> tuple[Any, ...]:
        return tuple(self.kp_cls._struct._fields)


def shared_cases() -> list[Case]:
    cases: list[Case] = []
    kinds: tuple[Kind, ...] = ("request", "response")
    for api in ALL_APIS:
        for kind in kinds:
            kp_cls = KP_CLASSES.get((api.key, kind))
            if kp_cls is None:
                continue
            for version in kp_valid(kp_cls):
                if version in api.valid:
                    cases.append(Case(api, version, kind, kp_cls))
    return cases


CASES = [pytest.param(c, id=f"{c.api.name}-v{c.version}-{c.kind}") for c in shared_cases()]


def test_kafka_python_implements_apis_we_declare() -> None:
    shared = {c.api.key for c in shared_cases()}
    assert 18 in shared
    assert len(CASES) >= 2 * len(shared)


@pytest.mark.parametrize("case", CASES)
def test_layouts_agree(case: Case) -> None:
    _, problems = pairs(case.ours, case.kp_fields, case.version, case.flexible)
    assert not problems, problems


def kp_decode(kp_cls: Any, data: bytes, **kwargs: Any) -> Any:
    """kafka-python's schema-driven decoding, without per-API client logic layered on top
    (its ApiVersionsResponse re-reads any error response as v0, a client's fallback)."""
    return ApiMessage.decode.__func__(kp_cls, data, **kwargs)


def _our_body(case: Case, msg: Message) -> bytes:
    w = Writer()
    if case.kind == "request":
        case.api.encode_request(w, msg, case.version)
    else:
        case.api.encode_response(w, msg, case.version)
    return w.getvalue()


def _our_decode(case: Case, body: bytes) -> Message:
    r = Reader(body)
    if case.kind == "request":
        msg = case.api.decode_request(r, case.version)
    else:
        msg = case.api.decode_response(r, case.version)
    assert r.remaining == 0
    return msg


@pytest.mark.parametrize("case", CASES)
@CODEC_SETTINGS
@given(data=st.data(), correlation_id=st.integers(INT32_MIN, 2**31 - 1))
def test_bytes_agree(case: Case, data: st.DataObject, correlation_id: int) -> None:
    _, problems = pairs(case.ours, case.kp_fields, case.version, case.flexible)
    if problems:
        pytest.skip("layouts differ (reported by test_layouts_agree)")
    drawn = data.draw(message(case.api, case.version, case.kind))
    msg = only_shared(case.ours, case.kp_fields, case.version, case.flexible, drawn)
    expected = expected_decoded(case.ours, case.version, case.flexible, msg)

    ours = _our_body(case, msg)
    kp_obj = case.kp_cls(
        version=case.version,
        **to_kp_kwargs(case.ours, case.kp_fields, case.version, case.flexible, msg),
    )
    theirs = kp_obj.encode(version=case.version)
    assert ours == theirs

    # Each decodes the other's bytes to the same values.
    assert _our_decode(case, theirs) == expected
    decoded_kp = kp_decode(case.kp_cls, ours, version=case.version)
    assert from_kp(case.ours, case.kp_fields, case.version, case.flexible, decoded_kp) == expected

    # Whole frames, headers included.
    if case.kind == "request":
        our_frame = encode_request(case.api.key, case.version, correlation_id, "tidelog", msg)
        kp_obj.with_header(correlation_id=correlation_id, client_id="tidelog")
    else:
        w = Writer()
        encode_response_header(w, case.api, case.version, correlation_id)
        body = w.getvalue() + ours
        our_frame = len(body).to_bytes(4, "big") + body
        kp_obj.with_header(correlation_id=correlation_id)
    # (the version was fixed when kp_obj was built; kafka-python's response objects cannot
    # take it again once they carry a header)
    assert our_frame == kp_obj.encode(header=True, framed=True)
    kp_framed = kp_decode(case.kp_cls, our_frame, version=case.version, header=True, framed=True)
    assert kp_framed.header.correlation_id == correlation_id
