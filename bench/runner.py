"""Run workloads against systems: start each server, run every client's jobs, stop it.

For each system (in order), unless it is missing here: start its server in a fresh work
directory, then for each of its clients whose library is importable, for each record size
and repeat: produce then consume (on one fresh stream), then e2e (on another). A consume
needs records, so when only consume is asked for, the produce runs first and is not
reported. A system or client that cannot run here is `Skipped`; a job that raises is a
`Result` with every record failed and the error, and the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Meter, Server
from bench.systems import ClientAdapter, System, missing_modules
from bench.workload import (
    Job,
    Kind,
    Outcome,
    Progress,
    Result,
    Skipped,
    Workload,
    make_keys,
    make_result,
    value_pool,
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: `kinds` at each of `sizes`, `repeat` times, with `base` supplying the
    other settings (its kind, value_bytes and records are replaced per job)."""

    kinds: tuple[Kind, ...]
    sizes: tuple[int, ...]
    records: dict[int, int]
    """Records per produce/consume, by value size."""
    e2e_records: int
    e2e_linger_ms: int
    base: Workload
    repeat: int = 1


@dataclass(slots=True)
class RunReport:
    results: list[Result] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def run(
    systems: Sequence[System],
    plan: Plan,
    progress: Progress,
    work_parent: Path | None = None,
    clients: Sequence[str] | None = None,
) -> RunReport:
    """Run `plan` on every system (only the `clients` named, when given)."""
    report = RunReport()
    run_id = uuid.uuid4().hex[:8]
    for system in systems:
        reason = system.missing()
        if reason is not None:
            report.skipped += [
                Skipped(system.name, c.name, reason)
                for c in system.clients
                if clients is None or c.name in clients
            ]
            progress.note(f"{system.name}: skipped ({reason})")
            continue
        adapters = []
        for adapter in system.clients:
            if clients is not None and adapter.name not in clients:
                continue
            absent = missing_modules(adapter)
            if absent:
                reason = f"Python module {', '.join(absent)} is not installed"
                report.skipped.append(Skipped(system.name, adapter.name, reason))
                progress.note(f"{system.name}/{adapter.name}: skipped ({reason})")
            else:
                adapters.append(adapter)
        if not adapters:
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{system.name}-", dir=work_parent) as d:
            try:
                server_context = system.start(Path(d), plan.base.partitions)
                with contextlib.ExitStack() as stack:
                    server = stack.enter_context(server_context)
                    for adapter in adapters:
                        report.results += _run_client(
                            system, adapter, server, plan, run_id, progress
                        )
            except Exception as exc:
                if system.name == "tidelog":
                    raise
                # A peer that is installed but does not start (or stop) cleanly is reported,
                # and the other systems still run.
                reason = f"could not run: {type(exc).__name__}: {exc}"
                report.skipped += [Skipped(system.name, a.name, reason) for a in adapters]
                progress.note(f"{system.name}: {reason}")
    return report


def _run_client(
    system: System,
    adapter: ClientAdapter,
    server: Server,
    plan: Plan,
    run_id: str,
    progress: Progress,
) -> list[Result]:
    results: list[Result] = []
    keys = make_keys(plan.base.keys)
    for size in plan.sizes:
        records = plan.records[size]
        values = value_pool(size, max(records, plan.e2e_records))
        for repeat in range(plan.repeat):
            stream = _stream_name(run_id, adapter.name, size, repeat)
            if "produce" in plan.kinds or "consume" in plan.kinds:
                workload = dataclasses.replace(
                    plan.base, kind="produce", value_bytes=size, records=records
                )
                job = Job(workload, stream, values, keys, Meter(server.pid), progress)
                produced = _run_job(system, adapter, server, job, repeat, progress)
                if "produce" in plan.kinds:
                    results.append(produced)
                if "consume" in plan.kinds:
                    workload = dataclasses.replace(workload, kind="consume")
                    job = Job(workload, stream, values, keys, Meter(server.pid), progress)
                    job.expected = produced.records
                    results.append(_run_job(system, adapter, server, job, repeat, progress))
            if "e2e" in plan.kinds:
                workload = dataclasses.replace(
                    plan.base,
                    kind="e2e",
                    value_bytes=size,
                    records=plan.e2e_records,
                    linger_ms=plan.e2e_linger_ms,
                )
                job = Job(workload, f"{stream}-e2e", values, keys, Meter(server.pid), progress)
                results.append(_run_job(system, adapter, server, job, repeat, progress))
    return results


def _stream_name(run_id: str, client: str, size: int, repeat: int) -> str:
    """A name every system accepts (no dots: NATS subjects and streams are dotted)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", f"bench-{run_id}-{client}-{size}b-r{repeat}")


def _run_job(
    system: System,
    adapter: ClientAdapter,
    server: Server,
    job: Job,
    repeat: int,
    progress: Progress,
) -> Result:
    workload = job.workload
    label = f"{system.name}/{adapter.name} {workload.kind} {workload.value_bytes} B"
    progress.begin(label, job.expected if workload.kind == "consume" else workload.records)
    try:
        outcome = getattr(adapter, workload.kind)(server, job)
    except Exception as exc:
        progress.note("".join(traceback.format_exception(exc)).rstrip())
        outcome = Outcome(records=0, payload_bytes=0)
        outcome.fail(f"{type(exc).__name__}: {exc}", max(job.expected, workload.records))
        if not job.meter.started:
            job.meter.start()
        job.meter.stop()
    result = make_result(system.name, adapter.name, job, repeat, outcome)
    progress.end(_summary(result))
    return result


def _summary(result: Result) -> str:
    text = (
        f"{result.records:,} records, {result.records_per_s:,.0f} rec/s, {result.mb_per_s:.1f} MB/s"
    )
    if "p99" in result.latency_ms:
        text += f", p99 {result.latency_ms['p99']:.2f} ms"
    if result.failed:
        text += f", FAILED {result.failed}: {result.first_error}"
    elif result.time_limited:
        text += " (time limit)"
    return text
