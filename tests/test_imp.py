"""IMP-WR / IMP-LRR / IMP-FT: exact counts, nesting, zeros, rewinding, schedules, records."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.utils.prune as torch_prune

import main
from args_helper import resolve
from conftest import only_run_dir, write_config
from models import architecture
from models.layers import LayerFactory
from models.masks import keep_top, prunable_layers
from pruners.imp.plan import level_targets

IMP_CONFIG = """
algo: {algo}
arch: lenet_300_100
dataset: digits
iter_period: 3
imp_rounds: 4
batch_size: 128
optimizer: sgd
lr: 0.05
lr_policy: cosine_lr
momentum: 0.9
wd: 0.0005
imp_rewind_iter: 15
seed: 5
"""
TOTAL = 64 * 300 + 300 * 100 + 100 * 10        # lenet_300_100 on 8×8 digits: 50,200
STEPS = 10                                       # 1,257 images / batch 128


def _run(tmp_path, algo="imp_wr", extra="", args=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp_path / f"{algo}.yml", IMP_CONFIG.format(algo=algo) + extra)
    log_dir = tmp_path / "runs"
    assert main.main(["--config", str(cfg), "--log-dir", str(log_dir), "--quiet",
                      *args]) == 0
    return only_run_dir(log_dir), cfg


def _level(run_dir, level):
    return torch.load(run_dir / "checkpoints" / f"level_{level:02d}.pt", weights_only=True)


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _kept(masks):
    return sum(int(m.count_nonzero()) for m in masks.values())


@pytest.fixture(scope="module")
def wr_run(tmp_path_factory):
    run_dir, _ = _run(tmp_path_factory.mktemp("wr"), "imp_wr")
    return run_dir


def test_exact_counts_nested_masks_and_zero_weights(wr_run):
    expected = [TOTAL]
    for _ in range(3):
        remaining = expected[-1]
        expected.append(remaining - int(0.2 * remaining + 0.5))   # round(0.2 × remaining)
    assert expected == [50200, 40160, 32128, 25702]
    previous = None
    for level in range(4):
        record = _level(wr_run, level)
        masks = record["masks"]
        assert _kept(masks) == expected[level]
        for name, mask in masks.items():
            assert set(mask.unique().tolist()) <= {0.0, 1.0}
            if previous is not None:
                assert torch.all(mask <= previous[name]), "masks must be nested"
            for which in ("start", "trained"):
                weight = record[which][f"{name}.weight"]
                assert torch.all(weight[mask == 0] == 0), (level, which, name)
        previous = masks
    rows = _csv(wr_run / "levels.csv")
    assert [round(float(r["density_pct"]), 4) for r in rows] == [
        round(100 * k / TOTAL, 4) for k in expected]
    assert [r["matching"] for r in rows][0] == "dense"


def test_pruning_removes_the_smallest_trained_weights(wr_run):
    trained = _level(wr_run, 1)["trained"]
    new_masks = _level(wr_run, 2)["masks"]
    old_masks = _level(wr_run, 1)["masks"]
    kept = torch.cat([trained[f"{n}.weight"][new_masks[n] == 1].abs().flatten()
                      for n in new_masks])
    removed = torch.cat([trained[f"{n}.weight"][(old_masks[n] == 1) & (new_masks[n] == 0)]
                         .abs().flatten() for n in new_masks])
    assert len(removed) == 40160 - 32128               # 8,032 removed at level 2
    assert kept.min() >= removed.max()


def test_weight_rewinding_restores_rewind_values_and_batchnorm(wr_run):
    rewind = torch.load(wr_run / "checkpoints" / "rewind.pt", weights_only=True)
    assert rewind["step"] == 15
    for level in (1, 2, 3):
        record = _level(wr_run, level)
        for key, value in record["start"].items():
            if key.endswith("mask"):
                continue
            name = key.rsplit(".", 1)[0]
            if key.endswith(".weight") and name in record["masks"]:
                expected = rewind["model"][key] * record["masks"][name]
            else:
                expected = rewind["model"][key]          # biases, BatchNorm statistics
            assert torch.equal(value, expected), (level, key)


def test_wr_schedule_continues_from_the_rewind_iteration(wr_run):
    rows = [r for r in _csv(wr_run / "metrics.csv") if r["phase"] == "level"]
    level0 = [r for r in rows if r["level"] == "0"]
    level2 = [r for r in rows if r["level"] == "2"]
    assert [r["epoch"] for r in level0] == ["1", "2", "3"]
    # iteration 15 lies in epoch 2 (0-based 1) at batch 5: the level trains epochs 2 and 3
    assert [r["epoch"] for r in level2] == ["2", "3"]
    assert [r["lr"] for r in level2] == [r["lr"] for r in level0[1:]]
    assert [r["step"] for r in level2] == ["20", "30"]


def test_rewind_point_equals_an_independent_dense_run(tmp_path):
    # rewinding to '1ep' must give exactly the weights of one epoch of dense training
    run_dir, _ = _run(tmp_path / "imp", "imp_wr", args=["--imp-rewind-iter", "1ep",
                                                        "--imp-rounds", "2"])
    dense_cfg = write_config(tmp_path / "dense.yml",
                             IMP_CONFIG.format(algo="training").replace("imp_", "#"))
    assert main.main(["--config", str(dense_cfg), "--log-dir", str(tmp_path / "dense"),
                      "--quiet", "--epochs", "1"]) == 0
    dense = torch.load(only_run_dir(tmp_path / "dense") / "checkpoints" / "final.pt",
                       weights_only=True)["model"]
    rewind = torch.load(run_dir / "checkpoints" / "rewind.pt", weights_only=True)
    assert rewind["step"] == STEPS
    for key, value in dense.items():
        assert torch.equal(rewind["model"][key], value), key


def test_rewind_to_zero_is_the_initial_network(tmp_path):
    run_dir, _ = _run(tmp_path, "imp_wr", args=["--imp-rewind-iter", "0", "--imp-rounds", "2"])
    init = torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    start = _level(run_dir, 1)["start"]
    masks = _level(run_dir, 1)["masks"]
    for name, mask in masks.items():
        assert torch.equal(start[f"{name}.weight"], init[f"{name}.weight"] * mask)
    lr0 = [r["lr"] for r in _csv(run_dir / "metrics.csv") if r["level"] == "0"]
    lr1 = [r["lr"] for r in _csv(run_dir / "metrics.csv") if r["level"] == "1"]
    assert lr0 == lr1                                    # the full schedule from iteration 0


@pytest.mark.parametrize("algo", ["imp_lrr", "imp_ft"])
def test_lrr_and_ft_keep_trained_weights_and_set_their_schedule(tmp_path, algo):
    run_dir, _ = _run(tmp_path, algo, args=["--imp-rounds", "3"])
    rows = _csv(run_dir / "metrics.csv")
    lr = {level: [float(r["lr"]) for r in rows if r["level"] == str(level)] for level in range(3)}
    assert len(lr[1]) == 3                               # whole levels, no rewind offset
    if algo == "imp_lrr":
        assert lr[1] == lr[0] and lr[2] == lr[0]         # the schedule is replayed
    else:
        assert lr[1] == [lr[0][-1]] * 3                  # constant at the final rate
    for level in (1, 2):
        record, previous = _level(run_dir, level), _level(run_dir, level - 1)
        for name, mask in record["masks"].items():
            key = f"{name}.weight"
            assert torch.equal(record["start"][key], previous["trained"][key] * mask)
    assert not (run_dir / "checkpoints" / "rewind.pt").exists()
    assert json.loads((run_dir / "summary.json").read_text())["variant"] == algo[4:]


def test_upstream_imp_no_rewind_means_lrr():
    cfg = resolve(["--algo", "imp", "--imp-no-rewind"])
    assert cfg.algo_name == "imp_lrr"
    assert resolve(["--algo", "imp"]).algo_name == "imp"


def test_global_mask_equals_torch_global_unstructured():
    torch.manual_seed(0)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    reference = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    reference.load_state_dict(model.state_dict())
    layers = prunable_layers(model)
    ref_layers = prunable_layers(reference)
    masks = {n: layer.mask.clone() for n, layer in layers.items()}
    for _ in range(3):    # three successive levels, each removing 20 % of the remaining
        remaining = _kept(masks)
        remove = int(0.2 * remaining + 0.5)
        scores = {n: (layer.weight * masks[n]).abs() for n, layer in layers.items()}
        masks = keep_top(scores, masks, remaining - remove)
        torch_prune.global_unstructured([(m, "weight") for m in ref_layers.values()],
                                        pruning_method=torch_prune.L1Unstructured,
                                        amount=remove)
        for name, module in ref_layers.items():
            assert torch.equal(module.weight_mask, masks[name]), name


def test_local_scope_prunes_every_layer_by_the_rate(tmp_path):
    run_dir, _ = _run(tmp_path, "imp_lrr", args=["--prune-scope", "local", "--imp-rounds",
                                                 "3"])
    sizes = {"net.1": 64 * 300, "net.3": 300 * 100, "net.5": 100 * 10}
    for level in range(3):
        masks = _level(run_dir, level)["masks"]
        for name, size in sizes.items():
            expected = size
            for _ in range(level):
                expected -= int(0.2 * expected + 0.5)
            assert int(masks[name].count_nonzero()) == expected, (level, name)


def test_prune_ignore_keeps_layers_dense_and_target_mode_hits_exactly(tmp_path):
    run_dir, _ = _run(tmp_path, "imp_lrr", extra="prune_ignore: [net.5]\n",
                      args=["--imp-rounds", "-1", "--target-sparsity", "40"])
    rows = _csv(run_dir / "levels.csv")
    final = _level(run_dir, len(rows) - 1)["masks"]
    assert torch.all(final["net.5"] == 1)
    assert _kept(final) == int(0.4 * TOTAL + 0.5)           # exactly the target
    assert abs(float(rows[-1]["density_pct"]) - 40.0) < 1e-3
    planned = level_targets({"net.1": 19200, "net.3": 30000, "net.5": 1000},
                            ["net.1", "net.3"], "global", 0.2, 0.4, None)
    assert [t.kept for t in planned] == [
        _kept(_level(run_dir, level)["masks"]) for level in range(len(rows))]


def test_prune_bias_prunes_biases_by_the_same_rate(tmp_path):
    run_dir, _ = _run(tmp_path, "imp_lrr", extra="bias: true\nprune_bias: true\n",
                      args=["--imp-rounds", "3"])
    total_bias = 300 + 100 + 10
    kept = []
    for level in range(3):
        start = _level(run_dir, level)["start"]
        trained = _level(run_dir, level)["trained"]
        masks = {k: v for k, v in start.items() if k.endswith("bias_mask")}
        kept.append(sum(int(m.count_nonzero()) for m in masks.values()))
        for key, mask in masks.items():
            bias = trained[key.replace("bias_mask", "bias")]
            assert torch.all(bias[mask == 0] == 0)
    assert kept == [total_bias, total_bias - 82, total_bias - 82 - 66]


def test_controls_start_points(tmp_path):
    from pruners.imp import controls as imp_controls
    from pruners.imp.plan import plan_for

    run_dir, cfg_path = _run(tmp_path, "imp_wr", args=["--imp-rounds", "3", "--imp-controls",
                                                       "reinit", "shuffle_mask",
                                                       "shuffle_weights", "random_mask",
                                                       "supermask"])
    rows = _csv(run_dir / "controls.csv")
    assert [r["control"] for r in rows] == ["reinit", "shuffle_mask", "shuffle_weights",
                                            "random_mask", "supermask"]
    assert {r["level"] for r in rows} == {"2"}
    assert rows[-1]["epochs"] == "0"                     # the supermask is not trained
    record = _level(run_dir, 2)
    rewind = torch.load(run_dir / "checkpoints" / "rewind.pt", weights_only=True)["model"]

    class Ctx:   # the part of the run context setup_control uses
        seed = 5
        cfg = resolve(["--config", str(cfg_path)])
        device = torch.device("cpu")
        from models import InputSpec
        model_spec = InputSpec(10, 1, 8)

        @staticmethod
        def path(*parts):
            return str(run_dir.joinpath(*parts))

    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    import data
    plan = plan_for(Ctx.cfg, data.load_splits(Ctx.cfg), model)
    for name in ("random_mask", "shuffle_mask"):
        imp_controls.setup_control(Ctx, model, plan, name, 2, record)
        for lname, layer in prunable_layers(model).items():
            w = rewind[f"{lname}.weight"]
            assert torch.equal(layer.weight[layer.mask == 1], w[layer.mask == 1])
        kept = _kept({n: m.mask for n, m in prunable_layers(model).items()})
        assert kept == _kept(record["masks"])
        outside = sum(int(((m.mask == 1) & (record["masks"][n] == 0)).sum())
                      for n, m in prunable_layers(model).items())
        assert outside > 0          # survivors the lottery mask had zeroed start unzeroed
        if name == "shuffle_mask":
            for lname, layer in prunable_layers(model).items():
                assert int(layer.mask.sum()) == int(record["masks"][lname].sum())
    imp_controls.setup_control(Ctx, model, plan, "shuffle_weights", 2, record)
    for lname, layer in prunable_layers(model).items():
        assert torch.equal(layer.mask, record["masks"][lname])
        alive = record["masks"][lname] == 1
        assert torch.equal(layer.weight[alive].sort().values,
                           record["start"][f"{lname}.weight"][alive].sort().values)
    imp_controls.setup_control(Ctx, model, plan, "reinit", 2, record)
    for lname, layer in prunable_layers(model).items():
        assert torch.equal(layer.mask, record["masks"][lname])
        assert not torch.equal(layer.weight, record["start"][f"{lname}.weight"])


def test_ticket_file_and_reuse_with_another_seed(tmp_path, wr_run):
    ticket = torch.load(wr_run / "ticket.pt", weights_only=True)
    final = _level(wr_run, 3)
    assert ticket["level"] == 3 and ticket["arch"] == "lenet_300_100"
    for name, mask in ticket["masks"].items():
        assert torch.equal(mask, final["masks"][name])
        assert torch.equal(ticket["weights"][f"{name}.weight"], final["start"][f"{name}.weight"])
    cfg = write_config(tmp_path / "reuse.yml", IMP_CONFIG.format(algo="training")
                       .replace("imp_", "#") + f"ticket: {wr_run / 'ticket.pt'}\nepochs: 1\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "reuse"), "--quiet",
                      "--seed", "99"]) == 0
    reuse_dir = only_run_dir(tmp_path / "reuse")
    init = torch.load(reuse_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    for key, value in ticket["weights"].items():
        assert torch.equal(init[key], value), key
    summary = json.loads((reuse_dir / "summary.json").read_text())
    assert summary["density_pct"] == pytest.approx(100 * 25702 / TOTAL, abs=1e-4)


def test_ticket_transfer_reinitialises_a_classifier_of_another_size(tmp_path):
    from conftest import write_cifar10, write_cifar100

    write_cifar10(tmp_path / "d")
    write_cifar100(tmp_path / "d")
    common = ["--data", str(tmp_path / "d"), "--download", "false", "--quiet",
              "--val-size", "10", "--batch-size", "16"]
    src = write_config(tmp_path / "src.yml", "algo: imp_lrr\narch: Conv4\ndataset: CIFAR10\n"
                       "iter_period: 1\nimp_rounds: 2\nlr: 0.01\n")
    assert main.main(["--config", str(src), "--log-dir", str(tmp_path / "a"), *common]) == 0
    ticket = only_run_dir(tmp_path / "a") / "ticket.pt"
    dst = write_config(tmp_path / "dst.yml", f"algo: training\narch: Conv4\ndataset: CIFAR100"
                       f"\nepochs: 1\nlr: 0.01\nticket: {ticket}\n")
    assert main.main(["--config", str(dst), "--log-dir", str(tmp_path / "b"), *common]) == 0
    log = (only_run_dir(tmp_path / "b") / "log.txt").read_text()
    assert "classifier 'classifier.5' re-initialised" in log
    init = torch.load(only_run_dir(tmp_path / "b") / "checkpoints" / "init.pt",
                      weights_only=True)["model"]
    blob = torch.load(ticket, weights_only=True)["weights"]
    assert torch.equal(init["features.0.mask"], blob["features.0.mask"])
    assert torch.all(init["classifier.5.mask"] == 1)


def test_extending_a_finished_run_continues_from_the_last_level(tmp_path):
    run_dir, cfg = _run(tmp_path, "imp_lrr", args=["--imp-rounds", "2"])
    before = _csv(run_dir / "metrics.csv")
    stamp = (run_dir / "checkpoints" / "level_01.pt").stat().st_mtime_ns
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet",
                      "--imp-rounds", "3"]) == 0
    assert only_run_dir(tmp_path / "runs") == run_dir
    after = _csv(run_dir / "metrics.csv")
    assert after[:len(before)] == before                 # earlier levels not retrained
    assert {r["level"] for r in after[len(before):]} == {"2"}
    assert (run_dir / "checkpoints" / "level_01.pt").stat().st_mtime_ns == stamp
    assert json.loads((run_dir / "summary.json").read_text())["levels"] == 3
    assert "imp_rounds: 3" in (run_dir / "config.yaml").read_text()


def test_zero_levels_is_a_config_error(tmp_path, capsys):
    cfg = write_config(tmp_path / "zero.yml", IMP_CONFIG.format(algo="imp")
                       .replace("imp_rounds: 4", "epochs: 150\niter_period: 160")
                       .replace("iter_period: 3\n", ""))
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "IMP would run 0 levels" in err and "imp_rounds" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,needle", [
    (["--prune-ignore", "fc9"], "no prunable layer named 'fc9'"),
    (["--imp-rewind-iter", "5ep"], "beyond level 0"),
    (["--target-sparsity", "10"], "either imp_rounds or target_sparsity"),
    (["--imp-controls", "reinit", "--imp-control-levels", "0"], "not a pruned level"),
])
def test_bad_imp_configs(tmp_path, capsys, args, needle):
    cfg = write_config(tmp_path / "bad.yml", IMP_CONFIG.format(algo="imp"))
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
