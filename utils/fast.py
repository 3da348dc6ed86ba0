"""The execution engine of the training loop: choices that change speed, not the recipe.

- `cuda_graphs` (default on CUDA): every training and evaluation step is recorded once as a
  CUDA graph and replayed per batch (`utils.graphs`); a training step and its optimizer are
  kept per (model, optimizer, in-step hooks) and reused by the next phase with the same ones —
  IMP levels, whose masks are buffers the graph reads, replay the same graph with the optimizer
  state reset in place;
- `channels_last` (default on CUDA): model weights and input batches in NHWC memory format;
- `cudnn.benchmark` on CUDA (the input shapes of a run are fixed);
- `compile` (default: on CUDA for phases of at least `COMPILE_MIN_STEPS` steps): the model's
  forward through `torch.compile`, built once per model object and reused by every phase and
  level (masks and weights are inputs of the compiled code, so pruning and rewinding do not
  recompile); with CUDA graphs, the compiled kernels run inside the graph;
- fused optimizer steps on CUDA (`utils.schedules.OptimizerSpec.build`) and bf16 autocast
  (`utils.device.autocast_dtype`) are chosen elsewhere from the same config.

On CPU with the defaults every choice is off, and training is bit-identical to the plain loop.
Under torchrun the engine is not used (DDP wraps the model; see utils/phases.py).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from utils.graphs import CapturedStep
from utils.schedules import OptimizerSpec, reset_optimizer_state, set_lr
from utils.step import NO_HOOKS, EvalStep, InStepHooks, TrainStep

# compile: auto compiles a model when a phase of at least this many training steps starts
# (about 51 CIFAR epochs at batch 128).  Compiling ResNet-20 costs tens of seconds once per
# run and saves a fraction of a millisecond per step; bench/gpu_check.sh prints both.
COMPILE_MIN_STEPS = 20_000
WARMUP_STEPS = 2          # eager steps before a graph is recorded (they are real steps)
MAX_PROGRAMS = 1          # train programs kept (each holds a graph's activation memory)
MAX_EVALUATORS = 4        # evaluation programs kept (forward only: small)


def is_compile_error(exc: BaseException) -> bool:
    """Whether `exc` comes from torch.compile's tracing or code generation (not the model)."""
    module = type(exc).__module__ or ""
    return (module.startswith(("torch._dynamo", "torch._inductor"))
            or type(exc).__name__ in ("BackendCompilerFailed", "InductorError"))


@dataclass
class TrainProgram:
    """The training step of a phase: its optimizer, the step function, and how it runs
    (`runner`: the step itself, or its CUDA graph)."""

    model: nn.Module
    key: tuple
    optimizer: torch.optim.Optimizer
    step: TrainStep
    runner: object

    def __call__(self, images, labels) -> None:
        self.runner(images, labels)

    def reset_sums(self) -> None:
        self.step.reset_sums()

    def sums(self):
        return self.step.sums()

    @property
    def captured(self) -> bool:
        return isinstance(self.runner, CapturedStep) and self.runner.graph is not None

    def invalidate(self) -> None:
        """Drop the recorded graph (the optimizer's state tensors were replaced, e.g. by
        loading a checkpoint): the next steps warm up and record again."""
        if isinstance(self.runner, CapturedStep):
            self.runner.invalidate()

    def release(self) -> None:
        """Free the graph and the gradients (the program is no longer used)."""
        self.invalidate()
        self.optimizer.zero_grad(set_to_none=True)


@dataclass
class FastPath:
    """The engine choices of one run and its caches (compiled forwards, train and eval
    programs)."""

    device: torch.device
    channels_last: bool = False
    compile: bool | None = False           # None: auto (see COMPILE_MIN_STEPS)
    cuda_graphs: bool = False
    report: Callable[[str], None] | None = None
    _compiled: dict = field(default_factory=dict, repr=False)
    _plain: dict = field(default_factory=dict, repr=False)
    _compile_failed: set = field(default_factory=set, repr=False)
    _programs: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _evaluators: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _shadows: dict = field(default_factory=dict, repr=False)
    max_programs: int = MAX_PROGRAMS
    max_evaluators: int = MAX_EVALUATORS
    reuse_programs: bool = False         # on with CUDA graphs: IMP levels replay one graph

    @classmethod
    def from_config(cls, cfg, device: torch.device, report=None) -> "FastPath":
        device = torch.device(device)
        channels_last = cfg.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda"
        compile_ = cfg.compile
        if compile_ is None and device.type != "cuda":
            compile_ = False
        graphs = cfg.cuda_graphs
        if graphs is None:
            graphs = device.type == "cuda"
        graphs = bool(graphs) and device.type == "cuda"
        return cls(device, bool(channels_last), compile_, graphs, report,
                   reuse_programs=graphs)

    @classmethod
    def for_copies(cls, cfg, device: torch.device, count: int, report=None) -> "FastPath":
        """The engine of `count` packed copies (one train program and a few evaluators per
        copy kept), with the backends configured."""
        engine = cls.from_config(cfg, device, report)
        engine.max_programs, engine.max_evaluators = count, 2 * count + 4
        engine.configure_backends()
        return engine

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

    def wants_compile(self, steps: int | None) -> bool:
        """compile: true, or auto on CUDA for a phase of at least COMPILE_MIN_STEPS steps."""
        if self.compile is None:
            return steps is not None and steps >= COMPILE_MIN_STEPS
        return bool(self.compile)

    def forward_of(self, model: nn.Module, compile: bool = True, steps: int | None = None):
        """The callable that computes `model`'s logits on a batch: the model itself, or its
        compiled version (created on first use and cached for the model object).  Pass
        `compile=False` for short-lived models (per-epoch evaluation copies): compiling those
        would recompile every epoch.  `steps`: the phase length, for compile: auto."""
        cached = self._compiled.get(id(model))
        if cached is not None and cached[0] is model and id(model) not in self._compile_failed:
            return cached[1]
        compile = (compile and self.wants_compile(steps)
                   and id(model) not in self._compile_failed)
        if not compile and not self.channels_last:
            return model
        if not compile:                  # one wrapper per model: programs key on it
            wrapper = self._plain.get(id(model))
            if wrapper is None or wrapper[0] is not model:
                wrapper = (model, lambda images: model(self.input(images)))
                self._plain[id(model)] = wrapper
            return wrapper[1]
        run = torch.compile(model, dynamic=False)
        if self.channels_last:
            def forward(images, _run=run):
                return _run(self.input(images))
        else:
            forward = run
        self._compiled[id(model)] = (model, forward)
        return forward

    def compile_failed(self, model: nn.Module, exc: BaseException) -> None:
        """Stop compiling `model` (its compiled forward raised `exc` while compiling)."""
        self._compile_failed.add(id(model))
        self._compiled.pop(id(model), None)
        self._say(f"warning: torch.compile failed ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); this model runs "
                  f"without compile")

    def _say(self, line: str) -> None:
        if self.report is not None:
            self.report(line)

    # ------------------------------------------------------------------ training

    def train_program(self, model: nn.Module, optimizer: OptimizerSpec, lr: float, *,
                      autocast_dtype=None, label_smoothing: float = 0.0,
                      extra_loss=None, hooks: InStepHooks = NO_HOOKS,
                      steps: int | None = None, capturable_hooks: bool = True
                      ) -> TrainProgram:
        """The training step for a phase of `model`.  With `reuse_programs` (on with CUDA
        graphs), a program of an earlier phase with the same model, optimizer, trainable
        parameters, loss and hooks is reused with its optimizer state reset in place (its
        CUDA graph stays valid; the next step equals a fresh optimizer's first step);
        otherwise a new optimizer and step are built, as the plain loop does.
        `capturable_hooks=False` keeps the step eager (hooks that synchronise)."""
        self.prepare_model(model)
        forward = self.forward_of(model, steps=steps)
        params = tuple(p for p in model.parameters() if p.requires_grad)
        key = (optimizer, tuple(id(p) for p in params), autocast_dtype, label_smoothing,
               extra_loss, hooks, id(forward))
        cached = self._programs.get(id(model))
        if self.reuse_programs and cached is not None and cached.model is model \
                and cached.key == key:
            self._programs.move_to_end(id(model))
            reset_optimizer_state(cached.optimizer)
            set_lr(cached.optimizer, lr)
            return cached
        if cached is not None:
            self._drop_program(id(model))
        graphs = self.cuda_graphs and capturable_hooks
        opt = optimizer.build(params, lr, capturable=graphs)
        step = TrainStep(model, opt, self.device, forward, autocast_dtype, label_smoothing,
                         extra_loss, hooks, autocast_cache=not graphs)
        runner = _CompileGuard(step, model, self) if forward is not model else step
        if graphs:
            runner = CapturedStep(runner, warmup=WARMUP_STEPS, report=self.report,
                                  name="training step")
        program = TrainProgram(model, key, opt, step, runner)
        self._programs[id(model)] = program
        while len(self._programs) > self.max_programs:
            self._drop_program(next(iter(self._programs)))
        return program

    def _drop_program(self, key) -> None:
        program = self._programs.pop(key, None)
        if program is not None:
            program.release()

    # ------------------------------------------------------------------ evaluation

    def evaluator(self, model: nn.Module, autocast_dtype=None, transient: bool = False):
        """(runner, module to put in eval mode) evaluating `model`.  A `transient` model (a
        per-epoch copy) is evaluated through a persistent shadow copy of the same structure
        whose values are loaded from it, so its recorded graph is reused every epoch."""
        target = model
        if transient:
            target = self._shadow_of(model) if self.cuda_graphs else None
            if target is None:          # no graph for a one-off copy: the plain step
                return EvalStep(model, self.device, self.forward_of(model, compile=False),
                                autocast_dtype), model
        cached = self._evaluators.get(id(target))
        if cached is not None and cached[0] is target and cached[1] == autocast_dtype:
            self._evaluators.move_to_end(id(target))
            return cached[2], target
        forward = self.forward_of(target, compile=not transient)
        step = EvalStep(target, self.device, forward, autocast_dtype,
                        autocast_cache=not self.cuda_graphs)
        runner = _CompileGuard(step, target, self) if forward is not target else step
        if self.cuda_graphs:
            runner = CapturedStep(runner, warmup=1, report=self.report, name="evaluation")
        self._evaluators[id(target)] = (target, autocast_dtype, runner)
        while len(self._evaluators) > self.max_evaluators:
            self._evaluators.popitem(last=False)
        return runner, target

    def _shadow_of(self, model: nn.Module) -> nn.Module | None:
        """A persistent module with `model`'s structure, holding `model`'s current values
        (None when `model` cannot be shadowed: a layer has a score function)."""
        signature = _signature(model)
        if signature is None:
            return None
        shadow = self._shadows.get(signature)
        if shadow is None:
            shadow = copy.deepcopy(model)
            self.prepare_model(shadow)
            self._shadows.clear()       # one structure at a time is enough
            self._shadows[signature] = shadow
        else:
            with torch.no_grad():
                shadow.load_state_dict(model.state_dict())
        return shadow


