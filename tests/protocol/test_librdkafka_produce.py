"""A real librdkafka producer's bytes decode with our codec, record for record.

A minimal listener on 127.0.0.1, written here with the codec alone (no broker code), answers
ApiVersions, Metadata (one broker, itself; the topic with one partition it leads) and
Produce (success). confluent-kafka's Producer sends records with keys, values, headers and
explicit timestamps, once per compression codec; every Produce request is decoded with the
codec and `decode_batches`, and each record must come back exactly as it was produced.

Two version profiles: the classic one (Produce 3-8, Metadata 0-8, the ranges
every client handles) and the flexible one (everything the codec declares, so librdkafka
picks its newest Produce and Metadata: compact encodings and tagged fields).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import pytest
import trio

from tidelog.client.protocol.apis import API_BY_KEY, decode_request_header, encode_response_header
from tidelog.client.protocol.compression import Compression
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.framing import NEED_DATA, FrameDecoder
from tidelog.client.protocol.primitives import Writer
from tidelog.client.protocol.records import BatchHeader, Record, decode_batches
from tidelog.client.protocol.schema import Message

TOPIC = "interop-records"
TOPIC_ID = uuid.UUID("6f1c2a9e-3b7d-4e58-9a0c-2d4b6e8f1a3c")
NODE_ID = 1
RECORD_COUNT = 20
TIMESTAMP_BASE_MS = 1_700_000_000_000

API_VERSIONS, METADATA, PRODUCE, FETCH, FIND_COORDINATOR = 18, 3, 0, 1, 10

# librdkafka infers features from the advertised ranges: message format v2 needs Produce 3
# and Fetch 4, LZ4 needs FindCoordinator 0, zstd Produce 7 and Fetch 10. A plain producer
# never sends Fetch or FindCoordinator, so they are advertised and not served.
NOT_SERVED = {FETCH: (4, 12), FIND_COORDINATOR: (0, 2)}
CLASSIC = {API_VERSIONS: (0, 3), METADATA: (0, 8), PRODUCE: (3, 8), **NOT_SERVED}
FLEXIBLE = {
    API_VERSIONS: (0, 3),
    METADATA: (0, API_BY_KEY[METADATA].valid.highest),
    PRODUCE: (3, API_BY_KEY[PRODUCE].valid.highest),
    **NOT_SERVED,
}

RUN_TIMEOUT_S = 30
FLUSH_TIMEOUT_S = 20.0
FLUSH_STEP_S = 0.05
READS_PER_CONNECTION_MAX = 100_000
"""Bounds each connection's receive loop; a producer of 20 records needs a handful."""


@dataclass(frozen=True)
class SentRecord:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


def records_to_send() -> list[SentRecord]:
    """Keys, null keys, values, null values, headers with empty and null values, and
    timestamps that go backwards as well as forwards."""
    out: list[SentRecord] = []
    for i in range(RECORD_COUNT):
        key = None if i % 5 == 0 else f"key-{i}".encode()
        value = None if i % 7 == 3 else (f"value {i} " * (1 + i)).encode()
        headers: list[tuple[str, bytes | None]] = [("index", str(i).encode()), ("empty", b"")]
        if i % 4 == 0:
            headers.append(("null", None))
        if i % 6 == 1:
            headers.append(("bin\u00e4ry", bytes(range(256))))
        timestamp_ms = TIMESTAMP_BASE_MS + 1000 * i - 7 * (i % 3)
        out.append(SentRecord(key, value, tuple(headers), timestamp_ms))
    return out


@dataclass
class ProduceCall:
    request: Message
    batches: list[tuple[BatchHeader, list[Record]]]


