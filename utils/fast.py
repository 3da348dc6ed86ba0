"""The fast path of the training loop: execution choices that change speed, not the recipe.

- `channels_last` (default on CUDA): model weights and input batches in NHWC memory format;
- `cudnn.benchmark` on CUDA (the input shapes of a run are fixed);
- `compile`: `torch.compile` of the model, built once per model object and reused by every
  phase and IMP level of the run (masks and weights are inputs of the compiled graph, so
  pruning and rewinding do not recompile);
- fused optimizer steps on CUDA (see `utils.schedules.OptimizerSpec.build`) and bf16 autocast
  (`utils.device.autocast_dtype`) are chosen elsewhere from the same config.

On CPU with the defaults every choice is off, and training is bit-identical to the plain loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class FastPath:
    """The fast-path choices of one run and its cache of compiled models."""

    device: torch.device
    channels_last: bool = False
    compile: bool = False
    _compiled: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, cfg, device: torch.device) -> "FastPath":
        channels_last = cfg.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda"
        return cls(torch.device(device), bool(channels_last), bool(cfg.compile))

    def configure_backends(self) -> None:
        """Process-wide backend switches for this device (cudnn autotuning on CUDA)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Put the model's 4-D tensors in channels_last format when enabled (in place)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """An input batch in the model's memory format."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def forward_of(self, model: nn.Module, compile: bool = True):
        """The callable that computes `model`'s logits on a batch: the model itself, or its
        compiled version (created on first use and cached for the model object).  Pass
        `compile=False` for short-lived models (per-epoch evaluation copies): compiling those
        would recompile every epoch."""
        compile = compile and self.compile
        if not compile and not self.channels_last:
            return model
        if not compile:
            return lambda images: model(self.input(images))
        key = id(model)
        cached = self._compiled.get(key)
        if cached is not None and cached[0] is model:
            return cached[1]
        run = torch.compile(model)
        if self.channels_last:
            def forward(images, _run=run):
                return _run(self.input(images))
        else:
            forward = run
        self._compiled[key] = (model, forward)
        return forward
