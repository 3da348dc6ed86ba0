"""The report's figures, built from series of runs (analysis/report.py): accuracy against
density for all series, and per series its IMP levels, barrier matrix, interpolation curves
and per-layer density.  Each builder returns a matplotlib figure (or None when the runs
recorded nothing for it), so the same figures go to files (`write_figures`) and, for a single
run, into its TensorBoard events (`run_figures`)."""
from __future__ import annotations

import math
import os

from analysis.plots import density_axis, draw_matrix, figure, save, title
from analysis.results import Group, group_rows, mean_std, read_csv, side_keys, side_title

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
SIDE_MARKERS = ("^", "v", "D", "P", "X", "*", "<", ">", "h")


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _finite(rows, key):
    return [(r["density_pct"], r[key], r.get(key.replace("_mean", "_std"), 0.0))
            for r in rows if r.get(key) is not None and not math.isnan(r[key])]


def _draw_side(ax, rows: list[dict], name: str, marker: str, colour: str) -> None:
    points = _finite(rows, f"{name}_mean")
    if not points:
        return
    xs, ys, es = zip(*points)
    ax.errorbar(xs, ys, yerr=[0 if math.isnan(e) else e for e in es], fmt=marker,
                linestyle="--" if len(xs) > 1 else "none", color=colour, mfc="white",
                capsize=2, linewidth=0.9, markersize=5)


def accuracy_vs_density(groups: list[Group], heading: str = "Test accuracy against density"):
    """All series: test accuracy (mean ± std over seeds) against density; each series' side
    results (untrained ticket, sanity checks, controls) as hollow markers of its colour, one
    marker shape per kind."""
    rows = [r for g in groups for r in g.rows]
    sides = side_keys(rows)
    markers = {name: SIDE_MARKERS[i % len(SIDE_MARKERS)] for i, name in enumerate(sides)}
    fig, ax = figure(7.6, 4.0)
    for i, g in enumerate(groups):
        colour = _colour(i)
        points = _finite(g.rows, "test_acc_mean")
        if points:
            xs, ys, es = zip(*points)
            es = [0 if math.isnan(e) else e for e in es]
            if len(xs) > 1:
                ax.plot(xs, ys, "o-", color=colour, label=g.label)
                ax.fill_between(xs, [y - e for y, e in zip(ys, es)],
                                [y + e for y, e in zip(ys, es)], color=colour, alpha=0.18,
                                linewidth=0)
            else:
                ax.errorbar(xs, ys, yerr=es, fmt="o", color=colour, capsize=3, label=g.label)
        for name in sides:
            _draw_side(ax, g.rows, name, markers[name], colour)
    density_axis(ax, [r["density_pct"] for r in rows], "density (% of weights kept, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title(heading))
    fig.legend(loc="outside right upper", title_fontsize=8,
               title="series (mean ± std over seeds)")
    if sides:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", color="0.3", linestyle="none", label="result")]
        handles += [Line2D([], [], marker=markers[n], color="0.3", mfc="white",
                           linestyle="none", label=side_title(n)) for n in sides]
        fig.legend(handles=handles, loc="outside right lower", title="marker",
                   title_fontsize=8)
    return fig


def levels_figure(group: Group):
    """An IMP series: test accuracy per level (mean ± std band), the dense level's accuracy
    with the matching band below it, the controls; beside it the successive barrier and the
    top Hessian eigenvalue when recorded."""
    rows = [r for r in group.rows if r["level"] != ""]
    if not rows:
        return None
    extra = [key for key in ("barrier_test", "hessian_top1")
             if any(f"{key}_mean" in r for r in rows)]
    fig, axes = figure(4.6 * (1 + len(extra)), 3.6, ncols=1 + len(extra))
    axes = list(axes) if extra else [axes]
    ax = axes[0]
    points = _finite(rows, "test_acc_mean")
    xs, ys, es = zip(*points)
    es = [0 if math.isnan(e) else e for e in es]
    dense = next((r for r in rows if r["level"] == 0), None)
    if dense is not None and not math.isnan(dense["test_acc_mean"]):
        tolerance = float(group.runs[0].config.get("matching_tolerance", 0.5))
        top = dense["test_acc_mean"]
        ax.axhspan(top - tolerance, top, color="tab:green", alpha=0.12, linewidth=0,
                   label=f"matching band (dense − {tolerance:g} point"
                         f"{'' if tolerance == 1 else 's'})")
        ax.axhline(top, color="tab:green", linewidth=0.9, linestyle=":",
                   label="dense level 0")
    ax.plot(xs, ys, "o-", color="tab:blue", label=f"ticket, test ({rows[0]['runs']} run(s))")
    ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)],
                    color="tab:blue", alpha=0.18, linewidth=0)
    val = _finite(rows, "val_acc_mean")
    if val:
        ax.plot([p[0] for p in val], [p[1] for p in val], "s--", color="tab:gray",
                markersize=3.5, linewidth=1.0, label="ticket, validation")
    for k, name in enumerate(side_keys(rows)):
        _draw_side(ax, rows, name, SIDE_MARKERS[k % len(SIDE_MARKERS)],
                   COLOURS[(k + 1) % len(COLOURS)])
        ax.plot([], [], SIDE_MARKERS[k % len(SIDE_MARKERS)], color=COLOURS[(k + 1) % len(
            COLOURS)], mfc="white", label=side_title(name))
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="best")
    names = {"barrier_test": "test error barrier to the previous level (%)",
             "hessian_top1": "top Hessian eigenvalue"}
    for panel, key in zip(axes[1:], extra):
        pts = _finite(rows, f"{key}_mean")
        if pts:
            panel.errorbar([p[0] for p in pts], [p[1] for p in pts],
                           yerr=[0 if math.isnan(p[2]) else p[2] for p in pts], fmt="o-",
                           color="tab:red", capsize=2)
        panel.set_ylabel(names[key])
    for panel in axes:
        density_axis(panel, list(xs))
    fig.suptitle(title(f"IMP levels: {group.label}", 90))
    return fig


