"""LogDirectory: every partition log under one data directory, and their checkpoint files.

Layout of a data directory::

    <topic>-<partition>/                  one PartitionLog per partition
    <topic>-<partition>.<n>-delete/       a partition being deleted (finished at open)
    recovery-point-offset-checkpoint      rows `<topic> <partition> <recovery point>`
    log-start-offset-checkpoint           rows `<topic> <partition> <log start offset>`

Both checkpoints use `storage.checkpoint` (atomic replace, xxh3 checksum). A missing or
corrupt checkpoint is logged and treated as empty: recovery then scans those logs fully and
takes their log start from their first segment, which is slower but loses nothing.

Threading: like PartitionLog, one owner thread, except that `checkpoint` and
`PartitionLog.flush` may run in worker threads.
"""

from __future__ import annotations

import logging
import posixpath
import re
import threading
from collections.abc import Callable, Iterator

from tidelog.storage.checkpoint import (
    TEMP_SUFFIX,
    decode_table,
    encode_table,
    read_file_if_exists,
    write_atomic,
)
from tidelog.storage.config import LogConfig
from tidelog.storage.errors import CorruptCheckpointError, StorageError
from tidelog.storage.filesystem import FileSystem
from tidelog.storage.log import PartitionLog

logger = logging.getLogger(__name__)

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
DELETE_SUFFIX = "-delete"
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

TopicPartition = tuple[str, int]


def partition_dir_name(topic: str, partition: int) -> str:
    if not _TOPIC_NAME.fullmatch(topic) or partition < 0:
        raise ValueError(f"invalid topic partition {topic!r} {partition}")
    return f"{topic}-{partition}"


def parse_partition_dir_name(name: str) -> TopicPartition | None:
    """(topic, partition) of a `<topic>-<partition>` directory name, else None."""
    topic, dash, partition = name.rpartition("-")
    if not dash or not partition.isdigit() or not _TOPIC_NAME.fullmatch(topic):
        return None
    return topic, int(partition)


