"""Settings of the group coordinator, named after Kafka's broker configs."""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Kafka's defaults, except `group_max_size` (Kafka: unbounded), which bounds memory."""

    offsets_topic_num_partitions: int = 50
    """offsets.topic.num.partitions: partitions of `__consumer_offsets`."""
    group_initial_rebalance_delay_ms: int = 3_000
    """group.initial.rebalance.delay.ms: how long the first rebalance of an empty group waits
    for more members, extended by this much (up to the rebalance timeout) per newcomer."""
    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = 10_000
    """group.max.size: members (and KIP-394 pending members) per group."""
    group_new_member_join_timeout_ms: int = 300_000
    """How long a new member's first JoinGroup may stay parked before the member is dropped."""
    offset_metadata_max_bytes: int = 4_096
    """offset.metadata.max.bytes: longest commit metadata string accepted."""
    offsets_retention_minutes: int = 7 * 24 * 60
    """offsets.retention.minutes: how long offsets outlive their group's members."""
    offsets_retention_check_interval_ms: int = 600_000

    def __post_init__(self) -> None:
        for name in ("offsets_topic_num_partitions", "group_max_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 < self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms:
            raise ValueError(
                "need 0 < group_min_session_timeout_ms <= group_max_session_timeout_ms"
            )
        for name in (
            "group_initial_rebalance_delay_ms",
            "group_new_member_join_timeout_ms",
            "offset_metadata_max_bytes",
            "offsets_retention_minutes",
            "offsets_retention_check_interval_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def offsets_retention_ms(self) -> int:
        return self.offsets_retention_minutes * MINUTE_MS
