"""Pruning at initialisation: exact counts, hand-computed SNIP / magnitude / SynFlow scores,
GraSP's Hessian-gradient product against finite differences, data-free SynFlow without layer
collapse on ResNet-20, ERK densities, iterative rounds, BatchNorm untouched, collapse guard,
whole runs with controls, and resume."""
from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import main
from args_helper import resolve
from conftest import interrupt_training_at, only_run_dir, run_in_process, write_config
from models import InputSpec, build_model
from models.layers import MaskedLinear
from models.masks import prunable_layers, round_half_up
from models.prune_targets import geometric_densities, layer_densities
from pruners.at_init.run import schedule, score_function
from pruners.at_init.scores import (erk_counts, erk_densities, erk_raw_density, grasp_scores,
                                    hessian_gradient_product, loss_gradient, magnitude_scores,
                                    prune_at_init, snip_scores, synflow_scores)
from utils.errors import ConfigError

LENET = {"net.1": 64 * 300, "net.3": 300 * 100, "net.5": 100 * 10}
TOTAL = sum(LENET.values())                     # 50,200
DIGITS = InputSpec(10, 1, 8)

RUN_CONFIG = """
algo: {algo}
arch: lenet_300_100
dataset: digits
epochs: 2
batch_size: 128
optimizer: sgd
lr: 0.05
lr_policy: cosine_lr
momentum: 0.9
wd: 0.0005
target_sparsity: 5
seed: 7
"""



