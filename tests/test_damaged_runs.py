"""Damaged run directories, concurrent launches, signals and a full disk: every case either
recovers to exactly the uninterrupted run or stops with one line naming the file (exit 2
before anything is written, exit 1 with the partial results kept) — never a traceback or a
silently different result.  In-process runs of a 3-level IMP-WR on LeNet-300-100 / digits."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
from conftest import REPO, interrupt_training_at, only_run_dir, write_config

IMP = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
imp_rounds: 3
imp_rewind_iter: 3
batch_size: 128
optimizer: adam
lr: 0.0012
seed: 5
"""
# training epochs (calls of utils.phases.train_epoch): level 0 → 1, 2; level 1 → 3, 4;
# level 2 → 5, 6


def _run(config, log_dir, *extra) -> int:
    return main.main(["--config", str(config), "--log-dir", str(log_dir), "--quiet", *extra])


def _table(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _weights(run_dir, name="final.pt") -> dict:
    blob = torch.load(run_dir / "checkpoints" / name, weights_only=True)
    return blob["model"] if "model" in blob else blob["trained"]


def assert_same_run(run_dir, reference) -> None:
    """Finished with exactly the reference's results (CPU: bit-identical)."""
    for table in ("metrics.csv", "levels.csv"):
        assert _table(run_dir / table) == _table(reference / table), table
    ours, ref = _weights(run_dir), _weights(reference)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "done"


def snapshot(folder) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def one_error_line(capsys, *needles) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.out + captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def imp_config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("config") / "imp.yml", IMP)


@pytest.fixture(scope="module")
def reference(imp_config, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("reference") / "runs"
    assert _run(imp_config, log_dir) == 0
    return only_run_dir(log_dir)


def _stopped_at(imp_config, folder, call: int):
    with pytest.MonkeyPatch.context() as mp:
        interrupt_training_at(mp, call)
        assert _run(imp_config, folder / "runs") == 130
    return folder / "runs"


@pytest.fixture(scope="module")
def in_level_1(imp_config, tmp_path_factory):
    """A run stopped in level 1 (its level 0 recorded in last.pt's file list)."""
    return _stopped_at(imp_config, tmp_path_factory.mktemp("level1"), 4)


@pytest.fixture(scope="module")
def after_level_0(imp_config, tmp_path_factory):
    """A run stopped right after level 0 (level_00.pt written after the last last.pt)."""
    return _stopped_at(imp_config, tmp_path_factory.mktemp("level0"), 3)


def _copy(log_dir, tmp_path):
    target = tmp_path / "runs"
    shutil.copytree(log_dir, target)
    return target, only_run_dir(target)


# ----------------------------------------------------------------------------- refused at start


def _damage_last(run_dir, how: str) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    data = last.read_bytes()
    if how == "truncated":
        last.write_bytes(data[:5000])
    elif how == "empty":
        last.write_bytes(b"")
    elif how == "garbage":
        last.write_bytes(bytes(range(256)) * 20)
    elif how == "text":
        last.write_text("hello\n")
    elif how == "foreign":
        shutil.copy(run_dir / "checkpoints" / "init.pt", last)
    elif how == "another_run":
        ckpt = torch.load(last, weights_only=True)
        ckpt["config_hash"] = "0badc0de"
        torch.save(ckpt, last)
    elif how == "missing":
        last.unlink()


@pytest.mark.parametrize("how,needle", [
    ("truncated", "not a complete PyTorch checkpoint"), ("empty", "empty or cut short"),
    ("garbage", "last.pt is not"), ("text", "not a PyTorch checkpoint"),
    ("foreign", "not a resume checkpoint of this tool"),
    ("another_run", "belongs to another run"), ("missing", "holds results of an earlier")])
def test_damaged_or_missing_last_pt_is_refused_naming_it(imp_config, in_level_1, tmp_path,
                                                         capsys, how, needle):
    log_dir, run_dir = _copy(in_level_1, tmp_path)
    _damage_last(run_dir, how)
    before = snapshot(log_dir)
    assert _run(imp_config, log_dir) == 2
    one_error_line(capsys, "checkpoints/last.pt", needle, "--force")
    assert snapshot(log_dir) == before


@pytest.mark.parametrize("name", ["level_00.pt", "rewind.pt", "level_00.json", "init.pt"])
def test_missing_checkpoint_the_run_relies_on_is_refused(imp_config, in_level_1, tmp_path,
                                                         capsys, name):
    log_dir, run_dir = _copy(in_level_1, tmp_path)
    (run_dir / "checkpoints" / name).unlink()
    before = snapshot(log_dir)
    assert _run(imp_config, log_dir) == 2
    one_error_line(capsys, f"checkpoints/{name} is missing", "restore it", "--force")
    assert snapshot(log_dir) == before


def test_unreadable_level_record_found_during_the_run_fails_in_one_line(
        imp_config, in_level_1, tmp_path, capsys):
    log_dir, run_dir = _copy(in_level_1, tmp_path)
    (run_dir / "checkpoints" / "level_00.json").write_text("{not json")
    assert _run(imp_config, log_dir) == 1
    one_error_line(capsys, "checkpoints/level_00.json is not a readable level record",
                   "partial results are in")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert (run_dir / "checkpoints" / "last.pt").is_file()     # partial results kept


def test_resume_refuses_an_edited_config_yaml(imp_config, in_level_1, tmp_path, capsys):
    log_dir, run_dir = _copy(in_level_1, tmp_path)
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("lr: 0.0012", "lr: 0.05"))
    before = snapshot(log_dir)
    assert main.main(["--resume", str(run_dir), "--quiet"]) == 2
    one_error_line(capsys, "--resume", "different config")
    assert _run(imp_config, log_dir) == 2                        # the plain command too
    one_error_line(capsys, "different config")
    assert snapshot(log_dir) == before


