"""prune_granularity channel and n:m: exact nested counts, structure of the masks, controls
at the same granularity, and the algorithms that support them (IMP, at init, gradual)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import main
from conftest import only_run_dir, write_config
from models import architecture
from models.channel_masks import alive_channels, channel_weight_masks, keep_channels
from models.channels import channel_groups
from models.layers import LayerFactory
from models.masks import get_masks, prunable_layers, set_masks
from models.nm_masks import kept_per_group, keep_n_per_group, random_nm_mask, shuffle_groups
from pruners.imp.plan import level_targets

LENET_TOTAL = 50_200


def _model(arch="lenet_300_100", channels=1, size=8):
    torch.manual_seed(0)
    return architecture(arch)(LayerFactory(), 10, channels, size)


# ----------------------------------------------------------------------------- channel masks


def test_keep_channels_exact_global_count_with_one_per_layer_and_ties():
    scores = {"a": torch.tensor([5.0, 1.0, 1.0, 0.0]), "b": torch.tensor([0.1, 0.2])}
    alive = {"a": torch.tensor([True, True, True, False]), "b": torch.tensor([True, True])}
    kept = keep_channels(scores, alive, keep=3)
    # b keeps its best channel although a's tied 1.0s outscore it; a's first 1.0 wins the tie
    assert kept["a"].tolist() == [True, True, False, False]
    assert kept["b"].tolist() == [False, True]
    two = keep_channels(scores, alive, keep=2)
    assert two["a"].tolist() == [True, False, False, False] and two["b"].tolist() == [
        False, True]
    with pytest.raises(ValueError, match="at least one"):
        keep_channels(scores, alive, keep=1)
    local = keep_channels(scores, alive, layer_keep={"a": 0, "b": 1})
    assert [int(v.sum()) for v in local.values()] == [1, 1]          # never the last channel
    assert not bool(local["a"][3])                                     # dead stays dead


def test_channel_weight_masks_zero_rows_and_the_columns_that_read_them():
    model = _model("Conv4", 1, 8)
    groups = channel_groups(model)
    masks = get_masks(model)
    keep = {"features.7": torch.arange(128) % 4 != 0}                 # 32 filters go
    new = channel_weight_masks(masks, groups, keep)
    assert set(new) == {"features.7", "classifier.1"}
    assert int(new["features.7"].flatten(1).any(1).sum()) == 96
    cols = new["classifier.1"].any(0)                                  # 2×2 map per channel
    assert cols.view(128, 4).all(1).tolist() == keep["features.7"].tolist()
    assert int((~cols).sum()) == 32 * 4


def test_channel_level_targets_never_empty_a_layer():
    sizes = {"a": 3, "b": 100}
    targets = level_targets(sizes, ["a", "b"], "local", 0.5, None, 6, min_keep=1)
    assert [t.layer_keep["a"] for t in targets] == [3, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="at least 1"):
        level_targets(sizes, ["a", "b"], "global", 0.5, 0.01, None, min_keep=1)


# ----------------------------------------------------------------------------- n:m masks


def test_n_of_m_along_the_input_dimension_nested_and_deterministic():
    torch.manual_seed(1)
    conv = torch.randn(6, 8, 3, 3)
    three = keep_n_per_group(conv.abs(), torch.ones_like(conv), 3, 4)
    two = keep_n_per_group(conv.abs(), three, 2, 4)
    assert torch.all(two <= three)
    # groups run over 4 consecutive input channels at each (out, kh, kw)
    per_group = two.permute(0, 2, 3, 1).reshape(-1, 4).sum(1)
    assert per_group.tolist() == [2.0] * (6 * 3 * 3 * 2)
    assert kept_per_group(two, 4).tolist() == [2] * 108
    kept = conv.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    chosen = two.permute(0, 2, 3, 1).reshape(-1, 4).bool()
    assert bool((kept[chosen].view(-1, 2).min(1).values
                 >= kept[~chosen].view(-1, 2).max(1).values).all())
    ties = keep_n_per_group(torch.zeros(1, 4), torch.ones(1, 4), 2, 4)
    assert ties.tolist() == [[1.0, 1.0, 0.0, 0.0]]                    # earlier entries win


def test_random_and_shuffled_nm_masks_stay_n_of_m():
    g = torch.Generator().manual_seed(0)
    mask = random_nm_mask((10, 12), 1, 4, g)
    assert kept_per_group(mask, 4).tolist() == [1] * 30
    shuffled = shuffle_groups(mask, 4, torch.Generator().manual_seed(1))
    assert kept_per_group(shuffled, 4).tolist() == [1] * 30
    assert not torch.equal(shuffled, mask)


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("args, needle", [
    (["--algo", "grasp", "--prune-granularity", "channel"], "not available for algo 'grasp'"),
    (["--arch", "MobileNetV2", "--prune-granularity", "channel"], "arch MobileNetV2"),
    (["--prune-granularity", "n:m", "--prune-n", "4"], "must be smaller than prune_m"),
    (["--algo", "imp", "--prune-granularity", "channel", "--prune-bias"], "--prune-bias"),
    (["--algo", "random", "--random-distribution", "erk", "--prune-granularity", "n:m"],
     "erk"),
    (["--prune-granularity", "2:4"], "--prune-granularity must be one of"),
])
def test_bad_granularity_configs_exit_2_and_write_nothing(tmp_path, capsys, args, needle):
    cfg = write_config(tmp_path / "c.yml", "algo: snip\narch: lenet_300_100\ndataset: digits\n"
                       "target_sparsity: 10\nepochs: 1\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- runs

IMP = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 1
batch_size: 128
optimizer: adam
lr: 0.002
imp_rewind_iter: 0
seed: 4
"""


