"""This node's member of the controller quorum, and its replay of the metadata log.

`MetadataQuorum` runs one Raft node (a voter when this node is a controller, an observer
otherwise) from `RaftCore`, `RaftDriver` and `RaftStore` (`<data_dir>/__cluster_metadata-0`,
Kafka's directory) over the quorum transport, and replays what the quorum commits into the
node's `MetadataPublisher`:

- a committed data entry is one controller operation (`serde.decode_records`), published
  whole; an entry that does not decode or does not apply to the image is logged and
  skipped, identically on every node, and the node keeps serving;
- a LeaderChange control entry names the active controller: the image's `controller_id`;
- an installed snapshot (downloaded from the leader) replaces the image;
- the image's `offset` is the metadata offset it holds everything below.

`caught_up` is set once the node has applied everything below the first high watermark it
learned (as the leader: once its own LeaderChange is committed). The node is the *active
controller* while it leads the quorum and has applied its epoch's LeaderChange, so its image
holds every record committed before; `commit(records)` appends an operation there and
returns once it is applied, or raises `NotControllerError` when this node is not the active
controller or stops being it before the entry is applied in its epoch (the entry may still
be committed by a successor: the caller cannot know, as with Kafka's NOT_CONTROLLER).

Snapshots (Kafka's `metadata.log.max.record.bytes.between.snapshots` and
`metadata.log.max.snapshot.interval.ms`): once that many bytes of entries were applied, or
that much time passed with new ones, the image is encoded off the event loop (it is
immutable) and handed to the core, which truncates the log below it. A snapshot holds the
image's records (`snapshot.image_records`), one per entry, as Kafka's snapshots do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import posixpath
import random
from collections.abc import Callable, Mapping

import trio

from tidelog.broker.config import BrokerConfig
from tidelog.broker.controller.raft.core import LEADER_CHANGE, RaftConfig, RaftCore, Ready, Role
from tidelog.broker.controller.raft.driver import RaftDriver, RaftTransport, now_ms
from tidelog.broker.controller.raft.messages import RaftRequest, RaftResponse
from tidelog.broker.controller.raft.records import (
    CONTROL_KEY,
    CONTROL_KEY_VERSION,
    EntryFormatError,
    decode_entries,
    encode_entries,
)
from tidelog.broker.controller.raft.store import RaftStore
from tidelog.broker.controller.raft.types import Entry, PersistedState, Snapshot
from tidelog.broker.controller.raft.wire import METADATA_PARTITION, METADATA_TOPIC
from tidelog.broker.metadata.control_records import LeaderChangeMessage, Voter
from tidelog.broker.metadata.image import MetadataError, MetadataImage
from tidelog.broker.metadata.publisher import MetadataPublisher
from tidelog.broker.metadata.records import MetadataRecord
from tidelog.broker.metadata.serde import (
    MetadataRecordError,
    decode_control_record,
    decode_record,
    decode_records,
    encode_control_record,
    encode_record,
    encode_records,
)
from tidelog.broker.metadata.snapshot import image_records
from tidelog.broker.runner import BlockingRunner
from tidelog.storage.filesystem import FileSystem

log = logging.getLogger(__name__)

METADATA_LOG_DIR = f"{METADATA_TOPIC}-{METADATA_PARTITION}"
SNAPSHOT_BATCH_BYTES_MAX = 1024 * 1024


class NotControllerError(Exception):
    """This node is not the active controller (or stopped being it); `leader_id` is the
    quorum leader it knows of, -1 if none."""

    def __init__(self, leader_id: int) -> None:
        super().__init__(f"not the active controller (leader: {leader_id})")
        self.leader_id = leader_id


def raft_config(config: BrokerConfig) -> RaftConfig:
    return RaftConfig(
        fetch_timeout_ms=config.controller_quorum_fetch_timeout_ms,
        election_timeout_ms=config.controller_quorum_election_timeout_ms,
        election_backoff_max_ms=config.controller_quorum_election_backoff_max_ms,
        request_timeout_ms=config.controller_quorum_request_timeout_ms,
        retry_backoff_ms=config.controller_quorum_retry_backoff_ms,
    )


def leader_change_value(epoch: int, leader_id: int, voters: tuple[int, ...]) -> bytes:
    """Kafka's LeaderChangeMessage value (the key is written by the log)."""
    del epoch  # carried by the batch
    record = LeaderChangeMessage(
        leader_id, tuple(Voter(v) for v in voters), tuple(Voter(v) for v in voters)
    )
    return encode_control_record(record)[1]