def test_resume_refuses_a_folder_that_is_not_a_run_directory(imp_config, in_level_1, tmp_path,
                                                             capsys):
    plain = tmp_path / "etc"
    plain.mkdir()
    (plain / "passwd").write_text("x\n")
    renamed = tmp_path / "my-run"
    shutil.copytree(only_run_dir(in_level_1), renamed)
    (renamed / "checkpoints" / "last.pt").unlink()
    for folder, needle in ((plain, "no config.yaml"), (renamed, "does not end in -<hash8>")):
        before = snapshot(folder)
        assert main.main(["--resume", str(folder), "--config", str(imp_config), "--quiet"]) == 2
        one_error_line(capsys, "not a run directory of this tool", needle)
        assert snapshot(folder) == before


# ----------------------------------------------------------------------------- exact recovery


def test_lost_unrecorded_checkpoint_and_leftover_temporaries_recover_exactly(
        imp_config, after_level_0, reference, tmp_path, capsys):
    log_dir, run_dir = _copy(after_level_0, tmp_path)
    # level_00.pt was written after the last last.pt: it is recomputed from last.pt's model
    (run_dir / "checkpoints" / "level_00.pt").unlink()
    (run_dir / "checkpoints" / "level_00.json").unlink()
    for leftover in ("checkpoints/.last.pt.k2j4.tmp", ".metrics.csv.x9.tmp"):
        (run_dir / leftover).write_bytes(b"\0" * 1000)          # what a SIGKILL leaves
    assert _run(imp_config, log_dir) == 0
    assert "removed 2 unfinished temporary file(s)" in capsys.readouterr().out
    assert not list(run_dir.rglob("*.tmp"))
    assert_same_run(run_dir, reference)
    start, ref_start = (torch.load(d / "checkpoints" / "level_00.pt", weights_only=True)["start"]
                        for d in (run_dir, reference))
    assert all(torch.equal(start[k], ref_start[k]) for k in ref_start)


def test_summary_lost_after_the_end_is_recomputed(imp_config, reference, tmp_path):
    log_dir, run_dir = _copy(reference.parent, tmp_path)
    (run_dir / "summary.json").unlink()
    assert _run(imp_config, log_dir) == 0
    ours = json.loads((run_dir / "summary.json").read_text())
    ref = json.loads((reference / "summary.json").read_text())
    differ = {k for k in ref if ours.get(k) != ref[k]}
    assert differ <= {"wall_seconds", "run_dir"}, differ


# ----------------------------------------------------------------------------- concurrency


def test_launch_while_another_process_holds_the_run_is_refused(imp_config, in_level_1,
                                                                 tmp_path, capsys):
    from utils.run_dir import take_lock

    log_dir, run_dir = _copy(in_level_1, tmp_path)
    lock = take_lock(str(run_dir))          # as the first launch holds it
    try:
        before = snapshot(log_dir)
        assert _run(imp_config, log_dir) == 2
        one_error_line(capsys, str(run_dir), "in use by another process")
        assert snapshot(log_dir) == before
    finally:
        lock.close()