def _run(folder, text, args=()):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(folder / "c.yml", text)
    assert main.main(["--config", str(cfg), "--log-dir", str(folder / "runs"), "--quiet",
                      *args]) == 0
    return only_run_dir(folder / "runs")


def _level_masks(run_dir, level):
    return torch.load(run_dir / "checkpoints" / f"level_{level:02d}.pt",
                      weights_only=True)["masks"]


def _rows_alive(mask):
    return mask.flatten(1).any(1)


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("channel"), IMP + "prune_granularity: channel\n"
                "prune_rate: 0.5\ntarget_sparsity: 25\nprune_scope: global\n"
                "imp_controls: [shuffle_mask, random_mask]\n")


def test_imp_channel_levels_are_exact_nested_and_structured(channel_run):
    expected = [400, 200, 100]                       # channels of net.1 (300) and net.3 (100)
    previous = None
    for level, channels in enumerate(expected):
        masks = _level_masks(channel_run, level)
        alive = alive_channels(masks, ["net.1", "net.3"])
        assert sum(int(v.sum()) for v in alive.values()) == channels
        assert all(int(v.sum()) >= 1 for v in alive.values())
        # whole rows: a row is all ones or all zeros on the columns still read
        assert torch.equal(masks["net.1"], alive["net.1"][:, None].float().expand(300, 64))
        assert torch.equal(masks["net.3"], (alive["net.3"][:, None]
                                            & alive["net.1"][None, :]).float())
        assert torch.equal(masks["net.5"], alive["net.3"][None, :].float().expand(10, 100))
        if previous is not None:
            assert all(torch.all(masks[n] <= previous[n]) for n in masks)
        previous = masks
    # the kept channels are the largest L1 norms of the previous level's trained weights
    trained = torch.load(channel_run / "checkpoints" / "level_01.pt",
                         weights_only=True)["trained"]
    new = alive_channels(_level_masks(channel_run, 2), ["net.1", "net.3"])
    old = alive_channels(_level_masks(channel_run, 1), ["net.1", "net.3"])
    # (global scope: raw L1 norms compared over both layers, each layer keeping its best)
    norms = {n: trained[f"{n}.weight"].abs().sum(1) for n in ("net.1", "net.3")}
    for n in norms:
        if int((old[n] & ~new[n]).sum()):
            assert norms[n][new[n]].min() >= norms[n][old[n] & ~new[n]].max()
    ranked = torch.cat([norms[n][new[n]].sort(descending=True).values[1:] for n in norms])
    dropped = torch.cat([norms[n][old[n] & ~new[n]] for n in norms])
    assert ranked.min() >= dropped.max()
    rows = list(csv.DictReader(open(channel_run / "levels.csv")))
    assert [float(r["channel_density_pct"]) for r in rows] == [100.0, 50.0, 25.0]
    summary = json.loads((channel_run / "summary.json").read_text())
    assert summary["prune_granularity"] == "channel" and summary["channel_density_pct"] == 25.0


def test_channel_controls_keep_the_granularity(channel_run):
    import args_helper
    from pruners.imp.controls import setup_control
    from pruners.imp.plan import plan_for
    from utils.context import RunContext, RunState

    cfg = args_helper.resolve(["--config", str(channel_run / "config.yaml")])
    model = _model()
    import data

    splits = data.load_splits(cfg)
    plan = plan_for(cfg, splits, model)
    ctx = RunContext(cfg=cfg, device=torch.device("cpu"), run_dir=str(channel_run),
                     logger=None, splits=splits, loaders=None, model_spec=None,
                     autocast_dtype=None, seed=cfg.run_seed, state=RunState())
    record = torch.load(channel_run / "checkpoints" / "level_02.pt", weights_only=True)
    ticket = alive_channels(record["masks"], ["net.1", "net.3"])
    for name in ("shuffle_mask", "random_mask"):
        setup_control(ctx, model, plan, name, 2, record)
        masks = get_masks(model)
        alive = alive_channels(masks, ["net.1", "net.3"])
        if name == "shuffle_mask":                   # same count per layer
            assert [int(v.sum()) for v in alive.values()] == [int(v.sum())
                                                                for v in ticket.values()]
        assert sum(int(v.sum()) for v in alive.values()) == 100
        assert torch.equal(masks["net.3"], (alive["net.3"][:, None]
                                            & alive["net.1"][None, :]).float())
        assert not all(torch.equal(alive[n], ticket[n]) for n in alive)


