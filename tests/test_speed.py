"""Fast-path options and packed replicates (issue 7).

Equivalence of packed replicates (CPU, fp32):
- end to end, LeNet-300-100 on digits, one epoch: copy k of `replicates: 2` writes the run
  directory of the config with seed + k, and its final weights and metrics equal those of that
  config run alone (observed bit-identical; asserted to 1e-6);
- a ResNet-20 with BatchNorm and per-copy masks, 3 SGD steps at lr 0.01: every weight,
  mask and BatchNorm statistic of copy k equals a separately trained copy to 1e-5 (the
  batched convolution's backward rounds differently from the plain one, so not bit-identical).
"""
from __future__ import annotations

import copy
import csv
import json
import os

import pytest
import torch
import torch.nn.functional as F

import main
from args_helper import resolve
from models import InputSpec, build_model
from utils.errors import ConfigError
from utils.fast import FastPath
from utils.packed import PackedModels, evaluate_packed
from utils.schedules import OptimizerSpec


def _cfg(*extra):
    return resolve(["--algo", "training", "--dataset", "digits", *extra])


# ----------------------------------------------------------------------------- options


def test_engine_defaults_are_off_on_cpu_and_on_for_cuda():
    cpu = FastPath.from_config(_cfg(), torch.device("cpu"))
    assert (cpu.channels_last, cpu.compile, cpu.cuda_graphs, cpu.reuse_programs) == \
        (False, False, False, False)
    cuda = FastPath.from_config(_cfg(), torch.device("cuda", 0))
    assert (cuda.channels_last, cuda.compile, cuda.cuda_graphs, cuda.reuse_programs) == \
        (True, None, True, True)                  # compile None: auto (long phases only)
    off = FastPath.from_config(_cfg("--channels-last", "false", "--cuda-graphs", "false",
                                    "--compile", "false"), torch.device("cuda", 0))
    assert (off.channels_last, off.compile, off.cuda_graphs) == (False, False, False)
    assert FastPath.from_config(_cfg("--cuda-graphs", "true"),
                                torch.device("cpu")).cuda_graphs is False   # CPU: no graphs
    model = torch.nn.Linear(2, 2)
    assert cpu.forward_of(model) is model          # default CPU path: the model itself


def test_compile_auto_compiles_only_long_phases(monkeypatch):
    from utils.fast import COMPILE_MIN_STEPS

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(model) or model)
    auto = FastPath(torch.device("cpu"), compile=None)
    short, long_ = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert auto.forward_of(short, steps=COMPILE_MIN_STEPS - 1) is short and calls == []
    auto.forward_of(long_, steps=COMPILE_MIN_STEPS)
    assert calls == [long_]
    auto.forward_of(long_, steps=10)               # compiled once: reused by short phases too
    assert calls == [long_]


def test_compiled_model_is_built_once_and_reused(monkeypatch):
    calls = []

    def fake_compile(model, **options):
        assert options == {"dynamic": False}      # static shapes: a short batch recompiles
        calls.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    fast = FastPath.from_config(_cfg("--compile", "true"), torch.device("cpu"))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    first = fast.forward_of(a)
    assert fast.forward_of(a) is first and calls == [a]      # reused across phases/levels
    fast.forward_of(b)
    assert calls == [a, b]


def test_channels_last_forward_matches_on_cpu():
    cfg = _cfg("--arch", "resnet20")
    torch.manual_seed(0)
    model = build_model(cfg, InputSpec(10, 1, 8)).eval()
    x = torch.randn(4, 1, 8, 8)
    expected = model(x)
    fast = FastPath(torch.device("cpu"), channels_last=True)
    fast.prepare_model(model)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast.forward_of(model)(x), expected, atol=1e-5)


@pytest.mark.parametrize("flag, value", [("--replicates", "0"), ("--compile", "maybe"),
                                         ("--channels-last", "2")])
def test_bad_fast_path_values_are_config_errors(flag, value):
    with pytest.raises(ConfigError, match=flag):
        _cfg(flag, value)


@pytest.mark.parametrize("args, message", [
    (["--algo", "hc_iter"], "replicates.*not implemented yet for algo 'hc_iter'"),
    (["--algo", "ep"], "replicates.*not implemented yet for algo 'ep'"),
    (["--algo", "gradual", "--target-sparsity", "5"],
     "replicates.*not implemented yet for algo 'gradual'"),
    (["--algo", "imp", "--adaptive-prune-rate", "true"], "replicates.*adaptive_prune_rate")])
