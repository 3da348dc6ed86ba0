"""CUDA-graph semantics checked on the CPU: whole runs whose steps are recorded once and
replayed as a tape of ATen calls equal the same runs stepping eagerly, bit for bit.

A CUDA graph replays the kernels its recording launched, on the same memory, without running
any Python again.  `TapeGraph` does exactly that on the CPU: the recording executes the step
once under a dispatch mode that keeps every ATen call (forward, backward, optimizer, hooks)
with its tensor arguments and results; a replay calls those ops again on the same tensors and
writes each result into the tensor the recording produced, so later ops read it — and no
Python of the step runs.  Anything an algorithm does per step in Python (a counter, a value
read back, a tensor re-created or re-bound instead of updated in place, a learning rate that
is a Python number) is frozen in the tape, and the run then departs from the eager one.

The engine runs as it does on CUDA (`cuda_graphs` on, programs reused across phases,
capturable hooks, fused optimizers with the learning rate as a tensor: the CPU has the same
fused kernels), with `TapeCapture` in place of the CUDA calls; the reference is the same
engine with a capture that never records.  Both run the same ATen ops in the same order on
the same machine, so equality is bitwise.
"""
from __future__ import annotations

import contextlib
import csv
import json
import typing

import pytest
import torch
from conftest import only_run_dir, run_in_process
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import utils.fast
import utils.graphs
import utils.schedules
from utils.checkpoint import load_checkpoint
from utils.graphs import CapturedStep


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: list):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


def _storages(tree) -> set:
    return {t.untyped_storage().data_ptr() for t in tree_flatten(tree)[0]
            if isinstance(t, torch.Tensor)}


class TapeGraph:
    """A recorded step as a tape of ATen calls (see the module docstring)."""

    def __init__(self):
        self.ops: list = []
        self.skip_next = False

    @contextlib.contextmanager
    def recording(self):
        with _Recorder(self.ops):
            yield
        # the recording executed the step (a CUDA capture does not): the replay that
        # CapturedStep issues right after recording is that step
        self.skip_next = True

    @torch.no_grad()
    def replay(self) -> None:
        if self.skip_next:
            self.skip_next = False
            return
        for func, args, kwargs, out in self.ops:
            fresh = func(*args, **kwargs)
            inputs = _storages((args, kwargs))
            for old, new in zip(tree_flatten(out)[0], tree_flatten(fresh)[0]):
                # a view of an input (or the input itself: in-place ops) already holds the
                # result; a new tensor's result goes where the recording's output lives
                if isinstance(old, torch.Tensor) and \
                        old.untyped_storage().data_ptr() not in inputs:
                    old.copy_(new)


class TapeCapture(CapturedStep):
    """CapturedStep with the tape instead of the CUDA calls."""

    tapes: typing.ClassVar[list] = []      # every TapeGraph made (the test reads them)

    @contextlib.contextmanager
    def _side_stream(self):
        yield

    def _new_graph(self):
        graph = TapeGraph()
        TapeCapture.tapes.append(graph)
        return graph

    def _recording(self, graph):
        return graph.recording()

    def _synchronize(self):
        pass


class NeverRecords(CapturedStep):
    """The reference: the same step objects, always run eagerly."""

    def __call__(self, images, labels):
        self._eager(images, labels)


def _engine_as_on_cuda(monkeypatch, capture_class) -> None:
    original = utils.fast.FastPath.from_config.__func__

    def from_config(cls, cfg, device, report=None):
        engine = original(cls, cfg, device, report)
        engine.cuda_graphs = engine.reuse_programs = True
        return engine

    monkeypatch.setattr(utils.fast.FastPath, "from_config", classmethod(from_config))
    monkeypatch.setattr(utils.fast, "CapturedStep", capture_class)
    monkeypatch.setattr(utils.graphs, "CapturedStep", capture_class)    # the vmap packing's
    monkeypatch.setattr(utils.schedules, "fused_kernels_for", lambda params: bool(params))


