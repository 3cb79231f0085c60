"""Cluster administration: the `Admin` calls on the cluster as a whole (`ClusterAdmin`):
the metadata quorum (DescribeQuorum) and leader elections (ElectLeaders, KIP-460), both
carried out by the active controller, to which any broker forwards them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tidelog.client.admin_base import AdminBase, Retry, unanswered
from tidelog.client.errors import KafkaError, error_for_code
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.admin import ELECT_LEADERS
from tidelog.client.protocol.messages.quorum import DESCRIBE_QUORUM
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import TopicPartition

ElectionType = Literal["preferred", "unclean"]
_ELECTION_TYPES: dict[ElectionType, int] = {"preferred": 0, "unclean": 1}
_QUORUM_PARTITION = TopicPartition("__cluster_metadata", 0)


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One member of the metadata quorum as its leader sees it (Kafka's
    QuorumInfo.ReplicaState). Timestamps are in ms on the leader's clock (Kafka's leaders
    use the wall clock), -1 when unknown."""

    replica_id: int
    log_end_offset: int
    last_fetch_timestamp: int = -1
    last_caught_up_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class QuorumDescription:
    """The KRaft metadata quorum (Kafka's QuorumInfo): its leader, the leader's epoch and
    high watermark, and the progress of each voter and observer."""

    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: list[ReplicaState] = field(default_factory=list)
    observers: list[ReplicaState] = field(default_factory=list)

    def lag(self, replica: ReplicaState) -> int:
        """How far `replica`'s log end is behind the high watermark (never negative)."""
        return max(self.high_watermark - replica.log_end_offset, 0)


@dataclass(frozen=True, slots=True)
class ElectionResult:
    """One partition's outcome: `error` None when a leader was elected; a
    BrokerResponseError with code ELECTION_NOT_NEEDED when the partition needed none."""

    partition: TopicPartition
    error: KafkaError | None


class ClusterAdmin(AdminBase):
    """See the module docstring."""

    async def elect_leaders(
        self,
        election_type: ElectionType = "preferred",
        partitions: Iterable[TopicPartition] | None = None,
        *,
        timeout_ms: int | None = None,
    ) -> list[ElectionResult]:
        """Elect leaders (ElectLeaders): `preferred` gives each partition's lead back to its
        first replica when it is alive and in sync; `unclean` elects a leader for a
        partition that has none, out of sync if it must. `partitions` None means every
        partition, and then only those that needed an election are reported."""
        wanted = None if partitions is None else list(dict.fromkeys(partitions))
        deadline = self._deadline(timeout_ms)

        async def attempt() -> list[ElectionResult]:
            connection = await self._controller()
            by_topic: dict[str, list[int]] = {}
            for tp in wanted or ():
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            body = {
                "election_type": _ELECTION_TYPES[election_type],
                "topic_partitions": None
                if wanted is None
                else [{"topic": t, "partitions": p} for t, p in by_topic.items()],
                "timeout_ms": self._broker_timeout_ms(deadline),
            }
            response = await connection.request(ELECT_LEADERS.key, body)
            code = response["error_code"]
            if code == ErrorCode.NOT_CONTROLLER:
                raise Retry(error_for_code(code))
            if code != ErrorCode.NONE:
                raise error_for_code(code)
            results = []
            for topic in response["replica_election_results"]:
                for result in topic["partition_result"]:
                    tp = TopicPartition(topic["topic"], result["partition_id"])
                    error = self._entity_error(
                        result["error_code"], result["error_message"], f"{tp.topic}-{tp.partition}"
                    )
                    if result["error_code"] == ErrorCode.NOT_CONTROLLER:
                        raise Retry(error_for_code(ErrorCode.NOT_CONTROLLER))
                    results.append(ElectionResult(tp, error))
            return results

        return await self._retrying("ElectLeaders", deadline, attempt)

    async def describe_quorum(self) -> QuorumDescription:
        """The metadata quorum, as its leader reports it (DescribeQuorum of
        `__cluster_metadata` partition 0, which any broker forwards to the active
        controller). Retries while the quorum has no leader or it moves; raises
        `IncompatibleBrokerError` if the broker does not serve DescribeQuorum."""
        tp = _QUORUM_PARTITION
        where = f"{tp.topic}-{tp.partition}"

        def replica(state: Message) -> ReplicaState:
            return ReplicaState(
                state["replica_id"],
                state["log_end_offset"],
                state["last_fetch_timestamp"],
                state["last_caught_up_timestamp"],
            )

        async def attempt() -> QuorumDescription:
            connection = await self._cluster.any_connection()
            body = {
                "topics": [
                    {"topic_name": tp.topic, "partitions": [{"partition_index": tp.partition}]}
                ]
            }
            response = await connection.request(DESCRIBE_QUORUM.key, body)
            code = response["error_code"]
            if code != ErrorCode.NONE:
                raise error_for_code(code, response["error_message"] or None)
            answered = [
                p
                for t in response["topics"]
                if t["topic_name"] == tp.topic
                for p in t["partitions"]
                if p["partition_index"] == tp.partition
            ]
            if not answered:
                raise unanswered("DescribeQuorum", [where])[0]
            partition = answered[0]
            error = self._entity_error(partition["error_code"], partition["error_message"], where)
            if error is not None:
                raise error
            return QuorumDescription(
                partition["leader_id"],
                partition["leader_epoch"],
                partition["high_watermark"],
                [replica(v) for v in partition["current_voters"]],
                [replica(o) for o in partition["observers"]],
            )

        return await self._retrying("DescribeQuorum", self._deadline(None), attempt)
