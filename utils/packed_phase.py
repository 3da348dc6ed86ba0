"""`utils.phases.run_phase` for M packed copies: one phase of M runs trained as one program.

Each copy has its own RunContext (run directory, logger, state) and model; the phase writes
for every copy exactly what `run_phase` writes for a single run — metrics rows, TensorBoard
scalars, log lines and checkpoints/last.pt after every epoch (the copy's own weights and its
slice of the optimizer state, in the single-run format) — so an interrupted packed run resumes
from those files, and a copy's files can be resumed by a single run of its config as well.

Copies whose phase is already complete are skipped; the others are grouped by the position
they resume from (normally one group) and each group is trained packed: as M models side by
side (`packing: streams`, utils/packed_streams.py; on CUDA each copy's step is a CUDA graph,
the M graphs replaying concurrently on M streams) or stacked under vmap (`packing: vmap`,
utils/packed.py).  A copy whose training loss becomes non-finite stops the packed run
(`utils.errors.Diverged`); the others resume from their last completed epoch.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from models.masks import density_pct
from utils.errors import Diverged
from utils.fast import FastPath
from utils.logging import write_metrics_csv
from utils.packed import VmapPack
from utils.packed_streams import StreamPack
from utils.phases import PhaseSpec, _fmt_acc, complete_phase, record_epoch


class _SavedOptimizer:
    """A per-copy optimizer state in the shape `RunContext.save_last` expects."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def _resume_of(ctx, spec: PhaseSpec) -> dict | None:
    resume = ctx.state.resume
    return resume if resume is not None and resume["phase_key"] == spec.key else None


def run_phase_packed(ctxs: list, models: list, spec: PhaseSpec | list[PhaseSpec], *,
                     after_step: list[Callable[[int], None] | None] | None = None,
                     hook_steps=(), logger=None) -> list[dict]:
    """Train copy k (`models[k]` in `ctxs[k]`) through `spec`, all copies together; returns
    the per-copy results of `run_phase`.  `spec` may be one spec per copy when the copies
    differ only in their `data_seed` (stability copies).  `after_step[k](step)` runs for copy k, with its
    model holding the current weights, at the global steps in `hook_steps` only (unpacking
    the weights costs a copy, so hooks name their steps: e.g. the IMP-WR rewind point).
    `logger` gets one line per epoch for all copies."""
    hooks = list(after_step) if after_step is not None else [None] * len(models)
    specs = list(spec) if isinstance(spec, list) else [spec] * len(models)
    shared = dataclasses.replace(specs[0], data_seed=None)
    if any(dataclasses.replace(s, data_seed=None) != shared for s in specs):
        raise ValueError("packed copies must train the same phase (only data_seed may differ)")
    spec = specs[0]
    results: list = [None] * len(models)
    groups: dict = {}
    for k, (ctx, model) in enumerate(zip(ctxs, models)):
        if spec.key in ctx.state.completed:
            resume = _resume_of(ctx, spec)
            if resume is not None:
                model.load_state_dict(resume["model"])
            results[k] = ctx.state.completed[spec.key]
            continue
        resume = _resume_of(ctx, spec)
        position = None if resume is None else (resume["epoch"], resume["step"])
        groups.setdefault(position, []).append(k)
    engine = _copies_engine(ctxs) if groups else None
    for members in groups.values():
        out = _train_group([ctxs[k] for k in members], [models[k] for k in members],
                           [specs[k] for k in members], [hooks[k] for k in members],
                           set(hook_steps), logger, engine)
        for k, result in zip(members, out):
            results[k] = result
    return results


def _copies_engine(ctxs: list):
    """The engine the copies' phases share (made by the first packed phase and kept on every
    copy's context): with CUDA graphs, the next IMP level of a copy replays its recorded
    step instead of recording a new one."""
    engine = ctxs[0].packed_engine
    if engine is None:
        ctx = ctxs[0]
        engine = FastPath.for_copies(ctx.cfg, ctx.device, len(ctxs), report=ctx.logger.info)
        for other in ctxs:
            other.packed_engine = engine
    return engine


def make_pack(ctx, models: list, spec: PhaseSpec, lr: float, engine=None):
    """The packing of the config (`packing`: streams — the default — or vmap), run on
    `engine` (a new one for these copies when None; its CUDA graphs record the steps)."""
    dtype, smoothing = ctx.autocast_dtype, ctx.cfg.label_smoothing
    if engine is None:
        engine = FastPath.for_copies(ctx.cfg, ctx.device, len(models), report=ctx.logger.info)
    if ctx.cfg.packing == "vmap":
        return VmapPack(models, spec.optimizer, lr, autocast_dtype=dtype,
                        label_smoothing=smoothing, engine=engine)
    return StreamPack(models, spec.optimizer, lr, engine, autocast_dtype=dtype,
                      label_smoothing=smoothing)


def train_epoch_packed(pack, loaders: list, *, after_step=None, start_step: int = 0) -> dict:
    """One epoch of every copy of `pack` (copy k reads `loaders[k]`)."""
    return pack.train_epoch(loaders, after_step=after_step, start_step=start_step)


