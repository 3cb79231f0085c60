"""Storage benchmark: PartitionLog appends against plain sequential writes, and the read path.

Both writers put the same bytes (64 KiB batches of 1 KiB records) into files in the same
directory, taking turns every 4 MiB; the best of the rounds of each is compared. The ratio
`log / plain` is what the storage layer costs on top of the page cache (target >= 0.8).
The read path walks the whole log with `PartitionLog.read` ranges and copies them out
(`read_bytes`) or sends them to /dev/null (`os.sendfile`), as a fetch does.

    python -m bench.storage [--total-mib 512] [--rounds 3] [--dir PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tidelog.client.protocol.records import RecordInput, encode_batch, parse_batch_header
from tidelog.storage.config import LogConfig
from tidelog.storage.filesystem import OsFileSystem
from tidelog.storage.log import PartitionLog

MiB = 1024 * 1024
RECORD_VALUE_BYTES = 1024
RECORDS_PER_BATCH = 64
FETCH_MAX_BYTES = 1 * MiB
CHUNK_BYTES = 4 * MiB


@dataclass(frozen=True)
class StorageBenchResult:
    batch_bytes: int
    total_bytes: int
    plain_write_mb_s: float
    log_append_mb_s: float
    read_bytes_mb_s: float
    sendfile_mb_s: float

    @property
    def ratio(self) -> float:
        return self.log_append_mb_s / self.plain_write_mb_s


def _batch() -> bytes:
    value = bytes(range(256)) * (RECORD_VALUE_BYTES // 256)
    records = [
        RecordInput(value=value, key=b"key-%d" % index, timestamp_ms=1_700_000_000_000 + index)
        for index in range(RECORDS_PER_BATCH)
    ]
    return encode_batch(records)


def _open_log(directory: str) -> PartitionLog:
    return PartitionLog.open(OsFileSystem(), directory, LogConfig(), lambda: 1_700_000_000_000)


def _write_seconds(
    plain_path: str, log_dir: str, batch: bytes, batches: int, chunk_batches: int
) -> tuple[float, float]:
    """Seconds spent by plain writes and by log appends of the same batches.

    The two writers take turns chunk by chunk, so both meet the same page cache state and
    the same noise from the rest of the machine.
    """
    shutil.rmtree(log_dir, ignore_errors=True)
    log = _open_log(log_dir)
    buffer = bytearray(batch)  # a broker appends from its (writable) receive buffer
    fd = os.open(plain_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    plain_seconds = log_seconds = 0.0
    try:
        for first in range(0, batches, chunk_batches):
            chunk = range(min(chunk_batches, batches - first))
            started = time.perf_counter()
            for _ in chunk:
                os.write(fd, batch)
            plain_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for _ in chunk:
                log.append(buffer, leader_epoch=0)
            log_seconds += time.perf_counter() - started
        assert log.log_end_offset == batches * RECORDS_PER_BATCH
        assert log.size_bytes == os.fstat(fd).st_size == batches * len(batch)
    finally:
        os.close(fd)
        log.close()
    return plain_seconds, log_seconds


def _read_seconds(directory: str, *, sendfile: bool) -> tuple[float, int]:
    log = _open_log(directory)
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        offset = log.log_start_offset
        total_bytes = 0
        started = time.perf_counter()
        while (file_range := log.read(offset, FETCH_MAX_BYTES)) is not None:
            fd = file_range.fileno()
            if sendfile and fd is not None:
                sent = 0
                while sent < file_range.length:
                    sent += os.sendfile(
                        sink, fd, file_range.position + sent, file_range.length - sent
                    )
                last = parse_batch_header(file_range.file.pread(file_range.position, 61))
                offset = last.base_offset + (file_range.length // last.total_bytes) * (
                    last.last_offset_delta + 1
                )
            else:
                data = file_range.read_bytes()
                position = 0
                while position < len(data):
                    header = parse_batch_header(data, position)
                    position += header.total_bytes
                offset = header.next_offset
            total_bytes += file_range.length
        return time.perf_counter() - started, total_bytes
    finally:
        os.close(sink)
        log.close()


def run(total_bytes: int, rounds: int, work_dir: str) -> StorageBenchResult:
    batch = _batch()
    batches = max(1, total_bytes // len(batch))
    written_bytes = batches * len(batch)
    plain_path = os.path.join(work_dir, "plain.bin")
    log_dir = os.path.join(work_dir, "bench-0")
    chunk_batches = max(1, CHUNK_BYTES // len(batch))
    plain_best = log_best = float("inf")
    for _ in range(rounds):
        plain_seconds, log_seconds = _write_seconds(
            plain_path, log_dir, batch, batches, chunk_batches
        )
        plain_best = min(plain_best, plain_seconds)
        log_best = min(log_best, log_seconds)
    os.remove(plain_path)
    read_best = sendfile_best = float("inf")
    for _ in range(rounds):
        seconds, read_bytes = _read_seconds(log_dir, sendfile=False)
        assert read_bytes == written_bytes
        read_best = min(read_best, seconds)
        seconds, read_bytes = _read_seconds(log_dir, sendfile=True)
        assert read_bytes == written_bytes
        sendfile_best = min(sendfile_best, seconds)
    shutil.rmtree(log_dir, ignore_errors=True)
    return StorageBenchResult(
        batch_bytes=len(batch),
        total_bytes=written_bytes,
        plain_write_mb_s=written_bytes / MiB / plain_best,
        log_append_mb_s=written_bytes / MiB / log_best,
        read_bytes_mb_s=written_bytes / MiB / read_best,
        sendfile_mb_s=written_bytes / MiB / sendfile_best,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-mib", type=int, default=512, help="bytes written per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best counts")
    parser.add_argument("--dir", help="work directory (default: a temporary directory)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    total_bytes = 4 * MiB if args.smoke else args.total_mib * MiB
    rounds = 1 if args.smoke else args.rounds
    work_dir = tempfile.mkdtemp(prefix="tidelog-bench-", dir=args.dir)
    try:
        result = run(total_bytes, rounds, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(
        f"storage: {result.total_bytes / MiB:.0f} MiB in {result.batch_bytes}-byte batches "
        f"of {RECORDS_PER_BATCH} x {RECORD_VALUE_BYTES} B records, best of {rounds}"
    )
    print(f"plain sequential write   {result.plain_write_mb_s:9.1f} MB/s")
    print(f"PartitionLog.append      {result.log_append_mb_s:9.1f} MB/s")
    print(f"ratio log/plain          {result.ratio:9.2f}  (target >= 0.80)")
    print(f"read ranges + read_bytes {result.read_bytes_mb_s:9.1f} MB/s")
    print(f"read ranges + sendfile   {result.sendfile_mb_s:9.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
