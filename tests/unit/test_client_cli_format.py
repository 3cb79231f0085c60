"""Pure parts of the `tidelog` CLI: record templates, JSON lines, offset specs."""

from __future__ import annotations

import argparse
import json

import pytest

from tidelog.client.cli_consume import OffsetSpec, parse_offset, start_offset
from tidelog.client.cli_format import compile_template, record_json
from tidelog.client.protocol.records import TimestampType
from tidelog.client.structs import ConsumerRecord


def record(
    key: bytes | None = b"k", value: bytes | None = b"v", headers: tuple = ()
) -> ConsumerRecord:
    return ConsumerRecord(
        "events", 2, 41, 1_700_000_000_123, TimestampType.CREATE_TIME, key, value, headers
    )


def test_template_fields_and_escapes() -> None:
    render = compile_template("%t %p %o %T|%k=%v|%s|%K %S|%h|100%%\\t\\x41\\\\\\r\\n")
    headers = (("a", b"1"), ("b", None), ("c", b""))
    assert render(record(headers=headers)) == (
        b"events 2 41 1700000000123|k=v|v|1 1|a=1,b,c=|100%\tA\\\r\n"
    )


def test_template_null_key_and_value_print_nothing_and_length_minus_one() -> None:
    assert compile_template("[%k][%v] %K %S")(record(None, None)) == b"[][] -1 -1"


def test_template_writes_bytes_unchanged() -> None:
    assert compile_template("%v")(record(value=b"\xff\x00\n")) == b"\xff\x00\n"
    assert compile_template("é %v")(record()) == "é v".encode()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("%q", "unknown template token %q"),
        ("abc%", "lone '%'"),
        ("\\", "lone '\\\\'"),
        ("\\xZZ", "two hex digits"),
        ("\\x4", "two hex digits"),
        ("\\a", "unknown escape \\a"),
    ],
)
def test_template_errors(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("\\", "\\\\").replace("%", "%")):
        compile_template(template)


def test_json_line() -> None:
    line = record_json(record(headers=(("h", b"\xff"), ("n", None))))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "topic": "events",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_123,
        "timestamp_type": "CreateTime",
        "key": "k",
        "value": "v",
        "headers": [["h", {"base64": "/w=="}], ["n", None]],
    }


def test_json_line_keeps_non_utf8_and_null_apart() -> None:
    document = json.loads(record_json(record(key=None, value=b"\x80abc")))
    assert document["key"] is None
    assert document["value"] == {"base64": "gGFiYw=="}
    assert json.loads(record_json(record(value="žluť".encode())))["value"] == "žluť"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("start", OffsetSpec("start")),
        ("beginning", OffsetSpec("start")),
        ("end", OffsetSpec("end")),
        ("0", OffsetSpec("offset", 0)),
        ("17", OffsetSpec("offset", 17)),
        ("-5", OffsetSpec("before_end", 5)),
        ("@1700000000000", OffsetSpec("timestamp", 1_700_000_000_000)),
    ],
)
def test_parse_offset(text: str, spec: OffsetSpec) -> None:
    assert parse_offset(text) == spec


@pytest.mark.parametrize("text", ["", "soon", "@", "@-1", "@x", "--5", "1.5"])
def test_parse_offset_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_offset(text)


@pytest.mark.parametrize(
    ("spec", "by_timestamp", "expected"),
    [
        (OffsetSpec("start"), -1, 10),
        (OffsetSpec("end"), -1, 20),
        (OffsetSpec("offset", 15), -1, 15),
        (OffsetSpec("offset", 3), -1, 10),  # below the log start: from the start
        (OffsetSpec("offset", 99), -1, 20),  # past the end: from the end
        (OffsetSpec("before_end", 4), -1, 16),
        (OffsetSpec("before_end", 50), -1, 10),
        (OffsetSpec("before_end", 0), -1, 20),
        (OffsetSpec("timestamp", 5), 12, 12),
        (OffsetSpec("timestamp", 5), -1, 20),  # no record that late: the end
    ],
)
def test_start_offset(spec: OffsetSpec, by_timestamp: int, expected: int) -> None:
    assert start_offset(spec, log_start=10, log_end=20, by_timestamp=by_timestamp) == expected
