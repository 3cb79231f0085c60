"""Topic configs: Kafka's topic-level config names, their broker-wide defaults, validation,
and the `LogConfig` a partition log of the topic runs with.

A topic stores only its overrides (name -> string value, as CreateTopics sends them);
`log_config(broker_config, overrides)` merges them over the broker's `log_*` defaults.
`validate_topic_configs` raises `InvalidTopicConfigError` (INVALID_CONFIG) naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker.config import BrokerConfig
from storage.config import INT32_MAX, INT64_MAX, LogConfig, TimestampType


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


def _boolean_false_only(text: str) -> object:
    if text.lower() not in ("true", "false"):
        raise InvalidTopicConfigError(f"{text!r} is not true or false")
    if text.lower() == "true":
        raise InvalidTopicConfigError("unclean leader election is not supported")
    return False


TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in (
        TopicConfigDef("segment.bytes", _int_in(14, INT32_MAX), lambda c: c.log_segment_bytes,
                       "segment_bytes"),
        TopicConfigDef("segment.ms", _int_in(1, INT64_MAX), lambda c: c.log_roll_ms,
                       "segment_ms"),
        TopicConfigDef("retention.ms", _int_in(-1, INT64_MAX), lambda c: c.log_retention_ms,
                       "retention_ms"),
        TopicConfigDef("retention.bytes", _int_in(-1, INT64_MAX),
                       lambda c: c.log_retention_bytes, "retention_bytes"),
        TopicConfigDef("flush.messages", _int_in(1, INT64_MAX),
                       lambda c: c.log_flush_interval_messages, "flush_messages"),
        TopicConfigDef("flush.ms", _int_in(0, INT64_MAX), lambda c: c.log_flush_interval_ms,
                       "flush_ms"),
        TopicConfigDef("max.message.bytes", _int_in(0, INT32_MAX),
                       lambda c: c.message_max_bytes, "max_message_bytes"),
        TopicConfigDef("index.interval.bytes", _int_in(0, INT32_MAX), lambda c: 4096,
                       "index_interval_bytes"),
        TopicConfigDef("message.timestamp.type", _timestamp_type,
                       lambda c: TimestampType.CREATE_TIME, "message_timestamp_type"),
        TopicConfigDef("cleanup.policy",
                       _one_of("delete", why="log compaction is not supported"),
                       lambda c: "delete", None),
        TopicConfigDef("compression.type",
                       _one_of("producer", why="the broker keeps batches as produced"),
                       lambda c: "producer", None),
        TopicConfigDef("min.insync.replicas", _int_in(1, 32_767), lambda c: 1, None),
        TopicConfigDef("unclean.leader.election.enable", _boolean_false_only,
                       lambda c: False, None),
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


def log_config(broker_config: BrokerConfig, overrides: Mapping[str, str]) -> LogConfig:
    """The LogConfig for a topic with these (validated) overrides."""
    values = {
        d.log_field: topic_config_value(broker_config, overrides, d.name)
        for d in TOPIC_CONFIGS.values()
        if d.log_field is not None
    }
    return LogConfig(**values)  # type: ignore[arg-type]
