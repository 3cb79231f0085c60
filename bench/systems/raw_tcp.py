"""The raw ceiling: the same bytes through a plain trio TCP server that appends to a file.

No protocol beyond framing, no index, no validation, no per-record work on the server: what
Python and trio on this machine can do at all, so that every other figure reads as a
fraction of it. The server (`python -m bench.systems.raw_tcp --dir D`) is a subprocess like
every other server and prints `raw ready: port N` once it listens on 127.0.0.1.

Wire format (big-endian). A connection starts with a mode byte, `u16 n` and an n-byte log
name (one file per name, like a topic):
- `P` (produce): then frames, each `u32 body_bytes, u32 records, body`, the body being the
  records as `u32 length, value`. The server appends each frame as it is to the log file
  and answers `u32 records` once it is written; a client keeps up to 8 frames in flight.
- `C` (consume): the server sends `u64 n` and the first n bytes of the log (all of it).
- `F` (follow): the server sends the log from the start and then whatever is appended, until
  the client closes.
Frames are the workload's batch bytes; partitions and keys do not apply (one log).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import trio

from bench.histogram import Histogram
from bench.processes import Server, read_first_line, running
from bench.workload import (
    FLUSH_GRACE_S,
    SETUP_TIMEOUT_S,
    STAMP,
    STAMP_BYTES,
    Job,
    Outcome,
    Pacer,
    split,
    stamped,
)

READY_PREFIX = "raw ready: port "
FRAME_HEADER = struct.Struct(">II")
RECORD_LENGTH = struct.Struct(">I")
ACK = struct.Struct(">I")
HELLO = struct.Struct(">cH")
LOG_LENGTH = struct.Struct(">Q")
FRAMES_IN_FLIGHT = 8
READ_BYTES = 1024 * 1024
FRAME_BYTES_MAX = 64 * 1024 * 1024
START_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parents[2]


class RawTcp:
    name = "raw-tcp"
    durability = "one file in the page cache, no fsync; ack: the frame was written"

    def __init__(self) -> None:
        self.clients = (RawTrioClient(),)

    def missing(self) -> str | None:
        return None

    def version(self) -> str | None:
        return None  # trio's version is listed with the clients

    @contextlib.contextmanager
    def start(self, work_dir: Path, partitions: int) -> Iterator[Server]:
        data_dir = work_dir / "raw"
        data_dir.mkdir()
        argv = [sys.executable, "-m", "bench.systems.raw_tcp", "--dir", str(data_dir)]
        log_path = work_dir / "raw.log"
        with running(
            "raw server", argv, log_path, cwd=REPO, stdout_pipe=True, require_clean_exit=True
        ) as process:
            line = read_first_line(process, START_TIMEOUT_S)
            if not line.startswith(READY_PREFIX):
                raise RuntimeError(f"unexpected first line from the raw server: {line!r}")
            yield Server("127.0.0.1", int(line.removeprefix(READY_PREFIX)), process.pid, data_dir)


# --- server ----------------------------------------------------------------------------


class _Log:
    """The append-only file, and an event for followers that is replaced on every append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = 0
        self.appended = trio.Event()

    def append(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)
        self.appended.set()
        self.appended = trio.Event()


async def _receive_exactly(stream: trio.SocketStream, buffer: bytearray, count: int) -> bool:
    """Move bytes from `stream` into `buffer` until it holds `count`; False at EOF."""
    while len(buffer) < count:
        chunk = await stream.receive_some(max(READ_BYTES, count - len(buffer)))
        if not chunk:
            return False
        buffer += chunk
    return True


async def _serve_produce(stream: trio.SocketStream, log: _Log, buffer: bytearray) -> None:
    while True:
        if not await _receive_exactly(stream, buffer, FRAME_HEADER.size):
            return
        body_bytes, records = FRAME_HEADER.unpack_from(buffer)
        if body_bytes > FRAME_BYTES_MAX:
            raise ValueError(f"frame of {body_bytes} bytes is over the limit")
        frame_bytes = FRAME_HEADER.size + body_bytes
        if not await _receive_exactly(stream, buffer, frame_bytes):
            return
        log.append(memoryview(buffer)[:frame_bytes])
        del buffer[:frame_bytes]
        await stream.send_all(ACK.pack(records))


async def _serve_read(stream: trio.SocketStream, log: _Log, follow: bool) -> None:
    with open(log.path, "rb", buffering=0) as reader:
        if not follow:
            remaining = log.size
            await stream.send_all(LOG_LENGTH.pack(remaining))
            while remaining:
                chunk = reader.read(min(READ_BYTES, remaining))
                await stream.send_all(chunk)
                remaining -= len(chunk)
            return
        position = 0
        while True:
            appended = log.appended
            while position < log.size:
                chunk = reader.read(min(READ_BYTES, log.size - position))
                await stream.send_all(chunk)
                position += len(chunk)
            await appended.wait()


