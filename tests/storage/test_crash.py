"""Seeded crash points: power loss during appends, rolls, flushes and checkpoints.

Each seed drives a small log through random operations, sometimes fails one operation
midway with a fault point, crashes the MemoryFileSystem (un-fsynced bytes lost or torn,
un-synced directory entries reverted), reopens, and checks:

- no batch below the last successful flush is lost;
- every readable batch is whole and is exactly the batch appended at that offset;
- offsets run from the log start to the log end without a gap or a repeat;
- each segment's rebuilt indexes equal a full scan of its log file;
- the next append continues at the log end.

A failure names its seed; `run_crash_seed(seed)` replays it.
"""

from __future__ import annotations

import random

import pytest

from tests.storage.batches import full_scan_indexes, make_batch, read_everything
from tests.storage.conftest import Clock
from tidelog.client.protocol.records import BatchHeader, iter_batches, parse_batch_header
from tidelog.storage.config import LogConfig
from tidelog.storage.errors import StorageError
from tidelog.storage.filesystem import FaultPoint, MemoryFileSystem
from tidelog.storage.log import PartitionLog
from tidelog.storage.log_directory import LogDirectory

CRASH_SEEDS = 1_000
SEEDS_PER_CASE = 100


class CrashRun:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fs = MemoryFileSystem(seed=seed)
        self.clock = Clock()
        self.config = LogConfig(
            segment_bytes=self.rng.choice([1_600, 3_000, 6_000]),
            index_interval_bytes=self.rng.choice([0, 150, 400]),
            retention_ms=-1,
        )
        self.appended: dict[int, bytes] = {}
        self.durable_offset = 0
        self.tag = 0

    def open(self) -> tuple[LogDirectory, PartitionLog]:
        directory = LogDirectory.open("/data", self.fs, self.clock, config_for=self._config)
        return directory, directory.get_or_create("t", 0, self.config)

    def _config(self, _topic: str) -> LogConfig:
        return self.config

    def operate(self, directory: LogDirectory, log: PartitionLog) -> None:
        action = self.rng.random()
        if action < 0.65:
            blob = bytearray()
            for _ in range(self.rng.randint(1, 3)):
                self.tag += 1
                blob += make_batch(
                    self.rng.randint(1, 6),
                    value_bytes=self.rng.randint(1, 60),
                    timestamp_ms=1_000 + self.tag * self.rng.randint(0, 3),
                    tag=self.tag,
                )
            info = log.append(blob, leader_epoch=self.rng.randint(0, 2))
            position = 0
            for header in info.batches:
                self.appended[header.base_offset] = bytes(
                    blob[position : position + header.total_bytes]
                )
                position += header.total_bytes
        elif action < 0.8:
            log.roll()
        elif action < 0.92:
            end = log.log_end_offset
            log.flush()
            self.durable_offset = max(self.durable_offset, end)
        else:
            directory.checkpoint()

    def cycle(self) -> None:
        directory, log = self.open()
        for _ in range(self.rng.randint(1, 20)):
            self.operate(directory, log)
        if self.rng.random() < 0.5:
            self.fs.faults.arm(
                self.rng.choice(list(FaultPoint)), written_bytes=self.rng.randint(0, 80)
            )
            try:
                for _ in range(3):
                    self.operate(directory, log)
            except (StorageError, OSError):
                pass
        self.fs.crash()
        self.check()

    def fail(self, message: str) -> None:
        raise AssertionError(f"crash seed {self.seed}: {message}")

    def check(self) -> None:
        _, log = self.open()
        batches = read_everything(log)
        end = log.log_end_offset
        if end < self.durable_offset:
            self.fail(f"log end {end} is below the flushed offset {self.durable_offset}")
        expected_offset = log.log_start_offset
        for header, data in batches:
            if header.base_offset != expected_offset:
                self.fail(f"batch at {header.base_offset}, expected {expected_offset}")
            if self.appended.get(header.base_offset) != data:
                self.fail(f"batch at {header.base_offset} differs from the one appended")
            expected_offset = header.next_offset
        if expected_offset != end:
            self.fail(f"batches end at {expected_offset}, log end is {end}")
        for segment in log.segments:
            if (segment.offset_index.entries(), segment.time_index.entries()) != (
                full_scan_indexes(segment)
            ):
                self.fail(f"indexes of {segment} differ from a full scan")
        self.tag += 1
        info = log.append(make_batch(1, tag=self.tag), leader_epoch=0)
        if info.first_offset != end:
            self.fail(f"append after recovery got offset {info.first_offset}, expected {end}")
        self.appended[end] = _written_batch(log, end)
        log.close()


def _written_batch(log: PartitionLog, offset: int) -> bytes:
    file_range = log.read(offset, 1)
    assert file_range is not None
    data = file_range.read_bytes()
    header: BatchHeader = next(iter_batches(data))
    assert parse_batch_header(data).base_offset == header.base_offset == offset
    return data


def run_crash_seed(seed: int) -> None:
    run = CrashRun(seed)
    for _ in range(1 + (seed % 4 == 0)):
        run.cycle()


@pytest.mark.parametrize("first_seed", range(0, CRASH_SEEDS, SEEDS_PER_CASE))
def test_seeded_crash_points(first_seed: int) -> None:
    for seed in range(first_seed, first_seed + SEEDS_PER_CASE):
        run_crash_seed(seed)
