"""`grad_flow: true` beyond IMP: mask searches and pruning at init record the gradient norm of
the dense network at init, of the ticket as its training starts and of every control /
sanity check as it starts (pruners/start_grad_flow.py).

- each number equals a direct float64 autograd computation on the network read from the run's
  files (init.pt with every mask 1, before_finetune.pt), over the run's fixed batches;
- copy 0 of a packed at-init run records exactly the numbers of the same seed run alone (the
  starting points are rebuilt from files, not from the packed training state);
- the summary, the controls list, log.txt and TensorBoard agree.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import only_run_dir, run_in_process

import data
from analysis.grad_flow import fixed_batches
from args_helper import resolve
from models import InputSpec, build_model
from models.masks import get_masks, set_masks
from utils.checkpoint import load_checkpoint

DIGITS = InputSpec(10, 1, 8)
AT_INIT = """
algo: snip
arch: lenet_300_100
dataset: digits
epochs: 1
batch_size: 64
optimizer: sgd
lr: 0.05
target_sparsity: 5
at_init_controls: [reinit, shuffle_mask]
grad_flow: true
grad_flow_batches: 3
seed: 11
"""
SEARCH = """
algo: hc_iter
arch: lenet_300_100
dataset: digits
epochs: 3
iter_period: 1
batch_size: 64
optimizer: sgd
lr: 0.1
fine_tune_lr: 0.05
target_sparsity: 20
score_init: unif
grad_flow: true
grad_flow_batches: 2
seed: 5
"""


def _direct_norm(model, batches) -> float:
    """‖∇θ mean_b CE_b‖ over the trainable parameters, one autograd.grad call in float64."""
    probe = copy.deepcopy(model).double().train()
    params = [p for p in probe.parameters() if p.requires_grad]
    loss = sum(F.cross_entropy(probe(x.double()), y) for x, y in batches) / len(batches)
    grads = torch.autograd.grad(loss, params)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def _network(run_dir, filename: str, dense: bool = False):
    """The run's architecture (plain masked layers) holding checkpoints/<filename> (a mask
    search's scores left out: fine-tuning trains weights × mask); every mask 1 when `dense`."""
    cfg = resolve(["--config", str(run_dir / "config.yaml")])
    model = build_model(cfg, DIGITS)
    state = load_checkpoint(run_dir / "checkpoints" / filename)["model"]
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith(".scores")})
    if dense:
        set_masks(model, {n: torch.ones_like(m) for n, m in get_masks(model).items()})
    return model


def _batches(run_dir):
    cfg = resolve(["--config", str(run_dir / "config.yaml")])
    loaders = data.load_splits(cfg).make_loaders(cfg.batch_size, torch.device("cpu"), cfg.seed)
    return fixed_batches(loaders.train_eval, cfg.batch_size, cfg.grad_flow_batches)


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def at_init_run(tmp_path_factory):
    rc, log_dir = run_in_process(tmp_path_factory.mktemp("snip"), "snip", AT_INIT)
    assert rc == 0
    return only_run_dir(log_dir)


def test_at_init_norms_equal_a_direct_computation(at_init_run):
    s = _summary(at_init_run)
    batches = _batches(at_init_run)
    assert [len(y) for _, y in batches] == [64, 64, 64]
    # float32 (the run) against float64 (direct): the same terms, rounded differently; the
    # summary keeps 6 significant digits
    assert s["ticket_grad_norm"] == pytest.approx(
        _direct_norm(_network(at_init_run, "before_finetune.pt"), batches), rel=2e-5)
    assert s["dense_init_grad_norm"] == pytest.approx(
        _direct_norm(_network(at_init_run, "init.pt", dense=True), batches), rel=2e-5)
    # the controls' norms are in the summary fields and in the controls list alike
    assert [c["control"] for c in s["controls"]] == ["reinit", "shuffle_mask"]
    for c in s["controls"]:
        assert c["grad_norm"] == s[f"control_{c['control']}_grad_norm"] > 0
    assert len({s["ticket_grad_norm"], s["dense_init_grad_norm"],
                s["control_reinit_grad_norm"], s["control_shuffle_mask_grad_norm"]}) == 4
    log = (at_init_run / "log.txt").read_text()
    assert "gradient norm at the start (grad_flow, 3 batch(es), 192 training images): " \
           "dense_init " in log


def test_at_init_norms_are_on_tensorboard(at_init_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in at_init_run.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"grad_flow/dense_init", "grad_flow/ticket", "grad_flow/control_reinit",
            "grad_flow/control_shuffle_mask"} <= tags


def test_packed_copy_records_the_single_runs_norms(at_init_run, tmp_path):
    rc, log_dir = run_in_process(tmp_path, "snip", AT_INIT.replace("seed: 11", "seed: 10"),
                                 ["--replicates", "2"])
    assert rc == 0
    copy1 = next(p for p in log_dir.iterdir() if p.is_dir() and "-s11-" in p.name)
    single, packed = _summary(at_init_run), _summary(copy1)
    keys = [k for k in single if k.endswith("_grad_norm")]
    assert len(keys) == 4
    assert {k: packed[k] for k in keys} == {k: single[k] for k in keys}


def test_search_norms_equal_a_direct_computation(tmp_path):
    rc, log_dir = run_in_process(tmp_path, "hc", SEARCH)
    assert rc == 0
    run_dir = only_run_dir(log_dir)
    s = _summary(run_dir)
    batches = _batches(run_dir)
    assert {k for k in s if k.endswith("_grad_norm")} == {
        "dense_init_grad_norm", "ticket_grad_norm", "sanity_reinit_grad_norm",
        "sanity_shuffle_grad_norm"}
    ticket = _network(run_dir, "before_finetune.pt")
    kept = sum(int(m.count_nonzero()) for m in get_masks(ticket).values())
    assert 100 * kept / 50_200 == pytest.approx(s["density_pct"], abs=1e-5) and kept < 50_200
    assert s["ticket_grad_norm"] == pytest.approx(_direct_norm(ticket, batches), rel=2e-5)
    assert s["dense_init_grad_norm"] == pytest.approx(
        _direct_norm(_network(run_dir, "init.pt", dense=True), batches), rel=2e-5)
    assert s["sanity_reinit_grad_norm"] > 0 and s["sanity_shuffle_grad_norm"] > 0


def test_report_shows_the_tickets_gradient_norm(at_init_run, tmp_path):
    from analysis.report import build

    _, rows, _ = build([str(at_init_run)], str(tmp_path / "report"), ("png",))
    assert [r["grad_norm_mean"] for r in rows] == [_summary(at_init_run)["ticket_grad_norm"]]
    table = (tmp_path / "report" / "report.md").read_text()
    assert f"| {_summary(at_init_run)['ticket_grad_norm']:.4g} |" in table
    header = next(line for line in table.splitlines() if line.startswith("| series |"))
    assert "| grad norm |" in header