def test_replicates_rejected_where_copies_cannot_be_packed(args, message):
    with pytest.raises(ConfigError, match=message):
        resolve([*args, "--dataset", "digits", "--replicates", "2"])


def test_replicates_rejected_with_resume(tmp_path):
    (tmp_path / "config.yaml").write_text("algo: training\ndataset: digits\n")
    with pytest.raises(ConfigError, match="replicates.*resume"):
        resolve(["--resume", str(tmp_path), "--replicates", "2"])


def test_replicates_accepted_for_training_imp_and_pruning_at_init():
    for algo in ("training", "imp", "imp_wr", "imp_lrr", "imp_ft", "snip", "grasp", "synflow",
                 "magnitude_init", "random"):
        assert resolve(["--algo", algo, "--dataset", "digits", "--target-sparsity", "5",
                        "--replicates", "3"]).replicates == 3


# ----------------------------------------------------------------------------- packed


def _masked_resnets(count):
    cfg = _cfg("--arch", "resnet20")
    models = []
    for k in range(count):
        torch.manual_seed(100 + k)
        model = build_model(cfg, InputSpec(10, 1, 8))
        if k == 1:   # a pruned copy: its own mask
            layer = model.layer2[0].conv1
            layer.set_mask((torch.rand_like(layer.weight) < 0.3).float())
        models.append(model)
    return models


def test_vmap_packed_copies_match_separate_training_with_batchnorm_and_masks():
    """vmap runs every layer of the copies as one batched (grouped) kernel, which rounds
    differently from the single model's kernel; in float32 the difference grows with the
    steps (2e-5 after 3 steps on one machine, more elsewhere).  In float64 the rounding of
    either kernel is ~1e-16 relative, so after 3 steps equal math stays within ~1e-12 while
    any real difference (a wrong mask, statistic or optimizer slice) is of order 1e-3."""
    models = [m.double() for m in _masked_resnets(2)]
    singles = [copy.deepcopy(m) for m in models]
    packed = PackedModels(models)
    spec = OptimizerSpec("sgd", 0.9, 5e-4)
    optimizer = spec.build(packed.parameters(), 0.01)
    optimizers = [spec.build(m.parameters(), 0.01) for m in singles]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(2, 32, 1, 8, 8, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (2, 32), generator=g)
        losses = torch.func.vmap(F.cross_entropy)(packed(x), y)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        for k, (model, opt) in enumerate(zip(singles, optimizers)):
            loss = F.cross_entropy(model(x[k]), y[k])
            opt.zero_grad()
            loss.backward()
            opt.step()
    packed.unpack()
    for model, single in zip(models, singles):
        for (name, a), b in zip(model.state_dict().items(), single.state_dict().values()):
            assert (a.double() - b.double()).abs().max().item() < 1e-9, name
    # exact facts: each copy kept its own mask, and pruned weights are exactly zero
    layer = models[1].layer2[0].conv1
    assert torch.equal(layer.mask, singles[1].layer2[0].conv1.mask)
    assert torch.equal(layer.weight * (1 - layer.mask), torch.zeros_like(layer.weight))
    assert models[0].layer2[0].conv1.mask.min().item() == 1.0


