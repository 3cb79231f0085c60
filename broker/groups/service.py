"""The trio driver of the group coordinator: requests in, appends written, responses out.

One `GroupService` per broker owns the pure `GroupCoordinator` and is its only caller.
Handlers call `await service.call(invoke)`: `invoke(request_id, now_ms)` runs one core
call; its `Output` is carried out at once — each `Append` becomes one record batch appended
to its `__consumer_offsets` partition (as leader, through the same `PartitionLog` as any
produce) and its outcome is reported back with `append_completed`; every response goes to
the handler waiting for its request id. `serve` runs the core's timers (session expiry,
rebalance and join deadlines, offset retention) by calling `tick` at `next_deadline_ms`.

The `__consumer_offsets` topic is created on the first FindCoordinator for a group (as
Kafka does) with `offsets_topic_num_partitions` partitions, compaction, and
`offsets_topic_replication_factor` replicas (capped by the brokers alive then), and loaded:
each partition's records are replayed into the core before its groups are served (until
then they answer COORDINATOR_LOAD_IN_PROGRESS). At startup an existing topic is loaded the
same way, one partition at a time, yielding to the event loop in between. A partition is
replayed to its log end: on the broker that now leads it, that log is what the partition
holds (its followers truncate to it).

The coordinator follows leadership: it loads the partitions this broker comes to lead and
unloads those it stops leading (their groups' requests then get NOT_COORDINATOR, and the
clients find the new coordinator). Its appends are acks=all writes: refused while the ISR
is below `min.insync.replicas`, and reported to the core only once the high watermark
covers them (or, after `OFFSET_COMMIT_TIMEOUT_MS`, as REQUEST_TIMED_OUT; or
NOT_LEADER_OR_FOLLOWER once leadership moved), so a committed offset is in every in-sync
replica before its commit is answered. On a single node the high watermark moves with the
append, and the outcome is reported at once.

Time: the core runs on the broker's wall clock (`broker.now_ms`), since its deadlines and
the timestamps it writes into records are the same clock, as in Kafka.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.topics import TopicError
from tidelog.broker.groups.config import GroupConfig
from tidelog.broker.groups.coordinator import GroupCoordinator
from tidelog.broker.groups.effects import Append, Output, RequestId
from tidelog.broker.metadata.delta import LocalChanges
from tidelog.broker.metadata.image import MetadataImage
from tidelog.broker.replica_manager import Partition, PartitionError, ReplicaManager
from tidelog.client.protocol.errors import ErrorCode, ProtocolError
from tidelog.client.protocol.records import (
    RecordInput,
    decode_batches,
    encode_batch,
    parse_batch_header,
)
from tidelog.client.protocol.schema import Message
from tidelog.storage.errors import StorageError

if TYPE_CHECKING:
    from tidelog.broker.topics import TopicManager


class GroupServiceHost(Protocol):
    """What the group service uses of its broker (`now_ms`: wall-clock milliseconds)."""

    @property
    def config(self) -> BrokerConfig: ...

    @property
    def image(self) -> MetadataImage: ...

    @property
    def topics(self) -> TopicManager: ...

    @property
    def replicas(self) -> ReplicaManager: ...

    @property
    def random(self) -> random.Random: ...

    @property
    def now_ms(self) -> Callable[[], int]: ...


log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSET_COMMIT_TIMEOUT_MS = 5000
"""Kafka's offsets.commit.timeout.ms: how long an append may wait for its replicas."""
LOAD_READ_BYTES = 1024 * 1024
"""How much of a `__consumer_offsets` partition one read takes while loading."""

Invoke = Callable[[RequestId, int], Output]


def group_config(c: BrokerConfig) -> GroupConfig:
    return GroupConfig(
        offsets_topic_num_partitions=c.offsets_topic_num_partitions,
        group_initial_rebalance_delay_ms=c.group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=c.group_min_session_timeout_ms,
        group_max_session_timeout_ms=c.group_max_session_timeout_ms,
        group_max_size=c.group_max_size,
        offset_metadata_max_bytes=c.offset_metadata_max_bytes,
        offsets_retention_minutes=c.offsets_retention_minutes,
        offsets_retention_check_interval_ms=c.offsets_retention_check_interval_ms,
    )


@dataclass(frozen=True, slots=True)
class _Uncommitted:
    """An append in the log, waiting for the high watermark to pass `last_offset`."""

    append_id: int
    last_offset: int
    leader_epoch: int
    deadline: float
    """trio time."""


class _Waiter:
    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: Message | None = None


