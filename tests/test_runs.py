"""Whole runs: the run-directory contract, TensorBoard events, skipping, --force, --dry-run,
pretrained / evaluate."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from conftest import only_run_dir, run_main, write_config
from models import InputSpec, build_model
from args_helper import resolve


def _run(argv):
    return main.main(argv)


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_directory_contract(tmp_path, digits_config):
    log_dir = tmp_path / "runs"
    assert _run(["--config", str(digits_config), "--log-dir", str(log_dir), "--quiet"]) == 0
    run_dir = only_run_dir(log_dir)
    cfg = resolve(["--config", str(digits_config)])
    assert run_dir.name == f"digits-training-s3-{cfg.run_hash()}"
    for name in ("config.yaml", "metrics.csv", "summary.json", "log.txt", "layer_density.csv",
                 "checkpoints/init.pt", "checkpoints/last.pt", "checkpoints/final.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))

    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["phase", "level", "epoch", "step", "lr", "train_loss", "train_acc",
                             "val_acc", "test_acc", "density_pct", "sparsity_pct", "seconds"]
    assert rows[-1]["step"] == str(3 * 10)            # 1,257 images / batch 128 → 10 steps
    assert float(rows[0]["lr"]) == 0.05 and float(rows[0]["density_pct"]) == 100.0

    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("algo", "arch", "dataset", "seed", "density_pct", "sparsity_pct", "test_acc",
                "val_acc", "wall_seconds", "status"):
        assert key in summary, key
    assert summary["status"] == "done" and summary["algo"] == "training"
    assert summary["seed"] == 3 and summary["sparsity_pct"] == 0.0
    assert summary["test_acc"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-4)
    assert summary["test_acc"] > 80          # LeNet-300-100 learns digits in 3 epochs

    # final.pt loads with plain torch and reproduces the reported test accuracy
    blob = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert blob["arch"] == "lenet_300_100" and blob["input"]["channels"] == 1
    import data
    model = build_model(cfg, InputSpec(**{"num_classes": 10, "channels": 1, "image_size": 8}))
    model.load_state_dict(blob["model"])
    splits = data.load_splits(cfg)
    loaders = data.make_loaders(splits, 128, torch.device("cpu"), 0)
    from utils.train import evaluate
    assert evaluate(model, loaders.test)["acc"] == pytest.approx(summary["test_acc"], abs=1e-4)

    density = (run_dir / "layer_density.csv").read_text().splitlines()
    assert density[0] == "layer,type,shape,params,zeros,density_pct"
    assert density[-1].startswith("total,,,") and ",64" not in density[-1]
    assert density[1].startswith("net.1,linear,300x64,19200,0,100")

    events = EventAccumulator(str(run_dir / "phases" / "train"))   # the phase's sub-run
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss", "train/acc", "val/acc", "test/acc", "lr", "density_pct"):
        assert tag in tags, tag
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3]
    assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["test_acc"], abs=1e-3)
    log = (run_dir / "log.txt").read_text()
    assert "epoch   3/3" in log and "per-layer density" in log
    assert "| run 3/3 epochs (100 %)" in log


def test_finished_run_is_skipped_and_force_starts_fresh(tmp_path, digits_config, capsys):
    log_dir = tmp_path / "runs"
    args = ["--config", str(digits_config), "--log-dir", str(log_dir), "--quiet",
            "--epochs", "1"]
    assert _run(args) == 0
    run_dir = only_run_dir(log_dir)
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(args) == 0
    assert "already finished" in capsys.readouterr().out
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
    # the saved config.yaml finds the same run
    assert _run(["--config", str(run_dir / "config.yaml")]) == 0
    assert "already finished" in capsys.readouterr().out
    assert _run(args + ["--force"]) == 0
    forced = log_dir / (run_dir.name + "-r2")
    assert forced.is_dir()
    # same config on CPU → identical numbers
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa
    assert strip(_rows(forced)) == strip(_rows(run_dir))


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, digits_config, capsys):
    log_dir = tmp_path / "runs"
    assert _run(["--config", str(digits_config), "--log-dir", str(log_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "algo: training" in out and "# ---- plan" in out
    assert "phase train: 3 epochs × ~10 steps (batch 128)" in out
    assert "train 1257 / val 180 / test 360 images" in out
    assert not log_dir.exists()


def test_quickstart_config_is_valid(capsys):
    assert _run(["--config", "configs/quickstart.yml", "--dry-run"]) == 0
    assert "dataset digits" in capsys.readouterr().out


def test_pretrained_and_evaluate(tmp_path, digits_config):
    log_dir = tmp_path / "runs"
    assert _run(["--config", str(digits_config), "--log-dir", str(log_dir), "--quiet"]) == 0
    run_dir = only_run_dir(log_dir)
    trained = json.loads((run_dir / "summary.json").read_text())
    final = run_dir / "checkpoints" / "final.pt"
    eval_dir = tmp_path / "eval"
    assert _run(["--config", str(digits_config), "--log-dir", str(eval_dir), "--quiet",
                 "--pretrained", str(final), "--evaluate"]) == 0
    evaluated = json.loads((only_run_dir(eval_dir) / "summary.json").read_text())
    assert evaluated["algo"] == "evaluate"
    assert evaluated["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-4)
    assert evaluated["val_acc"] == pytest.approx(trained["val_acc"], abs=1e-4)


def test_pretrained_of_another_arch_is_a_usage_error(tmp_path, digits_config):
    log_dir = tmp_path / "runs"
    assert _run(["--config", str(digits_config), "--log-dir", str(log_dir), "--quiet",
                 "--epochs", "1"]) == 0
    final = only_run_dir(log_dir) / "checkpoints" / "final.pt"
    proc = run_main(["--config", str(digits_config), "--log-dir", str(tmp_path / "other"),
                     "--arch", "resnet20", "--pretrained", str(final)])
    assert proc.returncode == 2 and "does not fit arch resnet20" in proc.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("dataset,arch", [("synthetic", "resnet20"), ("CIFAR10", "Conv4"),
                                          ("MNIST", "lenet_300_100")])
def test_short_runs_on_each_dataset(tmp_path, dataset, arch):
    from conftest import write_cifar10, write_mnist

    write_cifar10(tmp_path / "d")
    write_mnist(tmp_path / "d")
    cfg = write_config(tmp_path / "c.yml", f"""
algo: training
arch: {arch}
dataset: {dataset}
synthetic_size: 100
val_size: 10
epochs: 1
batch_size: 16
lr: 0.01
""")
    log_dir = tmp_path / "runs"
    assert _run(["--config", str(cfg), "--log-dir", str(log_dir), "--data",
                 str(tmp_path / "d"), "--download", "false", "--quiet"]) == 0
    summary = json.loads((only_run_dir(log_dir) / "summary.json").read_text())
    assert summary["status"] == "done" and summary["dataset"] == dataset
