"""The benchmark harness (`python -m bench`) keeps working: `--smoke` runs every workload
against tidelog (both clients), the raw ceiling and each fast peer that is installed, every
record arrives, and peers that are not installed are reported as skipped, not failed.
Its pieces (histogram, value pools, chunking, pacing) are checked on their own.

RabbitMQ takes ~10 s to start; its smoke run is left to TIDELOG_BENCH_SLOW=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from bench.histogram import Histogram, bucket_bounds, bucket_index
from bench.processes import Meter, Server
from bench.report import format_table, summarise
from bench.runner import Plan, run
from bench.workload import (
    Job,
    Outcome,
    Pacer,
    Progress,
    Workload,
    make_keys,
    make_values,
    record_chunks,
    split,
)

ROOT = Path(__file__).resolve().parents[1]
FAST_PEERS = ("redis-streams", "nats-jetstream")
KINDS = ("produce", "consume", "e2e")


def _smoke(tmp_path: Path, systems: str) -> dict[str, Any]:
    results_dir = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "run", "--smoke", "--json", "--no-progress",
            "--systems", systems, "--results-dir", str(results_dir),
            "--work-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=180, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    (out_dir,) = results_dir.iterdir()
    report["out_dir"] = out_dir
    report["work_left"] = sorted(p.name for p in tmp_path.iterdir() if p.name != "results")
    return report


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _by_job(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["system"], r["client"], r["workload"]["kind"]): r for r in report["results"]}


def _check_complete(
    results: dict[tuple[str, str, str], dict[str, Any]], system: str, client: str
) -> None:
    produced = results[(system, client, "produce")]
    consumed = results[(system, client, "consume")]
    e2e = results[(system, client, "e2e")]
    for entry in (produced, consumed, e2e):
        assert entry["failed"] == 0, (system, client, entry["first_error"])
        assert entry["records"] == entry["expected"] > 0, (system, client, entry)
        assert entry["records_per_s"] > 0 and entry["mb_per_s"] > 0
    assert produced["records"] == produced["workload"]["records"]
    assert consumed["records"] == produced["records"]  # every record read back, once
    for entry in (produced, e2e):
        latency = [entry["latency_ms"][key] for key in ("p50", "p95", "p99", "p99.9", "max")]
        assert latency == sorted(latency) and latency[-1] > 0, (system, client, latency)
    assert e2e["records"] == e2e["workload"]["records"]


def test_run_smoke_measures_tidelog_the_ceiling_and_installed_peers(tmp_path: Path) -> None:
    report = _smoke(tmp_path, ",".join(["tidelog", "raw-tcp", *FAST_PEERS]))
    results = _by_job(report)
    skipped = {(s["system"], s["client"]): s["reason"] for s in report["skipped"]}
    _check_complete(results, "tidelog", "confluent-kafka")
    _check_complete(results, "tidelog", "tidelog-client")
    _check_complete(results, "raw-tcp", "trio")
    for system, client in (("redis-streams", "redis-py"), ("nats-jetstream", "nats-py")):
        ran = any(key[:2] == (system, client) for key in results)
        assert ran != ((system, client) in skipped), (system, skipped)
        if ran:
            _check_complete(results, system, client)
    assert report["targets"] == []  # a smoke run checks no targets
    assert report["machine"]["cpus"] >= 1 and report["versions"]["confluent-kafka"]
    assert report["work_left"] == []  # every server's data directory is gone

    out_dir: Path = report["out_dir"]
    assert json.loads((out_dir / "results.json").read_text())["results"] == report["results"]
    markdown = (out_dir / "report.md").read_text()
    assert "| produce | 100 | tidelog/confluent-kafka |" in markdown
    assert f"{report['machine']['cpus']} cores" in markdown
    for system, client in skipped:
        assert f"- {system}/{client}: " in markdown
    if _importable("matplotlib"):
        assert (out_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not (out_dir / "chart.png").exists()
        assert "No chart: matplotlib is not installed" in markdown


@pytest.mark.skipif(
    os.environ.get("TIDELOG_BENCH_SLOW") != "1", reason="RabbitMQ's start takes ~10 s"
)
def test_run_smoke_rabbitmq_streams(tmp_path: Path) -> None:
    report = _smoke(tmp_path, "rabbitmq-streams")
    if report["skipped"]:
        assert report["results"] == []
    else:
        _check_complete(_by_job(report), "rabbitmq-streams", "rstream")


# --- a peer that is not installed is skipped ---------------------------------------------


class _Adapter:
    def __init__(self, name: str, modules: tuple[str, ...]) -> None:
        self.name = name
        self.modules = modules
        self.jobs: list[str] = []

    def produce(self, server: Server, job: Job) -> Outcome:
        return self._run(job)

    def consume(self, server: Server, job: Job) -> Outcome:
        return self._run(job)

    def e2e(self, server: Server, job: Job) -> Outcome:
        return self._run(job)

    def _run(self, job: Job) -> Outcome:
        self.jobs.append(job.workload.kind)
        count = job.expected if job.workload.kind == "consume" else job.workload.records
        job.meter.start()
        job.meter.stop()
        return Outcome(count, count * job.workload.value_bytes, produced=count)


class _System:
    def __init__(self, name: str, missing: str | None, clients: tuple[_Adapter, ...]) -> None:
        self.name = name
        self.durability = "nothing"
        self.clients = clients
        self._missing = missing
        self.started = 0

    def missing(self) -> str | None:
        return self._missing

    def version(self) -> str | None:
        return None

    def start(self, work_dir: Path, partitions: int) -> Any:
        import contextlib

        self.started += 1
        return contextlib.nullcontext(Server("127.0.0.1", 1, None, work_dir))


def test_missing_servers_and_client_modules_are_skipped_not_failed(tmp_path: Path) -> None:
    present = _Adapter("present", ("json",))
    absent_module = _Adapter("absent", ("no_such_bench_client_module",))
    not_installed = _System("peer-x", "peer-x-server is not installed", (_Adapter("x", ()),))
    half = _System("peer-y", None, (present, absent_module))
    plan = Plan(
        kinds=("produce", "consume", "e2e"),
        sizes=(100,),
        records={100: 50},
        e2e_records=20,
        e2e_linger_ms=1,
        base=Workload(kind="produce", value_bytes=100, records=1, duration_s=5, rate_per_s=100),
    )
    outcome = run([not_installed, half], plan, Progress(enabled=False), tmp_path)

    assert not_installed.started == 0 and half.started == 1
    assert {(s.system, s.client, s.reason) for s in outcome.skipped} == {
        ("peer-x", "x", "peer-x-server is not installed"),
        ("peer-y", "absent", "Python module no_such_bench_client_module is not installed"),
    }
    assert present.jobs == ["produce", "consume", "e2e"] and absent_module.jobs == []
    assert all(r.ok for r in outcome.results) and len(outcome.results) == 3
    table = format_table(summarise(outcome.results), outcome.skipped)
    assert "skipped: peer-x/x: peer-x-server is not installed" in table


# --- the pieces -------------------------------------------------------------------------


def test_histogram_percentiles_are_within_one_percent() -> None:
    rng = random.Random(5)
    values = [int(rng.lognormvariate(14, 1.5)) for _ in range(20_000)]
    histogram = Histogram()
    histogram.record_all(values)
    ordered = sorted(values)
    for percent in (50.0, 95.0, 99.0, 99.9):
        exact = ordered[int(len(ordered) * percent / 100.0 + 0.999999) - 1]
        assert histogram.percentile(percent) == pytest.approx(exact, rel=0.01), percent
    assert histogram.max == ordered[-1] and histogram.min == ordered[0]
    assert histogram.percentile(100.0) == ordered[-1]
    assert Histogram().summary_ms() == {}


def test_histogram_buckets_tile_the_values_and_merge_adds() -> None:
    previous_high = -1
    for index in range(0, 3000):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1 and high >= low
        assert high - low + 1 <= max(1, low / 128)
        assert bucket_index(low) == index == bucket_index(high)
        previous_high = high
    assert bucket_index(2**63 - 1) < 7424

    left, right, both = Histogram(), Histogram(), Histogram()
    for value in range(1, 5000, 7):
        (left if value % 2 else right).record(value * 1000)
        both.record(value * 1000)
    left.merge(right)
    assert left.count == both.count and left.total == both.total
    assert [left.percentile(p) for p in (50, 99)] == [both.percentile(p) for p in (50, 99)]


def test_weighted_records_count_as_many() -> None:
    histogram = Histogram()
    histogram.record(1_000_000, 99)
    histogram.record(50_000_000)
    assert histogram.count == 100
    assert histogram.percentile(99) == pytest.approx(1_000_000, rel=0.01)
    assert histogram.summary_ms()["max"] == 50.0


@pytest.mark.parametrize("value_bytes", [8, 40, 100, 1024])
def test_values_have_the_requested_size_and_differ(value_bytes: int) -> None:
    values = make_values(value_bytes, 50, seed=7)
    assert {len(value) for value in values} == {value_bytes}
    if value_bytes >= 40:
        assert len(set(values)) == 50


def _job(partitions: int, keys: int) -> Job:
    workload = Workload(kind="produce", value_bytes=16, records=100, duration_s=1,
                        partitions=partitions, keys=keys)  # fmt: skip
    values = [b"%016d" % index for index in range(10)]
    return Job(workload, "s", values, make_keys(keys), Meter(None), Progress(enabled=False))


def test_record_chunks_cover_every_record_once_in_the_right_partition() -> None:
    unkeyed = list(record_chunks(_job(3, 0), 5, 95, 10))
    assert [partition for partition, _ in unkeyed][:4] == [2, 0, 1, 2]
    assert sum(len(chunk) for _, chunk in unkeyed) == 95
    assert unkeyed[0][1][0] == b"%016d" % 5

    job = _job(4, 7)
    keyed = list(record_chunks(job, 0, 100, 6))
    assert sum(len(chunk) for _, chunk in keyed) == 100
    assert all(len(chunk) <= 6 for _, chunk in keyed)
    expected: dict[int, int] = {}
    for index in range(100):
        partition = zlib.crc32(job.keys[index % 7]) % 4
        expected[partition] = expected.get(partition, 0) + 1
    counted: dict[int, int] = {}
    for partition, chunk in keyed:
        counted[partition] = counted.get(partition, 0) + len(chunk)
    assert counted == expected


def test_pacer_keeps_to_the_rate_and_the_total() -> None:
    pacer = Pacer(rate_per_s=1000, total=50, start_s=10.0)
    assert pacer.due(10.0) == 1
    pacer.sent += 1
    assert pacer.due(10.0105) == 10  # records 1..10 are due by 10.5 ms
    pacer.sent += 10
    assert pacer.wait_s(10.0105) == pytest.approx(0.001)  # never less than a tick
    assert pacer.due(11.0) == 39 and not pacer.done  # capped at the total
    pacer.sent += 39
    assert pacer.done and pacer.due(20.0) == 0
    assert split(10, 3) == [4, 3, 3] and sum(split(7, 7)) == 7
