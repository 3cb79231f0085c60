"""Finding the local replica a partition-level request is about, with Kafka's checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tidelog.broker.cluster import PartitionMetadata
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.log import PartitionLog

NO_LEADER_EPOCH = -1


class LocalPartition(NamedTuple):
    metadata: PartitionMetadata
    log: PartitionLog


def local_partition(
    ctx: RequestContext, topic: str, index: int, current_leader_epoch: int = NO_LEADER_EPOCH
) -> LocalPartition | ErrorCode:
    """The partition's metadata and local log, or the error to answer.

    UNKNOWN_TOPIC_OR_PARTITION when the partition does not exist or has no replica here;
    a `current_leader_epoch` other than -1 must equal the partition's leader epoch, else
    FENCED_LEADER_EPOCH (the client's is older) or UNKNOWN_LEADER_EPOCH (newer).
    """
    metadata = ctx.broker.cluster.topic(topic)
    partition = metadata.partition(index) if metadata is not None else None
    partition_log = ctx.broker.topics.log(topic, index)
    if partition is None or partition_log is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if current_leader_epoch != NO_LEADER_EPOCH and current_leader_epoch != partition.leader_epoch:
        if current_leader_epoch < partition.leader_epoch:
            return ErrorCode.FENCED_LEADER_EPOCH
        return ErrorCode.UNKNOWN_LEADER_EPOCH
    return LocalPartition(partition, partition_log)


def per_partition(
    request: Message, answer: Callable[[str, Message], Message], *, topic_field: str = "name"
) -> list[Message]:
    """A response's `topics` for a request's `topics`: each requested partition answered
    by `answer(topic name, partition request)`, in request order."""
    return [
        {
            topic_field: topic[topic_field],
            "partitions": [answer(topic[topic_field], p) for p in topic["partitions"]],
        }
        for topic in request["topics"]
    ]
