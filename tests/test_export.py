"""analysis.export and analysis.speed: a channel ticket as a physically smaller network with
the masked network's outputs; n:m weights packed (and in PyTorch's 2:4 semi-structured form)
with exact values; the speed table; errors."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import main
from conftest import only_run_dir, write_config
from models import architecture
from models.channels import channel_groups
from models.layers import LayerFactory
from models.masks import prunable_layers
from models.nm_masks import keep_n_per_group
from models.nm_pack import (dense_from_cutlass, gemm_matrix, pack_nm, semi_structured_cutlass,
                            semi_structured_problem, unpack_nm)
from models.shrink import kept_channels, parameter_count, plain_copy

RUN = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 1
batch_size: 128
optimizer: adam
lr: 0.002
imp_rewind_iter: 0
prune_scope: local
seed: 6
"""


def _run(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(folder / "c.yml", text)
    assert main.main(["--config", str(cfg), "--log-dir", str(folder / "runs"),
                      "--quiet"]) == 0
    return only_run_dir(folder / "runs")


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("xch"), RUN + "prune_granularity: channel\n"
                "prune_rate: 0.5\nimp_rounds: 2\n")


@pytest.fixture(scope="module")
def nm_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("xnm"), RUN + "prune_granularity: n:m\n")


def _randomise_batchnorm(model):
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-1, 1)


