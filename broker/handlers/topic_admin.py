"""CreateTopics (19), DeleteTopics (20), CreatePartitions (37).

The active controller carries each change out and answers once it is committed to the
metadata log; any other broker forwards the request there (`forwarding`) and answers once
its own image shows the change (or a few seconds have passed). Each topic succeeds or fails
on its own, with the error code Kafka uses and a message saying why. A topic named
twice in one request gets INVALID_REQUEST for every occurrence. A storage failure answers
KAFKA_STORAGE_ERROR for the topic it hit.

CreateTopics v5+ answers with the topic's partitions, replication factor and configs (also
for `validate_only`); v7+ with its topic id. DeleteTopics v6+ accepts topics by name or by
id (one of the two). Internal topics cannot be deleted.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

from tidelog.broker.config_entries import topic_config_entries
from tidelog.broker.controller.topics import TopicError
from tidelog.broker.handlers.forwarding import to_controller, wait_reflected
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)

ZERO_UUID = uuid.UUID(int=0)

T = TypeVar("T")


class _Failed(NamedTuple):
    code: ErrorCode
    message: str


async def _attempt(action: Callable[[], Awaitable[T]], what: str) -> T | _Failed:
    """Run `action`; a TopicError or a storage failure becomes a `_Failed`."""
    try:
        return await action()
    except TopicError as exc:
        return _Failed(exc.error_code, exc.message)
    except OSError as exc:
        log.error("storage failure while %s: %s", what, exc)
        return _Failed(ErrorCode.KAFKA_STORAGE_ERROR, f"storage failure: {exc}")


def _repeated(names: list[str]) -> set[str]:
    return {name for name, count in Counter(names).items() if count > 1}


# -- CreateTopics


async def create_topics(ctx: RequestContext, request: Message) -> Message:
    forwarded = await to_controller(ctx, request, create_topics_error_response)
    if forwarded is not None:
        created = [t["name"] for t in forwarded["topics"] if t["error_code"] == ErrorCode.NONE]
        if not request["validate_only"]:
            await wait_reflected(ctx, lambda image: all(image.topic(n) for n in created))
        return forwarded
    repeated = _repeated([t["name"] for t in request["topics"]])
    validate_only: bool = request["validate_only"]
    results = []
    for topic in request["topics"]:
        name: str = topic["name"]
        if name in repeated:
            results.append(
                _created_error(name, ErrorCode.INVALID_REQUEST, "topic named twice in the request")
            )
            continue
        outcome = await _attempt(
            functools.partial(_create_one, ctx, topic, validate_only), f"creating {name}"
        )
        results.append(_created_error(name, *outcome) if isinstance(outcome, _Failed) else outcome)
    return {"throttle_time_ms": 0, "topics": results}


async def _create_one(ctx: RequestContext, topic: Message, validate_only: bool) -> Message:
    assignments = topic["assignments"]
    if assignments and (topic["num_partitions"] != -1 or topic["replication_factor"] != -1):
        raise TopicError(
            ErrorCode.INVALID_REQUEST,
            "give either replica assignments or partition count and replication factor, not both",
        )
    indexes = sorted(a["partition_index"] for a in assignments)
    if indexes != list(range(len(indexes))):
        raise TopicError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            f"assigned partitions must be 0..{len(indexes) - 1} once each, got {indexes}",
        )
    ordered = sorted(assignments, key=lambda a: a["partition_index"])
    configs = {c["name"]: c["value"] for c in topic["configs"]}
    if len(configs) != len(topic["configs"]):
        raise TopicError(ErrorCode.INVALID_REQUEST, "a config is named twice")
    created = await ctx.broker.topics.create_topic(
        topic["name"],
        num_partitions=topic["num_partitions"],
        replication_factor=topic["replication_factor"],
        configs=configs,
        assignments=[a["broker_ids"] for a in ordered] if assignments else None,
        validate_only=validate_only,
    )
    return {
        "name": created.name,
        "topic_id": created.topic_id,
        "error_code": int(ErrorCode.NONE),
        "error_message": None,
        "topic_config_error_code": int(ErrorCode.NONE),
        "num_partitions": len(created.partitions),
        "replication_factor": len(created.partitions[0].replicas),
        "configs": [
            entry.created_topic_config()
            for entry in topic_config_entries(ctx.broker.config, created.configs)
        ],
    }


def _created_error(name: str, code: ErrorCode, message: str | None) -> Message:
    return {
        "name": name,
        "topic_id": ZERO_UUID,
        "error_code": int(code),
        "error_message": message,
        "topic_config_error_code": int(ErrorCode.NONE),
        "num_partitions": -1,
        "replication_factor": -1,
        "configs": None,
    }


def create_topics_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "topics": [_created_error(t["name"], code, None) for t in request["topics"]],
    }


# -- DeleteTopics


def _requested_deletions(request: Message, version: int) -> list[tuple[str | None, uuid.UUID]]:
    """(name, id) per requested topic; v0-5 name only (id zero), v6+ one of the two."""
    if version < 6:
        return [(name, ZERO_UUID) for name in request["topic_names"]]
    return [(t["name"], t["topic_id"]) for t in request["topics"]]


async def delete_topics(ctx: RequestContext, request: Message) -> Message:
    forwarded = await to_controller(ctx, request, delete_topics_error_response)
    if forwarded is not None:
        gone = [r["topic_id"] for r in forwarded["responses"] if r["error_code"] == ErrorCode.NONE]
        await wait_reflected(ctx, lambda image: not any(image.topic_by_id(i) for i in gone))
        return forwarded
    requested = _requested_deletions(request, ctx.api_version)
    repeated_names = _repeated([name for name, _ in requested if name is not None])
    repeated_ids = _repeated([str(i) for name, i in requested if name is None])
    responses = []
    for name, topic_id in requested:
        code, message = ErrorCode.NONE, None
        if name is not None and topic_id != ZERO_UUID:
            code, message = ErrorCode.INVALID_REQUEST, "give a topic name or an id, not both"
        elif name in repeated_names or (name is None and str(topic_id) in repeated_ids):
            code, message = ErrorCode.INVALID_REQUEST, "topic named twice in the request"
        else:
            code, message, name, topic_id = await _delete_one(ctx, name, topic_id)
        responses.append(
            {"name": name, "topic_id": topic_id, "error_code": int(code), "error_message": message}
        )
    return {"throttle_time_ms": 0, "responses": responses}


async def _delete_one(
    ctx: RequestContext, name: str | None, topic_id: uuid.UUID
) -> tuple[ErrorCode, str | None, str | None, uuid.UUID]:
    image = ctx.broker.image
    topic = image.topic(name) if name is not None else image.topic_by_id(topic_id)
    if topic is None:
        if name is None:
            return ErrorCode.UNKNOWN_TOPIC_ID, f"no topic with id {topic_id}", None, topic_id
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}", name, topic_id
    if topic.is_internal:
        return (
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"{topic.name} is an internal topic and cannot be deleted",
            topic.name,
            topic.topic_id,
        )
    outcome = await _attempt(
        functools.partial(ctx.broker.topics.delete_topic, topic.name), f"deleting {topic.name}"
    )
    if isinstance(outcome, _Failed):
        return outcome.code, outcome.message, topic.name, topic.topic_id
    return ErrorCode.NONE, None, topic.name, topic.topic_id


def delete_topics_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "responses": [
            {"name": name, "topic_id": topic_id, "error_code": int(code), "error_message": None}
            for name, topic_id in _requested_deletions(request, version)
        ],
    }


# -- CreatePartitions


async def create_partitions(ctx: RequestContext, request: Message) -> Message:
    forwarded = await to_controller(ctx, request, create_partitions_error_response)
    if forwarded is not None:
        return forwarded
    repeated = _repeated([t["name"] for t in request["topics"]])
    results = []
    for topic in request["topics"]:
        name: str = topic["name"]
        code: ErrorCode
        message: str | None
        if name in repeated:
            code, message = ErrorCode.INVALID_REQUEST, "topic named twice in the request"
        else:
            outcome = await _attempt(
                functools.partial(_grow, ctx, topic, request["validate_only"]),
                f"adding partitions to {name}",
            )
            if isinstance(outcome, _Failed):
                code, message = outcome
            else:
                code, message = ErrorCode.NONE, None
        results.append({"name": name, "error_code": int(code), "error_message": message})
    return {"throttle_time_ms": 0, "results": results}


async def _grow(ctx: RequestContext, topic: Message, validate_only: bool) -> None:
    name: str = topic["name"]
    count: int = topic["count"]
    existing = ctx.broker.image.topic(name)
    assignments = topic["assignments"]
    if existing is not None and assignments is not None:
        added = count - len(existing.partitions)
        if len(assignments) != added:
            raise TopicError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"{len(assignments)} assignments for {added} new partitions",
            )
        brokers = {b.node_id for b in ctx.broker.image.brokers()}
        factor = len(existing.partitions[0].replicas)
        for assignment in assignments:
            replicas = assignment["broker_ids"]
            if (
                len(replicas) != factor
                or len(set(replicas)) != factor
                or not set(replicas) <= brokers
            ):
                raise TopicError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"replicas {replicas} must be {factor} distinct known brokers",
                )
    await ctx.broker.topics.create_partitions(name, count, validate_only=validate_only)


def create_partitions_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "results": [
            {"name": t["name"], "error_code": int(code), "error_message": None}
            for t in request["topics"]
        ],
    }
