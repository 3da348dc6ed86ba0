"""FLOPs (multiply-adds of the prunable layers) against hand counts, and where runs record
them: summary.json, levels.csv, TensorBoard, the dry-run plan, analysis.report."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import main
from conftest import only_run_dir, write_config
from models import architecture
from models.flops import count_flops, output_positions
from models.layers import LayerFactory
from models.masks import prunable_layers


def _lenet(image_size=8, channels=1):
    torch.manual_seed(0)
    return architecture("lenet_300_100")(LayerFactory(), 10, channels, image_size)


def _resnet20():
    torch.manual_seed(0)
    return architecture("resnet20")(LayerFactory(), 10, 3, 32)


# ResNet-20 on 3×32×32 by hand: multiply-adds = in · out · 3 · 3 · output pixels
STEM = 3 * 16 * 9 * 32 * 32                                   # 442,368
STAGE1 = 6 * (16 * 16 * 9 * 32 * 32)                          # 6 convs at 32×32
STAGE2 = 16 * 32 * 9 * 16 * 16 + 5 * (32 * 32 * 9 * 16 * 16)  # first conv has stride 2
STAGE3 = 32 * 64 * 9 * 8 * 8 + 5 * (64 * 64 * 9 * 8 * 8)
FC = 64 * 10
RESNET20_FLOPS = STEM + STAGE1 + STAGE2 + STAGE3 + FC


def test_lenet_hand_counts_dense_and_masked():
    model = _lenet()
    assert output_positions(model, (1, 8, 8)) == {"net.1": 1, "net.3": 1, "net.5": 1}
    assert count_flops(model, (1, 8, 8))["dense_flops"] == 64 * 300 + 300 * 100 + 100 * 10
    mnist = _lenet(28)
    assert count_flops(mnist, (1, 28, 28))["dense_flops"] == 266_200
    layers = prunable_layers(model)
    masks = {"net.1": torch.zeros(300, 64), "net.3": torch.ones(100, 300),
             "net.5": torch.ones(10, 100)}
    masks["net.1"][:, :16] = 1                   # 4,800 kept
    masks["net.3"][50:] = 0                      # 15,000 kept
    for name, mask in masks.items():
        layers[name].set_mask(mask)
    record = count_flops(model, (1, 8, 8))
    assert record["flops"] == 4_800 + 15_000 + 1_000
    assert record["flops_pct"] == pytest.approx(100 * 20_800 / 50_200)
    assert record["theoretical_speedup"] == pytest.approx(50_200 / 20_800)


def test_resnet20_hand_counts_and_positions():
    model = _resnet20()
    positions = output_positions(model, (3, 32, 32))
    assert positions["conv1"] == 1024 and positions["layer2.0.conv1"] == 256
    assert positions["layer3.2.conv2"] == 64 and positions["fc"] == 1
    assert RESNET20_FLOPS == 40_551_040
    assert count_flops(model, (3, 32, 32))["dense_flops"] == RESNET20_FLOPS
    # half the filters of every block's conv1 and the conv2 columns reading them
    layers = prunable_layers(model)
    for name in [n for n in layers if n.endswith("conv1") and n != "conv1"]:
        block = name[:-len("conv1")]
        out = layers[name].weight.shape[0]
        rows = layers[name].mask.clone()
        rows[out // 2:] = 0
        layers[name].set_mask(rows)
        cols = layers[block + "conv2"].mask.clone()
        cols[:, out // 2:] = 0
        layers[block + "conv2"].set_mask(cols)
    record = count_flops(model, (3, 32, 32))
    assert record["flops"] == STEM + (STAGE1 + STAGE2 + STAGE3) // 2 + FC == 20_497_024
    assert record["theoretical_speedup"] == pytest.approx(40_551_040 / 20_497_024)


def test_counting_changes_no_state():
    model = _resnet20().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


IMP = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 1
imp_rounds: 3
prune_scope: local
batch_size: 128
optimizer: adam
lr: 0.002
imp_rewind_iter: 0
seed: 2
"""


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flops")
    cfg = write_config(folder / "imp.yml", IMP)
    assert main.main(["--config", str(cfg), "--log-dir", str(folder / "runs"),
                      "--quiet"]) == 0
    return only_run_dir(folder / "runs")


def test_levels_summary_and_tensorboard_hold_the_flops(imp_run):
    rows = _csv(imp_run / "levels.csv")
    for level, row in enumerate(rows):
        masks = torch.load(imp_run / "checkpoints" / f"level_{level:02d}.pt",
                           weights_only=True)["masks"]
        kept = sum(int(m.count_nonzero()) for m in masks.values())   # 1 position per layer
        assert int(row["flops"]) == kept
        assert float(row["flops_pct"]) == pytest.approx(100 * kept / 50_200, abs=1e-4)
        assert float(row["theoretical_speedup"]) == pytest.approx(50_200 / kept, rel=1e-5)
    summary = json.loads((imp_run / "summary.json").read_text())
    assert summary["dense_flops"] == 50_200
    assert summary["flops"] == int(rows[-1]["flops"])
    assert summary["level_flops_pct"] == [round(float(r["flops_pct"]), 6) for r in rows]
    assert "prune_granularity" not in summary              # weight: as before
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(imp_run)).Reload()
    assert [round(e.value, 3) for e in events.Scalars("imp/flops_pct")] == [
        round(float(r["flops_pct"]), 3) for r in rows]
    assert events.Scalars("hparam/theoretical_speedup")[-1].value == pytest.approx(
        summary["theoretical_speedup"], rel=1e-5)


def test_dry_run_plan_shows_flops(tmp_path, capsys):
    cfg = write_config(tmp_path / "imp.yml", IMP)
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dense 50.20 k" in out
    # local scope: every level's counts, hence its FLOPs, are known before training
    assert "level  1: density  80.000 %" in out and "FLOPs 40.16 k of 50.20 k" in out
    assert not (tmp_path / "runs").exists()


def test_report_has_flops_columns_and_plot(imp_run, tmp_path):
    from analysis import report

    assert report.main([str(imp_run.parent), "--out", str(tmp_path / "report")]) == 0
    table = _csv(tmp_path / "report" / "report.csv")
    assert [round(float(r["flops_pct_mean"]), 2) for r in table] == [
        round(float(r["flops_pct"]), 2) for r in _csv(imp_run / "levels.csv")]
    assert "| FLOPs % |" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "accuracy_vs_flops.png").stat().st_size > 5000
