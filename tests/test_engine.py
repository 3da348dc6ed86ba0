"""The training engine (issue 12): one step function for the eager and the captured path.

- the step of every algorithm is the plain loop's computation: on CPU the new `TrainStep` with
  in-step hooks gives bit-identical weights to the loop the project ran before (reproduced
  here with after-step hooks), for plain training, Gem-Miner, edge-popup and gradual pruning;
- everything inside a step (forward, loss, regulariser, in-step hooks, evaluation) runs
  without reading a value back to the host, the condition for recording it as a CUDA graph
  (checked by intercepting every operation; CUDA itself is checked by bench/graph_check.py);
- `CapturedStep`'s bookkeeping (eager warm-up steps, one recording, replays over static
  buffers, a short last batch run eagerly, a failed recording falling back) gives the eager
  results when its "graph" replays exactly the recorded step;
- a reused program (IMP levels replaying one graph) resets its optimizer state in place to
  exactly what a fresh optimizer would start from.
"""
from __future__ import annotations

import contextlib
import csv
import os
import types

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import main
from models import architecture
from models.layers import LayerFactory
from models.masks import apply_masks_to_weights, keep_top, prunable_layers, set_masks
from pruners.search.gem_miner import REGULARISERS, regulariser
from pruners.search.scores import (TopScoreSelector, _top_by_rank, clamp_scores_, quantized_score_fn,
                                   straight_through, train_scores_only)
from tests.conftest import write_config
from utils.fast import FastPath
from utils.graphs import CapturedStep
from utils.schedules import OptimizerSpec, load_optimizer_state, reset_optimizer_state, set_lr
from utils.step import EvalStep, InStepHooks, TrainStep

aten = torch.ops.aten


def _lenet(seed=0, scores=False):
    torch.manual_seed(seed)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    if scores:
        for layer in prunable_layers(model).values():
            layer.enable_scores()
            torch.nn.init.uniform_(layer.scores)
    return model


def _batches(count=6, batch=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,),
                                                                    generator=g))
            for _ in range(count)]


def _plain_loop(model, optimizer, batches, extra_loss=None, after_step=None):
    """The project's loop before the engine: forward, loss, backward, step, then the
    algorithm's per-step work as a host hook; returns the summed loss × batch size."""
    total = torch.zeros(())
    for step, (x, y) in enumerate(batches, 1):
        loss = F.cross_entropy(model(x), y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step)
        total += loss.detach().float() * y.shape[0]
    return total


def _engine_loop(model, optimizer, batches, extra_loss=None, hooks=InStepHooks(),
                 after_step=None):
    step_fn = TrainStep(model, optimizer, "cpu", extra_loss=extra_loss, hooks=hooks)
    for step, (x, y) in enumerate(batches, 1):
        step_fn(x, y)
        if after_step is not None:
            after_step(step)
    return step_fn


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))


# ------------------------------------------------------------------ same computation


def test_plain_training_step_is_the_old_loop_bitwise():
    a, b = _lenet(), _lenet()
    spec = OptimizerSpec("sgd", 0.9, 5e-4, nesterov=True)
    total = _plain_loop(a, spec.build(a.parameters(), 0.05), _batches())
    step = _engine_loop(b, spec.build(b.parameters(), 0.05), _batches())
    assert _same_weights(a, b)
    assert torch.equal(step.sums()[0], total)    # the loss summed on the device


@pytest.mark.parametrize("kind", REGULARISERS)
def test_gem_miner_step_is_the_old_loop_bitwise(kind):
    models = []
    for _ in range(2):
        model = _lenet(scores=True)
        train_scores_only(model)
        for layer in prunable_layers(model).values():
            layer.score_fn = quantized_score_fn(0.5)
        models.append(model)
    a, b = models
    spec = OptimizerSpec("sgd", 0.9, 0.0)

    def penalty(model):
        return 1e-3 * regulariser(model, kind, 1.0, 1.0)
    _plain_loop(a, spec.build(a.parameters(), 0.1), _batches(), penalty,
                after_step=lambda step: clamp_scores_(a))
    _engine_loop(b, spec.build(b.parameters(), 0.1), _batches(), penalty,
                 hooks=InStepHooks(after_update=(lambda: clamp_scores_(b),)))
    assert _same_weights(a, b)
    scores = torch.cat([layer.scores.detach().flatten()
                        for layer in prunable_layers(b).values()])
    assert 0.0 <= float(scores.min()) and float(scores.max()) <= 1.0


