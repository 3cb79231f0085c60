"""The admin client: topics, partitions, configs, offsets, records, cluster, consumer groups.

    async with Admin(bootstrap_servers="127.0.0.1:9092") as admin:
        await admin.create_topics([NewTopic("events", num_partitions=3)])
        print(await admin.list_topics())

Each call retries retriable failures (lost connections, NOT_CONTROLLER, leaders moving)
with backoff until `default_api_timeout_ms`, then raises `KafkaTimeoutError`. Topic creation,
deletion and partition changes go to the controller named by Metadata; per-partition calls
to each partition's leader; consumer-group calls to the group's coordinator (found with
FindCoordinator), except `list_groups`, which asks every broker; the rest to any broker
(which forwards `describe_quorum` to the active controller).

Calls that act on several entities (topics, resources, partitions) apply to each
independently; when some fail, the call raises the error of the first failed entity (its
message names it) after the others took effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import trio

from tidelog.client.admin_base import GiveUp, Retry, unanswered
from tidelog.client.admin_cluster import ClusterAdmin
from tidelog.client.admin_groups import GroupAdmin
from tidelog.client.connection import BrokerConnection
from tidelog.client.errors import KafkaError, error_for_code
from tidelog.client.metadata import BrokerInfo, ClusterMetadata, TopicInfo
from tidelog.client.offsets import EARLIEST, LATEST, MAX_TIMESTAMP, OffsetAndTimestamp, list_offsets
from tidelog.client.protocol.configs import AlterOperation, ConfigResourceType, ConfigSource
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.admin import (
    CREATE_PARTITIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    DESCRIBE_CONFIGS,
    INCREMENTAL_ALTER_CONFIGS,
)
from tidelog.client.protocol.messages.data import DELETE_RECORDS, DESCRIBE_CLUSTER, METADATA
from tidelog.client.protocol.primitives import ZERO_UUID
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import NewTopic, TopicPartition


@dataclass(frozen=True, slots=True)
class ConfigResource:
    """A topic (by name) or broker (by node id as a string; "" for the cluster default)."""

    type: ConfigResourceType
    name: str

    def __str__(self) -> str:
        """How error messages name it: "topic 'events'", "broker '1'"."""
        return f"{self.type.name.lower()} {self.name!r}"


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One described config."""

    name: str
    value: str | None
    source: ConfigSource
    read_only: bool
    is_sensitive: bool

    @property
    def is_default(self) -> bool:
        return self.source is ConfigSource.DEFAULT_CONFIG


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """`controller_id` is -1 when none is known; `brokers` include the fenced ones when
    the broker can list them (`BrokerInfo.fenced`)."""

    cluster_id: str | None
    controller_id: int
    brokers: list[BrokerInfo] = field(default_factory=list)


OffsetSpec = Literal["earliest", "latest", "max_timestamp"] | int
"""For `list_offsets`: a named position, or a timestamp in ms (first offset at or after)."""
_SPEC_TIMESTAMPS = {"earliest": EARLIEST, "latest": LATEST, "max_timestamp": MAX_TIMESTAMP}

# Entity errors after which the same request to a refreshed controller may succeed.
_REROUTE_ERRORS = frozenset({ErrorCode.NOT_CONTROLLER})


