"""Resume: a run killed with SIGKILL (or interrupted with SIGINT) and started again with the same
command finishes with exactly the metrics of an uninterrupted run (CPU)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, only_run_dir, run_main, write_config

CONFIG = """
algo: training
arch: resnet20
dataset: digits
epochs: 10
batch_size: 64
lr: 0.1
lr_policy: cosine_lr
momentum: 0.9
wd: 0.0005
seed: 11
"""


def _metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


def _default_sigint():
    # a test session started in the background by a shell inherits SIGINT ignored, and
    # Python then raises no KeyboardInterrupt: give the run the terminal's default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cfg, log_dir):
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--config", str(cfg), "--log-dir",
         str(log_dir), "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_default_sigint)


def _wait_for_epochs(proc, run_dir_parent, epochs, timeout=240):
    """Block until metrics.csv of the (single) run under `run_dir_parent` has `epochs` rows."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        runs = list(run_dir_parent.glob("*/metrics.csv")) if run_dir_parent.exists() else []
        if runs and len(runs[0].read_text().splitlines()) - 1 >= epochs:
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for epochs")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "resume.yml", CONFIG)
    proc = run_main(["--config", str(cfg), "--log-dir", str(tmp / "runs"), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    return only_run_dir(tmp / "runs")


@pytest.mark.parametrize("sig,expected_rc", [(signal.SIGKILL, -signal.SIGKILL),
                                             (signal.SIGINT, 130)])
def test_killed_run_resumes_to_identical_metrics(tmp_path, uninterrupted, sig, expected_rc):
    cfg = write_config(tmp_path / "resume.yml", CONFIG)
    log_dir = tmp_path / "runs"
    proc = _start(cfg, log_dir)
    _wait_for_epochs(proc, log_dir, 3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == expected_rc, proc.stderr.read()
    run_dir = only_run_dir(log_dir)
    assert not (run_dir / "summary.json").exists()
    done_before = len(_metrics(run_dir))
    assert 3 <= done_before < 10

    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == done_before and last["phase_key"] == "train"

    again = run_main(["--config", str(cfg), "--log-dir", str(log_dir), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert f"resuming train after epoch {done_before} of 10" in again.stdout
    assert only_run_dir(log_dir) == run_dir
    assert _metrics(run_dir) == _metrics(uninterrupted)
    ours = json.loads((run_dir / "summary.json").read_text())
    ref = json.loads((uninterrupted / "summary.json").read_text())
    assert ours["test_acc"] == ref["test_acc"] and ours["status"] == "done"
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    ref_final = torch.load(uninterrupted / "checkpoints" / "final.pt",
                           weights_only=True)["model"]
    assert all(torch.equal(final[k], ref_final[k]) for k in ref_final)
    log = (run_dir / "log.txt").read_text()
    assert "resuming" in log and log.count("epoch  10/10") == 1


def test_resume_option_continues_a_run_directory(tmp_path, uninterrupted):
    cfg = write_config(tmp_path / "resume.yml", CONFIG)
    log_dir = tmp_path / "runs"
    proc = _start(cfg, log_dir)
    _wait_for_epochs(proc, log_dir, 2)
    proc.kill()
    proc.wait(timeout=60)
    run_dir = only_run_dir(log_dir)
    again = run_main(["--resume", str(run_dir), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert _metrics(run_dir) == _metrics(uninterrupted)
    changed = run_main(["--resume", str(run_dir), "--lr", "0.5"])
    assert changed.returncode == 2 and "different config" in changed.stderr


IMP_CONFIG = """
algo: imp_wr
arch: resnet20
dataset: digits
iter_period: 3
imp_rounds: 4
imp_rewind_iter: 25
imp_controls: [reinit]
batch_size: 64
lr: 0.1
lr_policy: cosine_lr
seed: 4
"""


def test_imp_killed_mid_level_resumes_to_identical_levels(tmp_path):
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    cfg = write_config(reference_dir / "imp.yml", IMP_CONFIG)
    ref = run_main(["--config", str(cfg), "--log-dir", str(reference_dir / "runs"), "--quiet"])
    assert ref.returncode == 0, ref.stderr
    reference = only_run_dir(reference_dir / "runs")

    work = tmp_path / "work"
    work.mkdir()
    cfg = write_config(work / "imp.yml", IMP_CONFIG)
    proc = _start(cfg, work / "runs")
    _wait_for_epochs(proc, work / "runs", 5)          # inside level 1 (epochs 2-3 of 3)
    proc.kill()
    proc.wait(timeout=60)
    run_dir = only_run_dir(work / "runs")
    assert not (run_dir / "summary.json").exists()
    again = run_main(["--config", str(cfg), "--log-dir", str(work / "runs"), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert _metrics(run_dir) == _metrics(reference)
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                       for r in csv.DictReader(open(p, newline=""))]
    assert strip(run_dir / "levels.csv") == strip(reference / "levels.csv")
    assert strip(run_dir / "controls.csv") == strip(reference / "controls.csv")
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    ref_ticket = torch.load(reference / "ticket.pt", weights_only=True)
    assert all(torch.equal(ticket["masks"][k], ref_ticket["masks"][k]) for k in ticket["masks"])
