"""The training loop every phase uses: one `train_epoch` and one `evaluate`.

Each batch runs one step function (`utils.step`): eagerly, or replayed from a CUDA graph when
the phase's `program` (`utils.fast.FastPath.train_program`) recorded one.  Loss and accuracy
are accumulated on the device and read once at the end of an epoch, so the hot loop never
waits for the host.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from utils.step import NO_HOOKS, EvalStep, InStepHooks, TrainStep


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer | None = None, *,
                autocast_dtype: torch.dtype | None = None, label_smoothing: float = 0.0,
                extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
                after_step: Callable[[int], None] | None = None, start_step: int = 0,
                progress=None, forward: Callable | None = None,
                hooks: InStepHooks = NO_HOOKS, program=None) -> dict:
    """One pass over `loader`; returns mean loss, accuracy % and the step count reached.

    `program`: the phase's step (a `utils.fast.TrainProgram`, which brings its optimizer,
    loss and hooks); without it a plain eager step is built from `optimizer`, `forward`
    (default: `model`), `autocast_dtype`, `label_smoothing`, `extra_loss(model)` (added to the
    cross-entropy: regularisers) and the in-step `hooks`.  `after_step(step)` runs on the host
    after every step with the global step number (rewind points, pruning events).

    Under torchrun (`loader.world` > 1, `model` wrapped in DDP) each rank's cross-entropy is
    weighted by its share of the global batch, so DDP's gradient average is the gradient of
    the mean over the global batch; the returned numbers are summed over the ranks.
    """
    world = getattr(loader, "world", 1)
    device = loader.device
    if program is None:
        program = TrainStep(model, optimizer, device, forward, autocast_dtype,
                            label_smoothing, extra_loss, hooks)
    model.train()
    program.reset_sums()
    seen = 0
    step = start_step
    for images, labels in loader:
        if world > 1:
            program(images, labels, labels.shape[0] * world / loader.global_batch)
        else:
            program(images, labels)
        step += 1
        if after_step is not None:
            after_step(step)
        seen += labels.shape[0]
        if progress is not None:
            progress.update(1)
    loss_sum, correct = program.sums()
    if world > 1:
        from utils.distributed import all_reduce_sum

        totals = all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                             torch.tensor(float(seen), device=device,
                                                          dtype=torch.float64)]))
        loss_sum, correct, seen = totals[0], totals[1].long(), int(totals[2].item())
    if seen == 0:
        return {"loss": float("nan"), "acc": float("nan"), "step": step}
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen, "step": step}


@torch.no_grad()
def evaluate(model: nn.Module, loader, autocast_dtype: torch.dtype | None = None,
             forward: Callable | None = None, runner=None) -> dict:
    """Mean cross-entropy and accuracy % on `loader` (NaN for an empty split); `forward` as
    in `train_epoch`; `runner` (from `utils.fast.FastPath.evaluator`): the evaluation step to
    use, possibly a CUDA graph, for `model`.  A sharded loader (torchrun) evaluates this rank's
    shard and sums the counts over the ranks."""
    if loader.num_images == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    if runner is None:
        runner = EvalStep(model, loader.device, forward, autocast_dtype)
    was_training = model.training
    model.eval()
    runner.reset_sums()
    for images, labels in loader:
        runner(images, labels)
    model.train(was_training)
    loss_sum, correct = runner.sums()
    if getattr(loader, "world", 1) > 1:
        from utils.distributed import all_reduce_sum

        totals = all_reduce_sum(torch.stack([loss_sum.double(), correct.double()]))
        loss_sum, correct = totals[0], totals[1].long()
    n = loader.num_images
    return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}