def test_vmap_batchnorm_accepts_bf16_activations():
    """Under CUDA's bf16 autocast a convolution hands BatchNorm a bf16 batch while its
    statistics stay float32; BatchNorm under vmap refused that ("expected scalar type
    BFloat16 but found Float").  The packed copies normalise in float32 instead."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.BatchNorm2d(4)) for _ in range(2)]
    singles = [copy.deepcopy(m) for m in models]
    packed = PackedModels(models)
    x = torch.randn(2, 16, 4, 8, 8).bfloat16()   # as a bf16 convolution would produce
    out = packed(x)
    assert out.dtype == torch.bfloat16            # the input's dtype comes back
    out.float().square().sum().backward()         # forward and backward both run
    packed.unpack()
    for k, (model, single) in enumerate(zip(models, singles)):
        reference = single(x[k].float())          # the same normalisation in float32
        # the float32 results agree to ~1e-6; rounding them to bf16 can differ by one bf16
        # step (2^-7 relative) where a value sits on a rounding boundary
        assert torch.allclose(out[k].float(), reference.bfloat16().float(), rtol=2 ** -7,
                              atol=1e-6)
        assert torch.allclose(model[0].running_mean, single[0].running_mean, atol=1e-6)


def test_packed_evaluation_is_per_copy():
    models = [m.double() for m in _masked_resnets(2)]
    packed = PackedModels(models)

    class Loader:
        device, num_images = torch.device("cpu"), 20

        def __iter__(self):
            g = torch.Generator().manual_seed(1)
            yield (torch.randn(20, 1, 8, 8, generator=g, dtype=torch.float64),
                   torch.randint(0, 10, (20,), generator=g))

    result = evaluate_packed(packed, Loader())
    x, y = next(iter(Loader()))
    for k, model in enumerate(models):
        logits = model.eval()(x)
        # float64 models: the batched and the single kernel agree to ~1e-15; the packed
        # evaluation then sums the loss in float32 (relative rounding ~1e-7)
        assert result["loss"][k] == pytest.approx(F.cross_entropy(logits, y).item(),
                                                  rel=1e-6)
        assert result["acc"][k] == pytest.approx(
            100.0 * (logits.argmax(1) == y).sum().item() / 20)


def _run_dirs(root):
    return {name: os.path.join(root, name) for name in os.listdir(root)}


def test_packed_run_writes_each_copy_as_its_own_run(tmp_path):
    common = ["--algo", "training", "--arch", "lenet_300_100", "--dataset", "digits",
              "--epochs", "1", "--lr", "0.05", "--batch-size", "64", "--name", "rep",
              "--quiet"]
    packed_root, single_root = tmp_path / "packed", tmp_path / "single"
    assert main.main(common + ["--seed", "3", "--replicates", "2", "--log-dir",
                               str(packed_root)]) == 0
    assert main.main(common + ["--seed", "4", "--log-dir", str(single_root)]) == 0
    packed_dirs, single_dirs = _run_dirs(packed_root), _run_dirs(single_root)
    assert len(packed_dirs) == 2
    (name, single_dir), = single_dirs.items()
    assert name in packed_dirs                   # copy 1 = the run dir of seed 3 + 1
    copy_dir = packed_dirs[name]
    for d in packed_dirs.values():
        for f in ("config.yaml", "metrics.csv", "summary.json", "log.txt",
                  "layer_density.csv", "checkpoints/init.pt", "checkpoints/final.pt"):
            assert os.path.isfile(os.path.join(d, f)), f
    a, b = (torch.load(os.path.join(d, "checkpoints", "final.pt"), weights_only=True)["model"]
            for d in (copy_dir, single_dir))
    assert a.keys() == b.keys()
    # packing: streams (the default) runs copy k's own step function: the computation of the
    # single run repeated, hence bit-identical
    assert all(torch.equal(a[k], b[k]) for k in a)
    summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (copy_dir,
                                                                            single_dir)]
    assert summaries[0]["seed"] == summaries[1]["seed"] == 4
    for key in ("test_acc", "val_acc", "train_acc", "density_pct", "status"):
        assert summaries[0][key] == summaries[1][key], key
    rows = [list(csv.DictReader(open(os.path.join(d, "metrics.csv"))))
            for d in (copy_dir, single_dir)]
    assert rows[0][0]["test_acc"] == rows[1][0]["test_acc"]
    # running the copy's config alone now finds it finished; the packed config is skipped
    assert main.main(common + ["--seed", "4", "--log-dir", str(packed_root)]) == 0
    assert main.main(common + ["--seed", "3", "--replicates", "2", "--log-dir",
                               str(packed_root)]) == 0
    assert len(_run_dirs(packed_root)) == 2


def test_channels_last_run_trains_like_the_default_run(tmp_path):
    common = ["--algo", "training", "--arch", "resnet20", "--dataset", "digits", "--epochs",
              "1", "--lr", "0.01", "--batch-size", "64", "--name", "cl", "--quiet",
              "--log-dir"]
    assert main.main(common + [str(tmp_path / "plain")]) == 0
    assert main.main(common + [str(tmp_path / "nhwc"), "--channels-last", "true"]) == 0
    finals = []
    for root in ("plain", "nhwc"):
        (d,) = _run_dirs(tmp_path / root).values()
        finals.append(torch.load(os.path.join(d, "checkpoints", "final.pt"),
                                 weights_only=True)["model"])
    assert finals[0].keys() == finals[1].keys()
    assert finals[1]["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    # same math, different kernels: rounding differs (~1e-7 after one step, checked by hand)
    # and drifts over the epoch's 20 steps (single small tensors such as a BatchNorm bias by
    # several %); over all weights together the runs stay within 1 %, while a wrong layout
    # would give unrelated weights (a relative difference of order 1)
    keys = [k for k in finals[0] if finals[0][k].is_floating_point()]
    a = torch.cat([finals[0][k].double().flatten() for k in keys])
    b = torch.cat([finals[1][k].double().flatten() for k in keys])
    assert ((a - b).norm() / a.norm()).item() < 1e-2
