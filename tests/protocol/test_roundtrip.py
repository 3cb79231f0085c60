"""Every API, every valid version, request and response: random messages built from the schema
survive encode -> decode unchanged (with defaults for what the version does not carry), and
decode -> encode reproduces the bytes exactly; the same through whole frames with headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.protocol.strategies import (
    CODEC_SETTINGS,
    Kind,
    api_versions,
    expected_decoded,
    message,
    schema_fields,
)
from tidelog.client.protocol.apis import (
    ALL_APIS,
    decode_request_header,
    decode_response,
    encode_request,
    encode_response_header,
)
from tidelog.client.protocol.framing import FrameDecoder
from tidelog.client.protocol.primitives import Reader, Writer
from tidelog.client.protocol.schema import Api, Message

CASES = [
    pytest.param(api, version, kind, id=f"{api.name}-v{version}-{kind}")
    for api, version in api_versions(ALL_APIS)
    for kind in ("request", "response")
]


def encode_body(api: Api, version: int, kind: Kind, msg: Message) -> bytes:
    w = Writer()
    if kind == "request":
        api.encode_request(w, msg, version)
    else:
        api.encode_response(w, msg, version)
    return w.getvalue()


def decode_body(api: Api, version: int, kind: Kind, data: bytes) -> Message:
    r = Reader(data)
    msg = api.decode_request(r, version) if kind == "request" else api.decode_response(r, version)
    assert r.remaining == 0, "decoding left bytes unread"
    return msg


def test_every_api_has_a_case() -> None:
    assert len(CASES) >= 2 * len(ALL_APIS)


@pytest.mark.parametrize(("api", "version", "kind"), CASES)
@CODEC_SETTINGS
@given(
    data=st.data(),
    correlation_id=st.integers(-(2**31), 2**31 - 1),
    client_id=st.none() | st.text(max_size=10),
)
def test_round_trip(
    api: Api,
    version: int,
    kind: Kind,
    data: st.DataObject,
    correlation_id: int,
    client_id: str | None,
) -> None:
    msg = data.draw(message(api, version, kind))
    expected = expected_decoded(schema_fields(api, kind), version, api.is_flexible(version), msg)
    encoded = encode_body(api, version, kind, msg)
    decoded = decode_body(api, version, kind, encoded)
    assert decoded == expected
    assert encode_body(api, version, kind, decoded) == encoded
    if kind == "request":
        assert_request_frame_round_trip(api, version, msg, expected, correlation_id, client_id)
    else:
        assert_response_frame_round_trip(api, version, msg, expected, correlation_id)


def assert_request_frame_round_trip(
    api: Api,
    version: int,
    msg: Message,
    expected: Message,
    correlation_id: int,
    client_id: str | None,
) -> None:
    frame = encode_request(api.key, version, correlation_id, client_id, msg)
    decoder = FrameDecoder(max_frame_bytes=len(frame))
    decoder.receive_data(frame)
    body = decoder.next_frame()
    assert isinstance(body, bytes)
    assert len(body) == len(frame) - 4
    header, r = decode_request_header(body)
    assert (header.api_key, header.api_version) == (api.key, version)
    assert header.correlation_id == correlation_id
    assert header.client_id == client_id
    assert api.decode_request(r, version) == expected
    assert r.remaining == 0
    assert body.endswith(encode_body(api, version, "request", msg))


def assert_response_frame_round_trip(
    api: Api, version: int, msg: Message, expected: Message, correlation_id: int
) -> None:
    w = Writer()
    encode_response_header(w, api, version, correlation_id)
    api.encode_response(w, msg, version)
    got_correlation_id, decoded = decode_response(api, version, w.getvalue())
    assert got_correlation_id == correlation_id
    assert decoded == expected


@pytest.mark.parametrize(("api", "version", "kind"), CASES)
def test_missing_keys_encode_as_defaults(api: Api, version: int, kind: Kind) -> None:
    fields = schema_fields(api, kind)
    defaults = {f.name: f.default() for f in fields}
    encoded = encode_body(api, version, kind, {})
    assert encoded == encode_body(api, version, kind, defaults)
    assert decode_body(api, version, kind, encoded) == defaults
