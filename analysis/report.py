"""A results table and paper-ready figures over all finished runs under some folders.

    python -m analysis.report runs/ [more folders ...] [--out report/] [--formats png,pdf]

Runs are grouped into series by every science option of their config.yaml except the seed
(`seed`, `trial_num`) and the options that only add measurements (analyses, controls,
sanity checks: MEASUREMENT_ONLY): the runs of a series are the same experiment under
different seeds.  Each series is labelled by its algorithm and the options whose values
differ between series (`imp_wr · imp_rewind_iter=0`), and the options all series share are
listed once above the table.

Table (report.csv, report.md): one row per series (IMP: per series and level) with test and
validation accuracy mean ± std over the seeds, then one column per side result the runs
recorded — the untrained ticket (Gem-Miner, edge-popup, pruning at init), each sanity check
and each control — and two times: `level_train_s` (IMP: the training time of that level)
and `run_wall_s` (the whole run, every phase and analysis).

Figures (analysis/report_figures.py; PNG at 200 dpi plus the vector formats asked for):
test accuracy against density for all series with their controls, sanity checks and
untrained tickets as marked points of the same colour; per IMP series its levels (mean ±
std over the seeds, the dense accuracy and the matching band, controls; the successive
barrier and top Hessian eigenvalue when recorded), its barrier matrix and interpolation
curves (means over the seeds), and per series the per-layer density.
"""
from __future__ import annotations

import math
import os
import sys

from analysis.results import LEVEL_MEASURES, Group, find_runs, group_rows, group_runs, show, \
    side_keys, side_title


def science_schema() -> list:
    """The science options of the config schema (what may define a series)."""
    from args_helper import IGNORED, OPTIONS

    return [o for o in OPTIONS if o.science and o.yaml and o.status not in IGNORED]


MEASURE_TITLES = {"flops_pct": "FLOPs %", "theoretical_speedup": "speed-up (theory)",
                  "iterations": "iterations", "grad_norm": "grad norm"}


def table_columns(rows: list[dict], differing: list[str]) -> list[str]:
    """report.csv's columns: the series and its differing options, the result, the side
    results (mean and std each), the matching flags and the times."""
    cols = ["series"] + [n for n in differing if n != "algo"] + [
        "algo", "arch", "dataset", "level", "density_pct", "sparsity_pct", "runs", "seeds",
        "test_acc_mean", "test_acc_std", "val_acc_mean", "val_acc_std"]
    for name in side_keys(rows):
        cols += [f"{name}_mean", f"{name}_std"]
    for name in LEVEL_MEASURES:
        if any(f"{name}_mean" in r for r in rows):
            cols += [f"{name}_mean", f"{name}_std"]
    if any("matching" in r for r in rows):
        cols.append("matching")
    return cols + ["level_train_s_mean", "run_wall_s_mean"]


