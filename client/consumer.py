"""The consumer: manual partition assignment, or consumer-group membership.

    async with Consumer(bootstrap_servers="127.0.0.1:9092",
                        auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("events", 0)])
        async for record in consumer:
            handle(record)

    async with Consumer(bootstrap_servers="127.0.0.1:9092", group_id="billing") as consumer:
        consumer.subscribe(["events"], on_assign=..., on_revoke=...)
        async for record in consumer:
            handle(record)          # positions are committed every auto_commit_interval_ms

Tasks, all in the nursery `async with` opens: the cluster service, the group coordinator
client (with a `group_id`: membership, heartbeats, commits; see `client.group_coordinator`),
an offset resolver (the group's committed offset for partitions the group assigns, then
ListOffsets for partitions without a position: after `assign` with `auto_offset_reset`,
after `seek_to_beginning`/`seek_to_end`, or after OFFSET_OUT_OF_RANGE), a supervisor that
starts one fetcher per partition leader, and the fetchers. A fetcher keeps one Fetch request in
flight to its broker for every partition of that broker with less than twice
`max_partition_fetch_bytes` buffered, so the next response is fetched while the application
works through the current one (see `client.fetcher`). Full fetch requests, no fetch
sessions.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio

from tidelog.client.broadcast import Broadcast
from tidelog.client.cluster import Cluster, enter_owned_nursery, exit_owned_nursery
from tidelog.client.config import ConsumerConfig
from tidelog.client.connection import BrokerConnection, Connector, backoff_s
from tidelog.client.errors import (
    ClientClosedError,
    ConfigError,
    IncompatibleBrokerError,
    KafkaError,
    KafkaProtocolError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
    error_for_code,
)
from tidelog.client.fetcher import FetchedChunk, SubscriptionState, decode_partition_records
from tidelog.client.group_commits import CommitCallback
from tidelog.client.group_coordinator import GroupCoordinator, RebalanceCallback, RebalanceListener
from tidelog.client.offsets import EARLIEST, LATEST, OffsetAndTimestamp, list_offsets
from tidelog.client.protocol.errors import ErrorCode, ProtocolError
from tidelog.client.protocol.messages.data import FETCH
from tidelog.client.protocol.schema import Message
from tidelog.client.structs import (
    ConsumerGroupMetadata,
    ConsumerRecord,
    OffsetAndMetadata,
    TopicPartition,
)

log = logging.getLogger(__name__)

BUFFERED_RESPONSES_PER_PARTITION = 2
"""Fetched data per partition may reach this many times max_partition_fetch_bytes: the
response being handed out and the one fetched ahead."""
FETCH_MAX_VERSION = 12
"""Fetch v13 names topics by id; 4-12 carry names."""

# Partition errors after which the leader we fetched from is the wrong one.
_STALE_LEADER_ERRORS = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.OFFSET_NOT_AVAILABLE,
    }
)


class Consumer:
    """Kafka consumer on trio. Keyword arguments are `ConsumerConfig` fields (Kafka's
    config names: `auto_offset_reset`, `isolation_level`, `fetch_min_bytes`,
    `fetch_max_wait_ms`, `fetch_max_bytes`, `max_partition_fetch_bytes`, `max_poll_records`,
    `check_crcs`, `request_timeout_ms`, `retry_backoff_ms`, `group_id`,
    `partition_assignment_strategy`, `enable_auto_commit`, ...).

    Partitions come from `assign` (manual) or, with a `group_id`, from `subscribe` (the
    group shares them out); the two are exclusive. With a `group_id`, `commit` stores
    positions in the group either way.

    `connector` replaces how connections are opened; `rng` seeds backoff jitter.
    """

    def __init__(
        self,
        *,
        connector: Connector | None = None,
        rng: random.Random | None = None,
        **config: Any,
    ) -> None:
        self.config = ConsumerConfig(**config)
        self._rng = rng or random.Random()
        self._cluster = Cluster(
            self.config, connector=connector, allow_auto_topic_creation=False, rng=self._rng
        )
        self._cluster.update_listeners.append(self._wake)
        self._subscription = SubscriptionState()
        self._wakeup = Broadcast()
        """Fetchers and the resolver re-check their work."""
        self._data_ready = Broadcast()
        """The application may find new records (or errors)."""
        self._fetchers: set[int] = set()
        self._group: GroupCoordinator | None = None
        if self.config.group_id is not None:
            self._group = GroupCoordinator(
                self._cluster,
                self.config,
                self._subscription,
                wake=self._wake_all,
                rng=self._rng,
            )
        self._handed_out: dict[TopicPartition, int] = {}
        """Positions after the records the last getone/getmany call returned."""
        self._nursery: trio.Nursery | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        if self._exit_stack is not None or self._closed:
            raise ClientClosedError("a Consumer can be entered once")

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(self._cluster.run)
            if self._group is not None:
                await nursery.start(self._group.run)
            nursery.start_soon(self._resolve_offsets_loop)
            nursery.start_soon(self._supervise_loop)

        self._exit_stack, self._nursery = await enter_owned_nursery(start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._shutdown(exc)

    async def aclose(self) -> None:
        """Stop fetching and close every connection."""
        await self._shutdown(None)

    async def _shutdown(self, exc: BaseException | None) -> bool:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            self._closed = True
            return False
        assert self._nursery is not None
        if self._group is not None:
            # Commit, revoke and leave the group even when cancelled, within bounds.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.config.default_api_timeout_ms / 1000),
            ):
                await self._group.close(finished=exc is None)
        self._closed = True
        self._nursery.cancel_scope.cancel()
        try:
            return await exit_owned_nursery(stack, exc)
        finally:
            self._nursery = None
            self._data_ready.notify()

    def _check_open(self) -> None:
        if self._closed or self._nursery is None:
            raise ClientClosedError("the consumer is closed" if self._closed else "not started")

    def _wake(self) -> None:
        self._wakeup.notify()

    def _wake_all(self) -> None:
        self._wakeup.notify()
        self._data_ready.notify()

    # --- group membership and commits ----------------------------------------------------

    def subscribe(
        self,
        topics: Iterable[str] | None = None,
        *,
        pattern: str | re.Pattern[str] | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Consume `topics` (or every topic whose whole name matches `pattern`, checked
        again at every metadata refresh) as a member of the group `group_id`: the group's
        partitions are shared out among its members, and again whenever members come or go
        or the subscriptions change. Replaces any earlier subscription; an empty list
        unsubscribes.

        The callbacks (async, each called with a set of partitions, in the consumer's own
        task; see `RebalanceListener`): `on_revoke` when partitions are taken away (after
        their positions were committed, with auto-commit), `on_assign` after every
        rebalance with the partitions added, `on_lost` (default `on_revoke`) when they were
        lost without a clean hand-over. An exception they raise is raised from the next
        `getone`/`getmany`.
        """
        group = self._require_group("subscribe")
        if (topics is None) == (pattern is None):
            raise ValueError("subscribe needs either topics or a pattern")
        if not group.subscribed and self._subscription.partitions:
            raise KafkaError("subscribe and assign are exclusive: assign([]) first")
        names = None if topics is None else [topics] if isinstance(topics, str) else list(topics)
        if names is not None and not names:
            self.unsubscribe()
            return
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        group.subscribe(names, compiled, RebalanceListener(on_assign, on_revoke, on_lost))

    def unsubscribe(self) -> None:
        """Give up the subscription: revoke the partitions (committing them, with
        auto-commit) and leave the group."""
        if self._group is not None and self._group.subscribed:
            self._group.unsubscribe()

    def subscription(self) -> set[str]:
        """The subscribed topics (the ones matching the pattern, for a pattern)."""
        group = self._group
        if group is None or group.membership.subscription is None:
            return set()
        return set(group.membership.subscription)

    def group_metadata(self) -> ConsumerGroupMetadata:
        """The group generation this consumer is in, and its member id."""
        return self._require_group("group_metadata").group_metadata()

    async def commit(
        self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None
    ) -> None:
        """Store offsets in the group: `offsets` (each the offset of the next record to
        consume), or the current position of every assigned partition. Waits for the
        coordinator's answer, retrying retriable errors for up to `default_api_timeout_ms`.
        Raises `CommitFailedError` when the group has moved on without this member (its
        partitions went to others), `RebalanceInProgressError` during a rebalance."""
        group = self._require_group("commit")
        self._check_open()
        await group.commits.commit(self._offsets_to_commit(group, offsets))

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None = None,
        callback: CommitCallback | None = None,
    ) -> None:
        """Like `commit`, without waiting: commits go out in the order requested, and
        `callback(offsets, error)` (synchronous) is called with the outcome."""
        group = self._require_group("commit_async")
        self._check_open()
        group.commits.commit_async(self._offsets_to_commit(group, offsets), callback)

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata | None]:
        """The group's committed offset of each partition (None where it has none)."""
        group = self._require_group("committed")
        self._check_open()
        return await group.commits.fetch_committed(TopicPartition(*tp) for tp in partitions)

    def _offsets_to_commit(
        self,
        group: GroupCoordinator,
        offsets: Mapping[TopicPartition, int | OffsetAndMetadata] | None,
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        if offsets is None:
            return group.commits.current_positions()
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, value in offsets.items():
            committed = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(value)
            if committed.offset < 0:
                raise ValueError(f"offset must be >= 0, got {committed.offset} for {tp}")
            out[TopicPartition(*tp)] = committed
        return out

    def _require_group(self, what: str) -> GroupCoordinator:
        if self._group is None:
            raise ConfigError(f"{what} needs a group_id")
        return self._group

    # --- assignment and positions --------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions from now on. Partitions kept from the previous
        assignment keep their positions; new ones start where `seek` says, else (with a
        `group_id`) from the group's committed offset, else per `auto_offset_reset`. Not
        while subscribed."""
        if self._group is not None and self._group.subscribed:
            raise KafkaError("assign and subscribe are exclusive: unsubscribe() first")
        before = set(self._subscription.partitions)
        self._subscription.assign(TopicPartition(*tp) for tp in partitions)
        if self._group is not None:
            for tp, state in self._subscription.partitions.items():
                if tp not in before:
                    state.use_committed = True
        self._cluster.set_topics({tp.topic for tp in self._subscription.partitions})
        self._wake()

    def assignment(self) -> set[TopicPartition]:
        return set(self._subscription.partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Consume `partition` from `offset` next. Records fetched before are dropped; the
        new fetch goes out once the fetch in flight to the partition's broker returns (at
        most `fetch_max_wait_ms` when the broker has no data)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._subscription.state(partition).set_position(offset)
        self._wake()

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Consume from the log start offset (of all assigned partitions when none given)."""
        self._reset(partitions, EARLIEST)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Consume only records written from now on (all assigned partitions when none
        given)."""
        self._reset(partitions, LATEST)

    def _reset(self, partitions: Sequence[TopicPartition], timestamp: int) -> None:
        for tp in partitions or list(self._subscription.partitions):
            self._subscription.state(tp).request_reset(timestamp)
        self._wake()

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record `partition` will return (resolving a pending
        offset reset first)."""
        self._check_open()
        state = self._subscription.state(partition)
        while state.position is None:
            if state.error is not None:
                raise state.error
            await self._data_ready.wait()
            self._check_open()
            state = self._subscription.state(partition)
        return state.position

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's high watermark as of the last fetch response (None before)."""
        value = self._subscription.state(partition).high_watermark
        return None if value < 0 else value

    def last_stable_offset(self, partition: TopicPartition) -> int | None:
        value = self._subscription.state(partition).last_stable_offset
        return None if value < 0 else value

    async def beginning_offsets(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Each partition's log start offset."""
        return await self._offsets(partitions, EARLIEST)

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end offset (last stable offset under read_committed)."""
        return await self._offsets(partitions, LATEST)

    async def _offsets(
        self, partitions: Iterable[TopicPartition], timestamp: int
    ) -> dict[TopicPartition, int]:
        self._check_open()
        results = await list_offsets(
            self._cluster,
            {TopicPartition(*tp): timestamp for tp in partitions},
            isolation_level=self.config.isolation_level_code,
            deadline=trio.current_time() + self.config.request_timeout_ms / 1000,
            rng=self._rng,
        )
        out: dict[TopicPartition, int] = {}
        for tp, result in results.items():
            if isinstance(result, KafkaError):
                raise result
            out[tp] = result.offset
        return out

    # --- reading -------------------------------------------------------------------------

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Buffered records by partition (of these partitions, or all assigned), at most
        `max_records` (default `max_poll_records`); waits up to `timeout_ms` for some to
        arrive. Raises a partition's fetch error (e.g. `OffsetOutOfRangeError` with
        `auto_offset_reset="none"`) once its earlier records have been returned."""
        self._check_open()
        limit = self.config.max_poll_records if max_records is None else max_records
        deadline = trio.current_time() + timeout_ms / 1000
        subscription = self._subscription
        group = self._poll_started()
        try:
            while True:
                if subscription.has_records(partitions):
                    released = subscription.released_chunks
                    records = subscription.take(limit, partitions)
                    if group is not None:
                        self._handed_out = {
                            tp: position
                            for tp in records
                            if (position := subscription.partitions[tp].position) is not None
                        }
                    await self._after_take(released)
                    return records
                self._raise_pending_error(partitions)
                if not await self._data_ready.wait_until(deadline):
                    return {}
                self._check_open()
        finally:
            if group is not None:
                group.poll_finished()

    async def getone(self, *partitions: TopicPartition) -> ConsumerRecord:
        """The next record (of these partitions, or any assigned one); waits for it."""
        self._check_open()
        subscription = self._subscription
        group = self._poll_started()
        try:
            while True:
                released = subscription.released_chunks
                record = subscription.take_one(partitions)
                if record is not None:
                    if group is not None:
                        tp = record.topic_partition
                        position = subscription.partitions[tp].position
                        self._handed_out = {} if position is None else {tp: position}
                    await self._after_take(released)
                    return record
                self._raise_pending_error(partitions)
                await self._data_ready.wait()
                self._check_open()
        finally:
            if group is not None:
                group.poll_finished()

    def _poll_started(self) -> GroupCoordinator | None:
        """Tell the group coordinator that the application polls again (and so has
        finished with the records handed out before)."""
        group = self._group
        if group is not None:
            error = group.take_error()
            if error is not None:
                raise error
            group.poll_started(self._handed_out)
            self._handed_out = {}
        return group

    def _raise_pending_error(self, partitions: Sequence[TopicPartition]) -> None:
        error: BaseException | None = self._subscription.pending_error(partitions)
        if error is None and self._group is not None:
            error = self._group.take_error()
        if error is not None:
            raise error

    async def _after_take(self, released_before: int) -> None:
        if self._subscription.released_chunks != released_before:
            # Buffer space was freed: let the fetchers send the next fetch right away.
            self._wake()
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        return await self.getone()

    # --- offset resolution ---------------------------------------------------------------

    async def _resolve_offsets_loop(self) -> None:
        subscription = self._subscription
        attempt = 0
        while True:
            needing = subscription.needing_reset()
            if not needing:
                await self._wakeup.wait()
                continue
            from_group = [
                tp for tp in needing
                if subscription.partitions[tp].use_committed
                and subscription.partitions[tp].reset_to is None
            ]  # fmt: skip
            if from_group:
                if await self._resolve_committed(from_group):
                    attempt = 0
                else:
                    attempt += 1
                    await trio.sleep(self._backoff_s(attempt))
                continue
            timestamps: dict[TopicPartition, int] = {}
            for tp in needing:
                state = subscription.partitions[tp]
                if state.reset_to is not None:
                    timestamps[tp] = state.reset_to
                elif self.config.auto_offset_reset == "none":
                    state.error = NoOffsetForPartitionError(
                        f"{tp} has no position and auto_offset_reset is 'none'"
                    )
                else:
                    earliest = self.config.auto_offset_reset == "earliest"
                    timestamps[tp] = EARLIEST if earliest else LATEST
            if not timestamps:
                self._data_ready.notify()
                continue
            epochs = {tp: subscription.partitions[tp].seek_epoch for tp in timestamps}
            results = await list_offsets(
                self._cluster,
                timestamps,
                isolation_level=self.config.isolation_level_code,
                deadline=trio.current_time() + self.config.request_timeout_ms / 1000,
                rng=self._rng,
            )
            failed = False
            for tp, result in results.items():
                current = subscription.partitions.get(tp)
                if current is None or current.seek_epoch != epochs[tp]:
                    continue  # unassigned or sought meanwhile
                state = current
                if isinstance(result, OffsetAndTimestamp):
                    state.set_position(result.offset)
                elif result.retriable:
                    failed = True
                else:
                    state.error = result
            self._data_ready.notify()
            self._wake()
            if failed:
                attempt += 1
                await trio.sleep(self._backoff_s(attempt))
            else:
                attempt = 0

    async def _resolve_committed(self, partitions: list[TopicPartition]) -> bool:
        """Start group-assigned partitions from their committed offsets; those without one
        fall back to `auto_offset_reset`. False after a retriable failure."""
        assert self._group is not None
        states = {tp: self._subscription.partitions[tp] for tp in partitions}
        epochs = {tp: state.seek_epoch for tp, state in states.items()}

        def unchanged(tp: TopicPartition) -> bool:
            state = states[tp]
            return (
                self._subscription.partitions.get(tp) is state
                and state.seek_epoch == epochs[tp]
                and state.use_committed
            )

        try:
            committed = await self._group.commits.fetch_committed(
                partitions, trio.current_time() + self.config.request_timeout_ms / 1000
            )
        except KafkaError as exc:
            if exc.retriable:
                log.info("cannot fetch committed offsets: %s", exc)
                return False
            for tp in partitions:
                if unchanged(tp):
                    states[tp].error = exc
            self._data_ready.notify()
            return True
        for tp in partitions:
            if not unchanged(tp):
                continue  # revoked, reassigned or sought meanwhile
            result = committed.get(tp)
            if result is None:
                states[tp].use_committed = False
            else:
                states[tp].set_position(result.offset)
        self._data_ready.notify()
        self._wake()
        return True

    def _backoff_s(self, attempt: int) -> float:
        return backoff_s(
            attempt,
            self.config.retry_backoff_ms,
            self.config.retry_backoff_max_ms,
            self._rng.uniform(-1, 1),
        )

    # --- fetching ------------------------------------------------------------------------

    def _fetchable(self) -> dict[int, list[TopicPartition]]:
        return self._subscription.fetchable(
            trio.current_time(),
            self._cluster.metadata.leader_for,
            BUFFERED_RESPONSES_PER_PARTITION * self.config.max_partition_fetch_bytes,
        )

    async def _supervise_loop(self) -> None:
        """Start a fetcher per leader; ask for metadata for partitions without one."""
        while True:
            subscription = self._subscription
            leaderless = [
                tp for tp, s in subscription.partitions.items()
                if s.fetch_position is not None and self._cluster.metadata.leader_for(tp) is None
            ]  # fmt: skip
            if leaderless:
                self._cluster.request_update()
            for node_id in set(self._fetchable()) - self._fetchers:
                self._fetchers.add(node_id)
                assert self._nursery is not None
                self._nursery.start_soon(self._fetch_loop, node_id)
            await self._wakeup.wait_until(subscription.next_retry_at(trio.current_time()))

    async def _fetch_loop(self, node_id: int) -> None:
        """Keep a Fetch in flight to `node_id` for its partitions that have buffer room."""
        failures = 0
        rotation = 0
        while True:
            partitions = self._fetchable().get(node_id)
            if not partitions:
                await self._wakeup.wait_until(self._subscription.next_retry_at(trio.current_time()))
                continue
            # Rotate so each partition is sometimes first: a broker returns an oversized
            # batch only for the first partition of a response (KIP-74).
            rotation = (rotation + 1) % len(partitions)
            partitions = partitions[rotation:] + partitions[:rotation]
            try:
                connection = await self._cluster.connection(node_id)
                version = connection.api_version(FETCH.key, max_version=FETCH_MAX_VERSION)
            except IncompatibleBrokerError as exc:
                for tp in partitions:
                    state = self._subscription.partitions.get(tp)
                    if state is not None:
                        state.error = exc
                self._data_ready.notify()
                continue
            except KafkaError as exc:
                failures += 1
                log.info("cannot reach broker %d for fetch: %s", node_id, exc)
                self._hold_back(partitions, self._backoff_s(failures))
                continue
            failures = 0
            await self._fetch(connection, version, partitions)

    def _hold_back(self, partitions: Iterable[TopicPartition], delay_s: float) -> None:
        retry_at = trio.current_time() + delay_s
        for tp in partitions:
            state = self._subscription.partitions.get(tp)
            if state is not None:
                state.retry_at = retry_at
        self._cluster.request_update()

    async def _fetch(
        self, connection: BrokerConnection, version: int, partitions: list[TopicPartition]
    ) -> None:
        subscription = self._subscription
        sent: dict[TopicPartition, tuple[int, int]] = {}
        topics: dict[str, list[Message]] = {}
        for tp in partitions:
            # The assignment may have changed while the connection was being made.
            state = subscription.partitions.get(tp)
            if state is None or state.fetch_position is None or state.fetching:
                continue
            sent[tp] = (state.fetch_position, state.seek_epoch)
            state.fetching = True
            topics.setdefault(tp.topic, []).append({
                "partition": tp.partition,
                "current_leader_epoch": self._cluster.metadata.leader_epoch(tp),
                "fetch_offset": state.fetch_position,
                "log_start_offset": -1,
                "partition_max_bytes": self.config.max_partition_fetch_bytes,
            })  # fmt: skip
        if not sent:
            return
        body = {
            "replica_id": -1,
            "max_wait_ms": self.config.fetch_max_wait_ms,
            "min_bytes": self.config.fetch_min_bytes,
            "max_bytes": self.config.fetch_max_bytes,
            "isolation_level": self.config.isolation_level_code,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": name, "partitions": parts} for name, parts in topics.items()],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        try:
            response = await connection.request(
                FETCH.key,
                body,
                version=version,
                timeout_s=(self.config.request_timeout_ms + self.config.fetch_max_wait_ms) / 1000,
            )
        except KafkaError as exc:
            log.info("fetch from %s failed: %s", connection.describe(), exc)
            self._fetch_done(sent)
            self._hold_back(sent, self._backoff_s(1))
            return
        self._fetch_done(sent)
        top_error = response.get("error_code", 0)
        if top_error != ErrorCode.NONE:
            error = error_for_code(top_error, f"Fetch from {connection.describe()}")
            if not error.retriable:
                for tp in sent:
                    self._set_error(tp, sent[tp][1], error)
                return
            self._hold_back(sent, self._backoff_s(1))
            return
        for topic in response["responses"]:
            for data in topic["partitions"]:
                tp = TopicPartition(topic["topic"], data["partition_index"])
                if tp in sent:
                    self._partition_data(tp, data, *sent[tp])
        self._data_ready.notify()
        self._wake()

    def _fetch_done(self, sent: dict[TopicPartition, tuple[int, int]]) -> None:
        for tp in sent:
            state = self._subscription.partitions.get(tp)
            if state is not None:
                state.fetching = False

    def _set_error(self, tp: TopicPartition, seek_epoch: int, error: KafkaError) -> None:
        state = self._subscription.partitions.get(tp)
        if state is not None and state.seek_epoch == seek_epoch:
            state.error = error
            self._data_ready.notify()

    def _partition_data(
        self, tp: TopicPartition, data: Message, fetch_offset: int, seek_epoch: int
    ) -> None:
        state = self._subscription.partitions.get(tp)
        if state is None or state.seek_epoch != seek_epoch or state.fetch_position != fetch_offset:
            return  # unassigned, sought, or reset since the fetch was sent
        code = data["error_code"]
        if code == ErrorCode.NONE:
            state.high_watermark = data["high_watermark"]
            state.last_stable_offset = data.get("last_stable_offset", -1)
            state.log_start_offset = data.get("log_start_offset", -1)
            records = data["records"]
            if not records:
                return
            try:
                decoded, next_offset = decode_partition_records(
                    tp,
                    records,
                    fetch_offset,
                    aborted_transactions=data.get("aborted_transactions"),
                    read_committed=self.config.isolation_level == "read_committed",
                    check_crcs=self.config.check_crcs,
                )
            except ProtocolError as exc:
                state.error = KafkaProtocolError(f"corrupt records fetched from {tp}: {exc}")
                return
            if next_offset > fetch_offset:
                state.add_chunk(FetchedChunk(decoded, next_offset, len(records), seek_epoch))
            return
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            policy = self.config.auto_offset_reset
            if policy == "none":
                state.error = OffsetOutOfRangeError(f"offset {fetch_offset} of {tp}")
            else:
                log.info(
                    "offset %d of %s is out of range; resetting to %s", fetch_offset, tp, policy
                )
                state.request_reset(EARLIEST if policy == "earliest" else LATEST)
            return
        error = error_for_code(code, f"fetching {tp}")
        if code in _STALE_LEADER_ERRORS:
            self._cluster.metadata.invalidate_leader(tp)
            self._hold_back((tp,), self._backoff_s(1))
        elif error.retriable:
            self._hold_back((tp,), self._backoff_s(1))
        else:
            state.error = error