async def _handle(stream: trio.SocketStream, logs: dict[str, _Log], directory: Path) -> None:
    buffer = bytearray()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        if not await _receive_exactly(stream, buffer, HELLO.size):
            return
        mode, name_bytes = HELLO.unpack_from(buffer)
        if not await _receive_exactly(stream, buffer, HELLO.size + name_bytes):
            return
        name = buffer[HELLO.size : HELLO.size + name_bytes].decode()
        del buffer[: HELLO.size + name_bytes]
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad log name {name!r}")
        log = logs.get(name)
        if log is None:
            log = logs[name] = _Log(directory / f"{name}.log")
        if mode == b"P":
            await _serve_produce(stream, log, buffer)
        elif mode == b"C":
            await _serve_read(stream, log, follow=False)
        elif mode == b"F":
            await _serve_follow(stream, log)


async def _serve_follow(stream: trio.SocketStream, log: _Log) -> None:
    """Send the log and what is appended until the client closes its side."""

    async def wait_for_close(cancel_scope: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.receive_some(1)
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_close, nursery.cancel_scope)
        with contextlib.suppress(trio.BrokenResourceError):
            await _serve_read(stream, log, follow=True)


async def serve(directory: Path) -> None:
    """Listen on 127.0.0.1 (a free port), print the ready line, serve until cancelled."""
    logs: dict[str, _Log] = {}
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    print(f"{READY_PREFIX}{port}", flush=True)

    async def handle(stream: trio.SocketStream) -> None:
        await _handle(stream, logs, directory)

    try:
        await trio.serve_listeners(handle, listeners)
    finally:
        for log in logs.values():
            os.close(log.fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the raw ceiling's TCP server")
    parser.add_argument("--dir", required=True, help="directory of the log file")
    args = parser.parse_args(argv)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, Path(args.dir))
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(run)
    return 0


# --- client ----------------------------------------------------------------------------


def _framed(value: bytes) -> bytes:
    return RECORD_LENGTH.pack(len(value)) + value


def _frame(framed_values: Sequence[bytes]) -> bytes:
    """A frame of records already framed by `_framed`."""
    body = b"".join(framed_values)
    return FRAME_HEADER.pack(len(body), len(framed_values)) + body


