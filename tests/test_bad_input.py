"""Every bad input: exit code 2, one line on stderr naming the culprit, nothing written."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DIGITS_CONFIG, run_main, write_config


def _assert_usage_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _run_with_file(tmp_path: Path, text: str, *extra: str):
    cfg = write_config(tmp_path / "bad.yml", text)
    log_dir = tmp_path / "runs"
    proc = run_main(["--config", str(cfg), "--log-dir", str(log_dir), *extra])
    assert not log_dir.exists(), "nothing may be written on a usage error"
    return proc


def test_unknown_key_with_suggestion(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "momentun: 0.8\n")
    line = _assert_usage_error(proc, "bad.yml:", "'momentun'", "did you mean 'momentum'")
    assert "bad.yml:12:" in line  # the line number of the key


def test_unknown_cli_option_with_suggestion(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG, "--fine-tune-lrr", "0.1")
    _assert_usage_error(proc, "--fine-tune-lrr", "did you mean '--fine-tune-lr'")


def test_wrong_type(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG.replace("epochs: 3", "epochs: three"))
    _assert_usage_error(proc, "bad.yml:4", "'epochs'", "expects an integer", "'three'")


def test_target_sparsity_out_of_range(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "target_sparsity: 150\n")
    _assert_usage_error(proc, "'target_sparsity'", "(0, 100]", "150")
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "target_sparsity: 0\n")
    _assert_usage_error(proc, "'target_sparsity'", "(0, 100]")


def test_negative_learning_rate(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG, "--lr", "-0.1")
    _assert_usage_error(proc, "--lr", ">= 0", "-0.1")


@pytest.mark.parametrize("key,value,listed", [
    ("arch", "resnet21", "resnet20"),
    ("dataset", "CIFAR11", "CIFAR10"),
    ("algo", "imp_xx", "training"),
])
def test_unknown_names_list_the_valid_ones(tmp_path, key, value, listed):
    text = "\n".join(line for line in DIGITS_CONFIG.strip().splitlines()
                     if not line.startswith(key + ":")) + f"\n{key}: {value}\n"
    proc = _run_with_file(tmp_path, text)
    _assert_usage_error(proc, f"'{key}'", "must be one of", listed, repr(value))


def test_arch_too_deep_for_the_image_size(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG.replace("lenet_300_100", "vgg16"))
    _assert_usage_error(proc, "'arch'", "at least 32×32", "got 8")


def test_multi_node_world_size_without_torchrun_names_the_command(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "world_size: 2\n")
    _assert_usage_error(proc, "'world_size'", "torchrun --nnodes=2")


def test_malformed_yaml_names_the_line(tmp_path):
    proc = _run_with_file(tmp_path, "algo: training\nlr: [0.1\nepochs: 3\n")
    _assert_usage_error(proc, "bad.yml", "malformed YAML", "line")


def test_unsupported_upstream_feature(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "uv_decomp: True\n")
    _assert_usage_error(proc, "'uv_decomp'", "upstream feature not supported here")


def test_missing_config_file(tmp_path):
    proc = run_main(["--config", str(tmp_path / "nope.yml"), "--log-dir",
                     str(tmp_path / "runs")])
    _assert_usage_error(proc, "config file not found", "nope.yml")
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_files_say_where_and_how(tmp_path):
    text = DIGITS_CONFIG.replace("dataset: digits", "dataset: CIFAR10")
    proc = _run_with_file(tmp_path, text, "--data", str(tmp_path / "nodata"),
                          "--download", "false")
    _assert_usage_error(proc, "CIFAR10 files not found", "looked in",
                        str(tmp_path / "nodata" / "cifar-10-batches-py"), "download")
    assert not (tmp_path / "nodata").exists()


def test_missing_mnist_files(tmp_path):
    text = DIGITS_CONFIG.replace("dataset: digits", "dataset: MNIST")
    proc = _run_with_file(tmp_path, text, "--data", str(tmp_path / "nodata"),
                          "--download", "false")
    _assert_usage_error(proc, "MNIST files not found", "train-images-idx3-ubyte")


def test_command_line_flag_in_yaml(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "dry_run: true\n")
    _assert_usage_error(proc, "'dry_run'", "command-line flag")


def test_bad_milestones(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "milestones: [5, 2]\n")
    _assert_usage_error(proc, "'milestones'", "increasing")


def test_val_size_too_large(tmp_path):
    proc = _run_with_file(tmp_path, DIGITS_CONFIG + "val_size: 5000\n")
    _assert_usage_error(proc, "val_size 5000")


def test_existing_run_not_overwritten_on_error(tmp_path, digits_config):
    log_dir = tmp_path / "runs"
    assert run_main(["--config", str(digits_config), "--log-dir", str(log_dir), "--quiet",
                     "--epochs", "1"]).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in log_dir.rglob("*")}
    proc = run_main(["--config", str(digits_config), "--log-dir", str(log_dir), "--epochs",
                     "1", "--momentum", "2"])
    _assert_usage_error(proc, "--momentum", "[0, 1)")
    assert {p: p.stat().st_mtime_ns for p in log_dir.rglob("*")} == before
