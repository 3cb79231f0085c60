"""A scripted in-memory Kafka peer for client unit tests.

It speaks the real wire format over trio memory streams (through `connect`, a client
`Connector`) and keeps just enough state to judge a producer: per-partition logs of decoded
records and, per (producer id, partition), the sequence ranges it appended, answering
retried duplicates with their original offsets and gaps with OUT_OF_ORDER_SEQUENCE_NUMBER,
as a Kafka broker does. Faults are scripted per Produce request (`produce_faults`).
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from tidelog.client.protocol.apis import API_BY_KEY, decode_request_header, encode_response_header
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Writer
from tidelog.client.protocol.records import (
    Record,
    assign_offsets,
    decode_batches,
    parse_batch_header,
)
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition


class Fault(enum.Enum):
    DROP_BEFORE_APPEND = "close the connection without appending"
    DROP_AFTER_APPEND = "append, then close the connection without answering"
    NOT_LEADER = "answer NOT_LEADER_OR_FOLLOWER without appending"
    HOLD = "append, then answer only when `release` is set"


class _Drop(Exception):
    pass


@dataclass
class _Appended:
    first_sequence: int
    last_sequence: int
    base_offset: int


@dataclass
class FakeBroker:
    topics: dict[str, int] = field(default_factory=lambda: {"t": 1})
    """Topic name -> partition count; every partition is led by node 0."""
    auto_create_partitions: int = 0
    """When > 0, Metadata asking for an unknown topic (with auto-creation allowed) creates
    it with this many partitions."""
    api_versions: dict[int, tuple[int, int]] = field(
        default_factory=lambda: {
            18: (0, 3),
            3: (0, 12),
            0: (3, 9),
            22: (0, 4),
            1: (4, 12),
            2: (1, 7),
            19: (2, 7),
            20: (1, 6),
            21: (0, 2),
            32: (1, 4),
            37: (0, 3),
            44: (0, 1),
            60: (0, 2),
            55: (0, 2),
            # librdkafka compresses with lz4 only when FindCoordinator v0 is offered.
            10: (0, 2),
        }
    )
    host: str = "fake"
    port: int = 9092
    logs: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    """Every record appended, by offset (Produce and `append_batch`)."""
    batches: dict[TopicPartition, list[bytes]] = field(default_factory=dict)
    """The appended batches with their offsets assigned, as Fetch returns them."""
    log_start: dict[TopicPartition, int] = field(default_factory=dict)
    aborted: dict[TopicPartition, list[tuple[int, int]]] = field(default_factory=dict)
    """(producer id, first offset) of aborted transactions, for read_committed fetches."""
    fetch_sizes: list[int] = field(default_factory=list)
    """Bytes of records returned by each Fetch response, per partition with data."""
    produce_faults: deque[Fault] = field(default_factory=deque)
    requests: list[tuple[int, int, Message]] = field(default_factory=list)
    release: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    refuse_connections: bool = False
    topic_configs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per-topic config overrides (CreateTopics configs, IncrementalAlterConfigs)."""
    init_producer_id_faults: deque[int] = field(default_factory=deque)
    """Error codes to answer the next InitProducerId requests with, one per request."""
    admin_faults: deque[int] = field(default_factory=deque)
    """Error codes to answer the next admin requests with, one per request, per entity."""
    _appended: dict[tuple[int, TopicPartition], deque[_Appended]] = field(default_factory=dict)
    _producer_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _nursery: trio.Nursery | None = None
    _streams: list[trio.abc.Stream] = field(default_factory=list)
    _appended_signal: trio.Event = field(default_factory=trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def serve_tcp(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Also accept real TCP connections on 127.0.0.1; reports the port (and takes it as
        `port`, so Metadata points clients back here)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.host, self.port = "127.0.0.1", listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve_connection, listeners)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        if (host, port) != (self.host, self.port) or self.refuse_connections:
            raise OSError(f"nothing listens on {host}:{port}")
        assert self._nursery is not None, "start FakeBroker.serve first"
        client, server = trio.testing.memory_stream_pair()
        self.connections += 1
        self._streams.append(server)
        self._nursery.start_soon(self._serve_connection, server)
        return client

    async def drop_connections(self) -> None:
        for stream in self._streams:
            await trio.aclose_forcefully(stream)
        self._streams.clear()

    def values(self, tp: TopicPartition) -> list[bytes | None]:
        return [r.value for r in self.logs.get(tp, [])]

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        decoder = FrameDecoder(64 * 1024 * 1024)
        try:
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                decoder.receive_data(data)
                while True:
                    frame = decoder.next_frame()
                    if frame is NEED_DATA:
                        break
                    response = await self._answer(frame)
                    if response is not None:
                        await stream.send_all(response)
        except (_Drop, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _answer(self, frame: bytes) -> bytes | None:
        header, reader = decode_request_header(frame)
        api = API_BY_KEY[header.api_key]
        version = header.api_version
        lowest, highest = self.api_versions.get(header.api_key, (0, -1))
        if header.api_key == 18 and version > highest:
            body = {"error_code": ErrorCode.UNSUPPORTED_VERSION, "api_keys": self._api_keys()}
            return _frame(api.key, 0, header.correlation_id, body)
        request = api.decode_request(reader, version)
        self.requests.append((header.api_key, version, request))
        assert lowest <= version <= highest, f"client sent {api.name} v{version}"
        if header.api_key == 0:
            fault = self.produce_faults.popleft() if self.produce_faults else None
            if fault is Fault.DROP_BEFORE_APPEND:
                raise _Drop
            if fault is Fault.NOT_LEADER:
                response = self._produce(request, error=ErrorCode.NOT_LEADER_OR_FOLLOWER)
            else:
                response = self._produce(request)
            if fault is Fault.DROP_AFTER_APPEND:
                raise _Drop
            if fault is Fault.HOLD:
                await self.release.wait()
        else:
            handlers: dict[int, Callable[[Message], Message]] = {
                18: lambda _: {"error_code": 0, "api_keys": self._api_keys()},
                3: self._metadata,
                22: self._init_producer_id,
                2: self._list_offsets,
                19: self._create_topics,
                20: self._delete_topics,
                21: self._delete_records,
                32: self._describe_configs,
                37: self._create_partitions,
                44: self._alter_configs,
                60: self._describe_cluster,
                55: self._describe_quorum,
                10: self._find_coordinator,
            }
            if header.api_key == 1:
                response = await self._fetch(request)
            else:
                response = handlers[header.api_key](request)
        if response is None:
            return None
        return _frame(api.key, version, header.correlation_id, response)

    def _api_keys(self) -> list[Message]:
        return [
            {"api_key": key, "min_version": lo, "max_version": hi}
            for key, (lo, hi) in sorted(self.api_versions.items())
        ]

    def _metadata(self, request: Message) -> Message:
        names = self.topics if request["topics"] is None else [t["name"] for t in request["topics"]]
        topics = []
        for name in names:
            if (
                name not in self.topics
                and self.auto_create_partitions
                and request["allow_auto_topic_creation"]
            ):
                self.topics[name] = self.auto_create_partitions
            count = self.topics.get(name)
            if count is None:
                topics.append({"error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "name": name})
                continue
            topics.append(
                {
                    "error_code": 0,
                    "name": name,
                    "partitions": [
                        {
                            "error_code": 0,
                            "partition_index": p,
                            "leader_id": 0,
                            "leader_epoch": 0,
                            "replica_nodes": [0],
                            "isr_nodes": [0],
                        }
                        for p in range(count)
                    ],
                }
            )
        return {
            "brokers": [{"node_id": 0, "host": self.host, "port": self.port}],
            "cluster_id": "fake",
            "controller_id": 0,
            "topics": topics,
        }

    def _admin_fault(self) -> int:
        return self.admin_faults.popleft() if self.admin_faults else 0

    def _create_topics(self, request: Message) -> Message:
        fault = self._admin_fault()
        results = []
        for topic in request["topics"]:
            name = topic["name"]
            code = fault or (ErrorCode.TOPIC_ALREADY_EXISTS if name in self.topics else 0)
            if not code and not request["validate_only"]:
                count = topic["num_partitions"]
                self.topics[name] = 1 if count == -1 else count
                self.topic_configs[name] = {c["name"]: c["value"] for c in topic["configs"]}
            results.append({"name": name, "error_code": code, "error_message": None})
        return {"topics": results}

    def _delete_topics(self, request: Message) -> Message:
        fault = self._admin_fault()
        results = []
        names = request["topic_names"] or [t["name"] for t in request["topics"]]
        for name in names:
            code = fault or (0 if name in self.topics else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            if not code:
                del self.topics[name]
            results.append({"name": name, "error_code": code})
        return {"responses": results}

    def _create_partitions(self, request: Message) -> Message:
        fault = self._admin_fault()
        results = []
        for topic in request["topics"]:
            name, count = topic["name"], topic["count"]
            code = fault
            if not code and name not in self.topics:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif not code and count <= self.topics[name]:
                code = ErrorCode.INVALID_PARTITIONS
            if not code and not request["validate_only"]:
                self.topics[name] = count
            results.append({"name": name, "error_code": code, "error_message": None})
        return {"results": results}

    DEFAULT_TOPIC_CONFIGS = {"retention.ms": "604800000", "cleanup.policy": "delete"}

    def _describe_configs(self, request: Message) -> Message:
        results = []
        for resource in request["resources"]:
            name = resource["resource_name"]
            if name not in self.topics:
                results.append(
                    {
                        "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        "error_message": None,
                        "resource_type": 2,
                        "resource_name": name,
                        "configs": [],
                    }
                )
                continue
            overrides = self.topic_configs.get(name, {})
            configs = [
                {
                    "name": key,
                    "value": overrides.get(key, default),
                    "read_only": False,
                    "config_source": 1 if key in overrides else 5,
                    "is_sensitive": False,
                }
                for key, default in self.DEFAULT_TOPIC_CONFIGS.items()
            ]
            results.append(
                {
                    "error_code": 0,
                    "error_message": None,
                    "resource_type": 2,
                    "resource_name": name,
                    "configs": configs,
                }
            )
        return {"results": results}

    def _alter_configs(self, request: Message) -> Message:
        responses = []
        for resource in request["resources"]:
            name = resource["resource_name"]
            code = 0 if name in self.topics else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if not code and not request["validate_only"]:
                overrides = self.topic_configs.setdefault(name, {})
                for config in resource["configs"]:
                    if config["config_operation"] == 1:
                        overrides.pop(config["name"], None)
                    else:
                        overrides[config["name"]] = config["value"]
            responses.append(
                {
                    "error_code": code,
                    "error_message": None,
                    "resource_type": 2,
                    "resource_name": name,
                }
            )
        return {"responses": responses}

    def _delete_records(self, request: Message) -> Message:
        topics = []
        for topic in request["topics"]:
            partitions = []
            for p in topic["partitions"]:
                tp = TopicPartition(topic["name"], p["partition_index"])
                end = self.end_offset(tp)
                offset = end if p["offset"] == -1 else p["offset"]
                if offset > end:
                    partitions.append(
                        {
                            "partition_index": tp.partition,
                            "low_watermark": -1,
                            "error_code": ErrorCode.OFFSET_OUT_OF_RANGE,
                        }
                    )
                    continue
                self.log_start[tp] = max(self.log_start.get(tp, 0), offset)
                partitions.append(
                    {
                        "partition_index": tp.partition,
                        "low_watermark": self.log_start[tp],
                        "error_code": 0,
                    }
                )
            topics.append({"name": topic["name"], "partitions": partitions})
        return {"topics": topics}

    def _describe_cluster(self, request: Message) -> Message:
        """Node 0, and a fenced node 1 when asked for fenced brokers (v2)."""
        brokers: list[Message] = [{"broker_id": 0, "host": self.host, "port": self.port}]
        if request["include_fenced_brokers"]:
            brokers.append({"broker_id": 1, "host": "fenced", "port": 9093, "is_fenced": True})
        return {"error_code": 0, "cluster_id": "fake", "controller_id": 0, "brokers": brokers}

    def _describe_quorum(self, request: Message) -> Message:
        """Voters 0 (the leader) and 1, observer 2; `admin_faults` answer per partition."""

        def partition(index: int) -> Message:
            return {
                "partition_index": index,
                "error_code": self._admin_fault(),
                "leader_id": 0,
                "leader_epoch": 3,
                "high_watermark": 120,
                "current_voters": [
                    {"replica_id": 0, "log_end_offset": 120, "last_fetch_timestamp": 5},
                    {"replica_id": 1, "log_end_offset": 118},
                ],
                "observers": [{"replica_id": 2, "log_end_offset": 125}],
            }

        topics = [
            {
                "topic_name": t["topic_name"],
                "partitions": [partition(p["partition_index"]) for p in t["partitions"]],
            }
            for t in request["topics"]
        ]
        return {"error_code": 0, "topics": topics}

    def _find_coordinator(self, request: Message) -> Message:
        return {"error_code": 0, "node_id": 0, "host": self.host, "port": self.port}

    def _init_producer_id(self, request: Message) -> Message:
        if self.init_producer_id_faults:
            code = self.init_producer_id_faults.popleft()
            return {"error_code": code, "producer_id": -1, "producer_epoch": -1}
        return {"error_code": 0, "producer_id": next(self._producer_ids), "producer_epoch": 0}

    def _produce(self, request: Message, error: int = 0) -> Message | None:
        responses = []
        for topic in request["topic_data"]:
            partitions = []
            for data in topic["partition_data"]:
                tp = TopicPartition(topic["name"], data["index"])
                code, base_offset = (error, -1) if error else self._append(tp, data["records"])
                partitions.append(
                    {
                        "index": tp.partition,
                        "error_code": code,
                        "base_offset": base_offset,
                        "log_append_time_ms": -1,
                    }
                )
            responses.append({"name": topic["name"], "partition_responses": partitions})
        if request["acks"] == 0:
            return None
        return {"responses": responses}

    def end_offset(self, tp: TopicPartition) -> int:
        return len(self.logs.get(tp, []))

    def append_batch(self, tp: TopicPartition, batch: bytes) -> int:
        """Append an encoded batch as is (any producer id, control or transactional);
        returns its base offset."""
        log = self.logs.setdefault(tp, [])
        base_offset = len(log)
        buf = bytearray(batch)
        assign_offsets(buf, 0, base_offset)
        ((header, records),) = list(decode_batches(bytes(buf)))
        log.extend(records)
        while len(log) < header.next_offset:  # offsets of compacted-away records
            log.append(Record(len(log), 0, None, None, ()))
        self.batches.setdefault(tp, []).append(bytes(buf))
        self._appended_signal.set()
        self._appended_signal = trio.Event()
        return base_offset

    def _list_offsets(self, request: Message) -> Message:
        topics = []
        for topic in request["topics"]:
            partitions = []
            for p in topic["partitions"]:
                tp = TopicPartition(topic["name"], p["partition_index"])
                if tp.topic not in self.topics:
                    partitions.append(
                        {
                            "partition_index": tp.partition,
                            "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        }
                    )
                    continue
                offset = self.log_start.get(tp, 0) if p["timestamp"] == -2 else self.end_offset(tp)
                partitions.append(
                    {
                        "partition_index": tp.partition,
                        "error_code": 0,
                        "timestamp": -1,
                        "offset": offset,
                    }
                )
            topics.append({"name": topic["name"], "partitions": partitions})
        return {"topics": topics}

    async def _fetch(self, request: Message) -> Message:
        def has_data() -> bool:
            return any(
                p["fetch_offset"] < self.end_offset(TopicPartition(t["topic"], p["partition"]))
                for t in request["topics"]
                for p in t["partitions"]
            )

        if not has_data():
            with trio.move_on_after(request["max_wait_ms"] / 1000):
                while not has_data():
                    await self._appended_signal.wait()
        responses = []
        for topic in request["topics"]:
            partitions = []
            for p in topic["partitions"]:
                tp = TopicPartition(topic["topic"], p["partition"])
                end = self.end_offset(tp)
                start = self.log_start.get(tp, 0)
                offset = p["fetch_offset"]
                data: Message = {
                    "partition_index": tp.partition,
                    "high_watermark": end,
                    "last_stable_offset": end,
                    "log_start_offset": start,
                }
                if not start <= offset <= end:
                    data["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
                    partitions.append(data)
                    continue
                chosen = b""
                for batch in self.batches.get(tp, []):
                    if parse_batch_header(batch).next_offset <= offset:
                        continue
                    if chosen and len(chosen) + len(batch) > p["partition_max_bytes"]:
                        break
                    chosen += batch
                if chosen:
                    self.fetch_sizes.append(len(chosen))
                data["error_code"] = 0
                data["records"] = chosen
                data["aborted_transactions"] = (
                    [
                        {"producer_id": pid, "first_offset": first}
                        for pid, first in self.aborted.get(tp, [])
                    ]
                    if request["isolation_level"] == 1
                    else None
                )
                partitions.append(data)
            responses.append({"topic": topic["topic"], "partitions": partitions})
        return {"responses": responses}

    def _append(self, tp: TopicPartition, records: memoryview) -> tuple[int, int]:
        header = parse_batch_header(records)
        if header.producer_id >= 0:
            history = self._appended.setdefault((header.producer_id, tp), deque(maxlen=5))
            for seen in history:
                if seen.first_sequence == header.base_sequence:
                    return 0, seen.base_offset
            expected = history[-1].last_sequence + 1 if history else 0
            if header.base_sequence != expected:
                return ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1
            base_offset = self.end_offset(tp)
            history.append(_Appended(header.base_sequence, header.last_sequence, base_offset))
        return 0, self.append_batch(tp, bytes(records))


def _frame(api_key: int, version: int, correlation_id: int, body: Message) -> bytes:
    api = API_BY_KEY[api_key]
    w = Writer()
    encode_response_header(w, api, version, correlation_id)
    api.encode_response(w, body, version)
    payload = w.getvalue()
    return len(payload).to_bytes(4, "big") + payload
