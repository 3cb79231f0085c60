"""Length-prefixed frames, sans-IO: bytes in, whole frames out.

Every Kafka request and response is a big-endian int32 size followed by that many bytes.
`FrameDecoder` buffers what the transport delivers and hands out complete frames; a
declared size above `max_frame_bytes` (or negative) raises `FrameTooLargeError` /
`CorruptMessageError` before any of the frame is buffered, so a peer cannot make the decoder
hold more than `max_frame_bytes` plus one read.
"""

from __future__ import annotations

import enum

from tidelog.client.protocol.errors import CorruptMessageError, FrameTooLargeError


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by `FrameDecoder.next_frame` when no complete frame is buffered."""


class FrameDecoder:
    """Splits a byte stream into frames of at most `max_frame_bytes` (size prefix excluded)."""

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 0:
            raise ValueError("max_frame_bytes must be >= 0")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._start = 0

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the transport."""
        self._buf += data

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._start

    def next_frame(self) -> bytes | _NeedData:
        """The next whole frame's bytes (without the size prefix), or NEED_DATA."""
        buf, start = self._buf, self._start
        available = len(buf) - start
        if available < 4:
            return NEED_DATA
        size = int.from_bytes(buf[start : start + 4], "big", signed=True)
        if size < 0:
            raise CorruptMessageError(f"negative frame size {size}")
        if size > self.max_frame_bytes:
            raise FrameTooLargeError(size, self.max_frame_bytes)
        if available < 4 + size:
            return NEED_DATA
        # One copy: slicing the bytearray itself would copy once more before bytes().
        with memoryview(buf) as view:
            frame = bytes(view[start + 4 : start + 4 + size])
        start += 4 + size
        if start == len(buf):
            buf.clear()
            start = 0
        elif start > 65536 and start * 2 > len(buf):
            del buf[:start]
            start = 0
        self._start = start
        return frame

    def pending_frame_bytes(self) -> int | None:
        """The declared size of the frame being received, if its prefix has arrived."""
        if len(self._buf) - self._start < 4:
            return None
        return int.from_bytes(self._buf[self._start : self._start + 4], "big", signed=True)
