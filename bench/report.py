"""Results as a terminal table, JSON, a markdown report and a PNG chart; the target check.

Figures: records/s and MB/s of values (MB = 10^6 bytes) over the timed part of a job;
latency percentiles in ms; the server's CPU seconds (its whole process tree) per million
records; "of raw" is the share of the raw ceiling's MB/s for the same workload and size.
With repeats, a row shows the median of each figure and the spread of records/s,
(max - min) / median.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import Machine
from bench.workload import KINDS, Result, Skipped

RAW_SYSTEM = "raw-tcp"
LATENCY_COLUMNS = ("p50", "p99", "p99.9", "max")


@dataclass(frozen=True, slots=True)
class Row:
    """The repeats of one (system, client, kind, size), summarised."""

    system: str
    client: str
    kind: str
    value_bytes: int
    runs: int
    records: int
    expected: int
    failed: int
    first_error: str | None
    time_limited: bool
    records_per_s: float
    mb_per_s: float
    spread: float
    latency_ms: dict[str, float]
    server_cpu_s_per_m: float | None

    @property
    def label(self) -> str:
        return f"{self.system}/{self.client}"

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.records == self.expected


def summarise(results: Iterable[Result]) -> list[Row]:
    groups: dict[tuple[str, str, str, int], list[Result]] = {}
    for result in results:
        key = (result.system, result.client, result.workload.kind, result.workload.value_bytes)
        groups.setdefault(key, []).append(result)
    rows = []
    for (system, client, kind, value_bytes), runs in groups.items():
        rates = [r.records_per_s for r in runs]
        median_rate = statistics.median(rates)
        latency_keys = set.intersection(*(set(r.latency_ms) for r in runs))
        cpu = [r.server_cpu_s_per_m for r in runs if r.server_cpu_s_per_m is not None]
        errors = [r.first_error for r in runs if r.first_error]
        rows.append(
            Row(
                system=system,
                client=client,
                kind=kind,
                value_bytes=value_bytes,
                runs=len(runs),
                records=sum(r.records for r in runs),
                expected=sum(r.expected for r in runs),
                failed=sum(r.failed for r in runs),
                first_error=errors[0] if errors else None,
                time_limited=any(r.time_limited for r in runs),
                records_per_s=median_rate,
                mb_per_s=statistics.median(r.mb_per_s for r in runs),
                spread=(max(rates) - min(rates)) / median_rate if median_rate else 0.0,
                latency_ms={
                    key: statistics.median(r.latency_ms[key] for r in runs)
                    for key in sorted(latency_keys)
                },
                server_cpu_s_per_m=statistics.median(cpu) if cpu else None,
            )
        )
    kind_order: dict[str, int] = {kind: index for index, kind in enumerate(KINDS)}
    rows.sort(key=lambda row: (kind_order[row.kind], row.value_bytes))
    return rows


def raw_share(row: Row, rows: Sequence[Row]) -> float | None:
    """`row`'s MB/s as a share of the raw ceiling's for the same kind and size."""
    for other in rows:
        if (
            other.system == RAW_SYSTEM
            and other.kind == row.kind
            and other.value_bytes == row.value_bytes
            and other.mb_per_s > 0
        ):
            return row.mb_per_s / other.mb_per_s
    return None


def _columns(row: Row, rows: Sequence[Row]) -> list[str]:
    share = raw_share(row, rows)
    status = ""
    if row.failed:
        status = f"FAILED {row.failed:,}: {row.first_error}"
    elif row.time_limited:
        status = f"time limit ({row.records:,} of {row.expected:,})"
    return [
        row.kind,
        f"{row.value_bytes}",
        row.label,
        f"{row.records // row.runs:,}",
        f"{row.records_per_s:,.0f}",
        f"{row.mb_per_s:,.1f}",
        *(
            f"{row.latency_ms[key]:.2f}" if key in row.latency_ms else "-"
            for key in LATENCY_COLUMNS
        ),
        "-" if row.server_cpu_s_per_m is None else f"{row.server_cpu_s_per_m:.2f}",
        "-" if share is None else f"{share:.0%}",
        f"{row.spread:.0%}" if row.runs > 1 else "-",
        status,
    ]


HEADER = [
    "workload",
    "size B",
    "system/client",
    "records",
    "rec/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "server CPU s/M",
    "of raw",
    "spread",
    "",
]
RIGHT_ALIGNED = {1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}


def format_table(rows: Sequence[Row], skipped: Sequence[Skipped]) -> str:
    """A plain-text table, one line per row, then the skipped systems."""
    lines = [HEADER, *(_columns(row, rows) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    text = [
        "  ".join(
            cell.rjust(widths[i]) if i in RIGHT_ALIGNED else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ).rstrip()
        for line in lines
    ]
    text += [f"skipped: {s.system}/{s.client}: {s.reason}" for s in skipped]
    return "\n".join(text)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(cell or "status" for cell in HEADER) + " |"]
    lines.append(
        "|" + "|".join("---:" if i in RIGHT_ALIGNED else "---" for i in range(len(HEADER))) + "|"
    )
    lines += ["| " + " | ".join(_columns(row, rows)) + " |" for row in rows]
    return "\n".join(lines)


# --- client comparison (tidelog's client against confluent-kafka) ----------------------


def client_ratios(rows: Sequence[Row]) -> list[tuple[str, int, float, float, float]]:
    """(kind, size, confluent rec/s, ours rec/s, ours / confluent) for every workload both
    clients ran against tidelog."""
    by_key = {(r.client, r.kind, r.value_bytes): r for r in rows if r.system == "tidelog"}
    ratios = []
    for (client, kind, size), theirs in by_key.items():
        if client != "confluent-kafka":
            continue
        ours = by_key.get(("tidelog-client", kind, size))
        if ours is not None and theirs.records_per_s > 0:
            ratios.append(
                (
                    kind,
                    size,
                    theirs.records_per_s,
                    ours.records_per_s,
                    ours.records_per_s / theirs.records_per_s,
                )
            )
    return ratios


# --- targets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: str
    required: str
    met: bool | None
    """None: not measured in this run (a system skipped or a workload not run)."""


def _row(rows: Sequence[Row], system: str, client: str, kind: str, size: int) -> Row | None:
    for row in rows:
        if (row.system, row.client, row.kind, row.value_bytes) == (system, client, kind, size):
            return row
    return None


def check_targets(rows: Sequence[Row], acks: str, e2e_rate_per_s: int) -> list[Target]:
    """Issue #7's targets, as far as this run measured them."""
    targets = []
    confluent_100 = _row(rows, "tidelog", "confluent-kafka", "produce", 100)
    ours_100 = _row(rows, "tidelog", "tidelog-client", "produce", 100)
    rstream_100 = _row(rows, "rabbitmq-streams", "rstream", "produce", 100)
    acks_note = "" if acks == "1" else f" (this run used acks={acks})"
    for name, ours, factor in (
        (f"confluent-kafka produce 100 B acks=1 >= 1.5x rstream{acks_note}", confluent_100, 1.5),
        (f"tidelog client produce 100 B >= 1.0x rstream{acks_note}", ours_100, 1.0),
    ):
        if ours is None or rstream_100 is None or not rstream_100.ok:
            targets.append(Target(name, "not measured", f"{factor}x rstream", None))
            continue
        ratio = ours.records_per_s / rstream_100.records_per_s
        targets.append(
            Target(
                name,
                f"{ours.records_per_s:,.0f} rec/s = {ratio:.2f}x "
                f"({rstream_100.records_per_s:,.0f})",
                f">= {factor * rstream_100.records_per_s:,.0f} rec/s",
                ours.ok and ratio >= factor,
            )
        )
    for name, row, threshold in (
        (
            "confluent-kafka produce 1 KiB >= 500 MB/s",
            _row(rows, "tidelog", "confluent-kafka", "produce", 1024),
            500.0,
        ),
        (
            "confluent-kafka consume 1 KiB >= 1 GB/s",
            _row(rows, "tidelog", "confluent-kafka", "consume", 1024),
            1000.0,
        ),
    ):
        if row is None:
            targets.append(Target(name, "not measured", f">= {threshold:,.0f} MB/s", None))
        else:
            targets.append(
                Target(
                    name,
                    f"{row.mb_per_s:,.1f} MB/s",
                    f">= {threshold:,.0f} MB/s",
                    row.ok and row.mb_per_s >= threshold,
                )
            )
    for client in ("confluent-kafka", "tidelog-client"):
        name = f"e2e p99 <= 5 ms at 20,000 msg/s ({client}, 100 B)"
        row = _row(rows, "tidelog", client, "e2e", 100)
        if row is None or "p99" not in row.latency_ms:
            targets.append(Target(name, "not measured", "<= 5.00 ms", None))
            continue
        rate_note = "" if e2e_rate_per_s == 20_000 else f" (run at {e2e_rate_per_s:,} msg/s)"
        targets.append(
            Target(
                name,
                f"p99 {row.latency_ms['p99']:.2f} ms{rate_note}",
                "<= 5.00 ms",
                row.ok and row.latency_ms["p99"] <= 5.0 and e2e_rate_per_s >= 20_000,
            )
        )
    return targets


