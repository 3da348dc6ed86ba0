"""Edge-popup (ep, global_ep, global_ep_iter): exact top-k masks, straight-through gradients,
the prune_rate / override_prune_rate rules, and short whole runs."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import main
from args_helper import resolve
from conftest import only_run_dir, write_config
from models import InputSpec, build_model
from models.masks import prunable_layers
from pruners.search.edge_popup import ep_layer_keep, iter_levels, make_selector
from pruners.search.scores import count_for_fraction, train_scores_only

EP_DIGITS = """
algo: ep
arch: lenet_300_100
dataset: digits
epochs: 2
batch_size: 128
optimizer: sgd
lr: 0.1
lr_policy: cosine_lr
fine_tune_lr: 0.05
init: signed_constant
skip_sanity_checks: True
seed: 2
"""
SIZES = {"net.1": 64 * 300, "net.3": 300 * 100, "net.5": 100 * 10}
SPEC = InputSpec(10, 1, 8)


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg, SPEC, with_scores=True, score_init="kaiming_uniform")
    train_scores_only(model)
    selector = make_selector(cfg, model)
    for name, layer in prunable_layers(model).items():
        layer.score_fn = selector.score_fn(name)
    return model, selector


def _cfg(*args):
    return resolve(["--arch", "lenet_300_100", "--dataset", "digits", *args])


def test_ep_keeps_an_exact_count_per_layer_and_follows_the_scores():
    cfg = _cfg("--algo", "ep", "--override-prune-rate", "--prune-rate", "0.05")
    model, selector = _model(cfg)
    masks = selector.masks()
    for name, size in SIZES.items():
        assert int(masks[name].sum()) == ep_layer_keep(size, 0.05) == size - int(0.95 * size)
        layer = prunable_layers(model)[name]
        kept, dropped = layer.scores.abs()[masks[name] == 1], layer.scores.abs()[masks[name] == 0]
        assert kept.min() >= dropped.max()
    # an optimizer step changes the scores: the next forward sees the new selection
    layer = prunable_layers(model)["net.5"]
    with torch.no_grad():
        index = (masks["net.5"] == 0).nonzero()[0]
        layer.scores[tuple(index)] = 100.0
    assert selector.masks()["net.5"][tuple(index)] == 1
    assert int(selector.masks()["net.5"].sum()) == ep_layer_keep(1000, 0.05)


def test_straight_through_gradient_reaches_scores_not_weights():
    cfg = _cfg("--algo", "ep", "--override-prune-rate", "--prune-rate", "0.3")
    model, selector = _model(cfg)
    x = torch.randn(16, 1, 8, 8)
    loss = F.cross_entropy(model(x), torch.randint(0, 10, (16,)))
    loss.backward()
    for layer in prunable_layers(model).values():
        assert layer.weight.grad is None and not layer.weight.requires_grad
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
    # the forward pass equals the plain network under the binary mask
    masks = selector.masks()
    with torch.no_grad():
        h = x.flatten(1)
        names = list(SIZES)
        for i, name in enumerate(names):
            layer = prunable_layers(model)[name]
            h = F.linear(h, layer.weight * masks[name])
            h = h.relu() if i < len(names) - 1 else h
        assert torch.allclose(model(x), h, atol=1e-6)


def test_global_ep_density_rules():
    total = sum(SIZES.values())
    cfg = _cfg("--algo", "global_ep", "--override-prune-rate", "--prune-rate", "0.9")
    model, selector = _model(cfg)        # upstream: global_ep's prune_rate = fraction removed
    assert sum(int(m.sum()) for m in selector.masks().values()) == \
        count_for_fraction(0.1, total)
    scores = torch.cat([layer.scores.abs().flatten()
                        for layer in prunable_layers(model).values()])
    chosen = torch.cat([m.flatten() for m in selector.masks().values()])
    assert scores[chosen == 1].min() >= scores[chosen == 0].max()
    cfg = _cfg("--algo", "global_ep", "--target-sparsity", "2.5")
    assert not cfg.override_prune_rate
    assert any("keeps target_sparsity 2.5 %" in w for w in cfg.warnings)
    _, selector = _model(cfg)            # without override: target_sparsity is the density
    assert sum(int(m.sum()) for m in selector.masks().values()) == \
        count_for_fraction(0.025, total)
    ignored = _cfg("--algo", "ep", "--prune-rate", "0.5")
    assert any("prune_rate" in w and "ignored without override_prune_rate" in w
               for w in ignored.warnings)


def test_ep_run_freezes_weights_and_saves_the_ticket(tmp_path):
    cfg = write_config(tmp_path / "ep.yml", EP_DIGITS + "override_prune_rate: True\n"
                                                         "prune_rate: 0.1\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    kept = sum(ep_layer_keep(n, 0.1) for n in SIZES.values())
    assert summary["density_pct"] == pytest.approx(100 * kept / sum(SIZES.values()), abs=1e-6)
    assert summary["search_density_pct"] == pytest.approx(summary["density_pct"], abs=1e-4)
    init = torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    before = torch.load(run_dir / "checkpoints" / "before_finetune.pt",
                        weights_only=True)["model"]
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    for name, size in SIZES.items():
        mask = ticket["masks"][name]
        assert int(mask.sum()) == ep_layer_keep(size, 0.1)
        assert torch.equal(before[f"{name}.weight"], init[f"{name}.weight"] * mask)
        # the ticket is the top |score| of each layer at the end of the search
        scores = before[f"{name}.scores"].abs()
        assert scores[mask].min() >= scores[~mask].max()
    assert (run_dir / "search.csv").is_file()
    assert summary["finetuned_test_acc"] > summary["ticket_test_acc"] - 5


def test_global_ep_iter_shrinks_nested_flags_to_the_target(tmp_path):
    cfg = write_config(tmp_path / "gepi.yml", EP_DIGITS.replace("algo: ep", "algo: global_ep_iter")
                       + "iter_period: 1\ntarget_sparsity: 20\ncheckpoint_at_prune: True\n")
    resolved = resolve(["--config", str(cfg), "--epochs", "3"])
    total = sum(SIZES.values())
    levels = iter_levels(resolved, total)
    assert levels[0] == total and levels[-1] == count_for_fraction(0.2, total)
    assert len(levels) == 3                                    # N = ⌊(3 − 1)/1⌋ = 2 steps
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet",
                      "--epochs", "3", "--skip-fine-tune"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    step1 = torch.load(run_dir / "checkpoints" / "prune_01.pt", weights_only=True)["model"]
    step2 = torch.load(run_dir / "checkpoints" / "prune_02.pt", weights_only=True)["model"]
    assert sum(int(step1[f"{n}.mask"].sum()) for n in SIZES) == levels[1]
    assert sum(int(step2[f"{n}.mask"].sum()) for n in SIZES) == levels[2]
    for name in SIZES:
        assert torch.all(step2[f"{name}.mask"] <= step1[f"{name}.mask"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["density_pct"] == pytest.approx(100 * levels[-1] / total, abs=1e-6)
    assert summary["test_acc"] == summary["ticket_test_acc"]     # skip_fine_tune
