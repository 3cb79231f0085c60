"""Replication benchmark: a three-node cluster with acks=all beside a single node.

    python -m bench.replication [--records N] [--sizes 100,1024] [--partitions P]
                                [--duration-s S] [--dir PATH] [--smoke] [--json]

In one run, with the same confluent-kafka producer settings and record counts, it
produces (and consumes back) on
- a single node (`tidelog broker`), acks=1 and acks=all (one replica: acks=all is acks=1);
- a three-node cluster (`tidelog dev --nodes 3`: three replicas per partition,
  min.insync.replicas 2), acks=all (acks=1 is left out: its consume, which reads up to the
  high watermark right after the produce, would time the followers' catching up);
and reports each table and, per record size, the ratio of the cluster's acks=all produce
throughput to the single node's acks=1 (the goal: at least 0.4). Each server first takes a
small warm-up produce that is not reported (a fresh cluster's first topic also waits for
client connections and for every broker to apply the new metadata). All processes run on this
machine, so the cluster's three brokers share its cores with the client. `--smoke` runs
2,000 records of 100 B.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.broker import MatrixResult, default_records, format_tables, run_matrix
from bench.systems.tidelog import started_broker, started_cluster
from bench.workload import Progress, Workload

CLUSTER_NODES = 3
SMOKE_RECORDS = 2_000
GOAL_RATIO = 0.4


def ratios(
    single: Sequence[MatrixResult], cluster: Sequence[MatrixResult]
) -> dict[int, float | None]:
    """Per record size: cluster acks=all produce rec/s over single-node acks=1 rec/s."""

    def rate(results: Sequence[MatrixResult], size: int, acks: str) -> float | None:
        for result in results:
            workload = result.produce.workload
            if workload.value_bytes == size and workload.acks == acks and result.produce.ok:
                return result.produce.records_per_s
        return None

    sizes = dict.fromkeys(r.produce.workload.value_bytes for r in single)
    out: dict[int, float | None] = {}
    for size in sizes:
        base, replicated = rate(single, size, "1"), rate(cluster, size, "all")
        out[size] = replicated / base if base and replicated is not None else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, help="records per workload")
    parser.add_argument("--sizes", default="100,1024", help="value bytes, CSV")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per topic")
    parser.add_argument("--duration-s", type=float, default=60.0, help="time limit of each job")
    parser.add_argument("--dir", help="parent of the temporary work directories")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    try:
        sizes = [100] if args.smoke else [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be integers: {args.sizes!r}")
    if not sizes or any(not 1 <= s <= 1_000_000 for s in sizes):
        parser.error("--sizes must be within [1, 1000000] bytes")
    if args.records is not None and args.records < 1:
        parser.error("--records must be at least 1")
    if not 1 <= args.partitions <= 1000 or args.duration_s <= 0:
        parser.error("--partitions must be within [1, 1000] and --duration-s positive")
    workloads = [
        Workload(
            kind="produce",
            value_bytes=size,
            records=SMOKE_RECORDS if args.smoke else args.records or default_records(size),
            duration_s=args.duration_s,
            partitions=args.partitions,
            acks=acks,
        )
        for size in sizes
        for acks in ("1", "all")
    ]
    progress = Progress(enabled=not args.json)
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=args.dir) as work:
        single_dir, cluster_dir = Path(work) / "single", Path(work) / "cluster"
        single_dir.mkdir()
        cluster_dir.mkdir()
        warm_up = [dataclasses.replace(workloads[0], records=SMOKE_RECORDS)]
        with started_broker(single_dir, args.partitions) as server:
            run_matrix(server, warm_up, progress)
            single = run_matrix(server, workloads, progress)
        with started_cluster(cluster_dir, CLUSTER_NODES, args.partitions) as server:
            run_matrix(server, warm_up, progress)
            cluster = run_matrix(server, [w for w in workloads if w.acks == "all"], progress)
    by_size = ratios(single, cluster)
    if args.json:
        document = {
            "partitions": args.partitions,
            "nodes": CLUSTER_NODES,
            "single": [dataclasses.asdict(r) for r in single],
            "cluster": [dataclasses.asdict(r) for r in cluster],
            "ratio_cluster_acks_all_to_single_acks_1": {str(k): v for k, v in by_size.items()},
        }
        print(json.dumps(document, indent=2))
    else:
        print(f"single node, {args.partitions} partition(s):")
        print(format_tables(single))
        print(f"\n{CLUSTER_NODES} nodes, 3 replicas, min.insync.replicas 2:")
        print(format_tables(cluster))
        print()
        for size, ratio in by_size.items():
            shown = "-" if ratio is None else f"{ratio:.2f}"
            print(
                f"{size} B records: cluster acks=all / single acks=1 = {shown} "
                f"(goal >= {GOAL_RATIO})"
            )
    failed = any(not (r.produce.ok and r.consume.ok) for r in (*single, *cluster))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