def encode_snapshot(image: MetadataImage, epoch: int) -> bytes:
    """The image as snapshot bytes: RecordBatches of one metadata record per entry."""
    entries = [
        Entry(offset, epoch, encode_record(record))
        for offset, record in enumerate(image_records(image))
    ]
    return b"".join(
        encode_entries(entries, timestamp_ms=0, batch_bytes_max=SNAPSHOT_BATCH_BYTES_MAX)
    )


def decode_snapshot(data: bytes, cluster_id: str) -> MetadataImage:
    """The image a snapshot holds (its offset and controller are the caller's to set);
    MetadataRecordError / EntryFormatError / MetadataError for one that does not decode."""
    records = [decode_record(entry.value) for entry in decode_entries(data)]
    return MetadataImage.empty(cluster_id, -1).apply_all(records)


class _Pending:
    __slots__ = ("committed", "done", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.done = trio.Event()
        self.committed = False


class MetadataQuorum:
    """See the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        cluster_id: str,
        fs: FileSystem,
        publisher: MetadataPublisher,
        transport: RaftTransport,
        run_blocking: BlockingRunner,
        rng: random.Random,
        wall_clock_ms: Callable[[], int],
    ) -> None:
        self.config = config
        self.cluster_id = cluster_id
        self.publisher = publisher
        self._run_blocking = run_blocking
        directory = posixpath.join(config.data_dir, METADATA_LOG_DIR)
        self.store = RaftStore.open(fs, directory, now_ms=wall_clock_ms)
        for warning in self.store.warnings:
            log.warning("metadata log: %s", warning)
        persisted = self.store.load()
        self.core = RaftCore(
            config.node_id,
            config.voter_ids,
            persisted,
            now_ms=now_ms(),
            rng=rng,
            config=raft_config(config),
            leader_change_value=leader_change_value,
        )
        self.driver = RaftDriver(
            self.core, self.store, transport=transport, run_blocking=run_blocking, apply=self._apply
        )
        self.caught_up = trio.Event()
        self._changed = trio.Event()
        self._leadership_changed = trio.Event()
        self._active_epoch = -1
        self._pending: dict[int, _Pending] = {}
        self._bytes_since_snapshot = 0
        self._snapshot_due = trio.Event()
        self._snapshot_in_progress = False
        self._role = (self.core.role, self.core.epoch, self.core.leader_id)
        self._loaded = persisted
        """What the store held at open; the snapshot is installed when `serve` starts, so
        that the publisher's subscribers, which subscribe after this, see it."""

    # -- reads

    @property
    def image(self) -> MetadataImage:
        return self.publisher.image

    @property
    def leader_id(self) -> int:
        return self.core.leader_id

    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def next_offset(self) -> int:
        """The offset the next appended entry takes (on the leader)."""
        return self.core.log.end_offset

    @property
    def is_active(self) -> bool:
        """Whether this node is the active controller (see the module docstring)."""
        return self.core.role is Role.LEADER and self._active_epoch == self.core.epoch

    def tentative_image(self) -> MetadataImage:
        """The stored snapshot with every stored entry applied, committed or not: a guess of
        what the quorum holds, for what must be known before it answers (the topics'
        configs that log recovery uses). Entries that do not apply are passed over."""
        image = self.image
        if self._loaded.snapshot is not None:
            with contextlib.suppress(MetadataRecordError, EntryFormatError, MetadataError):
                image = decode_snapshot(self._loaded.snapshot.data, self.cluster_id)
        for entry in self._loaded.entries:
            if entry.control_type is None:
                try:
                    image = image.apply_all(decode_records(entry.value))
                except (MetadataRecordError, MetadataError):
                    continue
        return image

    async def wait_changed(self) -> None:
        """Wait until the image changes next."""
        await self._changed.wait()

    async def wait_leadership_changed(self) -> None:
        """Wait until the quorum's leader, this node's role or its epoch changes next, or
        this node becomes the active controller."""
        await self._leadership_changed.wait()

    def _leadership_moved(self) -> None:
        self._leadership_changed.set()
        self._leadership_changed = trio.Event()

    async def wait_for(self, predicate: Callable[[MetadataImage], bool]) -> MetadataImage:
        """Wait until the image satisfies `predicate`; that image."""
        while not predicate(self.image):
            await self._changed.wait()
        return self.image

    def _publish(self, image: MetadataImage) -> None:
        self.publisher.publish_image(image)
        self._changed.set()
        self._changed = trio.Event()

    # -- running

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the Raft node and the snapshot policy until cancelled; the store is closed
        on the way out."""
        if self._loaded.snapshot is not None:
            self._install(self._loaded.snapshot)
        self._loaded = PersistedState()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.driver.serve)
                nursery.start_soon(self._run_snapshots)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._fail_pending()
            self.store.close()

    def has_leader(self, within_ms: int) -> bool:
        """Whether the quorum can commit, as far as this node sees: it follows a leader, or
        it leads and a majority of the voters (itself included) fetched within the last
        `within_ms`."""
        core = self.core
        if core.role is Role.FOLLOWER:
            return True
        if core.role is not Role.LEADER:
            return False
        info = core.quorum_info()
        if info is None:
            return False
        now = now_ms()
        recent = [
            v
            for v in info.voters
            if v.replica_id == core.node_id or now - v.last_fetch_ms < within_ms
        ]
        return 2 * len(recent) > len(core.voters)

    async def resign(self) -> None:
        """Step down if this node leads, and tell the others (a clean shutdown)."""
        await self.driver.resign(self.config.controller_quorum_request_timeout_ms)

    async def handle(self, source: int, request: RaftRequest) -> RaftResponse:
        return await self.driver.handle(source, request)

    async def commit(self, records: list[MetadataRecord], *, timeout_ms: int) -> int:
        """Append `records` as one operation and wait until it is applied; its offset.
        NotControllerError as the module docstring says; trio.TooSlowError after
        `timeout_ms` (the outcome is then unknown)."""
        if not self.is_active:
            raise NotControllerError(self.leader_id)
        epoch = self.core.epoch
        offset = self.driver.append([encode_records(records)])
        if offset is None:
            raise NotControllerError(self.leader_id)
        pending = self._pending[offset] = _Pending(epoch)
        try:
            with trio.fail_after(timeout_ms / 1000):
                await pending.done.wait()
        finally:
            self._pending.pop(offset, None)
        if not pending.committed:
            raise NotControllerError(self.leader_id)
        return offset

    # -- applying

    def _apply(self, ready: Ready) -> None:
        self._log_role_change()
        if ready.install_snapshot is not None:
            self._install(ready.install_snapshot)
        if ready.committed:
            self._apply_entries(ready.committed)
        target = self.core.catch_up_offset
        if target >= 0 and self.image.offset >= target:
            self.caught_up.set()
        if self._pending and (self.core.role is not Role.LEADER):
            self._fail_pending()

    def _log_role_change(self) -> None:
        role = (self.core.role, self.core.epoch, self.core.leader_id)
        if role != self._role:
            self._role = role
            self._leadership_moved()
            log.info(
                "metadata quorum: %s in epoch %d (leader: %d)",
                role[0].name.lower(),
                role[1],
                role[2],
            )

    def _install(self, snapshot: Snapshot) -> None:
        try:
            image = decode_snapshot(snapshot.data, self.cluster_id)
        except (MetadataRecordError, EntryFormatError, MetadataError) as exc:
            # The store checks a snapshot's CRC, so this is a writer's bug; keep what we have.
            log.error("metadata snapshot %s does not load: %s", snapshot.snapshot_id, exc)
            return
        end = snapshot.snapshot_id.end_offset
        self._publish(
            dataclasses.replace(image, offset=end, controller_id=self.image.controller_id)
        )
        self._bytes_since_snapshot = 0
        for offset in [o for o in self._pending if o < end]:
            self._pending.pop(offset).done.set()

    def _apply_entries(self, entries: list[Entry]) -> None:
        image = self.image
        for entry in entries:
            if entry.offset < image.offset:
                continue  # already in an installed snapshot
            image = self._applied(image, entry)
            self._bytes_since_snapshot += len(entry.value)
            pending = self._pending.pop(entry.offset, None)
            if pending is not None:
                pending.committed = pending.epoch == entry.epoch
                pending.done.set()
        self._publish(image)
        limit = self.config.metadata_log_max_record_bytes_between_snapshots
        if self._bytes_since_snapshot >= limit:
            self._snapshot_due.set()

    def _applied(self, image: MetadataImage, entry: Entry) -> MetadataImage:
        after = entry.offset + 1
        if entry.control_type is not None:
            if entry.control_type != LEADER_CHANGE:
                return dataclasses.replace(image, offset=after)
            leader = self._leader_of(entry)
            if leader == self.config.node_id and entry.epoch == self.core.epoch:
                self._active_epoch = entry.epoch
                self._leadership_moved()
            return dataclasses.replace(image, offset=after, controller_id=leader)
        try:
            applied = image.apply_all(decode_records(entry.value))
        except (MetadataRecordError, MetadataError) as exc:
            log.error("metadata log entry %d is skipped: %s", entry.offset, exc)
            return dataclasses.replace(image, offset=after)
        return dataclasses.replace(applied, offset=after)

    def _leader_of(self, entry: Entry) -> int:
        try:
            key = CONTROL_KEY.pack(CONTROL_KEY_VERSION, LEADER_CHANGE)
            record = decode_control_record(key, entry.value)
        except MetadataRecordError as exc:
            log.error("LeaderChange at %d does not decode: %s", entry.offset, exc)
            return -1
        assert isinstance(record, LeaderChangeMessage)
        return record.leader_id

    def _fail_pending(self) -> None:
        for pending in self._pending.values():
            pending.done.set()
        self._pending.clear()

    # -- snapshots

    async def _run_snapshots(self) -> None:
        interval_ms = self.config.metadata_log_max_snapshot_interval_ms
        while True:
            with trio.move_on_after(interval_ms / 1000 if interval_ms else float("inf")):
                await self._snapshot_due.wait()
            self._snapshot_due = trio.Event()
            await self.snapshot_now()

    async def snapshot_now(self) -> bool:
        """Snapshot the applied image, unless nothing was applied since the last snapshot;
        whether one was taken."""
        image = self.image
        if image.offset <= self.core.log.start_offset or self._snapshot_in_progress:
            return False
        self._snapshot_in_progress = True
        try:
            epoch = self.core.log.epoch_before(image.offset)
            data = await self._run_blocking(functools.partial(encode_snapshot, image, epoch))
            if image.offset <= self.core.log.start_offset:
                return False  # a snapshot installed meanwhile covers it
            self.core.take_snapshot(image.offset, data)
            self.driver.wake()
        finally:
            self._snapshot_in_progress = False
        self._bytes_since_snapshot = 0
        log.info("metadata snapshot at offset %d (%d bytes)", image.offset, len(data))
        return True


def quorum_addresses(config: BrokerConfig) -> Mapping[int, tuple[str, int]]:
    """The other voters' controller listeners, by id."""
    return {i: a for i, a in config.quorum_voters.items() if i != config.node_id}
