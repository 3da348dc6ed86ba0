"""Optimizers and per-epoch learning-rate policies (upstream semantics).

cosine_lr: lr·½(1 + cos(π·e/E')) after an optional linear warm-up of `warmup` epochs
(e and E' counted after the warm-up); multistep_lr: lr·gamma^(milestones passed);
constant_lr: lr.  Default milestones follow upstream's table (see `default_milestones`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

UPSTREAM_MILESTONES = {100: [50, 80], 150: [80, 120], 160: [80, 120], 200: [100, 150],
                       300: [150, 250]}


def default_milestones(epochs: int) -> list[int]:
    """Upstream's hard-coded milestones for `epochs`, else [E/2, 2E/3]."""
    if epochs in UPSTREAM_MILESTONES:
        return list(UPSTREAM_MILESTONES[epochs])
    return [epochs // 2, (2 * epochs) // 3]


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of the epoch index (0-based)."""

    policy: str
    base_lr: float
    epochs: int
    milestones: tuple = ()
    gamma: float = 0.1
    warmup: int = 0

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.base_lr * (epoch + 1) / self.warmup
        if self.policy == "cosine_lr":
            done, span = epoch - self.warmup, max(self.epochs - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * done / span)) * self.base_lr
        if self.policy == "multistep_lr":
            return self.base_lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        return self.base_lr

    def describe(self) -> str:
        text = f"{self.policy} from {self.base_lr:g}"
        if self.policy == "multistep_lr":
            text += f", ×{self.gamma:g} at epochs {list(self.milestones)}"
        if self.warmup:
            text += f", {self.warmup} warm-up epochs"
        return text


def schedule_from_config(cfg, epochs: int | None = None) -> LRSchedule:
    epochs = cfg.epochs if epochs is None else epochs
    milestones = cfg.milestones if cfg.milestones is not None else default_milestones(epochs)
    return LRSchedule(cfg.lr_policy, cfg.lr, epochs, tuple(milestones), cfg.lr_gamma,
                      cfg.warmup_length)


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimizer and its hyper-parameters (the learning rate is set per epoch)."""

    name: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False

    def build(self, params, lr: float, capturable: bool = False) -> torch.optim.Optimizer:
        """The optimizer over the trainable `params`: one fused kernel per step when every
        parameter is on a CUDA device, else the multi-tensor (foreach) implementation.

        `capturable` (CUDA graphs): the learning rate is a device tensor that `set_lr` updates
        in place, and Adam/AdamW keep their step counts on the device, so a recorded step
        reads the current values at every replay.  The update arithmetic is the same."""
        params = [p for p in params if p.requires_grad]
        fused = fused_kernels_for(params)
        impl = {"fused": True} if fused else {"foreach": True}
        if capturable and fused:
            lr = torch.tensor(float(lr), device=params[0].device)
            if self.name != "sgd":
                impl["capturable"] = True
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay,
                                   nesterov=self.nesterov and self.momentum > 0, **impl)
        if self.name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay, **impl)
        if self.name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay, **impl)
        raise ValueError(f"unknown optimizer {self.name!r}")

    def describe(self) -> str:
        if self.name == "sgd":
            return (f"sgd momentum {self.momentum:g}{' nesterov' if self.nesterov else ''}, "
                    f"weight decay {self.weight_decay:g}")
        return f"{self.name}, weight decay {self.weight_decay:g}"


def fused_kernels_for(params: list) -> bool:
    """Whether the optimizers over `params` use PyTorch's fused kernels: on CUDA only (on the
    CPU the multi-tensor implementation keeps results as they always were here; a test of
    the CUDA-graph semantics on the CPU switches this on)."""
    return bool(params) and all(p.is_cuda for p in params)


def optimizer_from_config(cfg) -> OptimizerSpec:
    return OptimizerSpec(cfg.optimizer, cfg.momentum, cfg.wd, cfg.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place where it is a device tensor, so a recorded
    CUDA graph sees the new value)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


EXECUTION_KEYS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimizer state_dict but keep this optimizer's execution choices (fused /
    foreach / capturable, and whether the learning rate is a float or a device tensor): the
    state may have been saved by another device or engine.  The saved learning rate value is
    restored."""
    own_groups = [dict(group) for group in optimizer.param_groups]
    merged = []
    for own, old in zip(own_groups, saved["param_groups"]):
        group = dict(old)
        for key in EXECUTION_KEYS:
            if key in own:
                group[key] = own[key]
        merged.append(group)
    optimizer.load_state_dict({"state": saved["state"], "param_groups": merged})
    for group, own, old in zip(optimizer.param_groups, own_groups, saved["param_groups"]):
        value = float(old["lr"])
        group["lr"] = own["lr"]
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


@torch.no_grad()
def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Zero every state tensor in place (momentum buffers, Adam moments and step counts): the
    next step then computes what a freshly built optimizer's first step computes (momentum
    0.9·0 + grad = grad; dampening is never used here) — the same values, where a zero
    gradient may give a zero of the other sign (0 + (−0) = +0) — while the tensors keep their
    addresses for a recorded CUDA graph."""
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                value.zero_()
