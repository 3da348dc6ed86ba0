"""Upstream-style compatibility fixtures, the shipped CIFAR-10 configs, cifar_exec.sh and the
usage errors of the score-search family."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import main
from conftest import REPO, DIGITS_CONFIG, only_run_dir, write_cifar10, write_config

COMPAT = REPO / "tests" / "compat"
CONFIGS = sorted(c for c in (REPO / "configs" / "cifar10" / "resnet20").glob("*.yml")
                 if not c.stem.startswith("imp_"))          # IMP configs: tests/test_imp.py
RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "log.txt", "layer_density.csv",
             "ticket.pt", "search.csv", "checkpoints/init.pt", "checkpoints/last.pt",
             "checkpoints/before_finetune.pt", "checkpoints/final.pt")
SYNTHETIC = ["--dataset", "synthetic", "--synthetic-size", "40", "--quiet"]


def test_gem_miner_fixture_dry_run_shows_upstreams_schedule(tmp_path, capsys):
    fixture = COMPAT / "resnet20_hc_iter_1_44.yml"
    assert main.main(["--config", str(fixture), "--log-dir", str(tmp_path / "runs"),
                      "--dry-run", *SYNTHETIC]) == 0
    out = capsys.readouterr().out
    assert "algorithm: hc_iter; arch resnet20" in out
    assert "N = 29 steps, p = 1 − (1.44/100)^(1/29) = 0.1360" in out
    assert "step 29 after epoch  146:        3,865 weights, density 1.44 % / sparsity 98.56 %" \
        in out
    assert "ticket: mask = flags (unflag_before_finetune" in out
    assert "sanity checks" in out and "×0.1 at epochs [80, 120]" in out
    assert not (tmp_path / "runs").exists()


def test_edge_popup_fixture_dry_run(tmp_path, capsys):
    fixture = COMPAT / "resnet20_ep.yml"
    assert main.main(["--config", str(fixture), "--log-dir", str(tmp_path / "runs"),
                      "--dry-run", *SYNTHETIC]) == 0
    captured = capsys.readouterr().out
    assert "key 'weight_decay' has no effect (legacy upstream key)" in captured
    assert "per layer the top 0.05 of |score|" in captured
    assert "13,428 of 268,336 weights, density 5.00 % / sparsity 95.00 %" in captured
    assert "sanity_reinit" not in captured            # skip_sanity_checks: True


def test_imp_fixture_dry_run_and_a_short_synthetic_run(tmp_path, capsys):
    fixture = str(COMPAT / "resnet20_imp.yml")
    assert main.main(["--config", fixture, "--log-dir", str(tmp_path / "runs"), "--dry-run",
                      "--dataset", "synthetic", "--synthetic-size", "1000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "IMP-WR (weight rewinding): 20 levels × 160 epochs" in out
    assert "rewind point: iteration 1000 of level 0" in out
    assert not (tmp_path / "runs").exists()
    # one epoch per level, 2 levels, rewind to the first iteration
    assert main.main(["--config", fixture, "--log-dir", str(tmp_path / "runs"), *SYNTHETIC,
                      "--epochs", "1", "--iter-period", "1", "--imp-rounds", "2",
                      "--imp-rewind-iter", "2", "--batch-size", "8"]) == 0
    run_dir = next((tmp_path / "runs" / "IMP").iterdir())
    for name in ("config.yaml", "metrics.csv", "summary.json", "levels.csv", "ticket.pt",
                 "checkpoints/rewind.pt", "checkpoints/final.pt"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done"
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    kept = sum(int(m.sum()) for m in ticket["masks"].values())
    assert kept == 268_336 - round(0.2 * 268_336) and ticket["level"] == 1


@pytest.mark.parametrize("fixture,extra,phases", [
    ("resnet20_hc_iter_1_44.yml", ["--epochs", "2", "--iter-period", "1"],
     ["search", "search", "finetune", "finetune", "sanity_reinit", "sanity_reinit",
      "sanity_shuffle", "sanity_shuffle"]),
    ("resnet20_ep.yml", ["--epochs", "1"], ["search", "finetune"]),
])
def test_fixtures_run_a_short_synthetic_experiment(tmp_path, fixture, extra, phases):
    log_dir = tmp_path / "runs"
    assert main.main(["--config", str(COMPAT / fixture), "--log-dir", str(log_dir),
                      *SYNTHETIC, *extra]) == 0
    parent = log_dir / "EP" if fixture == "resnet20_ep.yml" else log_dir   # subfolder: EP
    run_dir = only_run_dir(parent)
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == phases
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["arch"] == "resnet20"
    expected = 1.44 if "hc_iter" in fixture else 5.0
    assert summary["density_pct"] == pytest.approx(expected, abs=0.01)
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    assert len(ticket["masks"]) == 20 and ticket["arch"] == "resnet20"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_cifar_configs_are_valid(tmp_path, config, capsys):
    write_cifar10(tmp_path / "data")
    assert main.main(["--config", str(config), "--data", str(tmp_path / "data"),
                      "--download", "false", "--dry-run", "--val-size", "10"]) == 0
    out = capsys.readouterr().out
    density = config.stem.split("_")[-1]
    assert f"density {float(density):.2f} %" in out
    assert "epochs: 16" in out if "smart_ratio" in config.stem else "epochs: 150" in out
    if config.stem.startswith("gem_miner"):
        assert "N = 29 steps" in out and "sanity_shuffle" in out


def test_gem_miner_quickstart_config_is_valid(capsys):
    assert main.main(["--config", str(REPO / "configs" / "quickstart_gem_miner.yml"),
                      "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "N = 29 steps" in out and "density 5.00 % / sparsity 95.00 %" in out


def _exec(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "cifar_exec.sh"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def test_cifar_exec_grid_over_gpus_and_cpu(tmp_path):
    fake = tmp_path / "fake_python"   # plans with the real one, records main.py calls
    log = tmp_path / "calls.txt"
    fake.write_text(f"#!/usr/bin/env bash\n[ \"$1\" = scripts/grid_plan.py ] && exec "
                    f"{sys.executable} \"$@\"\necho \"$*\" >> {log}\n")
    fake.chmod(0o755)
    env = {"PYTHON": str(fake), "TRIALS": "2", "DENSITIES": "1.44 0.59", "GPUS": "0 1",
           "OMP_NUM_THREADS": "1"}
    done = _exec(env, "--log-dir", str(tmp_path / "runs"), "--data", "/somewhere")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 8                   # 2 densities × 2 trials × {normal, inverted}
    assert all(c.startswith("main.py --config configs/cifar10/resnet20/gem_miner_") and
               c.endswith("--data /somewhere --quiet") for c in calls)
    inverted = [c for c in calls if "--invert-sanity-check true" in c]
    assert len(inverted) == 4 and all("_inverted" in c for c in inverted)
    assert sum("--gpu 0" in c for c in calls) == sum("--gpu 1" in c for c in calls) == 4
    assert {c.split("--name ")[1].split()[0] for c in calls} == {
        f"gem_miner_{d}_trial{t}{s}" for d in ("1.44", "0.59") for t in (1, 2)
        for s in ("", "_inverted")}

    log.unlink()
    cpu = _exec({**env, "GPUS": "", "TRIALS": "1", "DENSITIES": "5"}, "--log-dir",
                str(tmp_path / "runs"))
    assert cpu.returncode == 0
    assert [c.split("--device ")[1].split()[0] for c in log.read_text().splitlines()] == \
        ["cpu", "cpu"]
    missing = _exec({**env, "DENSITIES": "7"})
    assert missing.returncode == 2 and "gem_miner_7.yml" in missing.stderr


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("extra,needles", [
    ("algo: hc\nunflag_before_finetune: True\n",
     ["'unflag_before_finetune'", "not allowed for algo 'hc'"]),
    ("algo: hc_iter\nprune_type: BottomK\nepochs: 5\niter_period: 5\n",
     ["'epochs'", "no pruning step", "epochs >= 6"]),
    ("random_subnet: True\nsmart_ratio: 0.9856\nsr_version: 2\narch: Conv4\n",
     ["'sr_version'", "resnet20 only"]),
    ("random_subnet: True\nsmart_ratio: 0.9\nsr_version: 2\narch: resnet20\n",
     ["'smart_ratio'", "0.9856 or 0.9628"]),
    ("random_subnet: True\nsmart_ratio: 1.5\n", ["'smart_ratio'", "(0, 1)"]),
    ("random_subnet: True\nsmart_ratio: 0.9\nsr_version: 3\n", ["'sr_version'", "[1, 2], got 3"]),
])
def test_bad_search_setups_are_one_line_usage_errors(tmp_path, capsys, extra, needles):
    text = "\n".join(line for line in DIGITS_CONFIG.strip().splitlines()
                     if line.split(":")[0] not in {k.split(":")[0] for k in
                                                   extra.strip().splitlines()})
    cfg = write_config(tmp_path / "bad.yml", text + "\n" + extra)
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.yml:" in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert not (tmp_path / "runs").exists()
