"""Packed replicates of IMP, and resuming packed runs (issue 7).

Copy k of a packed IMP run must be the run of its seed: the same masks at every level (each
copy pruned by its own weights), the same rewind point, levels.csv, controls and ticket.  An
interrupted packed run must resume to the uninterrupted result, and a copy's checkpoints are
in the single-run format (a single run of the copy's config resumes them).
"""
from __future__ import annotations

import csv
import json
import os

import pytest
import torch

import main
from tests.conftest import interrupt_training_at, write_config

IMP_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
prune_rate: 0.2
target_sparsity: 64
imp_rewind_iter: 5
imp_controls: [reinit, random_mask, supermask]
stability_copies: 2
stability_levels: [1]
batch_size: 64
optimizer: adam
lr: 0.0012
lr_policy: constant_lr
seed: 3
name: rep
"""

TRAIN_CONFIG = """
algo: training
arch: lenet_300_100
dataset: digits
epochs: 3
batch_size: 64
optimizer: sgd
lr: 0.05
momentum: 0.9
seed: 3
name: rep
"""


AT_INIT_CONFIG = """
algo: snip
arch: lenet_300_100
dataset: digits
target_sparsity: 5
prune_batches: 3
at_init_controls: [reinit, shuffle_mask]
epochs: 2
batch_size: 64
optimizer: adam
lr: 0.0012
lr_policy: constant_lr
seed: 3
name: rep
"""


def _run(config: str, log_dir, *args) -> int:
    return main.main(["--config", str(config), "--log-dir", str(log_dir), "--quiet", *args])


def _dirs(root) -> dict:
    return {name: os.path.join(root, name) for name in sorted(os.listdir(root))}


def _rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


def _same_rows(a: list[dict], b: list[dict], loss_tol: float = 1e-4) -> bool:
    """Equal tables, except that losses and distances may differ by `loss_tol` (float
    rounding where the two runs used different kernels); accuracies and error barriers
    (counts of images) must be equal."""
    if len(a) != len(b) or any(x.keys() != y.keys() for x, y in zip(a, b)):
        return False
    for x, y in zip(a, b):
        for key, value in x.items():
            if ("loss" in key or "dist" in key) and value and y[key]:
                if abs(float(value) - float(y[key])) > loss_tol:
                    return False
            elif value != y[key]:
                return False
    return True


def _load(path) -> dict:
    return torch.load(path, weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _files(run_dir) -> set:
    out = set()
    for folder, _, names in os.walk(run_dir):
        for name in names:
            if not name.startswith("events.out.tfevents") and name != ".lock":
                out.add(os.path.relpath(os.path.join(folder, name), run_dir))
    return out


@pytest.fixture(scope="module")
def packed_imp(tmp_path_factory):
    """One uninterrupted packed IMP run (2 copies: seeds 3 and 4)."""
    folder = tmp_path_factory.mktemp("packed_imp")
    config = write_config(folder / "imp.yml", IMP_CONFIG)
    assert _run(config, folder / "packed", "--replicates", "2") == 0
    return folder, config


def test_the_registry_names_exactly_the_algorithms_that_pack():
    """PACKED_ALGOS (what config validation accepts with replicates > 1) is the set of
    algorithms whose `Algorithm` has `jobs` or `run_packed` (what the packed driver runs)."""
    from pruners import get_algorithm
    from pruners.registry import ALGORITHMS, PACKED_ALGOS

    packing = {name for name, algorithm in ((n, get_algorithm(n)) for n in ALGORITHMS)
               if algorithm.jobs is not None or algorithm.run_packed is not None}
    assert packing == set(PACKED_ALGOS)
    assert len(PACKED_ALGOS) == len(set(PACKED_ALGOS)) == 10


def test_packed_imp_copies_equal_the_runs_of_their_seeds(packed_imp):
    folder, config = packed_imp
    packed = _dirs(folder / "packed")
    assert len(packed) == 2
    for seed in (3, 4):
        assert _run(config, folder / "single", "--seed", str(seed)) == 0
    single = _dirs(folder / "single")
    assert single.keys() == packed.keys()           # copy k = the run dir of seed 3 + k
    for name, alone in single.items():
        copy = packed[name]
        assert _files(copy) == _files(alone)
        levels = _rows(os.path.join(copy, "levels.csv"))
        assert [r["density_pct"] for r in levels] == ["100", "80", "64"]
        # packing: streams (the default) runs each copy's own step function, the
        # computation of the single run repeated: everything is bit-identical
        for table in ("levels.csv", "controls.csv", "stability.csv", "metrics.csv"):
            assert _same_rows(_rows(os.path.join(copy, table)),
                              _rows(os.path.join(alone, table)), loss_tol=0.0), table
        for level in range(3):
            a, b = (_load(os.path.join(d, "checkpoints", f"level_{level:02d}.pt"))
                    for d in (copy, alone))
            for name_, mask in a["masks"].items():          # each copy's own masks, exactly
                assert torch.equal(mask, b["masks"][name_]), (level, name_)
            assert _max_diff(a["trained"], b["trained"]) == 0.0
        assert _max_diff(_load(os.path.join(copy, "checkpoints", "rewind.pt"))["model"],
                         _load(os.path.join(alone, "checkpoints", "rewind.pt"))["model"]) == 0
        summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (copy, alone)]
        assert summaries[0]["packed_replicates"] == 2
        for key in ("seed", "test_acc", "level_test_acc", "level_density_pct", "controls"):
            assert summaries[0][key] == summaries[1][key], key
    # the two copies are different runs: their masks differ
    masks = [_load(os.path.join(d, "ticket.pt"))["masks"] for d in packed.values()]
    assert any(not torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
    # rerunning the packed config finds both copies finished
    assert _run(config, folder / "packed", "--replicates", "2") == 0


def test_interrupted_packed_imp_resumes_to_the_uninterrupted_run(packed_imp, tmp_path,
                                                                 monkeypatch):
    folder, config = packed_imp
    restore = interrupt_training_at(monkeypatch, 4, "utils.packed_phase",
                                    "train_epoch_packed")     # level 1, epoch 2
    assert _run(config, tmp_path, "--replicates", "2") == 130
    restore()
    resumed = _dirs(tmp_path)
    for d in resumed.values():
        assert os.path.isfile(os.path.join(d, "checkpoints", "last.pt"))
        assert not os.path.isfile(os.path.join(d, "checkpoints", "level_01.pt"))
    assert _run(config, tmp_path, "--replicates", "2") == 0
    uninterrupted = _dirs(folder / "packed")
    assert resumed.keys() == uninterrupted.keys()
    for name, d in resumed.items():
        other = uninterrupted[name]
        assert _rows(os.path.join(d, "levels.csv")) == _rows(os.path.join(other, "levels.csv"))
        assert _rows(os.path.join(d, "metrics.csv")) == _rows(os.path.join(other, "metrics.csv"))
        a, b = (_load(os.path.join(x, "ticket.pt")) for x in (d, other))
        assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
        assert _max_diff(_load(os.path.join(d, "checkpoints", "final.pt"))["model"],
                         _load(os.path.join(other, "checkpoints", "final.pt"))["model"]) == 0


def test_a_packed_copy_resumes_alone_and_finished_copies_are_skipped(tmp_path, monkeypatch):
    config = write_config(tmp_path / "train.yml", TRAIN_CONFIG)
    assert _run(config, tmp_path / "reference", "--seed", "3") == 0
    (reference,) = _dirs(tmp_path / "reference").values()
    restore = interrupt_training_at(monkeypatch, 2, "utils.packed_phase",
                                    "train_epoch_packed")
    assert _run(config, tmp_path / "runs", "--replicates", "2") == 130
    restore()
    # copy 0 (seed 3) resumed by a single run of its own config: the packed last.pt holds
    # its weights and its slice of the optimizer state (SGD momentum) in the single-run format
    assert _run(config, tmp_path / "runs", "--seed", "3") == 0
    copies = _dirs(tmp_path / "runs")
    copy0 = copies[os.path.basename(reference)]
    assert _max_diff(_load(os.path.join(copy0, "checkpoints", "final.pt"))["model"],
                     _load(os.path.join(reference, "checkpoints", "final.pt"))["model"]) == 0
    assert _rows(os.path.join(copy0, "metrics.csv")) == _rows(
        os.path.join(reference, "metrics.csv"))
    # the packed command now finishes only copy 1, from its own last.pt
    assert _run(config, tmp_path / "runs", "--replicates", "2") == 0
    (copy1,) = [d for d in copies.values() if d != copy0]
    summary = json.load(open(os.path.join(copy1, "summary.json")))
    assert (summary["status"], summary["seed"], summary["packed_replicates"]) == ("done", 4, 2)
    assert len(_rows(os.path.join(copy1, "metrics.csv"))) == 3
    assert "resuming train after epoch 1 of 3" in open(os.path.join(copy1, "log.txt")).read()


def test_packed_imp_dry_run_lists_the_copies_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path / "imp.yml", IMP_CONFIG)
    assert _run(config, tmp_path / "runs", "--replicates", "3", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.count("# copy seed") == 3 and "(new)" in out
    assert "level" in out
    assert not os.path.exists(tmp_path / "runs")


def _close_rows(a: list[dict], b: list[dict]) -> bool:
    """Tables of two runs that used different kernels (packing: vmap against single runs,
    float32): losses within 1e-3, accuracies within one image of the digits sets (360 test,
    180 validation, 1,257 training images: at most 0.56 points)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for key, value in x.items():
            if key.endswith("_loss") and value and y[key]:
                if abs(float(value) - float(y[key])) > 1e-3:
                    return False
            elif key.endswith("_acc") and value and y[key]:
                if abs(float(value) - float(y[key])) > 0.56:
                    return False
            elif key not in ("seconds",) and not key.endswith(("_loss", "_acc")) \
                    and value != y[key]:
                return False
    return True


