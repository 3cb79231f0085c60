"""Produce (0): append record batches to partition logs.

- Only the partition's leader appends (NOT_LEADER_OR_FOLLOWER elsewhere, so clients
  refresh their metadata); it stamps its leader epoch on the batch.
- acks 0 (no response; a failed partition closes the connection, as Kafka does), 1 (the
  leader's append) and -1 (answered once the high watermark covers the batch: every
  in-sync replica has it; REQUEST_TIMED_OUT if that takes longer than the request's
  TimeoutMs, NOT_LEADER_OR_FOLLOWER if leadership moves meanwhile; on a single node the
  ISR is this broker, so the append commits at once); any other value gets
  INVALID_REQUIRED_ACKS everywhere. With acks=-1 a partition whose ISR is smaller than
  its `min.insync.replicas` refuses the batch (NOT_ENOUGH_REPLICAS) before appending, and
  one whose ISR shrinks below it while the batch waits answers
  NOT_ENOUGH_REPLICAS_AFTER_APPEND.
- `flush.messages` is honoured at append time, as in Kafka: a log that reaches it is fsynced
  (off the event loop) before the produce is answered, so with `flush.messages=1` an
  acknowledged record survives power loss. `flush.ms` is the flush ticker's.
- Each partition's records must be exactly one magic-2 batch (as Kafka requires from v3):
  a bad CRC or layout is CORRUPT_MESSAGE, the legacy formats UNSUPPORTED_FOR_MESSAGE_FORMAT,
  recordsCount != lastOffsetDelta + 1 or no records INVALID_RECORD, a batch over the
  topic's max.message.bytes MESSAGE_TOO_LARGE. Transactional and control batches are not
  accepted (no transaction coordinator): INVALID_RECORD.
- A topic with cleanup.policy=compact takes only records with keys (INVALID_RECORD
  otherwise, as in Kafka): its batches are the one place produce decodes records.
- Idempotent batches go through the partition's `ProducerStateTable`: a retried duplicate is
  answered with its original base offset and NONE; OUT_OF_ORDER_SEQUENCE_NUMBER and
  INVALID_PRODUCER_EPOCH are reported for that partition only.
- An unknown topic is created when `auto_create_topics_enable` is set, else
  UNKNOWN_TOPIC_OR_PARTITION. Errors are per partition; other partitions are unaffected.
"""

from __future__ import annotations

import logging

import trio

from tidelog.broker.controller.topics import TopicError
from tidelog.broker.replica_manager import AppendResult, Partition, PartitionError
from tidelog.broker.router import CloseConnection, RequestContext
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    ErrorCode,
    ProtocolError,
    UnsupportedMagicError,
)
from tidelog.client.protocol.records import BatchHeader, decode_batch, iter_batches
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

log = logging.getLogger(__name__)

VALID_ACKS = (0, 1, -1)


async def handle(ctx: RequestContext, request: Message) -> Message | None:
    acks: int = request["acks"]
    if acks not in VALID_ACKS:
        return error_response(request, ctx.api_version, ErrorCode.INVALID_REQUIRED_ACKS)
    deadline = trio.current_time() + max(request["timeout_ms"], 0) / 1000
    responses = []
    awaiting: list[tuple[Message, Partition, int]] = []
    failed = False
    missing: dict[str, PartitionError | None] = {}
    for topic_data in request["topic_data"]:
        name = topic_data["name"]
        if name not in missing and ctx.broker.image.topic(name) is None:
            missing[name] = await _ensure_topic(ctx, name)
    for topic_data in request["topic_data"]:
        name = topic_data["name"]
        partitions = []
        for partition_data in topic_data["partition_data"]:
            entry, appended = _produce_partition(
                ctx, name, partition_data, missing.get(name), all_replicas=acks == -1
            )
            failed |= entry["error_code"] != ErrorCode.NONE
            partitions.append(entry)
            if appended is not None:
                awaiting.append((entry, *appended))
        responses.append({"name": name, "partition_responses": partitions})
    for entry, partition, _ in awaiting:
        if partition.log.unflushed_messages >= partition.log.config.flush_messages:
            try:
                await ctx.broker.run_blocking(partition.log.flush)
            except StorageError as exc:
                entry.update(_partition_error(entry["index"], exc.error_code, str(exc)))
                failed = True
    if acks == 0:
        if failed:
            raise CloseConnection
        return None
    for entry, partition, last_offset in awaiting:
        if acks == -1 and entry["error_code"] == ErrorCode.NONE:
            code = await partition.wait_committed(last_offset, deadline)
            if code != ErrorCode.NONE:
                entry.update(_partition_error(entry["index"], code))
    return {"responses": responses, "throttle_time_ms": 0}


