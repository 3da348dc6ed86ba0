"""A phase = a number of epochs of training with one optimizer and LR schedule, evaluated,
logged and checkpointed after every epoch.  Algorithms are short sequences of phases.

Resume: a phase whose key is in `state.completed` returns its stored result (restoring the
model from last.pt when it was the last phase run); the phase recorded in last.pt continues
from its last completed epoch with the saved model, optimizer and random state.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from models.masks import density_pct
from utils.errors import Diverged
from utils.logging import write_metrics_csv
from utils.schedules import LRSchedule, OptimizerSpec, load_optimizer_state, set_lr
from utils.step import NO_HOOKS, InStepHooks
from utils.train import evaluate, train_epoch


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: a unique `key`, the `phase` label of metrics rows, its IMP `level` (if any),
    `epochs`, optimizer and schedule.  `start_step` lets a phase begin part-way into its
    schedule (weight rewinding to iteration k starts in epoch k // steps-per-epoch, at that
    epoch's batch k % steps-per-epoch); `data_seed` overrides the data-order seed."""

    key: str
    phase: str
    epochs: int
    optimizer: OptimizerSpec
    schedule: LRSchedule
    level: int | None = None
    start_step: int = 0
    data_seed: int | None = None


@dataclass(frozen=True)
class PhaseJob:
    """A phase an algorithm still has to run, split so packed replicates can batch it:
    `start()` puts the phase's starting point into the model and returns its spec;
    `finish()` (optional) records what follows the training."""

    key: str
    start: Callable[[], PhaseSpec]
    finish: Callable[[], None] | None = None


def _progress_bar(ctx, spec: PhaseSpec, epoch: int, total_batches: int):
    if ctx.quiet or not ctx.logger.stream.isatty():
        return None
    from tqdm import tqdm

    level = "" if spec.level is None else f" L{spec.level}"
    run = getattr(ctx, "progress", None)
    return tqdm(total=total_batches, desc=f"{spec.phase}{level} {epoch + 1}/{spec.epochs}"
                + (f" | {run.text()}" if run is not None else ""),
                leave=False, dynamic_ncols=True)


def _fmt_acc(value: float) -> str:
    return "  n/a " if math.isnan(value) else f"{value:6.2f}"


def record_epoch(ctx, spec: PhaseSpec, epoch: int, step: int, lr: float, seconds: float,
                 density: float, train: dict, val: dict, test: dict, extra: dict,
                 note: str = "") -> dict:
    """One epoch's metrics row (kept in the run state), its TensorBoard record (the phase's
    own sub-run, utils/board.py) and log line (with the run-wide progress and ETA);
    `train` / `val` / `test` hold "loss" and "acc"; `extra` is logged under <phase>/."""
    state = ctx.state
    row = {"key": spec.key, "val_loss": val["loss"], "test_loss": test["loss"],
           "phase": spec.phase, "level": spec.level, "epoch": epoch + 1, "step": step,
           "lr": lr, "train_loss": train["loss"], "train_acc": train["acc"],
           "val_acc": val["acc"], "test_acc": test["acc"], "density_pct": density,
           "sparsity_pct": 100.0 - density, "seconds": seconds, "extra": extra}
    state.rows.append(row)
    state.global_epoch += 1
    from utils.board import log_epoch

    log_epoch(ctx, spec, row, extra)
    run = getattr(ctx, "progress", None)
    if run is not None:
        run.epoch_done()
    ctx.logger.info(
        f"{spec.phase}{'' if spec.level is None else f' L{spec.level}'} "
        f"epoch {epoch + 1:>3}/{spec.epochs}  loss {train['loss']:.4f}  "
        f"train {_fmt_acc(train['acc'])}%  val {_fmt_acc(val['acc'])}%  "
        f"test {_fmt_acc(test['acc'])}%  lr {lr:.4g}  "
        f"density {density:.2f}% / sparsity {100.0 - density:.2f}%  {seconds:.1f}s{note}"
        + (f"  | {run.text()}" if run is not None else ""))
    return row


