"""`grad_flow: true` for the families whose ticket is trained from one starting point (mask
searches and their random baselines, pruning at init): the gradient norm of the training
loss (analysis/grad_flow.py) at the start of every network the run trains or compares — the
dense network at initialisation, the ticket as its training starts, and each control or
sanity check as its training starts.  (IMP measures it per level: pruners/imp/analysis.py.)

Every starting point is rebuilt on a copy of the model from the run's files (init.pt,
before_finetune.pt) and the control's deterministic set-up, so the numbers need no state:
a resumed run, a packed copy and a rerun all measure the same networks.
"""
from __future__ import annotations

from typing import Callable

import torch

from models.masks import get_masks, set_masks
from pruners.tickets import load_model_file


def dense_at_init(ctx, prepare: Callable | None = None) -> Callable:
    """Set-up of the dense network at initialisation (checkpoints/init.pt, every mask 1)."""
    def set_up(net) -> None:
        load_model_file(net, ctx.path("checkpoints", "init.pt"))
        if prepare is not None:
            prepare(net)
        set_masks(net, {name: torch.ones_like(mask) for name, mask in get_masks(net).items()})
    return set_up


def ticket_start(ctx, prepare: Callable | None = None,
                 then: Callable | None = None) -> Callable:
    """Set-up of the ticket as its training starts (checkpoints/before_finetune.pt), turned
    into a control by `then(net)` when given."""
    def set_up(net) -> None:
        load_model_file(net, ctx.path("checkpoints", "before_finetune.pt"))
        if prepare is not None:
            prepare(net)
        if then is not None:
            then(net)
    return set_up


def record_start_norms(ctx, model, starts: dict[str, Callable]) -> dict[str, float]:
    """Measure the gradient norm at every named starting point, log it and put it on
    TensorBoard (`grad_flow/<name>`); returns the summary fields `<name>_grad_norm`."""
    from analysis.grad_flow import norms_at_starts, training_batches

    batches = training_batches(ctx)
    norms = norms_at_starts(model, starts, batches)
    images = sum(len(labels) for _, labels in batches)
    ctx.logger.info("gradient norm at the start (grad_flow, "
                    f"{len(batches)} batch(es), {images} training images): "
                    + ", ".join(f"{name} {value:.4g}" for name, value in norms.items()))
    ctx.logger.scalars({f"grad_flow/{name}": value for name, value in norms.items()}, 0)
    return {f"{name}_grad_norm": value for name, value in norms.items()}
