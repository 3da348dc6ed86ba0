"""The analyses of an IMP run (options of the "Analysis" group), computed from the level
files, so they resume, and can be added to a finished run (re-running it fills them in):

  per level   projection distance ‖w(L-1) − m(L)⊙w(L-1)‖ (always), successive error barrier
              (lmc_successive), Hessian top-k eigenvalues / trace (hessian_topk,
              hessian_trace), 2-D error slice (landscape_grid), gradient norm at the level's
              start (grad_flow; level 0 of IMP-WR also at the dense rewind point)
  at the end  barrier matrix between all levels (lmc_matrix), stability copies
              (stability_copies at stability_levels)

Per-level results live in checkpoints/level_XX.json next to the level file (with the settings
they were made with, so changed settings recompute them); curves and plots in analysis/.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os

from analysis.hessian import hessian_summary
from analysis.interpolation import interpolate, projection_distance
from analysis.plots import plot_curve, plot_matrix
from pruners.imp.level_files import info_path, level_path, read_info
from pruners.imp.plan import level_spec
from utils.checkpoint import load_checkpoint, save_checkpoint, write_json
from utils.logging import write_csv
from utils.phases import PhaseJob, PhaseSpec, run_phase
from utils.progress import Ticker

SPEC_KEYS = ("lmc_successive", "lmc_points", "bn_reset_batches", "hessian_topk",
             "hessian_trace", "hessian_batches", "hessian_iters", "hessian_samples",
             "landscape_grid")
CURVE_COLUMNS = ["gamma", "train_error", "test_error", "train_loss", "test_loss"]
STABILITY_COLUMNS = ["level", "copies", "barrier_test", "barrier_train", "copy_test_acc"]


GRAD_SPEC_KEYS = ("grad_flow", "grad_flow_batches", "batch_size")


def analysis_spec(cfg) -> dict:
    """The settings the per-level analyses depend on (grad_flow's only when it is on, so
    runs without it keep the spec they were made with)."""
    spec = {key: getattr(cfg, key) for key in SPEC_KEYS}
    if cfg.grad_flow:
        spec.update({key: getattr(cfg, key) for key in GRAD_SPEC_KEYS})
    return spec


def grad_flow_batches(ctx) -> list:
    """The fixed training batches gradient norms are measured on (analysis/grad_flow.py)."""
    from analysis.grad_flow import training_batches

    return training_batches(ctx)


def _grad_flow(ctx, model, level: int, record: dict) -> dict:
    """grad_norm at the level's start; at level 0 of IMP-WR with a rewind point after
    iteration 0 also grad_norm_rewind, the dense network at the rewind point."""
    from analysis.grad_flow import gradient_norm

    batches = grad_flow_batches(ctx)
    probe = copy.deepcopy(model)
    probe.load_state_dict(record["start"])
    out = {"grad_norm": gradient_norm(probe, batches)}
    rewind = ctx.path("checkpoints", "rewind.pt")
    if level == 0 and os.path.isfile(rewind):
        saved = load_checkpoint(rewind, ctx.device)
        if saved.get("step", 0) > 0:
            probe.load_state_dict(saved["model"])
            out["grad_norm_rewind"] = gradient_norm(probe, batches)
    return out


def _trained(ctx, level: int) -> dict:
    return load_checkpoint(level_path(ctx, level), ctx.device)


def _with_masks(state: dict, masks: dict) -> dict:
    """`state` with its masks replaced by `masks` (by layer name)."""
    out = dict(state)
    for name, mask in masks.items():
        out[f"{name}.mask"] = mask
    return out


def ensure_level_analysis(ctx, model, level: int) -> dict:
    """Compute what is missing for `level` (or was made with other settings), record it in
    its JSON and TensorBoard; returns the analysis results."""
    from analysis.landscape import error_slice, save_slice

    cfg, log = ctx.cfg, ctx.logger
    info = read_info(ctx, level)
    spec = analysis_spec(cfg)
    if info.get("analysis_spec") == spec:
        return info.get("analysis", {})
    record = _trained(ctx, level)
    results: dict = {}
    os.makedirs(ctx.path("analysis"), exist_ok=True)
    if cfg.grad_flow:
        results.update(_grad_flow(ctx, model, level, record))
    if level >= 1:
        previous = _trained(ctx, level - 1)
        distance, relative = projection_distance(previous["trained"], record["masks"])
        results.update(proj_dist=distance, proj_dist_rel=relative)
        if cfg.lmc_successive:
            ticker = Ticker(log, f"level {level} analysis: interpolation L{level - 1} → "
                                 f"L{level}", cfg.lmc_points, "points")
            curve = interpolate(model, record["trained"], previous["trained"], ctx.loaders,
                                points=cfg.lmc_points, bn_reset_batches=cfg.bn_reset_batches,
                                autocast_dtype=ctx.autocast_dtype, progress=ticker.tick)
            ticker.done()
            prefix = ctx.path("analysis", f"lmc_L{level - 1:02d}_L{level:02d}")
            write_csv(prefix + ".csv", CURVE_COLUMNS, curve.rows())
            plot_curve(curve, prefix + ".png", f"level {level - 1} ↔ level {level}",
                       f"L{level}", f"L{level - 1}")
            results.update(barrier_test=curve.test_barrier, barrier_train=curve.train_barrier)
        if cfg.landscape_grid:
            projection = _with_masks(previous["trained"], record["masks"])
            ticker = Ticker(log, f"level {level} analysis: landscape slice",
                            cfg.landscape_grid ** 2, "grid points")
            result = error_slice(model, [previous["trained"], projection, record["trained"]],
                                 ctx.loaders, grid=cfg.landscape_grid,
                                 bn_reset_batches=cfg.bn_reset_batches,
                                 autocast_dtype=ctx.autocast_dtype, progress=ticker.tick)
            ticker.done()
            save_slice(result, [f"w(L{level - 1})", f"m(L{level})⊙w(L{level - 1})",
                                f"w(L{level})"],
                       ctx.path("analysis", f"slice_L{level:02d}"),
                       f"test error around levels {level - 1} → {level}")
    if cfg.hessian_topk or cfg.hessian_trace:
        probe = copy.deepcopy(model)
        probe.load_state_dict(record["trained"])
        ticker = Ticker(log, f"level {level} analysis: Hessian", cfg.hessian_topk *
                        cfg.hessian_iters + (cfg.hessian_samples if cfg.hessian_trace else 0),
                        "Hessian-vector products (at most)")
        hessian = hessian_summary(probe, ctx.loaders.train_eval, batches=cfg.hessian_batches,
                                  topk=cfg.hessian_topk, trace=cfg.hessian_trace,
                                  seed=ctx.seed + level, iters=cfg.hessian_iters,
                                  samples=cfg.hessian_samples, progress=ticker.tick)
        ticker.done()
        for i, value in enumerate(hessian["hessian_top"], 1):
            results[f"hessian_top{i}"] = value
        if hessian["hessian_trace"] is not None:
            results["hessian_trace"] = hessian["hessian_trace"]
    log.scalars({f"imp/{k}": v for k, v in results.items()}, level)
    info.update(analysis_spec=spec, analysis=results)
    write_json(info_path(ctx, level), info)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in results.items())
    if shown:
        ctx.logger.info(f"level {level} analysis: {shown}")
    return results


def barrier_matrix(ctx, model, levels: int) -> list[list[float]] | None:
    """lmc_matrix: test error barriers between the solutions of all pairs of levels, saved as
    analysis/lmc_matrix.csv/.png (reused when the levels and settings are unchanged)."""
    cfg = ctx.cfg
    if not cfg.lmc_matrix:
        return None
    cache_path = ctx.path("analysis", "lmc_matrix.json")
    spec = {"levels": levels, "points": cfg.lmc_points, "bn": cfg.bn_reset_batches}
    try:
        with open(cache_path, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached["spec"] == spec:
            return cached["matrix"]
    except (OSError, ValueError, KeyError):
        pass
    states = [_trained(ctx, level)["trained"] for level in range(levels)]
    matrix = [[0.0] * levels for _ in range(levels)]
    ticker = Ticker(ctx.logger, "barrier matrix", levels * (levels - 1) // 2, "pairs of levels")
    for i in range(levels):
        for j in range(i + 1, levels):
            curve = interpolate(model, states[j], states[i], ctx.loaders,
                                points=cfg.lmc_points, bn_reset_batches=cfg.bn_reset_batches,
                                autocast_dtype=ctx.autocast_dtype)
            matrix[i][j] = matrix[j][i] = curve.test_barrier
            ticker.tick()
    ticker.done()
    labels = [f"L{level}" for level in range(levels)]
    write_csv(ctx.path("analysis", "lmc_matrix.csv"), ["level"] + labels,
              [{"level": labels[i], **dict(zip(labels, row))} for i, row in enumerate(matrix)])
    plot_matrix(matrix, labels, ctx.path("analysis", "lmc_matrix.png"),
                "test error barrier between IMP levels")
    write_json(cache_path, {"spec": spec, "matrix": matrix})
    ctx.logger.info("barrier matrix written: analysis/lmc_matrix.csv, .png")
    return matrix


def stability_key(level: int, copy_index: int) -> str:
    return f"stability_L{level:02d}_c{copy_index}"


def stability_job(ctx, model, plan, level: int, copy_index: int) -> PhaseJob:
    """Stability copy `copy_index` of `level`: the level's start weights trained with its own
    data order; the trained weights are saved as checkpoints/<key>.pt."""
    key = stability_key(level, copy_index)

    def start() -> PhaseSpec:
        model.load_state_dict(_trained(ctx, level)["start"])
        return dataclasses.replace(level_spec(ctx.cfg, plan, level, key=key,
                                              phase=f"stability_c{copy_index}"),
                                   data_seed=ctx.seed + 7919 * copy_index)

    def finish() -> None:
        save_checkpoint({"model": model.state_dict()}, ctx.path("checkpoints", f"{key}.pt"))
    return PhaseJob(key, start, finish)


def pending_stability_jobs(ctx, model, plan, levels: list[int]) -> list[PhaseJob]:
    """The stability copies not trained yet, in the order `run_stability` trains them."""
    return [stability_job(ctx, model, plan, level, c) for level in levels
            for c in range(1, ctx.cfg.stability_copies + 1)
            if not os.path.isfile(ctx.path("checkpoints", f"{stability_key(level, c)}.pt"))]


def run_stability(ctx, model, plan, levels: list[int]) -> list[dict]:
    """Train `stability_copies` copies of each chosen level from its start with different
    data orders (and augmentation), then report the mean pairwise barrier of their solutions;
    stability.csv and TensorBoard (imp/stability_barrier at step = level)."""
    cfg = ctx.cfg
    rows = []
    for level in levels:
        states, accs = [], []
        for copy_index in range(1, cfg.stability_copies + 1):
            key = stability_key(level, copy_index)
            path = ctx.path("checkpoints", f"{key}.pt")
            if not os.path.isfile(path):
                job = stability_job(ctx, model, plan, level, copy_index)
                run_phase(ctx, model, job.start())
                job.finish()
            states.append(load_checkpoint(path, ctx.device)["model"])
            accs.append(ctx.state.completed[key]["test_acc"])
        test_barriers, train_barriers = [], []
        for i in range(len(states)):
            for j in range(i + 1, len(states)):
                curve = interpolate(model, states[j], states[i], ctx.loaders,
                                    points=cfg.lmc_points,
                                    bn_reset_batches=cfg.bn_reset_batches,
                                    autocast_dtype=ctx.autocast_dtype)
                test_barriers.append(curve.test_barrier)
                train_barriers.append(curve.train_barrier)
                if i == 0 and j == 1:
                    prefix = ctx.path("analysis", f"stability_L{level:02d}")
                    write_csv(prefix + ".csv", CURVE_COLUMNS, curve.rows())
                    plot_curve(curve, prefix + ".png", f"level {level}: copy 1 ↔ copy 2",
                               "copy 2", "copy 1")
        row = {"level": level, "copies": len(states),
               "barrier_test": sum(test_barriers) / len(test_barriers),
               "barrier_train": sum(train_barriers) / len(train_barriers),
               "copy_test_acc": " ".join(f"{a:.2f}" for a in accs)}
        rows.append(row)
        ctx.logger.scalars({"imp/stability_barrier": row["barrier_test"]}, level)
        ctx.logger.info(f"stability at level {level}: barrier {row['barrier_test']:.3f} "
                        f"points between {len(states)} copies (test acc {row['copy_test_acc']})")
        write_csv(ctx.path("stability.csv"), STABILITY_COLUMNS, rows)
    return rows
