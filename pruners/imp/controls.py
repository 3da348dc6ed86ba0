"""Controls (branches) that make an IMP ticket meaningful, run at chosen levels with the same
training as the level itself:

  reinit           the ticket's masks, freshly initialised weights
  shuffle_mask     each pruned layer's mask permuted (layer densities kept)
  shuffle_weights  the ticket's masks, surviving start weights permuted within each layer
  random_mask      a uniformly random mask with the same number of weights
  supermask        the ticket itself evaluated without any training
  ticket           the ticket itself (its masks and start weights) trained again: with
                   `data_subset: prac` on every training example, where the level itself
                   trained on its subset (for full-data IMP it repeats the level)

With prune_granularity channel or n:m the masks are drawn at that granularity: shuffle_mask
permutes each layer's channels (or its n:m group patterns), random_mask draws as many random
channels (per layer with the local scope) or a random n of every m.

Controls that draw a new mask start from unmasked weights, never from weights the lottery
mask already zeroed: the rewind point for IMP-WR, the dense trained level 0 for IMP-LRR and
IMP-FT.  Results go to controls.csv, TensorBoard (controls/<name>/test_acc at step = level)
and the metrics rows (phase control_<name>).  With `grad_flow: true` each control's gradient
norm at its starting point (analysis/grad_flow.py) goes into controls.csv (`grad_norm`, next
to the ticket's `ticket_grad_norm`) and TensorBoard (controls/<name>/grad_norm).
"""
from __future__ import annotations

import copy
import zlib

import torch

from models import build_model
from models.granularity import WEIGHT, random_masks_for, shuffled_masks_for
from models.masks import prunable_layers, pruning_pool, set_masks
from pruners.imp.analysis import grad_flow_batches
from pruners.imp.level_files import level_path, read_info
from pruners.imp.plan import ImpPlan, level_key, level_spec
from pruners.ticket_controls import random_masks, shuffle_within_layers
from utils.checkpoint import load_checkpoint
from utils.logging import write_csv
from utils.phases import PhaseJob, PhaseSpec, run_phase
from utils.train import evaluate

CONTROL_COLUMNS = ["level", "control", "density_pct", "test_acc", "val_acc", "best_val_acc",
                   "test_acc_at_best_val", "epochs", "seconds", "ticket_test_acc"]
GRAD_COLUMNS = ["grad_norm", "ticket_grad_norm"]        # with grad_flow


def control_seed(seed: int, level: int, name: str) -> int:
    """A stable seed per (run seed, level, control)."""
    return zlib.crc32(f"{seed}:{level}:{name}".encode())


def _source_state(ctx, plan: ImpPlan) -> dict:
    """Unmasked weights that new masks are applied to (see module docstring)."""
    if plan.variant == "wr":
        return load_checkpoint(ctx.path("checkpoints", "rewind.pt"), ctx.device)["model"]
    return load_checkpoint(level_path(ctx, 0), ctx.device)["trained"]


def _apply_bias_masks(model, start: dict) -> None:
    for name, layer in prunable_layers(model).items():
        key = f"{name}.bias_mask"
        if key in start:
            layer.set_bias_mask(start[key])


def setup_control(ctx, model, plan: ImpPlan, name: str, level: int, record: dict) -> None:
    """Put the starting point of control `name` at `level` into `model`."""
    generator = torch.Generator().manual_seed(control_seed(ctx.seed, level, name))
    pool_names = list(pruning_pool(model, plan.ignore))
    masks = record["masks"]
    if name in ("supermask", "shuffle_weights", "ticket"):
        model.load_state_dict(record["start"])
        if name == "shuffle_weights":
            _shuffle_survivors(model, pool_names, generator)
        return
    if name == "reinit":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(control_seed(ctx.seed, level, name))
            fresh = build_model(ctx.cfg.replace(fixed_init=False), ctx.model_spec)
        model.load_state_dict(fresh.state_dict())
        set_masks(model, masks)
    else:
        model.load_state_dict(_source_state(ctx, plan))
        pool_masks = {n: masks[n] for n in pool_names}
        units = plan.units
        if units is not None and units.granularity.kind != WEIGHT:
            new = shuffled_masks_for(units, masks, generator) if name == "shuffle_mask" \
                else random_masks_for(units, masks, plan.scope, generator)
        elif name == "shuffle_mask":
            new = shuffle_within_layers(pool_masks, generator)
        else:
            keep = sum(int(m.count_nonzero()) for m in pool_masks.values())
            new = random_masks({n: m.shape for n, m in pool_masks.items()}, keep, generator)
        set_masks(model, new)
    _apply_bias_masks(model, record["start"])


