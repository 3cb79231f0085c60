"""tidelog's Kafka client on trio: `Producer`, `Consumer` (manual assignment or consumer
groups) and `Admin`.

    from tidelog.client import Producer, Consumer, Admin, NewTopic, TopicPartition

Names are loaded on first use, so importing `tidelog.client.protocol` (which the broker and the
storage layer do) does not pull in trio or the client itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Producer": "tidelog.client.producer",
    "RecordFuture": "tidelog.client.producer",
    "Consumer": "tidelog.client.consumer",
    "Admin": "tidelog.client.admin",
    "ConfigResource": "tidelog.client.admin",
    "ConfigResourceType": "tidelog.client.protocol.configs",
    "ConfigEntry": "tidelog.client.admin",
    "ClusterDescription": "tidelog.client.admin",
    "QuorumDescription": "tidelog.client.admin_cluster",
    "ReplicaState": "tidelog.client.admin_cluster",
    "ElectionResult": "tidelog.client.admin_cluster",
    "OffsetAndTimestamp": "tidelog.client.offsets",
    "TopicInfo": "tidelog.client.metadata",
    "PartitionInfo": "tidelog.client.metadata",
    "BrokerInfo": "tidelog.client.metadata",
    "TopicPartition": "tidelog.client.structs",
    "RecordMetadata": "tidelog.client.structs",
    "ConsumerRecord": "tidelog.client.structs",
    "NewTopic": "tidelog.client.structs",
    "OffsetAndMetadata": "tidelog.client.structs",
    "ConsumerGroupMetadata": "tidelog.client.structs",
    "RebalanceListener": "tidelog.client.group_coordinator",
    "CommitFailedError": "tidelog.client.errors",
    "RebalanceInProgressError": "tidelog.client.errors",
    "FencedInstanceIdError": "tidelog.client.errors",
    "IllegalGenerationError": "tidelog.client.errors",
    "UnknownMemberIdError": "tidelog.client.errors",
    "GroupAuthorizationFailedError": "tidelog.client.errors",
    "KafkaError": "tidelog.client.errors",
    "ConfigError": "tidelog.client.errors",
    "KafkaConnectionError": "tidelog.client.errors",
    "KafkaTimeoutError": "tidelog.client.errors",
    "KafkaProtocolError": "tidelog.client.errors",
    "IncompatibleBrokerError": "tidelog.client.errors",
    "ClientClosedError": "tidelog.client.errors",
    "RecordTooLargeError": "tidelog.client.errors",
    "NoOffsetForPartitionError": "tidelog.client.errors",
    "BrokerResponseError": "tidelog.client.errors",
    "OffsetOutOfRangeError": "tidelog.client.errors",
    "UnknownTopicOrPartitionError": "tidelog.client.errors",
    "TopicAlreadyExistsError": "tidelog.client.errors",
    "NotLeaderOrFollowerError": "tidelog.client.errors",
    "MessageTooLargeError": "tidelog.client.errors",
    "InvalidTopicError": "tidelog.client.errors",
    "InvalidPartitionsError": "tidelog.client.errors",
    "InvalidReplicationFactorError": "tidelog.client.errors",
    "InvalidConfigError": "tidelog.client.errors",
    "OutOfOrderSequenceNumberError": "tidelog.client.errors",
    "error_for_code": "tidelog.client.errors",
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
    "ElectionResult",
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
    "QuorumDescription",
    "RebalanceInProgressError",
    "RebalanceListener",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "ReplicaState",
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
        raise AttributeError(f"module 'tidelog.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from tidelog.client.admin import (
        Admin,
        ClusterDescription,
        ConfigEntry,
        ConfigResource,
    )
    from tidelog.client.admin_cluster import ElectionResult, QuorumDescription, ReplicaState
    from tidelog.client.consumer import Consumer
    from tidelog.client.errors import (
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
    from tidelog.client.group_coordinator import RebalanceListener
    from tidelog.client.metadata import BrokerInfo, PartitionInfo, TopicInfo
    from tidelog.client.offsets import OffsetAndTimestamp
    from tidelog.client.producer import Producer, RecordFuture
    from tidelog.client.protocol.configs import ConfigResourceType
    from tidelog.client.structs import (
        ConsumerGroupMetadata,
        ConsumerRecord,
        NewTopic,
        OffsetAndMetadata,
        RecordMetadata,
        TopicPartition,
    )
