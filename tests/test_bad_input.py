"""Every bad input: exit code 2, one line on stderr naming the culprit, nothing written."""
from __future__ import annotations

import os
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


# ----------------------------------------------------------------------------- hostile input
# (in process: main.main with the same exit code and one-line contract, without the start-up
# cost of a fresh interpreter per case)


def _in_process(tmp_path, capsys, text, *extra, log_dir=None):
    import main

    cfg = write_config(tmp_path / "bad.yml", text)
    log_dir = log_dir or tmp_path / "runs"
    code = main.main(["--config", str(cfg), "--log-dir", str(log_dir), "--quiet", *extra])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, captured)
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


BOMB = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"


@pytest.mark.parametrize("text,extra,needles", [
    # "billion laughs": aliases are refused before anything is expanded
    (DIGITS_CONFIG + BOMB + "milestones: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n", (),
     ("bad.yml:13", "aliases (*a) are not accepted")),
    (DIGITS_CONFIG + BOMB + "prune_ignore: *b\n", (), ("aliases",)),
    (DIGITS_CONFIG + "algo: snip\n", (),
     ("bad.yml:12", "'algo' is given twice with different values (lines 1 and 12)")),
    (DIGITS_CONFIG.replace("seed: 3", "seed: 18446744073709551616"), (),
     ("'seed'", "too large for a 64-bit integer")),
    (DIGITS_CONFIG.replace("seed: 3", "seed: 100000000000000000000000000"), (),
     ("'seed'", "too large")),
    (DIGITS_CONFIG, ("--seed", "99999999999999999999"), ("--seed", "too large")),
    (DIGITS_CONFIG, ("--seed", "4294967296"), ("--seed", "[0, 4294967295]")),
    (DIGITS_CONFIG + "synthetic_size: 1000000000000\n", (), ("'synthetic_size'", "1000000]")),
    (DIGITS_CONFIG + "iter_period: 1000000000000000000000000000000\n", (), ("'iter_period'",)),
    (DIGITS_CONFIG, ("--epochs", "1000000000"), ("--epochs", "[1, 100000]")),
    (DIGITS_CONFIG, ("--name", "x" * 300), ("--name", "300 bytes", "at most 200")),
    (DIGITS_CONFIG, ("--name", "../../x"), ("--name", "not a folder name", "inside log_dir")),
    (DIGITS_CONFIG, ("--name", "/tmp/elsewhere"), ("--name", "not a folder name")),
    (DIGITS_CONFIG, ("--subfolder", "../up"), ("--subfolder", "relative path inside")),
    (DIGITS_CONFIG.replace("training", "snip") + "target_sparsity: 1e-300\n", (),
     ("'target_sparsity'", "keeps none of the 50,200 prunable weights", "0.000996 %")),
])
def test_hostile_and_absurd_values_are_refused_in_one_line(tmp_path, capsys, text, extra,
                                                           needles):
    line = _in_process(tmp_path, capsys, text, *extra)
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "runs").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yml"]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_config_that_is_a_device_is_refused(tmp_path, capsys, device):
    import main

    assert main.main(["--config", device, "--log-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config path is not a regular file (a "
                                               f"device or pipe?): {device}")


def test_oversized_config_file_is_refused(tmp_path, capsys):
    import args_helper

    text = DIGITS_CONFIG + "# padding\n" * (args_helper.MAX_CONFIG_BYTES // 10)
    line = _in_process(tmp_path, capsys, text)
    assert f"larger than {args_helper.MAX_CONFIG_BYTES} bytes" in line


def test_log_dir_that_cannot_hold_a_run_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    line = _in_process(tmp_path, capsys, DIGITS_CONFIG, log_dir=tmp_path / "a_file" / "runs")
    assert "'log_dir'" not in line and "--log-dir" in line and "is a file, not a folder" in line
    line = _in_process(tmp_path, capsys, DIGITS_CONFIG, log_dir="/proc/runs")
    assert "cannot write /proc/runs/" in line and "creating a folder in /proc fails" in line

    class ReadOnly:          # what os.statvfs says on a read-only mount
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    line = _in_process(tmp_path, capsys, DIGITS_CONFIG)
    assert "is on a read-only file system" in line
    assert not (tmp_path / "runs").exists()
