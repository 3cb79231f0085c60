"""Configs as DescribeConfigs and CreateTopics (v5+) present them: value, source, synonyms.

A topic config's effective value comes from the first of: the topic's override
(DYNAMIC_TOPIC_CONFIG), the broker config setting it derives from when the broker's
config file changed it (STATIC_BROKER_CONFIG), the default (DEFAULT_CONFIG). Synonyms list
those candidates in that order, as Kafka does. Broker configs are the `BrokerConfig` fields
under their dotted names (`log.retention.ms`), all read-only: they change by editing the
config file and restarting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidelog.broker.config import BrokerConfig, ListenerConfig
from tidelog.broker.topic_config import TOPIC_CONFIGS, format_config_value
from tidelog.client.protocol.configs import ConfigSource, ConfigType
from tidelog.client.protocol.schema import Message


@dataclass(frozen=True, slots=True)
class Synonym:
    name: str
    value: str | None
    source: ConfigSource


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config of a resource with its effective value."""

    name: str
    value: str | None
    source: ConfigSource
    read_only: bool
    config_type: ConfigType
    doc: str
    synonyms: tuple[Synonym, ...]

    def describe(self, *, include_synonyms: bool, include_documentation: bool) -> Message:
        """The DescribeConfigs `configs` element."""
        return {
            "name": self.name,
            "value": self.value,
            "read_only": self.read_only,
            "config_source": int(self.source),
            "is_default": self.source is ConfigSource.DEFAULT_CONFIG,
            "is_sensitive": False,
            "synonyms": [
                {"name": s.name, "value": s.value, "source": int(s.source)} for s in self.synonyms
            ]
            if include_synonyms
            else [],
            "config_type": int(self.config_type),
            "documentation": self.doc if include_documentation else None,
        }

    def created_topic_config(self) -> Message:
        """The CreateTopics (v5+) `configs` element."""
        return {
            "name": self.name,
            "value": self.value,
            "read_only": self.read_only,
            "config_source": int(self.source),
            "is_sensitive": False,
        }


_BROKER_FIELDS = {f.name: f for f in dataclasses.fields(BrokerConfig)}


def _broker_default(field_name: str) -> Any:
    field = _BROKER_FIELDS[field_name]
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING, field_name
    return field.default_factory()


def _broker_config_name(field_name: str) -> str:
    return field_name.replace("_", ".")


def topic_config_entries(
    broker_config: BrokerConfig, overrides: Mapping[str, str]
) -> list[ConfigEntry]:
    """Every topic config of a topic with `overrides`, in name order."""
    entries = []
    for name, definition in sorted(TOPIC_CONFIGS.items()):
        synonyms = []
        if name in overrides:
            synonyms.append(Synonym(name, overrides[name], ConfigSource.DYNAMIC_TOPIC_CONFIG))
        if definition.broker_field is not None:
            broker_value = getattr(broker_config, definition.broker_field)
            broker_name = _broker_config_name(definition.broker_field)
            if broker_value != _broker_default(definition.broker_field):
                synonyms.append(
                    Synonym(
                        broker_name,
                        format_config_value(broker_value),
                        ConfigSource.STATIC_BROKER_CONFIG,
                    )
                )
            default_value = format_config_value(_broker_default(definition.broker_field))
            synonyms.append(Synonym(broker_name, default_value, ConfigSource.DEFAULT_CONFIG))
        else:
            default_value = format_config_value(definition.default(broker_config))
            synonyms.append(Synonym(name, default_value, ConfigSource.DEFAULT_CONFIG))
        entries.append(
            ConfigEntry(
                name=name,
                value=synonyms[0].value,
                source=synonyms[0].source,
                read_only=False,
                config_type=definition.config_type,
                doc=definition.doc,
                synonyms=tuple(synonyms),
            )
        )
    return entries


def _listeners_value(listeners: tuple[ListenerConfig, ...]) -> str:
    return ",".join(f"{listener.name}://{listener.host}:{listener.port}" for listener in listeners)


def _broker_config_type(value: object) -> ConfigType:
    if isinstance(value, bool):
        return ConfigType.BOOLEAN
    if isinstance(value, int):
        return ConfigType.LONG
    if isinstance(value, tuple):
        return ConfigType.LIST
    return ConfigType.STRING


def broker_config_entries(broker_config: BrokerConfig) -> list[ConfigEntry]:
    """Every broker config, read-only, in name order."""
    entries = []
    for field_name in sorted(_BROKER_FIELDS):
        value = getattr(broker_config, field_name)
        default = _broker_default(field_name)
        source = (
            ConfigSource.DEFAULT_CONFIG if value == default else ConfigSource.STATIC_BROKER_CONFIG
        )
        text = _listeners_value(value) if field_name == "listeners" else format_config_value(value)
        name = _broker_config_name(field_name)
        entries.append(
            ConfigEntry(
                name=name,
                value=text,
                source=source,
                read_only=True,
                config_type=_broker_config_type(default if value is None else value),
                doc="Broker setting from the config file; restart to change it.",
                synonyms=(Synonym(name, text, source),),
            )
        )
    return entries
