"""Encoder strictness: a key the schema does not declare at any version is refused at every
nesting level (top level, array elements, nested and tagged structs) with an error naming the
message, the path and the key; a key of another version is ignored; a missing key is sent as
its default unless that default is not valid at the version."""

from __future__ import annotations

import pytest

from tests.protocol.strategies import Kind, api_versions
from tidelog.client.protocol.apis import ALL_APIS
from tidelog.client.protocol.messages.data import FETCH, PRODUCE
from tidelog.client.protocol.primitives import Writer
from tidelog.client.protocol.schema import Api, F, Message, SchemaError, StructCodec, Versions

# v0 is non-flexible, v1 flexible. Blob is a records field, null only from v1; Note has a null
# default but is nullable only from v1; Inner is a regular struct holding a Note-like field.
EXAMPLE = Api(
    key=30001,
    name="Example",
    valid=Versions.parse("0-1"),
    flexible=1,
    request=(
        F("Id", "int32"),
        F("Blob", "records", nullable="1+"),
        F("Note", "string", nullable="1+", default=None),
        F("Inner", "InnerStruct", fields=(
            F("Count", "int32"),
            F("Label", "string", nullable="1+", default=None),
        )),
    ),
    response=(
        F("ErrorCode", "int16"),
        F("Detail", "DetailStruct", fields=(
            F("Code", "int32"),
            F("Hint", "string"),
        )),
    ),
)  # fmt: skip

FULL_EXAMPLE_REQUEST: Message = {
    "id": 1, "blob": b"", "note": "n", "inner": {"count": 2, "label": "l"},
}  # fmt: skip


def encode(api: Api, kind: Kind, msg: Message, version: int) -> bytes:
    w = Writer()
    if kind == "request":
        api.encode_request(w, msg, version)
    else:
        api.encode_response(w, msg, version)
    return w.getvalue()


def produce_response(partition: Message) -> Message:
    """A Produce response with one topic of two partitions, the second being `partition`."""
    return {
        "responses": [
            {"name": "t", "partition_responses": [{"index": 0}, {"index": 1, **partition}]}
        ],
        "throttle_time_ms": 0,
    }


def test_an_unknown_top_level_key_is_refused_naming_the_key_and_the_known_keys() -> None:
    with pytest.raises(SchemaError) as caught:
        encode(PRODUCE, "response", {"responses": [], "throttle_tme_ms": 5}, 9)
    assert caught.value.path == []
    assert str(caught.value) == (
        "Produce v9 response: unknown key 'throttle_tme_ms' "
        "(known keys: responses, throttle_time_ms, node_endpoints)"
    )


def test_an_unknown_key_in_an_array_element_names_its_path() -> None:
    with pytest.raises(SchemaError) as caught:
        encode(PRODUCE, "response", produce_response({"erorr_code": 3}), 9)
    assert caught.value.path == ["responses", "[0]", "partition_responses", "[1]"]
    message = str(caught.value)
    assert message.startswith(
        "Produce v9 response, at responses[0].partition_responses[1]: unknown key 'erorr_code' "
    )
    assert "error_code" in message and "base_offset" in message


def test_an_unknown_key_in_a_nested_struct_names_its_path() -> None:
    msg = {"error_code": 0, "detail": {"code": 1, "hnt": "x"}}
    with pytest.raises(SchemaError, match=r"^Example v0 response, at detail: unknown key 'hnt' "):
        encode(EXAMPLE, "response", msg, 0)


def test_an_unknown_key_in_a_tagged_struct_is_refused() -> None:
    partition = {"current_leader": {"leader_id": 1, "leadr_epoch": 2}}
    with pytest.raises(SchemaError) as caught:
        encode(PRODUCE, "response", produce_response(partition), 10)
    assert str(caught.value).startswith(
        "Produce v10 response, at responses[0].partition_responses[1].current_leader: "
        "unknown key 'leadr_epoch' (known keys: leader_id, leader_epoch)"
    )


def test_an_unknown_key_in_a_tagged_array_of_structs_is_refused() -> None:
    msg = {"responses": [], "node_endpoints": [{"node_id": 1, "hots": "h", "port": 1}]}
    with pytest.raises(SchemaError, match=r"^Produce v10 response, at node_endpoints\[0\]: "):
        encode(PRODUCE, "response", msg, 10)


