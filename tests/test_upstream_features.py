"""Upstream's optional features: prune_rate defaults, periodic rounding (hc_warmup), score
rewinding, BottomK on forward, dropping half the flags of a warm start, per-epoch
checkpoints, only_sanity and mode_connect; and the one-line refusals of upstream names."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import main
from args_helper import resolve
from conftest import DIGITS_CONFIG, interrupt_training_at, only_run_dir, write_config
from models import architecture
from models.layers import LayerFactory
from models.masks import keep_top, prunable_layers
from pruners.search.gem_miner import flag_schedule, prune_flags
from pruners.search.hc_extras import BottomKOnForward, ScoreRewind, drop_bottom_half_, \
    round_scores_, rounds_after
from pruners.search.scores import level_counts
from utils.errors import ConfigError

TOTAL = 64 * 300 + 300 * 100 + 100 * 10          # LeNet-300-100 on 8×8 digits
LAYERS = ("net.1", "net.3", "net.5")

SEARCH = """
algo: hc_iter
arch: lenet_300_100
dataset: digits
epochs: 3
iter_period: 1
batch_size: 128
optimizer: sgd
lr: 0.5
lr_policy: cosine_lr
wd: 0.0
fine_tune_lr: 0.05
prune_type: BottomK
target_sparsity: 10
init: signed_constant
score_init: unif
hc_quantized: True
skip_sanity_checks: True
seed: 5
"""


def _lenet(seed: int = 0):
    torch.manual_seed(seed)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    for layer in prunable_layers(model).values():
        layer.enable_scores().data.uniform_(0, 1)
    return model


def _scores(model):
    return {n: layer.scores.detach().clone() for n, layer in prunable_layers(model).items()}


def _flags(model):
    return {n: layer.mask.clone() for n, layer in prunable_layers(model).items()}


def _count(masks) -> int:
    return sum(int(m.count_nonzero()) for m in masks.values())


class _RecordOps(TorchDispatchMode):
    """Records the ATen operations run inside it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _run(tmp_path, text, *extra, name="run"):
    cfg = write_config(tmp_path / f"{name}.yml", text)
    log_dir = tmp_path / name
    assert main.main(["--config", str(cfg), "--log-dir", str(log_dir), "--quiet",
                      *extra]) == 0
    return only_run_dir(log_dir)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _load(path):
    return torch.load(path, weights_only=True)


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("text,meaning", [
    ("algo: ep\nrandom_subnet: True\n", "each weight kept with probability 0.5"),
    ("algo: ep\noverride_prune_rate: True\n", "half of each layer kept"),
    ("algo: global_ep\noverride_prune_rate: True\n", "half of all weights removed"),
])
def test_a_missing_prune_rate_takes_upstreams_default(tmp_path, text, meaning):
    path = write_config(tmp_path / "c.yml", text)
    cfg = resolve(["--config", str(path)])
    assert cfg.prune_rate == 0.5
    key = text.splitlines()[1].split(":")[0]
    notes = [w for w in cfg.warnings if "without prune_rate" in w]
    assert notes == [f"note: {path}:2: key '{key}' without prune_rate uses upstream's "
                     f"default prune_rate 0.5 ({meaning}" + notes[0].split(meaning)[1]]


# --------------------------------------------------------------------------- unit facts


def test_periodic_rounding_epochs_and_rounded_scores():
    # upstream: after 0-based epoch e, round when e >= hc_warmup and e % hc_period == 0
    assert [e for e in range(10) if rounds_after(e, 3, 2)] == [4, 6, 8]
    assert [e for e in range(4) if rounds_after(e, 0, 1)] == [0, 1, 2, 3]
    model = _lenet()
    before, flags = _scores(model), _flags(model)
    round_scores_(model, "naive", 0.5, 0.0, torch.Generator().manual_seed(0))
    for name, scores in _scores(model).items():
        assert torch.equal(scores, (before[name] > 0.5).float())
    assert all(torch.equal(f, flags[n]) for n, f in _flags(model).items())
    round_scores_(model, "all_ones", 0.5, 0.0, torch.Generator().manual_seed(0))
    assert all(bool((s == 1).all()) for s in _scores(model).values())


