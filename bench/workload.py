"""What a benchmark run asks of a client, and what it reports back.

A `Workload` is one measurement's settings (kind, record size, bounds, client knobs); every
system's client adapter gets it in a `Job`, together with the stream to use, the values to
send, a `Meter` to start and stop around the timed part, and a `Progress` to advance. The
adapter returns an `Outcome`; the runner turns it into a `Result` (figures per second and per
million records) for the report.

Record values are JSON-like events padded with words, so compression has something to do.
End-to-end workloads overwrite the first 8 bytes of each value with the send time
(`time.monotonic_ns()`, big-endian; CLOCK_MONOTONIC is one clock for every process on the
machine); the consumer's latency is its own `monotonic_ns()` minus that stamp.
"""

from __future__ import annotations

import random
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TextIO

from bench.histogram import Histogram
from bench.processes import Meter

Kind = Literal["produce", "consume", "e2e"]
KINDS: tuple[Kind, ...] = ("produce", "consume", "e2e")
MB = 1_000_000
VALUE_POOL_BYTES = 4 * MB
"""Distinct values cycled through: several batches' worth, so codecs find no repeats."""
STAMP = struct.Struct(">Q")
STAMP_BYTES = STAMP.size
FLUSH_GRACE_S = 30.0
"""How long a producer may take past its time limit to get what it sent acknowledged, and a
consumer to receive what was acknowledged."""
PACE_TICK_S = 0.001
"""A paced producer sleeps at least this long between sends."""
SETUP_TIMEOUT_S = 30.0
"""Connecting, creating a stream, learning metadata: before the clock starts."""
PADDING_VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu order "
    "invoice customer payment shipped pending refund account session checkout basket "
    "warehouse region europe america asia status ok error retry timeout latency"
)
WORDS = tuple(PADDING_VOCABULARY.split())


