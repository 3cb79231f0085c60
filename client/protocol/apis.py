"""Every API this codec knows, by key, and the request/response header codecs."""

from __future__ import annotations

from dataclasses import dataclass

from tidelog.client.protocol.errors import CorruptMessageError, UnsupportedVersionError
from tidelog.client.protocol.messages import admin, cluster, data, groups, quorum
from tidelog.client.protocol.messages.api_versions import API_VERSIONS
from tidelog.client.protocol.primitives import ARRAY_ELEMENTS_UNLIMITED, Reader, Writer
from tidelog.client.protocol.schema import Api, Message

ALL_APIS: tuple[Api, ...] = (
    API_VERSIONS,
    *data.APIS,
    *groups.APIS,
    *admin.APIS,
    *quorum.APIS,
    *cluster.APIS,
)
"""Every schema this codec knows. Knowing an API is not serving it: the broker routes and
advertises only the APIs of `broker.handlers.ROUTES` (the quorum and cluster-control APIs
are declared here for the controller, not served to clients)."""
API_BY_KEY: dict[int, Api] = {api.key: api for api in ALL_APIS}
API_BY_NAME: dict[str, Api] = {api.name: api for api in ALL_APIS}
assert len(API_BY_KEY) == len(ALL_APIS), "two schemas share an API key"


def api(key: int) -> Api:
    """The schema of API `key`; UnsupportedVersionError if this codec does not know it."""
    try:
        return API_BY_KEY[key]
    except KeyError:
        raise UnsupportedVersionError(f"unknown API key {key}") from None


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """Request header v1/v2 fields (v0, with no client id, is used by no API we serve)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None


def decode_request_header(
    frame: bytes | bytearray | memoryview, *, array_elements_max: int = ARRAY_ELEMENTS_UNLIMITED
) -> tuple[RequestHeader, Reader]:
    """Parse a request frame's header; return it and a Reader positioned at the body, which
    allows the body at most `array_elements_max` array elements in all (see `Reader`).

    The header is parsed even when the API key or version is unknown, so that the caller can
    answer with the matching correlation id. The tagged fields of header v2 are skipped only
    when the API and version are known to be flexible.
    """
    r = Reader(frame, array_elements_max=array_elements_max)
    try:
        api_key = r.int16()
        api_version = r.int16()
        correlation_id = r.int32()
        client_id = r.nullable_string()
    except CorruptMessageError as exc:
        raise CorruptMessageError(f"malformed request header: {exc}") from None
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    known = API_BY_KEY.get(api_key)
    if known is not None and api_version in known.valid and known.is_flexible(api_version):
        _skip_tagged_fields(r)
    return header, r


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, body: Message
) -> bytes:
    """A whole request frame: size prefix, header, body."""
    schema = api(api_key)
    w = Writer()
    w.int32(0)  # size, patched below
    w.int16(api_key)
    w.int16(api_version)
    w.int32(correlation_id)
    w.string(client_id, compact=False)
    if schema.request_header_version(api_version) >= 2:
        w.uvarint(0)
    schema.encode_request(w, body, api_version)
    out = bytearray(w.getvalue())
    out[0:4] = (len(out) - 4).to_bytes(4, "big", signed=True)
    return bytes(out)


def encode_response_header(w: Writer, schema: Api, api_version: int, correlation_id: int) -> None:
    """Write a response header of the version `schema` uses at `api_version`."""
    w.int32(correlation_id)
    if schema.response_header_version(api_version) >= 1:
        w.uvarint(0)


def decode_response(
    schema: Api, api_version: int, frame: bytes | bytearray | memoryview
) -> tuple[int, Message]:
    """Decode a response frame (without its size prefix): (correlation id, body)."""
    r = Reader(frame)
    correlation_id = r.int32()
    if schema.response_header_version(api_version) >= 1:
        _skip_tagged_fields(r)
    return correlation_id, schema.decode_response(r, api_version)


def _skip_tagged_fields(r: Reader) -> None:
    for _ in range(r.uvarint()):
        r.uvarint()
        r.raw(r.uvarint())
