"""Broker benchmark: drive a tidelog broker with confluent-kafka (librdkafka).

    python -m bench.broker [--records N] [--duration-s S] [--sizes 100,1024] [--acks 1,all]
                           [--compression none,lz4,zstd] [--partitions P]
                           [--bootstrap HOST:PORT] [--dir PATH] [--smoke] [--json]

Unless `--bootstrap` names a running broker, the benchmark starts one as a subprocess
(`python -m broker.cli broker --config <tmp>/broker.toml`: port 0, a temporary data
directory, `num.partitions = P`, otherwise the defaults `tidelog dev` runs with) and stops it
with SIGTERM at the end.

For every (record size, acks, compression) it runs two workloads on a fresh, auto-created topic:

- produce: N records through one `confluent_kafka.Producer` (linger.ms 5, 1 MB batches, a
  queue that holds the whole run). Latency is librdkafka's own per-record figure, from the
  produce() call to the broker's acknowledgement. The producer enqueues as fast as it can, so
  the percentiles are latency at saturation: mostly time spent queued behind earlier records,
  as in Kafka's producer-perf-test with no throttle.
- consume: the same records read back from offset 0 by one `confluent_kafka.Consumer` with
  `assign` (the broker does not serve groups; `group.id` is set only because librdkafka wants
  one, and nothing is committed).

Figures: records/s and MB/s of payload (values only, MB = 10^6 bytes); CPU seconds per
million records of the broker process (from /proc/PID/stat, or psutil where /proc is absent;
only for a broker this benchmark started) and of this process (librdkafka's threads
included); the bytes the partition logs hold after the produce (shows what compression
saved; only for a broker this benchmark started).

Values are JSON-like events padded with words, so compression has something to do. Each
workload stops at N records or `--duration-s` seconds, whichever comes first, and reports
what it actually did. `--smoke` runs 2,000 records of 100 B with acks 1, once uncompressed and
once with zstd, to check that the benchmark works. `--json` prints the results as JSON
instead of tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import confluent_kafka

from storage.log_directory import partition_dir_name
from storage.segment import LOG_SUFFIX

REPO = Path(__file__).resolve().parents[1]
READY_PREFIX = "tidelog ready: bootstrap "
BROKER_START_TIMEOUT_S = 30.0
BROKER_STOP_TIMEOUT_S = 20.0
CLIENT_SETUP_TIMEOUT_S = 20.0
FLUSH_GRACE_S = 30.0
"""How long a producer may take, past `--duration-s`, to get the records it queued acked."""

MB = 1_000_000
VALUE_POOL_BYTES = 4 * MB
"""Distinct values cycled through: several batches' worth, so codecs find no repeats."""
PERCENTILES = (50.0, 95.0, 99.0, 99.9)
ACKS_CHOICES = ("0", "1", "all")
COMPRESSION_CHOICES = ("none", "gzip", "snappy", "lz4", "zstd")
SMALL_RECORDS_DEFAULT = 200_000
LARGE_RECORDS_DEFAULT = 100_000
LARGE_RECORD_BYTES = 1024
SMOKE_RECORDS = 2_000
SMOKE_DURATION_S = 20.0
PADDING_VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu order "
    "invoice customer payment shipped pending refund account session checkout basket "
    "warehouse region europe america asia status ok error retry timeout latency"
)
WORDS = tuple(PADDING_VOCABULARY.split())

PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_097_151,
    "enable.idempotence": False,
}


@dataclass(frozen=True, slots=True)
class Workload:
    value_bytes: int
    acks: str
    compression: str
    records: int


@dataclass(frozen=True, slots=True)
class ProduceResult:
    workload: Workload
    topic: str
    delivered: int
    failed: int
    first_error: str | None
    seconds: float
    records_per_s: float
    mb_per_s: float
    latency_ms: dict[str, float]
    """p50, p95, p99, p99.9 and max of the per-record latency, milliseconds."""
    broker_cpu_s_per_m: float | None
    client_cpu_s_per_m: float
    log_bytes: int | None


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    workload: Workload
    topic: str
    expected: int
    consumed: int
    payload_bytes: int
    errors: int
    seconds: float
    records_per_s: float
    mb_per_s: float
    broker_cpu_s_per_m: float | None
    client_cpu_s_per_m: float


