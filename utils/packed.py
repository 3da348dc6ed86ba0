"""Packed replicates: M independent copies of one architecture trained as one program.

The copies' parameters and buffers (masks, BatchNorm running statistics) are stacked along a
new leading dimension (`torch.func.stack_module_state`), and one forward pass evaluates all
copies with `torch.func.vmap` over `functional_call`; the convolutions of the M copies run as
one batched (grouped) kernel.  Each copy keeps its own parameters, BatchNorm statistics, masks,
optimizer state (the optimizer's state is stacked the same way and every update is
elementwise) and metrics; the loss is the sum of the copies' mean losses, so each copy's
gradient is exactly the gradient of its own loss.  The training and evaluation steps of all
copies are device-only functions (`VmapTrainStep`, `VmapEvalStep`), so with CUDA graphs on
they are recorded once and replayed per batch like a single model's step (`utils.graphs`).
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap


class PackedModels:
    """M models of the same architecture, stacked; `models[k]` receives copy k on `unpack`."""

    def __init__(self, models: list[nn.Module]):
        if not models:
            raise ValueError("PackedModels needs at least one model")
        self.models = models
        self.count = len(models)
        self.params, self.buffers = stack_module_state(models)
        for name, param in models[0].named_parameters():   # frozen stays frozen
            self.params[name].requires_grad_(param.requires_grad)
        self.base = copy.deepcopy(models[0]).to("meta")
        _float32_batchnorms(self.base)

    def parameters(self):
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def _one(self, params, buffers, images):
        return functional_call(self.base, (params, buffers), (images,))

    def __call__(self, images: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits (M, B, classes) for per-copy batches (M, B, ...) or, with `shared`, one
        batch (B, ...) seen by every copy."""
        return vmap(self._one, in_dims=(0, 0, None if shared else 0))(
            self.params, self.buffers, images)

    @torch.no_grad()
    def unpack(self) -> None:
        """Copy each stacked slice back into its own model (weights, masks, statistics)."""
        for k, model in enumerate(self.models):
            state = {name: t[k] for name, t in {**self.params, **self.buffers}.items()}
            model.load_state_dict(state, strict=False)


