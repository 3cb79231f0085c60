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
    by_codec = {entry["produce"]["workload"]["compression"]: entry for entry in report["results"]}
    assert set(by_codec) == {"none", "zstd"}
    assert len({entry["topic"] for entry in report["results"]}) == 2  # a fresh topic each

    for codec, entry in by_codec.items():
        produced, consumed = entry["produce"], entry["consume"]
        workload = produced["workload"]
        assert produced["records"] == produced["expected"] == workload["records"] > 0, codec
        assert produced["failed"] == 0 and produced["first_error"] is None, codec
        assert produced["records_per_s"] > 0 and produced["mb_per_s"] > 0, codec
        latencies = [produced["latency_ms"][key] for key in LATENCY_KEYS]
        assert latencies[0] > 0 and latencies == sorted(latencies), (codec, latencies)
        assert produced["server_cpu_s_per_m"] is not None
        assert produced["server_cpu_s_per_m"] >= 0
        assert produced["client_cpu_s_per_m"] > 0

        assert consumed["records"] == consumed["expected"] == produced["records"], codec
        assert consumed["failed"] == 0, codec
        assert consumed["mb_per_s"] * consumed["seconds"] == pytest.approx(
            produced["records"] * workload["value_bytes"] / 1e6
        ), codec

    # The log holds at least the payload uncompressed, and less than that with zstd: the
    # codec really was used end to end.
    none, zstd = by_codec["none"], by_codec["zstd"]
    payload_bytes = none["produce"]["records"] * none["produce"]["workload"]["value_bytes"]
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
