"""AlterPartition (56) at the active controller (PURE): a partition leader's ISR change,
checked against the image and turned into a PartitionChangeRecord, as Kafka's
ReplicationControlManager does.

`alter_partition(image, request)` answers the whole request: the records to commit (one
PartitionChangeRecord per accepted partition, all in one operation) and the response body
as it will be once they are committed. The request is refused as a whole with
STALE_BROKER_EPOCH when its broker is not registered at that broker epoch. A partition is
refused, and nothing of it changes, with:

- UNKNOWN_TOPIC_ID / UNKNOWN_TOPIC_OR_PARTITION: no such topic or partition;
- NOT_LEADER_OR_FOLLOWER: the sender does not lead it;
- FENCED_LEADER_EPOCH: the request is of another leader epoch;
- INVALID_UPDATE_VERSION: the request is of another partition epoch (a change raced it),
  unless it asks for what the partition already is (a retry: answered as done);
- INVALID_REQUEST: the new ISR leaves the leader out, names a broker that is not a
  replica, repeats one, or moves the leader recovery state back to RECOVERING;
- INELIGIBLE_REPLICA: a broker it adds is fenced, in controlled shutdown, or (v3) of
  another broker epoch than the one named.

Each answered partition carries its leader, leader epoch, ISR, recovery state and
partition epoch (the new ones when accepted, the current ones when refused).
"""

from __future__ import annotations

import uuid
from typing import Any

from tidelog.broker.metadata.image import MetadataImage, PartitionMetadata
from tidelog.broker.metadata.records import (
    NO_LEADER_RECOVERY_STATE_CHANGE,
    LeaderRecoveryState,
    MetadataRecord,
    PartitionChangeRecord,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message


def alter_partition(image: MetadataImage, request: Message) -> tuple[list[MetadataRecord], Message]:
    """The records to commit and the response body (module docstring)."""
    broker_id: int = request["broker_id"]
    broker = image.broker(broker_id)
    if broker is None or broker.broker_epoch != request["broker_epoch"]:
        return [], {"throttle_time_ms": 0, "error_code": ErrorCode.STALE_BROKER_EPOCH, "topics": []}
    records: list[MetadataRecord] = []
    topics = []
    for topic_request in request["topics"]:
        topic_id: uuid.UUID = topic_request["topic_id"]
        answers = []
        for wanted in topic_request["partitions"]:
            error, record, answer = _partition(image, broker_id, topic_id, wanted)
            if record is not None:
                records.append(record)
            answers.append(
                {"partition_index": wanted["partition_index"], "error_code": error, **answer}
            )
        topics.append(
            {
                "topic_name": topic_request.get("topic_name"),
                "topic_id": topic_id,
                "partitions": answers,
            }
        )
    return records, {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "topics": topics}


def _partition(
    image: MetadataImage, broker_id: int, topic_id: uuid.UUID, wanted: Message
) -> tuple[ErrorCode, PartitionChangeRecord | None, dict[str, Any]]:
    topic = image.topic_by_id(topic_id)
    if topic is None:
        return ErrorCode.UNKNOWN_TOPIC_ID, None, _state(None)
    index: int = wanted["partition_index"]
    if not 0 <= index < len(topic.partitions):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None, _state(None)
    current = topic.partitions[index]
    new_isr, epochs = _requested_isr(wanted)
    recovery: int = wanted.get("leader_recovery_state", LeaderRecoveryState.RECOVERED)
    if current.leader_id != broker_id:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER, None, _state(current)
    if wanted["leader_epoch"] != current.leader_epoch:
        return ErrorCode.FENCED_LEADER_EPOCH, None, _state(current)
    if wanted["partition_epoch"] != current.partition_epoch:
        done = new_isr == current.isr and recovery == current.leader_recovery_state
        return (ErrorCode.NONE if done else ErrorCode.INVALID_UPDATE_VERSION), None, _state(current)
    if (
        broker_id not in new_isr
        or len(set(new_isr)) != len(new_isr)
        or not set(new_isr) <= set(current.replicas)
        or recovery not in (LeaderRecoveryState.RECOVERED, LeaderRecoveryState.RECOVERING)
        or (
            recovery == LeaderRecoveryState.RECOVERING
            and current.leader_recovery_state == LeaderRecoveryState.RECOVERED
        )
    ):
        return ErrorCode.INVALID_REQUEST, None, _state(current)
    for replica in new_isr:
        if replica in current.isr:
            continue
        node = image.broker(replica)
        named_epoch = epochs.get(replica, -1)
        if (
            node is None
            or node.fenced
            or node.in_controlled_shutdown
            or (named_epoch >= 0 and named_epoch != node.broker_epoch)
        ):
            return ErrorCode.INELIGIBLE_REPLICA, None, _state(current)
    if new_isr == current.isr and recovery == current.leader_recovery_state:
        return ErrorCode.NONE, None, _state(current)
    record = PartitionChangeRecord(
        topic_id,
        index,
        isr=new_isr if new_isr != current.isr else None,
        leader_recovery_state=(
            recovery
            if recovery != current.leader_recovery_state
            else NO_LEADER_RECOVERY_STATE_CHANGE
        ),
    )
    after = {
        "leader_id": current.leader_id,
        "leader_epoch": current.leader_epoch,
        "isr": list(new_isr),
        "leader_recovery_state": recovery,
        "partition_epoch": current.partition_epoch + 1,
    }
    return ErrorCode.NONE, record, after


def _requested_isr(wanted: Message) -> tuple[tuple[int, ...], dict[int, int]]:
    """The new ISR (v3: with each broker's epoch) of a request's partition."""
    with_epochs = wanted.get("new_isr_with_epochs")
    if with_epochs:
        return (
            tuple(b["broker_id"] for b in with_epochs),
            {b["broker_id"]: b["broker_epoch"] for b in with_epochs},
        )
    return tuple(wanted.get("new_isr") or ()), {}


def _state(partition: PartitionMetadata | None) -> dict[str, Any]:
    if partition is None:
        return {
            "leader_id": -1,
            "leader_epoch": -1,
            "isr": [],
            "leader_recovery_state": 0,
            "partition_epoch": -1,
        }
    return {
        "leader_id": partition.leader_id,
        "leader_epoch": partition.leader_epoch,
        "isr": list(partition.isr),
        "leader_recovery_state": partition.leader_recovery_state,
        "partition_epoch": partition.partition_epoch,
    }
