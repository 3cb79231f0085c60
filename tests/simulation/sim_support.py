"""What the deterministic simulations share: broker processes over one host's disk, the
trace, the seeded trio scheduler, and the recorded client operations.

- `BrokerProcess`: one broker machine. Its `MemoryFileSystem` survives restarts; each
  `start` is a new process (a `Broker` over a `ProcessFileSystem`), which `kill` ends as
  kill -9 does (nothing more of it reaches the disk; the page cache survives) and, with
  `power_loss`, as a power cut does (whatever was not fsynced is lost or torn).
- `traced_logging`: every tidelog log line, with its node and trio time, goes to a trace;
  `trace_hash` is the SHA-256 of a trace (equal traces, equal hashes).
- `seeded_scheduler`: trio's scheduler shuffles runnable tasks with its own random source;
  this seeds it and turns on trio's deterministic mode for one run.
- `ClientOps`: a producer's sends, a consumer's polls and a final read of partitions from
  their start, each recorded in a `HistoryRecorder` for the checker.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import trio

from tests.simulation.checker import FINAL_READER, Assign, HistoryRecorder, Poll, Seek, Send
from tidelog.broker.config import BrokerConfig
from tidelog.broker.log_context import NodeIdFilter
from tidelog.broker.memory_network import MemoryNetwork
from tidelog.broker.runner import run_inline
from tidelog.broker.server import Broker
from tidelog.client.consumer import Consumer
from tidelog.client.producer import Producer
from tidelog.client.structs import ConsumerRecord, TopicPartition
from tidelog.storage.filesystem import FileHandle, MemoryFileSystem

SIM_EPOCH_MS = 1_780_000_000_000
"""The virtual wall clock at trio time 0 (a day in 2026)."""


def sim_now_ms() -> int:
    """The virtual wall clock: `SIM_EPOCH_MS` + trio time, in milliseconds."""
    return SIM_EPOCH_MS + int(trio.current_time() * 1000)


class ProcessFileSystem:
    """The disk as one broker process sees it: after `kill()` every call, and every call on
    a file the process opened, raises OSError — nothing of a dead process reaches the disk."""

    def __init__(self, disk: MemoryFileSystem) -> None:
        self.disk = disk
        self.dead = False

    def kill(self) -> None:
        self.dead = True

    def _alive(self) -> MemoryFileSystem:
        if self.dead:
            raise OSError(errno.EIO, "the process is dead")
        return self.disk

    def open(self, path: str, *, create: bool = False) -> FileHandle:
        return _ProcessFile(self, self._alive().open(path, create=create))

    def read_file(self, path: str) -> bytes:
        return self._alive().read_file(path)

    def rename(self, src: str, dst: str) -> None:
        self._alive().rename(src, dst)

    def remove(self, path: str) -> None:
        self._alive().remove(path)

    def listdir(self, path: str) -> list[str]:
        return self._alive().listdir(path)

    def mkdir(self, path: str) -> None:
        self._alive().mkdir(path)

    def rmdir(self, path: str) -> None:
        self._alive().rmdir(path)

    def fsync_dir(self, path: str) -> None:
        self._alive().fsync_dir(path)

    def exists(self, path: str) -> bool:
        return self._alive().exists(path)

    def is_dir(self, path: str) -> bool:
        return self._alive().is_dir(path)

    def file_size(self, path: str) -> int:
        return self._alive().file_size(path)


class _ProcessFile:
    def __init__(self, process: ProcessFileSystem, handle: FileHandle) -> None:
        self._process = process
        self._handle = handle

    def _live(self) -> FileHandle:
        self._process._alive()
        return self._handle

    @property
    def path(self) -> str:
        return self._handle.path

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._live().append(data)

    def pread(self, position: int, size: int) -> bytes:
        return self._live().pread(position, size)

    def size(self) -> int:
        return self._live().size()

    def truncate(self, size: int) -> None:
        self._live().truncate(size)

    def fsync(self) -> None:
        self._live().fsync()

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self._live().close()


class BrokerProcess:
    """One broker host (see the module docstring). `broker` is the current process's
    `Broker` (None before the first start); `running` says whether it is alive."""

    def __init__(
        self,
        network: MemoryNetwork,
        host: str,
        config: BrokerConfig,
        *,
        disk_seed: int,
        rng: random.Random,
    ) -> None:
        self.network = network
        self.host = host
        self.config = config
        self.disk = MemoryFileSystem(seed=disk_seed)
        self.rng = rng
        self.broker: Broker | None = None
        self.process: ProcessFileSystem | None = None
        self.scope: trio.CancelScope | None = None
        self.incarnations = 0
        self.stopped = trio.Event()
        """Set when the current process has ended (killed, or its `serve` returned)."""

    @property
    def running(self) -> bool:
        return self.broker is not None and not self.stopped.is_set()

    async def start(self, nursery: trio.Nursery, *, wait: bool = True) -> Broker:
        """Start a new process in `nursery`; with `wait`, return once it serves (its
        `Broker.serve` reported started), else at once."""
        assert not self.running, f"{self.host} is already running"
        self.incarnations += 1
        process = self.process = ProcessFileSystem(self.disk)
        broker = self.broker = Broker(
            self.config,
            network=self.network.host(self.host),
            fs=process,
            now_ms=sim_now_ms,
            random=random.Random(self.rng.getrandbits(64)),
            run_blocking=run_inline,
        )
        scope = self.scope = trio.CancelScope()
        stopped = self.stopped = trio.Event()
        if wait:
            await nursery.start(self._run, broker, process, scope, stopped)
        else:
            nursery.start_soon(self._run, broker, process, scope, stopped)
        return broker

    @staticmethod
    async def _run(
        broker: Broker,
        process: ProcessFileSystem,
        scope: trio.CancelScope,
        stopped: trio.Event,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                try:
                    await broker.serve(task_status=task_status)
                except OSError:
                    # A killed process fails on its first disk access after the kill.
                    assert process.dead, "a live broker failed on its disk"
        finally:
            stopped.set()

    def kill(self, *, power_loss: bool) -> None:
        """kill -9 (and, with `power_loss`, the machine's power): the process does nothing
        more; with power loss whatever was not fsynced is lost or torn."""
        assert self.process is not None and self.scope is not None
        self.process.kill()
        self.scope.cancel()
        self.stopped.set()
        self.network.crash(self.host)
        if power_loss:
            self.disk.crash()


class _TraceHandler(logging.Handler):
    def __init__(self, trace: list[str]) -> None:
        super().__init__(logging.INFO)
        self.trace = trace
        self.addFilter(NodeIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        now = trio.current_time() if _in_trio() else -1.0
        node = getattr(record, "node_id", "-")
        self.trace.append(
            f"{now:.6f} log node={node} {record.levelname} {record.name}: {record.getMessage()}"
        )


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


@contextmanager
def traced_logging(trace: list[str]) -> Iterator[None]:
    """While open, tidelog's log lines of level INFO and up go to `trace`, and only there
    (not to the root logger: a run logs thousands of lines, which the trace keeps)."""
    handler = _TraceHandler(trace)
    logger = logging.getLogger("tidelog")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def trace_hash(trace: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in trace:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class seeded_scheduler:
    """Seeds trio's scheduler and turns on its deterministic mode for one run. trio keeps
    both in `trio._core._run` (private: the same switch trio's Hypothesis plugin uses)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        from trio._core import _run

        self._saved = (_run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate())
        _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
        _run._r.seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        from trio._core import _run

        _run._ALLOW_DETERMINISTIC_SCHEDULING = self._saved[0]  # type: ignore[misc]
        _run._r.setstate(self._saved[1])


def _polled(records: Iterable[ConsumerRecord]) -> tuple[tuple[int, str], ...]:
    return tuple((r.offset, (r.value or b"").decode()) for r in records)


class ClientOps:
    """Client operations, each recorded in `recorder`; `note` adds a line to the trace."""

    def __init__(self, recorder: HistoryRecorder, note: Callable[[str], None]) -> None:
        self.recorder = recorder
        self.note = note

    async def send(self, producer: Producer, process: str, tp: TopicPartition, value: str) -> None:
        """One send: invoked, then ok with its offset, or info (it may or may not have been
        written) when it raises."""
        self.recorder.invoke(process, Send(tp, value))
        try:
            future = await producer.send(tp.topic, value.encode(), partition=tp.partition)
            metadata = await future
        except Exception as exc:  # indeterminate: it may or may not have been written
            self.note(f"{process} send {value} failed: {type(exc).__name__}: {exc}")
            self.recorder.info(process, Send(tp, value))
            return
        self.recorder.ok(process, Send(tp, value, metadata.offset))

    async def consume(
        self, consumer: Consumer, process: str, partitions: Sequence[TopicPartition], end: float
    ) -> None:
        """Read `partitions` from offset 0 until trio time `end`, recording every poll; a
        failed poll is noted and retried after a second."""
        consumer.assign(list(partitions))
        self.recorder.ok(process, Assign(tuple(partitions)))
        for tp in partitions:
            consumer.seek(tp, 0)
            self.recorder.ok(process, Seek(tp, 0))
        while trio.current_time() < end:
            try:
                batches = await consumer.getmany(timeout_ms=1_000)
            except Exception as exc:
                self.note(f"{process} poll failed: {type(exc).__name__}: {exc}")
                await trio.sleep(1)
                continue
            for tp in partitions:
                records = batches.get(tp)
                if records:
                    self.recorder.ok(process, Poll(tp, _polled(records)))

    async def final_read(self, consumer: Consumer, partitions: Sequence[TopicPartition]) -> None:
        """Read `partitions` from their start to their end offsets as of now, as the
        checker's final reader."""
        consumer.assign(list(partitions))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
            self.recorder.ok(FINAL_READER, Seek(tp, 0))
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batches = await consumer.getmany(timeout_ms=1_000)
            for tp, records in sorted(batches.items()):
                self.recorder.ok(FINAL_READER, Poll(tp, _polled(records)))
        self.note(f"final read: ends {sorted(ends.items())}")