def test_run_finished_by_another_launch_meanwhile_is_not_finished_twice(imp_config, tmp_path,
                                                                         capsys):
    import args_helper

    log_dir = tmp_path / "runs"
    cfg = args_helper.resolve(["--config", str(imp_config), "--log-dir", str(log_dir),
                               "--quiet"])
    late = main.prepare(cfg)                  # looked before the run directory existed
    assert late is not None and late.lock is None
    assert _run(imp_config, log_dir) == 0      # the other launch runs it to the end
    run_dir = only_run_dir(log_dir)
    before = snapshot(log_dir)
    capsys.readouterr()
    assert main.execute(late) == 0
    assert "already finished" in capsys.readouterr().out
    assert snapshot(log_dir) == before
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1


# ----------------------------------------------------------------------------- signals, disk


def test_sigterm_saves_the_state_and_the_rerun_is_exact(imp_config, reference, tmp_path,
                                                        monkeypatch, capsys):
    import utils.phases

    real, calls = utils.phases.train_epoch, {"n": 0}

    def terminated(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)      # main() turns it into Ctrl-C
        return real(*args, **kwargs)

    monkeypatch.setattr(utils.phases, "train_epoch", terminated)
    log_dir = tmp_path / "runs"
    assert _run(imp_config, log_dir) == 130
    run_dir = only_run_dir(log_dir)
    assert f"interrupted: state saved in {run_dir}/checkpoints/last.pt" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is not main._interrupt     # handler restored
    monkeypatch.setattr(utils.phases, "train_epoch", real)
    assert _run(imp_config, log_dir) == 0
    assert_same_run(run_dir, reference)


def test_interrupt_during_a_checkpoint_write_waits_for_the_write(tmp_path, monkeypatch):
    from utils import checkpoint

    real_save = torch.save

    def save_interrupted(obj, handle):
        handle.write(b"")                           # the write has begun
        os.kill(os.getpid(), signal.SIGINT)         # Ctrl-C now: noted, not raised
        real_save(obj, handle)

    monkeypatch.setattr(checkpoint.torch, "save", save_interrupted)
    path = tmp_path / "last.pt"
    # Python's own Ctrl-C handler (a session started in the background may ignore SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save_checkpoint({"w": torch.arange(100_000)}, str(path))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert torch.equal(checkpoint.load_checkpoint(str(path))["w"], torch.arange(100_000))
    assert os.listdir(tmp_path) == ["last.pt"]      # complete file, no temporary left


def test_interrupt_during_start_up_is_one_line(imp_config, tmp_path, monkeypatch, capsys):
    import data

    def interrupted(cfg, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_splits", interrupted)
    assert _run(imp_config, tmp_path / "runs") == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "interrupted; run the same command again to continue"
    assert "Traceback" not in captured.out and not (tmp_path / "runs").exists()


def test_real_ctrl_c_at_any_moment_of_start_up_gives_no_traceback(imp_config, tmp_path):
    # a real SIGINT 1 s in: inside the torch import (held until it ends), data loading or
    # training, depending on the machine's speed; each way one line and exit 130
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), "--config", str(imp_config), "--log-dir",
         str(tmp_path / "runs"), "--quiet", "--epochs", "400", "--iter-period", "200"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err and "interrupted" in out + err


def test_full_disk_is_named_and_the_rerun_after_freeing_space_is_exact(
        imp_config, reference, tmp_path, monkeypatch, capsys):
    import utils.phases
    from utils import checkpoint

    real_write, real_epoch = checkpoint._Writer.write, utils.phases.train_epoch
    full = {"on": False, "calls": 0}

    def write(self, data):
        if full["on"]:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        return real_write(self, data)

    def epoch(*args, **kwargs):
        full["calls"] += 1
        full["on"] = full["calls"] == 4          # the disk fills up during epoch 4
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(checkpoint._Writer, "write", write)
    monkeypatch.setattr(utils.phases, "train_epoch", epoch)
    log_dir = tmp_path / "runs"
    assert _run(imp_config, log_dir) == 1
    run_dir = only_run_dir(log_dir)
    one_error_line(capsys, "the disk is full", f"{run_dir}/checkpoints/last.pt",
                   "partial results are in")
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(checkpoint._Writer, "write", real_write)
    monkeypatch.setattr(utils.phases, "train_epoch", real_epoch)
    assert _run(imp_config, log_dir) == 0
    assert_same_run(run_dir, reference)
