"""tidelog's Kafka client on trio: `Producer`, `Consumer` (manual assignment or consumer
groups) and `Admin`.

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
    "ConfigResourceType": "client.protocol.configs",
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
    "OffsetAndMetadata": "client.structs",
    "ConsumerGroupMetadata": "client.structs",
    "RebalanceListener": "client.group_coordinator",
    "CommitFailedError": "client.errors",
    "RebalanceInProgressError": "client.errors",
    "FencedInstanceIdError": "client.errors",
    "IllegalGenerationError": "client.errors",
    "UnknownMemberIdError": "client.errors",
    "GroupAuthorizationFailedError": "client.errors",
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
    "CommitFailedError",
    "ConfigEntry",
    "ConfigError",
    "ConfigResource",
    "ConfigResourceType",
    "Consumer",
    "ConsumerGroupMetadata",
    "ConsumerRecord",
    "FencedInstanceIdError",
    "GroupAuthorizationFailedError",
    "IllegalGenerationError",
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
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceNumberError",
    "PartitionInfo",
    "Producer",
    "RebalanceInProgressError",
    "RebalanceListener",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "TopicAlreadyExistsError",
    "TopicInfo",
    "TopicPartition",
    "UnknownMemberIdError",
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
    from client.admin import Admin, ClusterDescription, ConfigEntry, ConfigResource
    from client.consumer import Consumer
    from client.errors import (
        BrokerResponseError,
        ClientClosedError,
        CommitFailedError,
        ConfigError,
        FencedInstanceIdError,
        GroupAuthorizationFailedError,
        IllegalGenerationError,
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
        RebalanceInProgressError,
        RecordTooLargeError,
        TopicAlreadyExistsError,
        UnknownMemberIdError,
        UnknownTopicOrPartitionError,
        error_for_code,
    )
    from client.group_coordinator import RebalanceListener
    from client.metadata import BrokerInfo, PartitionInfo, TopicInfo
    from client.offsets import OffsetAndTimestamp
    from client.producer import Producer, RecordFuture
    from client.protocol.configs import ConfigResourceType
    from client.structs import (
        ConsumerGroupMetadata,
        ConsumerRecord,
        NewTopic,
        OffsetAndMetadata,
        RecordMetadata,
        TopicPartition,
    )