def test_every_unknown_key_of_a_struct_is_named() -> None:
    with pytest.raises(SchemaError, match=r": unknown keys 'acks_', 'timeout' \(known keys: "):
        encode(PRODUCE, "request", {"acks_": 1, "timeout": 5, "topic_data": []}, 9)


def test_an_unknown_key_deep_in_a_request_is_refused() -> None:
    msg = {
        "max_wait_ms": 0,
        "topics": [{"topic": "t", "partitions": [{"partition": 0, "fetch_ofset": 5}]}],
    }
    with pytest.raises(SchemaError, match=r"^Fetch v4 request, at topics\[0\]\.partitions\[0\]: "):
        encode(FETCH, "request", msg, 4)


def test_keys_of_other_versions_are_accepted_and_not_encoded() -> None:
    # At v9, topic_id (13+), current_leader (10+, tagged) and node_endpoints (10+) are not
    # carried: their values are ignored, even ones that would not encode.
    plain = produce_response({"log_append_time_ms": 7})
    other_versions = produce_response({"log_append_time_ms": 7, "current_leader": {"x": 1}})
    other_versions["responses"][0]["topic_id"] = None
    other_versions["node_endpoints"] = None
    assert encode(PRODUCE, "response", other_versions, 9) == encode(PRODUCE, "response", plain, 9)
    # At v13, name (0-12) is not carried.
    named = produce_response({})
    del named["responses"][0]["name"]
    assert encode(PRODUCE, "response", produce_response({}), 13) == encode(
        PRODUCE, "response", named, 13
    )


def test_an_error_is_a_value_error_and_names_the_message_only_through_an_api() -> None:
    codec = StructCodec.build(PRODUCE.request, 9, True)
    with pytest.raises(ValueError, match=r"^message: unknown key 'ack' "):
        codec.encode_into(Writer(), {"ack": 1})


def test_a_missing_key_whose_null_default_is_not_valid_at_the_version_is_refused() -> None:
    for key in ("blob", "note"):
        msg = {k: v for k, v in FULL_EXAMPLE_REQUEST.items() if k != key}
        with pytest.raises(SchemaError) as caught:
            encode(EXAMPLE, "request", msg, 0)
        assert str(caught.value) == (
            f"Example v0 request: missing key {key!r}, whose default is not valid at v0"
        )
        encode(EXAMPLE, "request", msg, 1)  # nullable at v1: the null default is sent


def test_a_missing_struct_holding_a_field_without_a_valid_default_is_refused() -> None:
    msg = {k: v for k, v in FULL_EXAMPLE_REQUEST.items() if k != "inner"}
    with pytest.raises(SchemaError, match=r"^Example v0 request: missing key 'inner', "):
        encode(EXAMPLE, "request", msg, 0)
    with pytest.raises(SchemaError, match=r"^Example v0 request, at inner: missing key 'label', "):
        encode(EXAMPLE, "request", {**msg, "inner": {"count": 3}}, 0)
    assert encode(EXAMPLE, "request", msg, 1) == encode(
        EXAMPLE, "request", {**msg, "inner": {"count": 0, "label": None}}, 1
    )


def test_missing_keys_with_valid_defaults_are_sent_as_defaults() -> None:
    # An int and a struct, whose fields default too: ErrorCode 0, Detail {Code 0, Hint ""}.
    assert encode(EXAMPLE, "response", {}, 0) == encode(
        EXAMPLE, "response", {"error_code": 0, "detail": {"code": 0, "hint": ""}}, 0
    )


@pytest.mark.parametrize(
    ("api", "version", "kind"),
    [
        pytest.param(api, version, kind, id=f"{api.name}-v{version}-{kind}")
        for api, version in api_versions(ALL_APIS)
        for kind in ("request", "response")
    ],
)
def test_no_field_of_kafkas_schemas_must_be_given(api: Api, version: int, kind: Kind) -> None:
    # Kafka gives every field a valid default, so handlers may leave out any key.
    encode(api, kind, {}, version)