# --- JSON and markdown ------------------------------------------------------------------


def to_json(
    results: Sequence[Result],
    skipped: Sequence[Skipped],
    targets: Sequence[Target],
    context: dict[str, Any],
) -> str:
    return json.dumps(
        {
            **context,
            "results": [dataclasses.asdict(r) for r in results],
            "skipped": [dataclasses.asdict(s) for s in skipped],
            "targets": [dataclasses.asdict(t) for t in targets],
        },
        indent=2,
    )


def mark_plain(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def markdown(
    rows: Sequence[Row],
    skipped: Sequence[Skipped],
    targets: Sequence[Target],
    context: dict[str, Any],
    machine: Machine,
    durability: dict[str, str],
    chart_name: str | None,
    chart_note: str | None,
    profile_text: str | None,
) -> str:
    settings = context["settings"]
    parts = [
        f"# tidelog benchmark, {context['started_at']}",
        "",
        f"Machine: {machine.cpus} cores ({machine.cpu_model}), {machine.memory_gib} GiB memory, "
        f"{machine.python}, {machine.platform}. Everything ran on this one machine over "
        "loopback: servers, clients and the harness share its cores, so figures move with "
        "whatever else runs on it; compare figures from one run, not across runs.",
        "",
        "Settings: "
        + ", ".join(f"{key} {value}" for key, value in settings.items())
        + ". MB = 10^6 bytes of record values. Latency: produce = send to acknowledgement "
        "at saturation (queueing included); e2e = a producer at a fixed rate to the "
        "consumer's receipt, from a timestamp inside the value.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()) + ".",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
    ]
    if skipped:
        parts += ["Skipped:", ""]
        parts += [f"- {s.system}/{s.client}: {s.reason}" for s in skipped]
        parts.append("")
    if chart_name is not None:
        parts += [f"![throughput and latency]({chart_name})", ""]
    elif chart_note is not None:
        parts += [f"No chart: {chart_note}.", ""]
    ratios = client_ratios(rows)
    if ratios:
        parts += [
            "## tidelog's client against confluent-kafka (same broker, same run)",
            "",
            "| workload | size B | confluent-kafka rec/s | tidelog-client rec/s | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        parts += [
            f"| {kind} | {size} | {theirs:,.0f} | {ours:,.0f} | {ratio:.2f} |"
            for kind, size, theirs, ours, ratio in ratios
        ]
        parts.append("")
    parts += ["## Targets", ""]
    if targets:
        parts += ["| target | measured | required | status |", "|---|---|---|---|"]
        parts += [f"| {t.name} | {t.measured} | {t.required} | {_mark(t.met)} |" for t in targets]
    else:
        parts.append("Not checked: a smoke run's figures say nothing about performance.")
    parts += ["", "## What each system persists here", ""]
    parts += [f"- {name}: {text}" for name, text in durability.items()]
    if profile_text:
        parts += ["", "## Broker profile (cProfile, by own time)", "", "```", profile_text, "```"]
    return "\n".join(parts) + "\n"


# --- chart ------------------------------------------------------------------------------


def write_chart(rows: Sequence[Row], path: Path) -> str | None:
    """Throughput per system and size (produce, consume) and e2e latency percentiles, as a
    PNG at `path`. Returns why there is no chart (matplotlib missing, nothing to plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'tidelog[bench]')"
    throughput_kinds = [k for k in ("produce", "consume") if any(r.kind == k for r in rows)]
    e2e_rows = [r for r in rows if r.kind == "e2e" and r.latency_ms]
    panels = len(throughput_kinds) + (1 if e2e_rows else 0)
    if panels == 0:
        return "no results to plot"
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels + 2.5, 5.0), squeeze=False)
    for axis, kind in zip(axes[0], throughput_kinds, strict=False):
        kind_rows = [r for r in rows if r.kind == kind]
        labels = sorted({r.label for r in kind_rows}, key=_label_order)
        sizes = sorted({r.value_bytes for r in kind_rows})
        width = 0.8 / max(len(sizes), 1)
        for index, size in enumerate(sizes):
            by_label = {r.label: r.mb_per_s for r in kind_rows if r.value_bytes == size}
            positions = [i + (index - (len(sizes) - 1) / 2) * width for i in range(len(labels))]
            axis.bar(
                positions, [by_label.get(label, 0.0) for label in labels], width, label=f"{size} B"
            )
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("MB/s of values (log scale)")
        axis.set_title(f"{kind} throughput")
        axis.legend(fontsize=8)
    if e2e_rows:
        axis = axes[0][-1]
        keys = [
            k for k in ("p50", "p95", "p99", "p99.9") if all(k in r.latency_ms for r in e2e_rows)
        ]
        labels = sorted({r.label for r in e2e_rows}, key=_label_order)
        colors = {label: f"C{index % 10}" for index, label in enumerate(labels)}
        sizes = sorted({r.value_bytes for r in e2e_rows})
        styles = {size: ("-", "--", ":", "-.")[index % 4] for index, size in enumerate(sizes)}
        for row in sorted(e2e_rows, key=lambda r: (_label_order(r.label), r.value_bytes)):
            axis.plot(
                keys,
                [row.latency_ms[k] for k in keys],
                marker="o",
                color=colors[row.label],
                linestyle=styles[row.value_bytes],
                label=f"{row.label} {row.value_bytes} B",
            )
        axis.set_yscale("log")
        axis.set_ylabel("ms (log scale)")
        axis.set_title("end-to-end latency at a fixed rate")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _label_order(label: str) -> tuple[int, str]:
    system = label.split("/", 1)[0]
    order = ["tidelog", "nats-jetstream", "redis-streams", "rabbitmq-streams", RAW_SYSTEM]
    return (order.index(system) if system in order else len(order), label)
