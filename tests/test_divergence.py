"""A run whose training loss becomes non-finite stops as "diverged" (issue 13, first item).

It must never be reported as a success: exit code 3, summary status "diverged" naming the
phase and epoch, the epoch's row (loss nan) kept in metrics.csv, and no IMP level or control
judged against a diverged reference.  Rerunning the command reports it again (exit 3).
"""
from __future__ import annotations

import csv
import json
import os

import pytest

import main
from tests.conftest import only_run_dir, write_config

IMP = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
prune_rate: 0.2
target_sparsity: 64
imp_rewind_iter: 0
imp_controls: [reinit]
batch_size: 64
optimizer: sgd
lr: 1000000.0
seed: 1
"""

GEM_MINER = """
algo: hc_iter
arch: lenet_300_100
dataset: digits
epochs: 2
iter_period: 1
target_sparsity: 50
batch_size: 64
optimizer: sgd
lr: 0.1
fine_tune_lr: 1000000.0
score_init: unif
unflag_before_finetune: true
skip_sanity_checks: true
seed: 1
"""

SNIP = """
algo: snip
arch: lenet_300_100
dataset: digits
target_sparsity: 20
epochs: 2
batch_size: 64
optimizer: sgd
lr: 1000000.0
seed: 1
"""

TRAINING = """
algo: training
arch: lenet_300_100
dataset: digits
epochs: 2
batch_size: 64
optimizer: sgd
lr: 1000000.0
seed: 1
"""


def _run(config, log_dir, *args) -> int:
    return main.main(["--config", str(config), "--log-dir", str(log_dir), "--quiet", *args])


def _rows(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("text, phase", [(IMP, "level_00"), (GEM_MINER, "finetune"),
                                         (SNIP, "train"), (TRAINING, "train")],
                         ids=["imp", "gem_miner", "snip", "training"])
def test_a_nan_loss_ends_the_run_as_diverged(tmp_path, capsys, text, phase):
    config = write_config(tmp_path / "run.yml", text)
    assert _run(config, tmp_path / "runs") == 3
    assert "diverged" in capsys.readouterr().err
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.load(open(run_dir / "summary.json"))
    assert summary["status"] == "diverged"
    assert summary["diverged"]["phase"] == phase and summary["diverged"]["epoch"] == 1
    assert summary["test_acc"] is None
    rows = _rows(run_dir)
    last = rows[-1]        # the diverged epoch: no loss (nan is written as an empty cell)
    assert last["train_loss"] == "" and last["test_acc"] == "" and last["epoch"] == "1"
    # nothing after the divergence: no level judged, no control, no ticket of a NaN network
    assert not os.path.exists(run_dir / "levels.csv")
    assert not os.path.exists(run_dir / "controls.csv")
    assert "DIVERGED" in open(run_dir / "log.txt").read()
    # rerunning reports it again, without touching it
    before = os.path.getmtime(run_dir / "summary.json")
    assert _run(config, tmp_path / "runs") == 3
    assert "DIVERGED" in capsys.readouterr().out
    assert os.path.getmtime(run_dir / "summary.json") == before


def test_gem_miner_search_before_the_divergence_is_kept(tmp_path):
    config = write_config(tmp_path / "run.yml", GEM_MINER)
    assert _run(config, tmp_path / "runs") == 3
    run_dir = only_run_dir(tmp_path / "runs")
    phases = [r["phase"] for r in _rows(run_dir)]
    assert phases == ["search", "search", "finetune"]
    assert os.path.isfile(run_dir / "search.csv")


def test_a_diverged_packed_copy_stops_the_run_and_the_others_resume(tmp_path):
    config = write_config(tmp_path / "run.yml", TRAINING)
    assert _run(config, tmp_path / "runs", "--replicates", "2") == 3
    dirs = sorted(p for p in (tmp_path / "runs").iterdir())
    statuses = [json.load(open(d / "summary.json"))["status"]
                if (d / "summary.json").exists() else None for d in dirs]
    assert statuses.count("diverged") == 1 and statuses.count(None) == 1
    # the rerun skips the diverged copy and trains the other, which diverges too
    assert _run(config, tmp_path / "runs", "--replicates", "2") == 3
    statuses = [json.load(open(d / "summary.json"))["status"] for d in dirs]
    assert statuses == ["diverged", "diverged"]
