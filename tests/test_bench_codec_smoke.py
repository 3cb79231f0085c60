"""`python -m bench.codec --smoke` keeps working: it exits 0 and prints a row per codec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_codec_bench_smoke_prints_a_row_per_codec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.codec", "--smoke"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.split() and line.split()[0] == "codec")
    assert "validate MB/s" in header and "decode rec/s" in header
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1 :]}
    assert set(rows) == {"none", "gzip", "snappy", "lz4", "zstd"}
    for codec, cells in rows.items():
        assert len(cells) == 7, codec
        figures = [float(cell.replace(",", "")) for cell in cells]
        assert all(figure > 0 for figure in figures), (codec, figures)
    # Compression shrinks the request: the benchmark really ran each codec.
    request_kib = {codec: float(cells[0]) for codec, cells in rows.items()}
    assert all(request_kib[c] < request_kib["none"] for c in ("gzip", "snappy", "lz4", "zstd"))
