"""imp_exec.sh --slurm against a real single-node Slurm (munge + slurmctld + slurmd started
by scripts/start_test_slurm.sh, stopped at the end even on failure): one job array, both
tasks run, finished runs are not submitted again.  Skipped where Slurm is not installed or
the daemons cannot be started (no root, no passwordless sudo)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import REPO, write_config

SBIN = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
GRID_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 1
imp_rounds: 1
batch_size: 128
lr: 0.05
device: cpu
"""


def _missing() -> str | None:
    for tool in ("sbatch", "squeue", "slurmctld", "slurmd", "munged"):
        if shutil.which(tool, path=SBIN) is None:
            return tool
    return None


def _root_prefix() -> list[str] | None:
    """[] as root, ["sudo", "-n"] with passwordless sudo, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"],
                                               capture_output=True).returncode == 0:
        return ["sudo", "-n", "--preserve-env=SLURM_TEST_PORT"]
    return None


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 60000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    return 6817


@pytest.fixture
def slurm_cluster():
    missing = _missing()
    if missing:
        pytest.skip(f"Slurm not installed ({missing} missing; apt-get install slurmctld "
                    f"slurmd slurm-client munge)")
    prefix = _root_prefix()
    if prefix is None:
        pytest.skip("starting slurmctld/slurmd needs root or passwordless sudo")
    folder = tempfile.mkdtemp(prefix="slurm-", dir="/tmp")   # short: munge socket path
    env = dict(os.environ, SLURM_TEST_PORT=str(_free_port_pair()))
    try:
        start = subprocess.run([*prefix, "bash", str(REPO / "scripts" / "start_test_slurm.sh"),
                                folder], capture_output=True, text=True, timeout=120, env=env)
        assert start.returncode == 0, start.stdout + start.stderr
        yield {"SLURM_CONF": os.path.join(folder, "slurm.conf")}
    finally:
        subprocess.run([*prefix, "bash", str(REPO / "scripts" / "stop_test_slurm.sh"), folder],
                       capture_output=True, timeout=60)
        subprocess.run([*prefix, "rm", "-rf", folder], capture_output=True, timeout=60)


def _grid(env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    full.update(env, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(REPO / "imp_exec.sh"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=full)


def test_imp_grid_submits_one_job_array_to_slurm(tmp_path, slurm_cluster):
    cfg = write_config(tmp_path / "grid.yml", GRID_CONFIG)
    log_dir = tmp_path / "runs"
    args = ["--configs", str(cfg), "--rewinds", "0", "--seeds", "1 2", "--slurm",
            "--time", "10", "--cpus-per-task", "1", "--", "--log-dir", str(log_dir)]
    submitted = _grid(slurm_cluster, *args)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    line = next(x for x in submitted.stdout.splitlines() if x.startswith("submitted"))
    job = line.split()[4].rstrip(":")
    assert job.isdigit() and "2 task(s)" in line
    dirs = [x.split("->")[1].strip() for x in submitted.stdout.splitlines() if "->" in x]
    assert len(dirs) == 2

    env = dict(os.environ, **slurm_cluster)
    deadline = time.time() + 240
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True,
                                env=env, timeout=30)
        if queued.returncode == 0 and not queued.stdout.strip() and all(
                os.path.isfile(os.path.join(d, "summary.json")) for d in dirs):
            break
        time.sleep(1)
    outputs = sorted((log_dir / "grid-logs").glob(f"imp_grid-{job}_*.out"))
    shown = "\n".join(p.read_text()[-1500:] for p in outputs)
    assert [p.name for p in outputs] == [f"imp_grid-{job}_0.out", f"imp_grid-{job}_1.out"], \
        shown
    for task, run_dir in enumerate(dirs):
        assert f"task {task} on" in outputs[task].read_text()
        summary = json.loads(open(os.path.join(run_dir, "summary.json")).read())
        assert summary["status"] == "done" and summary["seed"] == task + 1, shown

    again = _grid(slurm_cluster, *args)
    assert again.returncode == 0, again.stderr
    assert "nothing to submit: all 2 runs are finished" in again.stdout


def test_slurm_flags_need_slurm_and_values():
    bad = _grid({}, "--time", "5")
    assert bad.returncode == 2 and "need --slurm" in bad.stderr
    bad = _grid({}, "--slurm", "--gpus-per-task", "two")
    assert bad.returncode == 2 and "--gpus-per-task must be a whole number" in bad.stderr


def test_cifar_grid_lists_its_slurm_tasks_in_a_dry_run():
    env = {**os.environ, "DRY_RUN": "1", "TRIALS": "1", "DENSITIES": "5",
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "cifar_exec.sh"), "--slurm", "--time", "60",
                           "--gpus-per-task", "2", "--data", "/data"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "grid: 2 runs (1 densities × 1 trials × {normal, inverted})"
    assert [x.split()[0] for x in lines[1:3]] == ["[new]", "[new]"]      # the plan
    assert lines[3] == "would submit 2 tasks: sbatch --array=0-1 --time=60 --gpus-per-task=2"
    assert all("torch.distributed.run --standalone --nproc_per_node=2 main.py --config "
               "configs/cifar10/resnet20/gem_miner_5.yml" in x and x.endswith("--data /data "
                                                                              "--quiet")
               for x in lines[4:6]) and len(lines) == 6