class GroupService:
    """See the module docstring."""

    def __init__(self, broker: GroupServiceHost) -> None:
        self._broker = broker
        self.core = GroupCoordinator(group_config(broker.config), rng=broker.random)
        self._request_ids = itertools.count()
        self._waiters: dict[RequestId, _Waiter] = {}
        self._next_deadline_ms: int | None = None
        self._deadline_changed = trio.Event()
        self._partitions = self.core.config.offsets_topic_num_partitions
        self._uncommitted: dict[int, deque[_Uncommitted]] = {}
        self._uncommitted_added = trio.Event()

    # -- the offsets topic

    async def offsets_topic_ready(self) -> bool:
        """Create and load `__consumer_offsets` if needed; False if it cannot be created."""
        topics = self._broker.topics
        if self._broker.image.topic(OFFSETS_TOPIC) is None:
            try:
                live_brokers = len(self._broker.image.unfenced_brokers())
                await topics.create_topic(
                    OFFSETS_TOPIC,
                    num_partitions=self._partitions,
                    replication_factor=max(
                        1, min(self._broker.config.offsets_topic_replication_factor, live_brokers)
                    ),
                    configs={
                        "cleanup.policy": "compact",
                        "segment.bytes": str(self._broker.config.offsets_topic_segment_bytes),
                    },
                )
            except TopicError as exc:
                if exc.error_code is not ErrorCode.TOPIC_ALREADY_EXISTS:  # created meanwhile
                    log.error("cannot create %s: %s", OFFSETS_TOPIC, exc)
                    return False
            except OSError as exc:
                log.error("cannot create %s: %s", OFFSETS_TOPIC, exc)
                return False
        for partition in range(self._partitions):
            self._load(partition)
        return True

    def on_metadata_update(self, changes: LocalChanges, image: MetadataImage) -> None:
        """Coordinate the groups of the `__consumer_offsets` partitions this broker now
        leads; give up those it no longer leads (their requests get NOT_COORDINATOR)."""
        for change in changes.leaders:
            if change.topic.name == OFFSETS_TOPIC:
                self._load(change.partition.partition_index)
        lost = [c.key for c in changes.followers] + list(changes.removed)
        for topic, partition in lost:
            if topic == OFFSETS_TOPIC:
                self._unload(partition)

    def _load(self, partition: int) -> None:
        """Replay one partition's records into the core (blocking reads of its log), unless
        it is loaded already or this broker does not lead it."""
        if self.core.is_loaded(partition) or self.core.is_loading(partition):
            return
        found = self._broker.replicas.leader(OFFSETS_TOPIC, partition)
        if isinstance(found, ErrorCode):
            return
        partition_log = found.log
        self.core.begin_load(partition)
        offset = partition_log.log_start_offset
        end = found.log_end_offset
        try:
            while offset < end:
                chunk = partition_log.read(offset, LOAD_READ_BYTES, max_offset=end)
                if chunk is None:
                    break
                for header, records in decode_batches(chunk.read_bytes()):
                    offset = header.last_offset + 1
                    if header.is_control:
                        continue
                    self.core.replay(
                        partition, ((r.key, r.value) for r in records if r.key is not None)
                    )
        except (StorageError, ProtocolError) as exc:
            # A partition that cannot be read stays unserved (NOT_COORDINATOR): serving its
            # groups from partial state would hand out stale generations and offsets.
            log.error("cannot load %s-%d: %s", OFFSETS_TOPIC, partition, exc)
            self.core.unload(partition, self._broker.now_ms())
            return
        self._carry_out(self.core.complete_load(partition, self._broker.now_ms()))

    def partition_leader(self, group_id: str) -> int | None:
        """The node leading the group's `__consumer_offsets` partition, if it has one."""
        topic = self._broker.image.topic(OFFSETS_TOPIC)
        if topic is None:
            return None
        metadata = topic.partition(self.core.partition_for(group_id))
        return metadata.leader_id if metadata is not None and metadata.leader_id >= 0 else None

    # -- requests

    async def call(self, invoke: Invoke) -> Message:
        """Run one core call for a request and wait for its response."""
        request_id = next(self._request_ids)
        waiter = self._waiters[request_id] = _Waiter()
        try:
            self._carry_out(invoke(request_id, self._broker.now_ms()))
            await waiter.done.wait()
        finally:
            del self._waiters[request_id]
        assert waiter.response is not None
        return waiter.response

    def _carry_out(self, output: Output) -> None:
        pending: deque[Output] = deque([output])
        while pending:
            current = pending.popleft()
            for request_id, response in current.responses:
                waiter = self._waiters.get(request_id)
                if waiter is not None:  # else its connection went away meanwhile
                    waiter.response = response
                    waiter.done.set()
            for append in current.appends:
                written = self._write(append)
                if isinstance(written, ErrorCode):
                    outcome = self.core.append_completed(append.append_id, written, self._now())
                    pending.append(outcome)
                    continue
                partition, last_offset = written
                queue = self._uncommitted.setdefault(append.partition, deque())
                if not queue and partition.high_watermark > last_offset:
                    outcome = self.core.append_completed(
                        append.append_id, ErrorCode.NONE, self._now()
                    )
                    pending.append(outcome)
                    continue
                deadline = trio.current_time() + OFFSET_COMMIT_TIMEOUT_MS / 1000
                queue.append(
                    _Uncommitted(
                        append.append_id, last_offset, partition.state.leader_epoch, deadline
                    )
                )
                self._uncommitted_added.set()
            self._set_deadline(current.next_deadline_ms)

    def _now(self) -> int:
        return self._broker.now_ms()

    def _write(self, append: Append) -> ErrorCode | tuple[Partition, int]:
        """Append as the leader: (the partition, the append's last offset), or why not."""
        found = self._broker.replicas.leader(OFFSETS_TOPIC, append.partition)
        if isinstance(found, ErrorCode):
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        now_ms = self._now()
        records = [
            RecordInput(key=r.key, value=r.value, timestamp_ms=now_ms) for r in append.records
        ]
        batch = encode_batch(records)
        try:
            found.check_enough_replicas()
            result = found.append_as_leader(batch, parse_batch_header(batch), now_ms)
        except PartitionError as exc:
            log.error("append to %s-%d failed: %s", OFFSETS_TOPIC, append.partition, exc)
            return exc.code
        return found, result.last_offset

    def _settle_uncommitted(self) -> None:
        """Report the appends whose fate is known, oldest first in each partition."""
        now = trio.current_time()
        for partition_index, queue in self._uncommitted.items():
            while queue:
                head = queue[0]
                found = self._broker.replicas.partition(OFFSETS_TOPIC, partition_index)
                if (
                    found is None
                    or not found.state.is_leader
                    or found.state.leader_epoch != head.leader_epoch
                ):
                    error = ErrorCode.NOT_LEADER_OR_FOLLOWER
                elif found.high_watermark > head.last_offset:
                    error = ErrorCode.NONE
                elif now >= head.deadline:
                    error = ErrorCode.REQUEST_TIMED_OUT
                else:
                    break
                queue.popleft()
                self._carry_out(self.core.append_completed(head.append_id, error, self._now()))

    async def _report_commits(self) -> None:
        """Report appends as the high watermark passes them (or time runs out), until
        cancelled."""
        while True:
            self._settle_uncommitted()
            waiting = [p for p, queue in self._uncommitted.items() if queue]
            deadline = min((self._uncommitted[p][0].deadline for p in waiting), default=math.inf)
            self._uncommitted_added = trio.Event()
            keys = [(OFFSETS_TOPIC, p) for p in waiting]
            with self._broker.replicas.watch(keys) as moved, trio.move_on_at(deadline):
                async with trio.open_nursery() as nursery:
                    for event in (moved, self._uncommitted_added):
                        nursery.start_soon(_set_then_cancel, event, nursery.cancel_scope)

    def stop_coordinating(self) -> None:
        """Give up every partition (at shutdown): requests still waiting are answered
        NOT_COORDINATOR, so their clients find the coordinator again elsewhere or later."""
        for partition in range(self._partitions):
            self._unload(partition)

    def _unload(self, partition: int) -> None:
        if self.core.is_loaded(partition) or self.core.is_loading(partition):
            self._carry_out(self.core.unload(partition, self._now()))

    # -- timers

    def _set_deadline(self, deadline_ms: int | None) -> None:
        if deadline_ms != self._next_deadline_ms:
            self._next_deadline_ms = deadline_ms
            self._deadline_changed.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load an existing `__consumer_offsets`, then run the core's timers and report
        appends as they commit, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._report_commits)
            await self._run_timers(task_status)

    async def _run_timers(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        if self._broker.image.topic(OFFSETS_TOPIC) is not None:
            for partition in range(self._partitions):
                self._load(partition)
                await trio.sleep(0)
        while True:
            self._deadline_changed = trio.Event()
            deadline_ms = self._next_deadline_ms
            delay_s = (
                math.inf if deadline_ms is None else max(0.0, (deadline_ms - self._now()) / 1000)
            )
            with trio.move_on_after(delay_s):
                await self._deadline_changed.wait()
                continue
            self._carry_out(self.core.tick(self._now()))


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
