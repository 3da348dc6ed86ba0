"""One training step and one evaluation step as device-only functions.

`TrainStep(images, labels)` is forward → cross-entropy (+ regulariser) → backward → optimizer
step → the algorithm's in-step hooks → loss and correct-count sums kept on the device.  It reads
nothing back to the host and takes no data-dependent Python branch, so the very same function
runs eagerly (CPU, or CUDA without graphs) or is recorded once into a CUDA graph and replayed
for every batch (`utils.graphs`).  `EvalStep` is the same for evaluation.

In-step hooks are the per-step work of an algorithm that must happen inside the step:
`before_forward` (e.g. edge-popup's top-k masks from the current scores), `after_forward`
(given the batch's detached logits and labels: per-example statistics such as PrAC's
forgetting events) and `after_update` (e.g. Gem-Miner's score clamping, re-applying masks to
the weights).  They must be device-only tensor operations (no `.item()`, no boolean-mask
indexing, no branching on tensor values); anything they read per batch besides the logits and
labels must be a tensor updated in place (a recorded graph reads the same memory every
replay).
Host-side work that needs the step number (the IMP rewind point, gradual pruning events) runs
between steps, outside the step (`after_step` of `utils.phases.run_phase`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """bf16/fp16 autocast on `device`, or nothing for `dtype` None.  `cache=False` for code
    recorded into a CUDA graph (autocast's weight-cast cache must not outlive the capture)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


@dataclass(frozen=True)
class InStepHooks:
    """Device-only per-step work of an algorithm (see the module docstring).  Two phases
    with equal hooks (the same callables) run the same step function."""

    before_forward: tuple = ()
    after_update: tuple = ()
    after_forward: tuple = ()     # hook(logits, labels), the logits detached


NO_HOOKS = InStepHooks()


class _DeviceSums:
    """The device-side sums a step accumulates: loss × batch size and correct predictions."""

    def _start_sums(self) -> None:
        self.device = torch.device(self.device)
        if self.forward is None:
            self.forward = self.model
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)

    def reset_sums(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The device tensors (loss sum, correct count) accumulated since `reset_sums`."""
        return self.loss_sum, self.correct


@dataclass
class TrainStep(_DeviceSums):
    """One optimizer step on a batch; the sums of the batch losses (× batch size) and of the
    correct predictions accumulate on the device (`sums`) until `reset_sums`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    forward: Callable | None = None
    autocast_dtype: torch.dtype | None = None
    label_smoothing: float = 0.0
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None
    hooks: InStepHooks = NO_HOOKS
    autocast_cache: bool = True
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)

    def __post_init__(self):
        self._start_sums()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 loss_scale: float | None = None) -> None:
        """Train on one batch.  `loss_scale` multiplies the cross-entropy in the objective
        only (torchrun: a rank's share of the global batch)."""
        for hook in self.hooks.before_forward:
            hook()
        with autocast(self.device, self.autocast_dtype, self.autocast_cache):
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            objective = loss if loss_scale is None else loss * loss_scale
            if self.extra_loss is not None:
                penalty = self.extra_loss(self.model)
                loss = loss + penalty
                objective = objective + penalty
        for hook in self.hooks.after_forward:
            hook(logits.detach(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        for hook in self.hooks.after_update:
            hook()
        self.loss_sum += loss.detach().float() * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()



@dataclass
class EvalStep(_DeviceSums):
    """Forward pass of one batch in evaluation mode; summed cross-entropy and correct count
    accumulate on the device."""

    model: nn.Module
    device: torch.device
    forward: Callable | None = None
    autocast_dtype: torch.dtype | None = None
    autocast_cache: bool = True
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)

    def __post_init__(self):
        self._start_sums()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(self.device, self.autocast_dtype, self.autocast_cache):
            logits = self.forward(images)
        self.loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        self.correct += (logits.argmax(1) == labels).sum()

