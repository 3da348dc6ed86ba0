"""One table and a set of plots over all finished runs under a folder.

    python -m analysis.report runs/ [--out report/]

Table (report.csv and report.md): one row per (algorithm, arch, dataset, density) over the
runs that share them — typically seeds — with test accuracy mean ± std, validation accuracy
and wall time.  IMP runs contribute one point per level.  Plots (PNG): test accuracy against
density (log axis) per algorithm; per IMP run its levels (accuracy, successive barrier, top
Hessian eigenvalue when recorded), its successive interpolation curves and barrier matrix;
per run its per-layer densities.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import sys
from collections import defaultdict

TABLE_COLUMNS = ["algo", "arch", "dataset", "density_pct", "sparsity_pct", "runs",
                 "test_acc_mean", "test_acc_std", "val_acc_mean", "wall_seconds_mean",
                 "flops_pct_mean", "theoretical_speedup_mean"]


def find_runs(root: str) -> list[dict]:
    """Finished runs below `root`: their summary plus `run_dir`."""
    runs = []
    for folder, _, files in os.walk(root):
        if "summary.json" not in files:
            continue
        try:
            with open(os.path.join(folder, "summary.json"), encoding="utf-8") as handle:
                summary = json.load(handle)
        except (OSError, ValueError):
            continue
        if summary.get("status") == "done":
            if summary.get("prune_granularity"):      # channel / n:m tickets apart
                summary["algo"] = f"{summary['algo']} [{summary['prune_granularity']}]"
            runs.append({**summary, "run_dir": folder})
    return sorted(runs, key=lambda r: r["run_dir"])


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _points(run: dict) -> list[tuple]:
    """(density %, test acc, val acc, seconds) of a run: one per IMP level (from levels.csv,
    the level's own training time), else the final result and the run's wall time."""
    levels = os.path.join(run["run_dir"], "levels.csv")
    if os.path.isfile(levels):
        return [(float(r["density_pct"]), _number(r.get("test_acc")), _number(r.get("val_acc")),
                 _number(r.get("seconds"))) for r in _read_csv(levels)]
    if run.get("level_density_pct") and run.get("level_test_acc"):
        return [(d, t, None, None) for d, t in zip(run["level_density_pct"],
                                                   run["level_test_acc"])]
    return [(run.get("density_pct", 100.0), run.get("test_acc"), run.get("val_acc"),
             run.get("wall_seconds"))]


def _stats(values: list) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_table(runs: list[dict]) -> list[dict]:
    groups: dict = defaultdict(list)
    for run in runs:
        for density, test, val, seconds in _points(run):
            key = (run["algo"], run["arch"], run["dataset"], round(density, 3))
            groups[key].append((test, val, seconds))
    rows = []
    for (algo, arch, dataset, density), items in sorted(groups.items(),
                                                         key=lambda kv: (kv[0][:3], -kv[0][3])):
        test_mean, test_std = _stats([i[0] for i in items])
        rows.append({"algo": algo, "arch": arch, "dataset": dataset, "density_pct": density,
                     "sparsity_pct": round(100.0 - density, 3), "runs": len(items),
                     "test_acc_mean": test_mean, "test_acc_std": test_std,
                     "val_acc_mean": _stats([i[1] for i in items])[0],
                     "wall_seconds_mean": _stats([i[2] for i in items])[0]})
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| algo | arch | dataset | density % | sparsity % | runs | test acc % | "
             "val acc % | wall s | FLOPs % | speed-up (theory) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        test = cell(r["test_acc_mean"]) if r["runs"] < 2 else \
            f"{cell(r['test_acc_mean'])} ± {cell(r['test_acc_std'])}"
        lines.append(f"| {r['algo']} | {r['arch']} | {r['dataset']} | {cell(r['density_pct'])}"
                     f" | {cell(r['sparsity_pct'])} | {r['runs']} | {test} | "
                     f"{cell(r['val_acc_mean'])} | {cell(r['wall_seconds_mean'])} | "
                     f"{cell(r.get('flops_pct_mean', float('nan')))} | "
                     f"{cell(r.get('theoretical_speedup_mean', float('nan')))} |")
    return "\n".join(lines) + "\n"


def _read_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _name(run: dict) -> str:
    return os.path.basename(run["run_dir"].rstrip("/"))


def make_plots(runs: list[dict], rows: list[dict], out: str) -> list[str]:
    """All report plots; returns their paths."""
    from analysis.plots import (plot_accuracy_vs_density, plot_layer_density, plot_levels,
                                plot_matrix)

    made = []
    series: dict = defaultdict(list)
    for r in rows:
        series[f"{r['algo']} {r['arch']} {r['dataset']}"].append(
            (r["density_pct"], r["test_acc_mean"], r["test_acc_std"]))
    if series:
        made.append(plot_accuracy_vs_density(series, os.path.join(out, "accuracy_vs_density.png"),
                                             "test accuracy vs density"))
    for run in runs:
        name, run_dir = _name(run), run["run_dir"]
        levels = os.path.join(run_dir, "levels.csv")
        if os.path.isfile(levels):
            made.append(plot_levels(_read_csv(levels), os.path.join(out, f"{name}_levels.png"),
                                    f"{name}: IMP levels"))
        analysis_dir = os.path.join(run_dir, "analysis")
        curves = sorted(f for f in os.listdir(analysis_dir) if f.startswith("lmc_L")
                        and f.endswith(".csv")) if os.path.isdir(analysis_dir) else []
        if curves:
            made.append(_plot_curves(analysis_dir, curves, os.path.join(
                out, f"{name}_barrier_curves.png"), name))
        matrix = os.path.join(analysis_dir, "lmc_matrix.csv")
        if os.path.isfile(matrix):
            table = _read_csv(matrix)
            labels = [r["level"] for r in table]
            values = [[float(r[label]) for label in labels] for r in table]
            made.append(plot_matrix(values, labels, os.path.join(out, f"{name}_lmc_matrix.png"),
                                    f"{name}: barriers between levels"))
        density = os.path.join(run_dir, "layer_density.csv")
        if os.path.isfile(density):
            made.append(plot_layer_density(_read_csv(density), os.path.join(
                out, f"{name}_layer_density.png"), f"{name}: per-layer density"))
    return made


def _plot_curves(folder: str, files: list[str], path: str, name: str) -> str:
    from analysis.interpolation import error_barrier
    from analysis.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for file in files:
        rows = _read_csv(os.path.join(folder, file))
        gammas = [float(r["gamma"]) for r in rows]
        errors = [float(r["test_error"]) for r in rows]
        label = file[len("lmc_"):-len(".csv")].replace("_", " → ")
        ax.plot(gammas, errors, marker=".",
                label=f"{label} (barrier {error_barrier(gammas, errors):.2f})")
    ax.set_xlabel("γ (0 = earlier level, 1 = later level)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{name}: successive interpolation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from utils.checkpoint import write_text
    from utils.logging import write_csv

    parser = argparse.ArgumentParser(prog="python -m analysis.report",
                                     description="Table and plots over finished runs.")
    parser.add_argument("root", help="folder holding run directories (searched recursively)")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: no such folder: {args.root}", file=sys.stderr)
        return 2
    runs = find_runs(args.root)
    if not runs:
        print(f"error: no finished runs (summary.json with status done) under {args.root}",
              file=sys.stderr)
        return 2
    from analysis.flops_report import add_flops_columns, plot_accuracy_vs_flops, speed_section

    rows = summary_table(runs)
    add_flops_columns(rows, runs)
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "report.csv"), TABLE_COLUMNS, rows)
    write_text(os.path.join(args.out, "report.md"), markdown(rows) + speed_section(runs))
    plots = make_plots(runs, rows, args.out)
    flops_plot = plot_accuracy_vs_flops(runs, os.path.join(args.out, "accuracy_vs_flops.png"))
    plots += [flops_plot] if flops_plot else []
    print(markdown(rows))
    print(f"{len(runs)} runs; written: {args.out}/report.csv, report.md and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