@dataclass
class BrokerProcess:
    """The broker under test: pid and data dir are known only for one this benchmark started."""

    bootstrap: str
    pid: int | None
    data_dir: Path | None


def default_records(value_bytes: int) -> int:
    return SMALL_RECORDS_DEFAULT if value_bytes < LARGE_RECORD_BYTES else LARGE_RECORDS_DEFAULT


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


def percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    # Rounding first keeps float error from pushing an exact rank (99.9% of 1000) up by one.
    rank = math.ceil(round(percent * len(ordered) / 100.0, 6))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def latency_summary_ms(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    latencies_s.sort()
    summary = {f"p{p:g}": percentile(latencies_s, p) * 1000.0 for p in PERCENTILES}
    summary["max"] = latencies_s[-1] * 1000.0
    return summary


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process `pid`; None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
            stat = stat_file.read()
    except OSError:
        try:
            import psutil  # optional: only where /proc is missing
        except ImportError:
            return None
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)
    # Fields after the parenthesised command name (which may hold spaces) start at field 3,
    # the state; utime and stime are fields 14 and 15, in clock ticks.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds a workload costs the broker and this process."""

    def __init__(self, broker_pid: int | None) -> None:
        self._broker_pid = broker_pid
        self._broker_start = process_cpu_s(broker_pid) if broker_pid is not None else None
        self._client_start = time.process_time()

    def per_million(self, records: int) -> tuple[float | None, float]:
        """(broker, client) CPU seconds per million records since construction."""
        scale = 1_000_000 / records if records else 0.0
        client = (time.process_time() - self._client_start) * scale
        if self._broker_pid is None or self._broker_start is None:
            return None, client
        broker_now = process_cpu_s(self._broker_pid)
        if broker_now is None:
            return None, client
        return (broker_now - self._broker_start) * scale, client


def log_bytes(data_dir: Path | None, topic: str, partitions: int) -> int | None:
    """Bytes in the segment files of `topic`'s partitions, or None without a data dir."""
    if data_dir is None:
        return None
    total = 0
    for partition in range(partitions):
        directory = data_dir / partition_dir_name(topic, partition)
        if directory.is_dir():
            total += sum(p.stat().st_size for p in directory.glob(f"*{LOG_SUFFIX}"))
    return total


def _client_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "broker.address.family": "v4"}


def _partition_count(
    client: confluent_kafka.Producer | confluent_kafka.Consumer, topic: str
) -> int:
    """Ask for `topic`'s metadata (which auto-creates it) and return its partition count."""
    deadline = time.monotonic() + CLIENT_SETUP_TIMEOUT_S
    while True:
        metadata = client.list_topics(topic, timeout=CLIENT_SETUP_TIMEOUT_S)
        topic_metadata = metadata.topics.get(topic)
        if (
            topic_metadata is not None
            and topic_metadata.error is None
            and topic_metadata.partitions
        ):
            return len(topic_metadata.partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} has no usable metadata: {topic_metadata}")
        time.sleep(0.05)  # the broker is still creating the topic; ask again