@dataclass(frozen=True, slots=True)
class Workload:
    """One measurement. `records` and `duration_s` are both bounds: it stops at whichever
    comes first and reports what it did. Client knobs that a system has no equivalent for
    (acks, compression, linger on a peer) are ignored there; the report says which apply."""

    kind: Kind
    value_bytes: int
    records: int
    duration_s: float
    partitions: int = 1
    keys: int = 0
    """Distinct record keys, cycled; 0 sends no keys."""
    acks: str = "1"
    compression: str = "none"
    linger_ms: int = 5
    batch_bytes: int = 1_000_000
    producers: int = 1
    consumers: int = 1
    rate_per_s: int = 0
    """e2e only: records per second, all producers together."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown workload kind {self.kind!r}")
        if self.value_bytes < 1 or self.records < 1 or self.duration_s <= 0:
            raise ValueError("value_bytes, records and duration_s must be positive")
        if self.kind == "e2e" and (self.value_bytes < STAMP_BYTES or self.rate_per_s < 1):
            raise ValueError(
                f"an e2e workload needs values of at least {STAMP_BYTES} B and a positive rate"
            )
        if min(self.partitions, self.producers, self.consumers) < 1 or self.keys < 0:
            raise ValueError("partitions, producers and consumers must be at least 1")


@dataclass(slots=True)
class Job:
    """What an adapter gets: the workload, the stream (topic, stream, subject) to use, its
    partition count, `values` to cycle through, `keys` (empty: none), `expected` (consume:
    how many records the stream holds), the meter and the progress display."""

    workload: Workload
    stream: str
    values: Sequence[bytes]
    keys: Sequence[bytes]
    meter: Meter
    progress: Progress
    expected: int = 0


@dataclass(slots=True)
class Outcome:
    """What an adapter measured. `records` were delivered (produce) or received (consume,
    e2e); `produced` is what an e2e producer got acknowledged; `latency` holds nanoseconds:
    send to acknowledgement for produce, send to receipt for e2e."""

    records: int
    payload_bytes: int
    failed: int = 0
    first_error: str | None = None
    produced: int | None = None
    latency: Histogram | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, error: object, count: int = 1) -> None:
        self.failed += count
        if self.first_error is None:
            self.first_error = str(error)


@dataclass(frozen=True, slots=True)
class Result:
    """One measurement as reported (JSON via `dataclasses.asdict`)."""

    system: str
    client: str
    workload: Workload
    repeat: int
    expected: int
    """Records that should have been done: requested (produce), available (consume),
    acknowledged by the producer (e2e)."""
    records: int
    failed: int
    first_error: str | None
    seconds: float
    records_per_s: float
    mb_per_s: float
    latency_ms: dict[str, float]
    server_cpu_s_per_m: float | None
    client_cpu_s_per_m: float
    time_limited: bool
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.system}/{self.client}"

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.records == self.expected


@dataclass(frozen=True, slots=True)
class Skipped:
    """A system (or one of its clients) that could not run here, and why."""

    system: str
    client: str
    reason: str


def make_result(system: str, client: str, job: Job, repeat: int, outcome: Outcome) -> Result:
    workload = job.workload
    meter = job.meter
    seconds = meter.seconds
    if workload.kind == "produce":
        expected = workload.records
    elif workload.kind == "consume":
        expected = job.expected
    else:
        expected = outcome.produced if outcome.produced is not None else workload.records
    scale = 1_000_000 / outcome.records if outcome.records else 0.0
    return Result(
        system=system,
        client=client,
        workload=workload,
        repeat=repeat,
        expected=expected,
        records=outcome.records,
        failed=outcome.failed,
        first_error=outcome.first_error,
        seconds=seconds,
        records_per_s=outcome.records / seconds,
        mb_per_s=outcome.payload_bytes / MB / seconds,
        latency_ms=outcome.latency.summary_ms() if outcome.latency is not None else {},
        server_cpu_s_per_m=None if meter.server_cpu_s is None else meter.server_cpu_s * scale,
        client_cpu_s_per_m=meter.client_cpu_s * scale,
        time_limited=outcome.records < expected and outcome.failed == 0,
        notes=tuple(outcome.notes),
    )


def make_values(value_bytes: int, count: int, seed: int) -> list[bytes]:
    """`count` distinct values of exactly `value_bytes` bytes: a small JSON event with a
    random session id, padded with words from a short vocabulary and numbers, so codecs
    shrink them about as much as application text (zstd ~3.5x, lz4 ~2x)."""
    rng = random.Random(seed)
    values = []
    for _ in range(count):
        value = bytearray(
            b'{"user":%d,"session":"%016x","event":"%s","path":"/items/%d","ms":%d,"text":"'
            % (
                rng.randrange(10**6),
                rng.getrandbits(64),
                rng.choice(WORDS).encode(),
                rng.randrange(10**4),
                rng.randrange(10**4),
            )
        )
        while len(value) < value_bytes:
            if rng.random() < 0.2:
                value += b"%d " % rng.randrange(10**6)
            else:
                value += rng.choice(WORDS).encode() + b" "
        del value[max(0, value_bytes - 2) :]
        value += b'"}'[: value_bytes - len(value)]
        values.append(bytes(value))
    return values


def value_pool(value_bytes: int, records: int) -> list[bytes]:
    """The values a workload cycles through: ~4 MB of distinct ones (at least 1,024)."""
    pool_size = max(1024, VALUE_POOL_BYTES // value_bytes)
    return make_values(value_bytes, min(records, pool_size), seed=1)


def make_keys(count: int) -> list[bytes]:
    return [b"key-%06d" % index for index in range(count)]


def stamped(tail: bytes) -> bytes:
    """An e2e value: now (monotonic ns) followed by `tail` (a value without its first 8
    bytes)."""
    return STAMP.pack(time.monotonic_ns()) + tail


def latency_ns(value: bytes, now_ns: int) -> int:
    """`now_ns` minus the stamp at the start of an e2e value."""
    return now_ns - STAMP.unpack_from(value)[0]


def record_chunks(
    job: Job, start: int, count: int, chunk_records: int
) -> Iterator[tuple[int, list[bytes]]]:
    """Values of records `start` .. `start + count - 1` (cycling through `job.values`) as
    (partition, values) chunks of up to `chunk_records`, for systems without a partitioner
    of their own: with keys, a record goes to crc32(key) % partitions (its key only picks
    the partition); without, whole chunks go round-robin."""
    values, keys = job.values, job.keys
    value_count, key_count = len(values), len(keys)
    partitions = job.workload.partitions
    if not key_count:
        for chunk_index, first in enumerate(range(start, start + count, chunk_records)):
            size = min(chunk_records, start + count - first)
            chunk = [values[(first + j) % value_count] for j in range(size)]
            yield (chunk_index + start) % partitions, chunk
        return
    pending: dict[int, list[bytes]] = {}
    for index in range(start, start + count):
        partition = zlib.crc32(keys[index % key_count]) % partitions
        chunk = pending.setdefault(partition, [])
        chunk.append(values[index % value_count])
        if len(chunk) >= chunk_records:
            yield partition, pending.pop(partition)
    yield from pending.items()


def split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` shares that differ by at most one."""
    share, extra = divmod(total, parts)
    return [share + (1 if index < extra else 0) for index in range(parts)]


