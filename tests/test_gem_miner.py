"""Gem-Miner (hc_iter) and hc: the pruning schedule, exact pruning steps, rounding,
regularisers, and whole runs (frozen weights during the search, scores in [0, 1], a frozen
mask during fine-tuning, the sanity checks, resume across phases)."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from args_helper import resolve
from conftest import only_run_dir, write_config
from models import architecture
from models.layers import LayerFactory
from models.masks import prunable_layers
from pruners.search.checks import prune_steps, step_fraction
from pruners.search.gem_miner import FlagSchedule, flag_schedule, prune_flags, regulariser, \
    rounded_masks
from pruners.search.scores import count_for_fraction, level_counts

GM_DIGITS = """
algo: hc_iter
arch: lenet_300_100
dataset: digits
epochs: 4
iter_period: 1
batch_size: 64
optimizer: sgd
lr: 0.5
lr_policy: cosine_lr
wd: 0.0
fine_tune_lr: 0.05
fine_tune_lr_policy: cosine_lr
prune_type: BottomK
target_sparsity: 10
unflag_before_finetune: True
init: signed_constant
score_init: unif
hc_quantized: True
regularization: L2
lmbda: 0.0001
checkpoint_at_prune: True
seed: 5
"""


def _lenet_with_scores(seed: int = 0):
    torch.manual_seed(seed)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    for layer in prunable_layers(model).values():
        layer.enable_scores().data.uniform_(0, 1)
    return model


def _flag_count(model) -> int:
    return sum(int(layer.mask.count_nonzero()) for layer in prunable_layers(model).values())


# --------------------------------------------------------------------------- the schedule


def test_schedule_with_upstream_numbers_reaches_the_target_exactly():
    assert prune_steps(150, 5) == 29
    p = step_fraction(1.44, 29)
    assert p == pytest.approx(0.1360, abs=5e-5)
    assert (1 - p) ** 29 == pytest.approx(0.0144)
    cfg = resolve(["--algo", "hc_iter", "--epochs", "150", "--iter-period", "5",
                   "--target-sparsity", "1.44", "--prune-type", "BottomK"])
    schedule = flag_schedule(cfg)
    assert (schedule.steps, schedule.fraction) == (29, p)
    # pruning follows 0-based epochs 5, 10, ..., 145 (never epoch 0, never past the end)
    assert [e for e in range(150) if schedule.step_after(e)] == list(range(5, 146, 5))
    assert [schedule.step_after(e) for e in (5, 10, 145)] == [1, 2, 29]

    total = 268_336                                    # ResNet-20's prunable weights
    final = count_for_fraction(0.0144, total)
    counts = level_counts(total, 29, p, final)
    assert final == math.ceil(0.0144 * total) == 3865 and counts[-1] == final
    assert 100 * counts[-1] / total == pytest.approx(1.44, abs=5e-4)
    for before, after in zip(counts[:-2], counts[1:-1]):   # steps 1..28: exactly ceil(p·active)
        assert before - after == math.ceil(p * before)
    assert abs((counts[-2] - counts[-1]) - math.ceil(p * counts[-2])) <= 8   # rounding only


def test_pruning_steps_remove_exact_counts_and_never_touch_weights():
    model = _lenet_with_scores()
    weights = {n: layer.weight.clone() for n, layer in prunable_layers(model).items()}
    total = _flag_count(model)
    schedule = FlagSchedule("BottomK", period=1, steps=4, fraction=step_fraction(5, 4),
                            target_pct=5)
    expected = level_counts(total, 4, schedule.fraction, count_for_fraction(0.05, total))
    previous = {n: layer.mask.clone() for n, layer in prunable_layers(model).items()}
    for step in range(1, 5):
        removed = prune_flags(model, schedule, step)
        assert _flag_count(model) == expected[step]
        assert removed == expected[step - 1] - expected[step]
        for name, layer in prunable_layers(model).items():
            assert torch.all(layer.mask <= previous[name])        # nested
            assert torch.equal(layer.weight, weights[name])       # weights untouched
            previous[name] = layer.mask.clone()
    # the survivors are exactly the highest scores
    kept = torch.cat([layer.scores[layer.mask == 1] for layer in prunable_layers(model).values()])
    gone = torch.cat([layer.scores[layer.mask == 0] for layer in prunable_layers(model).values()])
    assert kept.min() > gone.max()


def test_ties_never_over_prune():
    model = _lenet_with_scores()
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            layer.scores.zero_()                     # every score ties (upstream removed all)
        prunable_layers(model)["net.5"].scores[0, :7] = 1.0
    total = _flag_count(model)
    schedule = FlagSchedule("BottomK", 1, 2, 0.3, target_pct=40)
    prune_flags(model, schedule, 1)
    assert _flag_count(model) == total - math.ceil(0.3 * total)
    assert prunable_layers(model)["net.5"].mask[0, :7].sum() == 7   # the only non-ties stay
    prune_flags(model, schedule, 2)
    assert _flag_count(model) == count_for_fraction(0.40, total)


def test_local_bottomk_is_exact_per_layer_and_invert_removes_the_highest():
    model = _lenet_with_scores()
    schedule = FlagSchedule("LocalBottomK", 1, 3, step_fraction(10, 3), target_pct=10)
    for step in (1, 2, 3):
        prune_flags(model, schedule, step)
    for layer in prunable_layers(model).values():
        assert int(layer.mask.sum()) == count_for_fraction(0.10, layer.mask.numel())

    model = _lenet_with_scores()
    inverted = FlagSchedule("BottomK", 1, 1, 0.5, target_pct=50, invert=True)
    prune_flags(model, inverted, 1)
    kept = torch.cat([layer.scores[layer.mask == 1] for layer in prunable_layers(model).values()])
    gone = torch.cat([layer.scores[layer.mask == 0] for layer in prunable_layers(model).values()])
    assert kept.max() < gone.min()


def test_fix_thresholding_clears_flags_at_or_below_the_threshold():
    model = _lenet_with_scores()
    prune_flags(model, FlagSchedule("FixThresholding", 1, 1, 0.0, 50, threshold=0.5), 1)
    for layer in prunable_layers(model).values():
        assert torch.equal(layer.mask, (layer.scores > 0.5).float())


# --------------------------------------------------------------------------- scores


def test_regularisers_match_their_formulas():
    model = _lenet_with_scores(seed=1)
    layers = list(prunable_layers(model).values())
    with torch.no_grad():
        layers[0].scores[0, 0] = 0.0                 # end points are skipped by bin_entropy
        layers[0].scores[0, 1] = 1.0
    s = torch.cat([layer.scores.detach().flatten() for layer in layers]).double()
    w = torch.cat([layer.weight.detach().flatten() for layer in layers]).double()
    inner = s[(s > 0) & (s < 1)]
    expected = {"L2": (s ** 2).sum(), "L1": s.abs().sum(), "L1_L2": s.abs().sum() + (s ** 2).sum(),
                "var_red_1": (s ** 2 * (1 - s) ** 0.5).sum(),
                "var_red_2": (w ** 2 * s * (1 - s)).sum(),
                "bin_entropy": (-inner * inner.log() - (1 - inner) * (1 - inner).log()).sum()}
    for kind, value in expected.items():
        got = regulariser(model, kind, alpha=2.0, alpha_prime=0.5)
        assert got.item() == pytest.approx(value.item(), rel=1e-5), kind
    regulariser(model, "L2").backward()              # differentiable in the scores
    assert torch.allclose(layers[1].scores.grad, 2 * layers[1].scores.detach())


def test_rounding_schemes():
    model = _lenet_with_scores(seed=2)
    layer = prunable_layers(model)["net.3"]
    with torch.no_grad():
        layer.mask[0].zero_()                        # a cleared flag wins over any score
    g = torch.Generator().manual_seed(0)
    naive = rounded_masks(model, "naive", 0.5, 0.0, g)["net.3"]
    assert torch.equal(naive, layer.mask * (layer.scores > 0.5).float())
    assert torch.equal(rounded_masks(model, "all_ones", 0.5, 0.0, g)["net.3"], layer.mask)
    prob = rounded_masks(model, "prob", 0.5, 0.0, torch.Generator().manual_seed(1))["net.3"]
    assert prob[0].sum() == 0 and 0.4 < prob[1:].mean() < 0.6            # Bernoulli(U[0,1])
    again = rounded_masks(model, "prob", 0.5, 0.0, torch.Generator().manual_seed(1))["net.3"]
    assert torch.equal(prob, again)                                      # seeded
    noisy = rounded_masks(model, "naive", 0.5, 0.3, torch.Generator().manual_seed(1))["net.3"]
    assert not torch.equal(noisy, naive) and noisy[0].sum() == 0


def test_shuffle_sanity_check_preserves_every_layers_density():
    from models.masks import get_masks, set_masks
    from pruners.ticket_controls import shuffle_masks_onto_initial_weights

    model = _lenet_with_scores(seed=3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    set_masks(model, {n: (torch.rand(m.shape, generator=g) < d).float()
                      for (n, m), d in zip(get_masks(model).items(), (0.02, 0.3, 0.9))})
    ticket = get_masks(model)
    shuffle_masks_onto_initial_weights(model, initial, torch.Generator().manual_seed(1))
    for name, layer in prunable_layers(model).items():
        assert int(layer.mask.sum()) == int(ticket[name].sum())          # same layer density
        assert not torch.equal(layer.mask, ticket[name])
        assert torch.equal(layer.weight, initial[f"{name}.weight"] * layer.mask)


# --------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def gm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gm")
    cfg = write_config(tmp / "gm_digits.yml", GM_DIGITS)
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp / "runs"), "--quiet"]) == 0
    return cfg, only_run_dir(tmp / "runs")


def _load(path):
    return torch.load(path, weights_only=True)


def _rows(run_dir, name="metrics.csv"):
    with open(run_dir / name, newline="") as handle:
        return list(csv.DictReader(handle))


def test_gem_miner_run_records(gm_run):
    _, run_dir = gm_run
    for name in ("ticket.pt", "search.csv", "summary.json", "metrics.csv", "layer_density.csv",
                 "checkpoints/before_finetune.pt", "checkpoints/final.pt", "checkpoints/init.pt",
                 "checkpoints/prune_01.pt", "checkpoints/prune_03.pt"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    total = 64 * 300 + 300 * 100 + 100 * 10
    assert summary["density_pct"] == pytest.approx(100 * math.ceil(0.1 * total) / total,
                                                   abs=1e-6)
    assert summary["target_density_pct"] == 10 and summary["flag_density_pct"] == \
        pytest.approx(summary["density_pct"], abs=1e-6)
    for key in ("search_val_acc", "search_test_acc", "ticket_val_acc", "ticket_test_acc",
                "finetuned_val_acc", "finetuned_test_acc", "sanity_reinit_test_acc",
                "sanity_reinit_val_acc", "sanity_shuffle_test_acc", "sanity_shuffle_val_acc"):
        assert isinstance(summary[key], float), key
    assert summary["test_acc"] == summary["finetuned_test_acc"]
    # the rare gem: the untrained weights under the mined mask are far above chance (10 %)
    assert summary["ticket_test_acc"] > 35

    search = _rows(run_dir, "search.csv")
    assert [r["epoch"] for r in search] == ["1", "2", "3", "4"]
    flags = [float(r["flag_density_pct"]) for r in search]
    counts = level_counts(total, 3, step_fraction(10, 3), math.ceil(0.1 * total))
    assert flags == pytest.approx([100 * c / total for c in counts], abs=1e-3)
    for row in search:     # the evaluated (rounded) mask is inside the flags
        assert float(row["density_pct"]) <= float(row["flag_density_pct"]) + 1e-9
        assert float(row["reg_loss"]) > 0
    metrics = _rows(run_dir)
    assert [r["phase"] for r in metrics] == ["search"] * 4 + ["finetune"] * 4 + \
        ["sanity_reinit"] * 4 + ["sanity_shuffle"] * 4

    events = EventAccumulator(str(run_dir / "phases" / "search"))   # the phase's sub-run
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("search/flag_density_pct", "search/reg_loss", "search/pruned", "density_pct",
                "val/acc", "test/acc", "lr", "search_layer_flag_density/net.1"):
        assert tag in scalars, tag
    assert [e.value for e in events.Scalars("search/flag_density_pct")] == \
        pytest.approx(flags, abs=1e-3)
    assert [e.step for e in events.Scalars("search/flag_density_pct")] == [1, 2, 3, 4]
    assert "search/scores_of_active_weights" in events.Tags()["histograms"]
    assert "scores/net.1" in events.Tags()["histograms"]          # at the phase's end

    ticket = _load(run_dir / "ticket.pt")
    assert set(ticket["masks"]) == {"net.1", "net.3", "net.5"}
    assert sum(int(m.sum()) for m in ticket["masks"].values()) == math.ceil(0.1 * total)
    assert ticket["density_pct"] == pytest.approx(summary["density_pct"])


def test_a_mined_ticket_trains_under_algo_training_with_another_seed(gm_run, tmp_path):
    _, run_dir = gm_run
    ticket = _load(run_dir / "ticket.pt")
    cfg = write_config(tmp_path / "reuse.yml", f"""
