"""`utils.phases.run_phase` for M packed copies: one phase of M runs trained as one program.

Each copy has its own RunContext (run directory, logger, state) and model; the phase writes
for every copy exactly what `run_phase` writes for a single run — metrics rows, TensorBoard
scalars, log lines and checkpoints/last.pt after every epoch (the copy's own weights and its
slice of the optimizer state, in the single-run format) — so an interrupted packed run resumes
from those files, and a copy's files can be resumed by a single run of its config as well.

Copies whose phase is already complete are skipped; the others are grouped by the position
they resume from (normally one group) and each group is trained packed.  The fast path
(compile / channels_last) is not applied to packed copies.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from pruners.masks import density_pct
from utils.packed import (PackedModels, evaluate_packed, split_optimizer_state,
                          stack_optimizer_states, train_epoch_packed)
from utils.phases import PhaseSpec, _fmt_acc, complete_phase, record_epoch
from utils.schedules import set_lr


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
    for members in groups.values():
        out = _train_group([ctxs[k] for k in members], [models[k] for k in members],
                           [specs[k] for k in members], [hooks[k] for k in members],
                           set(hook_steps), logger)
        for k, result in zip(members, out):
            results[k] = result
    return results


def _train_group(ctxs, models, specs: list[PhaseSpec], hooks, hook_steps: set,
                 logger) -> list[dict]:
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
    packed = PackedModels(models)
    optimizer = spec.optimizer.build(packed.parameters(), spec.schedule.lr_at(start))
    if resumes[0] is not None and all(r["optimizer"] is not None for r in resumes):
        optimizer.load_state_dict(stack_optimizer_states([r["optimizer"] for r in resumes]))
    densities = [density_pct(model) for model in models]
    dtype = ctxs[0].autocast_dtype
    hooks = [h for h in hooks if h is not None]

    def run_hooks(global_step: int) -> None:
        if global_step in hook_steps:
            packed.unpack()
            for hook in hooks:
                hook(global_step)
    on_step = run_hooks if hooks and hook_steps else None

    for epoch in range(start, spec.epochs):
        lr = spec.schedule.lr_at(epoch)
        set_lr(optimizer, lr)
        for ctx, loader, own in zip(ctxs, loaders, specs):
            seed = ctx.seed if own.data_seed is None else own.data_seed
            loader.set_epoch(epoch, seed=seed, start_batch=first_batch if epoch == start else 0)
        started = time.perf_counter()
        train = train_epoch_packed(packed, loaders, optimizer, autocast_dtype=dtype,
                                   label_smoothing=ctxs[0].cfg.label_smoothing,
                                   after_step=on_step, start_step=step)
        step = train["step"]
        val = evaluate_packed(packed, ctxs[0].loaders.val, dtype)
        test = evaluate_packed(packed, ctxs[0].loaders.test, dtype)   # read: synchronised
        seconds = (time.perf_counter() - started) / m     # each copy's share of the time
        packed.unpack()
        optimizer_states = split_optimizer_state(optimizer.state_dict(), m)
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
