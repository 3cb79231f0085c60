"""Whole brokers and clients in one process, under faults, judged by the checker.

Seeds: `TIDELOG_SIM_SEED=N` runs exactly seed N (what a failing run prints to replay it);
`TIDELOG_SIM_SEEDS=K` runs K consecutive seeds from there (a soak: `--run-slow` runs 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.simulation.harness import (
    ACKS_BEFORE_FSYNC,
    FSYNC_PER_APPEND,
    PROCESS_CRASHES,
    Outcome,
    Variant,
    run_simulation,
)

ROOT = Path(__file__).resolve().parents[2]
BASE_SEED = int(os.environ.get("TIDELOG_SIM_SEED", "20261202"))
SEED_COUNT = int(os.environ.get("TIDELOG_SIM_SEEDS", "1"))
DURATION_S = 2_000.0
"""Simulated seconds per run: about 40 faults (a third of them kills or power cuts), ~8,500
records."""
SHORT_DURATION_S = 400.0


def _seeds(count: int) -> list[int]:
    return [BASE_SEED + i for i in range(count)]


def _assert_valid(outcome: Outcome, test: str) -> None:
    assert outcome.result.valid, outcome.report(test)
    counts = outcome.result.counts
    # The run did something worth judging: faults happened and records went through them.
    assert outcome.faults > 0 and counts.acked > 0, outcome.report(test)
    assert counts.lost == counts.unseen == 0, outcome.report(test)


@pytest.mark.parametrize("variant", [FSYNC_PER_APPEND, PROCESS_CRASHES], ids=lambda v: v.name)
@pytest.mark.parametrize("seed", _seeds(SEED_COUNT))
def test_single_nodes_lose_nothing_under_crashes(
    seed: int, variant: Variant, request: pytest.FixtureRequest
) -> None:
    outcome = run_simulation(seed, variant=variant, duration_s=DURATION_S)
    _assert_valid(outcome, request.node.nodeid)


@pytest.mark.slow
@pytest.mark.parametrize("seed", _seeds(20))
def test_soak_many_seeds(seed: int, request: pytest.FixtureRequest) -> None:
    outcome = run_simulation(seed, variant=FSYNC_PER_APPEND, duration_s=DURATION_S)
    _assert_valid(outcome, request.node.nodeid)


def test_one_seed_one_history_in_process_and_across_processes() -> None:
    first = run_simulation(BASE_SEED, duration_s=SHORT_DURATION_S)
    again = run_simulation(BASE_SEED, duration_s=SHORT_DURATION_S)
    other = run_simulation(BASE_SEED + 1, duration_s=SHORT_DURATION_S)
    assert first.trace_hash == again.trace_hash and first.trace == again.trace
    assert other.trace_hash != first.trace_hash
    # A different history, not only other ids: the operations themselves differ.
    assert [op.action for op in other.history] != [op.action for op in first.history]
    # The replay command runs in a fresh interpreter (another hash seed, a cold start).
    code = (
        "from tests.simulation.harness import run_simulation; "
        f"print(run_simulation({BASE_SEED}, duration_s={SHORT_DURATION_S}).trace_hash)"
    )
    replayed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert replayed.stdout.strip() == first.trace_hash


def test_the_checker_catches_acks_before_fsync_under_power_loss() -> None:
    """The broken variant acknowledges records that no fsync made durable and then cuts the
    power: the checker must report the lost writes (so a clean run means something)."""
    outcome = run_simulation(BASE_SEED, variant=ACKS_BEFORE_FSYNC, duration_s=SHORT_DURATION_S)
    assert not outcome.result.valid
    lost = outcome.result.anomalies["lost-write"]
    assert lost and outcome.result.counts.lost > 0
    assert all(anomaly.kind == "lost-write" for anomaly in lost)