def _float32_batchnorms(module: nn.Module) -> None:
    """Make every BatchNorm of `module` normalise in the dtype of its own statistics (float32)
    and return its input's dtype.

    Under bf16 autocast a convolution hands BatchNorm a bf16 batch while its statistics are
    float32; a single model's BatchNorm kernel accepts that, but BatchNorm under vmap does
    not ("expected scalar type BFloat16 but found Float").  When the input already has the
    statistics' dtype this changes nothing (`.to` returns the tensor itself)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and \
                not getattr(type(sub), "_float32_inside", False):
            sub.__class__ = _float32_variant(type(sub))


_VARIANTS: dict = {}


def _float32_variant(cls: type) -> type:
    if cls not in _VARIANTS:
        def forward(self, x, _parent=cls):
            own = self.running_mean if self.running_mean is not None else self.weight
            dtype = x.dtype if own is None else own.dtype
            return _parent.forward(self, x.to(dtype)).to(x.dtype)
        _VARIANTS[cls] = type(f"Float32{cls.__name__}", (cls,),
                              {"forward": forward, "_float32_inside": True})
    return _VARIANTS[cls]


class _CopySums:
    """Per-copy device sums of a packed step: loss (× batch size) and correct predictions."""

    def _start_sums(self, count: int) -> None:
        self.loss_sum = torch.zeros(count, device=self.device)
        self.correct = torch.zeros(count, device=self.device, dtype=torch.long)

    def reset_sums(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_sum, self.correct


class VmapTrainStep(_CopySums):
    """One optimizer step of every copy on per-copy batches (images (M, B, ...), labels
    (M, B)); per-copy loss × batch size and correct counts accumulate on the device.  Reads
    nothing back to the host (recordable as a CUDA graph)."""

    def __init__(self, packed: PackedModels, optimizer, device, autocast_dtype=None,
                 label_smoothing: float = 0.0, autocast_cache: bool = True):
        self.packed, self.optimizer = packed, optimizer
        self.device = torch.device(device)
        self.autocast_dtype, self.autocast_cache = autocast_dtype, autocast_cache
        self.per_copy_ce = vmap(lambda logits, labels: F.cross_entropy(
            logits, labels, label_smoothing=label_smoothing))
        self._start_sums(packed.count)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with _autocast(self.device, self.autocast_dtype, self.autocast_cache):
            logits = self.packed(images)
            losses = self.per_copy_ce(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        self.loss_sum += losses.detach() * labels.shape[1]
        self.correct += (logits.detach().argmax(2) == labels).sum(1)


class VmapEvalStep(_CopySums):
    """Every copy evaluated on one shared batch; per-copy summed cross-entropy and correct
    counts accumulate on the device."""

    def __init__(self, packed: PackedModels, device, autocast_dtype=None,
                 autocast_cache: bool = True):
        self.packed, self.device = packed, torch.device(device)
        self.autocast_dtype, self.autocast_cache = autocast_dtype, autocast_cache
        self._start_sums(packed.count)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        m = self.packed.count
        with _autocast(self.device, self.autocast_dtype, self.autocast_cache):
            logits = self.packed(images, shared=True)
        self.loss_sum += F.cross_entropy(logits.float().flatten(0, 1), labels.repeat(m),
                                         reduction="none").view(m, -1).sum(1)
        self.correct += (logits.argmax(2) == labels).sum(1)


class VmapPack:
    """`packing: vmap`: the copies' parameters stacked (`PackedModels`), one optimizer over
    the stacks, every layer of the M copies one batched kernel.  The same interface as
    `utils.packed_streams.StreamPack`.  With an `engine` whose CUDA graphs are on, the
    training and evaluation steps of all copies are each recorded as one CUDA graph."""

    def __init__(self, models: list, optimizer_spec, lr: float, *, autocast_dtype=None,
                 label_smoothing: float = 0.0, engine=None):
        from utils.fast import WARMUP_STEPS
        from utils.graphs import CapturedStep

        self.models = models
        self.count = len(models)
        self.packed = PackedModels(models)
        graphs = engine is not None and engine.cuda_graphs
        self.optimizer = optimizer_spec.build(self.packed.parameters(), lr, capturable=graphs)
        device = self.packed.parameters()[0].device
        self.step = VmapTrainStep(self.packed, self.optimizer, device, autocast_dtype,
                                  label_smoothing, autocast_cache=not graphs)
        self.eval_step = VmapEvalStep(self.packed, device, autocast_dtype,
                                      autocast_cache=not graphs)
        self.runner, self.eval_runner = self.step, self.eval_step
        if graphs:          # as a single model's steps (utils.fast)
            self.runner = CapturedStep(self.step, warmup=WARMUP_STEPS, report=engine.report,
                                       name="packed training step")
            self.eval_runner = CapturedStep(self.eval_step, warmup=1, report=engine.report,
                                            name="packed evaluation")

    def set_lr(self, lr: float) -> None:
        from utils.schedules import set_lr

        set_lr(self.optimizer, lr)

    def optimizer_states(self) -> list[dict]:
        return split_optimizer_state(self.optimizer.state_dict(), self.count)

    def load_optimizer_states(self, states: list[dict]) -> None:
        from utils.schedules import load_optimizer_state

        load_optimizer_state(self.optimizer, stack_optimizer_states(states))
        if hasattr(self.runner, "invalidate"):
            self.runner.invalidate()

    def unpack(self) -> None:
        self.packed.unpack()

    def train_epoch(self, loaders: list, *, after_step=None, start_step: int = 0) -> dict:
        return _train_epoch(self.packed, self.runner, loaders, after_step=after_step,
                            start_step=start_step)

    def evaluate(self, loader) -> dict:
        return _evaluate(self.packed, self.eval_runner, loader)


def split_optimizer_state(packed_state: dict, count: int) -> list[dict]:
    """The packed optimizer's state_dict as `count` single-model state_dicts (each copy's
    slice of every per-parameter tensor; shared scalars such as Adam's `step` repeated), in
    the format a plain optimizer over one copy's parameters saves and loads."""
    out = []
    for k in range(count):
        state = {index: {name: (value[k].clone() if _is_stacked(name, value) else value)
                         for name, value in entry.items()}
                 for index, entry in packed_state["state"].items()}
        out.append({"state": state, "param_groups": copy.deepcopy(packed_state["param_groups"])})
    return out


