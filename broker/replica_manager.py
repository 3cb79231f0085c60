"""The local replicas: one `Partition` per partition this broker holds a replica of.

A `Partition` owns one replica: its `PartitionLog`, its producer state (rebuilt from the
log's batch headers on first use, so it survives restarts without snapshots), the tasks
waiting on it (fetch long polls, acks=all produces), and its pure `PartitionState` (role,
leader epoch, ISR, high watermark). Everything that asks "what is committed" asks the
partition's high watermark, never the log's end.

The `ReplicaManager` follows the metadata image: it subscribes to the `MetadataPublisher`
and, for this node's changes, creates partitions and makes them leader or follower, applies
topic config changes to their logs, and deletes the logs of replicas it no longer holds.
Only a leader serves produce and fetch (`leader`); the others answer
NOT_LEADER_OR_FOLLOWER so that clients refresh their metadata. A partition whose log cannot
be opened is offline (KAFKA_STORAGE_ERROR) until the next metadata change for it.

A restarted broker replays the metadata log before it registers, and that image may still
make it the leader of a leader epoch its previous process led (a restart within the session
timeout leaves the old registration unfenced). It must not take that leadership: its high
watermark would start again from zero within the epoch, and after a power cut its log may
lack records of that epoch that the followers have, which the divergence check would then
make them truncate. So, given this process's `incarnation_id`, the replica manager leads
nothing until the image registers that incarnation — as Kafka's broker applies metadata to
its replicas only once its own registration is caught up. The registration of a new
incarnation moves every leadership of the old one away (`controller.brokers`), and the
broker leads again under new leader epochs; until then the partitions it would lead are
followers without a leader.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.metadata.delta import LocalChanges, LocalPartitionChange, PartitionKey
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.metadata.records import LeaderRecoveryState
from tidelog.broker.partition.state import PartitionState
from tidelog.broker.producer_state import ProducerStateTable
from tidelog.broker.topic_config import log_config, topic_config_value
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.records import BatchHeader, TimestampType
from tidelog.storage.errors import StorageError
from tidelog.storage.log import PartitionLog
from tidelog.storage.log_directory import LogDirectory

log = logging.getLogger(__name__)

NO_LEADER_EPOCH = -1
NO_LEADER = -1


class PartitionError(Exception):
    """A partition-level request that fails with `code` (what the client gets)."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where a produced batch went: its offsets, the LogAppendTime stamped (-1 for
    CreateTime) and the log start offset after the append."""

    base_offset: int
    last_offset: int
    log_append_time_ms: int
    log_start_offset: int


class Partition:
    """One local replica (see module docstring)."""

    def __init__(self, topic: str, index: int, log: PartitionLog, state: PartitionState) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.state = state
        self._producers: ProducerStateTable | None = None
        self._changed = trio.Event()
        self.watchers: dict[trio.Event, None] = {}
        """Events of fetches waiting on this partition (`ReplicaManager.watch`), in the
        order they registered (a dict, so that wake-ups replay in simulations)."""

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.index)

    @property
    def high_watermark(self) -> int:
        return self.state.high_watermark

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.state.log_end_offset

    @property
    def latest_epoch(self) -> int | None:
        """The leader epoch of the log's last batch (None without one): a follower's
        LastFetchedEpoch. An epoch that starts at the log end holds no batch and does not
        count: this replica took it as leader and lost the leadership before appending.
        The leader never had that epoch; named in a fetch it would make the leader answer
        DivergingEpoch at this log's end, where there is nothing to cut, fetch after fetch
        (Kafka drops such an entry when a truncation reaches the log end)."""
        end = self.log.log_end_offset
        for entry in reversed(self.log.epoch_entries):
            if entry.start_offset < end:
                return entry.epoch
        return None

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= `epoch` in the log, where it ends), or (-1, -1)."""
        return self.log.end_offset_for_epoch(epoch)

    def producer_state(self) -> ProducerStateTable:
        """The idempotent producers' table, rebuilt from the log when first asked for."""
        if self._producers is None:
            table = ProducerStateTable()
            for header in self.log.batches_from(self.log.log_start_offset):
                if header.producer_id >= 0 and not header.is_control:
                    table.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.base_offset,
                        header.last_offset,
                        header.max_timestamp,
                    )
            self._producers = table
        return self._producers

    def append_as_leader(self, records: bytes, header: BatchHeader, now_ms: int) -> AppendResult:
        """Append one validated batch (its `header`) as the leader, stamping the leader
        epoch; a retried idempotent batch is answered with its first append's offsets.
        Raises PartitionError: NOT_LEADER_OR_FOLLOWER, OUT_OF_ORDER_SEQUENCE_NUMBER,
        INVALID_PRODUCER_EPOCH, and the storage's codes."""
        if not self.state.is_leader:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        log_append_time = self.log.config.message_timestamp_type is TimestampType.LOG_APPEND_TIME
        try:
            producers = self.producer_state()
        except StorageError as exc:
            raise PartitionError(exc.error_code, str(exc)) from None
        verdict = producers.check(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.last_offset_delta,
        )
        if verdict.duplicate_of is not None:
            first = verdict.duplicate_of
            return AppendResult(
                first.first_offset,
                first.first_offset + header.last_offset_delta,
                first.timestamp_ms if log_append_time else -1,
                self.log.log_start_offset,
            )
        if verdict.error != ErrorCode.NONE:
            raise PartitionError(verdict.error)
        try:
            info = self.log.append(
                records, leader_epoch=self.state.leader_epoch, log_append_time_ms=now_ms
            )
        except StorageError as exc:
            raise PartitionError(exc.error_code, str(exc)) from None
        timestamp = info.log_append_time_ms if info.log_append_time_ms is not None else -1
        producers.record(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            info.first_offset,
            info.last_offset,
            timestamp if timestamp >= 0 else header.max_timestamp,
        )
        self.on_log_changed()
        return AppendResult(info.first_offset, info.last_offset, timestamp, info.log_start_offset)

    def append_as_follower(self, records: memoryview) -> None:
        """Append batches copied from the leader as they are (offsets, epochs, producer
        fields); idempotent producers' batches enter the producer table, so that this
        replica answers retries correctly once it leads. Raises StorageError."""
        info = self.log.append_as_follower(records)
        if self._producers is not None:
            for header in info.batches or ():
                if header.producer_id >= 0 and not header.is_control:
                    self._producers.record(
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.base_offset,
                        header.last_offset,
                        header.max_timestamp,
                    )
        self.on_log_changed()

    def after_truncation(self) -> None:
        """The log lost its tail (or was restarted elsewhere): the producer table is rebuilt
        from what is left when next needed."""
        self._producers = None
        self.on_log_changed()

    def on_leader_high_watermark(self, high_watermark: int) -> None:
        """Follower: take the leader's high watermark (capped at the local log end)."""
        if self.state.on_leader_high_watermark(high_watermark):
            self.wake()

    def on_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> None:
        """Leader: a follower fetched from `fetch_offset`; acks=all waiters and consumers
        waiting on the high watermark are woken if it moved."""
        if self.state.on_follower_fetch(replica_id, fetch_offset, now_ms):
            self.wake()

    def check_enough_replicas(self) -> None:
        """Before an acks=all append: NOT_ENOUGH_REPLICAS while the ISR is smaller than
        `min.insync.replicas`."""
        state = self.state
        if len(state.isr) < state.min_insync_replicas:
            raise PartitionError(
                ErrorCode.NOT_ENOUGH_REPLICAS,
                f"{len(state.isr)} in-sync replicas, min.insync.replicas is "
                f"{state.min_insync_replicas}",
            )

    def on_log_changed(self) -> None:
        """The log was appended to or truncated: update the state and wake the waiters
        (a fetch that reads up to the high watermark then finds it may not have moved, and
        waits again)."""
        self.state.on_log_end_offset(self.log.log_end_offset)
        self.wake()

    def wake(self) -> None:
        """Wake everyone waiting on this partition (its log or high watermark moved, or its
        role changed)."""
        self._changed.set()
        self._changed = trio.Event()
        for event in self.watchers:
            event.set()

    async def wait_committed(self, last_offset: int, deadline: float) -> ErrorCode:
        """Wait until the high watermark passes `last_offset` (acks=all): NONE; or until
        `deadline` (trio time): REQUEST_TIMED_OUT; or until this broker stops leading the
        epoch the append was made in: NOT_LEADER_OR_FOLLOWER; or until the ISR shrinks
        below `min.insync.replicas`, which stops the high watermark:
        NOT_ENOUGH_REPLICAS_AFTER_APPEND (the record is in the leader's log, not committed;
        a retry of an idempotent batch finds it there)."""
        epoch = self.state.leader_epoch
        while self.state.high_watermark <= last_offset:
            if not self.state.is_leader or self.state.leader_epoch != epoch:
                return ErrorCode.NOT_LEADER_OR_FOLLOWER
            if len(self.state.isr) < self.state.min_insync_replicas:
                return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
            with trio.move_on_at(deadline):
                await self._changed.wait()
                continue
            return ErrorCode.REQUEST_TIMED_OUT
        return ErrorCode.NONE


