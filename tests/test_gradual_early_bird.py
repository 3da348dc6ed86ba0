"""Gradual magnitude pruning (Zhu & Gupta schedule) and early-bird tickets: exact schedules,
exact densities per epoch, the early-bird stopping rule on constructed masks, runs, resume."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from args_helper import resolve
from conftest import interrupt_training_at, only_run_dir, run_in_process
from models.masks import round_half_up
from pruners.during_training.early_bird import early_bird_epoch, hamming_distance, window_step
from pruners.during_training.gradual import pruning_events, sparsity_progress
from utils.errors import ConfigError

LENET = {"net.1": 64 * 300, "net.3": 300 * 100, "net.5": 100 * 10}
TOTAL = sum(LENET.values())                  # 50,200
STEPS = 10                                   # 1,257 digits / batch 128

CONFIG = """
algo: {algo}
arch: lenet_300_100
dataset: digits
epochs: 5
batch_size: 128
optimizer: sgd
lr: 0.05
lr_policy: cosine_lr
momentum: 0.9
wd: 0.0005
target_sparsity: 10
seed: 9
"""



def _run(tmp_path, algo, extra="", args=()):
    return run_in_process(tmp_path, algo, CONFIG.format(algo=algo) + extra, args)


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _metrics(run_dir):
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in _csv(run_dir / "metrics.csv")]

# ----------------------------------------------------------------------------- gradual


def test_sparsity_progress_curves():
    assert sparsity_progress("cubic", 0.5) == 1 - 0.5 ** 3
    assert sparsity_progress("cubic", 0.0) == 0.0 and sparsity_progress("cubic", 1.0) == 1.0
    assert sparsity_progress("linear", 0.25) == 0.25
    assert sparsity_progress("cosine", 0.5) == pytest.approx(0.5)
    assert sparsity_progress("one_shot", 0.0) == 1.0


def test_gradual_schedule_follows_zhu_and_gupta_with_exact_counts():
    cfg = resolve(["--algo", "gradual", "--arch", "lenet_300_100", "--dataset", "digits",
                   "--epochs", "6", "--target-sparsity", "10", "--prune-start-epoch", "1",
                   "--prune-end-epoch", "4", "--prune-every-steps", "7"])
    events = pruning_events(cfg, LENET, STEPS)
    # t0 = 10, t1 = 40: steps 10 (nothing removed yet), 17, 24, 31, 38 and 40
    assert [e["step"] for e in events] == [17, 24, 31, 38, 40]
    for e in events:
        p = (e["step"] - 10) / 30
        density = 1 - 0.9 * (1 - (1 - p) ** 3)
        assert e["density"] == pytest.approx(density)
        assert e["keep"].kept == round_half_up(density * TOTAL)
    assert events[-1]["keep"].kept == 5020


def test_gradual_window_checks():
    base = ["--algo", "gradual", "--target-sparsity", "10", "--epochs", "6"]
    with pytest.raises(ConfigError, match=r"--prune-end-epoch must be at most epochs \(6\)"):
        resolve(base + ["--prune-end-epoch", "7"])
    with pytest.raises(ConfigError, match=r"prune_start_epoch \(4\) must be below "
                                          r"prune_end_epoch \(3\)"):
        resolve(base + ["--prune-start-epoch", "4", "--prune-end-epoch", "3"])
    with pytest.raises(ConfigError, match=r"'target_sparsity'.*algo 'gradual' needs"):
        resolve(["--algo", "gradual"])


@pytest.fixture(scope="module")
def gradual_run(tmp_path_factory):
    rc, log_dir = _run(tmp_path_factory.mktemp("gradual"), "gradual",
                       "prune_start_epoch: 1\nprune_end_epoch: 3\nprune_every_steps: 5\n")
    assert rc == 0
    return only_run_dir(log_dir)


def test_gradual_run_prunes_on_schedule_to_the_exact_target(gradual_run):
    # t0 = 10, t1 = 30, every 5: steps 15, 20, 25, 30
    expected = {}
    for step in (15, 20, 25, 30):
        p = (step - 10) / 20
        expected[step] = round_half_up((1 - 0.9 * (1 - (1 - p) ** 3)) * TOTAL)
    expected[30] = 5020
    rows = _csv(gradual_run / "pruning_steps.csv")
    assert {int(r["step"]): int(r["kept"]) for r in rows} == expected
    densities = [float(r["density_pct"]) for r in _metrics(gradual_run)]
    assert densities == pytest.approx([100.0, 100 * expected[20] / TOTAL, 10.0, 10.0, 10.0])
    final = torch.load(gradual_run / "checkpoints" / "final.pt", weights_only=True)["model"]
    kept = 0
    for name in LENET:
        mask = final[f"{name}.mask"]
        kept += int(mask.sum())
        assert torch.all(final[f"{name}.weight"][mask == 0] == 0)
    assert kept == 5020
    summary = json.loads((gradual_run / "summary.json").read_text())
    assert summary["density_pct"] == 10.0 and summary["prune_events"] == 4


def test_gradual_run_killed_mid_pruning_resumes_identically(tmp_path, gradual_run,
                                                           monkeypatch):
    restore = interrupt_training_at(monkeypatch, 3)                     # during epoch 3
    rc, log_dir = _run(tmp_path, "gradual",
                       "prune_start_epoch: 1\nprune_end_epoch: 3\nprune_every_steps: 5\n")
    assert rc == 130
    restore()
    rc, _ = _run(tmp_path, "gradual",
                 "prune_start_epoch: 1\nprune_end_epoch: 3\nprune_every_steps: 5\n")
    assert rc == 0
    assert _metrics(only_run_dir(log_dir)) == _metrics(gradual_run)


def test_gradual_one_shot_at_epoch_0_prunes_before_training(tmp_path):
    rc, log_dir = _run(tmp_path, "gradual", "prune_schedule: one_shot\n",
                       args=["--epochs", "2"])
    assert rc == 0
    densities = [float(r["density_pct"]) for r in _metrics(only_run_dir(log_dir))]
    assert densities == [10.0, 10.0]


# ----------------------------------------------------------------------------- early-bird


def _mask(*kept, n=10):
    out = torch.zeros(n, dtype=torch.bool)
    out[list(kept)] = True
    return out


def test_hamming_distance_is_normalised_by_the_largest_possible():
    a, b = _mask(0, 1), _mask(1, 2)
    assert hamming_distance(a, b) == 2 / 4              # 2 entries differ of at most 4
    assert hamming_distance(_mask(0, 1), _mask(2, 3)) == 1.0
    assert hamming_distance(a, a) == 0.0
    half_a, half_b = _mask(0, 1, 2, 3, 4), _mask(1, 2, 3, 4, 5)
    assert hamming_distance(half_a, half_b) == 2 / 10   # = |a ⊕ b| / N at 50 % density


def test_early_bird_stops_at_the_documented_epoch():
    masks = [_mask(0, 1), _mask(2, 3), _mask(2, 4), _mask(2, 4), _mask(2, 4), _mask(2, 4)]
    # epoch:           1            2            3            4            5            6
    # window 2: window_max defined from epoch 3: 1.0 (vs 1), 0.5 (vs 2), 0.0, 0.0
    assert window_step(masks[:2], masks[2], 2) == (0.5, 1.0)
    assert early_bird_epoch(masks, window=2, epsilon=0.3) == 5
    assert early_bird_epoch(masks, window=2, epsilon=0.6) == 4
    assert early_bird_epoch(masks, window=3, epsilon=0.3) == 6
    assert early_bird_epoch(masks, window=5, epsilon=0.3) is None


def test_early_bird_run_draws_the_ticket_and_continues_sparse(tmp_path):
    rc, log_dir = _run(tmp_path, "early_bird", "eb_window: 2\neb_epsilon: 0.6\n")
    assert rc == 0
    run_dir = only_run_dir(log_dir)
    curve = _csv(run_dir / "early_bird.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    first = next(int(r["epoch"]) for r in curve
                 if r["window_max"] not in ("", "nan") and float(r["window_max"]) < 0.6)
    assert summary["eb_epoch"] == first and summary["eb_converged"] is True
    assert [int(r["epoch"]) for r in curve] == list(range(1, first + 1))
    assert curve[0]["window_max"] in ("", "nan") and curve[1]["window_max"] in ("", "nan")
    densities = [float(r["density_pct"]) for r in _metrics(run_dir)]
    assert densities == pytest.approx([100.0] * (first - 1) + [10.0] * (5 - first + 1))
    assert summary["density_pct"] == 10.0
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert sum(int(m.sum()) for m in ticket["masks"].values()) == 5020
    for name, mask in ticket["masks"].items():
        assert torch.equal(final[f"{name}.mask"].bool(), mask)
        assert torch.all(ticket["weights"][f"{name}.weight"][~mask] == 0)
    assert ticket["search"]["eb_epoch"] == first


def test_early_bird_that_never_settles_is_drawn_after_the_last_epoch(tmp_path):
    rc, log_dir = _run(tmp_path, "early_bird", "eb_window: 1\neb_epsilon: 0.000001\n",
                       args=["--epochs", "3"])
    assert rc == 0
    summary = json.loads((only_run_dir(log_dir) / "summary.json").read_text())
    assert summary["eb_epoch"] == 3 and summary["eb_converged"] is False
    assert summary["density_pct"] == 10.0


@pytest.mark.parametrize("cut_epoch", [2, 4])           # the ticket is drawn after epoch 3
def test_early_bird_killed_run_resumes_identically(tmp_path, monkeypatch, cut_epoch):
    extra = "eb_window: 2\neb_epsilon: 0.6\n"
    rc, ref_dir = _run(tmp_path / "ref", "early_bird", extra)
    assert rc == 0
    assert json.loads((only_run_dir(ref_dir) / "summary.json").read_text())["eb_epoch"] == 3
    restore = interrupt_training_at(monkeypatch, cut_epoch)
    rc, log_dir = _run(tmp_path / "cut", "early_bird", extra)
    assert rc == 130
    restore()
    rc, _ = _run(tmp_path / "cut", "early_bird", extra)
    assert rc == 0
    ref, cut = only_run_dir(ref_dir), only_run_dir(log_dir)
    assert _metrics(cut) == _metrics(ref)
    assert _csv(cut / "early_bird.csv") == _csv(ref / "early_bird.csv")
