"""Broker benchmark: confluent-kafka against tidelog, across acks and compression.

    python -m bench.broker [--records N] [--duration-s S] [--sizes 100,1024] [--acks 1,all]
                           [--compression none,lz4,zstd] [--partitions P]
                           [--bootstrap HOST:PORT] [--dir PATH] [--smoke] [--json]

The matrix view of `python -m bench`: for every (record size, acks, compression) a produce
and a consume of N records on a fresh topic, through the harness's confluent-kafka adapter
(`bench.systems.kafka_confluent`), on one broker that it starts (`bench.systems.tidelog`;
SIGTERM at the end, which must exit 0) or on `--bootstrap`. Besides the harness's figures it
reports the bytes the partition logs hold after each produce (what compression saved; only
for a broker it started). `--smoke` runs 2,000 records of 100 B with acks 1, uncompressed and
with zstd. `--json` prints JSON instead of tables. For peers, the e2e workload and the
report, use `python -m bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.processes import Meter, Server
from bench.systems.kafka_confluent import ConfluentKafka
from bench.systems.tidelog import log_bytes, started_broker
from bench.workload import Job, Progress, Result, Workload, make_result, value_pool

SMALL_RECORDS_DEFAULT = 200_000
LARGE_RECORDS_DEFAULT = 100_000
LARGE_RECORD_BYTES = 1024
SMOKE_RECORDS = 2_000
SMOKE_DURATION_S = 20.0
ACKS_CHOICES = ("0", "1", "all")
COMPRESSION_CHOICES = ("none", "gzip", "snappy", "lz4", "zstd")
MB = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class MatrixResult:
    """A produce and the consume that read it back, with the log size in between."""

    topic: str
    produce: Result
    consume: Result
    log_bytes: int | None


def default_records(value_bytes: int) -> int:
    return SMALL_RECORDS_DEFAULT if value_bytes < LARGE_RECORD_BYTES else LARGE_RECORDS_DEFAULT


def run_matrix(
    server: Server, workloads: Sequence[Workload], progress: Progress
) -> list[MatrixResult]:
    adapter = ConfluentKafka()
    run_id = uuid.uuid4().hex[:8]
    results = []
    for workload in workloads:
        topic = f"bench-{run_id}-{workload.value_bytes}b-acks{workload.acks}-{workload.compression}"
        values = value_pool(workload.value_bytes, workload.records)
        job = Job(workload, topic, values, [], Meter(server.pid), progress)
        progress.begin(f"produce {topic}", workload.records)
        produced = make_result("tidelog", adapter.name, job, 0, adapter.produce(server, job))
        progress.end(f"{produced.records_per_s:,.0f} rec/s")
        stored = log_bytes(server.data_dir, topic, workload.partitions)
        job = Job(
            dataclasses.replace(workload, kind="consume"),
            topic,
            values,
            [],
            Meter(server.pid),
            progress,
            expected=produced.records,
        )
        progress.begin(f"consume {topic}", produced.records)
        consumed = make_result("tidelog", adapter.name, job, 0, adapter.consume(server, job))
        progress.end(f"{consumed.records_per_s:,.0f} rec/s")
        results.append(MatrixResult(topic, produced, consumed, stored))
    return results


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_tables(results: Sequence[MatrixResult]) -> str:
    produce_lines = [
        f"{'produce':<7} {'size':>5} {'acks':>4} {'codec':<6} {'records':>8} {'rec/s':>9} "
        f"{'MB/s':>7} {'p50 ms':>7} {'p95':>7} {'p99':>7} {'p99.9':>7} {'max':>7} "
        f"{'brokerCPU':>9} {'clientCPU':>9} {'log MB':>7}"
    ]
    consume_lines = [
        f"{'consume':<7} {'size':>5} {'acks':>4} {'codec':<6} {'records':>8} {'rec/s':>9} "
        f"{'MB/s':>7} {'brokerCPU':>9} {'clientCPU':>9}"
    ]
    notes: dict[str, None] = {}  # one note per (codec, size), in table order
    for result in results:
        produced, consumed = result.produce, result.consume
        w = produced.workload
        prefix = f"{'':<7} {w.value_bytes:>5} {w.acks:>4} {w.compression:<6}"
        latency = produced.latency_ms
        stored = None if result.log_bytes is None else result.log_bytes / MB
        produce_lines.append(
            f"{prefix} {produced.records:>8} {produced.records_per_s:>9,.0f} "
            f"{produced.mb_per_s:>7.1f} "
            + " ".join(
                _cell(latency.get(key), ".1f", 7) for key in ("p50", "p95", "p99", "p99.9", "max")
            )
            + f" {_cell(produced.server_cpu_s_per_m, '.2f', 9)}"
            f" {_cell(produced.client_cpu_s_per_m, '.2f', 9)} {_cell(stored, '.1f', 7)}"
            + _remark(produced)
        )
        consume_lines.append(
            f"{prefix} {consumed.records:>8} {consumed.records_per_s:>9,.0f} "
            f"{consumed.mb_per_s:>7.1f} {_cell(consumed.server_cpu_s_per_m, '.2f', 9)}"
            f" {_cell(consumed.client_cpu_s_per_m, '.2f', 9)}" + _remark(consumed)
        )
        if (
            w.compression != "none"
            and result.log_bytes is not None
            and result.log_bytes >= produced.records * w.value_bytes
        ):
            notes[
                f"note: {w.compression} batches of {w.value_bytes} B records were stored "
                "uncompressed (log >= payload): the client sent them uncompressed"
            ] = None
    return "\n".join([*produce_lines, "", *consume_lines, *(["", *notes] if notes else [])])


def _remark(result: Result) -> str:
    if result.failed:
        return f"  FAILED {result.failed}: {result.first_error}"
    if result.time_limited:
        return "  (time limit)"
    return ""


def _csv(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if not items or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items

    return parse


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"record sizes must be integers: {text!r}") from None
    if not sizes or any(not 1 <= size <= 1_000_000 for size in sizes):
        raise argparse.ArgumentTypeError("record sizes must be within [1, 1000000] bytes")
    return sizes


@contextlib.contextmanager
def _external(bootstrap: str) -> Iterator[Server]:
    host, _, port = bootstrap.rpartition(":")
    yield Server(host, int(port), None, None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, help="records per workload")
    parser.add_argument("--duration-s", type=float, default=60.0, help="time limit of each job")
    parser.add_argument("--sizes", type=_sizes, default=[100, 1024], help="value bytes, CSV")
    parser.add_argument("--acks", type=_csv(ACKS_CHOICES), default=["1", "all"])
    parser.add_argument(
        "--compression", type=_csv(COMPRESSION_CHOICES), default=["none", "lz4", "zstd"]
    )
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic")
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
            kind="produce",
            value_bytes=size,
            records=SMOKE_RECORDS if args.smoke else args.records or default_records(size),
            duration_s=duration_s,
            partitions=args.partitions,
            acks=acks,
            compression=codec,
        )
        for size in sizes
        for acks in acks_list
        for codec in codecs
    ]
    progress = Progress(enabled=not args.json)
    with contextlib.ExitStack() as stack:
        if args.bootstrap:
            server = stack.enter_context(_external(args.bootstrap))
        else:
            work_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=args.dir)
            )
            server = stack.enter_context(started_broker(Path(work_dir), args.partitions))
        results = run_matrix(server, workloads, progress)
    # Past the `with`, a broker this benchmark started has exited 0 after SIGTERM.
    import confluent_kafka

    if args.json:
        print(
            json.dumps(
                {
                    "librdkafka": confluent_kafka.libversion()[0],
                    "confluent_kafka": confluent_kafka.__version__,
                    "partitions": args.partitions,
                    "duration_s_limit": duration_s,
                    "broker": "external" if args.bootstrap else "clean",
                    "results": [dataclasses.asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        print(
            f"broker bench: confluent-kafka {confluent_kafka.__version__} "
            f"(librdkafka {confluent_kafka.libversion()[0]}), {args.partitions} partition(s); "
            "MB = 10^6 B of values; latency = produce() to ack; CPU = seconds per million records"
        )
        print(format_tables(results))
    failed = any(not (r.produce.ok and r.consume.ok) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