class ReplicaManager:
    """See the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        log_directory: LogDirectory,
        *,
        now_ms: Callable[[], int],
        incarnation_id: uuid.UUID | None = None,
    ) -> None:
        self.config = config
        self._now_ms = now_ms
        self.node_id = config.node_id
        self.log_directory = log_directory
        self.incarnation_id = incarnation_id
        """This process's broker registration: nothing is led until the image has it
        (module docstring). None: leaderships are taken as the image gives them."""
        self._registered = False
        """Whether the image has registered `incarnation_id` (once, for good)."""
        self._partitions: dict[PartitionKey, Partition] = {}
        self._offline: dict[PartitionKey, str] = {}

    # -- reads

    def partition(self, topic: str, index: int) -> Partition | None:
        """The local replica of a partition, leader or not."""
        return self._partitions.get((topic, index))

    def log(self, topic: str, index: int) -> PartitionLog | None:
        """The log of the local replica of a partition, if there is one."""
        partition = self._partitions.get((topic, index))
        return partition.log if partition is not None else None

    def partitions(self) -> Iterator[Partition]:
        return iter(list(self._partitions.values()))

    def leader(
        self, topic: str, index: int, current_leader_epoch: int = NO_LEADER_EPOCH
    ) -> Partition | ErrorCode:
        """The partition if this broker leads it, else the error to answer.

        UNKNOWN_TOPIC_OR_PARTITION without a local replica, KAFKA_STORAGE_ERROR when its
        log is offline, NOT_LEADER_OR_FOLLOWER on a follower; a `current_leader_epoch` other
        than -1 must equal the leader epoch, else FENCED_LEADER_EPOCH (the client's is
        older) or UNKNOWN_LEADER_EPOCH (newer)."""
        key = (topic, index)
        partition = self._partitions.get(key)
        if partition is None:
            if key in self._offline:
                return ErrorCode.KAFKA_STORAGE_ERROR
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        epoch = partition.state.leader_epoch
        if current_leader_epoch != NO_LEADER_EPOCH and current_leader_epoch != epoch:
            if current_leader_epoch < epoch:
                return ErrorCode.FENCED_LEADER_EPOCH
            return ErrorCode.UNKNOWN_LEADER_EPOCH
        if not partition.state.is_leader:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        return partition

    def logs(self) -> Iterator[tuple[PartitionKey, PartitionLog]]:
        """Every local replica's log, for the storage services (flush, retention, cleaner)."""
        for partition in self.partitions():
            yield partition.key, partition.log

    @contextmanager
    def watch(self, keys: Iterable[PartitionKey]) -> Iterator[trio.Event]:
        """An event set at the next log end offset or high watermark move or role change
        of any of `keys` that has a local replica, while the context is open. Register
        before the last read, with no checkpoint in between, and no change is missed."""
        event = trio.Event()
        watched = [p for p in map(self._partitions.get, dict.fromkeys(keys)) if p is not None]
        for partition in watched:
            partition.watchers[event] = None
        try:
            yield event
        finally:
            for partition in watched:
                partition.watchers.pop(event, None)

    # -- metadata

    def on_metadata_update(self, changes: LocalChanges, image: MetadataImage) -> None:
        """Follow the image (see module docstring)."""
        for key in changes.removed:
            self._remove(key)
        if not self._registered and self._registers_this_process(image):
            self._registered = True
            # Take the leaderships held back while the image was a previous process's.
            changes = dataclasses.replace(
                changes, leaders=tuple(self._withheld_leaderships(changes, image))
            )
        for change in changes.leaders:
            self._become(change, leader=self._registered)
        for change in changes.followers:
            self._become(change, leader=False)
        for topic in changes.configs_changed:
            config = log_config(self.config, topic.configs)
            for partition_metadata in topic.partitions:
                partition = self._partitions.get((topic.name, partition_metadata.partition_index))
                if partition is not None:
                    partition.log.update_config(config)
                    partition.state.min_insync_replicas = self._min_insync_replicas(topic.configs)
                    partition.wake()

    def _registers_this_process(self, image: MetadataImage) -> bool:
        if self.incarnation_id is None:
            return True
        broker = image.broker(self.node_id)
        return broker is not None and broker.incarnation_id == self.incarnation_id

    def _withheld_leaderships(
        self, changes: LocalChanges, image: MetadataImage
    ) -> Iterator[LocalPartitionChange]:
        """`changes.leaders`, and every partition the image has this node lead that it
        does not lead yet."""
        yield from changes.leaders
        changed = {change.key for change in changes.leaders}
        for topic in image.topics():
            for metadata in topic.partitions:
                key = (topic.name, metadata.partition_index)
                partition = self._partitions.get(key)
                if (
                    metadata.leader_id == self.node_id
                    and key not in changed
                    and (partition is None or not partition.state.is_leader)
                ):
                    yield LocalPartitionChange(topic, metadata)

    def _min_insync_replicas(self, overrides: Mapping[str, str]) -> int:
        value = topic_config_value(self.config, overrides, "min.insync.replicas")
        assert isinstance(value, int)
        return value

    def delete_strays(self, image: MetadataImage) -> None:
        """Delete the logs no replica of the image owns: a topic deletion cut short by a
        crash, or a replica that moved away while this broker was down."""
        for (topic, index), _ in list(self.log_directory):
            metadata = image.partition(topic, index)
            if metadata is None or self.node_id not in metadata.replicas:
                log.warning("deleting the log of %s-%d: not a replica of a topic", topic, index)
                self._partitions.pop((topic, index), None)
                self.log_directory.delete(topic, index)

    def _become(self, change: LocalPartitionChange, *, leader: bool) -> None:
        key = change.key
        metadata = change.partition
        partition = self._partitions.get(key)
        if partition is None:
            try:
                partition_log = self.log_directory.get_or_create(
                    key[0], key[1], log_config(self.config, change.topic.configs)
                )
            except (OSError, StorageError) as exc:
                log.error("cannot open the log of %s-%d: %s", *key, exc)
                self._offline[key] = str(exc)
                return
            self._offline.pop(key, None)
            partition = Partition(key[0], key[1], partition_log, PartitionState(self.node_id))
            self._partitions[key] = partition
        state = partition.state
        state.min_insync_replicas = self._min_insync_replicas(change.topic.configs)
        state.recovering = metadata.leader_recovery_state == LeaderRecoveryState.RECOVERING
        log_end_offset = partition.log.log_end_offset
        if not leader and metadata.leader_id == self.node_id:
            metadata = dataclasses.replace(metadata, leader_id=NO_LEADER)  # not registered yet
        if leader:
            latest_epoch = partition.log.latest_epoch
            if latest_epoch is None or metadata.leader_epoch > latest_epoch:
                # Kafka's makeLeader: the epoch starts at the log end, even before the
                # first append, so followers' divergence checks see where it begins.
                partition.log.assign_epoch(metadata.leader_epoch, log_end_offset)
            state.become_leader(
                leader_epoch=metadata.leader_epoch,
                partition_epoch=metadata.partition_epoch,
                replicas=metadata.replicas,
                isr=metadata.isr,
                log_end_offset=log_end_offset,
                now_ms=self._now_ms(),
            )
        else:
            state.become_follower(
                leader_id=metadata.leader_id,
                leader_epoch=metadata.leader_epoch,
                partition_epoch=metadata.partition_epoch,
                replicas=metadata.replicas,
                isr=metadata.isr,
                log_end_offset=log_end_offset,
            )
        partition.wake()

    def _remove(self, key: PartitionKey) -> None:
        self._offline.pop(key, None)
        partition = self._partitions.pop(key, None)
        if partition is not None:
            partition.state.become_follower(
                leader_id=-1,
                leader_epoch=partition.state.leader_epoch,
                partition_epoch=partition.state.partition_epoch,
                replicas=(),
                isr=(),
                log_end_offset=partition.log_end_offset,
            )
            partition.wake()
        self.log_directory.delete(*key)
