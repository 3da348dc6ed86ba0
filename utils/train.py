"""The training loop every phase uses: one `train_epoch` and one `evaluate`.

Loss and accuracy are accumulated on the device and read once at the end of an epoch, so the
hot loop never waits for the host.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, *,
                autocast_dtype: torch.dtype | None = None, label_smoothing: float = 0.0,
                extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
                after_step: Callable[[int], None] | None = None, start_step: int = 0,
                progress=None, forward: Callable | None = None) -> dict:
    """One pass over `loader`; returns mean loss, accuracy % and the step count reached.

    `extra_loss(model)` is added to the cross-entropy (regularisers); `after_step(step)` runs
    after every optimizer step with the global step number (rewind points, score clamping);
    `forward(images)` computes the logits (default: `model`; the fast path passes a compiled
    and/or channels_last version of the same model).

    Under torchrun (`loader.world` > 1, `model` wrapped in DDP) each rank's cross-entropy is
    weighted by its share of the global batch, so DDP's gradient average is the gradient of
    the mean over the global batch; the returned numbers are summed over the ranks.
    """
    world = getattr(loader, "world", 1)
    forward = model if forward is None else forward
    model.train()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    step = start_step
    for images, labels in loader:
        with _autocast(device, autocast_dtype):
            logits = forward(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
            objective = loss
            if world > 1:
                objective = loss * (labels.shape[0] * world / loader.global_batch)
            if extra_loss is not None:
                penalty = extra_loss(model)
                loss = loss + penalty
                objective = objective + penalty
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        step += 1
        if after_step is not None:
            after_step(step)
        batch = labels.shape[0]
        loss_sum += loss.detach().float() * batch
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += batch
        if progress is not None:
            progress.update(1)
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
             forward: Callable | None = None) -> dict:
    """Mean cross-entropy and accuracy % on `loader` (NaN for an empty split); `forward` as
    in `train_epoch`.  A sharded loader (torchrun) evaluates this rank's shard and sums the
    counts over the ranks."""
    forward = model if forward is None else forward
    if loader.num_images == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    was_training = model.training
    model.eval()
    device = loader.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in loader:
        with _autocast(device, autocast_dtype):
            logits = forward(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    if getattr(loader, "world", 1) > 1:
        from utils.distributed import all_reduce_sum

        totals = all_reduce_sum(torch.stack([loss_sum.double(), correct.double()]))
        loss_sum, correct = totals[0], totals[1].long()
    n = loader.num_images
    return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}
