"""The Raft core under faults: quorums of 3 and 5 voters (and observers) in one process.

Each seed is one history (see raft_cluster.py for the fault model and the invariants). A
failure prints its seed and the command that replays it. `TIDELOG_RAFT_SEED=N` moves the
base seed; `TIDELOG_RAFT_SEEDS=K` runs K seeds per quorum shape instead of the default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.simulation.raft_cluster import Flaws, replay_command, simulate

ROOT = Path(__file__).resolve().parents[2]
BASE_SEED = int(os.environ.get("TIDELOG_RAFT_SEED", "20261202"))
SEEDS = os.environ.get("TIDELOG_RAFT_SEEDS")

SHAPES = {
    # (voters, observers): seeds run by default
    (3, 0): 300,
    (5, 0): 150,
    (3, 2): 100,
}


def _cases() -> list[tuple[int, int, int]]:
    return [
        (voters, observers, BASE_SEED + i)
        for (voters, observers), default in SHAPES.items()
        for i in range(int(SEEDS) if SEEDS else default)
    ]


@pytest.mark.parametrize(("voters", "observers", "seed"), _cases(), ids=lambda v: str(v))
def test_quorum_keeps_every_invariant_and_recovers(voters: int, observers: int, seed: int) -> None:
    outcome = simulate(seed, voters=voters, observers=observers)
    replay = replay_command(seed, voters, observers)
    assert outcome.violation is None, outcome.report(replay)
    # The run was worth judging: faults struck and entries were committed through them.
    assert outcome.faults > 0 and outcome.committed > 0, outcome.report(replay)


def test_the_runs_exercise_elections_truncation_and_snapshot_installs() -> None:
    outcomes = [simulate(BASE_SEED + i) for i in range(30)]
    assert sum(o.elections > 1 for o in outcomes) >= 20
    assert sum(o.truncations > 0 for o in outcomes) >= 5
    assert sum(o.installs > 0 for o in outcomes) >= 5


@pytest.mark.parametrize(
    ("flaws", "expected"),
    [
        # Reporting a log end before it is durable: a crash loses a committed entry.
        (Flaws(sends_before_persist=True), {"committed-lost", "committed-changed"}),
        # Forgetting votes across a crash: two leaders in one epoch, or the core's epoch
        # checks fail first.
        (Flaws(forgets_votes=True), {"one-leader-per-epoch", "core-assertion"}),
    ],
    ids=["sends-before-persist", "forgets-votes"],
)
def test_a_driver_that_breaks_the_contract_is_caught(flaws: Flaws, expected: set[str]) -> None:
    kinds = set()
    for i in range(60):
        outcome = simulate(BASE_SEED + i, flaws=flaws)
        if outcome.violation is not None:
            kinds.add(outcome.violation.kind)
    assert kinds & expected, kinds


def test_one_seed_one_history_in_process_and_in_a_fresh_interpreter() -> None:
    first = simulate(BASE_SEED, voters=5)
    assert simulate(BASE_SEED, voters=5).trace_hash == first.trace_hash
    assert simulate(BASE_SEED + 1, voters=5).trace_hash != first.trace_hash
    replay = replay_command(BASE_SEED, 5, 0).split()
    result = subprocess.run(
        [sys.executable, *replay[1:]],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"trace {first.trace_hash}" in result.stdout
