"""Finished runs as a researcher compares them: loaded from their run directories, grouped
into series (every science option but the seed), and aggregated into rows of mean ± std over
the seeds, with the side results (untrained ticket, sanity checks, controls) as their own
columns.  Used by `python -m analysis.report` and by the figures (analysis/report_figures.py);
the option schema is passed in, so this module does not import the config system.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field

from utils.outcomes import imp_controls_by_level, side_results

# options that add measurements to a run without changing the networks it trains
MEASUREMENT_ONLY = frozenset({
    "lmc_successive", "lmc_matrix", "lmc_points", "bn_reset_batches", "stability_copies",
    "stability_levels", "hessian_topk", "hessian_trace", "hessian_batches", "hessian_iters",
    "hessian_samples", "landscape_grid", "imp_controls", "imp_control_levels",
    "at_init_controls", "skip_sanity_checks", "checkpoint_at_prune"})
SEED_OPTIONS = frozenset({"seed", "trial_num"})


@dataclass
class Run:
    """A finished run: its directory, summary.json and config.yaml values."""

    run_dir: str
    summary: dict
    config: dict

    @property
    def algo(self) -> str:
        return self.summary.get("algo") or self.config.get("algo") or "?"

    @property
    def seed(self):
        return self.summary.get("seed")

    def label(self) -> str:
        """`<config name> (<algo>, seed <seed>)`."""
        name = self.config.get("name") or os.path.basename(self.run_dir.rstrip("/"))
        return f"{name} ({self.algo}, seed {self.seed})"

    def file(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def has_levels(self) -> bool:
        return os.path.isfile(self.file("levels.csv"))


@dataclass
class Group:
    """A series: the runs that share every science option but the seed."""

    options: dict
    runs: list
    label: str = ""
    rows: list = field(default_factory=list)
    tag: str = ""                  # s01, s02, ...: the series' figure files start with it

    @property
    def algo(self) -> str:
        return self.runs[0].algo

    @property
    def is_imp(self) -> bool:
        return any(run.has_levels() for run in self.runs)



# --------------------------------------------------------------------------- loading


def read_config(path: str) -> dict:
    """The option values of a config.yaml (empty when missing or unreadable)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def load_run(run_dir: str) -> Run | None:
    """The run in `run_dir` if it finished (summary.json with status done)."""
    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "done":
        return None
    return Run(run_dir, summary, read_config(os.path.join(run_dir, "config.yaml")))


def find_runs(*roots: str) -> list[Run]:
    """Finished runs below `roots` (searched recursively), in path order."""
    runs = []
    for root in roots:
        for folder, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in ("checkpoints", "phases",
                                                                 "analysis"))
            if "summary.json" in files:
                run = load_run(folder)
                if run is not None:
                    runs.append(run)
    return sorted(runs, key=lambda r: r.run_dir)


# --------------------------------------------------------------------------- grouping


def science_options(run: Run, options) -> dict:
    """The run's values of the options that define its series: of `options` (the science
    options of the schema, report.science_schema()) those that matter for its algorithm,
    except the seed and the measurement-only ones; keys missing from older config files take
    the option's default."""
    algo = run.algo
    out = {"algo": algo}
    if not run.config:                       # no config.yaml: what the summary says
        out.update(arch=run.summary.get("arch"), dataset=run.summary.get("dataset"))
        return out
    for opt in options:
        if opt.name in ("algo", *SEED_OPTIONS, *MEASUREMENT_ONLY) or \
                (opt.algos and algo not in opt.algos):
            continue
        out[opt.name] = run.config.get(opt.name, opt.default)
    return out