def test_capturable_bin_entropy_equals_the_selecting_one():
    model = _lenet(scores=True)
    with torch.no_grad():                         # scores on the borders are excluded
        layer = next(iter(prunable_layers(model).values()))
        layer.scores.view(-1)[:50] = 0.0
        layer.scores.view(-1)[50:100] = 1.0
    exact = regulariser(model, "bin_entropy").double()
    masked = regulariser(model, "bin_entropy", capturable=True).double()
    # the same terms summed in another order: float32 rounding of a sum of ~5e4 terms
    assert masked.item() == pytest.approx(exact.item(), rel=1e-5)
    grads = []
    for capturable in (False, True):
        model.zero_grad()
        regulariser(model, "bin_entropy", capturable=capturable).backward()
        grads.append(torch.cat([layer.scores.grad.flatten()
                                for layer in prunable_layers(model).values()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=0)   # elementwise: same terms


@pytest.mark.parametrize("scope", ["layer", "global", "global_iter"])
def test_edge_popup_step_is_the_old_top_k_loop_bitwise(scope):
    a, b = _lenet(scores=True), _lenet(scores=True)
    sizes = {n: layer.weight.numel() for n, layer in prunable_layers(a).items()}
    total = sum(sizes.values())
    keep = ({n: s // 3 for n, s in sizes.items()} if scope == "layer" else
            (lambda active: min(total // 4, active)) if scope == "global" else
            (lambda active: active * 3 // 4))
    for model in (a, b):
        train_scores_only(model)

    def old_score_fn(model, name):                # the masks of the current scores, per call
        def fn(scores):
            layers = prunable_layers(model)
            flags = {n: l.mask for n, l in layers.items()}
            mags = {n: l.scores.detach().abs() for n, l in layers.items()}
            if callable(keep):
                active = sum(int(f.count_nonzero()) for f in flags.values())
                masks = keep_top(mags, flags, keep(active))
            else:
                masks = keep_top({name: mags[name]}, {name: flags[name]},
                                 min(keep[name], int(flags[name].count_nonzero())))
            return straight_through(scores.abs(), masks[name].to(scores.dtype))
        return fn
    for name, layer in prunable_layers(a).items():
        layer.score_fn = old_score_fn(a, name)
    selector = TopScoreSelector(b, keep)
    for name, layer in prunable_layers(b).items():
        layer.score_fn = selector.score_fn(name)
    spec = OptimizerSpec("sgd", 0.9, 5e-4)
    _plain_loop(a, spec.build(a.parameters(), 0.1), _batches())
    _engine_loop(b, spec.build(b.parameters(), 0.1), _batches(),
                 hooks=InStepHooks(before_forward=(selector.update,)))
    assert _same_weights(a, b)
    if scope == "global_iter":                    # flags follow the mask; counts refresh
        from pruners.search.scores import set_flags
        set_flags(b, selector.masks())
        selector.refresh()
        active = sum(int(l.mask.count_nonzero()) for l in prunable_layers(b).values())
        assert int(selector.counts["*"]) == active * 3 // 4


def test_top_k_by_rank_equals_keep_top_with_ties_and_flags():
    torch.manual_seed(3)
    model = _lenet(scores=True)
    layers = prunable_layers(model)
    with torch.no_grad():
        for layer in layers.values():            # many exact ties and some cleared flags
            layer.scores.copy_(torch.randint(0, 5, layer.scores.shape).float() / 4)
            layer.mask.copy_((torch.rand_like(layer.mask) < 0.7).float())
    mags = {n: l.scores.abs() for n, l in layers.items()}
    flags = {n: l.mask for n, l in layers.items()}
    active = sum(int(f.count_nonzero()) for f in flags.values())
    for keep in (0, 1, active // 3, active):
        expected = keep_top(mags, flags, keep)
        got = _top_by_rank(layers, torch.tensor(keep))
        assert all(torch.equal(expected[n], got[n]) for n in layers), keep


def test_gradual_in_step_masking_is_the_old_after_step_masking_bitwise():
    a, b = _lenet(), _lenet()
    spec = OptimizerSpec("sgd", 0.9, 5e-4)       # momentum + weight decay would revive
    prune_at, first = 3, 3                       # pruned weights without the masking

    def prune(model):
        layers = prunable_layers(model)
        torch.manual_seed(7)
        set_masks(model, {n: (torch.rand_like(l.mask) < 0.4).float() * l.mask
                          for n, l in layers.items()})

    def old_after(step):
        if step == prune_at:
            prune(a)
        if step >= first:
            for layer in prunable_layers(a).values():
                layer.apply_mask_to_weight()
    _plain_loop(a, spec.build(a.parameters(), 0.05), _batches(), after_step=old_after)
    layers_b = prunable_layers(b)
    _engine_loop(b, spec.build(b.parameters(), 0.05), _batches(),
                 hooks=InStepHooks(after_update=(lambda: apply_masks_to_weights(layers_b),)),
                 after_step=lambda step: prune(b) if step == prune_at else None)
    assert _same_weights(a, b)
    for layer in layers_b.values():
        assert torch.equal(layer.weight * (1 - layer.mask), torch.zeros_like(layer.weight))


# ------------------------------------------------------------------ capturable


class HostSync(AssertionError):
    pass


class NoHostSync(TorchDispatchMode):
    """Fails on any operation that reads a tensor value back to the host or whose output
    size depends on tensor values — what a CUDA graph cannot record."""

    FORBIDDEN = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.unique_dim,
                 aten._unique2, aten.unique_consecutive, aten.repeat_interleave,
                 aten.masked_scatter}

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in self.FORBIDDEN:
            raise HostSync(f"{func} reads a value back to the host")
        if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_):
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                   for i in indices):
                raise HostSync(f"{func} with a boolean mask (data-dependent size)")
        return func(*args, **(kwargs or {}))


def test_the_sync_check_catches_what_a_graph_cannot_record():
    x = torch.randn(10)
    with pytest.raises(HostSync), NoHostSync():
        x.sum().item()
    with pytest.raises(HostSync), NoHostSync():
        _ = x[x > 0]
    model = _lenet(scores=True)
    with pytest.raises(HostSync), NoHostSync():   # the plain bin_entropy selects entries
        regulariser(model, "bin_entropy")


def _step_kinds():
    """(name, model, extra_loss, hooks) for every kind of step the algorithms run."""
    kinds = []
    kinds.append(("training", _lenet(), None, InStepHooks()))
    for reg in REGULARISERS:
        model = _lenet(scores=True)
        train_scores_only(model)
        for layer in prunable_layers(model).values():
            layer.score_fn = quantized_score_fn(0.5)
        kinds.append((f"gem_miner {reg}", model,
                      (lambda m, _r=reg: regulariser(m, _r, capturable=True)),
                      InStepHooks(after_update=(lambda _m=model: clamp_scores_(_m),))))
    for keep_name in ("layer", "global"):
        model = _lenet(scores=True)
        train_scores_only(model)
        sizes = {n: l.weight.numel() for n, l in prunable_layers(model).items()}
        keep = ({n: s // 2 for n, s in sizes.items()} if keep_name == "layer"
                else (lambda active: active // 2))
        selector = TopScoreSelector(model, keep)
        for name, layer in prunable_layers(model).items():
            layer.score_fn = selector.score_fn(name)
        kinds.append((f"edge_popup {keep_name}", model, None,
                      InStepHooks(before_forward=(selector.update,))))
    model = _lenet()
    layers = prunable_layers(model)
    kinds.append(("gradual / early_bird", model, None,
                  InStepHooks(after_update=(lambda _l=layers: apply_masks_to_weights(_l),))))
    return kinds


@pytest.mark.parametrize("index", range(len(REGULARISERS) + 4))
def test_every_in_step_computation_runs_without_host_synchronisation(index):
    name, model, extra, hooks = _step_kinds()[index]
    optimizer = OptimizerSpec("sgd", 0.9, 5e-4).build(model.parameters(), 0.05)
    step = TrainStep(model, optimizer, "cpu", extra_loss=extra, hooks=hooks)
    (x, y), = _batches(1)
    step(x, y)                                   # lazy state (momentum buffers) created
    with NoHostSync():
        step(x, y)
        evaluation = EvalStep(model, "cpu")
        model.eval()
        evaluation(x, y)
    assert step.sums()[1].item() >= 0, name


# ------------------------------------------------------------------ captured bookkeeping


class SimulatedCapture(CapturedStep):
    """CapturedStep on CPU with a stand-in graph: recording leaves every tensor as it was
    (a real capture executes nothing), and a replay runs the recorded step on the static
    buffers — what a correct CUDA graph replay does."""

    fail_with: Exception | None = None

    @contextlib.contextmanager
    def _side_stream(self):
        yield

    def _new_graph(self):
        return types.SimpleNamespace(replay=lambda: self.step(*self.static))

    @contextlib.contextmanager
    def _recording(self, graph):
        state = _snapshot(self.step)
        try:
            yield
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            _restore(self.step, state)

    def _synchronize(self):
        pass


def _snapshot(step):
    tensors = list(step.model.parameters()) + list(step.model.buffers()) + list(step.sums())
    optimizer = getattr(step, "optimizer", None)
    for state in (optimizer.state.values() if optimizer is not None else ()):
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return [(t, t.detach().clone()) for t in tensors]


def _restore(step, state):
    with torch.no_grad():
        for tensor, saved in state:
            tensor.copy_(saved)


@pytest.mark.parametrize("fail", [False, True])
def test_captured_step_bookkeeping_gives_the_eager_results(fail):
    batches = _batches(7) + _batches(1, batch=5, seed=9)    # a short last batch
    spec = OptimizerSpec("sgd", 0.9, 5e-4)
    a, b = _lenet(), _lenet()
    eager = TrainStep(a, spec.build(a.parameters(), 0.05), "cpu")
    inner = TrainStep(b, spec.build(b.parameters(), 0.05), "cpu")
    said = []
    captured = SimulatedCapture(inner, warmup=2, report=said.append)
    if fail:
        captured.fail_with = RuntimeError("operation not permitted when stream is capturing")
    for x, y in batches:
        eager(x, y)
        captured(x, y)
    assert _same_weights(a, b)
    assert [t.item() for t in eager.sums()] == [t.item() for t in captured.sums()]
    if fail:
        assert captured.graph is None and captured.replays == 0
        assert captured.eager_calls == len(batches)
        assert len(said) == 1 and "capture of the step failed" in said[0]
    else:
        # 2 warm-up steps, then a recording replayed for the 5 full batches; the short
        # batch does not fit the static buffers and runs eagerly
        assert (captured.eager_calls, captured.replays) == (3, 5) and said == []


# ------------------------------------------------------------------ program reuse


@pytest.mark.parametrize("spec", [OptimizerSpec("sgd", 0.9, 5e-4),
                                  OptimizerSpec("sgd", 0.9, 1e-4, nesterov=True),
                                  OptimizerSpec("adam", 0.0, 1e-4),
                                  OptimizerSpec("adamw", 0.0, 1e-2)],
                         ids=["sgd", "nesterov", "adam", "adamw"])
def test_reset_optimizer_state_equals_a_fresh_optimizer(spec):
    a, b = _lenet(), _lenet()
    first, second = _batches(3, seed=1), _batches(3, seed=2)
    opt_a, opt_b = spec.build(a.parameters(), 0.01), spec.build(b.parameters(), 0.01)
    _plain_loop(a, opt_a, first)
    _plain_loop(b, opt_b, first)
    reset_optimizer_state(opt_a)                 # the reused program's optimizer
    set_lr(opt_a, 0.02)
    _plain_loop(a, opt_a, second)
    _plain_loop(b, spec.build(b.parameters(), 0.02), second)   # a fresh optimizer
    assert _same_weights(a, b)


def test_load_optimizer_state_keeps_the_execution_choices():
    model = _lenet()
    source = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.3), momentum=0.9,
                             foreach=False)      # e.g. saved by another engine
    _plain_loop(model, source, _batches(1))
    target = OptimizerSpec("sgd", 0.9, 0.0).build(model.parameters(), 0.01)
    load_optimizer_state(target, source.state_dict())
    group = target.param_groups[0]
    assert group["foreach"] is True and isinstance(group["lr"], float)
    assert group["lr"] == pytest.approx(0.3)
    first = next(model.parameters())
    assert torch.equal(target.state[first]["momentum_buffer"],
                       source.state[first]["momentum_buffer"])


IMP_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
prune_rate: 0.2
target_sparsity: 64
imp_rewind_iter: 3
batch_size: 64
optimizer: sgd
lr: 0.05
momentum: 0.9
seed: 2
name: reuse
"""


def test_imp_levels_reuse_one_program_with_identical_results(tmp_path, monkeypatch):
    """With CUDA graphs every IMP level replays one recorded step (masks and rewound
    weights are copied into the tensors it reads); on CPU the same reuse is forced here and
    must give the results of a fresh optimizer per level, bit for bit."""
    config = write_config(tmp_path / "imp.yml", IMP_CONFIG)
    assert main.main(["--config", str(config), "--log-dir", str(tmp_path / "fresh"),
                      "--quiet"]) == 0
    programs = []
    real_from_config, real_program = FastPath.from_config, FastPath.train_program

    def reusing(*args, **kwargs):
        engine = real_from_config(*args, **kwargs)
        engine.reuse_programs = True
        return engine

    def spy(self, model, *args, **kwargs):
        program = real_program(self, model, *args, **kwargs)
        programs.append(program)
        return program
    monkeypatch.setattr(FastPath, "from_config", staticmethod(reusing))
    monkeypatch.setattr(FastPath, "train_program", spy)
    assert main.main(["--config", str(config), "--log-dir", str(tmp_path / "reused"),
                      "--quiet"]) == 0
    assert len(programs) == 3 and programs[0] is programs[1] is programs[2]
    (fresh,), (reused,) = (list((tmp_path / d).iterdir()) for d in ("fresh", "reused"))
    for table in ("levels.csv", "metrics.csv"):
        rows = [[{k: v for k, v in r.items() if k != "seconds"}
                 for r in csv.DictReader(open(os.path.join(d, table)))]
                for d in (fresh, reused)]
        assert rows[0] == rows[1], table
    finals = [torch.load(os.path.join(d, "checkpoints", "final.pt"), weights_only=True)["model"]
              for d in (fresh, reused)]
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_engine_reuses_one_forward_wrapper_and_one_shadow_per_structure():
    engine = FastPath(torch.device("cpu"), channels_last=True)
    model = _lenet()
    assert engine.forward_of(model) is engine.forward_of(model)   # programs key on it
    first, second = _lenet(1), _lenet(2)            # per-epoch evaluation copies
    shadow = engine._shadow_of(first)
    assert shadow is not first
    assert engine._shadow_of(second) is shadow       # one recorded graph serves every copy
    assert _same_weights(shadow, second)             # ... holding the copy's values
    scored = _lenet(scores=True)
    for layer in prunable_layers(scored).values():
        layer.score_fn = quantized_score_fn(0.5)
    assert engine._shadow_of(scored) is None         # score functions: evaluated as it is


def test_a_compile_error_falls_back_to_the_plain_forward_in_training_and_evaluation(
        monkeypatch):
    """With graphs on, a forward whose compilation fails (here on its first call) is replaced
    by the plain forward and the batch rerun — in evaluation too — with one warning each."""
    import utils.fast

    class BackendCompilerFailed(RuntimeError):      # the name torch._dynamo raises with
        pass

    def failing_compile(model, dynamic=False):
        def forward(images):
            raise BackendCompilerFailed("no C++ compiler")
        return forward

    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr(utils.fast, "CapturedStep", SimulatedCapture)
    said = []
    engine = FastPath(torch.device("cpu"), compile=True, cuda_graphs=True,
                      reuse_programs=True, report=said.append)
    model, reference = _lenet(), _lenet()
    runner, target = engine.evaluator(model)
    assert isinstance(runner, SimulatedCapture)
    target.eval()
    reference.eval()
    plain = EvalStep(reference, "cpu")
    for x, y in _batches(4):
        runner(x, y)
        plain(x, y)
    assert [t.item() for t in runner.sums()] == [t.item() for t in plain.sums()]
    assert len(said) == 1 and "torch.compile failed (BackendCompilerFailed" in said[0]

    spec = OptimizerSpec("sgd", 0.9, 5e-4)
    a, b = _lenet(), _lenet()
    program = engine.train_program(a, spec, 0.05)
    eager = TrainStep(b, spec.build(b.parameters(), 0.05), "cpu")
    for x, y in _batches(5):
        program(x, y)
        eager(x, y)
    assert _same_weights(a, b) and program.captured
    assert len(said) == 2 and "torch.compile failed" in said[1]