def markdown(groups: list[Group], rows: list[dict], shared: dict) -> str:
    """report.md: shared options, the table (accuracies mean ± std, %), and the runs of each
    series."""
    def cell(mean, std=None, runs=1, fmt=".2f"):
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return ""
        if std is None or runs < 2 or math.isnan(std):
            return f"{mean:{fmt}}"
        return f"{mean:{fmt}} ± {std:{fmt}}"

    sides = side_keys(rows)
    imp = any(r["level"] != "" for r in rows)
    shown = {k: v for k, v in shared.items() if k != "algo"}
    lines = ["# Results", ""]
    if shown:
        lines += ["Shared by every series: " + ", ".join(f"{k}={show(v)}"
                                                         for k, v in sorted(shown.items())),
                  ""]
    head = ["series"] + (["level"] if imp else []) + ["density %", "runs", "test acc %",
                                                      "val acc %"]
    head += [f"{side_title(n)} %" for n in sides]
    measures = [m for m in ("flops_pct", "theoretical_speedup", "iterations", "grad_norm")
                if any(f"{m}_mean" in r for r in rows)]
    head += [MEASURE_TITLES[m] for m in measures]
    head += (["matching"] if imp else []) + (["level train s"] if imp else []) + ["run wall s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        n = r["runs"]
        cells = [r["series"]] + ([str(r["level"])] if imp else [])
        cells += [f"{r['density_pct']:.3g}", str(n),
                  cell(r["test_acc_mean"], r["test_acc_std"], n),
                  cell(r["val_acc_mean"], r["val_acc_std"], n)]
        cells += [cell(r.get(f"{s}_mean"), r.get(f"{s}_std"), n) for s in sides]
        # gradient norms with 4 significant digits (sparse networks' norms are ≪ 1)
        cells += [cell(r.get(f"{m}_mean"), fmt=".4g" if m == "grad_norm" else ".2f")
                  for m in measures]
        if imp:
            cells += [r.get("matching", ""), cell(r["level_train_s_mean"])]
        cells.append(cell(r["run_wall_s_mean"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracies: mean ± sample std over the runs (seeds) of a series. "
              + ("`level train s`: training time of that IMP level; " if imp else "")
              + "`run wall s`: the whole run (every phase and analysis).", "", "## Series", ""]
    for g in groups:
        lines.append(f"- {g.tag} **{g.label}** — {len(g.runs)} run(s): "
                     + ", ".join(f"`{r.run_dir}` (seed {r.seed})" for r in g.runs))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def build(roots: list[str], out: str, formats: tuple) -> tuple[list[Group], list[dict], list]:
    """Group the runs under `roots`, write report.csv / report.md and the figures into
    `out`; returns (groups, rows, figure paths).  Raises ValueError without runs."""
    from analysis.flops_report import plot_accuracy_vs_flops, speed_section
    from analysis.report_figures import write_figures
    from utils.checkpoint import write_text
    from utils.logging import write_csv

    runs = find_runs(*roots)
    if not runs:
        raise ValueError(f"no finished runs (summary.json with status done) under "
                         f"{', '.join(roots)}")
    groups, differing, shared = group_runs(runs, science_schema())
    rows = []
    for g in groups:
        g.rows = group_rows(g)
        for r in g.rows:
            r.update({n: show(g.options.get(n)) for n in differing if n != "algo"})
        rows += g.rows
    os.makedirs(out, exist_ok=True)
    summaries = [{**run.summary, "run_dir": run.run_dir} for g in groups for run in g.runs]
    write_csv(os.path.join(out, "report.csv"), table_columns(rows, differing), rows)
    write_text(os.path.join(out, "report.md"),
               markdown(groups, rows, shared) + speed_section(summaries))
    figures = write_figures(groups, out, formats)
    flops_plot = plot_accuracy_vs_flops(summaries, os.path.join(out, "accuracy_vs_flops.png"))
    return groups, rows, figures + ([flops_plot] if flops_plot else [])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.plots import FORMATS

    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Results table and figures over finished runs, one series per "
                    "experiment (every science option but the seed).")
    parser.add_argument("roots", nargs="+", metavar="FOLDER",
                        help="folders holding run directories (searched recursively)")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--formats", default="png,pdf",
                        help=f"figure formats, comma-separated from {', '.join(FORMATS)} "
                             f"(default: png,pdf)")
    args = parser.parse_args(argv)
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        print(f"error: --formats: unknown format {bad[0] if bad else '(none)'} (choose from "
              f"{', '.join(FORMATS)})", file=sys.stderr)
        return 2
    missing = [r for r in args.roots if not os.path.isdir(r)]
    if missing:
        print(f"error: no such folder: {missing[0]}", file=sys.stderr)
        return 2
    try:
        groups, rows, figures = build(args.roots, args.out, formats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(os.path.join(args.out, "report.md"), encoding="utf-8") as handle:
        print(handle.read())
    runs = sum(len(g.runs) for g in groups)
    print(f"{runs} runs in {len(groups)} series; written: {args.out}/report.csv, report.md "
          f"and {len(figures)} figure files ({', '.join(formats)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