def show(value) -> str:
    """An option value as the labels print it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(show, value)) or "[]"
    return str(value)


def _key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def group_runs(runs: list[Run], options) -> tuple[list[Group], list[str], dict]:
    """Series of runs → (groups sorted by label, the option names in some label, the options
    all series share: arch, dataset and those not at their default).  A label is the
    algorithm, then arch / dataset when they differ between series, then the options that
    differ between the series of that algorithm."""
    by_key: dict = {}
    for run in runs:
        values = science_options(run, options)
        by_key.setdefault(_key(values), Group(values, []))
        by_key[_key(values)].runs.append(run)
    groups = list(by_key.values())
    everywhere = _differing(groups)
    defaults = {o.name: o.default for o in options}
    shared = {name: groups[0].options[name] for name in sorted(groups[0].options)
              if name not in everywhere and all(name in g.options for g in groups)
              and (name in ("arch", "dataset") or groups[0].options[name] != defaults.get(name))}
    labelled = set()
    for algo in {g.algo for g in groups}:
        family = [g for g in groups if g.algo == algo]
        names = [n for n in ("arch", "dataset") if n in everywhere] + \
            [n for n in _differing(family) if n not in ("algo", "arch", "dataset")]
        labelled.update(names)
        for g in family:
            parts = [f"{n}={show(g.options[n])}" for n in names if n in g.options]
            g.label = algo + (" · " + ", ".join(parts) if parts else "")
    groups.sort(key=lambda g: g.label)
    for i, g in enumerate(groups, 1):
        g.tag = f"s{i:02d}"
    return groups, sorted(labelled), shared


def _differing(groups: list[Group]) -> list[str]:
    """Option names with more than one value among the groups that have them."""
    names = sorted({name for g in groups for name in g.options})
    return [n for n in names
            if len({_key({"v": g.options[n]}) for g in groups if n in g.options}) > 1]


# --------------------------------------------------------------------------- rows


def number(text) -> float | None:
    """A CSV cell as a float; None for empty, text or NaN."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run_points(run: Run) -> list[dict]:
    """The run's results as points: one per IMP level (levels.csv, the level's training
    time, its controls), else the final result with its side results."""
    wall = number(run.summary.get("wall_seconds"))
    if run.has_levels():
        controls = imp_controls_by_level(run.summary)
        points = []
        for r in read_csv(run.file("levels.csv")):
            level = int(r["level"])
            points.append({"level": level, "density_pct": number(r["density_pct"]),
                           "test_acc": number(r.get("test_acc")),
                           "val_acc": number(r.get("val_acc")),
                           "level_train_s": number(r.get("seconds")),
                           "matching": r.get("matching"), "run_wall_s": wall,
                           "side": controls.get(level, {}),
                           "barrier_test": number(r.get("barrier_test")),
                           "hessian_top1": number(r.get("hessian_top1")),
                           "iterations": number(r.get("iterations")),
                           "grad_norm": number(r.get("grad_norm")),
                           "flops_pct": number(r.get("flops_pct")),
                           "theoretical_speedup": number(r.get("theoretical_speedup"))})
        return points
    s = run.summary
    return [{"level": None, "density_pct": number(s.get("density_pct")),
             "test_acc": number(s.get("test_acc")), "val_acc": number(s.get("val_acc")),
             "level_train_s": None, "matching": None, "run_wall_s": wall,
             "side": side_results(s), "flops_pct": number(s.get("flops_pct")),
             "theoretical_speedup": number(s.get("theoretical_speedup")),
             "grad_norm": number(s.get("ticket_grad_norm"))}]


# per-point numbers averaged over a series' runs when recorded: FLOPs left (%) and the
# theoretical speed-up, successive barrier, top Hessian eigenvalue, training iterations
# (PrAC), gradient norm (grad_flow)
LEVEL_MEASURES = ("flops_pct", "theoretical_speedup", "barrier_test", "hessian_top1",
                  "iterations", "grad_norm")


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (NaN when none; std 0 for
    one value)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_rows(group: Group) -> list[dict]:
    """The table rows of a series: one (IMP: one per level) aggregating its runs."""
    cells: dict = {}
    for run in group.runs:
        for point in run_points(run):
            cells.setdefault(point["level"], []).append((run, point))
    rows = []
    for level in sorted(cells, key=lambda lv: -1 if lv is None else lv):
        items = cells[level]
        points = [p for _, p in items]
        row = {"series": group.label, "algo": group.algo,
               "arch": group.options.get("arch", group.runs[0].summary.get("arch")),
               "dataset": group.options.get("dataset", group.runs[0].summary.get("dataset")),
               "level": "" if level is None else level, "runs": len(items),
               "seeds": " ".join(str(run.seed) for run, _ in items)}
        row["density_pct"] = mean_std(p["density_pct"] for p in points)[0]
        row["sparsity_pct"] = 100.0 - row["density_pct"]
        for key in ("test_acc", "val_acc"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(p[key] for p in points)
        for key in sorted({k for p in points for k in p["side"]}):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(p["side"].get(key)
                                                             for p in points)
        for key in LEVEL_MEASURES:
            if any(p.get(key) is not None for p in points):
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(p.get(key) for p in points)
        if level is not None:
            matching = [p["matching"] for p in points]
            row["matching"] = "dense" if level == 0 else \
                f"{sum(m == 'yes' for m in matching)}/{len(matching)}"
        row["level_train_s_mean"] = mean_std(p["level_train_s"] for p in points)[0]
        row["run_wall_s_mean"] = mean_std(p["run_wall_s"] for p in points)[0]
        rows.append(row)
    return rows


def side_keys(rows: list[dict]) -> list[str]:
    """The side-result names present in `rows`: untrained ticket, sanity checks, controls."""
    names = {k[:-len("_mean")] for r in rows for k in r
             if k.endswith("_mean") and (k.startswith("untrained_") or k.startswith("sanity_")
                                         or k.startswith("control_"))}
    order = {"untrained": 0, "sanity": 1, "control": 2}
    return sorted(names, key=lambda n: (order[n.split("_")[0]], n))


SIDE_TITLES = {"untrained_ticket_test_acc": "untrained ticket"}


def side_title(name: str) -> str:
    """`control_reinit_test_acc` → `control reinit`."""
    if name in SIDE_TITLES:
        return SIDE_TITLES[name]
    return name[:-len("_test_acc")].replace("_", " ") if name.endswith("_test_acc") else name


