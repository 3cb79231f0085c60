"""Offset commits and committed-offset lookups of a group member.

Every commit, synchronous or not, goes through one queue and one worker task, so commits
reach the coordinator in the order they were requested (a retried older commit can never
overwrite a newer one). Queued asynchronous commits that have not started merge, the later
offset of a partition winning, which bounds the queue by the number of waiting callers.

What auto-commit commits: the positions the application has finished with, i.e. the ones
reached by the records a `getone`/`getmany` call returned, once the application calls again
(`consumed`). A record still being worked on when its partition is revoked is consumed
again by the next owner: at least once, never lost.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import trio

from tidelog.client.broadcast import Broadcast
from tidelog.client.config import ConsumerConfig
from tidelog.client.connection import backoff_s
from tidelog.client.errors import (
    CommitFailedError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    error_for_code,
)
from tidelog.client.fetcher import SubscriptionState
from tidelog.client.group_connections import CoordinatorConnections
from tidelog.client.group_membership import CommitIdentity, GroupMembership
from tidelog.client.group_offsets import (
    OFFSET_COMMIT_MAX_VERSION,
    OFFSET_FETCH_MAX_VERSION,
    offset_commit_errors,
    offset_commit_request,
    offset_fetch_request,
    offset_fetch_results,
)
from tidelog.client.protocol.errors import ErrorCode
from tidelog.client.protocol.messages.groups import OFFSET_COMMIT, OFFSET_FETCH
from tidelog.client.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

CommitCallback = Callable[[Mapping[TopicPartition, OffsetAndMetadata], KafkaError | None], None]
"""Called when an asynchronous commit finished: the offsets, and the error if it failed."""

_COORDINATOR_ERRORS = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE})
_MEMBERSHIP_ERRORS = frozenset(
    {
        ErrorCode.UNKNOWN_MEMBER_ID,
        ErrorCode.ILLEGAL_GENERATION,
        ErrorCode.REBALANCE_IN_PROGRESS,
        ErrorCode.FENCED_INSTANCE_ID,
    }
)


@dataclass(eq=False)
class _CommitJob:
    offsets: dict[TopicPartition, OffsetAndMetadata]
    deadline: float
    asynchronous: bool
    mergeable: bool
    """An asynchronous commit that has not started: later ones join it."""
    callbacks: list[CommitCallback] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    error: KafkaError | None = None


class OffsetCommitter:
    """Commits and committed-offset lookups for one member (see the module docstring).
    `run_worker` (and `run_auto_commit`, with `enable_auto_commit`) run in the group
    coordinator's nursery."""

    def __init__(
        self,
        config: ConsumerConfig,
        membership: GroupMembership,
        connections: CoordinatorConnections,
        subscription: SubscriptionState,
        changed: Broadcast,
        rng: random.Random,
    ) -> None:
        assert config.group_id is not None
        self.group_id = config.group_id
        self.config = config
        self._membership = membership
        self._connections = connections
        self._subscription = subscription
        self._changed = changed
        self._rng = rng
        self._jobs: deque[_CommitJob] = deque()
        self._wakeup = Broadcast()
        self.consumed: dict[TopicPartition, int] = {}
        """Positions the application has finished with, per assigned partition."""
        self._committed: dict[TopicPartition, int] = {}
        """The last offset this consumer committed, per assigned partition."""

    # --- positions -----------------------------------------------------------------------

    def finished_with(self, handed_out: Mapping[TopicPartition, int]) -> None:
        """The application has finished with records that took partitions to these
        positions."""
        for tp, position in handed_out.items():
            if tp in self._subscription.partitions:
                self.consumed[tp] = position

    def forget(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Stop tracking revoked partitions; returns their consumed positions."""
        out = {tp: self.consumed.pop(tp) for tp in partitions if tp in self.consumed}
        for tp in partitions:
            self._committed.pop(tp, None)
        return out

    def uncommitted(
        self, positions: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """`positions` that differ from what this consumer committed last."""
        return {
            tp: OffsetAndMetadata(position)
            for tp, position in positions.items()
            if self._committed.get(tp) != position
        }

    def current_positions(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """The position of every assigned partition that has one."""
        return {
            tp: OffsetAndMetadata(state.position)
            for tp, state in self._subscription.partitions.items()
            if state.position is not None
        }

    # --- commits -------------------------------------------------------------------------

    async def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], deadline: float | None = None
    ) -> None:
        """Commit `offsets` after every commit requested before; raises the error if it
        fails (`CommitFailedError` when the group has moved on without this member)."""
        if deadline is None:
            deadline = trio.current_time() + self.config.default_api_timeout_ms / 1000
        job = _CommitJob(dict(offsets), deadline, asynchronous=False, mergeable=False)
        self._jobs.append(job)
        self._wakeup.notify()
        await job.done.wait()
        if job.error is not None:
            raise job.error

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        callback: CommitCallback | None = None,
    ) -> None:
        """Queue a commit of `offsets` after every commit requested before and return."""
        deadline = trio.current_time() + self.config.default_api_timeout_ms / 1000
        last = self._jobs[-1] if self._jobs else None
        if last is not None and last.mergeable:
            last.offsets.update(offsets)
            last.deadline = deadline
        else:
            last = _CommitJob(dict(offsets), deadline, asynchronous=True, mergeable=True)
            self._jobs.append(last)
            self._wakeup.notify()
        if callback is not None:
            last.callbacks.append(callback)

    async def run_worker(self) -> None:
        while True:
            while not self._jobs:
                await self._wakeup.wait()
            job = self._jobs[0]
            job.mergeable = False
            try:
                await self._commit(job.offsets, job.deadline)
            except KafkaError as exc:
                job.error = exc
                if job.asynchronous and not job.callbacks:
                    log.warning("group %s: asynchronous commit failed: %s", self.group_id, exc)
            finally:
                self._jobs.popleft()
                job.done.set()
            for callback in job.callbacks:
                try:
                    callback(job.offsets, job.error)
                except Exception:
                    log.exception("group %s: commit callback %r failed", self.group_id, callback)

    async def run_auto_commit(self) -> None:
        """Every `auto_commit_interval_ms`, commit what the application has finished with
        (when this member is in a stable generation)."""
        interval_s = self.config.auto_commit_interval_ms / 1000
        while True:
            await trio.sleep(interval_s)
            offsets = self.uncommitted(
                {tp: p for tp, p in self.consumed.items() if tp in self._subscription.partitions}
            )
            if not offsets or self._membership.commit_identity() is None:
                continue
            try:
                await self.commit(offsets, trio.current_time() + interval_s)
            except KafkaError as exc:
                log.info("group %s: auto-commit failed: %s", self.group_id, exc)

    async def _commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], deadline: float
    ) -> None:
        m = self._membership
        remaining = dict(offsets)
        attempt = 0
        last_error: KafkaError | None = None
        while remaining:
            identity = m.commit_identity()
            if identity is None:
                if m.rebalance_in_progress:
                    raise RebalanceInProgressError("offsets cannot be committed mid-rebalance")
                raise CommitFailedError(
                    f"this consumer is not in an active generation of group {self.group_id!r}"
                )
            epoch = m.coordinator_epoch
            try:
                epoch = await self._connections.ensure(deadline)
                connection = await self._connections.connection("coordinator")
                body = offset_commit_request(
                    self.group_id,
                    identity.generation_id,
                    identity.member_id,
                    identity.group_instance_id,
                    remaining,
                )
                response = await connection.request(
                    OFFSET_COMMIT.key, body, max_version=OFFSET_COMMIT_MAX_VERSION
                )
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                last_error = exc
                self._connections.failed(f"OffsetCommit: {exc}", epoch)
            else:
                errors = offset_commit_errors(response, remaining)
                for tp, code in errors.items():
                    if code is ErrorCode.NONE:
                        self._committed[tp] = remaining.pop(tp).offset
                if not remaining:
                    return
                tp, code = min((tp, errors[tp]) for tp in remaining)
                last_error = self._commit_error(code, tp, identity, epoch)
            attempt += 1
            await self._backoff(attempt, deadline, f"commit failed: {last_error}")

    def _commit_error(
        self, code: ErrorCode, tp: TopicPartition, identity: CommitIdentity, epoch: int
    ) -> KafkaError:
        """The error to retry after (returned) or to fail with (raised)."""
        error = error_for_code(code, f"committing the offset of {tp}")
        if code in _COORDINATOR_ERRORS:
            self._connections.failed(f"OffsetCommit: {code.name}", epoch)
            return error
        if code in _MEMBERSHIP_ERRORS:
            self._membership.commit_failed(code, identity)
            self._changed.notify()
            if code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION):
                raise CommitFailedError(
                    f"group {self.group_id!r} moved on without this member ({code.name}): "
                    "its partitions went to other members"
                )
            raise error
        if code.retriable:
            return error
        raise error

    async def _backoff(self, attempt: int, deadline: float, failure: str) -> None:
        wait = backoff_s(
            attempt,
            self.config.retry_backoff_ms,
            self.config.retry_backoff_max_ms,
            self._rng.uniform(-1, 1),
        )
        if trio.current_time() + wait >= deadline:
            raise KafkaTimeoutError(f"out of time: {failure}")
        await trio.sleep(wait)

    # --- committed offsets ---------------------------------------------------------------

    async def fetch_committed(
        self, partitions: Iterable[TopicPartition], deadline: float | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The group's committed offset of each partition (None where there is none).
        Offsets that a transaction is about to commit are waited for (RequireStable)."""
        if deadline is None:
            deadline = trio.current_time() + self.config.default_api_timeout_ms / 1000
        wanted = set(partitions)
        out: dict[TopicPartition, OffsetAndMetadata | None] = {}
        attempt = 0
        last_error: KafkaError | None = None
        while wanted:
            epoch = self._membership.coordinator_epoch
            try:
                epoch = await self._connections.ensure(deadline)
                connection = await self._connections.connection("coordinator")
                body = offset_fetch_request(self.group_id, wanted, require_stable=True)
                response = await connection.request(
                    OFFSET_FETCH.key, body, max_version=OFFSET_FETCH_MAX_VERSION
                )
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                last_error = exc
                self._connections.failed(f"OffsetFetch: {exc}", epoch)
            else:
                top_error, results = offset_fetch_results(response, self.group_id)
                if top_error is not ErrorCode.NONE:
                    last_error = self._fetch_error(top_error, None, epoch)
                else:
                    for tp in list(wanted):
                        result = results.get(tp)
                        if isinstance(result, ErrorCode):
                            last_error = self._fetch_error(result, tp, epoch)
                        else:
                            out[tp] = result
                            wanted.discard(tp)
                    if not wanted:
                        break
            attempt += 1
            await self._backoff(attempt, deadline, f"fetching committed offsets: {last_error}")
        return out

    def _fetch_error(self, code: ErrorCode, tp: TopicPartition | None, epoch: int) -> KafkaError:
        """The error to retry after (returned) or to fail with (raised)."""
        error = error_for_code(code, f"fetching committed offsets{f' of {tp}' if tp else ''}")
        if code in _COORDINATOR_ERRORS:
            self._connections.failed(f"OffsetFetch: {code.name}", epoch)
        elif not code.retriable:
            raise error
        return error