def run_produce(
    broker: BrokerProcess,
    workload: Workload,
    topic: str,
    values: Sequence[bytes],
    duration_s: float,
) -> tuple[ProduceResult, int]:
    """Produce `workload.records` values (cycling through `values`) to `topic`; returns the
    result and the topic's partition count."""
    producer = confluent_kafka.Producer(
        {
            **_client_config(broker.bootstrap),
            **PRODUCER_CONFIG,
            "acks": workload.acks,
            "compression.type": workload.compression,
            "message.timeout.ms": int((duration_s + FLUSH_GRACE_S) * 1000),
        }
    )
    partitions = _partition_count(producer, topic)
    latencies_s: list[float] = []
    errors: list[str] = []
    record_latency = latencies_s.append

    def on_delivery(error: Any, message: Any) -> None:
        if error is None:
            record_latency(message.latency())
        else:
            errors.append(str(error))

    value_count = len(values)
    produce = producer.produce
    poll = producer.poll
    cpu = CpuMeter(broker.pid)
    started = time.perf_counter()
    deadline = started + duration_s
    produced = 0
    while produced < workload.records:
        if produced % 1024 == 0 and time.perf_counter() > deadline:
            break
        try:
            produce(topic, values[produced % value_count], on_delivery=on_delivery)
        except BufferError:  # the local queue is full: let deliveries drain it
            poll(0.01)
            if time.perf_counter() > deadline:
                break
            continue
        produced += 1
        if produced % 1000 == 0:
            poll(0)
    unsent = producer.flush(FLUSH_GRACE_S)
    seconds = time.perf_counter() - started
    broker_cpu, client_cpu = cpu.per_million(len(latencies_s))
    delivered = len(latencies_s)
    return (
        ProduceResult(
            workload=workload,
            topic=topic,
            delivered=delivered,
            failed=len(errors) + unsent,
            first_error=errors[0] if errors else ("flush timed out" if unsent else None),
            seconds=seconds,
            records_per_s=delivered / seconds,
            mb_per_s=delivered * workload.value_bytes / MB / seconds,
            latency_ms=latency_summary_ms(latencies_s),
            broker_cpu_s_per_m=broker_cpu,
            client_cpu_s_per_m=client_cpu,
            log_bytes=log_bytes(broker.data_dir, topic, partitions),
        ),
        partitions,
    )


def run_consume(
    broker: BrokerProcess,
    workload: Workload,
    topic: str,
    partitions: int,
    expected: int,
    duration_s: float,
) -> ConsumeResult:
    """Read `topic` from offset 0 on every partition until `expected` records or the time
    limit; only the records' values count as payload."""
    consumer = confluent_kafka.Consumer(
        {
            **_client_config(broker.bootstrap),
            "group.id": "tidelog-bench-unused",
            "enable.auto.commit": False,
            # Once the local queue holds queued.min.messages, librdkafka pauses fetching for
            # this long (1 s by default), which would measure the pause, not the broker.
            "fetch.queue.backoff.ms": 10,
        }
    )
    try:
        # Connect and learn the topic before the clock starts.
        consumer.list_topics(topic, timeout=CLIENT_SETUP_TIMEOUT_S)
        cpu = CpuMeter(broker.pid)
        started = time.perf_counter()
        last_record_at = started
        deadline = started + duration_s
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        consumed = payload_bytes = errors = 0
        while consumed < expected and time.perf_counter() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=0.2)
            for message in messages:
                if message.error() is not None:
                    errors += 1
                    continue
                payload_bytes += len(message.value() or b"")
                consumed += 1
            if messages:
                last_record_at = time.perf_counter()
        seconds = max(last_record_at - started, 1e-9)
        broker_cpu, client_cpu = cpu.per_million(consumed)
    finally:
        consumer.close()
    return ConsumeResult(
        workload=workload,
        topic=topic,
        expected=expected,
        consumed=consumed,
        payload_bytes=payload_bytes,
        errors=errors,
        seconds=seconds,
        records_per_s=consumed / seconds,
        mb_per_s=payload_bytes / MB / seconds,
        broker_cpu_s_per_m=broker_cpu,
        client_cpu_s_per_m=client_cpu,
    )


def _read_ready_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffered = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in buffered:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"broker not ready after {timeout_s:.0f} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"broker exited before it was ready (status {process.wait()})")
            buffered += chunk
    return buffered.split(b"\n", 1)[0].decode()


