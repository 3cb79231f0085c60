"""How `tidelog consume` prints records: kcat-style templates, or one JSON object per line.

Template tokens (kcat's, with `%v` as the value):

    %t topic      %p partition   %o offset     %T timestamp (ms since the epoch)
    %k key        %v value (also %s)           %K key length    %S value length
    %h headers as `k=v,k2=v2` (a null header value prints as `k`)
    %%  a percent sign
    \\n \\r \\t \\\\  newline, carriage return, tab, backslash;  \\xHH  the byte 0xHH

Keys, values and header values are written as the raw bytes; a null key or value prints as
nothing, and its length as -1. Nothing is added at the end: put `\\n` in the template.

JSON (`record_json`): `{"topic", "partition", "offset", "timestamp", "timestamp_type",
"key", "value", "headers"}`, headers a list of `[key, value]` pairs. Each of key, value and
header value is null, a string (bytes that are valid UTF-8), or `{"base64": "..."}`.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable

from tidelog.client.protocol.records import TimestampType
from tidelog.client.structs import ConsumerRecord

RecordFormatter = Callable[[ConsumerRecord], bytes]
DEFAULT_TEMPLATE = "%v\\n"

_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}


def _length(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


def _headers(record: ConsumerRecord) -> bytes:
    return b",".join(
        key.encode() if value is None else key.encode() + b"=" + value
        for key, value in record.headers
    )


_FIELDS: dict[str, RecordFormatter] = {
    "t": lambda r: r.topic.encode(),
    "p": lambda r: str(r.partition).encode(),
    "o": lambda r: str(r.offset).encode(),
    "T": lambda r: str(r.timestamp_ms).encode(),
    "k": lambda r: r.key or b"",
    "v": lambda r: r.value or b"",
    "s": lambda r: r.value or b"",
    "K": lambda r: _length(r.key),
    "S": lambda r: _length(r.value),
    "h": _headers,
}


def compile_template(template: str) -> RecordFormatter:
    """A function that renders one record by `template`; ValueError names a bad token."""
    parts: list[bytes | RecordFormatter] = []
    literal = bytearray()
    index = 0
    while index < len(template):
        char = template[index]
        if char == "%" or char == "\\":
            if index + 1 >= len(template):
                raise ValueError(f"the template ends in a lone {char!r}")
            code = template[index + 1]
            index += 2
            if char == "%" and code == "%":
                literal += b"%"
            elif char == "%":
                field = _FIELDS.get(code)
                if field is None:
                    raise ValueError(f"unknown template token %{code}")
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(field)
            elif code == "x":
                digits = template[index : index + 2]
                if len(digits) != 2 or any(d not in string.hexdigits for d in digits):
                    raise ValueError(f"\\x needs two hex digits, got {digits!r}")
                literal.append(int(digits, 16))
                index += 2
            elif code in _ESCAPES:
                literal += _ESCAPES[code]
            else:
                raise ValueError(f"unknown escape \\{code}")
        else:
            literal += char.encode()
            index += 1
    if literal:
        parts.append(bytes(literal))
    return lambda record: b"".join(
        part if isinstance(part, bytes) else part(record) for part in parts
    )


def _json_bytes(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


_TIMESTAMP_TYPE_NAMES = {
    TimestampType.CREATE_TIME: "CreateTime",
    TimestampType.LOG_APPEND_TIME: "LogAppendTime",
}


def record_json(record: ConsumerRecord) -> bytes:
    """One record as a line of JSON (newline included)."""
    document = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "timestamp_type": _TIMESTAMP_TYPE_NAMES[record.timestamp_type],
        "key": _json_bytes(record.key),
        "value": _json_bytes(record.value),
        "headers": [[key, _json_bytes(value)] for key, value in record.headers],
    }
    return json.dumps(document, ensure_ascii=False).encode() + b"\n"