class FakeLoader:
    """Stands in for the training loader: the same fixed batches in every epoch."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch, seed=None, start_batch=0):
        pass

    def __iter__(self):
        return iter(self.batches)


def _digit_batches(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def _lenet(args=(), seed=0):
    cfg = resolve(["--arch", "lenet_300_100", "--dataset", "digits", *args])
    torch.manual_seed(seed)
    return cfg, build_model(cfg, DIGITS)


def _prune(cfg, model, batches=None):
    ctx = SimpleNamespace(cfg=cfg, model_spec=DIGITS, seed=3,
                          loaders=SimpleNamespace(train=FakeLoader(batches or _digit_batches())))
    pool, keeps = schedule(cfg, model)
    score, largest = score_function(ctx, model)
    rounds = []
    prune_at_init(model, pool, keeps, score, largest=largest,
                  on_round=lambda r, net: rounds.append(
                      {n: layer.mask.clone() for n, layer in prunable_layers(net).items()}))
    return pool, keeps, rounds


def _kept(model):
    return {n: int(layer.mask.count_nonzero()) for n, layer in prunable_layers(model).items()}


# ----------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("algo", ["snip", "grasp", "synflow", "magnitude_init", "random"])
def test_every_method_keeps_exactly_the_target_global(algo):
    cfg, model = _lenet(["--algo", algo, "--target-sparsity", "3", "--synflow-iterations", "5"])
    _prune(cfg, model)
    assert sum(_kept(model).values()) == round_half_up(0.03 * TOTAL) == 1506
    for layer in prunable_layers(model).values():
        assert torch.all(layer.weight[layer.mask == 0] == 0)


@pytest.mark.parametrize("algo", ["snip", "grasp", "magnitude_init", "random"])
def test_local_scope_keeps_the_target_in_every_layer(algo):
    cfg, model = _lenet(["--algo", algo, "--target-sparsity", "3", "--prune-scope", "local"])
    _prune(cfg, model)
    assert _kept(model) == {n: round_half_up(0.03 * size) for n, size in LENET.items()} \
        == {"net.1": 576, "net.3": 900, "net.5": 30}


def test_prune_ignore_keeps_a_layer_dense_and_the_total_exact():
    cfg, model = _lenet(["--algo", "snip", "--target-sparsity", "10", "--prune-ignore", "net.5"])
    _prune(cfg, model)
    kept = _kept(model)
    assert kept["net.5"] == 1000
    assert sum(kept.values()) == round_half_up(0.10 * TOTAL) == 5020


def test_unknown_ignored_layer_and_missing_target_are_config_errors():
    cfg, model = _lenet(["--algo", "snip", "--target-sparsity", "10", "--prune-ignore", "fc9"])
    with pytest.raises(ConfigError, match=r"--prune-ignore: no prunable layer named 'fc9'; "
                                          r"prunable layers: net\.1, net\.3, net\.5"):
        schedule(cfg, model)
    with pytest.raises(ConfigError, match=r"'target_sparsity'.*algo 'grasp' needs"):
        resolve(["--algo", "grasp"])
    with pytest.raises(ConfigError, match=r"--prune-iterations: synflow already "
                                          r"prunes iteratively.*synflow_iterations"):
        resolve(["--algo", "synflow", "--target-sparsity", "2", "--prune-iterations", "3"])


def test_iterative_rounds_shrink_geometrically_and_nest():
    assert geometric_densities(0.02, 4) == pytest.approx([0.02 ** 0.25, 0.02 ** 0.5,
                                                          0.02 ** 0.75, 0.02])
    cfg, model = _lenet(["--algo", "snip", "--target-sparsity", "2", "--prune-iterations", "4"])
    _, keeps, rounds = _prune(cfg, model)
    expected = [round_half_up(0.02 ** (r / 4) * TOTAL) for r in (1, 2, 3, 4)]
    assert [k.kept for k in keeps] == expected == [18878, 7099, 2670, 1004]
    assert [sum(int(m.count_nonzero()) for m in r.values()) for r in rounds] == expected
    for earlier, later in zip(rounds, rounds[1:]):
        assert all(torch.all(later[n] <= earlier[n]) for n in later)


# ----------------------------------------------------------------------------- scores


def _tiny(weight, dtype=torch.float32):
    layer = MaskedLinear(weight.shape[1], weight.shape[0], bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return nn.Sequential(layer)


def test_snip_scores_equal_hand_computed_values():
    w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    x1 = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 1.0]])
    x2 = torch.tensor([[-1.0, 0.0, 3.0]])
    y1, y2 = torch.tensor([0, 1]), torch.tensor([1])

    def grad(x, y):      # d mean CE / dW = (softmax(x Wᵀ) − onehot(y))ᵀ x / batch
        p = torch.softmax(x @ w.T, dim=1) - F.one_hot(y, 2).float()
        return p.T @ x / x.shape[0]

    expected = (grad(x1, y1) + grad(x2, y2)) * w
    scores = snip_scores(_tiny(w), [(x1, y1), (x2, y2)])["0"]
    assert torch.allclose(scores, expected.abs(), atol=1e-6)


def test_magnitude_scores_are_the_masked_absolute_weights():
    w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    model = _tiny(w)
    model[0].set_mask(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    assert torch.equal(magnitude_scores(model)["0"],
                       torch.tensor([[0.5, 1.0, 0.0], [1.5, 0.0, 0.75]]))


def test_synflow_scores_equal_hand_computed_values():
    w1 = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    w2 = torch.tensor([[-2.0, 3.0]])
    first = MaskedLinear(3, 2, bias=False)
    second = MaskedLinear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(w1)
        second.weight.copy_(w2)
    model = nn.Sequential(nn.Flatten(), first, nn.ReLU(), second)
    scores = synflow_scores(model, (3,))
    # R = 1ᵀ|W2||W1|1: ∂R/∂W1[i, j] = Σ_k |W2[k, i]|, ∂R/∂W2[k, i] = Σ_j |W1[i, j]|
    assert torch.allclose(scores["1"], w1.abs() * w2.abs().sum(0)[:, None])
    assert torch.allclose(scores["3"], w2.abs() * w1.abs().sum(1)[None, :])
    assert torch.equal(first.weight, w1)            # the network itself is untouched


def test_grasp_hessian_gradient_product_matches_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(MaskedLinear(4, 5), nn.Tanh(), MaskedLinear(5, 3)).double()
    batches = [(torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,)))
               for _ in range(2)]
    g, hg = hessian_gradient_product(model, batches)
    weights = {n: layer.weight for n, layer in prunable_layers(model).items()}
    eps = 1e-5

    def gradient_at(sign):
        with torch.no_grad():
            for n, w in weights.items():
                w.add_(sign * eps * g[n])
        out = loss_gradient(model, batches)
        with torch.no_grad():
            for n, w in weights.items():
                w.sub_(sign * eps * g[n])
        return out

    plus, minus = gradient_at(1.0), gradient_at(-1.0)
    for n in weights:
        finite = (plus[n] - minus[n]) / (2 * eps)
        assert torch.allclose(hg[n], finite, rtol=1e-5, atol=1e-8), n
        assert hg[n].abs().max() > 1e-3                  # a non-trivial product
    scores = grasp_scores(model, batches)
    for n, w in weights.items():
        assert torch.allclose(scores[n], -w.detach() * hg[n])


def test_grasp_removes_the_highest_scores():
    cfg, model = _lenet(["--algo", "grasp", "--target-sparsity", "10"])
    batches = _digit_batches()
    initial = {n: layer.weight.detach().clone() for n, layer in prunable_layers(model).items()}
    _prune(cfg, model, batches)
    _, reference = _lenet(["--algo", "grasp", "--target-sparsity", "10"])
    scores = grasp_scores(reference.train(), batches[:1])      # prune_batches: 1
    kept = torch.cat([scores[n][layer.mask == 1] for n, layer in prunable_layers(model).items()])
    removed = torch.cat([scores[n][layer.mask == 0]
                         for n, layer in prunable_layers(model).items()])
    assert kept.max() <= removed.min()
    for n, layer in prunable_layers(model).items():      # survivors keep their init values
        assert torch.equal(layer.weight[layer.mask == 1], initial[n][layer.mask == 1])


def test_synflow_uses_no_data_and_keeps_every_resnet20_layer_alive_at_99pct_sparsity():
    cfg = resolve(["--algo", "synflow", "--arch", "resnet20", "--target-sparsity", "1"])
    torch.manual_seed(0)
    spec = InputSpec(10, 3, 32)
    model = build_model(cfg, spec)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    # no loader at all: the scores cannot depend on data
    ctx = SimpleNamespace(cfg=cfg, model_spec=spec, seed=1, loaders=None)
    score, largest = score_function(ctx, model)
    assert largest
    first = score(model)
    assert all(torch.equal(first[n], s) for n, s in score(model.train()).items())
    pool, keeps = schedule(cfg, model)
    assert len(keeps) == 100
    prune_at_init(model, pool, keeps, score)
    densities = layer_densities(model)
    assert len(densities) == 20 and min(densities.values()) > 0, densities
    total = sum(layer.weight.numel() for layer in prunable_layers(model).values())
    assert sum(_kept(model).values()) == round_half_up(0.01 * total)
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), k


def test_scoring_leaves_batchnorm_statistics_untouched():
    cfg = resolve(["--algo", "snip", "--arch", "resnet20", "--target-sparsity", "10"])
    torch.manual_seed(0)
    spec = InputSpec(10, 3, 8)
    model = build_model(cfg, spec)
    before = {k: v.clone() for k, v in model.state_dict().items()
              if "running" in k or "num_batches" in k}
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))]
    ctx = SimpleNamespace(cfg=cfg, model_spec=spec, seed=1,
                          loaders=SimpleNamespace(train=FakeLoader(batches)))
    pool, keeps = schedule(cfg, model)
    score, _ = score_function(ctx, model)
    prune_at_init(model, pool, keeps, score)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


# ----------------------------------------------------------------------------- ERK


def test_erk_densities_follow_the_formula():
    shapes = {"conv1": (16, 3, 3, 3), "conv2": (32, 16, 3, 3), "conv3": (64, 32, 3, 3),
              "fc": (10, 64)}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())                                 # 23,600
    assert erk_raw_density((32, 16, 3, 3)) == (32 + 16 + 3 + 3) / (32 * 16 * 9)
    assert erk_raw_density((10, 64)) == 74 / 640
    keep = round_half_up(0.05 * total)
    densities, eps = erk_densities(shapes, keep)
    counts = erk_counts(shapes, keep)
    assert sum(counts.values()) == keep
    for n in shapes:
        expected = min(1.0, eps * erk_raw_density(shapes[n]))
        assert densities[n] == pytest.approx(expected)
        assert abs(counts[n] - expected * sizes[n]) < 1.0
    # ε solves Σ ε·raw_l·n_l = keep when no layer is capped
    assert all(d < 1 for d in densities.values())
    assert eps == pytest.approx(keep / sum(erk_raw_density(s) * sizes[n]
                                           for n, s in shapes.items()))
    # at 50 % the first conv and the classifier are capped at 1 and ε is recomputed
    keep = round_half_up(0.5 * total)
    densities, eps = erk_densities(shapes, keep)
    dense = [n for n, d in densities.items() if d == 1.0]
    assert set(dense) == {"conv1", "fc"}
    rest = [n for n in shapes if n not in dense]
    assert eps == pytest.approx((keep - sum(sizes[n] for n in dense))
                                / sum(erk_raw_density(shapes[n]) * sizes[n] for n in rest))
    assert sum(erk_counts(shapes, keep).values()) == keep


def test_random_erk_masks_have_the_erk_layer_counts():
    cfg, model = _lenet(["--algo", "random", "--target-sparsity", "5",
                         "--random-distribution", "erk"])
    _prune(cfg, model)
    shapes = {n: tuple(layer.weight.shape) for n, layer in prunable_layers(model).items()}
    assert _kept(model) == erk_counts(shapes, round_half_up(0.05 * TOTAL))


# ----------------------------------------------------------------------------- runs


def _run(tmp_path, algo, extra="", args=()):
    return run_in_process(tmp_path, algo, RUN_CONFIG.format(algo=algo) + extra, args)


def _metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def snip_run(tmp_path_factory):
    rc, log_dir = _run(tmp_path_factory.mktemp("snip"), "snip",
                       "at_init_controls: [reinit, shuffle_mask, shuffle_weights]\n")
    assert rc == 0
    return only_run_dir(log_dir)


def test_snip_run_records_ticket_layers_and_controls(snip_run):
    summary = json.loads((snip_run / "summary.json").read_text())
    assert summary["algo"] == "snip" and summary["scoring"] == "snip"
    assert summary["density_pct"] == round(100 * 2510 / TOTAL, 6)       # 5 % of 50,200
    assert set(summary["layer_density_pct"]) == set(LENET)
    assert [c["control"] for c in summary["controls"]] == ["reinit", "shuffle_mask",
                                                           "shuffle_weights"]
    ticket = torch.load(snip_run / "ticket.pt", weights_only=True)
    init = torch.load(snip_run / "checkpoints" / "init.pt", weights_only=True)["model"]
    final = torch.load(snip_run / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert sum(int(m.sum()) for m in ticket["masks"].values()) == 2510
    for name, mask in ticket["masks"].items():
        start = ticket["weights"][f"{name}.weight"]
        assert torch.equal(start, init[f"{name}.weight"] * mask)      # initial weights
        assert torch.all(final[f"{name}.weight"][~mask] == 0)
        assert torch.equal(final[f"{name}.mask"].bool(), mask)
        got = 100.0 * int(mask.sum()) / mask.numel()
        assert summary["layer_density_pct"][name] == round(got, 6)
    phases = [r["phase"] for r in _metrics(snip_run)]
    assert phases == ["train"] * 2 + ["control_reinit"] * 2 + ["control_shuffle_mask"] * 2 \
        + ["control_shuffle_weights"] * 2
    rows = [r for r in _metrics(snip_run)]
    assert all(float(r["density_pct"]) == pytest.approx(100 * 2510 / TOTAL) for r in rows)


# call 1: the first training epoch (the mask is recomputed on resume); call 4: the second
# epoch of control reinit
@pytest.mark.parametrize("cut", [1, 4])
def test_at_init_run_killed_mid_run_resumes_identically(tmp_path, snip_run, monkeypatch, cut):
    restore = interrupt_training_at(monkeypatch, cut)
    rc, log_dir = _run(tmp_path, "snip",
                       "at_init_controls: [reinit, shuffle_mask, shuffle_weights]\n")
    assert rc == 130
    restore()
    rc, _ = _run(tmp_path, "snip", "at_init_controls: [reinit, shuffle_mask, shuffle_weights]\n")
    assert rc == 0
    run_dir = only_run_dir(log_dir)
    assert _metrics(run_dir) == _metrics(snip_run)
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)["masks"]
    reference = torch.load(snip_run / "ticket.pt", weights_only=True)["masks"]
    assert all(torch.equal(ticket[n], reference[n]) for n in reference)


def test_layer_collapse_is_reported_and_can_be_forbidden(tmp_path):
    # global magnitude at 1 %: kaiming weights of the 300→100 layer are the smallest
    rc, log_dir = _run(tmp_path / "a", "magnitude_init", args=["--target-sparsity", "1",
                                                               "--epochs", "1"])
    assert rc == 0
    run_dir = only_run_dir(log_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["collapsed_layers"] == ["net.3"]
    assert summary["layer_density_pct"]["net.3"] == 0.0
    assert "LAYER COLLAPSE" in (run_dir / "log.txt").read_text()
    rc, log_dir = _run(tmp_path / "b", "magnitude_init", args=[
        "--target-sparsity", "1", "--epochs", "1", "--forbid-layer-collapse"])
    assert rc == 1
    summary = json.loads((only_run_dir(log_dir) / "summary.json").read_text())
    assert summary["status"] == "failed" and "net.3" in summary["error"]


def test_dry_run_prints_exact_counts(tmp_path, capsys):
    cfg = write_config(tmp_path / "s.yml", RUN_CONFIG.format(algo="synflow"))
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      "--dry-run", "--synflow-iterations", "3"]) == 0
    out = capsys.readouterr().out
    expected = [round_half_up(0.05 ** (r / 3) * TOTAL) for r in (1, 2, 3)]
    for r, kept in enumerate(expected, 1):
        assert f"round   {r}: keep exactly {kept:,} of 50,200 weights" in out
    assert "density 5.00 % / sparsity 95.00 %" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("algo", ["snip", "grasp", "synflow", "magnitude_init", "random",
                                  "gradual", "early_bird"])
def test_quickstart_at_init_config_dry_runs_for_every_algorithm(algo, capsys):
    from conftest import REPO

    assert main.main(["--config", str(REPO / "configs" / "quickstart_at_init.yml"),
                      "--algo", algo, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "exactly 1,004 of 50,200 weights (density 2.00 % / sparsity 98.00 %)" in out
