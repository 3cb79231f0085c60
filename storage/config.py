"""Per-log configuration, with Kafka's topic config names in snake_case."""

from __future__ import annotations

import enum
from dataclasses import dataclass

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
_DAY_MS = 24 * 60 * 60 * 1000

CLEANUP_DELETE = "delete"
CLEANUP_COMPACT = "compact"
_CLEANUP_POLICIES = {CLEANUP_DELETE, CLEANUP_COMPACT}


class TimestampType(enum.Enum):
    """`message.timestamp.type`: keep the producer's timestamps or stamp the append time."""

    CREATE_TIME = "CreateTime"
    LOG_APPEND_TIME = "LogAppendTime"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """How one partition log rolls, retains and flushes; defaults are Kafka's.

    `retention_ms` and `retention_bytes` of -1 mean unlimited. `flush_ms` of None never
    flushes by time (Kafka's default leaves both flush settings unset and relies on
    replication); `PartitionLog.flush_due` reports when either limit is reached.

    `cleanup_policy` is "delete" (retention removes old segments), "compact" (the cleaner
    keeps the latest record per key, `storage.cleaner`; retention by time and size is off)
    or both, written "compact,delete" (either order is accepted). `delete_retention_ms` is
    how long a tombstone outlives its batch's max timestamp before the cleaner drops it;
    the cleaner is due once `min_cleanable_dirty_ratio` of the cleanable bytes are dirty.
    """

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * _DAY_MS
    retention_ms: int = 7 * _DAY_MS
    retention_bytes: int = -1
    index_interval_bytes: int = 4096
    flush_messages: int = INT64_MAX
    flush_ms: int | None = None
    max_message_bytes: int = 1_048_588
    message_timestamp_type: TimestampType = TimestampType.CREATE_TIME
    cleanup_policy: str = CLEANUP_DELETE
    delete_retention_ms: int = _DAY_MS
    min_cleanable_dirty_ratio: float = 0.5

    def __post_init__(self) -> None:
        # Positions in the offset index are int32, so a segment cannot pass 2 GiB.
        _check("segment_bytes", self.segment_bytes, 14, INT32_MAX)
        _check("segment_ms", self.segment_ms, 1, INT64_MAX)
        _check("retention_ms", self.retention_ms, -1, INT64_MAX)
        _check("retention_bytes", self.retention_bytes, -1, INT64_MAX)
        _check("index_interval_bytes", self.index_interval_bytes, 0, INT32_MAX)
        _check("flush_messages", self.flush_messages, 1, INT64_MAX)
        if self.flush_ms is not None:
            _check("flush_ms", self.flush_ms, 0, INT64_MAX)
        _check("max_message_bytes", self.max_message_bytes, 0, INT32_MAX)
        if not isinstance(self.message_timestamp_type, TimestampType):
            raise ValueError(f"message_timestamp_type: {self.message_timestamp_type!r}")
        # Frozen: normalising the policy keeps equal policies equal ("delete,compact").
        object.__setattr__(self, "cleanup_policy", _normalise_cleanup_policy(self.cleanup_policy))
        _check("delete_retention_ms", self.delete_retention_ms, 0, INT64_MAX)
        ratio = self.min_cleanable_dirty_ratio
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise ValueError(f"min_cleanable_dirty_ratio: {ratio!r} is not a number in [0, 1]")

    @property
    def compaction_enabled(self) -> bool:
        """Whether the cleaner compacts this log (cleanup.policy includes compact)."""
        return CLEANUP_COMPACT in self.cleanup_policy.split(",")

    @property
    def deletion_enabled(self) -> bool:
        """Whether retention by time and size applies (cleanup.policy includes delete)."""
        return CLEANUP_DELETE in self.cleanup_policy.split(",")


def _normalise_cleanup_policy(policy: object) -> str:
    if not isinstance(policy, str):
        raise ValueError(f"cleanup_policy: {policy!r} is not a string")
    parts = [part.strip() for part in policy.split(",")]
    if not parts or len(set(parts)) != len(parts) or not set(parts) <= _CLEANUP_POLICIES:
        raise ValueError(
            f"cleanup_policy: {policy!r} is not {CLEANUP_DELETE!r}, {CLEANUP_COMPACT!r} or both"
        )
    return ",".join(sorted(parts))


def _check(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} is not an integer in [{lo}, {hi}]")
