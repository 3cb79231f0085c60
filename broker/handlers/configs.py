"""DescribeConfigs (32), AlterConfigs (33), IncrementalAlterConfigs (44).

Resources: TOPIC (2), the topic configs of `broker.topic_config`; BROKER (4), this node's
read-only configs (resource name "" or this node's id). Other resource types, another
node's id, or a resource named twice in one request get INVALID_REQUEST for that resource.

AlterConfigs replaces a topic's whole set of overrides with the request's; an incremental
alter applies SET / DELETE / APPEND / SUBTRACT to single keys (APPEND and SUBTRACT only for
list-typed configs). Either validates every key before anything changes; `validate_only`
changes nothing. Broker configs cannot be altered (INVALID_REQUEST).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from tidelog.broker.config_entries import ConfigEntry, broker_config_entries, topic_config_entries
from tidelog.broker.controller.topics import TopicError
from tidelog.broker.handlers.forwarding import to_controller
from tidelog.broker.router import RequestContext
from tidelog.broker.topic_config import TOPIC_CONFIGS
from tidelog.client.protocol.configs import AlterOperation, ConfigResourceType, ConfigType
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

if TYPE_CHECKING:
    from tidelog.broker.router import BrokerContext


class _ResourceError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _duplicates(resources: list[Message]) -> set[tuple[int, str]]:
    counts = Counter((r["resource_type"], r["resource_name"]) for r in resources)
    return {key for key, count in counts.items() if count > 1}


def _resource_entries(broker: BrokerContext, resource_type: int, name: str) -> list[ConfigEntry]:
    if resource_type == ConfigResourceType.TOPIC:
        topic = broker.image.topic(name)
        if topic is None:
            raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        return topic_config_entries(broker.config, topic.configs)
    if resource_type == ConfigResourceType.BROKER:
        _check_this_broker(broker, name)
        return broker_config_entries(broker.config)
    raise _ResourceError(
        ErrorCode.INVALID_REQUEST, f"resource type {resource_type} has no configs here"
    )


def _check_this_broker(broker: BrokerContext, name: str) -> None:
    if name not in ("", str(broker.config.node_id)):
        raise _ResourceError(
            ErrorCode.INVALID_REQUEST,
            f"broker {name!r} is not this broker ({broker.config.node_id}): ask that broker",
        )


# -- DescribeConfigs


async def describe(ctx: RequestContext, request: Message) -> Message:
    duplicates = _duplicates(request["resources"])
    results = []
    for resource in request["resources"]:
        resource_type: int = resource["resource_type"]
        name: str = resource["resource_name"]
        result: Message = {
            "error_code": int(ErrorCode.NONE),
            "error_message": None,
            "resource_type": resource_type,
            "resource_name": name,
            "configs": [],
        }
        try:
            if (resource_type, name) in duplicates:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, "resource named twice")
            entries = _resource_entries(ctx.broker, resource_type, name)
        except _ResourceError as exc:
            result["error_code"] = int(exc.code)
            result["error_message"] = exc.message
        else:
            keys: list[str] | None = resource["configuration_keys"]
            wanted = set(keys) if keys is not None else None
            result["configs"] = [
                entry.describe(
                    include_synonyms=request["include_synonyms"],
                    include_documentation=request["include_documentation"],
                )
                for entry in entries
                if wanted is None or entry.name in wanted
            ]
        results.append(result)
    return {"throttle_time_ms": 0, "results": results}


def describe_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "results": [
            {
                "error_code": int(code),
                "error_message": None,
                "resource_type": r["resource_type"],
                "resource_name": r["resource_name"],
                "configs": [],
            }
            for r in request["resources"]
        ],
    }


# -- AlterConfigs and IncrementalAlterConfigs

OverridesUpdate = Callable[[Mapping[str, str], list[Message]], dict[str, str | None]]
"""(current overrides, the request's config entries, each name once) -> the new overrides."""


def _replace_all(current: Mapping[str, str], configs: list[Message]) -> dict[str, str | None]:
    return {c["name"]: c["value"] for c in configs}


def _apply_operations(current: Mapping[str, str], configs: list[Message]) -> dict[str, str | None]:
    updated: dict[str, str | None] = dict(current)
    for config in configs:
        name: str = config["name"]
        value: str | None = config["value"]
        try:
            operation = AlterOperation(config["config_operation"])
        except ValueError:
            raise _ResourceError(
                ErrorCode.INVALID_REQUEST,
                f"{name}: unknown config operation {config['config_operation']}",
            ) from None
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise _ResourceError(ErrorCode.INVALID_CONFIG, f"unknown topic config {name!r}")
        if operation is AlterOperation.DELETE:
            updated.pop(name, None)
            continue
        if value is None:
            raise _ResourceError(
                ErrorCode.INVALID_REQUEST, f"{name}: {operation.name} needs a value"
            )
        if operation is AlterOperation.SET:
            updated[name] = value
            continue
        if definition.config_type is not ConfigType.LIST:
            raise _ResourceError(
                ErrorCode.INVALID_CONFIG, f"{name}: {operation.name} needs a list-typed config"
            )
        base = updated.get(name)
        items = base.split(",") if base else []
        for item in value.split(","):
            if operation is AlterOperation.APPEND and item not in items:
                items.append(item)
            elif operation is AlterOperation.SUBTRACT and item in items:
                items.remove(item)
        if items:
            updated[name] = ",".join(items)
        else:
            updated.pop(name, None)
    return updated


async def _alter(ctx: RequestContext, request: Message, update: OverridesUpdate) -> Message:
    forwarded = await to_controller(ctx, request, alter_error_response)
    if forwarded is not None:
        return forwarded
    duplicates = _duplicates(request["resources"])
    responses = []
    for resource in request["resources"]:
        resource_type: int = resource["resource_type"]
        name: str = resource["resource_name"]
        code, message = ErrorCode.NONE, None
        try:
            if (resource_type, name) in duplicates:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, "resource named twice")
            await _alter_resource(ctx.broker, resource, update, request["validate_only"])
        except _ResourceError as exc:
            code, message = exc.code, exc.message
        except TopicError as exc:
            code, message = exc.error_code, exc.message
        responses.append(
            {
                "error_code": int(code),
                "error_message": message,
                "resource_type": resource_type,
                "resource_name": name,
            }
        )
    return {"throttle_time_ms": 0, "responses": responses}