def partitions_of(consumer: int, consumers: int, partitions: int) -> list[int]:
    """The partitions consumer `consumer` of `consumers` reads: round-robin."""
    return list(range(consumer, partitions, consumers))


def run_paced_producers(
    job: Job, producers: Sequence[Any], produce_share: Callable[[Any, int, float], None]
) -> None:
    """The e2e producing phase: start the meter, then run `produce_share(producer, count,
    rate_per_s)` for each producer in its own thread, the records and the rate split evenly."""
    workload = job.workload
    counts = split(workload.records, len(producers))
    rate_per_s = workload.rate_per_s / len(producers)
    job.meter.start()
    run_threads(
        [
            partial(produce_share, producer, count, rate_per_s)
            for producer, count in zip(producers, counts, strict=True)
        ]
    )


def run_threads(workers: Sequence[Callable[[], None]]) -> None:
    """Run each callable in its own thread (inline when there is one); re-raise the first
    exception any of them raised."""
    if len(workers) == 1:
        workers[0]()
        return
    errors: list[BaseException] = []

    def guarded(worker: Callable[[], None]) -> None:
        try:
            worker()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class Pacer:
    """A fixed send rate: how many records are due by now, and when the next one is."""

    def __init__(self, rate_per_s: float, total: int, start_s: float) -> None:
        self._rate_per_s = rate_per_s
        self._total = total
        self._start_s = start_s
        self.sent = 0

    def due(self, now_s: float) -> int:
        """Records to send now to keep to the rate (never past `total`)."""
        target = min(self._total, int((now_s - self._start_s) * self._rate_per_s) + 1)
        return max(0, target - self.sent)

    @property
    def next_at_s(self) -> float:
        return self._start_s + self.sent / self._rate_per_s

    def wait_s(self, now_s: float) -> float:
        """How long to sleep before the next send: until the next record is due, but at
        least one tick (records due meanwhile go out together, each stamped as it is sent);
        0 when behind."""
        gap_s = self.next_at_s - now_s
        return 0.0 if gap_s <= 0 else max(gap_s, PACE_TICK_S)

    @property
    def done(self) -> bool:
        return self.sent >= self._total


class Progress:
    """A progress line on stderr: a bar redrawn in place on a terminal, else one line as each
    measurement starts and ends. `advance` may be called from any thread."""

    REDRAW_INTERVAL_S = 0.1
    BAR_WIDTH = 24

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._interactive = enabled and self._stream.isatty()
        self._lock = threading.Lock()
        self._label = ""
        self._total = 1
        self._done = 0
        self._started_at = 0.0
        self._drawn_at = 0.0

    def begin(self, label: str, total: int) -> None:
        with self._lock:
            self._label, self._total, self._done = label, max(total, 1), 0
            self._started_at = self._drawn_at = time.monotonic()
        if self._enabled and not self._interactive:
            self._write(f"{label}: {total:,} records ...\n")

    def advance(self, count: int) -> None:
        self._done += count
        if not self._interactive:
            return
        now = time.monotonic()
        if now - self._drawn_at >= self.REDRAW_INTERVAL_S:
            self._drawn_at = now
            self._draw(now)

    def end(self, summary: str) -> None:
        if not self._enabled:
            return
        if self._interactive:
            self._write(f"\r\x1b[K{self._label}: {summary}\n")
        else:
            self._write(f"{self._label}: {summary}\n")

    def note(self, text: str) -> None:
        if self._enabled:
            prefix = "\r\x1b[K" if self._interactive else ""
            self._write(f"{prefix}{text}\n")

    def _draw(self, now: float) -> None:
        with self._lock:
            fraction = min(self._done / self._total, 1.0)
            filled = int(fraction * self.BAR_WIDTH)
            bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
            self._write(
                f"\r\x1b[K{self._label} [{bar}] {fraction:4.0%} "
                f"{self._done:,}/{self._total:,} {now - self._started_at:.1f}s"
            )

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
