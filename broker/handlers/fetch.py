"""Fetch (1): read record batches from partition logs, with long polling.

- Only the partition's leader answers (NOT_LEADER_OR_FOLLOWER elsewhere). Each partition is
  read from its fetch offset up to the high watermark (what every in-sync replica holds)
  and at most PartitionMaxBytes; the whole response stays within MaxBytes, except that the
  first non-empty partition gets at least one whole batch (KIP-74).
- An offset outside [log start offset, log end offset] is OFFSET_OUT_OF_RANGE; an unknown
  topic or partition UNKNOWN_TOPIC_OR_PARTITION; a failed log KAFKA_STORAGE_ERROR.
- Long poll: while fewer than MinBytes are available (and no partition has an error), the
  request waits for the high watermark of one of its partitions to move, at most MaxWaitMs.
- Fetch sessions are declined (session id 0): clients then send full fetches. Without
  transactions LastStableOffset = HighWatermark and AbortedTransactions is empty.
- Records are `FileRange`s, sent by the connection with sendfile.
"""

from __future__ import annotations

import trio

from tidelog.broker.handlers.partitions import leader_partition
from tidelog.broker.replica_manager import Partition
from tidelog.broker.router import RequestContext
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

NO_PREFERRED_READ_REPLICA = -1


async def handle(ctx: RequestContext, request: Message) -> Message:
    deadline = trio.current_time() + max(request["max_wait_ms"], 0) / 1000
    keys: list[tuple[str, int]] = [
        (topic["topic"], partition["partition"])
        for topic in request["topics"]
        for partition in topic["partitions"]
    ]
    responses, ready = _read_all(ctx, request)
    # Bounded by the deadline: each turn ends with a high watermark move or at the
    # deadline. Reading and registering the watch happen with no checkpoint between them,
    # so no move is missed.
    while not ready and trio.current_time() < deadline:
        with ctx.broker.replicas.watch(keys) as changed, trio.move_on_at(deadline):
            await changed.wait()
        responses, ready = _read_all(ctx, request)
    return {
        "throttle_time_ms": 0,
        "error_code": int(ErrorCode.NONE),
        "session_id": 0,
        "responses": responses,
    }


EMPTY_RECORDS = b""
"""Sent where a partition has nothing to return: an empty record set, never null, which
librdkafka rejects ("invalid MessageSetSize -1"), as Kafka itself never sends null."""


def _read_all(ctx: RequestContext, request: Message) -> tuple[list[Message], bool]:
    """(topic responses, whether to answer now: MinBytes reached or a partition failed)."""
    remaining_bytes: int = request["max_bytes"]
    total_bytes = 0
    has_error = False
    responses = []
    for topic in request["topics"]:
        name: str = topic["topic"]
        partitions = []
        for fetch in topic["partitions"]:
            entry = _read_partition(ctx, name, fetch, remaining_bytes, first=total_bytes == 0)
            records = entry["records"]
            if records is not EMPTY_RECORDS:
                total_bytes += records.nbytes
                remaining_bytes -= records.nbytes
            has_error |= entry["error_code"] != ErrorCode.NONE
            partitions.append(entry)
        responses.append({"topic": name, "partitions": partitions})
    return responses, has_error or total_bytes >= request["min_bytes"]


def _read_partition(
    ctx: RequestContext, topic: str, fetch: Message, remaining_bytes: int, *, first: bool
) -> Message:
    index: int = fetch["partition"]
    found = leader_partition(ctx, topic, index, fetch["current_leader_epoch"])
    if isinstance(found, ErrorCode):
        return _partition_error(index, found)
    partition_log = found.log
    try:
        high_watermark = found.high_watermark
        log_start_offset = partition_log.log_start_offset
        max_bytes = min(fetch["partition_max_bytes"], max(remaining_bytes, 0))
        records = partition_log.read(
            fetch["fetch_offset"], max_bytes, max_offset=high_watermark, min_one_batch=first
        )
    except StorageError as exc:
        return _partition_error(index, exc.error_code, high_watermark_of=found)
    return {
        "partition_index": index,
        "error_code": int(ErrorCode.NONE),
        "high_watermark": high_watermark,
        "last_stable_offset": high_watermark,
        "log_start_offset": log_start_offset,
        "aborted_transactions": [],
        "preferred_read_replica": NO_PREFERRED_READ_REPLICA,
        "records": EMPTY_RECORDS if records is None else records,
    }


def _partition_error(
    index: int, code: ErrorCode, *, high_watermark_of: Partition | None = None
) -> Message:
    high_watermark = log_start_offset = -1
    if high_watermark_of is not None and code != ErrorCode.KAFKA_STORAGE_ERROR:
        high_watermark = high_watermark_of.high_watermark
        log_start_offset = high_watermark_of.log_start_offset
    return {
        "partition_index": index,
        "error_code": int(code),
        "high_watermark": high_watermark,
        "last_stable_offset": high_watermark,
        "log_start_offset": log_start_offset,
        "aborted_transactions": None,
        "preferred_read_replica": NO_PREFERRED_READ_REPLICA,
        "records": EMPTY_RECORDS,
    }


def error_response(request: Message, version: int, code: ErrorCode) -> Message:
    """Every requested partition with `code`."""
    return {
        "throttle_time_ms": 0,
        "error_code": int(ErrorCode.NONE),
        "session_id": 0,
        "responses": [
            {
                "topic": topic["topic"],
                "partitions": [_partition_error(p["partition"], code) for p in topic["partitions"]],
            }
            for topic in request["topics"]
        ],
    }
