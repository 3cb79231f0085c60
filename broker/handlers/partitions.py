"""Finding the local leader a partition-level request is about, with Kafka's checks."""

from __future__ import annotations

from collections.abc import Callable

from tidelog.broker.replica_manager import NO_LEADER_EPOCH, Partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

__all__ = ["NO_LEADER_EPOCH", "leader_partition", "per_partition"]


def leader_partition(
    ctx: RequestContext, topic: str, index: int, current_leader_epoch: int = NO_LEADER_EPOCH
) -> Partition | ErrorCode:
    """The partition if this broker leads it, or the error to answer (see
    `ReplicaManager.leader`)."""
    return ctx.broker.replicas.leader(topic, index, current_leader_epoch)


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
