"""The consumer's side of a consumer group: the trio driver of `GroupMembership`.

Tasks (in the nursery `run` opens, inside the consumer's): the membership loop (carries out
`GroupMembership.next_action`: coordinator lookup, JoinGroup, the leader's assignment,
SyncGroup, revocations and assignments with their callbacks, LeaveGroup), the heartbeat
loop, and the commit worker and auto-commit timer of `client.group_commits`. Connections to
the coordinator: see `client.group_connections`.

Revocation: a partition stops being consumed first, then (with auto-commit) what the
application finished with is committed, then `on_revoke` runs. Assignment: new partitions
are held (not fetched, no position) while `on_assign` runs, so that a `seek` there decides
where they start; otherwise the consumer's offset resolver starts them from the group's
committed offsets, or by `auto_offset_reset` where there are none.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import trio

from tidelog.client.assignors import assignor_for_name
from tidelog.client.broadcast import Broadcast
from tidelog.client.cluster import Cluster
from tidelog.client.config import ConsumerConfig
from tidelog.client.errors import ClientClosedError, KafkaError, error_for_code
from tidelog.client.fetcher import SubscriptionState
from tidelog.client.group_commits import OffsetCommitter
from tidelog.client.group_connections import CoordinatorConnections
from tidelog.client.group_membership import (
    ApplyAssignment,
    Assign,
    Fail,
    FindCoordinator,
    GroupMembership,
    MembershipConfig,
    Revoke,
    SendJoinGroup,
    SendLeaveGroup,
    SendSyncGroup,
    Wait,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.groups import HEARTBEAT, JOIN_GROUP, LEAVE_GROUP, SYNC_GROUP
from tidelog.client.structs import ConsumerGroupMetadata, TopicPartition

log = logging.getLogger(__name__)

RebalanceCallback = Callable[[set[TopicPartition]], Awaitable[None]]
"""`on_assign`, `on_revoke`, `on_lost`: called with the partitions concerned."""


@dataclass(frozen=True, slots=True)
class RebalanceListener:
    """The application's rebalance callbacks (each optional).

    `on_revoke`: partitions are taken away; they are no longer consumed and, with
    auto-commit, their positions were committed. `on_assign`: after every completed
    rebalance, with the partitions added (possibly none); a `seek` here decides where they
    start, else the committed offset (or `auto_offset_reset`) does. `on_lost`: the
    partitions were lost without a clean hand-over (the membership expired), so other
    members may own them already; defaults to `on_revoke`, as in Kafka.
    """

    on_assign: RebalanceCallback | None = None
    on_revoke: RebalanceCallback | None = None
    on_lost: RebalanceCallback | None = None


class GroupCoordinator:
    """Group membership for one consumer (see the module docstring); `commits` does its
    offset commits.

    `subscription` is the consumer's partition state, which this class changes when
    partitions are assigned and revoked; `wake` tells the consumer's tasks to re-check it.
    """

    def __init__(
        self,
        cluster: Cluster,
        config: ConsumerConfig,
        subscription: SubscriptionState,
        *,
        wake: Callable[[], None],
        rng: random.Random,
    ) -> None:
        assert config.group_id is not None
        self.group_id = config.group_id
        self.config = config
        self._cluster = cluster
        self._subscription = subscription
        self._wake = wake
        self.membership = GroupMembership(
            MembershipConfig(
                group_id=config.group_id,
                group_instance_id=config.group_instance_id,
                session_timeout_ms=config.session_timeout_ms,
                rebalance_timeout_ms=config.effective_rebalance_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                retry_backoff_ms=config.retry_backoff_ms,
            ),
            [assignor_for_name(name) for name in config.assignment_strategies],
        )
        self.changed = Broadcast()
        """Notified whenever the membership may have something new to do, and after every
        assignment change."""
        self.connections = CoordinatorConnections(
            cluster, config.group_id, self.membership, self.changed
        )
        self.commits = OffsetCommitter(
            config, self.membership, self.connections, subscription, self.changed, rng
        )
        self._listener = RebalanceListener()
        self._pattern: re.Pattern[str] | None = None
        self._membership_scope: trio.CancelScope | None = None
        self._membership_stopped = trio.Event()
        self._callback_error: BaseException | None = None
        cluster.update_listeners.append(self._metadata_updated)

    # --- service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._membership_loop)
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self.commits.run_worker)
            if self.config.enable_auto_commit:
                nursery.start_soon(self.commits.run_auto_commit)
            task_status.started()

    def take_error(self) -> BaseException | None:
        """An error for the application: the membership's fatal error (every time, while
        subscribed), or the exception a rebalance callback raised (once)."""
        m = self.membership
        if m.fatal_error is not None and m.subscribed:
            return m.fatal_error
        error, self._callback_error = self._callback_error, None
        return error

    def group_metadata(self) -> ConsumerGroupMetadata:
        m = self.membership
        return ConsumerGroupMetadata(
            self.group_id, m.generation_id, m.member_id, self.config.group_instance_id
        )

    # --- subscription --------------------------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str] | None,
        pattern: re.Pattern[str] | None,
        listener: RebalanceListener,
    ) -> None:
        """Join the group for `topics`, or for every topic matching `pattern`."""
        self._listener = listener
        self._pattern = pattern
        self._cluster.track_all_topics(pattern is not None)
        wanted = self._matching_topics() if pattern is not None else frozenset(topics or ())
        self.membership.set_subscription(wanted, trio.current_time())
        self._track_topics()
        self.changed.notify()

    def unsubscribe(self) -> None:
        """Leave the group (after revoking the partitions) until the next `subscribe`."""
        self._pattern = None
        self._cluster.track_all_topics(False)
        self.membership.set_subscription(None, trio.current_time())
        self.changed.notify()

    @property
    def subscribed(self) -> bool:
        return self.membership.subscribed

    def _matching_topics(self) -> frozenset[str]:
        assert self._pattern is not None
        exclude_internal = self.config.exclude_internal_topics
        return frozenset(
            name
            for name, info in self._cluster.metadata.topics.items()
            if self._pattern.fullmatch(name) and not (exclude_internal and info.is_internal)
        )

    def _track_topics(self) -> None:
        topics = set(self.membership.group_topics())
        topics.update(tp.topic for tp in self._subscription.partitions)
        self._cluster.set_topics(topics)

    def _metadata_updated(self) -> None:
        m = self.membership
        if self._pattern is not None and m.subscribed:
            m.set_subscription(self._matching_topics(), trio.current_time())
            self._track_topics()
        metadata = self._cluster.metadata
        counts = {t: n for t in m.group_topics() if (n := metadata.partition_count(t))}
        m.metadata_updated(counts)
        self.changed.notify()

    # --- the application's polls ---------------------------------------------------------

    def poll_started(self, handed_out: Mapping[TopicPartition, int]) -> None:
        """The application calls getone/getmany again: it has finished with the records
        the previous call returned, which took `handed_out` to these positions."""
        self.commits.finished_with(handed_out)
        m = self.membership
        waiting = m.waiting_for_poll
        m.poll_started(trio.current_time())
        if waiting:
            self.changed.notify()

    def poll_finished(self) -> None:
        self.membership.poll_finished(trio.current_time())

    # --- membership loop -----------------------------------------------------------------

    async def _membership_loop(self) -> None:
        m = self.membership
        with trio.CancelScope() as scope:
            self._membership_scope = scope
            try:
                while True:
                    action = m.next_action(trio.current_time())
                    if isinstance(action, Wait):
                        await self.changed.wait_until(action.until)
                        continue
                    if isinstance(action, Fail):
                        log.error("group %s: %s", self.group_id, action.error)
                        self.changed.notify()
                        self._wake()
                        return
                    if isinstance(action, FindCoordinator):
                        # A lookup error that retrying cannot cure becomes the
                        # membership's fatal error.
                        with contextlib.suppress(KafkaError):
                            await self.connections.ensure(float("inf"))
                    elif isinstance(action, SendJoinGroup):
                        await self._join(action)
                    elif isinstance(action, Assign):
                        await self._assign(action.topics)
                    elif isinstance(action, SendSyncGroup):
                        await self._sync(action)
                    elif isinstance(action, Revoke):
                        await self._revoke(action.partitions, lost=action.lost)
                        m.revoked(action.partitions)
                    elif isinstance(action, ApplyAssignment):
                        await self._apply(action)
                        m.assignment_applied()
                    elif isinstance(action, SendLeaveGroup):
                        await self._send_leave(action)
                        m.left()
                    self.changed.notify()
            finally:
                self._membership_stopped.set()

    async def _join(self, action: SendJoinGroup) -> None:
        m = self.membership
        try:
            connection = await self.connections.connection("join")
            response = await connection.request(
                JOIN_GROUP.key, action.request, timeout_s=action.timeout_ms / 1000
            )
        except KafkaError as exc:
            log.info("group %s: JoinGroup failed: %s", self.group_id, exc)
            m.request_failed(trio.current_time(), exc)
            return
        m.join_response(response, trio.current_time())
        self._track_topics()

    async def _assign(self, topics: frozenset[str]) -> None:
        """As the leader: assign, after a metadata refresh if some member's topic has not
        been asked about yet. (Later partition changes make the leader rejoin.)"""
        self._track_topics()
        metadata = self._cluster.metadata
        if any(t not in metadata.topics and t not in metadata.topic_errors for t in topics):
            deadline = trio.current_time() + self.config.request_timeout_ms / 1000
            try:
                await self._cluster.refresh(deadline)
            except KafkaError as exc:
                log.warning("group %s: assigning with older metadata: %s", self.group_id, exc)
        counts = {t: n for t in topics if (n := metadata.partition_count(t))}
        self.membership.assign(counts)

    async def _sync(self, action: SendSyncGroup) -> None:
        m = self.membership
        try:
            connection = await self.connections.connection("join")
            response = await connection.request(
                SYNC_GROUP.key, action.request, timeout_s=action.timeout_ms / 1000
            )
        except KafkaError as exc:
            log.info("group %s: SyncGroup failed: %s", self.group_id, exc)
            m.request_failed(trio.current_time(), exc)
            return
        m.sync_response(response, trio.current_time())

    async def _revoke(self, partitions: frozenset[TopicPartition], *, lost: bool) -> None:
        """Stop consuming `partitions`, commit what was consumed of them (unless lost),
        then tell the application."""
        remaining = [tp for tp in self._subscription.partitions if tp not in partitions]
        self._subscription.assign(remaining)
        self._wake()
        offsets = self.commits.uncommitted(self.commits.forget(partitions))
        if offsets and not lost and self.config.enable_auto_commit:
            try:
                await self.commits.commit(offsets)
            except KafkaError as exc:
                log.warning("group %s: commit before revoking failed: %s", self.group_id, exc)
        listener = self._listener
        callback = (listener.on_lost or listener.on_revoke) if lost else listener.on_revoke
        await self._run_callback(callback, partitions)

    async def _apply(self, action: ApplyAssignment) -> None:
        if action.revoked:
            await self._revoke(action.revoked, lost=False)
        self._subscription.assign(action.assigned)
        for tp in action.added:
            added = self._subscription.partitions[tp]
            added.use_committed = True
            added.held = True
        self._track_topics()
        await self._run_callback(self._listener.on_assign, action.added)
        for tp in action.added:
            state = self._subscription.partitions.get(tp)
            if state is not None:
                state.held = False
        self._wake()

    async def _run_callback(
        self, callback: RebalanceCallback | None, partitions: frozenset[TopicPartition]
    ) -> None:
        if callback is None:
            return
        try:
            await callback(set(partitions))
        except Exception as exc:
            log.exception("group %s: rebalance callback %r failed", self.group_id, callback)
            self._callback_error = exc
            self._wake()

    async def _send_leave(self, action: SendLeaveGroup) -> None:
        if action.request is None or not self.membership.coordinator_known:
            return
        try:
            connection = await self.connections.connection("coordinator")
            response = await connection.request(LEAVE_GROUP.key, action.request)
        except KafkaError as exc:
            log.info("group %s: LeaveGroup failed: %s", self.group_id, exc)
            return
        if response["error_code"] != ErrorCode.NONE:
            log.info(
                "group %s: LeaveGroup answered %s",
                self.group_id,
                error_for_code(response["error_code"]),
            )

    # --- heartbeats ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        m = self.membership
        while True:
            known = m.coordinator_known
            action = m.heartbeat_action(trio.current_time())
            if isinstance(action, Wait):
                if known and not m.coordinator_known:
                    self.changed.notify()
                await self.changed.wait_until(action.until)
                continue
            try:
                connection = await self.connections.connection("coordinator")
                response = await connection.request(HEARTBEAT.key, action.request)
            except KafkaError as exc:
                m.heartbeat_failed(trio.current_time(), exc)
            else:
                m.heartbeat_response(response["error_code"], trio.current_time())
            self.changed.notify()

    # --- closing -------------------------------------------------------------------------

    async def close(self, *, finished: bool) -> None:
        """Stop the membership, commit (with auto-commit: the current positions when the
        application `finished` normally, else those it finished with), revoke the
        partitions (callback) and leave the group. Bounded by `default_api_timeout_ms`."""
        if self._membership_scope is not None:
            self._membership_scope.cancel()
            await self._membership_stopped.wait()
        m = self.membership
        deadline = trio.current_time() + self.config.default_api_timeout_ms / 1000
        owned = frozenset(self._subscription.partitions)
        if self.config.enable_auto_commit and m.commit_identity() is not None:
            commits = self.commits
            positions = (
                {tp: o.offset for tp, o in commits.current_positions().items()}
                if finished
                else commits.consumed
            )
            offsets = commits.uncommitted(positions)
            if offsets:
                try:
                    await commits.commit(offsets, deadline)
                except KafkaError as exc:
                    log.warning("group %s: commit on close failed: %s", self.group_id, exc)
        if m.subscribed and owned:
            listener = self._listener
            if m.has_generation:
                await self._run_callback(listener.on_revoke, owned)
            else:
                await self._run_callback(listener.on_lost or listener.on_revoke, owned)
        leave = m.leave_on_close()
        if leave is not None and leave.request is not None and m.coordinator_known:
            with trio.move_on_at(deadline):
                await self._send_leave(leave)
        self.connections.drop(ClientClosedError("the consumer closed"))