def test_resnet20_without_half_its_inner_channels_computes_the_same():
    torch.manual_seed(0)
    model = architecture("resnet20")(LayerFactory(), 10, 3, 32)
    layers = prunable_layers(model)
    for group in channel_groups(model):
        out = layers[group.producer].weight.shape[0]
        keep = torch.randperm(out)[:out // 2]
        rows = torch.zeros(out, dtype=torch.bool)
        rows[keep] = True
        mask = layers[group.producer].mask.clone()
        mask[~rows] = 0
        layers[group.producer].set_mask(mask)
        for consumer in group.consumers:
            mask = layers[consumer].mask.clone()
            mask[:, ~rows] = 0
            layers[consumer].set_mask(mask)
    _randomise_batchnorm(model)
    model.eval()
    small = plain_copy(model, remove_channels=True).eval()
    batch = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        # float32, other kernels and sum order: equal to a tolerance, not bitwise
        assert torch.allclose(small(batch), model(batch), atol=1e-5, rtol=1e-5)
    assert {n: int(i.numel()) for n, i in kept_channels(model).items()} == {
        g.producer: layers[g.producer].weight.shape[0] // 2 for g in channel_groups(model)}
    # 9 blocks lose half of conv1's filters, bn1's 2 parameters and conv2's columns
    removed = sum(layers[g.producer].weight.numel() // 2 + 2 * (
        layers[g.producer].weight.shape[0] // 2) + layers[g.consumers[0]].weight.numel() // 2
        for g in channel_groups(model))
    removed += sum(layers[g.producer].weight.shape[0] for g in channel_groups(model))  # stats
    assert parameter_count(small) == parameter_count(model) - removed


def test_export_channel_ticket(channel_run, tmp_path):
    from analysis.export import load_run_model, main as export_main

    out = tmp_path / "export"
    assert export_main([str(channel_run / "ticket.pt"), "--out", str(out)]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["channels"] == {"net.1": {"kept": 150, "of": 300},
                                  "net.3": {"kept": 50, "of": 100}}
    assert record["exported_flops"] == record["ticket_flops"] == 150 * 64 + 50 * 150 + 10 * 50
    assert record["parameters_exported"] == record["ticket_flops"]     # no biases
    state = torch.load(out / "model_state.pt", weights_only=True)
    assert state["state_dict"]["net.3.weight"].shape == (50, 150)
    _, _, masked = load_run_model(str(channel_run / "ticket.pt"))
    program = torch.export.load(str(out / "model.pt2")).module()
    batch = torch.randn(7, 1, 8, 8)                 # another batch size than exported with
    with torch.no_grad():
        assert torch.allclose(program(batch), masked(batch), atol=1e-5, rtol=1e-5)


def test_pack_nm_exact_values_and_round_trip():
    torch.manual_seed(2)
    weight = torch.randn(4, 8, 3, 3)
    mask = keep_n_per_group(weight.abs(), torch.ones_like(weight), 2, 4)
    values, positions = pack_nm(weight * mask, mask, 2, 4)
    assert values.shape == (4 * 3 * 3 * 2, 2) and positions.dtype == torch.uint8
    groups = (weight * mask).permute(0, 2, 3, 1).reshape(-1, 4)
    for g in (0, 5, 71):
        idx = groups[g].nonzero().flatten()
        assert positions[g].tolist() == idx.tolist()
        assert values[g].tolist() == groups[g][idx].tolist()
    assert torch.equal(unpack_nm(values, positions, weight.shape, 4), weight * mask)
    with pytest.raises(ValueError, match="not 1:4"):
        pack_nm(weight, mask, 1, 4)


def test_semi_structured_cutlass_form_on_cpu():
    torch.manual_seed(3)
    dense = torch.randn(32, 64)
    mask = keep_n_per_group(dense.abs(), torch.ones_like(dense), 2, 4)
    matrix = (dense * mask).to(torch.bfloat16)
    assert semi_structured_problem(matrix) is None
    assert "multiple" in semi_structured_problem(matrix[:16])
    assert "more than 2" in semi_structured_problem(dense.to(torch.bfloat16))
    packed, meta = semi_structured_cutlass(matrix)
    assert packed.shape == (32, 32) and packed.dtype == torch.bfloat16
    assert meta.shape == (32, 4) and meta.dtype == torch.int16
    # the packed values are the kept entries, row by row in column order
    assert torch.equal(packed, matrix[mask.bool()].view(32, 32))
    assert torch.equal(dense_from_cutlass(packed, meta), matrix)


def test_export_nm_ticket(nm_run, tmp_path):
    from analysis.export import main as export_main

    out = tmp_path / "nm"
    assert export_main([str(nm_run / "checkpoints" / "final.pt"), "--out", str(out)]) == 0
    blob = torch.load(out / "nm_weights.pt", weights_only=True)
    final = torch.load(nm_run / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert blob["n"] == 2 and blob["m"] == 4 and set(blob["layers"]) == {"net.1", "net.3",
                                                                         "net.5"}
    for name, entry in blob["layers"].items():
        weight = final[f"{name}.weight"] * final[f"{name}.mask"]
        assert torch.equal(unpack_nm(entry["values"], entry["positions"], weight.shape, 4),
                           weight)
        assert "cutlass_packed" not in entry          # LeNet's 300/100/10 rows: no 2:4 tile
    record = json.loads((out / "export.json").read_text())
    assert "not a multiple" in record["layers"]["net.1"]["why_not_semi_structured"]


def test_nm_conv_layers_get_the_cutlass_form():
    from analysis.speed import nm_problems, semi_structured_linears

    torch.manual_seed(4)
    model = architecture("Conv4")(LayerFactory(), 10, 1, 8)
    for name, layer in prunable_layers(model).items():
        if layer.weight.shape[1] % 4 == 0:
            layer.set_mask(keep_n_per_group(layer.weight.abs(), layer.mask, 2, 4))
    problems = nm_problems(model, 2, 4)
    assert problems["features.0"] == "not 2:4"                   # one input channel
    assert problems["features.2"] is None                         # 64 × 576
    assert problems["classifier.1"] is None and problems["classifier.3"] is None
    assert "multiple" in problems["classifier.5"]                 # 10 rows
    matrix = gemm_matrix(prunable_layers(model)["features.2"].effective_weight().detach())
    packed, meta = semi_structured_cutlass(matrix.to(torch.bfloat16))
    assert torch.equal(dense_from_cutlass(packed, meta), matrix.to(torch.bfloat16))
    # the CUDA model swaps exactly the 2:4 linear layers' weights (identity stand-in here)
    plain = plain_copy(model)
    swapped = semi_structured_linears(plain, problems, lambda w: w.clone())
    assert swapped == ["classifier.1", "classifier.3"]


def test_speed_table_and_errors(channel_run, nm_run, tmp_path, capsys):
    from analysis.export import main as export_main
    from analysis.speed import main as speed_main

    assert speed_main([str(channel_run), "--batch-size", "8", "--repeats", "2", "--warmup",
                       "1", "--device", "cpu"]) == 0
    with open(channel_run / "speed.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["network"] for r in rows] == ["dense", "masked", "exported"]
    theory = json.loads((channel_run / "summary.json").read_text())["theoretical_speedup"]
    assert float(rows[2]["theoretical_speedup"]) == pytest.approx(theory, rel=1e-5)
    assert float(rows[0]["speedup_vs_dense"]) == 1.0
    assert "| exported |" in (channel_run / "speed.md").read_text()
    assert speed_main([str(nm_run), "--batch-size", "8", "--repeats", "1", "--device",
                       "cpu"]) == 0
    assert "no n:m kernel" in (nm_run / "speed.md").read_text()
    capsys.readouterr()
    assert speed_main([str(tmp_path / "missing")]) == 2
    if not torch.cuda.is_available():
        assert speed_main([str(channel_run), "--device", "cuda"]) == 2
    weight_run = _run(tmp_path / "w", RUN + "imp_rounds: 2\n")
    assert export_main([str(weight_run / "ticket.pt"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert "error: " in err and "channel or n:m" in err
