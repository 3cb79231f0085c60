"""ListOffsets: partition offsets by timestamp, from each partition's leader.

Kafka's special timestamps: `EARLIEST` (-2) is the log start offset, `LATEST` (-1) the end
offset (the high watermark, or the last stable offset under read_committed), and
`MAX_TIMESTAMP` (-3) the offset of the record with the largest timestamp. Any other value
asks for the first offset whose timestamp is at least that many ms since the epoch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import trio

from tidelog.client.cluster import Cluster
from tidelog.client.connection import backoff_s
from tidelog.client.errors import KafkaError, KafkaTimeoutError, error_for_code
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.data import LIST_OFFSETS
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition

EARLIEST = -2
LATEST = -1
MAX_TIMESTAMP = -3
MAX_TIMESTAMP_MIN_VERSION = 7


@dataclass(frozen=True, slots=True)
class OffsetAndTimestamp:
    """A ListOffsets answer; `offset` -1 means no record matches the timestamp."""

    offset: int
    timestamp_ms: int
    leader_epoch: int = -1


async def list_offsets(
    cluster: Cluster,
    timestamps: dict[TopicPartition, int],
    *,
    isolation_level: int,
    deadline: float,
    rng: random.Random,
) -> dict[TopicPartition, OffsetAndTimestamp | KafkaError]:
    """Ask each partition's leader; retriable errors (leader moved, connection lost) are
    retried with backoff until `deadline`, after which they become `KafkaTimeoutError`s.
    Returns an answer or a non-retriable error per partition."""
    results: dict[TopicPartition, OffsetAndTimestamp | KafkaError] = {}
    remaining = dict(timestamps)
    cluster.add_topics(tp.topic for tp in remaining)
    config = cluster.config
    attempt = 0
    last_error: KafkaError | None = None
    while remaining:
        if attempt == 0 and any(cluster.metadata.leader_for(tp) is None for tp in remaining):
            with trio.move_on_at(deadline):
                try:
                    await cluster.refresh(deadline)
                except KafkaError as exc:
                    last_error = exc
        by_leader: dict[int, list[TopicPartition]] = {}
        retry = False
        for tp in list(remaining):
            leader = cluster.metadata.leader_for(tp)
            if leader is not None:
                by_leader.setdefault(leader, []).append(tp)
            elif _missing(cluster, tp):
                results[tp] = error_for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(tp))
                del remaining[tp]
            else:
                retry = True
        async with trio.open_nursery() as nursery:
            for leader, partitions in by_leader.items():
                nursery.start_soon(
                    _ask_leader, cluster, leader, partitions, remaining, isolation_level, results
                )
        for tp in list(remaining):
            outcome = results.get(tp)
            if outcome is None:
                continue
            if isinstance(outcome, KafkaError) and outcome.retriable:
                last_error = outcome
                del results[tp]
                retry = True
            else:
                del remaining[tp]
        if not remaining:
            break
        if retry:
            attempt += 1
            cluster.request_update()
            wait = backoff_s(
                attempt, config.retry_backoff_ms, config.retry_backoff_max_ms, rng.uniform(-1, 1)
            )
            if trio.current_time() + wait >= deadline:
                for tp in remaining:
                    results[tp] = KafkaTimeoutError(
                        f"ListOffsets for {tp} did not succeed in time (last error: {last_error})"
                    )
                break
            await trio.sleep(wait)
    return results


def _missing(cluster: Cluster, tp: TopicPartition) -> bool:
    """Whether current metadata says the partition does not exist."""
    info = cluster.metadata.topics.get(tp.topic)
    if info is not None:
        return tp.partition not in info.partitions
    return cluster.metadata.topic_errors.get(tp.topic) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def _ask_leader(
    cluster: Cluster,
    leader: int,
    partitions: list[TopicPartition],
    timestamps: dict[TopicPartition, int],
    isolation_level: int,
    results: dict[TopicPartition, OffsetAndTimestamp | KafkaError],
) -> None:
    topics: dict[str, list[Message]] = {}
    for tp in partitions:
        topics.setdefault(tp.topic, []).append({
            "partition_index": tp.partition,
            "current_leader_epoch": cluster.metadata.leader_epoch(tp),
            "timestamp": timestamps[tp],
        })  # fmt: skip
    body = {
        "replica_id": -1,
        "isolation_level": isolation_level,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
        "timeout_ms": cluster.config.request_timeout_ms,
    }
    try:
        connection = await cluster.connection(leader)
        version = connection.api_version(LIST_OFFSETS.key)
        if version < MAX_TIMESTAMP_MIN_VERSION and any(
            timestamps[tp] == MAX_TIMESTAMP for tp in partitions
        ):
            raise error_for_code(ErrorCode.UNSUPPORTED_VERSION, "ListOffsets MAX_TIMESTAMP")
        response = await connection.request(LIST_OFFSETS.key, body, version=version)
    except KafkaError as exc:
        for tp in partitions:
            results[tp] = exc
        return
    for topic in response["topics"]:
        for p in topic["partitions"]:
            tp = TopicPartition(topic["name"], p["partition_index"])
            if tp not in timestamps:
                continue
            code = p["error_code"]
            if code != ErrorCode.NONE:
                if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH):
                    cluster.metadata.invalidate_leader(tp)
                results[tp] = error_for_code(code, f"ListOffsets for {tp}")
            else:
                results[tp] = OffsetAndTimestamp(p["offset"], p["timestamp"], p["leader_epoch"])
    for tp in partitions:
        results.setdefault(
            tp,
            error_for_code(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"ListOffsets response lacks {tp}"
            ),
        )