BASE = """
arch: lenet_300_100
dataset: digits
batch_size: 64
seed: 3
"""
RUNS = {
    "training": "algo: training\nepochs: 2\noptimizer: sgd\nlr: 0.05\nlr_policy: cosine_lr\n"
                "momentum: 0.9\nwd: 0.0005\n",
    # rewind point inside level 0 (a host-side hook between replays), levels reuse the program
    "imp_wr": "algo: imp_wr\niter_period: 2\nimp_rounds: 3\nprune_rate: 0.5\n"
              "imp_rewind_iter: 25\noptimizer: sgd\nlr: 0.05\nlr_policy: cosine_lr\n"
              "momentum: 0.9\nimp_controls: [reinit]\n",
    # Gem-Miner: quantised forward, score clamping, a regulariser, pruning between epochs,
    # then fine-tuning and the sanity checks (Adam: capturable step counts)
    "hc_iter": "algo: hc_iter\nepochs: 3\niter_period: 1\ntarget_sparsity: 20\n"
               "optimizer: adam\nlr: 0.01\nlr_policy: cosine_lr\nregularization: L2\n"
               "lmbda: 0.0001\nscore_init: unif\nfine_tune_optimizer: sgd\n"
               "fine_tune_lr: 0.05\n",
    # edge-popup: the top-k masks recomputed on the device before every forward
    "global_ep": "algo: global_ep\nepochs: 2\nprune_rate: 0.3\noptimizer: sgd\nlr: 0.1\n"
                 "lr_policy: cosine_lr\nmomentum: 0.9\nskip_sanity_checks: true\n",
    # gradual magnitude pruning: pruning events between replays, re-masking in the step
    "gradual": "algo: gradual\nepochs: 3\ntarget_sparsity: 20\nprune_start_epoch: 0\n"
               "prune_end_epoch: 2\nprune_every_steps: 10\noptimizer: sgd\nlr: 0.05\n"
               "momentum: 0.9\n",
    # early-bird: masks drawn between epochs, then sparse training in the same program
    "early_bird": "algo: early_bird\nepochs: 4\ntarget_sparsity: 30\neb_window: 1\n"
                  "eb_epsilon: 0.9\noptimizer: sgd\nlr: 0.05\nmomentum: 0.9\n",
    # pruning at init, then the ticket and a control trained
    "snip": "algo: snip\nepochs: 2\ntarget_sparsity: 10\nat_init_controls: [shuffle_mask]\n"
            "optimizer: sgd\nlr: 0.05\nmomentum: 0.9\n",
    # Gem-Miner with bin_entropy: its capturable (masking) form runs inside the recording
    "hc_bin_entropy": "algo: hc_iter\nepochs: 3\niter_period: 1\ntarget_sparsity: 30\n"
                      "optimizer: sgd\nlr: 0.1\nmomentum: 0.9\nregularization: bin_entropy\n"
                      "lmbda: 0.0001\nscore_init: unif\nskip_sanity_checks: true\n",
    # edge-popup per layer, and global with an iterative schedule
    "ep": "algo: ep\nepochs: 2\nprune_rate: 0.5\noptimizer: sgd\nlr: 0.1\nmomentum: 0.9\n"
          "skip_sanity_checks: true\n",
    "global_ep_iter": "algo: global_ep_iter\nepochs: 3\niter_period: 1\nprune_rate: 0.3\n"
                      "optimizer: sgd\nlr: 0.1\nmomentum: 0.9\nskip_sanity_checks: true\n",
    # learning-rate rewinding: each level restarts the schedule in the reused program
    "imp_lrr": "algo: imp_lrr\niter_period: 2\nimp_rounds: 2\nprune_rate: 0.5\n"
               "optimizer: sgd\nlr: 0.05\nlr_policy: cosine_lr\nmomentum: 0.9\n",
    # PrAC: per-example forgetting statistics counted inside the step, subset loaders
    "imp_prac": "algo: imp_wr\niter_period: 2\nimp_rounds: 2\nprune_rate: 0.5\n"
                "imp_rewind_iter: 0\ndata_subset: prac\noptimizer: sgd\nlr: 0.05\n"
                "momentum: 0.9\n",
}


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


