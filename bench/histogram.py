"""A streaming latency histogram: bounded memory, relative error under 1%.

Values are non-negative integers (nanoseconds here). Values below 128 have a bucket each;
above, every power of two [2^k, 2^(k+1)) is cut into 128 equal sub-buckets, so a bucket's
width is at most 1/128 of its lower bound. A percentile is reported as the middle of its
bucket, within 0.4% of the true value; `min` and `max` are exact. Every int64 fits in
a fixed 7,424 counters, whatever the number of records (HdrHistogram's layout at two
significant digits).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SUB_BUCKET_BITS = 7
SUB_BUCKETS = 1 << SUB_BUCKET_BITS
VALUE_MAX = (1 << 63) - 1
BUCKET_COUNT = SUB_BUCKETS * (64 - SUB_BUCKET_BITS + 1)
SUMMARY_PERCENTILES = (50.0, 95.0, 99.0, 99.9)
"""The percentiles every latency summary reports, with the maximum."""


def bucket_index(value: int) -> int:
    """The bucket holding `value` (0 <= value <= VALUE_MAX)."""
    if value < SUB_BUCKETS:
        return value
    shift = value.bit_length() - SUB_BUCKET_BITS - 1
    return SUB_BUCKETS * (shift + 1) + (value >> shift) - SUB_BUCKETS


def bucket_bounds(index: int) -> tuple[int, int]:
    """The values [low, high] that bucket `index` holds."""
    if index < SUB_BUCKETS:
        return index, index
    shift = index // SUB_BUCKETS - 1
    low = (SUB_BUCKETS + index % SUB_BUCKETS) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of values by bucket; `record` is O(1), `percentile` O(buckets)."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * BUCKET_COUNT
        self.count = 0
        self.total = 0
        self.min = VALUE_MAX
        self.max = 0

    def record(self, value: int, count: int = 1) -> None:
        """Add `count` occurrences of `value`; negative values (a clock that stepped back
        between two processes) count as 0, values past int64 as VALUE_MAX."""
        value = min(max(value, 0), VALUE_MAX)
        self._counts[bucket_index(value)] += count
        self.count += count
        self.total += value * count
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def record_all(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> None:
        """Add every count of `other` (e.g. one histogram per producer thread)."""
        counts = self._counts
        for index, count in enumerate(other._counts):
            if count:
                counts[index] += count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, percent: float) -> int:
        """The nearest-rank `percent` percentile, as the middle of its bucket clamped to
        [min, max] (the last rank is `max` itself); 0 for an empty histogram."""
        if self.count == 0:
            return 0
        # Rounding first keeps float error from pushing an exact rank (99.9% of 1000) up.
        rank = min(self.count, max(1, math.ceil(round(percent * self.count / 100.0, 6))))
        if rank == self.count:
            return self.max
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                low, high = bucket_bounds(index)
                return min(max((low + high) // 2, self.min), self.max)
        raise AssertionError("bucket counts do not add up to count")

    def summary_ms(self, percentiles: Sequence[float] = SUMMARY_PERCENTILES) -> dict[str, float]:
        """p50/p95/p99/p99.9 and max in milliseconds, for values recorded in nanoseconds;
        empty when nothing was recorded."""
        if self.count == 0:
            return {}
        summary = {f"p{p:g}": self.percentile(p) / 1e6 for p in percentiles}
        summary["max"] = self.max / 1e6
        return summary