async def _alter_resource(
    broker: BrokerContext, resource: Message, update: OverridesUpdate, validate_only: bool
) -> None:
    resource_type: int = resource["resource_type"]
    name: str = resource["resource_name"]
    if resource_type == ConfigResourceType.BROKER:
        _check_this_broker(broker, name)
        raise _ResourceError(
            ErrorCode.INVALID_REQUEST,
            "broker configs are read-only: edit the config file and restart the broker",
        )
    if resource_type != ConfigResourceType.TOPIC:
        raise _ResourceError(
            ErrorCode.INVALID_REQUEST, f"resource type {resource_type} has no configs here"
        )
    topic = broker.image.topic(name)
    if topic is None:
        raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
    names = Counter(c["name"] for c in resource["configs"])
    repeated = sorted(name for name, count in names.items() if count > 1)
    if repeated:
        raise _ResourceError(ErrorCode.INVALID_REQUEST, f"configs named twice: {repeated}")
    overrides = update(topic.configs, resource["configs"])
    await broker.topics.alter_configs(name, overrides, validate_only=validate_only)


async def alter(ctx: RequestContext, request: Message) -> Message:
    return await _alter(ctx, request, _replace_all)


async def incremental_alter(ctx: RequestContext, request: Message) -> Message:
    return await _alter(ctx, request, _apply_operations)


def alter_error_response(request: Message, version: int, code: ErrorCode) -> Message:
    return {
        "throttle_time_ms": 0,
        "responses": [
            {
                "error_code": int(code),
                "error_message": None,
                "resource_type": r["resource_type"],
                "resource_name": r["resource_name"],
            }
            for r in request["resources"]
        ],
    }
