"""Metadata (3): brokers, controller and topics, from the metadata image.

- All topics: an empty list at v0, a null list from v1.
- A requested topic that does not exist is created when the request allows it
  (AllowAutoTopicCreation, implied true before v4) and `auto_create_topics_enable` is set;
  otherwise it gets UNKNOWN_TOPIC_OR_PARTITION. A name Kafka would not accept gets
  INVALID_TOPIC_EXCEPTION. From v10 a topic may be asked for by id (null name); an unknown
  id gets UNKNOWN_TOPIC_ID.
- Brokers are the live (unfenced) ones, each with its endpoint on the listener the request
  came in on, as Kafka does, so clients keep using the network they bootstrapped on.
  Partitions still name fenced replicas and leaders-to-be as the image holds them.
- ControllerId is a live broker, which forwards admin requests to the active controller
  (`MetadataImage.controller_for_clients`): what KRaft answers, so a client never waits on
  a dead controller.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from tidelog.broker.controller.topics import TopicError, validate_topic_name
from tidelog.broker.metadata.image import MetadataImage, TopicMetadata
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.primitives import ZERO_UUID
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)


async def handle(ctx: RequestContext, request: Message) -> Message:
    broker = ctx.broker
    image = broker.image
    version = ctx.api_version
    requested = request["topics"]
    if requested is None or (version == 0 and not requested):
        topics = [_topic_entry(topic, image) for topic in image.topics()]
    else:
        auto_create = (
            request["allow_auto_topic_creation"] and broker.config.auto_create_topics_enable
        )
        topics = []
        seen: set[Any] = set()
        for entry in requested:
            name: str | None = entry["name"]
            topic_id: uuid.UUID = entry["topic_id"]
            key = name if name is not None else topic_id
            if key in seen:
                continue
            seen.add(key)
            if name is None:
                topics.append(_topic_by_id(image, topic_id, version))
            else:
                topics.append(await _topic_by_name(ctx, name, auto_create))
    return {
        "throttle_time_ms": 0,
        "brokers": _brokers(image, ctx.connection.listener_name),
        "cluster_id": image.cluster_id,
        "controller_id": image.controller_for_clients(
            ctx.connection.listener_name, broker.config.node_id
        ),
        "topics": topics,
        "error_code": int(ErrorCode.NONE),
    }


def _brokers(image: MetadataImage, listener_name: str) -> list[Message]:
    return [
        {"node_id": node.node_id, "host": endpoint.host, "port": endpoint.port, "rack": node.rack}
        for node, endpoint in image.reachable_brokers(listener_name)
    ]


async def _topic_by_name(ctx: RequestContext, name: str, auto_create: bool) -> Message:
    image = ctx.broker.image
    topic = image.topic(name)
    if topic is not None:
        return _topic_entry(topic, image)
    try:
        validate_topic_name(name)
    except TopicError:
        return _topic_error(ErrorCode.INVALID_TOPIC_EXCEPTION, name)
    if not auto_create:
        return _topic_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name)
    try:
        topic = await ctx.broker.topics.create_topic(name)
    except TopicError as exc:
        log.info("auto-creating topic %r failed: %s", name, exc.message)
        return _topic_error(exc.error_code, name)
    except OSError:
        log.exception("auto-creating topic %r failed in storage", name)
        return _topic_error(ErrorCode.KAFKA_STORAGE_ERROR, name)
    return _topic_entry(topic, ctx.broker.image)


def _topic_by_id(image: MetadataImage, topic_id: uuid.UUID, version: int) -> Message:
    topic = image.topic_by_id(topic_id) if topic_id != ZERO_UUID else None
    if topic is None:
        # The response's name only becomes nullable at v12.
        entry = _topic_error(ErrorCode.UNKNOWN_TOPIC_ID, None if version >= 12 else "")
        entry["topic_id"] = topic_id
        return entry
    return _topic_entry(topic, image)


def _topic_error(code: ErrorCode, name: str | None) -> Message:
    return {
        "error_code": int(code),
        "name": name,
        "topic_id": ZERO_UUID,
        "is_internal": False,
        "partitions": [],
    }


def _topic_entry(topic: TopicMetadata, image: MetadataImage) -> Message:
    partitions = []
    for p in topic.partitions:
        leader_known = p.leader_id >= 0 and image.broker(p.leader_id) is not None
        partitions.append(
            {
                "error_code": int(
                    ErrorCode.NONE if leader_known else ErrorCode.LEADER_NOT_AVAILABLE
                ),
                "partition_index": p.partition_index,
                "leader_id": p.leader_id,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": list(p.replicas),
                "isr_nodes": list(p.isr),
                "offline_replicas": list(p.offline_replicas),
            }
        )
    return {
        "error_code": int(ErrorCode.NONE),
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.is_internal,
        "partitions": partitions,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    """Every requested topic with `code` (the connection's answer when the handler fails)."""
    topics = []
    for entry in request["topics"] or ():
        name = entry["name"]
        topics.append(_topic_error(code, name if name is not None or version >= 12 else ""))
    return {"brokers": [], "controller_id": -1, "topics": topics, "error_code": int(code)}
