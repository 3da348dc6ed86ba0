"""The benchmark scripts the GPU check runs (bench/gpu_check.sh) still run and print their
tables: a GPU session has minutes, so a broken script must be caught here, on the CPU.
Nothing here times anything; the numbers the scripts print are not asserted."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import train_speed  # bench/ is not a package: imported from its folder


def _run(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_train_speed_prints_every_requested_row():
    out = _run("bench/train_speed.py", "--device", "cpu", "--steps", "2", "--warmup", "1",
               "--workers", "0", "--images", "600", "--paths", "eager",
               "--replicates", "2", "--packings", "streams,vmap")
    labels = [line[:26].strip() for line in out.splitlines() if line.startswith("(")]
    assert labels == ["(a) reference, fp32", "(b) eager", "(c) packed streams M=2",
                      "(c) packed vmap M=2"], out


def test_train_speed_refuses_graph_paths_without_cuda():
    done = subprocess.run([sys.executable, "bench/train_speed.py", "--device", "cpu",
                           "--paths", "eager,graph"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        "--paths: graph paths need --device cuda")


def test_graph_check_compares_every_step_kind():
    out = _run("bench/graph_check.py", "--device", "cpu", "--steps", "2")
    verdicts = {line.split()[0]: line.split()[-1] for line in out.splitlines()
                if line.split() and line.split()[0] in
                {"training", "gem_miner", "edge_popup", "gradual"}}
    assert verdicts == {"training": "ok", "gem_miner": "ok", "edge_popup": "ok",
                        "gradual": "ok"}, out


def test_compile_break_even_arithmetic(capsys):
    # 100 steps: graph 1.0 s, compile+graph 0.5 s -> 5 ms saved per step; set-up 2 s vs 32 s
    measured = {"graph": {"seconds": 1.0, "setup_seconds": 2.0},
                "compile+graph": {"seconds": 0.5, "setup_seconds": 32.0}}
    train_speed.print_compile_break_even(measured, steps=100)
    out = capsys.readouterr().out
    assert "extra set-up after 6,000 steps (5.000 ms saved per step)" in out
    measured["compile+graph"]["seconds"] = 1.2
    train_speed.print_compile_break_even(measured, steps=100)
    assert "never (compiled steps are not faster)" in capsys.readouterr().out
    train_speed.print_compile_break_even({"graph": measured["graph"]}, steps=100)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("script", ["bench/gpu_check.sh"])
def test_gpu_check_script_parses(script):
    done = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_compare_runs_reports_rows_and_weight_differences(tmp_path, capsys):
    import compare_runs

    from utils.checkpoint import save_checkpoint

    weights = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([4.0]),
               "mask": torch.tensor([True, False])}
    for name, shift in (("A", 0.0), ("B", 0.5)):
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "metrics.csv").write_text("phase,epoch,train_loss,test_acc\n"
                                         f"level,1,{1.5 + shift},80.0\n")
        state = dict(weights, b=weights["b"] + shift)
        save_checkpoint({"model": state}, str(run / "checkpoints" / "final.pt"))
    assert compare_runs.main([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    out = capsys.readouterr().out
    assert "level              1        1.5        2.0    80.0    80.0" in out
    # 'mask' is not floating point; 'a' equal; 'b' 4.0 against 4.5: 0.5 absolute, 0.5/4.5
    assert "final weights: 1/2 tensors bitwise equal; largest difference 0.5 absolute, " \
           "0.111 relative" in out
    assert compare_runs.main([str(tmp_path / "A"), str(tmp_path / "missing")]) == 2