def _train_group(ctxs, models, specs: list[PhaseSpec], hooks, hook_steps: set,
                 logger, engine=None) -> list[dict]:
    """Copies that start (or resume) the phase at the same position, trained packed."""
    m = len(models)
    spec = specs[0]
    loaders = [ctx.loaders.train for ctx in ctxs]
    start, first_batch = divmod(spec.start_step, len(loaders[0]))
    step = spec.start_step
    best = [{"val_acc": float("nan"), "test_acc": float("nan"), "epoch": 0} for _ in ctxs]
    resumes = [_resume_of(ctx, spec) for ctx in ctxs]
    if resumes[0] is not None:
        for ctx, model, resume in zip(ctxs, models, resumes):
            model.load_state_dict(resume["model"])
            ctx.logger.info(f"resuming {spec.key} after epoch {resume['epoch']} of "
                            f"{spec.epochs}")
            ctx.state.resume = None
        start, step, first_batch = resumes[0]["epoch"], resumes[0]["step"], 0
        best = [dict(r["best"]) for r in resumes]
        torch.set_rng_state(resumes[0]["torch_rng"])
    pack = make_pack(ctxs[0], models, spec, spec.schedule.lr_at(start), engine)
    if resumes[0] is not None and all(r["optimizer"] is not None for r in resumes):
        pack.load_optimizer_states([r["optimizer"] for r in resumes])
    densities = [density_pct(model) for model in models]
    hooks = [h for h in hooks if h is not None]

    def run_hooks(global_step: int) -> None:
        if global_step in hook_steps:
            pack.unpack()
            for hook in hooks:
                hook(global_step)
    on_step = run_hooks if hooks and hook_steps else None

    for epoch in range(start, spec.epochs):
        lr = spec.schedule.lr_at(epoch)
        pack.set_lr(lr)
        for ctx, loader, own in zip(ctxs, loaders, specs):
            seed = ctx.seed if own.data_seed is None else own.data_seed
            loader.set_epoch(epoch, seed=seed, start_batch=first_batch if epoch == start else 0)
        started = time.perf_counter()
        train = train_epoch_packed(pack, loaders, after_step=on_step, start_step=step)
        step = train["step"]
        _stop_diverged(ctxs, spec, epoch, step, lr, started, m, densities, train)
        val = pack.evaluate(ctxs[0].loaders.val)
        test = pack.evaluate(ctxs[0].loaders.test)   # read: synchronised
        seconds = (time.perf_counter() - started) / m     # each copy's share of the time
        pack.unpack()
        optimizer_states = pack.optimizer_states()
        for k, (ctx, model) in enumerate(zip(ctxs, models)):
            row = record_epoch(ctx, spec, epoch, step, lr, seconds, densities[k],
                               {key: train[key][k] for key in ("loss", "acc")},
                               {key: val[key][k] for key in ("loss", "acc")},
                               {key: test[key][k] for key in ("loss", "acc")}, {},
                               note=" (packed)")
            if not math.isnan(row["val_acc"]) and not (row["val_acc"] <= best[k]["val_acc"]):
                best[k] = {"val_acc": row["val_acc"], "test_acc": row["test_acc"],
                           "epoch": epoch + 1}
            ctx.save_last(model, _SavedOptimizer(optimizer_states[k]), spec.key, epoch + 1,
                          step, best[k])
        if logger is not None:
            level = "" if spec.level is None else f" L{spec.level}"
            logger.info(f"{spec.phase}{level} epoch {epoch + 1:>3}/{spec.epochs}  test % per "
                        f"copy: " + " ".join(_fmt_acc(a).strip() for a in test["acc"])
                        + f"  lr {lr:.4g}  {seconds * m:.1f}s for {m} copies")

    return [complete_phase(ctx, model, spec, step, best[k])
            for k, (ctx, model) in enumerate(zip(ctxs, models))]


def _stop_diverged(ctxs, spec: PhaseSpec, epoch: int, step: int, lr: float, started: float,
                   m: int, densities: list, train: dict) -> None:
    """A copy whose training loss is not finite: its epoch row is recorded and the packed
    run stops (`Diverged` names the copy's run directory); the other copies keep the state
    of their last completed epoch and resume from it."""
    for k, ctx in enumerate(ctxs):
        loss = train["loss"][k]
        if math.isfinite(loss):
            continue
        nan = {"loss": float("nan"), "acc": float("nan")}
        record_epoch(ctx, spec, epoch, step, lr, (time.perf_counter() - started) / m,
                     densities[k], {"loss": loss, "acc": train["acc"][k]}, nan, nan, {},
                     note="  DIVERGED (packed)")
        write_metrics_csv(ctx.path("metrics.csv"), ctx.state.rows)
        raise Diverged(spec.key, epoch + 1, loss, run_dir=ctx.run_dir)


def run_jobs_packed(ctxs: list, models: list, jobs: list[list], logger) -> None:
    """Run each copy's pending phase jobs; copies that share a job key train it together."""
    order = []
    for copy_jobs in jobs:
        order += [job.key for job in copy_jobs if job.key not in order]
    by_key = [{job.key: job for job in copy_jobs} for copy_jobs in jobs]
    for key in order:
        todo = [k for k in range(len(ctxs)) if key in by_key[k]]
        specs = [by_key[k][key].start() for k in todo]
        run_phase_packed([ctxs[k] for k in todo], [models[k] for k in todo], specs,
                         logger=logger)
        for k in todo:
            if by_key[k][key].finish is not None:
                by_key[k][key].finish()