def _mean_table(tables: list[list[dict]], key: str) -> tuple[list[str], list[list[float]]]:
    """Cell-wise means of square CSV matrices keyed by `key` (labels from the first)."""
    labels = [r[key] for r in tables[0]]
    values = []
    for i, label in enumerate(labels):
        row = []
        for col in labels:
            cells = [float(t[i][col]) for t in tables if i < len(t) and col in t[i]]
            row.append(mean_std(cells)[0])
        values.append(row)
    return labels, values


def matrix_figure(group: Group):
    """The barrier matrix between all levels (mean over the runs that recorded it)."""
    tables = [read_csv(r.file("analysis", "lmc_matrix.csv")) for r in group.runs
              if os.path.isfile(r.file("analysis", "lmc_matrix.csv"))]
    if not tables:
        return None
    labels, values = _mean_table(tables, "level")
    side = max(3.6, 1.6 + 0.42 * len(labels))
    fig, ax = figure(side + 1.2, side)
    draw_matrix(ax, fig, values, labels)
    ax.set_title(title(f"Barriers between levels ({len(tables)} run(s)): {group.label}", 50))
    return fig


def curves_figure(group: Group):
    """The successive interpolation curves w(L−1) → w(L) (mean test error over the runs)."""
    per_pair: dict = {}
    for run in group.runs:
        folder = run.file("analysis")
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.startswith("lmc_L") and name.endswith(".csv"):
                per_pair.setdefault(name, []).append(read_csv(os.path.join(folder, name)))
    if not per_pair:
        return None
    from analysis.interpolation import error_barrier

    fig, ax = figure(5.6, 3.8)
    for name, tables in sorted(per_pair.items()):
        gammas = [float(r["gamma"]) for r in tables[0]]
        errors = [mean_std(float(t[i]["test_error"]) for t in tables if i < len(t))[0]
                  for i in range(len(gammas))]
        pair = name[len("lmc_"):-len(".csv")].replace("_", " → ")
        ax.plot(gammas, errors, marker=".", label=f"{pair} (barrier "
                f"{error_barrier(gammas, errors):.2f})")
    ax.set_xlabel("γ  (0 = earlier level, 1 = later level)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title(f"Successive interpolation: {group.label}"))
    ax.legend(fontsize=7, ncols=2 if len(per_pair) > 8 else 1)
    return fig


def layer_density_figure(group: Group):
    """Per-layer density (%) of the final networks (mean over the runs), log scale."""
    tables = [[r for r in read_csv(run.file("layer_density.csv")) if r["layer"] != "total"]
              for run in group.runs if os.path.isfile(run.file("layer_density.csv"))]
    if not tables:
        return None
    layers = [r["layer"] for r in tables[0]]
    means = [mean_std(float(t[i]["density_pct"]) for t in tables if i < len(t))[0]
             for i in range(len(layers))]
    fig, ax = figure(max(4.5, 0.32 * len(layers) + 2.0), 3.4)
    ax.bar(range(len(layers)), means, color="tab:blue")
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    if min(means) > 0 and max(means) / max(min(means), 1e-9) > 20:
        ax.set_yscale("log")
    ax.set_ylabel("density (%)")
    ax.set_title(title(f"Per-layer density ({len(tables)} run(s)): {group.label}"))
    ax.grid(axis="x", visible=False)
    return fig


def group_figures(group: Group) -> list[tuple[str, object]]:
    """(name, figure) of every per-series figure the runs have data for."""
    out = []
    for name, build in (("levels", levels_figure), ("lmc_matrix", matrix_figure),
                        ("barrier_curves", curves_figure),
                        ("layer_density", layer_density_figure)):
        fig = build(group) if (name != "levels" or group.is_imp) else None
        if fig is not None:
            out.append((name, fig))
    return out


def write_figures(groups: list[Group], out: str, formats: tuple) -> list[str]:
    """Every report figure into `out` (`accuracy_vs_density.*`, `<series>_<figure>.*`)."""
    written = save(accuracy_vs_density(groups), os.path.join(out, "accuracy_vs_density"),
                   formats)
    for group in groups:
        for name, fig in group_figures(group):
            written += save(fig, os.path.join(out, f"{group.tag}-{group.algo}-{name}"), formats)
    return written


def run_figures(run_dir: str) -> list[tuple[str, object]]:
    """The report's figures for one finished run (for its TensorBoard events): an IMP run's
    levels (accuracy against density with its controls), barrier matrix and curves; for
    other runs the result beside its untrained ticket, sanity checks or controls; and the
    per-layer density."""
    from analysis.results import load_run

    run = load_run(run_dir)
    if run is None:
        return []
    group = Group({}, [run], label=run.label())
    group.rows = group_rows(group)
    figures = group_figures(group)
    if not group.is_imp and side_keys(group.rows):   # the result beside its side results
        figures.insert(0, ("accuracy_vs_density", accuracy_vs_density(
            [group], f"Test accuracy against density: {group.label}")))
    return figures
