"""The grid scripts: imp_exec.sh runs every config × rewind × seed, says where results live,
skips finished runs without touching their logs; DRY_RUN=1 writes nothing; --help."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, write_config

GRID_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 1
imp_rounds: 2
batch_size: 128
lr: 0.05
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "DRY_RUN")}
    env.update(PYTHON=sys.executable, GPUS="", **extra)
    return env


def _grid(tmp_path, *args, env=None):
    return subprocess.run(["bash", str(REPO / "imp_exec.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=_env(**(env or {})))


def test_imp_grid_runs_every_combination_and_skips_finished(tmp_path):
    cfg = write_config(tmp_path / "grid.yml", GRID_CONFIG)
    args = ["--configs", str(cfg), "--rewinds", "0 5", "--seeds", "1 2", "--",
            "--log-dir", str(tmp_path / "runs")]
    first = _grid(tmp_path, *args)
    assert first.returncode == 0, first.stderr + first.stdout
    plan = [line for line in first.stdout.splitlines() if "->" in line]
    dirs = [line.split("->")[1].strip() for line in plan]
    assert len(dirs) == 4 and len(set(dirs)) == 4
    assert all(line.strip().startswith("[new]") for line in plan)
    for run_dir in dirs:
        summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
        assert summary["status"] == "done" and summary["levels"] == 2
        assert os.path.basename(run_dir).startswith(f"grid-imp_wr-s{summary['seed']}-")
    seeds = {json.loads(open(os.path.join(d, "summary.json")).read())["seed"] for d in dirs}
    assert seeds == {1, 2}
    logs = {p.name: p.read_text() for p in (tmp_path / "runs" / "grid-logs").iterdir()}
    assert sorted(logs) == sorted(os.path.basename(d) + ".log" for d in dirs)
    assert all(text.startswith("=== ") and "result" in text for text in logs.values())
    again = _grid(tmp_path, *args)             # finished: skipped, logs left as they are
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("[finished]") == 4 and again.stdout.count("finished, skipped") == 4
    assert {p.name: p.read_text() for p in (tmp_path / "runs" / "grid-logs").iterdir()} == logs


def test_grid_dry_runs_write_nothing(tmp_path):
    cfg = write_config(tmp_path / "grid.yml", GRID_CONFIG)
    log_dir = tmp_path / "runs"
    dry = _grid(tmp_path, "--configs", str(cfg), "--rewinds", "0 5", "--seeds", "1", "--",
                "--log-dir", str(log_dir), env={"DRY_RUN": "1"})
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("[new]") == 2 and "DRY_RUN=1: would run 2 of 2 runs" in dry.stdout
    assert f">> {log_dir}/grid-logs/grid-imp_wr-s1-" in dry.stdout
    cifar = subprocess.run(["bash", str(REPO / "cifar_exec.sh"), "--log-dir", str(log_dir),
                            "--data", str(tmp_path / "nodata")], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=_env(DRY_RUN="1", TRIALS="1",
                                                            DENSITIES="5"))
    assert cifar.returncode == 0, cifar.stderr
    assert cifar.stdout.count("[new]") == 2 and "would run 2 of 2 runs" in cifar.stdout
    assert "--invert-sanity-check true --name gem_miner_5_trial1_inverted" in cifar.stdout
    assert not log_dir.exists() and not (tmp_path / "nodata").exists()


def test_grid_scripts_have_their_own_help():
    for script, first in (("imp_exec.sh", "Run a grid of IMP experiments"),
                          ("cifar_exec.sh", "The Gem-Miner grid on CIFAR-10")):
        for flag in ("--help", "-h"):
            proc = subprocess.run(["bash", str(REPO / script), flag], cwd=REPO,
                                  capture_output=True, text=True, timeout=60, env=_env())
            assert proc.returncode == 0 and proc.stdout.startswith(first), proc.stdout
            assert "DRY_RUN=1" in proc.stdout and "set -" not in proc.stdout


def test_imp_grid_rejects_a_missing_config(tmp_path):
    proc = _grid(tmp_path, "--configs", str(tmp_path / "nope.yml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr
