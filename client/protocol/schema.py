"""Declarative message schemas, in the vocabulary of Kafka's own message JSON files.

A message is declared once as a list of `F(...)` fields, each with the versions it exists in
("3+", "0-4", "none"), the versions in which it may be null, and, for tagged fields, its tag.
Field names are Kafka's CamelCase names; decoded messages are plain dicts keyed by the
snake_case form (`ThrottleTimeMs` -> `throttle_time_ms`). A decoded dict holds every field
of the schema: fields absent at the decoded version carry their defaults, so handlers can
read any field at any version.

Encoding is strict about names, lenient about versions (see `StructCodec.encode_into`): a key
the struct does not declare at any version raises `SchemaError`; a key the version does not
carry is ignored, so one dict serves every version; a missing key is sent as its field's
default, unless that default is not valid at the version (null where the field is not
nullable), which raises `SchemaError` too.

Per (message, version, flexible) a `StructCodec` is built once and cached.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidelog.client.protocol.errors import CorruptMessageError
from tidelog.client.protocol.primitives import ZERO_UUID, Reader, Writer

Message = dict[str, Any]

MAX_VERSION = 0x7FFF


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive version range; `lowest > highest` means none."""

    lowest: int
    highest: int

    @classmethod
    def parse(cls, spec: str) -> Versions:
        """Kafka's notation: "3+", "0-4", "5", "none" (or empty)."""
        spec = spec.strip()
        if spec in ("", "none"):
            return cls(1, 0)
        if spec.endswith("+"):
            return cls(int(spec[:-1]), MAX_VERSION)
        if "-" in spec:
            lo, hi = spec.split("-")
            return cls(int(lo), int(hi))
        return cls(int(spec), int(spec))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lowest <= version <= self.highest

    @property
    def empty(self) -> bool:
        return self.lowest > self.highest


_PRIMITIVES = (
    "bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64",
    "string", "bytes", "records", "uuid",
)  # fmt: skip

_NO_DEFAULT = object()


class SchemaError(ValueError):
    """A message that does not fit its schema, found while encoding it: a key the struct does
    not declare, or a missing key that has no valid default.

    `path` locates the struct at fault within the message (`["topics", "[2]", "partitions",
    "[0]"]`, empty for the top level), as `StructCodec.encode_into` found it; `where` names
    the message (`"Produce v9 request"`) when an `Api` encoded it, else it is empty.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = []
        self.where = ""

    def __str__(self) -> str:
        where = self.where or "message"
        if not self.path:
            return f"{where}: {self.detail}"
        path = "".join(p if p.startswith("[") else f".{p}" for p in self.path).lstrip(".")
        return f"{where}, at {path}: {self.detail}"


def snake_case(name: str) -> str:
    """Kafka's field name in snake_case: `ThrottleTimeMs` -> `throttle_time_ms`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True)
class Field:
    """One field of a message schema (see `F`)."""

    kafka_name: str
    type: str
    versions: Versions
    nullable: Versions
    tag: int | None
    tagged: Versions
    fields: tuple[Field, ...]
    explicit_default: Any
    name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", snake_case(self.kafka_name))
        base = self.element_type
        if base not in _PRIMITIVES and not self.fields:
            raise ValueError(f"field {self.kafka_name}: struct type {base} declares no fields")

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        return self.element_type not in _PRIMITIVES

    def default(self) -> Any:
        """A fresh default value (Kafka's rules: 0, false, "", empty array, zero UUID)."""
        if self.explicit_default is not _NO_DEFAULT:
            value = self.explicit_default
            return list(value) if isinstance(value, list) else value
        if self.is_array:
            return []
        t = self.type
        if t == "bool":
            return False
        if t in ("string",):
            return ""
        if t == "bytes":
            return b""
        if t == "records":
            return None
        if t == "uuid":
            return ZERO_UUID
        if t == "float64":
            return 0.0
        if self.is_struct:
            return {f.name: f.default() for f in self.fields}
        return 0