def test_imp_nm_one_level_after_dense_training_and_controls(tmp_path):
    run_dir = _run(tmp_path, IMP + "prune_granularity: n:m\nimp_controls: [random_mask]\n")
    rows = list(csv.DictReader(open(run_dir / "levels.csv")))
    assert [float(r["density_pct"]) for r in rows] == [100.0, 50.0]
    assert [float(r["flops_pct"]) for r in rows] == [100.0, 50.0]
    masks = _level_masks(run_dir, 1)
    for name, mask in masks.items():                 # 64, 300 and 100 inputs: all divide by 4
        assert kept_per_group(mask, 4).tolist() == [2] * (mask.numel() // 4), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["prune_granularity"] == "2:4" and summary["theoretical_speedup"] == 2.0


def test_snip_channel_and_gradual_nm(tmp_path):
    at_init = ("algo: snip\narch: lenet_300_100\ndataset: digits\nepochs: 1\nbatch_size: 128\n"
               "optimizer: adam\nlr: 0.002\nseed: 3\nprune_granularity: channel\n"
               "target_sparsity: 30\nprune_scope: local\nat_init_controls: [shuffle_mask]\n")
    run_dir = _run(tmp_path / "snip", at_init)
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)["masks"]
    alive = alive_channels(ticket, ["net.1", "net.3"])
    assert [int(v.sum()) for v in alive.values()] == [90, 30]     # round(0.3 × 300), 0.3 × 100
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["flops"] == 90 * 64 + 30 * 90 + 10 * 30
    # the shuffled control keeps 90 and 30 whole neurons, hence the same weight count
    assert summary["controls"][0]["density_pct"] == pytest.approx(summary["density_pct"])
    import types

    import args_helper
    from pruners.at_init.run import setup_control

    cfg = args_helper.resolve(["--config", str(run_dir / "config.yaml")])
    ctx = types.SimpleNamespace(cfg=cfg, seed=cfg.run_seed,
                                path=lambda *parts: str(run_dir.joinpath(*parts)))
    model = _model()
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "before_finetune.pt",
                                     weights_only=True)["model"])
    setup_control(ctx, model, "shuffle_mask")
    masks = get_masks(model)
    shuffled = alive_channels(masks, ["net.1", "net.3"])
    assert [int(v.sum()) for v in shuffled.values()] == [90, 30]
    assert not torch.equal(shuffled["net.1"], alive["net.1"])
    assert torch.equal(masks["net.3"], (shuffled["net.3"][:, None]
                                        & shuffled["net.1"][None, :]).float())
    init = torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    weight = prunable_layers(model)["net.1"].weight.detach()
    assert torch.equal(weight, init["net.1.weight"] * masks["net.1"])
    gradual = ("algo: gradual\narch: lenet_300_100\ndataset: digits\nepochs: 3\n"
               "batch_size: 128\noptimizer: adam\nlr: 0.002\nseed: 3\n"
               "prune_granularity: n:m\nprune_n: 1\nprune_m: 4\nprune_every_steps: 5\n"
               "prune_end_epoch: 2\nprune_schedule: linear\n")
    run_dir = _run(tmp_path / "gradual", gradual)
    steps = list(csv.DictReader(open(run_dir / "pruning_steps.csv")))
    assert [int(s["kept"]) for s in steps] == [37_650, 25_100, 12_550]   # 3:4, 2:4, 1:4
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    for name in ("net.1", "net.3", "net.5"):
        assert kept_per_group(final[f"{name}.mask"], 4).tolist() == [1] * (
            final[f"{name}.mask"].numel() // 4)
        assert torch.all(final[f"{name}.weight"][final[f"{name}.mask"] == 0] == 0)


def test_set_masks_copies_into_the_existing_buffers():
    model = _model()
    layers = prunable_layers(model)
    addresses = {n: layer.mask.data_ptr() for n, layer in layers.items()}
    masks = channel_weight_masks(get_masks(model), channel_groups(model),
                                 {"net.1": torch.arange(300) < 10})
    set_masks(model, masks)
    assert {n: layer.mask.data_ptr() for n, layer in layers.items()} == addresses
    assert int(layers["net.3"].mask.count_nonzero()) == 100 * 10
