"""tidelog's Kafka client on trio: `Producer`, `Consumer` (manual assignment) and `Admin`.

    from client import Producer, Consumer, Admin, NewTopic, TopicPartition

Names are loaded on first use, so importing `client.protocol` (which the broker and the
storage layer do) does not pull in trio or the client itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Producer": "client.producer",
    "RecordFuture": "client.producer",
    "Consumer": "client.consumer",
    "Admin": "client.admin",
    "ConfigResource": "client.admin",
    "ConfigResourceType": "client.admin",
    "ConfigEntry": "client.admin",
    "ClusterDescription": "client.admin",
    "OffsetAndTimestamp": "client.offsets",
    "TopicInfo": "client.metadata",
    "PartitionInfo": "client.metadata",
    "BrokerInfo": "client.metadata",
    "TopicPartition": "client.structs",
    "RecordMetadata": "client.structs",
    "ConsumerRecord": "client.structs",
    "NewTopic": "client.structs",
    "KafkaError": "client.errors",
    "ConfigError": "client.errors",
    "KafkaConnectionError": "client.errors",
    "KafkaTimeoutError": "client.errors",
    "KafkaProtocolError": "client.errors",
    "IncompatibleBrokerError": "client.errors",
    "ClientClosedError": "client.errors",
    "RecordTooLargeError": "client.errors",
    "NoOffsetForPartitionError": "client.errors",
    "BrokerResponseError": "client.errors",
    "OffsetOutOfRangeError": "client.errors",
    "UnknownTopicOrPartitionError": "client.errors",
    "TopicAlreadyExistsError": "client.errors",
    "NotLeaderOrFollowerError": "client.errors",
    "MessageTooLargeError": "client.errors",
    "InvalidTopicError": "client.errors",
    "InvalidPartitionsError": "client.errors",
    "InvalidReplicationFactorError": "client.errors",
    "InvalidConfigError": "client.errors",
    "OutOfOrderSequenceNumberError": "client.errors",
    "error_for_code": "client.errors",
}

__all__ = [
    "Admin",
    "BrokerInfo",
    "BrokerResponseError",
    "ClientClosedError",
    "ClusterDescription",
    "ConfigEntry",
    "ConfigError",
    "ConfigResource",
    "ConfigResourceType",
    "Consumer",
    "ConsumerRecord",
    "IncompatibleBrokerError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidReplicationFactorError",
    "InvalidTopicError",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaProtocolError",
    "KafkaTimeoutError",
    "MessageTooLargeError",
    "NewTopic",
    "NoOffsetForPartitionError",
    "NotLeaderOrFollowerError",
    "OffsetAndTimestamp",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceNumberError",
    "PartitionInfo",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "TopicAlreadyExistsError",
    "TopicInfo",
    "TopicPartition",
    "UnknownTopicOrPartitionError",
    "error_for_code",
]
assert set(__all__) == set(_EXPORTS), "__all__ and _EXPORTS disagree"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from client.admin import (
        Admin,
        ClusterDescription,
        ConfigEntry,
        ConfigResource,
        ConfigResourceType,
    )
    from client.consumer import Consumer
    from client.errors import (
        BrokerResponseError,
        ClientClosedError,
        ConfigError,
        IncompatibleBrokerError,
        InvalidConfigError,
        InvalidPartitionsError,
        InvalidReplicationFactorError,
        InvalidTopicError,
        KafkaConnectionError,
        KafkaError,
        KafkaProtocolError,
        KafkaTimeoutError,
        MessageTooLargeError,
        NoOffsetForPartitionError,
        NotLeaderOrFollowerError,
        OffsetOutOfRangeError,
        OutOfOrderSequenceNumberError,
        RecordTooLargeError,
        TopicAlreadyExistsError,
        UnknownTopicOrPartitionError,
        error_for_code,
    )
    from client.metadata import BrokerInfo, PartitionInfo, TopicInfo
    from client.offsets import OffsetAndTimestamp
    from client.producer import Producer, RecordFuture
    from client.structs import ConsumerRecord, NewTopic, RecordMetadata, TopicPartition
