"""The storage benchmark's --smoke mode runs, checks its own results and prints its figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import storage as storage_bench


def test_storage_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert storage_bench.main(["--smoke", "--dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    figures = {
        name: float(value)
        for name, value in re.findall(r"^(.+?)\s{2,}([0-9.]+)", output, flags=re.MULTILINE)
    }
    assert set(figures) >= {
        "plain sequential write",
        "PartitionLog.append",
        "ratio log/plain",
        "read ranges + read_bytes",
        "read ranges + sendfile",
    }
    assert all(value > 0 for value in figures.values())
    assert list(tmp_path.iterdir()) == []  # the work directory is cleaned up