def F(
    name: str,
    type: str,
    versions: str = "0+",
    *,
    nullable: str = "none",
    tag: int | None = None,
    tagged: str | None = None,
    default: Any = _NO_DEFAULT,
    fields: Sequence[Field] = (),
) -> Field:
    """Declare a field. `tagged` defaults to `versions` for a field with a tag."""
    if tag is not None and tagged is None:
        tagged = versions
    return Field(
        kafka_name=name,
        type=type,
        versions=Versions.parse(versions),
        nullable=Versions.parse(nullable),
        tag=tag,
        tagged=Versions.parse(tagged or "none"),
        fields=tuple(fields),
        explicit_default=default,
    )


# --- codecs -------------------------------------------------------------------------------

Decode = Callable[[Reader], Any]
Encode = Callable[[Writer, Any], None]

_FIXED: dict[str, tuple[str, str]] = {
    "bool": ("boolean", "boolean"),
    "int8": ("int8", "int8"),
    "int16": ("int16", "int16"),
    "uint16": ("uint16", "uint16"),
    "int32": ("int32", "int32"),
    "uint32": ("uint32", "uint32"),
    "int64": ("int64", "int64"),
    "float64": ("float64", "float64"),
    "uuid": ("uuid", "uuid"),
}


def _scalar_codec(f: Field, version: int, flexible: bool) -> tuple[Decode, Encode]:
    t = f.element_type
    nullable = version in f.nullable and not f.is_array
    if t in _FIXED:
        rname, wname = _FIXED[t]
        read = getattr(Reader, rname)
        write = getattr(Writer, wname)
        return read, write
    if t == "string":
        if flexible:
            rs: Decode = Reader.compact_nullable_string if nullable else Reader.compact_string
        else:
            rs = Reader.nullable_string if nullable else Reader.string

        def write_string(w: Writer, v: Any) -> None:
            if v is None and not nullable:
                raise ValueError(f"{f.kafka_name} is not nullable at version {version}")
            w.string(v, flexible)

        return rs, write_string
    # bytes and records
    view_reader = Reader.compact_bytes_view if flexible else Reader.nullable_bytes_view
    as_view = t == "records"

    def read_bytes(r: Reader) -> Any:
        v = view_reader(r)
        if v is None:
            if not nullable:
                raise CorruptMessageError(f"null in non-nullable {f.kafka_name}")
            return None
        return v if as_view else bytes(v)

    def write_bytes(w: Writer, v: Any) -> None:
        if v is None and not nullable:
            raise ValueError(f"{f.kafka_name} is not nullable at version {version}")
        w.bytes_(v, flexible)

    return read_bytes, write_bytes


def _field_codec(f: Field, version: int, flexible: bool) -> tuple[Decode, Encode]:
    if f.is_struct:
        inner = StructCodec.build(f.fields, version, flexible)
        elem_read: Decode = inner.decode_from
        elem_write: Encode = inner.write
    else:
        elem_read, elem_write = _scalar_codec(f, version, flexible)
    if not f.is_array:
        return elem_read, elem_write
    nullable = version in f.nullable

    def read_array(r: Reader) -> Any:
        n = r.array_length(flexible)
        if n == -1:
            if not nullable:
                raise CorruptMessageError(f"null array {f.kafka_name}")
            return None
        return [elem_read(r) for _ in range(n)]

    def write_array(w: Writer, v: Any) -> None:
        if v is None:
            if not nullable:
                raise ValueError(f"{f.kafka_name} is not nullable at version {version}")
            w.array_length(None, flexible)
            return
        w.array_length(len(v), flexible)
        for item in v:
            elem_write(w, item)

    return read_array, write_array


