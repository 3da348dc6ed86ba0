"""The grid script runs every config × rewind × seed, says where results live, skips
finished runs."""
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


def _grid(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHON"] = sys.executable
    return subprocess.run(["bash", str(REPO / "imp_exec.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def test_imp_grid_runs_every_combination_and_skips_finished(tmp_path):
    cfg = write_config(tmp_path / "grid.yml", GRID_CONFIG)
    args = ["--configs", str(cfg), "--rewinds", "0 5", "--seeds", "1 2", "--",
            "--log-dir", str(tmp_path / "runs")]
    first = _grid(tmp_path, *args)
    assert first.returncode == 0, first.stderr + first.stdout
    dirs = [line.split("->")[1].strip() for line in first.stdout.splitlines() if "->" in line]
    assert len(dirs) == 4 and len(set(dirs)) == 4
    for run_dir in dirs:
        summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
        assert summary["status"] == "done" and summary["levels"] == 2
    seeds = {json.loads(open(os.path.join(d, "summary.json")).read())["seed"] for d in dirs}
    assert seeds == {1, 2}
    again = _grid(tmp_path, *args)
    assert again.returncode == 0
    logs = (tmp_path / "runs" / "grid-logs").iterdir()
    assert all("already finished" in log.read_text() for log in logs)


def test_imp_grid_rejects_a_missing_config(tmp_path):
    proc = _grid(tmp_path, "--configs", str(tmp_path / "nope.yml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr
