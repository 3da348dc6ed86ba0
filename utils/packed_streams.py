"""Packed replicates as M separate models (`packing: streams`, the default).

Each copy keeps its own model, optimizer and step function (`utils.step.TrainStep`), so copy k
computes exactly what the single run of its seed computes — the same kernels on the same
values.  On CUDA each copy's step is recorded as its own CUDA graph (`utils.graphs`) and the
M graphs are replayed on M streams, so the small kernels of the copies run concurrently and
fill the GPU that one small network leaves mostly idle.  On CPU the copies simply take turns.

The interface matches `utils.packed.VmapPack` (the other packing): `train_epoch`, `evaluate`,
`unpack`, `set_lr`, `optimizer_states`, `load_optimizer_states`.
"""
from __future__ import annotations

import torch

from utils.schedules import load_optimizer_state, set_lr


class StreamPack:
    """M models of one architecture trained side by side (see the module docstring)."""

    def __init__(self, models: list, optimizer_spec, lr: float, engine, *,
                 autocast_dtype=None, label_smoothing: float = 0.0):
        self.models = models
        self.count = len(models)
        self.engine = engine
        self.device = engine.device
        self.autocast_dtype = autocast_dtype
        self.programs = [engine.train_program(model, optimizer_spec, lr,
                                              autocast_dtype=autocast_dtype,
                                              label_smoothing=label_smoothing)
                         for model in models]
        concurrent = engine.cuda_graphs and self.count > 1
        self.streams = self._make_streams() if concurrent else None

    def _make_streams(self) -> list | None:
        """One CUDA stream per copy (a test of the graph semantics on the CPU replaces this
        with None: the copies then take turns on the current stream)."""
        return [torch.cuda.Stream(self.device) for _ in self.models]

    # --------------------------------------------------------------- optimizer state

    def set_lr(self, lr: float) -> None:
        for program in self.programs:
            set_lr(program.optimizer, lr)

    def optimizer_states(self) -> list[dict]:
        return [program.optimizer.state_dict() for program in self.programs]

    def load_optimizer_states(self, states: list[dict]) -> None:
        for program, state in zip(self.programs, states):
            load_optimizer_state(program.optimizer, state)
            program.invalidate()

    def unpack(self) -> None:
        """Nothing to do: every copy trains in its own model."""

    # --------------------------------------------------------------- running

    def _fan_out(self, work) -> None:
        """Call `work(k)` for every copy: on its own stream (CUDA graphs), else in turn."""
        if self.streams is None:
            for k in range(self.count):
                work(k)
            return
        current = torch.cuda.current_stream(self.device)
        for k, stream in enumerate(self.streams):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                work(k)
        for stream in self.streams:
            current.wait_stream(stream)

    def _on(self, k: int, *tensors) -> None:
        """Tell the allocator that copy k's stream reads `tensors` (made on another stream)."""
        if self.streams is not None:
            for t in tensors:
                t.record_stream(self.streams[k])

    def train_epoch(self, loaders: list, *, after_step=None, start_step: int = 0) -> dict:
        """One epoch of every copy, copy k reading `loaders[k]`; per-copy mean loss and
        accuracy % (lists), the number of steps and the global step reached.  Copy k's batch
        is drawn on its own stream too, so the copies' data work overlaps as well."""
        for model, program in zip(self.models, self.programs):
            model.train()
            program.reset_sums()
        iterators = [iter(loader) for loader in loaders]
        seen = steps = 0
        while True:
            batches: list = [None] * self.count

            def work(k):
                batches[k] = next(iterators[k], None)
                if batches[k] is not None:
                    self.programs[k](*batches[k])
            self._fan_out(work)
            done = [b is None for b in batches]
            if any(done):
                if not all(done):
                    raise RuntimeError("packed copies' loaders have different lengths")
                break
            steps += 1
            if after_step is not None:
                after_step(start_step + steps)
            seen += batches[0][1].shape[0]
        if seen == 0:
            nan = [float("nan")] * self.count
            return {"loss": nan, "acc": nan, "steps": 0, "step": start_step}
        sums = _read_sums(self.programs)
        return {"loss": [loss / seen for loss, _ in sums],
                "acc": [100.0 * correct / seen for _, correct in sums], "steps": steps,
                "step": start_step + steps}

    @torch.no_grad()
    def evaluate(self, loader) -> dict:
        """Per-copy mean cross-entropy and accuracy % on one shared loader (NaN if empty)."""
        m = self.count
        if loader.num_images == 0:
            return {"loss": [float("nan")] * m, "acc": [float("nan")] * m}
        evaluators = []
        for model in self.models:
            runner, target = self.engine.evaluator(model, self.autocast_dtype)
            target.eval()
            runner.reset_sums()
            evaluators.append(runner)
        for images, labels in loader:
            def work(k, _images=images, _labels=labels):
                self._on(k, _images, _labels)
                evaluators[k](_images, _labels)
            self._fan_out(work)
        for model in self.models:
            model.train()
        n = loader.num_images
        sums = _read_sums(evaluators)
        return {"loss": [loss / n for loss, _ in sums],
                "acc": [100.0 * correct / n for _, correct in sums]}


def _read_sums(steps) -> list[list[float]]:
    """[loss sum, correct count] of every step's device sums, read in one transfer."""
    return torch.stack([torch.stack([t.double() for t in step.sums()])
                        for step in steps]).tolist()