@dataclass
class FakeBroker:
    """Answers the three APIs a producer needs, by our codec alone; remembers what came."""

    advertised: dict[int, tuple[int, int]]
    port: int = 0
    produce_calls: list[ProduceCall] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    versions_used: dict[int, set[int]] = field(default_factory=dict)
    next_offset: int = 0
    failed: threading.Event = field(default_factory=threading.Event)

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """Serve one client connection until the client closes it; a failure is recorded
        (and stops the producer) rather than raised, so the test reports it at once."""
        try:
            await self._serve(stream)
        except trio.BrokenResourceError:
            pass  # the client hung up, e.g. when the producer is destroyed mid-request
        except Exception as exc:
            self.unexpected.append(f"{type(exc).__name__}: {exc}")
            self.failed.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(max_frame_bytes=16 * 1024 * 1024)
        async with stream:
            for _ in range(READS_PER_CONNECTION_MAX):
                data = await stream.receive_some(65536)
                if not data:
                    return
                decoder.receive_data(data)
                for _ in range(len(data)):
                    frame = decoder.next_frame()
                    if frame is NEED_DATA:
                        break
                    assert isinstance(frame, bytes)
                    response = self.answer(frame)
                    if response is not None:
                        await stream.send_all(response)
            self.unexpected.append("connection exceeded its read budget")

    def answer(self, frame: bytes) -> bytes | None:
        header, r = decode_request_header(frame)
        key, version = header.api_key, header.api_version
        self.versions_used.setdefault(key, set()).add(version)
        if key == API_VERSIONS and version > self.advertised[API_VERSIONS][1]:
            # A version we do not speak: error 35 in the v0 layout, and the client retries.
            body = self.api_versions_body(ErrorCode.UNSUPPORTED_VERSION)
            return self.frame(key, 0, header.correlation_id, body)
        lo, hi = self.advertised.get(key, (1, 0))
        if key in NOT_SERVED or not lo <= version <= hi:
            self.unexpected.append(f"API {key} v{version} (not advertised)")
            return None
        api = API_BY_KEY[key]
        request = api.decode_request(r, version)
        assert r.remaining == 0, f"API {key} v{version}: {r.remaining} bytes left undecoded"
        if key == API_VERSIONS:
            body = self.api_versions_body(ErrorCode.NONE)
        elif key == METADATA:
            body = self.metadata_body(request)
        else:
            body = self.produce_body(request)
            if request["acks"] == 0:
                return None
        return self.frame(key, version, header.correlation_id, body)

    def frame(self, key: int, version: int, correlation_id: int, body: Message) -> bytes:
        api = API_BY_KEY[key]
        w = Writer()
        encode_response_header(w, api, version, correlation_id)
        api.encode_response(w, body, version)
        payload = w.getvalue()
        return len(payload).to_bytes(4, "big") + payload

    def api_versions_body(self, error: ErrorCode) -> Message:
        return {
            "error_code": int(error),
            "api_keys": [
                {"api_key": k, "min_version": lo, "max_version": hi}
                for k, (lo, hi) in sorted(self.advertised.items())
            ],
        }

    def metadata_body(self, request: Message) -> Message:
        names = [TOPIC] if request["topics"] is None else [t["name"] for t in request["topics"]]
        topics = []
        for name in names:
            if name not in (TOPIC, None):
                self.unexpected.append(f"metadata for topic {name!r}")
                continue
            topics.append(
                {
                    "error_code": 0,
                    "name": TOPIC,
                    "topic_id": TOPIC_ID,
                    "partitions": [
                        {
                            "error_code": 0,
                            "partition_index": 0,
                            "leader_id": NODE_ID,
                            "leader_epoch": 0,
                            "replica_nodes": [NODE_ID],
                            "isr_nodes": [NODE_ID],
                        }
                    ],
                }
            )
        return {
            "brokers": [{"node_id": NODE_ID, "host": "127.0.0.1", "port": self.port}],
            "cluster_id": "tidelog-codec-test",
            "controller_id": NODE_ID,
            "topics": topics,
        }

    def produce_body(self, request: Message) -> Message:
        batches: list[tuple[BatchHeader, list[Record]]] = []
        responses = []
        for topic in request["topic_data"]:
            if topic["name"] != TOPIC and topic["topic_id"] != TOPIC_ID:
                self.unexpected.append(f"produce to {topic['name']!r} / {topic['topic_id']}")
            partitions = []
            for partition in topic["partition_data"]:
                base_offset = self.next_offset
                for header, records in decode_batches(partition["records"]):
                    batches.append((header, records))
                    self.next_offset += len(records)
                partitions.append(
                    {
                        "index": partition["index"],
                        "error_code": 0,
                        "base_offset": base_offset,
                        "log_start_offset": 0,
                    }
                )
            responses.append(
                {
                    "name": topic["name"],
                    "topic_id": topic["topic_id"],
                    "partition_responses": partitions,
                }
            )
        self.produce_calls.append(ProduceCall(request, batches))
        return {"responses": responses}


