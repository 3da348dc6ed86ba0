"""The FLOPs part of analysis.report: FLOPs columns of the table, test accuracy against FLOPs,
and the inference-speed tables of runs measured by analysis.speed."""
from __future__ import annotations

import os
import statistics
from collections import defaultdict

from analysis.results import number, read_csv


def flops_points(run: dict) -> list[tuple]:
    """(density %, FLOPs %, theoretical speed-up, test acc) of a run: one per IMP level
    (levels.csv with FLOPs columns), else the final result from summary.json."""
    levels = os.path.join(run["run_dir"], "levels.csv")
    if os.path.isfile(levels):
        rows = read_csv(levels)
        if rows and "flops_pct" in rows[0]:
            return [(float(r["density_pct"]), number(r["flops_pct"]),
                     number(r["theoretical_speedup"]), number(r.get("test_acc")))
                    for r in rows]
    return [(run.get("density_pct", 100.0), run.get("flops_pct"),
             run.get("theoretical_speedup"), run.get("test_acc"))]


def add_flops_columns(rows: list[dict], runs: list[dict]) -> None:
    """Give every table row (algo, arch, dataset, density) the mean FLOPs % and theoretical
    speed-up of its runs' points (blank for runs recorded before FLOPs were counted)."""
    found: dict = defaultdict(list)
    for run in runs:
        for density, flops, speedup, _ in flops_points(run):
            key = (run["algo"], run["arch"], run["dataset"], round(density, 3))
            found[key].append((flops, speedup))
    for row in rows:
        items = found.get((row["algo"], row["arch"], row["dataset"], row["density_pct"]), [])
        for i, column in enumerate(("flops_pct_mean", "theoretical_speedup_mean")):
            values = [item[i] for item in items if item[i] is not None]
            row[column] = statistics.fmean(values) if values else float("nan")


def plot_accuracy_vs_flops(runs: list[dict], path: str) -> str | None:
    """Test accuracy against the FLOPs left (%, log axis), one series per algorithm / arch /
    dataset (granularity in the algorithm's label); None when no run has FLOPs."""
    series: dict = defaultdict(list)
    for run in runs:
        for _, flops, _, test in flops_points(run):
            if flops is not None and test is not None:
                series[f"{run['algo']} {run['arch']} {run['dataset']}"].append((flops, test))
    if not series:
        return None
    from analysis.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, points in sorted(series.items()):
        points.sort(reverse=True)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label,
                markersize=4)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("FLOPs left (% of the dense network's multiply-adds, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy vs FLOPs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def speed_section(runs: list[dict]) -> str:
    """Markdown: the speed.md table of every run that has one ('' when none does)."""
    parts = []
    for run in runs:
        path = os.path.join(run["run_dir"], "speed.md")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                text = handle.read().split("\n", 1)[-1].strip()
            parts.append(f"### {os.path.basename(run['run_dir'].rstrip('/'))}\n\n{text}\n")
    return ("\n## Inference speed (analysis.speed)\n\n" + "\n".join(parts)) if parts else ""
