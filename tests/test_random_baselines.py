"""random_subnet and Smart-Ratio: layer densities against upstream's published ResNet-20
table, version 2, Bernoulli masks, and a short whole run."""
from __future__ import annotations

import json

import pytest
import torch

import main
from args_helper import resolve
from conftest import only_run_dir, write_config
from pruners.search.random_subnet import exact_count_masks, random_subnet_masks
from pruners.search.smart_ratio import counts_for_config, smart_ratio_counts

# ResNet-20's prunable layers in order: stem conv, 18 block convs, classifier
RESNET20 = [432] + [2304] * 6 + [4608] + [9216] * 5 + [18432] + [36864] * 5 + [640]

# Upstream's per_layer_sparsity_resnet20/smart_ratio.csv: Smart-Ratio layer densities (%) of
# ResNet-20 at 0.59 %, 1.44 %, 5 % and 50 % density.
UPSTREAM = {
    0.0059: [3.7037037037037037, 3.4288194444444446, 3.0815972222222223, 2.7777777777777777,
             2.4305555555555554, 2.170138888888889, 1.8663194444444444, 1.6493055555555556,
             1.4105902777777777, 1.1935763888888888, 0.9982638888888888, 0.8138020833333334,
             0.6510416666666666, 0.5045572916666666, 0.3797743055555556, 0.2712673611111111,
             0.18174913194444445, 0.10850694444444445, 0.054253472222222224, 30.0],
    0.0144: [9.953703703703704, 9.114583333333334, 8.203125, 7.335069444444445,
             6.510416666666667, 5.729166666666667, 5.034722222222222, 4.361979166666667,
             3.7434895833333335, 3.1575520833333335, 2.63671875, 2.1592881944444446,
             1.7252604166666667, 1.3400607638888888, 1.0064019097222223, 0.7188585069444444,
             0.4774305555555556, 0.2875434027777778, 0.1437717013888889, 30.0],
    0.05: [36.111111111111114, 32.8125, 29.557291666666668, 26.432291666666668,
           23.48090277777778, 20.703125, 18.14236111111111, 15.711805555555555, 13.4765625,
           11.40407986111111, 9.505208333333334, 7.769097222222222, 6.217447916666667,
           4.839409722222222, 3.6295572916666665, 2.590603298611111, 1.7279730902777777,
           1.0362413194444444, 0.5181206597222222, 30.0],
    0.5: [100.0] * 14 + [77.70453559027777, 26.26681857638889, 17.51030815972222,
                         10.506184895833334, 5.251736111111111, 30.0],
}


@pytest.mark.parametrize("density", sorted(UPSTREAM))
def test_smart_ratio_matches_upstreams_resnet20_table(density):
    counts = smart_ratio_counts(RESNET20, density)
    got = [100.0 * c / n for c, n in zip(counts, RESNET20)]
    assert got == pytest.approx(UPSTREAM[density], abs=1e-9)
    assert sum(counts) <= density * sum(RESNET20)
    assert sum(counts) >= density * sum(RESNET20) - len(RESNET20)   # floor per layer only


def test_smart_ratio_version_2_keeps_the_total_and_fixes_first_and_last():
    cfg = resolve(["--random-subnet", "--smart-ratio", "0.9856", "--sr-version", "2",
                   "--arch", "resnet20"])
    assert cfg.algo_name == "smart_ratio"
    counts = counts_for_config(cfg, RESNET20)
    assert counts[0] == 149 and counts[-1] == 166         # 34.49 % of 432, 25.94 % of 640
    target = 0.0144 * sum(RESNET20)
    assert target - len(RESNET20) <= sum(counts) <= target
    middle = [c / n for c, n in zip(counts[1:-1], RESNET20[1:-1])]
    assert middle == sorted(middle, reverse=True)          # still Smart-Ratio shaped


def test_vgg_variant_divides_by_the_layer_index_squared():
    sizes = [1000] * 4
    counts = smart_ratio_counts(sizes, 0.1, vgg=True)
    # raw (L−l+1)²+(L−l+1) / l²: 20, 12/4, 6/9, 2/16 → scaled so the first three fill the budget
    raw = [20, 3, 6 / 9]
    budget = 0.1 * 4000 - 300
    assert counts[3] == 300
    assert counts[:3] == [int(r * budget / (1000 * sum(raw)) * 1000) for r in raw]


def test_random_masks():
    from models import architecture
    from models.layers import LayerFactory

    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 28)
    masks = random_subnet_masks(model, 0.2, torch.Generator().manual_seed(0))
    density = sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert density == pytest.approx(0.2, abs=0.005)        # 266,200 Bernoulli(0.2) draws
    again = random_subnet_masks(model, 0.2, torch.Generator().manual_seed(0))
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    exact = exact_count_masks(model, {"net.1": 5, "net.3": 0, "net.5": 1000},
                              torch.Generator().manual_seed(1))
    assert [int(exact[n].sum()) for n in ("net.1", "net.3", "net.5")] == [5, 0, 1000]


def test_smart_ratio_run(tmp_path):
    cfg = write_config(tmp_path / "sr.yml", """
algo: hc_iter
random_subnet: True
smart_ratio: 0.9
arch: lenet_300_100
dataset: digits
epochs: 2
batch_size: 64
fine_tune_lr: 0.2
fine_tune_lr_policy: cosine_lr
init: kaiming_normal
""")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    summary = json.loads((run_dir / "summary.json").read_text())
    sizes = [64 * 300, 300 * 100, 100 * 10]
    counts = smart_ratio_counts(sizes, 0.1)
    assert summary["algo"] == "smart_ratio"
    assert summary["density_pct"] == pytest.approx(100 * sum(counts) / sum(sizes), abs=1e-6)
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    assert [int(ticket["masks"][n].sum()) for n in ("net.1", "net.3", "net.5")] == counts
    init = torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    assert torch.equal(ticket["model"]["net.3.weight"],
                       init["net.3.weight"] * ticket["masks"]["net.3"])
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["finetune", "finetune"]   # no search, no sanity
    assert summary["test_acc"] > 50