@contextlib.contextmanager
def started_broker(work_dir: Path, partitions: int) -> Iterator[BrokerProcess]:
    """Run a broker subprocess on 127.0.0.1 with a data dir under `work_dir`; SIGTERM it on
    exit and fail if it does not stop cleanly."""
    data_dir = work_dir / "data"
    config_path = work_dir / "broker.toml"
    # A JSON string is a valid TOML basic string.
    config_path.write_text(
        f"data_dir = {json.dumps(str(data_dir))}\nnum.partitions = {partitions}\n"
        '[[listeners]]\nhost = "127.0.0.1"\nport = 0\n'
    )
    stderr_path = work_dir / "broker.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "broker", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
        )
    try:
        try:
            line = _read_ready_line(process, BROKER_START_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log:\n{stderr_path.read_text()[-4000:]}") from None
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"unexpected first line from the broker: {line!r}")
        yield BrokerProcess(line.removeprefix(READY_PREFIX), process.pid, data_dir)
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"broker still running {BROKER_STOP_TIMEOUT_S:.0f} s after SIGTERM"
            ) from None
        if status != 0:
            raise RuntimeError(f"broker exited with status {status}:\n{stderr_path.read_text()}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def run(
    broker: BrokerProcess, workloads: Sequence[Workload], duration_s: float
) -> list[ProduceResult | ConsumeResult]:
    run_id = uuid.uuid4().hex[:8]
    results: list[ProduceResult | ConsumeResult] = []
    values_by_size: dict[int, list[bytes]] = {}
    for workload in workloads:
        if workload.value_bytes not in values_by_size:
            pool_size = max(1024, VALUE_POOL_BYTES // workload.value_bytes)
            values_by_size[workload.value_bytes] = make_values(
                workload.value_bytes, min(workload.records, pool_size), seed=1
            )
        values = values_by_size[workload.value_bytes]
        topic = f"bench-{run_id}-{workload.value_bytes}b-acks{workload.acks}-{workload.compression}"
        produced, partitions = run_produce(broker, workload, topic, values, duration_s)
        results.append(produced)
        results.append(
            run_consume(broker, workload, topic, partitions, produced.delivered, duration_s)
        )
    return results


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_tables(results: Sequence[ProduceResult | ConsumeResult]) -> str:
    produce_header = (
        f"{'produce':<7} {'size':>5} {'acks':>4} {'codec':<6} {'records':>8} {'rec/s':>9} "
        f"{'MB/s':>7} {'p50 ms':>7} {'p95':>7} {'p99':>7} {'p99.9':>7} {'max':>7} "
        f"{'brokerCPU':>9} {'clientCPU':>9} {'log MB':>7}"
    )
    consume_header = (
        f"{'consume':<7} {'size':>5} {'acks':>4} {'codec':<6} {'records':>8} {'rec/s':>9} "
        f"{'MB/s':>7} {'brokerCPU':>9} {'clientCPU':>9}"
    )
    produce_lines = [produce_header]
    consume_lines = [consume_header]
    for result in results:
        w = result.workload
        prefix = f"{'':<7} {w.value_bytes:>5} {w.acks:>4} {w.compression:<6}"
        if isinstance(result, ProduceResult):
            latency = result.latency_ms
            stored = None if result.log_bytes is None else result.log_bytes / MB
            produce_lines.append(
                f"{prefix} {result.delivered:>8} {result.records_per_s:>9,.0f} "
                f"{result.mb_per_s:>7.1f} "
                + " ".join(
                    _cell(latency.get(key), ".1f", 7)
                    for key in ("p50", "p95", "p99", "p99.9", "max")
                )
                + f" {_cell(result.broker_cpu_s_per_m, '.2f', 9)}"
                f" {_cell(result.client_cpu_s_per_m, '.2f', 9)} {_cell(stored, '.1f', 7)}"
                + _produce_remark(result)
            )
        else:
            consume_lines.append(
                f"{prefix} {result.consumed:>8} {result.records_per_s:>9,.0f} "
                f"{result.mb_per_s:>7.1f} {_cell(result.broker_cpu_s_per_m, '.2f', 9)}"
                f" {_cell(result.client_cpu_s_per_m, '.2f', 9)}"
                + (f"  ERRORS {result.errors}" if result.errors else "")
                + ("  (time limit)" if result.consumed < result.expected else "")
            )
    # A dict, not a list: one note per (codec, size), in table order.
    notes = {
        f"note: {r.workload.compression} batches of {r.workload.value_bytes} B records were "
        "stored uncompressed (log >= payload): the client sent them uncompressed": None
        for r in results
        if isinstance(r, ProduceResult)
        and r.workload.compression != "none"
        and r.log_bytes is not None
        and r.log_bytes >= r.delivered * r.workload.value_bytes
    }
    return "\n".join([*produce_lines, "", *consume_lines, *(["", *notes] if notes else [])])


def _produce_remark(result: ProduceResult) -> str:
    if result.failed:
        return f"  FAILED {result.failed}: {result.first_error}"
    if result.delivered < result.workload.records:
        return "  (time limit)"
    return ""


def _csv(choices: Sequence[str] | None = None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if choices is not None:
            unknown = [item for item in items if item not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}"
                )
        return items

    return parse


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in _csv()(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"record sizes must be integers: {text!r}") from None
    if any(not 1 <= size <= 1_000_000 for size in sizes):
        raise argparse.ArgumentTypeError("record sizes must be within [1, 1000000] bytes")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records",
        type=int,
        help=f"records per workload (default {SMALL_RECORDS_DEFAULT:,} for records under "
        f"{LARGE_RECORD_BYTES} B, {LARGE_RECORDS_DEFAULT:,} from there on)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=60.0, help="time limit of each produce and consume"
    )
    parser.add_argument("--sizes", type=_sizes, default=[100, 1024], help="value bytes, CSV")
    parser.add_argument("--acks", type=_csv(ACKS_CHOICES), default=["1", "all"])
    parser.add_argument(
        "--compression", type=_csv(COMPRESSION_CHOICES), default=["none", "lz4", "zstd"]
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions per topic (started broker only)"
    )
    parser.add_argument("--bootstrap", help="use this running broker instead of starting one")
    parser.add_argument("--dir", help="parent of the temporary work directory")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.bootstrap and args.partitions != 1:
        parser.error("--partitions applies only to a broker this benchmark starts")
    if args.records is not None and args.records < 1:
        parser.error("--records must be at least 1")
    if not 1 <= args.partitions <= 1000:
        parser.error("--partitions must be within [1, 1000]")
    if args.duration_s <= 0:
        parser.error("--duration-s must be positive")
    if args.smoke:
        sizes, acks_list, codecs = [100], ["1"], ["none", "zstd"]
        duration_s = min(args.duration_s, SMOKE_DURATION_S)
    else:
        sizes, acks_list, codecs = args.sizes, args.acks, args.compression
        duration_s = args.duration_s
    workloads = [
        Workload(
            value_bytes=size,
            acks=acks,
            compression=codec,
            records=SMOKE_RECORDS if args.smoke else args.records or default_records(size),
        )
        for size in sizes
        for acks in acks_list
        for codec in codecs
    ]

    with contextlib.ExitStack() as stack:
        if args.bootstrap:
            broker = BrokerProcess(args.bootstrap, pid=None, data_dir=None)
        else:
            work_dir = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=args.dir)
                )
            )
            broker = stack.enter_context(started_broker(work_dir, args.partitions))
        results = run(broker, workloads, duration_s)
    # Past the `with`, a broker this benchmark started has exited 0 after SIGTERM.
    broker_exit = "external" if args.bootstrap else "clean"

    if args.json:
        report = {
            "librdkafka": confluent_kafka.libversion()[0],
            "confluent_kafka": confluent_kafka.__version__,
            "cpus": os.cpu_count(),
            "partitions": args.partitions,
            "duration_s_limit": duration_s,
            "broker": broker_exit,
            "produce": [asdict(r) for r in results if isinstance(r, ProduceResult)],
            "consume": [asdict(r) for r in results if isinstance(r, ConsumeResult)],
        }
        print(json.dumps(report, indent=2))
    else:
        print(
            f"broker bench: confluent-kafka {confluent_kafka.__version__} "
            f"(librdkafka {confluent_kafka.libversion()[0]}), {args.partitions} partition(s), "
            f"{os.cpu_count()} CPUs; MB = 10^6 B of values; latency = produce() to ack; "
            "CPU = seconds per million records"
        )
        print(format_tables(results))
    failed = any(
        r.failed if isinstance(r, ProduceResult) else r.errors or r.consumed != r.expected
        for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
