"""Sparse per-segment indexes, kept in memory and appended to their files.

Both indexes are optimisations: `Segment` can rebuild them from its log at any time, and
does so when a file is missing or fails `decode`. Entries are added by one deterministic
rule (see `IndexBuilder`), so an index written while appending equals one rebuilt by a scan.

`.index` file: 8-byte entries, big-endian int32 relative offset (offset - base offset) and
int32 position of the batch with that base offset in the `.log` file. Both strictly increase.

`.timeindex` file: 12-byte entries, big-endian int64 timestamp T and int32 relative offset O.
An entry says every batch before offset O has a max timestamp <= T; O is always an offset of
the offset index. Both fields strictly increase.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array

NO_TIMESTAMP = -1
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class CorruptIndexError(Exception):
    """An index file that cannot describe the segment it belongs to."""


def _to_big_endian(values: array[int]) -> bytes:
    if sys.byteorder == "little":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class OffsetIndex:
    """Sparse map offset -> position of the batch that starts at that offset."""

    ENTRY_BYTES = _OFFSET_ENTRY.size

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._relative_offsets: array[int] = array("i")
        self._positions: array[int] = array("i")

    def __len__(self) -> int:
        return len(self._positions)

    def entries(self) -> list[tuple[int, int]]:
        base = self.base_offset
        return [
            (base + rel, pos)
            for rel, pos in zip(self._relative_offsets, self._positions, strict=True)
        ]

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        if self._positions and (
            relative <= self._relative_offsets[-1] or position <= self._positions[-1]
        ):
            raise AssertionError(f"index entry ({offset}, {position}) does not increase")
        self._relative_offsets.append(relative)
        self._positions.append(position)

    def last(self) -> tuple[int, int] | None:
        if not self._positions:
            return None
        return self.base_offset + self._relative_offsets[-1], self._positions[-1]

    def lookup(self, offset: int) -> tuple[int, int]:
        """The last entry at or below `offset`, or (base offset, 0)."""
        slot = bisect.bisect_right(self._relative_offsets, offset - self.base_offset) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[slot], self._positions[slot]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """The last entry at or below file `position`, or (base offset, 0)."""
        slot = bisect.bisect_right(self._positions, position) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative_offsets[slot], self._positions[slot]

    def truncate_to(self, offset: int) -> None:
        """Drop entries at or above `offset`."""
        keep = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        del self._relative_offsets[keep:]
        del self._positions[keep:]

    def encode(self, first_entry: int = 0) -> bytes:
        """File bytes of the entries from `first_entry` on."""
        pairs: array[int] = array("i", bytes(8 * (len(self) - first_entry)))
        pairs[0::2] = self._relative_offsets[first_entry:]
        pairs[1::2] = self._positions[first_entry:]
        return _to_big_endian(pairs)

    @classmethod
    def decode(cls, data: bytes, base_offset: int, log_size_bytes: int) -> OffsetIndex:
        """Parse an index file; CorruptIndexError unless it fits a log of that size."""
        if len(data) % cls.ENTRY_BYTES:
            raise CorruptIndexError(f"index size {len(data)} is not a multiple of 8")
        index = cls(base_offset)
        for relative, position in _OFFSET_ENTRY.iter_unpack(data):
            if relative < 0 or position < 0 or position >= log_size_bytes:
                raise CorruptIndexError(f"index entry ({relative}, {position}) out of range")
            if index._positions and (
                relative <= index._relative_offsets[-1] or position <= index._positions[-1]
            ):
                raise CorruptIndexError(f"index entry ({relative}, {position}) out of order")
            index._relative_offsets.append(relative)
            index._positions.append(position)
        return index


class TimeIndex:
    """Sparse map max timestamp so far -> offset; see the module doc for the meaning."""

    ENTRY_BYTES = _TIME_ENTRY.size

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._timestamps: array[int] = array("q")
        self._relative_offsets: array[int] = array("i")

    def __len__(self) -> int:
        return len(self._timestamps)

    def entries(self) -> list[tuple[int, int]]:
        base = self.base_offset
        return [
            (ts, base + rel)
            for ts, rel in zip(self._timestamps, self._relative_offsets, strict=True)
        ]

    @property
    def last_timestamp(self) -> int:
        return self._timestamps[-1] if self._timestamps else NO_TIMESTAMP

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if the timestamp is higher than the last entry's."""
        if timestamp > self.last_timestamp:
            self._timestamps.append(timestamp)
            self._relative_offsets.append(offset - self.base_offset)

    def lookup(self, timestamp: int) -> int:
        """An offset at which to start looking for the first batch reaching `timestamp`.

        The last entry with T < timestamp proves nothing before its offset qualifies.
        """
        slot = bisect.bisect_left(self._timestamps, timestamp) - 1
        if slot < 0:
            return self.base_offset
        return self.base_offset + self._relative_offsets[slot]

    def truncate_to(self, offset: int) -> None:
        """Drop entries at or above `offset`."""
        keep = bisect.bisect_left(self._relative_offsets, offset - self.base_offset)
        del self._timestamps[keep:]
        del self._relative_offsets[keep:]

    def encode(self, first_entry: int = 0) -> bytes:
        return b"".join(
            _TIME_ENTRY.pack(ts, rel)
            for ts, rel in zip(
                self._timestamps[first_entry:], self._relative_offsets[first_entry:], strict=True
            )
        )

    @classmethod
    def decode(cls, data: bytes, offset_index: OffsetIndex) -> TimeIndex:
        """Parse a time index file; CorruptIndexError unless it agrees with `offset_index`."""
        if len(data) % cls.ENTRY_BYTES:
            raise CorruptIndexError(f"time index size {len(data)} is not a multiple of 12")
        index = cls(offset_index.base_offset)
        indexed = set(offset_index._relative_offsets)
        for timestamp, relative in _TIME_ENTRY.iter_unpack(data):
            if relative not in indexed:
                raise CorruptIndexError(f"time index offset {relative} is not an index point")
            if index._timestamps and (
                timestamp <= index._timestamps[-1] or relative <= index._relative_offsets[-1]
            ):
                raise CorruptIndexError(f"time index entry ({timestamp}, {relative}) out of order")
            if timestamp <= NO_TIMESTAMP:
                raise CorruptIndexError(f"time index timestamp {timestamp} is not a timestamp")
            index._timestamps.append(timestamp)
            index._relative_offsets.append(relative)
        return index


class IndexBuilder:
    """The one rule that decides index entries, batch by batch.

    Before a batch is added at `position`, if at least `index_interval_bytes` of batches were
    added since the last entry, the batch gets an offset index entry and, if the max
    timestamp of the batches before it rose, a time index entry. The builder also tracks the
    segment's max timestamp.
    """

    def __init__(
        self,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        index_interval_bytes: int,
        *,
        bytes_since_entry: int = 0,
        max_timestamp: int = NO_TIMESTAMP,
    ) -> None:
        self.offset_index = offset_index
        self.time_index = time_index
        self.index_interval_bytes = index_interval_bytes
        self.bytes_since_entry = bytes_since_entry
        self.max_timestamp = max_timestamp

    def add(self, base_offset: int, max_timestamp: int, total_bytes: int, position: int) -> None:
        """Account for the batch (`base_offset`, `max_timestamp`, `total_bytes`) at `position`."""
        if self.bytes_since_entry >= self.index_interval_bytes:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, base_offset)
            self.bytes_since_entry = 0
        self.bytes_since_entry += total_bytes
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
