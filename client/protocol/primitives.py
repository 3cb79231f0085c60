"""The Kafka wire primitives: fixed-width big-endian ints, varints, strings, bytes, UUIDs.

`Reader` decodes from a buffer it never copies (slices of `records` stay views into it);
every read is bounds-checked and a short buffer raises `CorruptMessageError`. Lengths read
from the wire are checked against the bytes that remain before anything is allocated, so a
hostile length prefix costs nothing.

`Writer` appends into a bytearray. A value that should not be copied into the output (a
range of a log file that the broker sends with sendfile) is `splice`d: the writer then
yields a list of chunks instead of one bytes object.
"""

from __future__ import annotations

import struct
import sys
import uuid
from typing import Protocol, runtime_checkable

from tidelog.client.protocol.errors import CorruptMessageError

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

ZERO_UUID = uuid.UUID(int=0)


@runtime_checkable
class Splice(Protocol):
    """Bytes that an encoder places in its output by reference, not by copy."""

    @property
    def nbytes(self) -> int: ...


ARRAY_ELEMENTS_UNLIMITED = sys.maxsize


class Reader:
    """Reads wire primitives from `buf[pos:end]`; every method advances `pos`.

    `array_elements_left` bounds the array elements all `array_length` calls may announce
    together: a decoded element costs far more memory than its few wire bytes (a dict per
    struct), so a receiver that decodes untrusted input sets a budget to bound what one
    message can allocate, independently of its size in bytes.
    """

    __slots__ = ("array_elements_left", "buf", "end", "pos")

    def __init__(
        self,
        buf: bytes | bytearray | memoryview,
        pos: int = 0,
        end: int | None = None,
        *,
        array_elements_max: int = ARRAY_ELEMENTS_UNLIMITED,
    ):
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, memoryview) else buf
        self.pos = pos
        self.end = len(self.buf) if end is None else end
        self.array_elements_left = array_elements_max

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise CorruptMessageError(
                f"need {n} bytes at position {pos}, only {self.end - pos} remain"
            )
        self.pos = pos + n
        return pos

    def int8(self) -> int:
        return int(_I8.unpack_from(self.buf, self._need(1))[0])

    def boolean(self) -> bool:
        return self.buf[self._need(1)] != 0

    def int16(self) -> int:
        return int(_I16.unpack_from(self.buf, self._need(2))[0])

    def uint16(self) -> int:
        return int(_U16.unpack_from(self.buf, self._need(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self.buf, self._need(4))[0])

    def uint32(self) -> int:
        return int(_U32.unpack_from(self.buf, self._need(4))[0])

    def int64(self) -> int:
        return int(_I64.unpack_from(self.buf, self._need(8))[0])

    def float64(self) -> float:
        return float(_F64.unpack_from(self.buf, self._need(8))[0])

    def uuid(self) -> uuid.UUID:
        pos = self._need(16)
        return uuid.UUID(bytes=bytes(self.buf[pos : pos + 16]))

    def uvarint(self, max_bytes: int = 5) -> int:
        """An unsigned LEB128 varint of at most `max_bytes` bytes (5 for 32 bits, 10 for 64)."""
        buf, pos, end = self.buf, self.pos, self.end
        result = 0
        shift = 0
        for i in range(max_bytes):
            if pos + i >= end:
                raise CorruptMessageError("truncated varint")
            byte = buf[pos + i]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos + i + 1
                return result
            shift += 7
        raise CorruptMessageError(f"varint longer than {max_bytes} bytes")

    def varint(self) -> int:
        """A zigzag-encoded signed 32-bit varint."""
        n = self.uvarint(5)
        return (n >> 1) ^ -(n & 1)

    def varlong(self) -> int:
        """A zigzag-encoded signed 64-bit varint."""
        n = self.uvarint(10)
        return (n >> 1) ^ -(n & 1)

    def raw(self, n: int) -> memoryview:
        """`n` bytes as a view into the buffer (no copy)."""
        pos = self._need(n)
        return self.buf[pos : pos + n]

    def _text(self, n: int) -> str:
        pos = self._need(n)
        try:
            return str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptMessageError(f"string is not valid UTF-8: {exc}") from None

    def string(self) -> str:
        n = self.int16()
        if n < 0:
            raise CorruptMessageError("null in a non-nullable string")
        return self._text(n)

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n == -1 else self._text(n) if n >= 0 else self._bad_length(n)

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        if n < 0:
            raise CorruptMessageError("null in a non-nullable compact string")
        return self._text(n)

    def compact_nullable_string(self) -> str | None:
        n = self.uvarint() - 1
        return None if n == -1 else self._text(n)

    def bytes_(self) -> bytes:
        n = self.int32()
        if n < 0:
            raise CorruptMessageError("null in non-nullable bytes")
        return bytes(self.raw(n))

    def nullable_bytes_view(self) -> memoryview | None:
        n = self.int32()
        if n == -1:
            return None
        if n < 0:
            self._bad_length(n)
        return self.raw(n)

    def compact_bytes_view(self) -> memoryview | None:
        n = self.uvarint() - 1
        return None if n == -1 else self.raw(n)

    def array_length(self, compact: bool) -> int:
        """An array's element count (-1 for null), checked against the bytes that remain."""
        n = self.uvarint() - 1 if compact else self.int32()
        if n < -1:
            self._bad_length(n)
        if n > self.end - self.pos:
            raise CorruptMessageError(
                f"array of {n} elements in {self.end - self.pos} remaining bytes"
            )
        self.array_elements_left -= n
        if self.array_elements_left < 0:
            raise CorruptMessageError(f"array of {n} elements exceeds the message's element budget")
        return n

    @staticmethod
    def _bad_length(n: int) -> None:
        raise CorruptMessageError(f"invalid length {n}")


class Writer:
    """Appends wire primitives; `chunks()` returns the output, `getvalue()` when unspliced."""

    __slots__ = ("_buf", "_chunks")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._chunks: list[bytes | Splice] = []

    def int8(self, v: int) -> None:
        self._buf += _I8.pack(v)

    def boolean(self, v: bool) -> None:
        self._buf.append(1 if v else 0)

    def int16(self, v: int) -> None:
        self._buf += _I16.pack(v)

    def uint16(self, v: int) -> None:
        self._buf += _U16.pack(v)

    def int32(self, v: int) -> None:
        self._buf += _I32.pack(v)

    def uint32(self, v: int) -> None:
        self._buf += _U32.pack(v)

    def int64(self, v: int) -> None:
        self._buf += _I64.pack(v)

    def float64(self, v: float) -> None:
        self._buf += _F64.pack(v)

    def uuid(self, v: uuid.UUID) -> None:
        self._buf += v.bytes

    def uvarint(self, v: int) -> None:
        self._buf += encode_uvarint(v)

    def varint(self, v: int) -> None:
        self._buf += encode_uvarint(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)

    def varlong(self, v: int) -> None:
        self._buf += encode_uvarint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def string(self, v: str | None, compact: bool) -> None:
        if v is None:
            self._length(-1, compact, wide=False)
            return
        data = v.encode("utf-8")
        self._length(len(data), compact, wide=False)
        self._buf += data

    def bytes_(self, v: bytes | bytearray | memoryview | Splice | None, compact: bool) -> None:
        if v is None:
            self._length(-1, compact, wide=True)
        elif isinstance(v, bytes | bytearray | memoryview):
            self._length(len(v), compact, wide=True)
            self._buf += v
        else:
            self._length(v.nbytes, compact, wide=True)
            self.splice(v)

    def array_length(self, n: int | None, compact: bool) -> None:
        self._length(-1 if n is None else n, compact, wide=True)

    def _length(self, n: int, compact: bool, wide: bool) -> None:
        if compact:
            self._buf += encode_uvarint(n + 1)
        elif wide:
            self._buf += _I32.pack(n)
        else:
            if n > 0x7FFF:
                raise ValueError(f"string of {n} bytes exceeds the int16 length limit")
            self._buf += _I16.pack(n)

    def splice(self, v: Splice) -> None:
        if self._buf:
            self._chunks.append(bytes(self._buf))
            self._buf = bytearray()
        self._chunks.append(v)

    @property
    def nbytes(self) -> int:
        spliced = sum(len(c) if isinstance(c, bytes) else c.nbytes for c in self._chunks)
        return spliced + len(self._buf)

    def chunks(self) -> list[bytes | Splice]:
        if self._buf or not self._chunks:
            return [*self._chunks, bytes(self._buf)]
        return list(self._chunks)

    def getvalue(self) -> bytes:
        if self._chunks:
            raise ValueError("output holds spliced chunks; use chunks()")
        return bytes(self._buf)


def encode_uvarint(v: int) -> bytes:
    """LEB128 bytes of a non-negative int."""
    if v < 0:
        raise ValueError(f"uvarint of a negative number {v}")
    if v < 0x80:
        return bytes((v,))
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def encode_varint(v: int) -> bytes:
    """Zigzag LEB128 bytes of a signed 64-bit int (the record layout's varint/varlong)."""
    return encode_uvarint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)