class _CompileGuard:
    """Runs a step whose forward is compiled.  torch.compile compiles on the first call with
    a new input shape; if that raises a compile error, the model switches to its plain
    forward and the batch is rerun from the same state (the BatchNorm statistics the failed
    attempt may have updated are restored first)."""

    def __init__(self, step, model, engine: FastPath):
        self.step, self.model, self.engine = step, model, engine
        self.device = step.device
        self.optimizer = getattr(step, "optimizer", None)
        self._compiled_shapes: set = set()

    def reset_sums(self):
        self.step.reset_sums()

    def sums(self):
        return self.step.sums()

    def __call__(self, images, labels) -> None:
        shape = (tuple(images.shape), self.model.training, torch.is_grad_enabled())
        if self.step.forward is self.model or shape in self._compiled_shapes:
            return self.step(images, labels)
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        try:
            self.step(images, labels)
        except Exception as exc:
            if not is_compile_error(exc):
                raise
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])
            self.engine.compile_failed(self.model, exc)
            self.step.forward = self.engine.forward_of(self.model, compile=False)
            return self.step(images, labels)
        self._compiled_shapes.add(shape)


def _signature(model: nn.Module):
    """What a shadow copy must share with `model`: class, tensor names/shapes/dtypes, and no
    score function on any layer (None when the model cannot be shadowed)."""
    for module in model.modules():
        if getattr(module, "score_fn", None) is not None:
            return None
    tensors = tuple((name, tuple(t.shape), t.dtype)
                    for name, t in model.state_dict().items())
    return (type(model).__name__, tensors)
