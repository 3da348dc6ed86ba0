"""Analysis building blocks: barriers, interpolation endpoints, Hessian spectra, projection
distance, slices, adaptive pruning, and the analyses wired into IMP runs and the report."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import main
from analysis.hessian import HessianOperator, hutchinson_trace, top_eigenvalues
from analysis.interpolation import error_barrier, interpolate, projection_distance
from analysis.weights import effective_state
from conftest import REPO, only_run_dir, write_config
from models import architecture
from models.layers import LayerFactory, MaskedLinear
from models.masks import pruning_pool
from utils.train import evaluate


def _digits_loaders():
    import data
    from args_helper import resolve

    cfg = resolve(["--algo", "training", "--dataset", "digits"])
    return data.make_loaders(data.load_splits(cfg), 64, torch.device("cpu"), 0)


def _trained_pair():
    """Two differently trained resnet20s on digits (a few steps each)."""
    loaders = _digits_loaders()
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = architecture("resnet20")(LayerFactory(), 10, 1, 8)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loaders.train.set_epoch(0, seed=seed)
        for step, (x, y) in enumerate(loaders.train):
            if step == 6:
                break
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return model, states, loaders


def test_error_barrier_definition():
    gammas = [0.0, 0.5, 1.0]
    assert error_barrier(gammas, [10.0, 10.0, 10.0]) == 0.0
    assert error_barrier(gammas, [10.0, 30.0, 20.0]) == pytest.approx(15.0)  # 30 − 15
    assert error_barrier(gammas, [10.0, 5.0, 20.0]) == 0.0                   # below the chord


def test_barrier_of_a_network_with_itself_is_zero():
    model, (a, _), loaders = _trained_pair()
    curve = interpolate(model, a, a, loaders, points=5, bn_reset_batches=3)
    assert curve.test_barrier == 0.0 and curve.train_barrier == 0.0
    assert len(set(curve.test_error)) == 1


@pytest.mark.parametrize("bn_reset", [0, 4])
def test_interpolation_endpoints_reproduce_endpoint_errors(bn_reset):
    from analysis.batchnorm import reestimate_batchnorm

    model, (a, b), loaders = _trained_pair()
    curve = interpolate(model, a, b, loaders, points=3, bn_reset_batches=bn_reset)
    for state, index in ((a, -1), (b, 0)):
        model.load_state_dict(state)
        reestimate_batchnorm(model, loaders.train, bn_reset)
        assert curve.test_error[index] == pytest.approx(100 - evaluate(model,
                                                                       loaders.test)["acc"])
        assert curve.train_error[index] == pytest.approx(
            100 - evaluate(model, loaders.train_eval)["acc"])
    assert curve.gammas == [0.0, 0.5, 1.0]


def test_masked_networks_interpolate_through_effective_weights():
    layer = nn.Sequential(MaskedLinear(3, 2, bias=False))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["0.mask"][0, 0] = 0
    eff = effective_state(state)
    assert eff["0.weight"][0, 0] == 0 and torch.all(eff["0.mask"] == 1)
    assert eff["0.weight"][1, 1] == state["0.weight"][1, 1]


def test_projection_distance():
    state = {"l.weight": torch.tensor([[3.0, 4.0]]), "l.mask": torch.ones(1, 2)}
    absolute, relative = projection_distance(state, {"l": torch.tensor([[0.0, 1.0]])})
    assert absolute == pytest.approx(3.0) and relative == pytest.approx(0.6)


class _Quadratic:
    """hvp of the quadratic ½ wᵀAw (Hessian A) on one masked parameter."""

    def __init__(self, matrix, mask):
        self.matrix, self.masks = matrix, [mask]
        self.params = [torch.zeros(len(mask))]

    def hvp(self, vector):
        return [(self.matrix @ (vector[0] * self.masks[0])) * self.masks[0]]

    def random_vector(self, generator, rademacher=False):
        n = len(self.masks[0])
        v = (torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1) if rademacher \
            else torch.randn(n, generator=generator)
        return [v * self.masks[0]]


def test_eigenvalues_and_trace_on_a_quadratic():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    spectrum = torch.tensor([9.0, -6.0, 4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    matrix = (q * spectrum) @ q.T
    values, _ = top_eigenvalues(_Quadratic(matrix, torch.ones(6, dtype=torch.float64)), 3,
                                iters=2000, tol=1e-12)
    assert values == pytest.approx([9.0, -6.0, 4.0], rel=1e-6)   # largest magnitudes
    diagonal = torch.diag(torch.tensor([3.0, 1.0, 2.0, 5.0], dtype=torch.float64))
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    # Rademacher probes give the trace of a diagonal matrix exactly: restricted trace 3+1+5
    assert hutchinson_trace(_Quadratic(diagonal, mask), samples=3) == pytest.approx(9.0)
    restricted, _ = top_eigenvalues(_Quadratic(diagonal, mask), 1, iters=500, tol=1e-12)
    assert restricted[0] == pytest.approx(5.0)                   # the masked 2.0 is excluded


def test_hessian_of_a_tiny_mlp_matches_autograd():
    torch.manual_seed(0)
    f = LayerFactory(bias=True)
    model = nn.Sequential(f.linear(5, 4), nn.Tanh(), f.linear(4, 3)).double()
    with torch.no_grad():
        model[0].mask[0, :2] = 0
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    op = HessianOperator(model, [(x[:6], y[:6]), (x[6:], y[6:])], batches=2)
    values, _ = top_eigenvalues(op, 3, iters=3000, tol=1e-13)

    w1, w2 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    b1, b2 = model[0].bias.detach(), model[2].bias.detach()
    m1 = model[0].mask

    def loss_of(flat):
        a, b = flat[:20].view(4, 5), flat[20:].view(3, 4)
        out = F.linear(torch.tanh(F.linear(x, a * m1, b1)), b, b2)
        return F.cross_entropy(out, y)

    full = torch.autograd.functional.hessian(loss_of, torch.cat([w1.flatten(), w2.flatten()]))
    keep = torch.cat([m1.flatten(), torch.ones(12, dtype=torch.float64)]).bool()
    exact = torch.linalg.eigvalsh(full[keep][:, keep])
    by_magnitude = exact[exact.abs().argsort(descending=True)][:3]
    assert values == pytest.approx(by_magnitude.tolist(), rel=1e-5, abs=1e-9)
    estimate = hutchinson_trace(op, samples=4000, seed=1)
    assert estimate == pytest.approx(float(torch.trace(full[keep][:, keep])), rel=0.05)
    assert top_eigenvalues(op, 1, seed=3)[0] == top_eigenvalues(op, 1, seed=3)[0]


def test_adaptive_fraction_is_the_largest_within_epsilon():
    from analysis.adaptive import choose_fraction, fraction_masks, predicted_increase

    model, (a, _), loaders = _trained_pair()
    model.load_state_dict(a)
    pool = pruning_pool(model)
    choice = choose_fraction(model, pool, loaders.train_eval, batches=2, scope="global",
                             low=0.05, high=0.9, epsilon=0.02, steps=6)
    op = HessianOperator(model, loaders.train_eval, 2)
    assert 0.05 <= choice["fraction"] <= 0.9
    assert choice["predicted"] <= 0.02 or choice["fraction"] == 0.05
    if choice["fraction"] < 0.9:
        larger = fraction_masks(pool, min(0.9, choice["fraction"] + 0.9 / 2 ** 6), "global")
        assert predicted_increase(op, model, larger) > 0.02
    assert math.isfinite(choice["measured"])


ANALYSED_IMP = """
algo: imp_wr
arch: resnet20
dataset: digits
iter_period: 2
imp_rounds: 3
imp_rewind_iter: 10
batch_size: 128
lr: 0.1
lr_policy: cosine_lr
lmc_successive: true
lmc_points: 3
bn_reset_batches: 2
hessian_topk: 2
hessian_trace: true
hessian_batches: 2
hessian_samples: 3
hessian_iters: 20
seed: 2
"""


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysed")
    cfg = write_config(tmp / "an.yml", ANALYSED_IMP)
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp / "runs"), "--quiet"]) == 0
    return only_run_dir(tmp / "runs"), cfg


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_imp_run_records_barriers_and_hessian_per_level(analysed_run):
    run_dir, _ = analysed_run
    rows = _csv(run_dir / "levels.csv")
    assert list(rows[0])[:10] == ["level", "density_pct", "sparsity_pct", "test_acc",
                                  "val_acc", "best_val_acc", "test_acc_at_best_val", "epochs",
                                  "seconds", "matching"]
    for column in ("proj_dist", "proj_dist_rel", "barrier_test", "barrier_train",
                   "hessian_trace", "hessian_top1", "hessian_top2"):
        assert column in rows[0], column
    assert rows[0]["barrier_test"] == "" and float(rows[1]["barrier_test"]) >= 0
    assert abs(float(rows[1]["hessian_top1"])) >= abs(float(rows[1]["hessian_top2"]))
    assert 0 < float(rows[1]["proj_dist_rel"]) < 1
    for level in (1, 2):
        png = run_dir / "analysis" / f"lmc_L{level - 1:02d}_L{level:02d}.png"
        assert png.stat().st_size > 5000
        curve = _csv(png.with_suffix(".csv"))
        assert [float(r["gamma"]) for r in curve] == [0.0, 0.5, 1.0]


def test_adding_analyses_to_a_finished_run_fills_them_in(analysed_run, tmp_path):
    run_dir, cfg = analysed_run
    level_file = run_dir / "checkpoints" / "level_02.pt"
    stamp = level_file.stat().st_mtime_ns
    assert main.main(["--config", str(cfg), "--log-dir", str(run_dir.parent), "--quiet",
                      "--lmc-matrix"]) == 0
    assert only_run_dir(run_dir.parent) == run_dir        # same run, extended
    assert level_file.stat().st_mtime_ns == stamp         # no level retrained
    matrix = _csv(run_dir / "analysis" / "lmc_matrix.csv")
    assert [r["level"] for r in matrix] == ["L0", "L1", "L2"]
    assert float(matrix[0]["L0"]) == 0.0
    assert float(matrix[0]["L1"]) == float(matrix[1]["L0"])
    assert (run_dir / "analysis" / "lmc_matrix.png").stat().st_size > 5000


def test_stability_copies_and_adaptive_rate(tmp_path):
    # LeNet (no BatchNorm) keeps this test quick; the BatchNorm paths are covered above
    config = ANALYSED_IMP.replace("arch: resnet20", "arch: lenet_300_100")
    for line in ("lmc_successive: true", "hessian_topk: 2", "hessian_trace: true"):
        config = config.replace(line + "\n", "")
    cfg = write_config(tmp_path / "st.yml", config + "stability_copies: 2\n"
                       "adaptive_prune_rate: true\nadaptive_epsilon: 0.05\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    stability = _csv(run_dir / "stability.csv")
    assert [r["level"] for r in stability] == ["2"] and stability[0]["copies"] == "2"
    assert float(stability[0]["barrier_test"]) >= 0
    rows = _csv(run_dir / "levels.csv")
    for row in rows[1:]:
        fraction = float(row["prune_fraction"])
        assert 0.05 <= fraction <= 0.5
        assert float(row["predicted_loss_increase"]) <= 0.05 or fraction == 0.05
        assert row["measured_loss_increase"] != ""
    level1 = torch.load(run_dir / "checkpoints" / "level_01.pt", weights_only=True)
    kept = sum(int(m.count_nonzero()) for m in level1["masks"].values())
    total = 64 * 300 + 300 * 100 + 100 * 10           # LeNet-300-100 on 8×8 digits
    assert kept == total - int(float(rows[1]["prune_fraction"]) * total + 0.5)


def test_analysis_commands(analysed_run, tmp_path):
    run_dir, _ = analysed_run
    ckpt = run_dir / "checkpoints"
    out = subprocess.run([sys.executable, "-m", "analysis.interpolate",
                          str(ckpt / "level_02.pt"), str(ckpt / "level_01.pt"), "--config",
                          str(run_dir / "config.yaml"), "--points", "3", "--out",
                          str(tmp_path / "interp")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "test error barrier" in out.stdout
    assert (tmp_path / "interp.png").stat().st_size > 5000
    assert len(_csv(tmp_path / "interp.csv")) == 3
    out = subprocess.run([sys.executable, "-m", "analysis.hessian", str(ckpt / "final.pt"),
                          "--config", str(run_dir / "config.yaml"), "--topk", "2", "--trace",
                          "--batches", "2", "--samples", "3", "--iters", "20", "--out",
                          str(tmp_path / "h.json")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "h.json").read_text())
    assert len(result["hessian_top"]) == 2 and result["hessian_trace"] is not None
    bad = subprocess.run([sys.executable, "-m", "analysis.hessian", str(tmp_path / "nope.pt"),
                          "--config", str(run_dir / "config.yaml")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot load weights")


def test_landscape_slice(analysed_run, tmp_path):
    from analysis.landscape import error_slice, save_slice
    from analysis.weights import load_weight_set

    run_dir, _ = analysed_run
    ckpt = run_dir / "checkpoints"
    states = [load_weight_set(str(ckpt / "level_01.pt")), load_weight_set(
        f"{ckpt / 'level_02.pt'}:start"), load_weight_set(str(ckpt / "level_02.pt"))]
    model = architecture("resnet20")(LayerFactory(), 10, 1, 8)
    result = error_slice(model, states, _digits_loaders(), grid=3, bn_reset_batches=1)
    assert len(result["test_error"]) == 3 and len(result["test_error"][0]) == 3
    assert result["points"][0] == (0.0, 0.0) and result["points"][1][1] == 0.0
    save_slice(result, ["a", "b", "c"], str(tmp_path / "slice"), "slice")
    assert (tmp_path / "slice.png").stat().st_size > 5000


def test_report_over_a_folder_of_runs(analysed_run, tmp_path):
    run_dir, _ = analysed_run
    dense = write_config(tmp_path / "dense.yml", "algo: training\narch: lenet_300_100\n"
                         "dataset: digits\nepochs: 1\nlr: 0.05\n")
    for seed in (1, 2):
        assert main.main(["--config", str(dense), "--log-dir", str(run_dir.parent), "--quiet",
                          "--seed", str(seed)]) == 0
    out = subprocess.run([sys.executable, "-m", "analysis.report", str(run_dir.parent),
                          "--out", str(tmp_path / "report")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    table = _csv(tmp_path / "report" / "report.csv")
    dense_rows = [r for r in table if r["algo"] == "training"]
    assert len(dense_rows) == 1 and dense_rows[0]["runs"] == "2"
    assert dense_rows[0]["seeds"] == "1 2" and float(dense_rows[0]["test_acc_std"]) >= 0
    imp_rows = [r for r in table if r["algo"] == "imp_wr"]
    assert [round(float(r["density_pct"])) for r in imp_rows] == [100, 80, 64]
    assert [r["level"] for r in imp_rows] == ["0", "1", "2"]
    assert imp_rows[0]["barrier_test_mean"] == ""
    assert float(imp_rows[1]["barrier_test_mean"]) >= 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.startswith("# Results") and "| series | level | density % |" in md
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"accuracy_vs_density.png", "accuracy_vs_density.pdf"} <= names
    for figure in ("levels", "barrier_curves", "layer_density"):     # no lmc_matrix asked
        assert any(n.endswith(f"-imp_wr-{figure}.png") for n in names), figure
        assert any(n.endswith(f"-imp_wr-{figure}.pdf") for n in names), figure
    pngs = [p for p in (tmp_path / "report").glob("*.png")]
    assert all(p.stat().st_size > 5000 for p in pngs)
    assert all(p.read_bytes()[:4] == b"%PDF" for p in (tmp_path / "report").glob("*.pdf"))
    empty = subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path / "none")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2