def run_phase(ctx, model: torch.nn.Module, spec: PhaseSpec, *,
              extra_loss: Callable | None = None,
              after_step: Callable[[int], None] | None = None,
              after_epoch: Callable[[int], dict | None] | None = None,
              eval_model: Callable[[], torch.nn.Module] | None = None,
              hooks: InStepHooks = NO_HOOKS) -> dict:
    """Train `model` for the phase's epochs (resuming if possible) and return its result:
    final train/val/test metrics, best validation accuracy and the test accuracy there.

    Hooks: `extra_loss(model)` is added to the loss; `hooks` are device-only work inside
    every step (utils/step.py: before the forward pass, after the optimizer update) and are
    recorded with the step when it runs as a CUDA graph; `after_step(step)` runs on the host
    after every step; `after_epoch(epoch)` (1-based) runs after each epoch's training and
    before its evaluation, and may return extra numbers that are logged to TensorBoard (under
    `<phase>/<name>`) and kept in the metrics row under "extra"; `eval_model()` returns the
    network to evaluate (default: `model` itself); the row's density is that network's.
    `extra_loss` and `hooks` must be device-only (no host synchronisation) so that the step
    can be recorded.

    A non-finite training loss stops the phase after that epoch (its row is recorded) by
    raising `utils.errors.Diverged`.
    """
    state = ctx.state
    if spec.key in state.completed:
        if state.resume is not None and state.resume["phase_key"] == spec.key:
            model.load_state_dict(state.resume["model"])
        return state.completed[spec.key]

    loader = ctx.loaders.train
    start, first_batch = divmod(spec.start_step, len(loader))
    step = spec.start_step
    # the engine (CUDA graphs, compile, channels_last) runs single-process; DDP runs its own
    engine = ctx.fast if ctx.world_size == 1 else None
    program, optimizer = None, None
    if engine is not None:
        remaining = (spec.epochs - start) * len(loader)
        program = engine.train_program(model, spec.optimizer, spec.schedule.lr_at(start),
                                       autocast_dtype=ctx.autocast_dtype,
                                       label_smoothing=ctx.cfg.label_smoothing,
                                       extra_loss=extra_loss, hooks=hooks, steps=remaining)
        optimizer = program.optimizer
    else:
        optimizer = spec.optimizer.build(model.parameters(), spec.schedule.lr_at(start))
    best = {"val_acc": float("nan"), "test_acc": float("nan"), "epoch": 0}
    resume = state.resume if state.resume and state.resume["phase_key"] == spec.key else None
    if resume is not None:
        model.load_state_dict(resume["model"])
        load_optimizer_state(optimizer, resume["optimizer"])
        if program is not None:
            program.invalidate()      # the optimizer's state tensors were replaced
        start, step, best = resume["epoch"], resume["step"], dict(resume["best"])
        first_batch = 0
        torch.set_rng_state(resume["torch_rng"])
        if "cuda_rng" in resume and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(resume["cuda_rng"], ctx.device)
        ctx.logger.info(f"resuming {spec.key} after epoch {start} of {spec.epochs}")
        state.resume = None

    data_seed = ctx.seed if spec.data_seed is None else spec.data_seed
    trained, loss_hook = model, extra_loss
    if ctx.world_size > 1:   # torchrun: compare the ranks' own masks, then DDP syncs rank 0's
        from utils.distributed import masks_agree, parallel

        if not masks_agree(model):
            ctx.disagreements.append(spec.key)
            ctx.logger.info(f"warning: {spec.key}: the ranks computed different masks; "
                            f"rank 0's are used")
        trained = parallel(model, ctx.device)
        if extra_loss is not None:
            loss_hook = lambda _wrapped: extra_loss(model)   # noqa: E731 (the bare model)
    for epoch in range(start, spec.epochs):
        lr = spec.schedule.lr_at(epoch)
        set_lr(optimizer, lr)
        loader.set_epoch(epoch, seed=data_seed, start_batch=first_batch if epoch == start else 0)
        started = time.perf_counter()
        bar = _progress_bar(ctx, spec, epoch, len(loader) - loader.start_batch)
        train = train_epoch(trained, loader, optimizer, autocast_dtype=ctx.autocast_dtype,
                            label_smoothing=ctx.cfg.label_smoothing, extra_loss=loss_hook,
                            after_step=after_step, start_step=step, progress=bar,
                            hooks=hooks, program=program)
        if bar is not None:
            bar.close()
        step = train["step"]
        if not math.isfinite(train["loss"]):
            _record_divergence(ctx, spec, epoch, step, lr, started, model, train)
        extra = (after_epoch(epoch + 1) if after_epoch is not None else None) or {}
        scored = eval_model() if eval_model is not None else model
        val = _evaluate(ctx, engine, scored, scored is not model, ctx.loaders.val)
        test = _evaluate(ctx, engine, scored, scored is not model, ctx.loaders.test)
        seconds = time.perf_counter() - started
        density = density_pct(scored)
        if not math.isnan(val["acc"]) and not (val["acc"] <= best["val_acc"]):
            best = {"val_acc": val["acc"], "test_acc": test["acc"], "epoch": epoch + 1}
        record_epoch(ctx, spec, epoch, step, lr, seconds, density, train, val, test, extra)
        ctx.save_last(model, optimizer, spec.key, epoch + 1, step, best)
    return complete_phase(ctx, model, spec, step, best)


def _evaluate(ctx, engine, model, transient: bool, loader) -> dict:
    """`evaluate` through the engine's (possibly recorded) evaluation step when there is one."""
    if engine is None:
        return evaluate(model, loader, ctx.autocast_dtype)
    runner, target = engine.evaluator(model, ctx.autocast_dtype, transient=transient)
    return evaluate(target, loader, ctx.autocast_dtype, runner=runner)


def _record_divergence(ctx, spec: PhaseSpec, epoch: int, step: int, lr: float,
                       started: float, model, train: dict) -> None:
    """Record the epoch whose training loss is not finite (no evaluation: the weights are
    meaningless), write metrics.csv, and stop the phase."""
    nan = {"loss": float("nan"), "acc": float("nan")}
    record_epoch(ctx, spec, epoch, step, lr, time.perf_counter() - started,
                 density_pct(model), train, nan, nan, {}, note="  DIVERGED")
    write_metrics_csv(ctx.path("metrics.csv"), ctx.state.rows)
    raise Diverged(spec.key, epoch + 1, train["loss"])


def complete_phase(ctx, model, spec: PhaseSpec, step: int, best: dict) -> dict:
    """The phase's result (its last epoch's metrics, the best validation epoch), recorded
    as completed in the run state and in checkpoints/last.pt."""
    last = next((r for r in reversed(ctx.state.rows) if r.get("key") == spec.key), {})
    nan = float("nan")
    result = {"epochs": spec.epochs, "step": step,
              **{k: last.get(k, nan) for k in ("train_loss", "train_acc", "val_loss",
                                                "val_acc", "test_loss", "test_acc")},
              "best_val_acc": best["val_acc"], "test_acc_at_best_val": best["test_acc"],
              "best_val_epoch": best["epoch"], "density_pct": density_pct(model)}
    ctx.state.completed[spec.key] = result
    ctx.save_last(model, None, spec.key, spec.epochs, step, best)
    return result