def _produce_partition(
    ctx: RequestContext,
    topic: str,
    partition_data: Message,
    creation: PartitionError | None,
    *,
    all_replicas: bool,
) -> tuple[Message, tuple[Partition, int] | None]:
    """(the partition's answer, (partition, last offset) if a batch was appended);
    `creation` is why the topic could not be created, if it had to be; `all_replicas`
    (acks=all) refuses the append while the ISR is below min.insync.replicas."""
    index: int = partition_data["index"]
    try:
        if creation is not None:
            raise creation
        partition, result = _append(
            ctx, topic, index, partition_data["records"], all_replicas=all_replicas
        )
    except PartitionError as exc:
        return _partition_error(index, exc.code, exc.message), None
    answer = _partition_ok(
        index, result.base_offset, result.log_append_time_ms, result.log_start_offset
    )
    return answer, (partition, result.last_offset)


async def _ensure_topic(ctx: RequestContext, topic: str) -> PartitionError | None:
    """Create a missing topic (if auto-creation is on); why it cannot be, if it cannot."""
    broker = ctx.broker
    if not broker.config.auto_create_topics_enable:
        return PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    try:
        await broker.topics.create_topic(topic)
    except TopicError as exc:
        if exc.error_code != ErrorCode.TOPIC_ALREADY_EXISTS:
            return PartitionError(exc.error_code, exc.message)
    except OSError:
        log.exception("auto-creating topic %r failed in storage", topic)
        return PartitionError(ErrorCode.KAFKA_STORAGE_ERROR)
    return None


def _single_batch(records: bytes | None) -> BatchHeader:
    if not records:
        raise PartitionError(ErrorCode.INVALID_RECORD, "no record batch")
    try:
        headers = list(iter_batches(records))
    except UnsupportedMagicError as exc:
        raise PartitionError(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, str(exc)) from None
    except CorruptMessageError as exc:
        raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    if len(headers) != 1:
        raise PartitionError(
            ErrorCode.INVALID_RECORD, f"expected exactly one record batch, got {len(headers)}"
        )
    header = headers[0]
    if header.records_count <= 0 or header.records_count != header.last_offset_delta + 1:
        raise PartitionError(
            ErrorCode.INVALID_RECORD,
            f"batch has {header.records_count} records, lastOffsetDelta {header.last_offset_delta}",
        )
    if header.is_control or header.is_transactional:
        raise PartitionError(
            ErrorCode.INVALID_RECORD, "transactional and control batches are not supported"
        )
    return header


def _check_keys(records: bytes) -> None:
    """Every record of the batch has a key: compaction keeps the latest record per key."""
    try:
        _, decoded = decode_batch(records)
    except ProtocolError as exc:
        raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    if any(record.key is None for record in decoded):
        raise PartitionError(
            ErrorCode.INVALID_RECORD, "a compacted topic takes only records with keys"
        )


def _append(
    ctx: RequestContext, topic: str, index: int, records: bytes | None, *, all_replicas: bool
) -> tuple[Partition, AppendResult]:
    found = ctx.broker.replicas.leader(topic, index)
    if isinstance(found, ErrorCode):
        raise PartitionError(found)
    header = _single_batch(records)
    if all_replicas:
        found.check_enough_replicas()
    assert records is not None
    if found.log.config.compaction_enabled:
        _check_keys(records)
    try:
        return found, found.append_as_leader(records, header, ctx.broker.now_ms())
    except UnsupportedMagicError as exc:
        raise PartitionError(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, str(exc)) from None
    except CorruptMessageError as exc:
        raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None


def _partition_ok(
    index: int, base_offset: int, log_append_time_ms: int, log_start_offset: int
) -> Message:
    return {
        "index": index,
        "error_code": int(ErrorCode.NONE),
        "base_offset": base_offset,
        "log_append_time_ms": log_append_time_ms,
        "log_start_offset": log_start_offset,
        "record_errors": [],
        "error_message": None,
    }


def _partition_error(index: int, code: ErrorCode, message: str | None = None) -> Message:
    return {
        "index": index,
        "error_code": int(code),
        "base_offset": -1,
        "log_append_time_ms": -1,
        "log_start_offset": -1,
        "record_errors": [],
        "error_message": message,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    """Every requested partition with `code`."""
    return {
        "responses": [
            {
                "name": topic["name"],
                "partition_responses": [
                    _partition_error(p["index"], code) for p in topic["partition_data"]
                ],
            }
            for topic in request["topic_data"]
        ],
        "throttle_time_ms": 0,
    }