class StructCodec:
    """Encoder and decoder of one struct at one version.

    `known_keys` are the names of the struct's fields at every version, `carried_count` the
    number of fields this version carries, `required_keys` the names of those regular fields
    of this version whose default is not valid here (see `encode_into`).
    """

    _cache: dict[tuple[int, int, bool], StructCodec] = {}

    def __init__(self, fields: tuple[Field, ...], version: int, flexible: bool) -> None:
        self.fields = fields
        self.version = version
        self.flexible = flexible
        self.regular: list[tuple[str, Decode, Encode, Field]] = []
        self.tagged: dict[int, tuple[str, Decode, Encode, Field]] = {}
        self.absent: list[Field] = []
        for f in fields:
            if version not in f.versions:
                self.absent.append(f)
                continue
            read, write = _field_codec(f, version, flexible)
            if flexible and f.tag is not None and version in f.tagged:
                self.tagged[f.tag] = (f.name, read, write, f)
            elif f.tag is not None and version in f.tagged:
                self.absent.append(f)  # tagged fields do not exist in non-flexible versions
            else:
                self.regular.append((f.name, read, write, f))
        self.tagged_sorted = sorted(self.tagged.items())
        self.known_keys = frozenset(f.name for f in fields)
        self.carried_count = len(self.regular) + len(self.tagged)
        self.required_keys = frozenset(
            name for name, _, _, f in self.regular if not _default_valid(f, version, flexible)
        )

    @classmethod
    def build(cls, fields: tuple[Field, ...], version: int, flexible: bool) -> StructCodec:
        key = (id(fields), version, flexible)
        codec = cls._cache.get(key)
        if codec is None or codec.fields is not fields:
            codec = cls(fields, version, flexible)
            cls._cache[key] = codec
        return codec

    def decode_from(self, r: Reader) -> Message:
        msg: Message = {f.name: f.default() for f in self.absent}
        for name, read, _, _ in self.regular:
            msg[name] = read(r)
        if self.flexible:
            for _, (name, _, _, f) in self.tagged_sorted:
                msg[name] = f.default()
            self._read_tagged(r, msg)
        return msg

    def _read_tagged(self, r: Reader, msg: Message) -> None:
        count = r.uvarint()
        last_tag = -1
        for _ in range(count):
            tag = r.uvarint()
            size = r.uvarint()
            if tag <= last_tag:
                raise CorruptMessageError(f"tagged fields out of order: {tag} after {last_tag}")
            last_tag = tag
            end = r.pos + size
            if end > r.end:
                raise CorruptMessageError(f"tagged field {tag} of {size} bytes overruns")
            known = self.tagged.get(tag)
            if known is not None:
                sub = Reader(r.buf, r.pos, end, array_elements_max=r.array_elements_left)
                msg[known[0]] = known[1](sub)
                r.array_elements_left = sub.array_elements_left
                if sub.pos != end:
                    raise CorruptMessageError(f"tagged field {tag} has trailing bytes")
            r.pos = end  # unknown tags are skipped

    def encode_into(self, w: Writer, msg: Message) -> None:
        """Write `msg`, checking its keys against the schema at every nesting level.

        Raises SchemaError, naming the path to the struct at fault, for a key that no version
        of the struct declares. Keys of fields this version does not carry are ignored, and
        so are their values (unchecked). A missing key is sent as its field's default, which
        Kafka defines for every field (0, false, "", empty array, zero UUID, or the declared
        default); a missing tagged field is not sent. So only a regular field whose default
        is not valid at this version must be given (SchemaError otherwise): one whose default
        is null (declared, or a `records` field's implicit one) where it is not nullable, or
        a struct holding such a field.
        """
        try:
            self.write(w, msg)
        except SchemaError as exc:
            raise (self._find_error(msg) or exc) from None

    def write(self, w: Writer, msg: Message) -> None:
        """`encode_into` without locating an error: nested structs are written with this."""
        get = msg.get
        missing = 0
        for name, _, write, f in self.regular:
            v = get(name, _NO_DEFAULT)
            if v is _NO_DEFAULT:
                if name in self.required_keys:
                    raise self._missing_key(name)
                missing += 1
                v = f.default()
            write(w, v)
        if self.flexible:
            present: list[tuple[int, Encode, Any]] = []
            for tag, (name, _, write, f) in self.tagged_sorted:
                v = get(name, _NO_DEFAULT)
                if v is _NO_DEFAULT:
                    missing += 1
                    continue
                if v == f.default():
                    continue
                present.append((tag, write, v))
            w.uvarint(len(present))
            for tag, write, v in present:
                sub = Writer()
                write(sub, v)
                data = sub.getvalue()
                w.uvarint(tag)
                w.uvarint(len(data))
                w.raw(data)
        # `msg` holds carried_count - missing carried keys: only one holding more (keys of
        # other versions, or unknown ones) needs the set check.
        if len(msg) > self.carried_count - missing and not self.known_keys.issuperset(msg):
            raise self._unknown_keys(msg)

    def _find_error(self, msg: Message) -> SchemaError | None:
        """The first key error in `msg`, with its path: the slow path of `encode_into`."""
        if not self.known_keys.issuperset(msg):
            return self._unknown_keys(msg)
        for name, _, _, _ in self.regular:
            if name in self.required_keys and name not in msg:
                return self._missing_key(name)
        for name, _, _, f in (*self.regular, *self.tagged.values()):
            value = msg.get(name)
            if not f.is_struct or value is None:
                continue
            if f.is_array:
                elements = [([name, f"[{i}]"], item) for i, item in enumerate(value)]
            else:
                elements = [([name], value)]
            inner = StructCodec.build(f.fields, self.version, self.flexible)
            for path, item in elements:
                error = inner._find_error(item)
                if error is not None:
                    error.path[:0] = path
                    return error
        return None

    def _missing_key(self, name: str) -> SchemaError:
        return SchemaError(f"missing key {name!r}, whose default is not valid at v{self.version}")

    def _unknown_keys(self, msg: Message) -> SchemaError:
        unknown = [repr(k) for k in msg if k not in self.known_keys]
        known = ", ".join(f.name for f in self.fields)
        noun = "key" if len(unknown) == 1 else "keys"
        return SchemaError(f"unknown {noun} {', '.join(unknown)} (known keys: {known})")