def _run(tmp_path, monkeypatch, name: str, capture_class):
    with monkeypatch.context() as patch:
        _engine_as_on_cuda(patch, capture_class)
        rc, log_dir = run_in_process(tmp_path / capture_class.__name__, name,
                                     BASE + RUNS[name])
    assert rc == 0
    return only_run_dir(log_dir)


@pytest.mark.parametrize("name", list(RUNS))
def test_replayed_tapes_equal_eager_steps_bitwise(tmp_path, monkeypatch, name):
    TapeCapture.tapes = []
    taped = _run(tmp_path, monkeypatch, name, TapeCapture)
    recorded = list(TapeCapture.tapes)
    eager = _run(tmp_path, monkeypatch, name, NeverRecords)
    # the tapes were really replayed (not only recorded): every training and evaluation
    # program of the run was recorded once and replayed for its full batches
    assert recorded and all(len(t.ops) > 0 for t in recorded)
    log = (taped / "log.txt").read_text()
    assert "capture" not in log, log         # no recording fell back to eager
    assert _rows(taped) == _rows(eager)
    a = load_checkpoint(taped / "checkpoints" / "final.pt")["model"]
    b = load_checkpoint(eager / "checkpoints" / "final.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    summary = {k: v for k, v in json.loads((taped / "summary.json").read_text()).items()
               if "second" not in k and "wall" not in k and k not in ("provenance", "run_dir")}
    reference = {k: v for k, v in json.loads((eager / "summary.json").read_text()).items()
                 if k in summary}
    assert summary == reference


@pytest.mark.parametrize("name,packing", [("imp_wr", "streams"), ("snip", "streams"),
                                          ("imp_wr", "vmap")])
def test_packed_copies_replayed_from_tapes_equal_eager_copies(tmp_path, monkeypatch, name,
                                                              packing):
    """`replicates: 2`: stream packing (one recorded program per copy; here the copies take
    turns instead of running on two CUDA streams) and vmap packing (one recorded step for
    all copies)."""
    import utils.packed_streams

    monkeypatch.setattr(utils.packed_streams.StreamPack, "_make_streams", lambda self: None)
    dirs = {}
    TapeCapture.tapes = []
    for capture in (TapeCapture, NeverRecords):
        with monkeypatch.context() as patch:
            _engine_as_on_cuda(patch, capture)
            rc, log_dir = run_in_process(tmp_path / capture.__name__, name, BASE + RUNS[name],
                                         ["--replicates", "2", "--packing", packing])
        assert rc == 0
        dirs[capture] = sorted(p for p in log_dir.iterdir() if p.is_dir())
    assert len(dirs[TapeCapture]) == len(dirs[NeverRecords]) == 2
    assert len(TapeCapture.tapes) >= 2            # each copy's training step was recorded
    for taped, eager in zip(dirs[TapeCapture], dirs[NeverRecords]):
        assert taped.name == eager.name
        assert _rows(taped) == _rows(eager)
        a = load_checkpoint(taped / "checkpoints" / "final.pt")["model"]
        b = load_checkpoint(eager / "checkpoints" / "final.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_tape_catches_python_state_a_graph_would_freeze():
    """The check itself: a step whose learning rate is a Python number departs from the eager
    run once the learning rate changes (a CUDA graph would keep the recorded value)."""
    from utils.schedules import set_lr
    from utils.step import TrainStep

    def run(capture: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)   # float lr
        step = TrainStep(model, optimizer, "cpu")
        runner = TapeCapture(step, warmup=1) if capture else step
        g = torch.Generator().manual_seed(1)
        for i in range(6):
            set_lr(optimizer, 0.1 / (i + 1))
            runner(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))
        return model.weight.detach().clone()

    assert not torch.equal(run(True), run(False))
