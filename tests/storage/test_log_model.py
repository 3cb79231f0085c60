"""A hypothesis state machine drives PartitionLog against a list of batches, on both
filesystems: append, read, roll, truncate, retention, delete_records, flush, close, reopen."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.storage.batches import full_scan_indexes, make_batch
from tests.storage.conftest import Clock
from tidelog.client.protocol.records import iter_batches
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import FileSystem, MemoryFileSystem, OsFileSystem
from tidelog.storage.log import PartitionLog

CONFIG = LogConfig(
    segment_bytes=2_000, index_interval_bytes=200, retention_bytes=5_000, retention_ms=-1
)


class LogModel(RuleBasedStateMachine):
    """The model: the batches (base offset, bytes) that a read may return, and the bounds."""

    fs_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.temp_dir: str | None = None
        self.fs: FileSystem
        if self.fs_kind == "memory":
            self.fs = MemoryFileSystem(seed=0)
            root = "/data"
            self.fs.mkdir(root)
        else:
            self.temp_dir = tempfile.mkdtemp(prefix="tidelog-model-")
            self.fs = OsFileSystem()
            root = self.temp_dir
        self.path = f"{root}/t-0"
        self.clock = Clock()
        self.log = PartitionLog.open(self.fs, self.path, CONFIG, self.clock)
        self.batches: list[tuple[int, int, bytes]] = []  # (base offset, next offset, bytes)
        self.start = 0
        self.end = 0
        self.tag = 0

    def teardown(self) -> None:
        self.log.close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _forget_below(self, offset: int) -> None:
        self.batches = [batch for batch in self.batches if batch[1] > offset]

    @rule(
        counts=st.lists(st.integers(1, 5), min_size=1, max_size=3),
        value_bytes=st.integers(1, 80),
        epoch=st.integers(0, 3),
    )
    def append(self, counts: list[int], value_bytes: int, epoch: int) -> None:
        blob = bytearray()
        for count in counts:
            self.tag += 1
            blob += make_batch(count, value_bytes=value_bytes, timestamp_ms=self.tag, tag=self.tag)
        info = self.log.append(blob, leader_epoch=epoch)
        assert info.first_offset == self.end
        position = 0
        for header in info.batches:
            data = bytes(blob[position : position + header.total_bytes])
            self.batches.append((header.base_offset, header.next_offset, data))
            position += header.total_bytes
        self.end = info.last_offset + 1

    @rule(where=st.floats(0, 1), max_bytes=st.integers(0, 3_000), min_one=st.booleans())
    def read(self, where: float, max_bytes: int, min_one: bool) -> None:
        offset = self.start + int(where * (self.end - self.start))
        file_range = self.log.read(offset, max_bytes, min_one_batch=min_one)
        if offset == self.end:
            assert file_range is None
            return
        first = next(i for i, b in enumerate(self.batches) if b[0] <= offset < b[1])
        if file_range is None:
            assert not min_one and len(self.batches[first][2]) > max_bytes
            return
        data = file_range.read_bytes()
        count = len(list(iter_batches(data)))
        expected = self.batches[first : first + count]
        assert data == b"".join(batch[2] for batch in expected)
        assert len(data) <= max_bytes or count == 1
        following = self.batches[first + count : first + count + 1]
        if following and len(data) + len(following[0][2]) <= max_bytes:
            # It stopped early only at a segment end.
            assert following[0][0] in self.log.segment_base_offsets

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule(where=st.floats(0, 1.1))
    def truncate(self, where: float) -> None:
        offset = int(where * self.end)
        self.log.truncate_to(offset)
        if offset >= self.end:
            return
        if offset < self.start:
            self.batches, self.start, self.end = [], offset, offset
            return
        removed = [batch for batch in self.batches if batch[1] > offset]
        self.batches = [batch for batch in self.batches if batch[1] <= offset]
        self.end = removed[0][0]  # whole batches go
        self.start = min(self.start, self.end)

    @rule()
    def retention(self) -> None:
        self.log.enforce_retention(self.clock.now)
        new_start = self.log.log_start_offset
        assert new_start >= self.start
        assert new_start in (self.start, self.end) or any(b[0] == new_start for b in self.batches)
        self.start = new_start
        self._forget_below(new_start)
        segments = self.log.segments
        assert len(segments) == 1 or (
            self.log.size_bytes - segments[0].size_bytes < CONFIG.retention_bytes
        )

    @rule(where=st.floats(0, 1))
    def delete_records(self, where: float) -> None:
        offset = self.start + int(where * (self.end - self.start))
        assert self.log.delete_records(offset) == offset
        self.start = offset
        self._forget_below(offset)

    @rule()
    def flush(self) -> None:
        self.log.flush()
        assert self.log.recovery_point == self.end

    @rule(flush_first=st.booleans())
    def reopen(self, flush_first: bool) -> None:
        if flush_first:
            self.log.flush()
        recovery_point = self.log.recovery_point
        self.log.close()
        self.log = PartitionLog.open(
            self.fs,
            self.path,
            CONFIG,
            self.clock,
            recovery_point=recovery_point,
            log_start_offset=self.start,
        )

    @precondition(lambda self: self.end > self.start)
    @invariant()
    def bounds_and_indexes(self) -> None:
        assert (self.log.log_start_offset, self.log.log_end_offset) == (self.start, self.end)
        for segment in self.log.segments[-2:]:
            indexes = (segment.offset_index.entries(), segment.time_index.entries())
            assert indexes == full_scan_indexes(segment)


class OsLogModel(LogModel):
    fs_kind = "os"


_SETTINGS = settings(max_examples=60, stateful_step_count=50, deadline=None)
TestLogModelMemory = LogModel.TestCase
TestLogModelMemory.settings = _SETTINGS
TestLogModelOs = OsLogModel.TestCase
TestLogModelOs.settings = _SETTINGS