def _frames_in(buffer: bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """The complete frames at the start of `buffer` as (records, body start, body end),
    and how many bytes they take."""
    frames = []
    offset = 0
    while len(buffer) - offset >= FRAME_HEADER.size:
        body_bytes, records = FRAME_HEADER.unpack_from(buffer, offset)
        end = offset + FRAME_HEADER.size + body_bytes
        if end > len(buffer):
            break
        frames.append((records, offset + FRAME_HEADER.size, end))
        offset = end
    return frames, offset


def _value_offsets(buffer: bytearray, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each record value in the frame body buffer[start:end]."""
    offset = start
    while offset < end:
        (length,) = RECORD_LENGTH.unpack_from(buffer, offset)
        yield offset + RECORD_LENGTH.size, length
        offset += RECORD_LENGTH.size + length


async def _connect(server: Server, mode: bytes, log_name: str) -> trio.SocketStream:
    with trio.fail_after(SETUP_TIMEOUT_S):
        stream = await trio.open_tcp_stream(server.host, server.port)
    name = log_name.encode()
    await stream.send_all(HELLO.pack(mode, len(name)) + name)
    return stream


class RawTrioClient:
    name = "trio"
    modules = ("trio",)

    def produce(self, server: Server, job: Job) -> Outcome:
        return trio.run(_produce, server, job)

    def consume(self, server: Server, job: Job) -> Outcome:
        return trio.run(_consume, server, job)

    def e2e(self, server: Server, job: Job) -> Outcome:
        return trio.run(_e2e, server, job)


async def _send_frames(
    stream: trio.SocketStream,
    frames: AsyncIterator[bytes],
    job: Job,
    histogram: Histogram | None,
) -> int:
    """Send `frames` with up to FRAMES_IN_FLIGHT unacknowledged; the records acknowledged."""
    in_flight: list[tuple[int, int]] = []  # (records, sent at ns), oldest first
    window = trio.Semaphore(FRAMES_IN_FLIGHT)
    acknowledged = 0
    sending_done = False

    async def receive_acks() -> None:
        nonlocal acknowledged
        buffer = bytearray()
        while in_flight or not sending_done:
            if not await _receive_exactly(stream, buffer, ACK.size):
                raise RuntimeError("raw server closed the connection")
            (records,) = ACK.unpack_from(buffer)
            del buffer[: ACK.size]
            expected, sent_ns = in_flight.pop(0)
            assert records == expected, (records, expected)
            if histogram is not None:
                histogram.record(time.monotonic_ns() - sent_ns, records)
            acknowledged += records
            job.progress.advance(records)
            window.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_acks)
        async for frame in frames:
            await window.acquire()
            in_flight.append((FRAME_HEADER.unpack_from(frame)[1], time.monotonic_ns()))
            await stream.send_all(frame)
        sending_done = True
        if not in_flight:
            nursery.cancel_scope.cancel()
    return acknowledged


async def _produce(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, latency=Histogram())
    per_frame = max(1, workload.batch_bytes // (workload.value_bytes + RECORD_LENGTH.size))
    # Framed once up front: the ceiling does no per-record work it can avoid.
    values = [_framed(value) for value in job.values]

    async def frames(start: int, count: int) -> AsyncIterator[bytes]:
        deadline = time.perf_counter() + workload.duration_s
        value_count = len(values)
        for first in range(start, start + count, per_frame):
            if time.perf_counter() > deadline:
                return
            size = min(per_frame, start + count - first)
            yield _frame([values[(first + j) % value_count] for j in range(size)])

    async def produce_share(start: int, count: int) -> None:
        stream = await _connect(server, b"P", job.stream)
        async with stream:
            outcome.records += await _send_frames(
                stream, frames(start, count), job, outcome.latency
            )

    counts = split(workload.records, workload.producers)
    starts = [sum(counts[:index]) for index in range(len(counts))]
    job.meter.start()
    async with trio.open_nursery() as nursery:
        for start, count in zip(starts, counts, strict=True):
            nursery.start_soon(produce_share, start, count)
    job.meter.stop()
    outcome.payload_bytes = outcome.records * workload.value_bytes
    return outcome


async def _consume(server: Server, job: Job) -> Outcome:
    """Read the whole log and walk its frames: records and value bytes per frame header,
    no per-record work."""
    outcome = Outcome(records=0, payload_bytes=0)
    stream = await _connect(server, b"C", job.stream)
    async with stream:
        job.meter.start()
        buffer = bytearray()
        with trio.fail_after(job.workload.duration_s + FLUSH_GRACE_S):
            if not await _receive_exactly(stream, buffer, LOG_LENGTH.size):
                raise RuntimeError("raw server closed the connection")
            (remaining,) = LOG_LENGTH.unpack_from(buffer)
            del buffer[: LOG_LENGTH.size]
            while True:
                frames, taken = _frames_in(buffer)
                for records, start, end in frames:
                    outcome.records += records
                    outcome.payload_bytes += end - start - records * RECORD_LENGTH.size
                    job.progress.advance(records)
                remaining -= taken
                del buffer[:taken]
                if remaining <= 0:
                    break
                chunk = await stream.receive_some(READ_BYTES)
                if not chunk:
                    raise RuntimeError("raw server closed the connection")
                buffer += chunk
        job.meter.stop()
    return outcome


async def _e2e(server: Server, job: Job) -> Outcome:
    workload = job.workload
    outcome = Outcome(records=0, payload_bytes=0, produced=0, latency=Histogram())
    histogram = outcome.latency
    assert histogram is not None
    tails = [value[STAMP_BYTES:] for value in job.values]
    producing_done = False
    all_received = trio.Event()
    last_record_at = 0.0

    async def follow(stream: trio.SocketStream) -> None:
        nonlocal last_record_at
        buffer = bytearray()
        while True:
            chunk = await stream.receive_some(READ_BYTES)
            if not chunk:
                return
            buffer += chunk
            now_ns = time.monotonic_ns()
            frames, taken = _frames_in(buffer)
            for records, start, end in frames:
                for offset, length in _value_offsets(buffer, start, end):
                    histogram.record(now_ns - STAMP.unpack_from(buffer, offset)[0])
                    outcome.payload_bytes += length
                outcome.records += records
                job.progress.advance(records)
            if taken:
                del buffer[:taken]
                last_record_at = time.perf_counter()
            if producing_done and outcome.records >= (outcome.produced or 0):
                all_received.set()

    async def produce_share(count: int, rate: float) -> None:
        pacer = Pacer(rate, count, time.perf_counter())
        deadline = time.perf_counter() + workload.duration_s
        tail_count = len(tails)

        async def paced_frames() -> AsyncIterator[bytes]:
            while not pacer.done and time.perf_counter() <= deadline:
                due = pacer.due(time.perf_counter())
                if due:
                    first = pacer.sent
                    pacer.sent += due
                    yield _frame(
                        [_framed(stamped(tails[(first + j) % tail_count])) for j in range(due)]
                    )
                await trio.sleep(pacer.wait_s(time.perf_counter()))

        stream = await _connect(server, b"P", job.stream)
        async with stream:
            acknowledged = await _send_frames(stream, paced_frames(), job, None)
        outcome.produced = (outcome.produced or 0) + acknowledged

    follower = await _connect(server, b"F", job.stream)
    async with follower, trio.open_nursery() as nursery:
        nursery.start_soon(follow, follower)
        counts = split(workload.records, workload.producers)
        rate = workload.rate_per_s / workload.producers
        job.meter.start()
        async with trio.open_nursery() as producers:
            for count in counts:
                producers.start_soon(produce_share, count, rate)
        producing_done = True
        if outcome.records >= (outcome.produced or 0):
            all_received.set()
        with trio.move_on_after(FLUSH_GRACE_S):
            await all_received.wait()
        job.meter.stop(at=last_record_at or None)
        nursery.cancel_scope.cancel()
    return outcome


if __name__ == "__main__":
    sys.exit(main())