class LogDirectory:
    """Opens, creates, deletes and checkpoints the partition logs of one data directory."""

    def __init__(
        self,
        fs: FileSystem,
        data_dir: str,
        now_ms: Callable[[], int],
        config_for: Callable[[str], LogConfig],
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self.fs = fs
        self._reserved = reserved
        self.data_dir = data_dir
        self._now_ms = now_ms
        self._config_for = config_for
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._checkpoint_lock = threading.Lock()
        self._deletions = 0

    @classmethod
    def open(
        cls,
        data_dir: str,
        fs: FileSystem,
        now_ms: Callable[[], int],
        *,
        config_for: Callable[[str], LogConfig] | None = None,
        reserved: frozenset[str] = frozenset(),
    ) -> LogDirectory:
        """Open `data_dir` (created if missing) and recover every partition log in it.

        `config_for(topic)` gives each discovered log its config (default: LogConfig()).
        Directories named in `reserved` belong to someone else (the metadata log) and are
        passed over.
        Blocks on I/O: run it before serving, or off the event loop.
        """
        if not fs.is_dir(data_dir):
            fs.mkdir(data_dir)
            fs.fsync_dir(posixpath.dirname(data_dir.rstrip("/")) or ".")
        directory = cls(fs, data_dir, now_ms, config_for or (lambda _topic: LogConfig()), reserved)
        directory._load()
        return directory

    def _path(self, name: str) -> str:
        return posixpath.join(self.data_dir, name)

    def _read_offsets(self, name: str) -> dict[TopicPartition, int]:
        data = read_file_if_exists(self.fs, self._path(name))
        if data is None:
            logger.info("%s: no %s; logs will be scanned in full", self.data_dir, name)
            return {}
        try:
            return {
                (topic, int(partition)): int(offset)
                for topic, partition, offset in decode_table(data, 3)
            }
        except (CorruptCheckpointError, ValueError) as exc:
            logger.warning("%s: %s is corrupt (%s); rebuilding it", self.data_dir, name, exc)
            return {}

    def _load(self) -> None:
        recovery_points = self._read_offsets(RECOVERY_POINT_CHECKPOINT)
        log_start_offsets = self._read_offsets(LOG_START_OFFSET_CHECKPOINT)
        for name in self.fs.listdir(self.data_dir):
            path = self._path(name)
            if name.endswith(TEMP_SUFFIX):
                logger.info("%s: removing leftover temporary file %s", self.data_dir, name)
                self.fs.remove(path)
                continue
            if not self.fs.is_dir(path) or name in self._reserved:
                continue
            if name.endswith(DELETE_SUFFIX):
                self._remove_tree(path)
                continue
            topic_partition = parse_partition_dir_name(name)
            if topic_partition is None:
                logger.warning("%s: ignoring unknown directory %s", self.data_dir, name)
                continue
            self._logs[topic_partition] = PartitionLog.open(
                self.fs,
                path,
                self._config_for(topic_partition[0]),
                self._now_ms,
                recovery_point=recovery_points.get(topic_partition, 0),
                log_start_offset=log_start_offsets.get(topic_partition, 0),
                on_checkpoint_needed=self.checkpoint,
            )
        self.fs.fsync_dir(self.data_dir)
        self.checkpoint()

    def _remove_tree(self, path: str) -> None:
        for name in self.fs.listdir(path):
            self.fs.remove(posixpath.join(path, name))
        self.fs.rmdir(path)
        self.fs.fsync_dir(self.data_dir)

    # -- logs

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def __iter__(self) -> Iterator[tuple[TopicPartition, PartitionLog]]:
        return iter(list(self._logs.items()))

    def __len__(self) -> int:
        return len(self._logs)

    def get_or_create(self, topic: str, partition: int, config: LogConfig) -> PartitionLog:
        """The partition's log, created empty if missing; an existing log takes `config`."""
        log = self._logs.get((topic, partition))
        if log is not None:
            if log.config != config:
                log.update_config(config)
            return log
        log = PartitionLog.open(
            self.fs,
            self._path(partition_dir_name(topic, partition)),
            config,
            self._now_ms,
            on_checkpoint_needed=self.checkpoint,
        )
        self._logs[(topic, partition)] = log
        return log

    def delete(self, topic: str, partition: int) -> bool:
        """Delete the partition's log and files; False if there was none.

        The directory is first renamed to `<name>.<n>-delete` so that a crash midway leaves
        nothing that could be mistaken for the partition; open finishes the removal.
        """
        log = self._logs.pop((topic, partition), None)
        if log is None:
            return False
        log.close()
        name = partition_dir_name(topic, partition)
        self._deletions += 1
        doomed = self._path(f"{name}.{self._now_ms()}-{self._deletions}{DELETE_SUFFIX}")
        self.fs.rename(self._path(name), doomed)
        self.fs.fsync_dir(self.data_dir)
        # The checkpoints must forget the partition before a new one of that name appears.
        self.checkpoint()
        self._remove_tree(doomed)
        return True

    # -- durability

    def checkpoint(self) -> None:
        """Write both checkpoint files atomically from the logs' current state."""
        with self._checkpoint_lock:
            logs = sorted(self._logs.items())
            write_atomic(
                self.fs,
                self._path(RECOVERY_POINT_CHECKPOINT),
                encode_table((t, p, log.recovery_point) for (t, p), log in logs),
            )
            write_atomic(
                self.fs,
                self._path(LOG_START_OFFSET_CHECKPOINT),
                encode_table((t, p, log.log_start_offset) for (t, p), log in logs),
            )

    def close(self) -> None:
        """Flush every log, checkpoint, and close: the next open scans nothing. Blocks."""
        try:
            for (topic, partition), log in sorted(self._logs.items()):
                try:
                    log.flush()
                except StorageError as exc:
                    # The log stays at its last recovery point; the next open recovers it.
                    logger.error("%s-%d: flush at close failed: %s", topic, partition, exc)
            self.checkpoint()
        finally:
            for log in self._logs.values():
                log.close()
            self._logs.clear()
