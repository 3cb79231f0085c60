"""`python -m bench.broker --smoke` keeps working: it starts a broker, produces and consumes
every record through confluent-kafka, reports sane figures, stops the broker cleanly and
leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import broker as broker_bench

ROOT = Path(__file__).resolve().parents[1]
LATENCY_KEYS = ["p50", "p95", "p99", "p99.9", "max"]


def test_smoke_json_reports_every_record_produced_and_consumed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.broker", "--smoke", "--json", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["broker"] == "clean"  # SIGTERM'd and exited 0
    produced = {entry["workload"]["compression"]: entry for entry in report["produce"]}
    consumed = {entry["workload"]["compression"]: entry for entry in report["consume"]}
    assert set(produced) == set(consumed) == {"none", "zstd"}
    assert len({entry["topic"] for entry in report["produce"]}) == 2  # a fresh topic each

    for codec, entry in produced.items():
        workload = entry["workload"]
        assert entry["delivered"] == workload["records"] > 0, codec
        assert entry["failed"] == 0 and entry["first_error"] is None, codec
        assert entry["records_per_s"] > 0 and entry["mb_per_s"] > 0, codec
        latencies = [entry["latency_ms"][key] for key in LATENCY_KEYS]
        assert latencies[0] > 0 and latencies == sorted(latencies), (codec, latencies)
        assert entry["broker_cpu_s_per_m"] is not None and entry["broker_cpu_s_per_m"] >= 0
        assert entry["client_cpu_s_per_m"] > 0

        read = consumed[codec]
        assert read["topic"] == entry["topic"]
        assert read["consumed"] == read["expected"] == entry["delivered"], codec
        assert read["payload_bytes"] == entry["delivered"] * workload["value_bytes"], codec
        assert read["errors"] == 0, codec
        assert read["records_per_s"] > 0 and read["mb_per_s"] > 0, codec

    # The log holds at least the payload uncompressed, and less than that with zstd: the
    # codec really was used end to end.
    none, zstd = produced["none"], produced["zstd"]
    payload_bytes = none["delivered"] * none["workload"]["value_bytes"]
    assert none["log_bytes"] > payload_bytes
    assert zstd["log_bytes"] < payload_bytes / 2
    assert list(tmp_path.iterdir()) == []  # the data directory is removed


def test_smoke_prints_a_produce_and_a_consume_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert broker_bench.main(["--smoke", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    produce_at = next(i for i, line in enumerate(lines) if line.startswith("produce "))
    consume_at = next(i for i, line in enumerate(lines) if line.startswith("consume "))
    assert "rec/s" in lines[produce_at] and "p99.9" in lines[produce_at]
    produce_rows = [line.split() for line in lines[produce_at + 1 : consume_at] if line.strip()]
    consume_rows = [line.split() for line in lines[consume_at + 1 :] if line.strip()]
    assert [row[2] for row in produce_rows] == [row[2] for row in consume_rows] == ["none", "zstd"]
    for row in produce_rows + consume_rows:
        size, acks, _, records, *figures = row
        assert (size, acks) == ("100", "1")
        assert int(records) == broker_bench.SMOKE_RECORDS
        assert float(figures[0].replace(",", "")) > 0  # records/s
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value_bytes", [1, 2, 40, 100, 1024])
def test_values_have_the_requested_size_and_differ(value_bytes: int) -> None:
    values = broker_bench.make_values(value_bytes, 50, seed=7)
    assert {len(value) for value in values} == {value_bytes}
    if value_bytes >= 40:
        assert len(set(values)) == 50


def test_percentile_is_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 1001)]
    assert broker_bench.percentile(ordered, 50) == 500.0
    assert broker_bench.percentile(ordered, 99.9) == 999.0
    assert broker_bench.percentile(ordered, 100) == 1000.0
    assert broker_bench.percentile([3.0], 99) == 3.0
