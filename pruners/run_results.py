"""Opening and recording a prepared run (run_setup.py): its RunContext, then
layer_density.csv, summary.json, the result table and the run's TensorBoard record (HParams,
final per-layer density, the report's figures); on a failure or a divergence the summary that
says so.  Used by main.py for a single run and by the packed driver (pruners/replicates.py)
for each copy.
"""
from __future__ import annotations

import os
import sys
import time

from utils.errors import DamagedFileError
from pruners.run_setup import Prepared


def open_context(p: Prepared, fresh: bool, packed: bool = False):
    """The RunContext of a prepared run (init.pt saved when fresh); `packed` copies get no
    fast path (their training is `utils.packed_phase`)."""
    from utils.board import log_config
    from utils.context import RunContext
    from utils.fast import FastPath
    from utils.provenance import provenance, provenance_line

    cfg, log = p.cfg, p.logger
    log.info(f"run directory: {p.run_dir}" + ("" if fresh else " (resuming)"))
    log.info(f"{cfg.algo_name} | {cfg.arch} | {cfg.dataset}: {p.splits.sizes()} | "
             f"device {p.device} | seed {p.seed}")
    log.info(provenance_line(provenance(p.device)))
    fast = FastPath.from_config(cfg, p.device, report=log.info)
    fast.configure_backends()
    if not packed:
        fast.prepare_model(p.model)   # its final memory format before any hook holds tensors
    ctx = RunContext(cfg=cfg, device=p.device, run_dir=p.run_dir, logger=log,
                     splits=p.splits, loaders=p.loaders, model_spec=p.spec,
                     autocast_dtype=p.autocast, seed=p.seed, state=p.state, quiet=cfg.quiet,
                     rank=p.rank, world_size=p.world_size, fast=None if packed else fast,
                     model=p.model, progress=_run_progress(p))
    log_config(log, cfg)
    if fresh:
        ctx.save_model(p.model, "init.pt")
    return ctx


def _run_progress(p: Prepared):
    """The run-wide epoch counter (None for --evaluate, which trains nothing)."""
    from pruners.budget import planned_epochs
    from utils.progress import RunProgress

    if p.cfg.evaluate:
        return None
    return RunProgress(planned_epochs(p.cfg, p.splits, p.model), done=len(p.state.rows))


def finish_run(p: Prepared, ctx, result: dict, started: float) -> dict:
    """layer_density.csv, summary.json, the result table, and the run's TensorBoard record:
    HParams, final per-layer density, the report's figures."""
    import args_helper
    from models.flops import count_flops
    from models.masks import format_density_report, layer_density_report
    from utils.board import hparam_schema, log_hparams
    from utils.logging import write_csv

    cfg, log = p.cfg, p.logger
    report = layer_density_report(p.model)
    write_csv(ctx.path("layer_density.csv"),
              ["layer", "type", "shape", "params", "zeros", "density_pct"], report)
    flops = count_flops(p.model, (p.spec.channels, p.spec.image_size, p.spec.image_size))
    from pruners.registry import GRANULARITY_ALGOS

    if cfg.prune_granularity != "weight" and cfg.algo_name in GRANULARITY_ALGOS:
        flops["prune_granularity"] = (f"{cfg.prune_n}:{cfg.prune_m}"
                                      if cfg.prune_granularity == "n:m" else "channel")
    summary = write_summary(p, {"status": "done", **flops, **result}, started)
    log.info("\nper-layer density:\n" + format_density_report(report))
    log.info("\n" + _result_table(summary))
    log_hparams(log, cfg, summary, hparam_schema(args_helper.OPTIONS))
    log.scalars({f"layer_density/{r['layer']}": r["density_pct"] for r in report}, 0)
    _log_figures(log, ctx.run_dir)
    return summary


def _log_figures(log, run_dir: str) -> None:
    """The report's figures of this run as TensorBoard images (`figures/<name>`)."""
    if log.tb is None:
        return
    from analysis.report_figures import run_figures

    for name, fig in run_figures(run_dir):
        log.figure(f"figures/{name}", fig)