@torch.no_grad()
def _shuffle_survivors(model, names: list, generator: torch.Generator) -> None:
    layers = prunable_layers(model)
    for name in names:
        layer = layers[name]
        alive = layer.mask.bool()
        values = layer.weight[alive]
        perm = torch.randperm(values.numel(), generator=generator).to(values.device)
        layer.weight[alive] = values[perm]


def control_key(name: str, level: int) -> str:
    return f"control_{name}_L{level:02d}"


def control_job(ctx, model, plan: ImpPlan, name: str, level: int) -> PhaseJob:
    """The training of control `name` at `level` as a job (packed runs batch them)."""
    def start() -> PhaseSpec:
        record = load_checkpoint(level_path(ctx, level), ctx.device)
        setup_control(ctx, model, plan, name, level, record)
        return level_spec(ctx.cfg, plan, level, key=control_key(name, level),
                          phase=f"control_{name}")
    return PhaseJob(control_key(name, level), start)


def pending_control_jobs(ctx, model, plan: ImpPlan, levels: list[int]) -> list[PhaseJob]:
    """The trained controls not run yet, in the order `run_controls` runs them."""
    return [control_job(ctx, model, plan, name, level) for level in levels
            for name in ctx.cfg.imp_controls or []
            if name != "supermask" and control_key(name, level) not in ctx.state.completed]


def run_controls(ctx, model, plan: ImpPlan, levels: list[int]) -> list[dict]:
    """Run every requested control at every control level (resuming finished ones)."""
    grad_batches = grad_flow_batches(ctx) if ctx.cfg.grad_flow else None
    rows = []
    for level in levels:
        record = load_checkpoint(level_path(ctx, level), ctx.device)
        ticket = ctx.state.completed[level_key(level)]
        # every control keeps the ticket's number of weights (shuffles, random masks too)
        kept = sum(int(m.count_nonzero()) for m in record["masks"].values())
        for name in ctx.cfg.imp_controls or []:
            key = control_key(name, level)
            if key not in ctx.state.completed:
                if name == "supermask":
                    setup_control(ctx, model, plan, name, level, record)
                    _evaluate_only(ctx, model, key)
                else:
                    run_phase(ctx, model, control_job(ctx, model, plan, name, level).start())
            result = ctx.state.completed[key]
            seconds = sum(r["seconds"] for r in ctx.state.rows if r.get("key") == key)
            row = {"level": level, "control": name,
                   "density_pct": 100.0 * kept / plan.total,
                   "test_acc": result["test_acc"], "val_acc": result["val_acc"],
                   "best_val_acc": result["best_val_acc"],
                   "test_acc_at_best_val": result["test_acc_at_best_val"],
                   "epochs": result["epochs"], "seconds": seconds,
                   "ticket_test_acc": ticket["test_acc"]}
            scalars = {f"controls/{name}/test_acc": result["test_acc"]}
            if grad_batches is not None:
                row["grad_norm"] = control_grad_norm(ctx, model, plan, name, level, record,
                                                     grad_batches)
                row["ticket_grad_norm"] = (read_info(ctx, level).get("analysis") or {}).get(
                    "grad_norm")
                scalars[f"controls/{name}/grad_norm"] = row["grad_norm"]
            rows.append(row)
            ctx.logger.scalars(scalars, level)
            write_csv(ctx.path("controls.csv"),
                      CONTROL_COLUMNS + (GRAD_COLUMNS if grad_batches is not None else []),
                      rows)
    return rows


def control_grad_norm(ctx, model, plan: ImpPlan, name: str, level: int, record: dict,
                      batches: list) -> float:
    """The gradient norm at the starting point of control `name` at `level` (set up again,
    deterministically, on a copy of `model`)."""
    from analysis.grad_flow import gradient_norm

    probe = copy.deepcopy(model)
    setup_control(ctx, probe, plan, name, level, record)
    return gradient_norm(probe, batches)


def _evaluate_only(ctx, model, key: str) -> None:
    """The supermask control: evaluate without training and record it as a finished phase."""
    val = evaluate(model, ctx.loaders.val, ctx.autocast_dtype)
    test = evaluate(model, ctx.loaders.test, ctx.autocast_dtype)
    nan = float("nan")
    ctx.state.completed[key] = {"epochs": 0, "step": 0, "train_loss": nan, "train_acc": nan,
                                "val_loss": val["loss"], "val_acc": val["acc"],
                                "test_loss": test["loss"], "test_acc": test["acc"],
                                "best_val_acc": val["acc"], "test_acc_at_best_val": test["acc"],
                                "best_val_epoch": 0, "density_pct": nan}
    ctx.logger.info(f"control supermask: val {val['acc']:.2f} %  test {test['acc']:.2f} % "
                    f"(no training)")
    ctx.save_last(model, None, key, 0, 0, {"val_acc": val["acc"], "test_acc": test["acc"],
                                          "epoch": 0})