@pytest.mark.parametrize("algo, packing", [("snip", "streams"), ("random", "streams"),
                                           ("random", "vmap")])
def test_packed_pruning_at_init_copies_equal_the_runs_of_their_seeds(tmp_path, algo, packing):
    config = write_config(tmp_path / "at_init.yml", AT_INIT_CONFIG)
    assert _run(config, tmp_path / "packed", "--algo", algo, "--replicates", "2",
                "--packing", packing) == 0
    for seed in (3, 4):
        assert _run(config, tmp_path / "single", "--algo", algo, "--seed", str(seed)) == 0
    packed, single = _dirs(tmp_path / "packed"), _dirs(tmp_path / "single")
    assert packed.keys() == single.keys() and len(packed) == 2
    tickets = []
    for name, alone in single.items():
        copy = packed[name]
        assert _files(copy) == _files(alone)
        a, b = (_load(os.path.join(d, "ticket.pt")) for d in (copy, alone))
        assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
        tickets.append(a["masks"])
        rows = [_rows(os.path.join(d, "metrics.csv")) for d in (copy, alone)]
        assert [r["phase"] for r in rows[0]] == \
            ["train"] * 2 + ["control_reinit"] * 2 + ["control_shuffle_mask"] * 2
        finals = [_load(os.path.join(d, "checkpoints", "final.pt"))["model"]
                  for d in (copy, alone)]
        summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (copy, alone)]
        if packing == "streams":      # the single run's computation repeated: bit-identical
            assert _same_rows(*rows, loss_tol=0.0)
            assert _max_diff(*finals) == 0
            for key in ("seed", "test_acc", "density_pct", "ticket_test_acc", "controls"):
                assert summaries[0][key] == summaries[1][key], key
        else:
            # vmap: batched matmuls round differently from the single ones (~1e-7 per step
            # in float32); over the 3 phases' ~120 Adam steps at lr 1.2e-3 the weights move
            # apart by far less than 1e-3, while a wrong mask or optimizer slice moves them
            # by 1e-2 or more
            assert _close_rows(*rows)
            assert _max_diff(*finals) < 1e-3
            assert summaries[0]["density_pct"] == summaries[1]["density_pct"]
    assert any(not torch.equal(tickets[0][k], tickets[1][k]) for k in tickets[0])