def known_failure(exc: BaseException) -> str | None:
    """The one-line message (no traceback) of a failure the user can fix: a damaged or
    missing file of the run directory, a full disk; None for anything else."""
    from utils.errors import DiskFullError

    if isinstance(exc, DamagedFileError):
        return (f"{exc.path} is {exc.problem}; restore it, or start again in a fresh "
                f"directory with --force")
    if isinstance(exc, DiskFullError):
        return (f"the disk is full (writing {exc.path}); free some space and run the same "
                f"command again to resume")
    return None


def record_diverged(p: Prepared, exc, started: float) -> int:
    """A non-finite training loss: summary status "diverged", the partial results kept,
    exit 3."""
    quietly(lambda: write_summary(p, {"status": "diverged", "diverged": exc.record()},
                                  started))
    message = (f"diverged: {exc}; the run stopped there (summary status \"diverged\"); "
               f"what was recorded before is kept in {p.run_dir}; lower the learning rate "
               f"and use --force to run it again")
    say(p, message)
    print(f"error: {message}", file=sys.stderr)
    return 3


def say(p: Prepared, message: str) -> None:
    """Log a line (also to log.txt while the disk allows)."""
    quietly(lambda: p.logger.info(message))


def quietly(action) -> None:
    """Run a best-effort step of reporting a failure; a full disk must not hide the failure."""
    try:
        action()
    except OSError:
        pass


def write_summary(p: Prepared, fields: dict, started: float) -> dict:
    import torch

    from models.masks import density_pct
    from utils.checkpoint import write_json
    from utils.provenance import provenance

    density = fields.pop("density_pct", None)
    density = density_pct(p.model) if density is None else density
    summary = {
        "status": fields.pop("status"),
        "algo": "evaluate" if p.algorithm is None else p.cfg.algo_name, "arch": p.cfg.arch,
        "dataset": p.cfg.dataset, "seed": p.seed,
        "density_pct": density, "sparsity_pct": 100.0 - density,
        "test_acc": fields.pop("test_acc", None), "val_acc": fields.pop("val_acc", None),
        "wall_seconds": _wall(p, started),
        **fields,
        "run_dir": p.run_dir, "config_hash": p.cfg.run_hash(), "device": str(p.device),
        "torch": torch.__version__, "provenance": provenance(p.device),
    }
    write_json(os.path.join(p.run_dir, "summary.json"), _json_safe(summary))
    return summary


def _wall(p: Prepared, started: float) -> float:
    """Seconds of training over all attempts (epoch times) plus this attempt's overhead."""
    epoch_seconds = sum(r.get("seconds", 0.0) for r in p.state.rows)
    return max(time.time() - started, epoch_seconds)


def _json_safe(obj):
    if isinstance(obj, float):
        return None if obj != obj or obj in (float("inf"), float("-inf")) else round(obj, 6)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _result_table(summary: dict) -> str:
    def pct(key):
        value = summary.get(key)
        return "n/a" if value is None or value != value else f"{value:.2f} %"

    rows = [("algorithm", summary["algo"]), ("arch / dataset",
                                              f"{summary['arch']} / {summary['dataset']}"),
            ("density / sparsity", f"{pct('density_pct')} / {pct('sparsity_pct')}"),
            ("FLOPs (multiply-adds)", _flops_cell(summary)),
            ("train accuracy", pct("train_acc")), ("validation accuracy", pct("val_acc")),
            ("best validation", pct("best_val_acc") + (
                f" (epoch {summary['best_val_epoch']}, test there {pct('test_acc_at_best_val')})"
                if summary.get("best_val_epoch") else "")),
            ("test accuracy", pct("test_acc")),
            ("wall time", f"{summary['wall_seconds']:.1f} s"),
            ("run directory", summary["run_dir"])]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 40)
    return "\n".join(["result", line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])


def _flops_cell(summary: dict) -> str:
    from models.flops import format_flops

    if summary.get("flops") is None:
        return "n/a"
    return (f"{format_flops(summary['flops'])} of {format_flops(summary['dense_flops'])} "
            f"({summary['flops_pct']:.2f} %), theoretical speed-up "
            f"{summary['theoretical_speedup']:.2f}×")
