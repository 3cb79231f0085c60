"""The metadata benchmark's --smoke mode runs its phases (it checks that the snapshot and the
replayed log rebuild the same image) and prints a figure for each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import metadata as metadata_bench


def test_metadata_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert metadata_bench.main(["--smoke", "--dir", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    figures = dict(re.findall(r"^(.+?)\s{2,}([0-9.]+) ms", output, flags=re.MULTILINE))
    assert set(figures) == {
        "create topics (rules + apply)",
        "apply leader/ISR changes",
        "encode + append + fsync the log",
        "snapshot (encode + write)",
        "restart: load + decode + apply log",
        "restart: load + apply snapshot",
    }
    assert list(tmp_path.iterdir()) == []  # the work directory is cleaned up
