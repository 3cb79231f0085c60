"""Topic configs: Kafka's topic-level config names, their broker-wide defaults, validation,
and the `LogConfig` a partition log of the topic runs with.

A topic stores only its overrides (name -> string value, as CreateTopics sends them);
`log_config(broker_config, overrides)` merges them over the broker's `log_*` defaults.
`validate_topic_configs` raises `InvalidTopicConfigError` (INVALID_CONFIG) naming the key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tidelog.broker.config import BrokerConfig
from tidelog.client.protocol.configs import ConfigType
from tidelog.storage.config import INT32_MAX, INT64_MAX, LogConfig, TimestampType


class InvalidTopicConfigError(ValueError):
    """A topic config name or value this broker does not accept."""


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    """One topic config: how to parse its value, and its default from the broker config."""

    name: str
    parse: Callable[[str], object]
    default: Callable[[BrokerConfig], object]
    log_field: str | None
    """The `LogConfig` field it sets, or None for a config the broker reads elsewhere."""
    config_type: ConfigType
    broker_field: str | None
    """The `BrokerConfig` field that supplies the default (its synonym), if any."""
    doc: str


def _int_in(lo: int, hi: int) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = int(text)
        except ValueError:
            raise InvalidTopicConfigError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise InvalidTopicConfigError(f"{value} is outside [{lo}, {hi}]")
        return value

    return parse


def _one_of(*allowed: str, why: str = "") -> Callable[[str], object]:
    def parse(text: str) -> object:
        if text not in allowed:
            raise InvalidTopicConfigError(
                f"{text!r} is not one of {', '.join(allowed)}{'; ' + why if why else ''}"
            )
        return text

    return parse


def _timestamp_type(text: str) -> object:
    try:
        return TimestampType(text)
    except ValueError:
        raise InvalidTopicConfigError(
            f"{text!r} is not one of {', '.join(t.value for t in TimestampType)}"
        ) from None


def _ratio(text: str) -> object:
    try:
        value = float(text)
    except ValueError:
        raise InvalidTopicConfigError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise InvalidTopicConfigError(f"{value} is outside [0, 1]")
    return value


def _boolean(text: str) -> object:
    if text.lower() not in ("true", "false"):
        raise InvalidTopicConfigError(f"{text!r} is not true or false")
    return text.lower() == "true"


_INT, _LONG, _STRING, _BOOLEAN, _LIST = (
    ConfigType.INT,
    ConfigType.LONG,
    ConfigType.STRING,
    ConfigType.BOOLEAN,
    ConfigType.LIST,
)

TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in (
        TopicConfigDef("segment.bytes", _int_in(14, INT32_MAX), lambda c: c.log_segment_bytes,
                       "segment_bytes", _INT, "log_segment_bytes",
                       "Roll to a new segment file once the active one reaches this size."),
        TopicConfigDef("segment.ms", _int_in(1, INT64_MAX), lambda c: c.log_roll_ms,
                       "segment_ms", _LONG, "log_roll_ms",
                       "Roll to a new segment once the active one is this old."),
        TopicConfigDef("retention.ms", _int_in(-1, INT64_MAX), lambda c: c.log_retention_ms,
                       "retention_ms", _LONG, "log_retention_ms",
                       "Delete segments whose newest record is older than this; -1 keeps all."),
        TopicConfigDef("retention.bytes", _int_in(-1, INT64_MAX),
                       lambda c: c.log_retention_bytes, "retention_bytes", _LONG,
                       "log_retention_bytes",
                       "Delete the oldest segments while a partition is larger; -1: no limit."),
        TopicConfigDef("flush.messages", _int_in(1, INT64_MAX),
                       lambda c: c.log_flush_interval_messages, "flush_messages", _LONG,
                       "log_flush_interval_messages",
                       "fsync a partition after this many unflushed records."),
        TopicConfigDef("flush.ms", _int_in(0, INT64_MAX),
                       lambda c: c.log_flush_interval_ms, "flush_ms", _LONG,
                       "log_flush_interval_ms",
                       "fsync a partition once unflushed records are this old."),
        TopicConfigDef("max.message.bytes", _int_in(0, INT32_MAX),
                       lambda c: c.message_max_bytes, "max_message_bytes", _INT,
                       "message_max_bytes",
                       "The largest record batch the topic accepts, in bytes."),
        TopicConfigDef("index.interval.bytes", _int_in(0, INT32_MAX), lambda c: 4096,
                       "index_interval_bytes", _INT, None,
                       "Log bytes between two offset index entries."),
        TopicConfigDef("message.timestamp.type", _timestamp_type,
                       lambda c: TimestampType.CREATE_TIME, "message_timestamp_type", _STRING,
                       None, "CreateTime keeps the producer's timestamps; LogAppendTime "
                       "stamps batches with the broker's clock."),
        TopicConfigDef("cleanup.policy",
                       _one_of("delete", "compact", "compact,delete", "delete,compact"),
                       lambda c: "delete", "cleanup_policy", _LIST, None,
                       "delete: old segments are removed by retention time and size; "
                       "compact: only the latest record per key is kept."),
        TopicConfigDef("delete.retention.ms", _int_in(0, INT64_MAX), lambda c: 86_400_000,
                       "delete_retention_ms", _LONG, None,
                       "How long compaction keeps a tombstone (null value) after it is written."),
        TopicConfigDef("min.cleanable.dirty.ratio", _ratio, lambda c: 0.5,
                       "min_cleanable_dirty_ratio", ConfigType.DOUBLE, None,
                       "Compact once this share of the log has not been compacted yet."),
        TopicConfigDef("compression.type",
                       _one_of("producer", why="the broker keeps batches as produced"),
                       lambda c: "producer", None, _STRING, None,
                       "producer: batches are stored compressed as the producer sent them."),
        TopicConfigDef("min.insync.replicas", _int_in(1, 32_767), lambda c: c.min_insync_replicas,
                       None, _INT, "min_insync_replicas",
                       "In-sync replicas an acks=all produce needs."),
        TopicConfigDef("unclean.leader.election.enable", _boolean,
                       lambda c: False, None, _BOOLEAN, None,
                       "Elect an out-of-sync replica when no in-sync one is alive "
                       "(acknowledged records may be lost)."),
    )
}  # fmt: skip


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Check every override; return them with null values dropped (null means "default")."""
    accepted: dict[str, str] = {}
    for name, value in configs.items():
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise InvalidTopicConfigError(f"unknown topic config {name!r}")
        if value is None:
            continue
        try:
            definition.parse(value)
        except InvalidTopicConfigError as exc:
            raise InvalidTopicConfigError(f"{name}: {exc}") from None
        accepted[name] = value
    return accepted


def topic_config_value(
    broker_config: BrokerConfig, overrides: Mapping[str, str], name: str
) -> object:
    """The effective (parsed) value of topic config `name`."""
    definition = TOPIC_CONFIGS[name]
    text = overrides.get(name)
    return definition.parse(text) if text is not None else definition.default(broker_config)


def format_config_value(value: object) -> str | None:
    """A parsed config value as Kafka shows it (None: unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def log_config(broker_config: BrokerConfig, overrides: Mapping[str, str]) -> LogConfig:
    """The LogConfig for a topic with these (validated) overrides."""
    values = {
        d.log_field: topic_config_value(broker_config, overrides, d.name)
        for d in TOPIC_CONFIGS.values()
        if d.log_field is not None
    }
    return LogConfig(**values)  # type: ignore[arg-type]
