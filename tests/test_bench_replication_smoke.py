"""`python -m bench.replication --smoke` keeps working: it runs a single node and a
three-node cluster one after the other, produces and consumes every record through
confluent-kafka on both, reports the cluster's acks=all throughput against the single
node's acks=1, and stops every process cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("confluent_kafka")

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_json_reports_both_setups_and_their_ratio(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.replication", "--smoke", "--json", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nodes"] == 3
    single_acks = [entry["produce"]["workload"]["acks"] for entry in report["single"]]
    cluster_acks = [entry["produce"]["workload"]["acks"] for entry in report["cluster"]]
    assert single_acks == ["1", "all"] and cluster_acks == ["all"]
    for entry in report["single"] + report["cluster"]:
        produced, consumed = entry["produce"], entry["consume"]
        assert produced["records"] == produced["expected"] > 0
        assert produced["failed"] == consumed["failed"] == 0
        assert consumed["records"] == produced["records"]
    (ratio,) = report["ratio_cluster_acks_all_to_single_acks_1"].values()
    assert ratio > 0
    assert list(tmp_path.iterdir()) == []  # the work directories are gone
