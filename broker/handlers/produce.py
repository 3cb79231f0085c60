"""Produce (0): append record batches to partition logs.

- acks 0 (no response; a failed partition closes the connection, as Kafka does), 1 and -1
  (on a single node the ISR is this broker, so -1 is satisfied by the local append); any
  other value gets INVALID_REQUIRED_ACKS everywhere.
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

from tidelog.broker.data_path import DataPath
from tidelog.broker.router import CloseConnection, RequestContext
from tidelog.broker.topics import TopicError
from tidelog.client.protocol.errors import (
    CorruptMessageError,
    ErrorCode,
    ProtocolError,
    UnsupportedMagicError,
)
from tidelog.client.protocol.records import BatchHeader, TimestampType, decode_batch, iter_batches
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

log = logging.getLogger(__name__)

VALID_ACKS = (0, 1, -1)


class _PartitionError(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def handle(ctx: RequestContext, request: Message) -> Message | None:
    acks: int = request["acks"]
    if acks not in VALID_ACKS:
        return error_response(request, ctx.api_version, ErrorCode.INVALID_REQUIRED_ACKS)
    responses = []
    failed = False
    for topic_data in request["topic_data"]:
        name: str = topic_data["name"]
        partitions = []
        for partition_data in topic_data["partition_data"]:
            entry = _produce_partition(ctx, name, partition_data)
            failed |= entry["error_code"] != ErrorCode.NONE
            partitions.append(entry)
        responses.append({"name": name, "partition_responses": partitions})
    if acks == 0:
        if failed:
            raise CloseConnection
        return None
    return {"responses": responses, "throttle_time_ms": 0}


def _produce_partition(ctx: RequestContext, topic: str, partition_data: Message) -> Message:
    index: int = partition_data["index"]
    try:
        return _append(ctx, topic, index, partition_data["records"])
    except _PartitionError as exc:
        return _partition_error(index, exc.code, exc.message)


def _ensure_topic(ctx: RequestContext, topic: str) -> None:
    broker = ctx.broker
    if broker.cluster.topic(topic) is None:
        if not broker.config.auto_create_topics_enable:
            raise _PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        try:
            broker.topics.create_topic(topic)
        except TopicError as exc:
            if exc.error_code != ErrorCode.TOPIC_ALREADY_EXISTS:
                raise _PartitionError(exc.error_code, exc.message) from None
        except OSError:
            log.exception("auto-creating topic %r failed in storage", topic)
            raise _PartitionError(ErrorCode.KAFKA_STORAGE_ERROR) from None


def _single_batch(records: bytes | None) -> BatchHeader:
    if not records:
        raise _PartitionError(ErrorCode.INVALID_RECORD, "no record batch")
    try:
        headers = list(iter_batches(records))
    except UnsupportedMagicError as exc:
        raise _PartitionError(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, str(exc)) from None
    except CorruptMessageError as exc:
        raise _PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    if len(headers) != 1:
        raise _PartitionError(
            ErrorCode.INVALID_RECORD, f"expected exactly one record batch, got {len(headers)}"
        )
    header = headers[0]
    if header.records_count <= 0 or header.records_count != header.last_offset_delta + 1:
        raise _PartitionError(
            ErrorCode.INVALID_RECORD,
            f"batch has {header.records_count} records, lastOffsetDelta {header.last_offset_delta}",
        )
    if header.is_control or header.is_transactional:
        raise _PartitionError(
            ErrorCode.INVALID_RECORD, "transactional and control batches are not supported"
        )
    return header


def _check_keys(records: bytes) -> None:
    """Every record of the batch has a key: compaction keeps the latest record per key."""
    try:
        _, decoded = decode_batch(records)
    except ProtocolError as exc:
        raise _PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    if any(record.key is None for record in decoded):
        raise _PartitionError(
            ErrorCode.INVALID_RECORD, "a compacted topic takes only records with keys"
        )


def _append(ctx: RequestContext, topic: str, index: int, records: bytes | None) -> Message:
    _ensure_topic(ctx, topic)
    key = (topic, index)
    partition_log = ctx.broker.topics.log(topic, index)
    metadata = ctx.broker.cluster.topic(topic)
    partition = metadata.partition(index) if metadata is not None else None
    if partition_log is None or partition is None:
        raise _PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    header = _single_batch(records)
    assert records is not None
    if partition_log.config.compaction_enabled:
        _check_keys(records)
    data_path = DataPath.of(ctx.broker)
    try:
        producers = data_path.producer_state(key, partition_log)
    except StorageError as exc:
        raise _PartitionError(exc.error_code, str(exc)) from None
    verdict = producers.check(
        header.producer_id, header.producer_epoch, header.base_sequence, header.last_offset_delta
    )
    if verdict.duplicate_of is not None:
        log_append_time = (
            verdict.duplicate_of.timestamp_ms
            if partition_log.config.message_timestamp_type is TimestampType.LOG_APPEND_TIME
            else -1
        )
        return _partition_ok(
            index,
            verdict.duplicate_of.first_offset,
            log_append_time,
            partition_log.log_start_offset,
        )
    if verdict.error != ErrorCode.NONE:
        raise _PartitionError(verdict.error)
    try:
        info = partition_log.append(
            records, leader_epoch=partition.leader_epoch, log_append_time_ms=ctx.broker.now_ms()
        )
    except StorageError as exc:
        raise _PartitionError(exc.error_code, str(exc)) from None
    except UnsupportedMagicError as exc:
        raise _PartitionError(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT, str(exc)) from None
    except CorruptMessageError as exc:
        raise _PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    timestamp = info.log_append_time_ms if info.log_append_time_ms is not None else -1
    producers.record(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        info.first_offset,
        info.last_offset,
        timestamp if timestamp >= 0 else header.max_timestamp,
    )
    data_path.notify_append(key)
    return _partition_ok(index, info.first_offset, timestamp, info.log_start_offset)


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
