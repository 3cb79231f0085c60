"""The leader's side of the ISR: every `replica.lag.time.max.ms / 2`, and at once when a
follower's fetch shows it may join (`check_soon`), each partition this broker leads is
asked for an ISR change (`PartitionState.isr_change`: a follower that
stopped catching up leaves, one that caught up joins), and the changes go to the active
controller in one AlterPartition. A change takes effect when the controller commits it and
the image brings the partition's new ISR back (`ReplicaManager`); a refused one is dropped
and proposed again at the next check if it is still due.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.lifecycle import BrokerLifecycle
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.replica_manager import Partition, ReplicaManager
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.schema import Message

log = logging.getLogger(__name__)


class IsrManager:
    """See the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        replicas: ReplicaManager,
        lifecycle: BrokerLifecycle,
        image: Callable[[], MetadataImage],
        now_ms: Callable[[], int],
    ) -> None:
        self._config = config
        self._replicas = replicas
        self._lifecycle = lifecycle
        self._image = image
        self._now_ms = now_ms
        self._due = trio.Event()

    def check_soon(self) -> None:
        """Check now rather than at the next interval (a follower may join the ISR)."""
        self._due.set()

    async def serve(self) -> None:
        """Check every half lag time, or sooner when asked, until cancelled."""
        while True:
            with trio.move_on_after(self._config.replica_lag_time_max_ms / 2000):
                await self._due.wait()
            self._due = trio.Event()
            await self.check()

    async def check(self) -> int:
        """Propose the ISR changes that are due and apply the controller's answer; how many
        were proposed."""
        image = self._image()
        eligible = {
            b.node_id for b in image.brokers() if not b.fenced and not b.in_controlled_shutdown
        }
        now = self._now_ms()
        proposals: dict[uuid.UUID, list[tuple[Partition, tuple[int, ...]]]] = {}
        for partition in self._replicas.partitions():
            topic = image.topic(partition.topic)
            if topic is None:
                continue
            isr = partition.state.isr_change(now, self._config.replica_lag_time_max_ms, eligible)
            if isr is not None:
                proposals.setdefault(topic.topic_id, []).append((partition, isr))
        if not proposals:
            return 0
        answer = await self._lifecycle.alter_partition(self._request(image, proposals))
        self._settle(proposals, answer)
        return sum(len(p) for p in proposals.values())

    def _request(
        self,
        image: MetadataImage,
        proposals: dict[uuid.UUID, list[tuple[Partition, tuple[int, ...]]]],
    ) -> Message:
        def broker_epoch(broker_id: int) -> int:
            node = image.broker(broker_id)
            return node.broker_epoch if node is not None else -1

        return {
            "broker_id": self._config.node_id,
            "broker_epoch": self._lifecycle.broker_epoch,
            "topics": [
                {
                    "topic_id": topic_id,
                    "partitions": [
                        {
                            "partition_index": partition.index,
                            "leader_epoch": partition.state.leader_epoch,
                            "new_isr": list(isr),
                            "new_isr_with_epochs": [
                                {"broker_id": r, "broker_epoch": broker_epoch(r)} for r in isr
                            ],
                            "leader_recovery_state": 0,
                            "partition_epoch": partition.state.partition_epoch,
                        }
                        for partition, isr in changes
                    ],
                }
                for topic_id, changes in proposals.items()
            ],
        }

    def _settle(
        self,
        proposals: dict[uuid.UUID, list[tuple[Partition, tuple[int, ...]]]],
        answer: Message,
    ) -> None:
        """Drop what was refused; what was accepted stays pending until the image has it."""
        answered: dict[tuple[uuid.UUID, int], Message] = {
            (topic["topic_id"], p["partition_index"]): p
            for topic in answer.get("topics", [])
            for p in topic["partitions"]
        }
        for topic_id, changes in proposals.items():
            for partition, isr in changes:
                result = answered.get((topic_id, partition.index))
                error = (
                    ErrorCode(result["error_code"]) if result else ErrorCode(answer["error_code"])
                )
                state = partition.state
                if error is not ErrorCode.NONE:
                    log.info("ISR %s of %s-%d refused: %s", isr, *partition.key, error.name)
                    state.isr_change_failed()
                elif result is not None and result["partition_epoch"] <= state.partition_epoch:
                    state.isr_change_failed()  # nothing to wait for: the image has it already
                else:
                    log.info("ISR of %s-%d: %s", *partition.key, isr)
