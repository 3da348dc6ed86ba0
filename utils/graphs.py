"""CUDA graphs: a step function (`utils.step.TrainStep` / `EvalStep`) recorded once and
replayed for every batch of the recorded shape.

At batch size 128 a ResNet-20 training step is a few hundred small kernels; launched one by one
from Python, the GPU mostly waits for the host.  A captured step is one graph launch.  The
graph reads its inputs from static buffers (each batch is copied in), the learning rate from a
device tensor (capturable optimizers, see `utils.schedules`), masks and weights from the
model's own tensors (updated in place between replays), and accumulates loss and accuracy on
the device.  Replaying it performs exactly the kernels the eager step would launch.

`CapturedStep` runs the first `warmup` calls eagerly on a side stream (they are real steps:
they create the optimizer state and let cuDNN choose its algorithms), records the graph on the
next call and replays it from then on.  Batches of another shape (a short last batch) run the
eager step.  If recording fails (an operation that cannot be captured), the step says why once
and stays eager: training goes on unchanged, only slower.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch


class CapturedStep:
    """Call it like the step it wraps; see the module docstring."""

    def __init__(self, step, *, warmup: int = 2, pool=None,
                 report: Callable[[str], None] | None = None, name: str = "step"):
        self.step = step
        self.device = step.device
        self.warmup_left = max(int(warmup), 1)
        self.pool = pool
        self.report = report
        self.name = name
        self.graph = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.failed: str | None = None
        self.replays = 0
        self.eager_calls = 0

    # the step's device-side sums (read by the loops)
    def reset_sums(self) -> None:
        self.step.reset_sums()

    def sums(self):
        return self.step.sums()

    def invalidate(self) -> None:
        """Forget the recorded graph (e.g. the optimizer state was replaced): the next calls
        warm up and record again."""
        self.graph, self.static = None, None
        self.warmup_left = 1

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if self.failed is not None:
            self._eager(images, labels)
        elif self.graph is not None:
            if self._fits(images, labels):
                self.static[0].copy_(images)
                self.static[1].copy_(labels)
                self.graph.replay()
                self.replays += 1
            else:
                self._eager(images, labels)
        elif self.warmup_left > 0:
            self._on_side_stream(images, labels)
            self.warmup_left -= 1
        else:
            self._record_and_replay(images, labels)

    def _fits(self, images, labels) -> bool:
        x, y = self.static
        return (images.shape == x.shape and labels.shape == y.shape
                and images.dtype == x.dtype and images.stride() == x.stride())

    def _eager(self, images, labels) -> None:
        self.eager_calls += 1
        self.step(images, labels)

    def _on_side_stream(self, images, labels) -> None:
        with self._side_stream():
            self.step(images, labels)
        self.eager_calls += 1

    def _record_and_replay(self, images, labels) -> None:
        static = (images.clone(memory_format=torch.preserve_format), labels.clone())
        optimizer = getattr(self.step, "optimizer", None)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        graph = self._new_graph()
        try:
            with self._recording(graph):
                self.step(*static)
        except Exception as exc:  # noqa: BLE001 (any capture failure: stay eager)
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if self.report is not None:
                self.report(f"warning: CUDA graph capture of the {self.name} failed "
                            f"({self.failed}); this phase runs eagerly")
            self._synchronize()
            self._eager(images, labels)
            return
        self.graph, self.static = graph, static
        graph.replay()
        self.replays += 1

    # the CUDA calls (a test replaces them to check the bookkeeping on CPU)

    @contextlib.contextmanager
    def _side_stream(self):
        """Run the enclosed work on a fresh stream ordered after the current one (the
        warm-up of a capture must not run on the stream it will be recorded from)."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            yield
        current.wait_stream(side)

    def _new_graph(self):
        return torch.cuda.CUDAGraph()

    def _recording(self, graph):
        # thread_local: only this thread's unsafe CUDA calls break the recording (a data
        # loader's pin-memory thread may allocate pinned memory meanwhile)
        return torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local")

    def _synchronize(self) -> None:
        torch.cuda.synchronize(self.device)