def stack_optimizer_states(states: list[dict]) -> dict:
    """The inverse of `split_optimizer_state`: one packed state_dict from per-copy ones."""
    first = states[0]
    stacked = {}
    for index, entry in first["state"].items():
        stacked[index] = {
            name: (torch.stack([s["state"][index][name] for s in states])
                   if _is_stacked(name, value, stacking=True) else value)
            for name, value in entry.items()}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def _is_stacked(name: str, value, stacking: bool = False) -> bool:
    """Per-parameter optimizer tensors (momentum, moments) are stacked over the copies; the
    step counter is shared."""
    return (isinstance(value, torch.Tensor) and name != "step"
            and (stacking or value.dim() >= 1))


def _autocast(device: torch.device, dtype, cache: bool = True):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def train_epoch_packed(packed: PackedModels, loaders: list, optimizer, *,
                       autocast_dtype=None, label_smoothing: float = 0.0,
                       after_step=None, start_step: int = 0) -> dict:
    """One epoch of every copy, copy k reading `loaders[k]`; per-copy mean loss and accuracy %
    (lists of M floats, read from the device once), the number of steps and the global step
    reached (`after_step(step)` runs after every optimizer step)."""
    step = VmapTrainStep(packed, optimizer, loaders[0].device, autocast_dtype, label_smoothing)
    return _train_epoch(packed, step, loaders, after_step=after_step, start_step=start_step)


def _train_epoch(packed: PackedModels, runner, loaders: list, *, after_step=None,
                 start_step: int = 0) -> dict:
    """`train_epoch_packed` with a given step (plain, or recorded as a CUDA graph)."""
    packed.train()
    m = packed.count
    runner.reset_sums()
    seen = steps = 0
    for batches in zip(*loaders):
        images = torch.stack([b[0] for b in batches])
        labels = torch.stack([b[1] for b in batches])
        runner(images, labels)
        steps += 1
        if after_step is not None:
            after_step(start_step + steps)
        seen += labels.shape[1]
    if seen == 0:
        nan = [float("nan")] * m
        return {"loss": nan, "acc": nan, "steps": 0, "step": start_step}
    loss_sum, correct = runner.sums()
    return {"loss": [s / seen for s in loss_sum.tolist()],
            "acc": [100.0 * c / seen for c in correct.tolist()], "steps": steps,
            "step": start_step + steps}


def evaluate_packed(packed: PackedModels, loader, autocast_dtype=None) -> dict:
    """Per-copy mean cross-entropy and accuracy % on one shared loader (NaN when empty)."""
    return _evaluate(packed, VmapEvalStep(packed, loader.device, autocast_dtype), loader)


@torch.no_grad()
def _evaluate(packed: PackedModels, runner, loader) -> dict:
    m = packed.count
    if loader.num_images == 0:
        return {"loss": [float("nan")] * m, "acc": [float("nan")] * m}
    packed.train(False)
    runner.reset_sums()
    for images, labels in loader:
        runner(images, labels)
    n = loader.num_images
    loss_sum, correct = runner.sums()
    return {"loss": [s / n for s in loss_sum.tolist()],
            "acc": [100.0 * c / n for c in correct.tolist()]}