class Admin(GroupAdmin, ClusterAdmin):
    """Kafka admin client on trio. Keyword arguments are `AdminConfig` fields
    (`bootstrap_servers`, `client_id`, `request_timeout_ms`, `retry_backoff_ms`,
    `default_api_timeout_ms`, TLS settings, ...). `connector` replaces how connections are
    opened; `rng` seeds backoff jitter."""

    # --- topics --------------------------------------------------------------------------

    async def create_topics(
        self,
        topics: Iterable[NewTopic],
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> None:
        """Create topics (CreateTopics, to the controller). With `validate_only` the broker
        only checks the request. Raises e.g. `TopicAlreadyExistsError`."""
        pending = {t.name: t for t in topics}
        deadline = self._deadline(timeout_ms)
        errors: list[KafkaError] = []

        async def attempt() -> None:
            connection = await self._controller()
            body = {
                "topics": [_creatable_topic(t) for t in pending.values()],
                "timeout_ms": self._broker_timeout_ms(deadline),
                "validate_only": validate_only,
            }
            response = await connection.request(CREATE_TOPICS.key, body)
            reroute: KafkaError | None = None
            for result in response["topics"]:
                error = self._entity_error(
                    result["error_code"], result.get("error_message"), f"topic {result['name']!r}"
                )
                if result["error_code"] in _REROUTE_ERRORS:
                    reroute = error
                    continue
                pending.pop(result["name"], None)
                if error is not None:
                    errors.append(error)
            if reroute is not None:
                raise Retry(reroute)
            errors.extend(unanswered("CreateTopics", pending))
            pending.clear()

        if pending:
            await self._retrying("CreateTopics", deadline, attempt)
        self._raise_first(errors)

    async def delete_topics(self, topics: Iterable[str], *, timeout_ms: int | None = None) -> None:
        """Delete topics (DeleteTopics, to the controller)."""
        pending = list(dict.fromkeys(topics))
        deadline = self._deadline(timeout_ms)
        errors: list[KafkaError] = []

        async def attempt() -> None:
            connection = await self._controller()
            body = {
                "topic_names": pending,
                "topics": [{"name": name, "topic_id": ZERO_UUID} for name in pending],
                "timeout_ms": self._broker_timeout_ms(deadline),
            }
            response = await connection.request(DELETE_TOPICS.key, body)
            reroute: KafkaError | None = None
            for result in response["responses"]:
                error = self._entity_error(
                    result["error_code"], result.get("error_message"), f"topic {result['name']!r}"
                )
                if result["error_code"] in _REROUTE_ERRORS:
                    reroute = error
                    continue
                if result["name"] in pending:
                    pending.remove(result["name"])
                if error is not None:
                    errors.append(error)
            if reroute is not None:
                raise Retry(reroute)
            errors.extend(unanswered("DeleteTopics", pending))
            pending.clear()

        if pending:
            await self._retrying("DeleteTopics", deadline, attempt)
        self._raise_first(errors)

    async def _fetch_metadata(self, topics: list[str] | None) -> Message:
        connection = await self._cluster.any_connection()
        body = {
            "topics": None
            if topics is None
            else [{"name": t, "topic_id": ZERO_UUID} for t in topics],
            "allow_auto_topic_creation": False,
        }
        return await connection.request(METADATA.key, body, max_version=12)

    async def list_topics(self, *, include_internal: bool = False) -> list[str]:
        """Names of the cluster's topics, sorted."""

        async def attempt() -> list[str]:
            response = await self._fetch_metadata(None)
            return sorted(
                t["name"]
                for t in response["topics"]
                if t["error_code"] == ErrorCode.NONE
                and (include_internal or not t.get("is_internal", False))
            )

        return await self._retrying("ListTopics", self._deadline(None), attempt)

    async def describe_topics(self, topics: Iterable[str] | None = None) -> dict[str, TopicInfo]:
        """Partitions, leaders, replicas and ISR of these topics (or of all topics).
        Raises `UnknownTopicOrPartitionError` for a topic that does not exist."""
        names = None if topics is None else list(dict.fromkeys(topics))

        async def attempt() -> dict[str, TopicInfo]:
            response = await self._fetch_metadata(names)
            view = ClusterMetadata()
            for topic in response["topics"]:
                code = topic["error_code"]
                if code != ErrorCode.NONE:
                    error = error_for_code(code, f"topic {topic['name']!r}")
                    if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION or not error.retriable:
                        raise GiveUp(error)
                    raise Retry(error)
            view.update(response, trio.current_time(), names)
            return dict(view.topics)

        return await self._retrying("DescribeTopics", self._deadline(None), attempt)

    async def create_partitions(
        self,
        new_totals: Mapping[str, int],
        *,
        validate_only: bool = False,
        timeout_ms: int | None = None,
    ) -> None:
        """Grow topics to the given total partition counts (CreatePartitions)."""
        pending = dict(new_totals)
        deadline = self._deadline(timeout_ms)
        errors: list[KafkaError] = []

        async def attempt() -> None:
            connection = await self._controller()
            body = {
                "topics": [
                    {"name": name, "count": count, "assignments": None}
                    for name, count in pending.items()
                ],
                "timeout_ms": self._broker_timeout_ms(deadline),
                "validate_only": validate_only,
            }
            response = await connection.request(CREATE_PARTITIONS.key, body)
            reroute: KafkaError | None = None
            for result in response["results"]:
                error = self._entity_error(
                    result["error_code"], result.get("error_message"), f"topic {result['name']!r}"
                )
                if result["error_code"] in _REROUTE_ERRORS:
                    reroute = error
                    continue
                pending.pop(result["name"], None)
                if error is not None:
                    errors.append(error)
            if reroute is not None:
                raise Retry(reroute)
            errors.extend(unanswered("CreatePartitions", pending))
            pending.clear()

        if pending:
            await self._retrying("CreatePartitions", deadline, attempt)
        self._raise_first(errors)

    # --- configs -------------------------------------------------------------------------

    async def _config_connection(self, resources: Iterable[ConfigResource]) -> BrokerConnection:
        """Broker configs are answered by that broker; topic configs by any."""
        brokers = {r.name for r in resources if r.type is not ConfigResourceType.TOPIC and r.name}
        if len(brokers) > 1:
            raise ValueError("broker configs of different brokers need separate calls")
        if brokers:
            await self._metadata()
            return await self._cluster.connection(int(brokers.pop()))
        return await self._cluster.any_connection()

    async def describe_configs(
        self, resources: Iterable[ConfigResource], *, include_synonyms: bool = False
    ) -> dict[ConfigResource, dict[str, ConfigEntry]]:
        """Every config of each resource, by name (DescribeConfigs)."""
        wanted = list(dict.fromkeys(resources))
        errors: list[KafkaError] = []

        async def attempt() -> dict[ConfigResource, dict[str, ConfigEntry]]:
            connection = await self._config_connection(wanted)
            body = {
                "resources": [
                    {"resource_type": r.type, "resource_name": r.name, "configuration_keys": None}
                    for r in wanted
                ],
                "include_synonyms": include_synonyms,
                "include_documentation": False,
            }
            response = await connection.request(DESCRIBE_CONFIGS.key, body)
            out: dict[ConfigResource, dict[str, ConfigEntry]] = {}
            errors.clear()
            answered: set[ConfigResource] = set()
            for result in response["results"]:
                resource = ConfigResource(
                    ConfigResourceType(result["resource_type"]), result["resource_name"]
                )
                answered.add(resource)
                error = self._entity_error(
                    result["error_code"], result.get("error_message"), str(resource)
                )
                if error is not None:
                    errors.append(error)
                    continue
                out[resource] = {
                    c["name"]: ConfigEntry(
                        name=c["name"],
                        value=c["value"],
                        source=_config_source(c),
                        read_only=c["read_only"],
                        is_sensitive=c["is_sensitive"],
                    )
                    for c in result["configs"]
                }
            errors.extend(unanswered("DescribeConfigs", [r for r in wanted if r not in answered]))
            return out

        described = await self._retrying("DescribeConfigs", self._deadline(None), attempt)
        self._raise_first(errors)
        return described

    async def alter_configs(
        self,
        changes: Mapping[ConfigResource, Mapping[str, str | None]],
        *,
        validate_only: bool = False,
    ) -> None:
        """Set configs (a None value deletes the config, restoring its default), leaving
        configs not named untouched (IncrementalAlterConfigs)."""
        pending = {resource: dict(values) for resource, values in changes.items()}
        errors: list[KafkaError] = []

        async def attempt() -> None:
            connection = await self._config_connection(pending)
            body = {
                "resources": [
                    {
                        "resource_type": resource.type,
                        "resource_name": resource.name,
                        "configs": [
                            {
                                "name": name,
                                "config_operation": int(
                                    AlterOperation.DELETE if value is None else AlterOperation.SET
                                ),
                                "value": value,
                            }
                            for name, value in values.items()
                        ],
                    }
                    for resource, values in pending.items()
                ],
                "validate_only": validate_only,
            }
            response = await connection.request(INCREMENTAL_ALTER_CONFIGS.key, body)
            errors.clear()
            answered: set[ConfigResource] = set()
            for result in response["responses"]:
                resource = ConfigResource(
                    ConfigResourceType(result["resource_type"]), result["resource_name"]
                )
                error = self._entity_error(
                    result["error_code"], result.get("error_message"), str(resource)
                )
                if error is not None:
                    errors.append(error)
                answered.add(resource)
            errors.extend(unanswered("IncrementalAlterConfigs", set(pending) - answered))

        if pending:
            await self._retrying("IncrementalAlterConfigs", self._deadline(None), attempt)
        self._raise_first(errors)

    # --- offsets and records -------------------------------------------------------------

    async def list_offsets(
        self,
        specs: Mapping[TopicPartition, OffsetSpec],
        *,
        isolation_level: Literal["read_uncommitted", "read_committed"] = "read_uncommitted",
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        """Offsets by spec: "earliest" (log start), "latest" (end; the last stable offset
        with read_committed), "max_timestamp", or a timestamp in ms."""
        timestamps = {
            TopicPartition(*tp): spec if isinstance(spec, int) else _SPEC_TIMESTAMPS[spec]
            for tp, spec in specs.items()
        }
        results = await list_offsets(
            self._cluster,
            timestamps,
            isolation_level=1 if isolation_level == "read_committed" else 0,
            deadline=self._deadline(None),
            rng=self._rng,
        )
        out: dict[TopicPartition, OffsetAndTimestamp] = {}
        for tp, result in results.items():
            if isinstance(result, KafkaError):
                raise result
            out[tp] = result
        return out

    async def delete_records(
        self, before_offsets: Mapping[TopicPartition, int], *, timeout_ms: int | None = None
    ) -> dict[TopicPartition, int]:
        """Delete each partition's records below the given offset (-1: below the high
        watermark); returns the new log start offsets (low watermarks)."""
        pending = {TopicPartition(*tp): offset for tp, offset in before_offsets.items()}
        deadline = self._deadline(timeout_ms)
        done: dict[TopicPartition, int] = {}
        errors: list[KafkaError] = []
        self._cluster.add_topics(tp.topic for tp in pending)

        async def attempt() -> None:
            metadata = await self._metadata()
            by_leader: dict[int, list[TopicPartition]] = {}
            for tp in pending:
                leader = metadata.leader_for(tp)
                if leader is None:
                    raise Retry(error_for_code(ErrorCode.LEADER_NOT_AVAILABLE, str(tp)))
                by_leader.setdefault(leader, []).append(tp)
            retry: list[KafkaError] = []
            for leader, partitions in by_leader.items():
                connection = await self._cluster.connection(leader)
                topics: dict[str, list[Message]] = {}
                for tp in partitions:
                    topics.setdefault(tp.topic, []).append(
                        {"partition_index": tp.partition, "offset": pending[tp]}
                    )
                body = {
                    "topics": [{"name": n, "partitions": p} for n, p in topics.items()],
                    "timeout_ms": self._broker_timeout_ms(deadline),
                }
                response = await connection.request(DELETE_RECORDS.key, body)
                for topic in response["topics"]:
                    for p in topic["partitions"]:
                        tp = TopicPartition(topic["name"], p["partition_index"])
                        if tp not in pending:
                            continue
                        code = p["error_code"]
                        if code == ErrorCode.NONE:
                            done[tp] = p["low_watermark"]
                            del pending[tp]
                            continue
                        error = error_for_code(code, f"DeleteRecords for {tp}")
                        if error.retriable:
                            retry.append(error)
                        else:
                            errors.append(error)
                            del pending[tp]
            if retry:
                raise Retry(retry[0])

        if pending:
            await self._retrying("DeleteRecords", deadline, attempt)
        self._raise_first(errors)
        return done

    # --- cluster -------------------------------------------------------------------------

    async def describe_cluster(self) -> ClusterDescription:
        """Cluster id, controller and brokers (DescribeCluster, or Metadata on brokers that
        lack it). Fenced brokers are included, marked `fenced`, where DescribeCluster v2
        is served; older versions and Metadata list the live brokers only."""

        async def attempt() -> ClusterDescription:
            connection = await self._cluster.any_connection()
            if connection.supports(DESCRIBE_CLUSTER.key):
                body = {
                    "include_cluster_authorized_operations": False,
                    "include_fenced_brokers": True,  # v2+; ignored below
                }
                response = await connection.request(DESCRIBE_CLUSTER.key, body)
                code = response["error_code"]
                if code != ErrorCode.NONE:
                    raise error_for_code(code, response.get("error_message"))
                # Below v2 `is_fenced` decodes as its default, False.
                brokers = [
                    BrokerInfo(b["broker_id"], b["host"], b["port"], b.get("rack"), b["is_fenced"])
                    for b in response["brokers"]
                ]
                return ClusterDescription(
                    response["cluster_id"], response["controller_id"], brokers
                )
            response = await self._fetch_metadata([])
            brokers = [
                BrokerInfo(b["node_id"], b["host"], b["port"], b.get("rack"))
                for b in response["brokers"]
            ]
            return ClusterDescription(
                response.get("cluster_id"), response.get("controller_id", -1), brokers
            )

        return await self._retrying("DescribeCluster", self._deadline(None), attempt)


def _creatable_topic(topic: NewTopic) -> Message:
    assignment = topic.replica_assignment
    return {
        "name": topic.name,
        "num_partitions": -1 if assignment else topic.num_partitions,
        "replication_factor": -1 if assignment else topic.replication_factor,
        "assignments": [
            {"partition_index": index, "broker_ids": list(brokers)}
            for index, brokers in sorted((assignment or {}).items())
        ],
        "configs": [{"name": k, "value": v} for k, v in topic.configs.items()],
    }


def _config_source(config: Message) -> ConfigSource:
    source = config.get("config_source", -1)
    if source in ConfigSource._value2member_map_:
        return ConfigSource(source)
    return ConfigSource.DEFAULT_CONFIG if config.get("is_default") else ConfigSource.UNKNOWN