def _default_valid(f: Field, version: int, flexible: bool) -> bool:
    """Whether `f`'s default can be encoded at `version`: not null where `f` is not
    nullable, and, for a struct without a declared default, no field of it required."""
    if f.is_struct and not f.is_array and f.explicit_default is _NO_DEFAULT:
        return not StructCodec.build(f.fields, version, flexible).required_keys
    return version in f.nullable or f.default() is not None


# --- APIs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """One API key: its request and response schemas over `valid` versions.

    `flexible` is the first flexible version (compact encodings, tagged fields, request
    header v2 and response header v1), or None if the API has no flexible version here.
    """

    key: int
    name: str
    valid: Versions
    flexible: int | None
    request: tuple[Field, ...]
    response: tuple[Field, ...]

    def is_flexible(self, version: int) -> bool:
        return self.flexible is not None and version >= self.flexible

    def request_header_version(self, version: int) -> int:
        if self.key == 7:  # ControlledShutdown v0 is the one API with request header v0
            return 0 if version == 0 else (2 if self.is_flexible(version) else 1)
        return 2 if self.is_flexible(version) else 1

    def response_header_version(self, version: int) -> int:
        if self.key == 18:  # ApiVersions responses always use header v0
            return 0
        return 1 if self.is_flexible(version) else 0

    def _codec(self, fields: tuple[Field, ...], version: int) -> StructCodec:
        if version not in self.valid:
            from tidelog.client.protocol.errors import UnsupportedVersionError

            raise UnsupportedVersionError(f"{self.name} v{version} is not supported")
        return StructCodec.build(fields, version, self.is_flexible(version))

    def decode_request(self, r: Reader, version: int) -> Message:
        return _decode(self._codec(self.request, version), r, self.name, "request")

    def decode_response(self, r: Reader, version: int) -> Message:
        return _decode(self._codec(self.response, version), r, self.name, "response")

    def encode_request(self, w: Writer, msg: Message, version: int) -> None:
        """Write request `msg` at `version`; SchemaError (see `StructCodec.encode_into`)."""
        self._encode(self.request, "request", w, msg, version)

    def encode_response(self, w: Writer, msg: Message, version: int) -> None:
        """Write response `msg` at `version`; SchemaError (see `StructCodec.encode_into`)."""
        self._encode(self.response, "response", w, msg, version)

    def _encode(
        self, fields: tuple[Field, ...], kind: str, w: Writer, msg: Message, version: int
    ) -> None:
        try:
            self._codec(fields, version).encode_into(w, msg)
        except SchemaError as exc:
            exc.where = f"{self.name} v{version} {kind}"
            raise


def _decode(codec: StructCodec, r: Reader, api: str, kind: str) -> Message:
    try:
        return codec.decode_from(r)
    except (struct.error, IndexError, ValueError) as exc:
        raise CorruptMessageError(f"malformed {api} {kind}: {exc}") from None