algo: training
arch: lenet_300_100
dataset: digits
epochs: 1
batch_size: 64
lr: 0.05
init: signed_constant
ticket: {run_dir / 'ticket.pt'}
""")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet",
                      "--seed", "11"]) == 0
    reuse_dir = only_run_dir(tmp_path / "runs")
    init = _load(reuse_dir / "checkpoints" / "init.pt")["model"]
    final = _load(reuse_dir / "checkpoints" / "final.pt")["model"]
    for name, mask in ticket["masks"].items():
        assert torch.equal(init[f"{name}.mask"].bool(), mask)
        assert torch.equal(init[f"{name}.weight"], ticket["weights"][f"{name}.weight"])
        assert torch.equal(final[f"{name}.mask"].bool(), mask)
        assert torch.all(final[f"{name}.weight"][~mask] == 0)
    summary = json.loads((reuse_dir / "summary.json").read_text())
    assert summary["density_pct"] == pytest.approx(ticket["density_pct"], abs=1e-6)


def test_weights_frozen_and_scores_clamped_during_search(gm_run):
    _, run_dir = gm_run
    init = _load(run_dir / "checkpoints" / "init.pt")["model"]
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    for step in (1, 2, 3):
        state = _load(run_dir / "checkpoints" / f"prune_{step:02d}.pt")["model"]
        for name in ("net.1", "net.3", "net.5"):
            assert torch.equal(state[f"{name}.weight"], init[f"{name}.weight"])
            scores = state[f"{name}.scores"]
            assert scores.min() >= 0 and scores.max() <= 1
            assert not torch.equal(scores, init[f"{name}.scores"])   # the scores did train
    for name in ("net.1", "net.3", "net.5"):   # the ticket: initial weights under the mask
        mask = before[f"{name}.mask"]
        assert torch.equal(before[f"{name}.weight"], init[f"{name}.weight"] * mask)


def test_fine_tuning_changes_only_weights_and_never_the_mask(gm_run):
    _, run_dir = gm_run
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    final = _load(run_dir / "checkpoints" / "final.pt")["model"]
    for name in ("net.1", "net.3", "net.5"):
        mask = before[f"{name}.mask"]
        assert torch.equal(final[f"{name}.mask"], mask)
        assert torch.equal(final[f"{name}.scores"], before[f"{name}.scores"])
        assert torch.all(final[f"{name}.weight"][mask == 0] == 0)
        kept = mask == 1
        assert not torch.equal(final[f"{name}.weight"][kept], before[f"{name}.weight"][kept])


def test_resume_across_phases_matches_an_uninterrupted_run(gm_run, tmp_path, monkeypatch):
    cfg, reference = gm_run
    import utils.phases

    real = utils.phases.train_epoch
    calls = {"n": 0}

    def flaky_train_epoch(*args, **kwargs):    # Ctrl-C in the search and in a sanity check
        calls["n"] += 1
        if calls["n"] in (3, 13):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(utils.phases, "train_epoch", flaky_train_epoch)
    args = ["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet"]
    assert main.main(args) == 130
    assert main.main(args) == 130
    assert main.main(args) == 0
    run_dir = only_run_dir(tmp_path / "runs")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(_rows(run_dir)) == strip(_rows(reference))
    assert _rows(run_dir, "search.csv") == _rows(reference, "search.csv")
    ours = json.loads((run_dir / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    for key in ("test_acc", "ticket_test_acc", "sanity_reinit_test_acc",
                "sanity_shuffle_test_acc", "density_pct"):
        assert ours[key] == ref[key], key
    assert torch.equal(_load(run_dir / "ticket.pt")["masks"]["net.3"],
                       _load(reference / "ticket.pt")["masks"]["net.3"])


def test_hc_without_flag_pruning(tmp_path):
    cfg = write_config(tmp_path / "hc.yml", GM_DIGITS.replace("algo: hc_iter", "algo: hc")
                       .replace("unflag_before_finetune: True", "round: naive")
                       .replace("checkpoint_at_prune: True", "skip_sanity_checks: True"))
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet",
                      "--epochs", "2", "--lmbda", "0.001"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["flag_density_pct"] == 100.0
    # the ticket is the rounded mask of the final scores
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    kept = sum(int((before[f"{n}.scores"] > 0.5).sum()) for n in ("net.1", "net.3", "net.5"))
    total = sum(before[f"{n}.mask"].numel() for n in ("net.1", "net.3", "net.5"))
    assert summary["density_pct"] == pytest.approx(100 * kept / total, abs=1e-6)
    assert summary["search_density_pct"] == pytest.approx(summary["density_pct"], abs=1e-6)
    assert [r["phase"] for r in _rows(run_dir)] == ["search"] * 2 + ["finetune"] * 2