@dataclass
class ProducerOutcome:
    errors: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """Offsets in delivery reports, as librdkafka read them from our Produce responses."""


def run_producer(
    port: int, codec: str, sent: list[SentRecord], give_up: threading.Event
) -> ProducerOutcome:
    """Produce `sent` with confluent-kafka (blocking; runs in a worker thread), in two rounds
    so that there are several Produce requests. Stops early once `give_up` is set. The
    producer is destroyed before this returns."""
    outcome = ProducerOutcome()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            outcome.errors.append(str(err))
        else:
            outcome.offsets.append(msg.offset())

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "compression.type": codec,
            "acks": 1,
            "linger.ms": 20,
            "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000),
            "enable.idempotence": False,
            "log_level": 3,
        }
    )
    half = len(sent) // 2
    for round_records in (sent[:half], sent[half:]):
        for record in round_records:
            producer.produce(
                TOPIC,
                value=record.value,
                key=record.key,
                headers=list(record.headers),
                timestamp=record.timestamp_ms,
                partition=0,
                on_delivery=on_delivery,
            )
        if not flush(producer, give_up):
            outcome.errors.append("records still queued after flushing")
            break
    del producer
    return outcome


def flush(producer: confluent_kafka.Producer, give_up: threading.Event) -> bool:
    """Flush in short steps so that a failure on the listener's side ends the wait."""
    for _ in range(int(FLUSH_TIMEOUT_S / FLUSH_STEP_S)):
        if producer.flush(FLUSH_STEP_S) == 0:
            return True
        if give_up.is_set():
            return False
    return False


CODECS = [
    ("none", Compression.NONE),
    ("gzip", Compression.GZIP),
    ("snappy", Compression.SNAPPY),
    ("lz4", Compression.LZ4),
    ("zstd", Compression.ZSTD),
]


@pytest.mark.parametrize(("codec_name", "codec"), CODECS, ids=[c[0] for c in CODECS])
@pytest.mark.parametrize("profile", ["classic", "flexible"])
async def test_librdkafka_produce_requests_decode(
    codec_name: str, codec: Compression, profile: str
) -> None:
    broker = FakeBroker(advertised=CLASSIC if profile == "classic" else FLEXIBLE)
    sent = records_to_send()
    with trio.fail_after(RUN_TIMEOUT_S):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        broker.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, broker.serve_connection, listeners)
            outcome = await trio.to_thread.run_sync(
                run_producer, broker.port, codec_name, sent, broker.failed
            )
            nursery.cancel_scope.cancel()

    assert broker.unexpected == []
    assert outcome.errors == []
    assert sorted(outcome.offsets) == list(range(RECORD_COUNT))
    assert len(broker.produce_calls) >= 2
    if profile == "classic":
        assert broker.versions_used[PRODUCE] == {CLASSIC[PRODUCE][1]}
    else:
        assert all(API_BY_KEY[PRODUCE].is_flexible(v) for v in broker.versions_used[PRODUCE])
        assert all(API_BY_KEY[METADATA].is_flexible(v) for v in broker.versions_used[METADATA])

    batches = [b for call in broker.produce_calls for b in call.batches]
    for call in broker.produce_calls:
        assert call.request["acks"] == 1
        assert call.request["transactional_id"] is None
    got = [
        SentRecord(r.key, r.value, r.headers, r.timestamp_ms)
        for _, records in batches
        for r in records
    ]
    assert got == sent

    for header, records in batches:
        assert header.compression is codec
        assert header.producer_id == -1
        assert header.base_timestamp == records[0].timestamp_ms
        assert header.max_timestamp == max(r.timestamp_ms for r in records)
        assert header.records_count == len(records)
        # Offsets within a produced batch are deltas from 0; the broker assigns the base.
        assert [r.offset - header.base_offset for r in records] == list(range(len(records)))