def test_drop_bottom_half_clears_exactly_half_of_the_flagged_weights():
    model = _lenet()
    prunable_layers(model)["net.1"].mask[:7] = 0              # 7 × 64 weights already gone
    flags, scores = _flags(model), _scores(model)
    active = _count(flags)
    assert active == TOTAL - 7 * 64
    removed = drop_bottom_half_(model)
    assert removed == math.ceil(active / 2) and _count(_flags(model)) == active // 2
    expected = keep_top(scores, flags, active // 2)
    assert all(torch.equal(f, expected[n]) for n, f in _flags(model).items())
    assert torch.all(prunable_layers(model)["net.1"].mask[:7] == 0)   # nested in the flags


def test_score_rewind_restores_and_survives_a_restart(tmp_path):
    model = _lenet()
    path = str(tmp_path / "rewind_scores.pt")
    rewind = ScoreRewind(model, path)
    assert not rewind.restore()                                # nothing saved yet
    saved = _scores(model)
    rewind.save()
    for layer in prunable_layers(model).values():
        layer.scores.data.uniform_(0, 1)
    assert ScoreRewind(model, path).restore()                  # a resumed run reads the file
    assert all(torch.equal(s, saved[n]) for n, s in _scores(model).items())


def test_bottom_k_forward_mask_is_the_next_pruning_steps_mask():
    cfg = resolve(["--algo", "hc_iter", "--arch", "lenet_300_100", "--dataset", "digits",
                   "--epochs", "3", "--iter-period", "1", "--prune-type", "BottomK",
                   "--target-sparsity", "10", "--hc-quantized", "true"])
    schedule = flag_schedule(cfg)
    counts = level_counts(TOTAL, schedule.steps, schedule.fraction,
                          schedule.final_count(TOTAL))
    assert schedule.steps == 2 and counts[-1] == math.ceil(0.1 * TOTAL)
    model = _lenet()
    layer = prunable_layers(model)["net.3"]
    layer.scores.data[:50] = 0.25                              # ties across rows
    bottom_k = BottomKOnForward(model, schedule)
    bottom_k.install()
    bottom_k.refresh()
    for step in range(schedule.steps + 1):
        expected = keep_top(_scores(model), _flags(model), counts[min(step + 1, 2)])
        masks = bottom_k.masks()
        assert _count(masks) == counts[min(step + 1, 2)]
        assert all(torch.equal(masks[n], expected[n]) for n in LAYERS)
        if step < schedule.steps:
            prune_flags(model, schedule, step + 1)
            bottom_k.set_steps_done(step + 1)
            bottom_k.refresh()
    # after the last step the forward mask is the flags themselves
    assert all(torch.equal(m, f) for m, f in zip(bottom_k.masks().values(),
                                                 _flags(model).values()))


def test_bottom_k_forward_pass_uses_the_mask_and_needs_no_host_count(monkeypatch):
    cfg = resolve(["--algo", "hc_iter", "--arch", "lenet_300_100", "--dataset", "digits",
                   "--epochs", "3", "--iter-period", "1", "--prune-type", "BottomK",
                   "--target-sparsity", "10", "--hc-quantized", "true"])
    model = _lenet()
    bottom_k = BottomKOnForward(model, flag_schedule(cfg))
    bottom_k.install()
    bottom_k.refresh()
    masks = bottom_k.masks()
    # after refresh, forward passes never count on the host (the count is a device tensor),
    # read no tensor value on the host and make no shape that depends on the data
    monkeypatch.setattr(bottom_k, "next_keep", lambda: pytest.fail("host count in forward"))
    x = torch.randn(5, 1, 8, 8)
    with _RecordOps() as recorded:
        out = model(x)
    host_reads = {"aten._local_scalar_dense.default", "aten.nonzero.default",
                  "aten.masked_select.default", "aten.index.Tensor", "aten.item.default"}
    assert recorded.ops and not host_reads & set(recorded.ops), set(recorded.ops)
    reference = x.flatten(1)
    for i, name in enumerate(LAYERS):
        layer = prunable_layers(model)[name]
        reference = torch.nn.functional.linear(reference, layer.weight * masks[name],
                                               layer.bias)
        if i < 2:
            reference = torch.relu(reference)
    assert torch.allclose(out, reference, atol=1e-5)
    out.sum().backward()                                   # straight-through to the scores
    assert prunable_layers(model)["net.1"].scores.grad.abs().sum() > 0
    bottom_k.remove()


# --------------------------------------------------------------------------- whole runs


def test_hc_periodic_rounding_run(tmp_path):
    text = SEARCH.replace("algo: hc_iter", "algo: hc") + \
        "hc_warmup: 1\nhc_period: 1\nckpt_at_fixed_epochs: [0, 1]\n"
    run_dir = _run(tmp_path, text)
    first = _load(run_dir / "checkpoints" / "after_epoch_001.pt")["model"]
    second = _load(run_dir / "checkpoints" / "after_epoch_002.pt")["model"]
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    for name in LAYERS:
        # 0-based epoch 0 < hc_warmup: scores continuous; after epochs 1 and 2: rounded
        assert ((first[f"{name}.scores"] > 0) & (first[f"{name}.scores"] < 1)).any()
        for state in (second, before):
            assert set(state[f"{name}.scores"].unique().tolist()) <= {0.0, 1.0}
    log = (run_dir / "log.txt").read_text()
    assert log.count("search: scores rounded (naive)") == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    kept = sum(int(before[f"{n}.scores"].sum()) for n in LAYERS)
    assert summary["density_pct"] == pytest.approx(100 * kept / TOTAL, abs=1e-6)


def test_score_rewinding_run_ends_with_the_initial_scores(tmp_path):
    run_dir = _run(tmp_path, SEARCH + "rewind_score: True\nrewind_to_epoch: 0\n")
    init = _load(run_dir / "checkpoints" / "init.pt")["model"]
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    # the last pruning step follows the last epoch, so the search ends on rewound scores
    for name in LAYERS:
        assert torch.equal(before[f"{name}.scores"], init[f"{name}.scores"])
    assert (run_dir / "checkpoints" / "rewind_scores.pt").is_file()
    flags = sum(int(before[f"{n}.mask"].sum()) for n in LAYERS)
    assert flags == math.ceil(0.1 * TOTAL)
    assert (run_dir / "log.txt").read_text().count("scores rewound to the start of epoch 0") \
        == 2


def test_bottom_k_on_forward_run(tmp_path):
    run_dir = _run(tmp_path, SEARCH + "bottom_k_on_forward: True\n")
    cfg = resolve(["--config", str(tmp_path / "run.yml")])
    schedule = flag_schedule(cfg)
    counts = level_counts(TOTAL, schedule.steps, schedule.fraction,
                          schedule.final_count(TOTAL))
    search = _rows(run_dir / "search.csv")
    # each epoch evaluates the forward mask: as many weights as the next step keeps
    evaluated = [round(float(r["density_pct"]) * TOTAL / 100) for r in search]
    assert evaluated == [counts[1], counts[2], counts[2]]
    ticket = _load(run_dir / "ticket.pt")
    before = _load(run_dir / "checkpoints" / "before_finetune.pt")["model"]
    for name in LAYERS:                                     # the ticket is the final flags
        assert torch.equal(ticket["masks"][name], before[f"{name}.mask"].bool())
    assert sum(int(m.sum()) for m in ticket["masks"].values()) == math.ceil(0.1 * TOTAL)


def test_bottom_k_and_rewind_resume_like_an_uninterrupted_run(tmp_path, monkeypatch):
    text = SEARCH.replace("epochs: 3", "epochs: 4") + \
        "bottom_k_on_forward: True\nrewind_score: True\nrewind_to_epoch: 1\n"
    reference = _run(tmp_path, text, name="reference")
    restore = interrupt_training_at(monkeypatch, 3)       # Ctrl-C in the third search epoch
    cfg = write_config(tmp_path / "resumed.yml", text)
    args = ["--config", str(cfg), "--log-dir", str(tmp_path / "resumed"), "--quiet"]
    assert main.main(args) == 130
    restore()
    assert main.main(args) == 0
    resumed = only_run_dir(tmp_path / "resumed")

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(_rows(resumed / "metrics.csv")) == strip(_rows(reference / "metrics.csv"))
    ours, theirs = _load(resumed / "ticket.pt"), _load(reference / "ticket.pt")
    assert all(torch.equal(ours["masks"][n], theirs["masks"][n]) for n in LAYERS)


def test_drop_bottom_half_of_a_warm_start(tmp_path):
    dense = _run(tmp_path, DIGITS_CONFIG.replace("epochs: 3", "epochs: 1"), name="dense")
    pretrained = dense / "checkpoints" / "final.pt"
    text = SEARCH.replace("epochs: 3", "epochs: 4").replace("iter_period: 1",
                                                            "iter_period: 2")
    run_dir = _run(tmp_path, text + f"pretrained: {pretrained}\n"
                   "drop_bottom_half_weights: True\n")
    search = _rows(run_dir / "search.csv")
    flags = [round(float(r["flag_density_pct"]) * TOTAL / 100) for r in search]
    # after epoch 1 half the flags go; the single pruning step (after 0-based epoch 2)
    # then lands on the target
    assert flags == [TOTAL - math.ceil(TOTAL / 2)] * 2 + [math.ceil(0.1 * TOTAL)] * 2
    assert [int(r["pruned"]) for r in search][0] == math.ceil(TOTAL / 2)
    init = _load(run_dir / "checkpoints" / "init.pt")["model"]
    trained = _load(pretrained)["model"]
    assert torch.equal(init["net.1.weight"], trained["net.1.weight"])   # the warm start


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("source")
    return _run(tmp, SEARCH.replace("epochs: 3", "epochs: 2"), name="searches")


def test_only_sanity_checks_a_finished_search(finished_search, tmp_path):
    text = SEARCH.replace("epochs: 3", "epochs: 1") + \
        f"only_sanity: True\nsanity_folder: {finished_search.parent}\n"
    run_dir = _run(tmp_path, text)
    rows = _rows(run_dir / "sanity.csv")
    assert [(r["source"], r["check"]) for r in rows] == [("1", "sanity_reinit"),
                                                         ("1", "sanity_shuffle")]
    ticket = _load(finished_search / "ticket.pt")
    density = 100 * sum(int(m.sum()) for m in ticket["masks"].values()) / TOTAL
    for row in rows:
        assert row["run_dir"] == str(finished_search)
        assert float(row["density_pct"]) == pytest.approx(density, abs=1e-6)
        assert float(row["ticket_density_pct"]) == pytest.approx(density, abs=1e-6)
    assert [r["phase"] for r in _rows(run_dir / "metrics.csv")] == ["sanity_reinit",
                                                                    "sanity_shuffle"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algo"] == "only_sanity"
    assert summary["sanity_sources"] == [str(finished_search)]


def test_only_sanity_usage_errors(finished_search, tmp_path, capsys):
    assert main.main(["--algo", "hc_iter", "--dataset", "digits", "--arch", "lenet_300_100",
                      "--only-sanity", "true", "--log-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err == (
        "error: command line: --only-sanity needs sanity_folder (the finished mask-search run "
        "directory, or a folder of them, whose tickets to check)\n")
    assert not (tmp_path / "runs").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no mask-search run directory"):
        resolve(["--only-sanity", "true", "--sanity-folder", str(empty)])
    assert main.main(["--only-sanity", "true", "--sanity-folder", str(finished_search),
                      "--arch", "resnet20", "--dataset", "digits", "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"error: sanity_folder: the ticket of {finished_search} does not fit arch resnet20 on "
        f"digits (missing conv1.weight)\n")


def test_mode_connect_of_two_trained_networks(tmp_path):
    a = _run(tmp_path, DIGITS_CONFIG.replace("epochs: 3", "epochs: 1"), name="a")
    b = _run(tmp_path, DIGITS_CONFIG.replace("epochs: 3", "epochs: 1").replace(
        "seed: 3", "seed: 4"), name="b")
    text = DIGITS_CONFIG + (f"evaluate: True\nmode_connect: True\n"
                            f"pretrained: {a / 'checkpoints' / 'final.pt'}\n"
                            f"pretrained2: {b / 'checkpoints' / 'final.pt'}\n"
                            f"lmc_points: 3\n")
    run_dir = _run(tmp_path, text, name="connect")
    rows = _rows(run_dir / "mode_connect.csv")
    assert [float(r["gamma"]) for r in rows] == [0.0, 0.5, 1.0]
    summary = json.loads((run_dir / "summary.json").read_text())
    acc_a = json.loads((a / "summary.json").read_text())["test_acc"]
    acc_b = json.loads((b / "summary.json").read_text())["test_acc"]
    # the end points are the two networks (γ = 1: pretrained, γ = 0: pretrained2); the CSV
    # holds 4 decimals
    assert 100 - float(rows[-1]["test_error"]) == pytest.approx(acc_a, abs=1e-4)
    assert 100 - float(rows[0]["test_error"]) == pytest.approx(acc_b, abs=1e-4)
    middle = float(rows[1]["test_error"])
    ends = (float(rows[0]["test_error"]) + float(rows[-1]["test_error"])) / 2
    assert summary["test_barrier"] == pytest.approx(max(middle - ends, 0.0), abs=2e-4)
    assert summary["test_acc"] == pytest.approx(acc_a, abs=1e-6)
    assert (run_dir / "mode_connect.png").is_file()


def test_mode_connect_without_a_second_network_only_evaluates():
    cfg = resolve(["--algo", "training", "--mode-connect", "true"])
    assert cfg.algo_name == "training"
    assert any("--mode-connect has no effect here: it compares two saved networks" in w
               for w in cfg.warnings)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("text,needle", [
    ("algo: pt_sr\n", "'pt_sr' is not an algorithm of upstream's main.py"),
    ("algo: hc\nround: majority\n", "'majority' is not a rounding of upstream's round_model"),
    ("arch: TwoLayerFC\n", "'TwoLayerFC' exists only in upstream's greedy-search code"),
    ("arch: RNNModel\ndataset: Wiki\nbptt: 35\n", "'RNNModel' is built by upstream's "
                                                  "separate language-model scripts"),
    ("arch: deit_small_patch16_224\n", "upstream's vision-transformer (DeiT) experiment"),
    ("algo: hc_iter\nbottom_k_on_forward: True\nprune_type: FixThresholding\n",
     "key 'bottom_k_on_forward' needs prune_type BottomK"),
    ("weight_training: True\nckpt_at_fixed_epochs: [-1]\n", "must list 0-based epochs"),
    ("algo: hc_iter\narch: resnet32Normal\n", "resnet32Normal is upstream's plain-layer"),
])
def test_upstream_names_refused_in_one_line(tmp_path, capsys, text, needle):
    cfg = write_config(tmp_path / "bad.yml", text)
    rc = main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_packed_replicates_refuse_fixed_epoch_checkpoints():
    with pytest.raises(ConfigError, match="replicates.*ckpt_at_fixed_epochs.*packed training "
                                          "saves no per-epoch models"):
        resolve(["--algo", "training", "--dataset", "digits", "--replicates", "2",
                 "--ckpt-at-fixed-epochs", "0"])
