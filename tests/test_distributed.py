"""torchrun / DistributedDataParallel on CPU (gloo): two processes with batch 32 each train
the same IMP run as one process with batch 64, rank 0 alone writes, ranks' masks agree,
resume works, and bad distributed options are one-line errors (exit 2)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_main, write_config

import args_helper
from utils import distributed
from utils.errors import ConfigError

IMP_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
imp_rounds: {rounds}
imp_rewind_iter: 3
batch_size: {batch}
optimizer: sgd
momentum: 0.9
lr: 0.05
lr_policy: cosine_lr
device: cpu
seed: 1
"""

# measured on 2 CPU cores: test accuracies equal to the digit (the 360-image test set), masks
# equal, weights within 2e-7; the tolerances below leave room for other CPUs' float rounding
ACC_TOLERANCE = 0.6          # percentage points (2 of 360 test images)
MASK_TOLERANCE = 5e-4        # share of prunable weights whose mask may differ (ties)
WEIGHT_TOLERANCE = 1e-4


def torchrun(args: list[str], env: dict, nproc: int = 2, timeout: float = 240):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run",
                           f"--nproc_per_node={nproc}", "--standalone", str(REPO / "main.py"),
                           *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def _levels(run_dir) -> list[dict]:
    with open(run_dir / "levels.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _checkpoint(run_dir, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_two_gloo_processes_equal_one_process_with_the_global_batch(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    one = write_config(tmp_path / "imp.yml", IMP_CONFIG.format(rounds=2, batch=64))
    short = write_config(tmp_path / "imp.yml.1", IMP_CONFIG.format(rounds=1, batch=32))
    per_rank = write_config(tmp_path / "imp_dist.yml", IMP_CONFIG.format(rounds=2, batch=32))

    single = run_main(["--config", str(one), "--log-dir", str(tmp_path / "single"),
                       "--name", "imp", "--quiet"], env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    # level 0 under torchrun, then the run extended to level 1: the second launch resumes
    # from the run directory (every rank reads rank 0's checkpoints)
    first = torchrun(["--config", str(short), "--log-dir", str(tmp_path / "dist"),
                      "--name", "imp", "--quiet"], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = torchrun(["--config", str(per_rank), "--log-dir", str(tmp_path / "dist"),
                       "--name", "imp", "--quiet"], env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "(resuming)" in second.stdout

    # the global batch defines the run: same directory name (hash) as the 1-process run
    single_dir = next((tmp_path / "single").iterdir())
    dist_runs = [p for p in (tmp_path / "dist").iterdir() if p.is_dir()]
    assert [p.name for p in dist_runs] == [single_dir.name]
    dist_dir = dist_runs[0]
    resolved = args_helper.resolve(["--config", str(dist_dir / "config.yaml")])
    assert resolved.batch_size == 64 and resolved.batch_size_is_global

    summary = json.loads((dist_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["levels"] == 2
    assert summary["distributed"] == {"world_size": 2, "global_batch": 64,
                                      "batch_per_process": 32, "backend": "gloo",
                                      "masks_agree": True, "weights_agree": True}
    # rank 1 printed nothing and wrote nothing that outlives the run
    assert len(re.findall(r"^level 1: density", second.stdout, re.M)) == 1
    assert [p for p in scratch.iterdir() if p.name.startswith("lth-rank")] == []

    a, b = _levels(single_dir), _levels(dist_dir)
    assert [r["density_pct"] for r in a] == [r["density_pct"] for r in b]
    diffs = [abs(float(x["test_acc"]) - float(y["test_acc"])) for x, y in zip(a, b)]
    assert len(diffs) == 2 and max(diffs) <= ACC_TOLERANCE, diffs

    ca, cb = _checkpoint(single_dir, "level_01.pt"), _checkpoint(dist_dir, "level_01.pt")
    total = sum(m.numel() for m in ca["masks"].values())
    differing = sum(int((ca["masks"][k] != cb["masks"][k]).sum()) for k in ca["masks"])
    assert differing <= MASK_TOLERANCE * total, (differing, total)
    if differing == 0:
        worst = max((ca["trained"][k].float() - cb["trained"][k].float()).abs().max().item()
                    for k in ca["trained"])
        assert worst <= WEIGHT_TOLERANCE


def test_config_errors_under_torchrun_exit_2_on_every_rank(tmp_path):
    cfg = write_config(tmp_path / "imp.yml", IMP_CONFIG.format(rounds=1, batch=33)
                       + "batch_size_is_global: true\n")
    proc = torchrun(["--config", str(cfg), "--log-dir", str(tmp_path / "runs")], {})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "batch_size" in errors[0] and "multiple of the 2" in errors[0]
    assert re.search(r"exitcode\s*:\s*2", proc.stderr)        # rank 0 (others may be stopped)
    assert not (tmp_path / "runs").exists()


def _env(world: int, rank: int = 0, local_world: int | None = None, node: int = 0) -> dict:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(local_world or world), "GROUP_RANK": str(node)}


def test_launch_detection_and_global_batch():
    assert distributed.from_env({}) is None
    assert distributed.from_env(_env(1)) is None              # a world of one: plain run
    env = distributed.from_env(_env(4, rank=3, local_world=2, node=1))
    assert (env.world_size, env.nodes, env.node_rank) == (4, 2, 1)
    cfg = args_helper.resolve(["--algo", "training", "--batch-size", "32"])
    assert distributed.configure(cfg, env, []).batch_size == 128
    glob = args_helper.resolve(["--algo", "training", "--batch-size", "32",
                                "--batch-size-is-global", "true"])
    assert distributed.configure(glob, env, []).batch_size == 32
    assert distributed.configure(cfg, None, []).batch_size == 32   # single process: as is
    assert distributed.configure(cfg.replace(world_size=2, rank=1), env, []).batch_size == 128


@pytest.mark.parametrize("flags, env, message", [
    (["--world-size", "2"], None, r"world.size.*torchrun --nnodes=2"),
    (["--rank", "1"], None, r"rank.*node rank"),
    (["--world-size", "3"], _env(2), r"world.size.*started 1 node"),
    (["--rank", "1"], _env(2), r"rank.*this is node 0"),
    (["--batch-size", "5", "--batch-size-is-global", "true"], _env(2),
     r"batch.size.*multiple of the 2 processes"),
])
def test_bad_distributed_options_name_the_option(flags, env, message):
    cfg = args_helper.resolve(["--algo", "training", *flags])
    with pytest.raises(ConfigError, match=message):
        distributed.configure(cfg, None if env is None else distributed.from_env(env), [])


def test_backend_choice():
    cfg = args_helper.resolve(["--algo", "training"])
    assert distributed.backend_for(cfg, torch.device("cpu")) == "gloo"
    assert distributed.backend_for(cfg, torch.device("cuda", 0)) == "nccl"
    nccl = args_helper.resolve(["--algo", "training", "--dist-backend", "nccl"])
    with pytest.raises(ConfigError, match="dist.backend.*nccl needs CUDA"):
        distributed.backend_for(nccl, torch.device("cpu"))
    with pytest.raises(ConfigError, match="dist.backend"):
        args_helper.resolve(["--algo", "training", "--dist-backend", "mpi"])


def test_sharded_loader_slices_the_global_batch():
    from data.loader import DeviceLoader

    images = torch.arange(10 * 4, dtype=torch.uint8).view(10, 1, 2, 2)
    labels = torch.arange(10)
    whole = DeviceLoader(images, labels, 4, (0.0,), (1.0,), "cpu", train=True, seed=5)
    parts = [DeviceLoader(images, labels, 4, (0.0,), (1.0,), "cpu", train=True, seed=5)
             for _ in range(2)]
    for rank, part in enumerate(parts):
        part.shard(rank, 2)
    assert len(whole) == len(parts[0]) == 3
    for full, (lo, hi) in zip(whole, zip(*parts)):
        assert torch.equal(full[1], torch.cat([lo[1], hi[1]]))
    tests = [DeviceLoader(images, labels, 4, (0.0,), (1.0,), "cpu", train=False)
             for _ in range(2)]
    for rank, part in enumerate(tests):
        part.shard(rank, 2)
    seen = torch.cat([y for part in tests for _, y in part])
    assert torch.equal(seen, labels)


def test_upstream_multiprocessing_flag_names_the_torchrun_command(monkeypatch):
    cfg = args_helper.resolve(["--algo", "training", "--multiprocessing-distributed", "true"])
    assert distributed.configure(cfg, None, []) is cfg      # CPU / one GPU: one process
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    argv = ["--config", "x.yml", "--seed", "2"]
    with pytest.raises(ConfigError, match=r"multiprocessing.distributed.*torchrun "
                                          r"--nproc_per_node=4 main.py --config x.yml --seed 2$"):
        distributed.configure(cfg, None, argv)
    on_cpu = cfg.replace(device="cpu")
    assert distributed.configure(on_cpu, None, argv) is on_cpu


def test_torchrun_run_stopped_mid_level_resumes_like_an_uninterrupted_run(tmp_path):
    import signal
    import time

    config = IMP_CONFIG.format(rounds=2, batch=32).replace("iter_period: 2", "iter_period: 12")
    cfg = write_config(tmp_path / "imp.yml", config)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    single = run_main(["--config", str(cfg), "--batch-size", "64", "--log-dir",
                       str(tmp_path / "single"), "--quiet"], env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TMPDIR=str(scratch))
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--standalone", str(REPO / "main.py"), "--config", str(cfg), "--log-dir",
            str(tmp_path / "dist"), "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        metrics = list((tmp_path / "dist").glob("*/metrics.csv"))
        rows = len(metrics[0].read_text().splitlines()) - 1 if metrics else 0
        if rows >= 15:                       # inside level 1 (epochs 13-24)
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)         # what torchrun passes on for Ctrl-C / preemption
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    run_dir = next((tmp_path / "dist").iterdir())
    assert not (run_dir / "summary.json").exists()
    assert [p for p in scratch.iterdir() if p.name.startswith("lth-rank")] == []

    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming level_01" in again.stdout or "resuming level_00" in again.stdout
    a, b = _levels(next((tmp_path / "single").iterdir())), _levels(run_dir)
    diffs = [abs(float(x["test_acc"]) - float(y["test_acc"])) for x, y in zip(a, b)]
    assert len(diffs) == 2 and max(diffs) <= ACC_TOLERANCE, diffs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["distributed"]["masks_agree"] and summary["distributed"]["weights_agree"]
