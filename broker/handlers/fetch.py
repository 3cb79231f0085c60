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

A fetch with a ReplicaId (>= 0) is a follower's (`replica_fetcher`): it reads up to the log
end, not the high watermark; its fetch offset is the follower's log end offset, which the
leader records (`Partition.on_follower_fetch`: the high watermark and the ISR follow from
it); and its LastFetchedEpoch is checked against the leader's epoch cache (KIP-320's
inline form of OffsetForLeaderEpoch): when the follower's log has an epoch the leader's
does not, or goes on past where that epoch ends on the leader, the answer is only
DivergingEpoch = (the largest leader epoch <= LastFetchedEpoch, its end offset on the
leader), and the follower truncates before it fetches again. A ReplicaId that is not a
replica of the partition gets NOT_LEADER_OR_FOLLOWER.
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
    if request["replica_id"] >= 0:
        _record_followers(ctx, request)
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


def _record_followers(ctx: RequestContext, request: Message) -> None:
    """A follower's fetch offsets are its log end offsets: tell the partitions' states,
    and the ISR manager when one may now join the ISR."""
    replica_id: int = request["replica_id"]
    now_ms = ctx.broker.now_ms()
    for topic in request["topics"]:
        for fetch in topic["partitions"]:
            found = leader_partition(
                ctx, topic["topic"], fetch["partition"], fetch["current_leader_epoch"]
            )
            if isinstance(found, ErrorCode) or replica_id not in found.state.replicas:
                continue
            if _diverging(found, fetch) is None:
                found.on_follower_fetch(replica_id, fetch["fetch_offset"], now_ms)
                if found.state.pending_isr is None and found.state.may_join(replica_id):
                    ctx.broker.isr.check_soon()


def _diverging(partition: Partition, fetch: Message) -> tuple[int, int] | None:
    """(epoch, end offset) to send back as DivergingEpoch, or None if the follower's log
    agrees with the leader's up to its fetch offset."""
    last_fetched_epoch: int = fetch["last_fetched_epoch"]
    if last_fetched_epoch < 0:
        return None
    epoch, end_offset = partition.log.end_offset_for_epoch(last_fetched_epoch)
    if epoch < last_fetched_epoch or end_offset < fetch["fetch_offset"]:
        return epoch, end_offset
    return None


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
            entry = _read_partition(
                ctx, name, fetch, request["replica_id"], remaining_bytes, first=total_bytes == 0
            )
            records = entry["records"]
            if records is not EMPTY_RECORDS:
                total_bytes += records.nbytes
                remaining_bytes -= records.nbytes
            has_error |= entry["error_code"] != ErrorCode.NONE or "diverging_epoch" in entry
            partitions.append(entry)
        responses.append({"topic": name, "partitions": partitions})
    return responses, has_error or total_bytes >= request["min_bytes"]


def _read_partition(
    ctx: RequestContext,
    topic: str,
    fetch: Message,
    replica_id: int,
    remaining_bytes: int,
    *,
    first: bool,
) -> Message:
    index: int = fetch["partition"]
    found = leader_partition(ctx, topic, index, fetch["current_leader_epoch"])
    if isinstance(found, ErrorCode):
        return _partition_error(index, found)
    if replica_id >= 0 and replica_id not in found.state.replicas:
        return _partition_error(index, ErrorCode.NOT_LEADER_OR_FOLLOWER)
    partition_log = found.log
    high_watermark = found.high_watermark
    diverging = _diverging(found, fetch) if replica_id >= 0 else None
    if diverging is not None:
        return {
            **_partition_answer(index, high_watermark, partition_log.log_start_offset),
            "diverging_epoch": {"epoch": diverging[0], "end_offset": diverging[1]},
        }
    try:
        log_start_offset = partition_log.log_start_offset
        max_bytes = min(fetch["partition_max_bytes"], max(remaining_bytes, 0))
        records = partition_log.read(
            fetch["fetch_offset"],
            max_bytes,
            max_offset=None if replica_id >= 0 else high_watermark,
            min_one_batch=first,
        )
    except StorageError as exc:
        return _partition_error(index, exc.error_code, high_watermark_of=found)
    answer = _partition_answer(index, high_watermark, log_start_offset)
    if records is not None:
        answer["records"] = records
    return answer


def _partition_answer(index: int, high_watermark: int, log_start_offset: int) -> Message:
    return {
        "partition_index": index,
        "error_code": int(ErrorCode.NONE),
        "high_watermark": high_watermark,
        "last_stable_offset": high_watermark,
        "log_start_offset": log_start_offset,
        "aborted_transactions": [],
        "preferred_read_replica": NO_PREFERRED_READ_REPLICA,
        "records": EMPTY_RECORDS,
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
