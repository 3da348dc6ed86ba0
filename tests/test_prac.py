"""PrAC (IMP on a pruning-aware critical subset, issue 17) and gradient-flow measurements.

- forgetting events are counted per presentation inside the training step, without a host
  synchronisation, and a (simulated) recorded step counts exactly what the eager one does;
- the subset rules select exact indices on constructed statistics;
- the subset loader draws only the subset (seeded, resumable mid-epoch) and the full-data
  path is unchanged;
- a PrAC run records, per level, the subset its rule gives on the saved statistics, exactly
  the iterations its schedule implies, and statistics that saw only the subset;
- a run killed in the middle of a PrAC level resumes to the uninterrupted result;
- the gradient norm equals a direct float64 autograd computation, and grad_flow can be added
  to a finished run without retraining it;
- full-data IMP counts its iterations exactly and its `ticket` control repeats the level.
"""
from __future__ import annotations

import contextlib
import copy
import csv

import pytest
import torch
import torch.nn.functional as F

import main
from analysis.grad_flow import fixed_batches, gradient_norm
from data.augment import normalize
from data.loader import DeviceLoader, steps_per_epoch
from models import architecture
from models.layers import LayerFactory
from models.masks import prunable_layers, set_masks
from pruners.imp.prac import (
    NEVER_LEARNED,
    NOT_PRESENTED,
    ExampleStats,
    forgetting_scores,
    fraction_keep,
    hard_examples,
    prac_subset,
    predictions,
    subset_phase,
)
from tests.conftest import (
    interrupt_training_at,
    only_run_dir,
    run_in_process,
    write_config,
)
from tests.test_engine import NoHostSync, SimulatedCapture
from utils.phases import PhaseSpec
from utils.schedules import LRSchedule, OptimizerSpec
from utils.step import InStepHooks, TrainStep

PRAC_CONFIG = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 4
imp_rounds: 4
batch_size: 64
optimizer: sgd
lr: 0.05
lr_policy: cosine_lr
momentum: 0.9
imp_rewind_iter: 5
seed: 5
data_subset: prac
"""
N_TRAIN, BATCH, EPOCHS, REWIND = 1257, 64, 4, 5
SPE = steps_per_epoch(N_TRAIN, BATCH)         # 20 (19 full batches and one of 41)


def _csv(path):
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(handle)]


def _load(path):
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------ statistics and rules


def _logits_for(labels, correct, classes=3):
    """Logits whose argmax is the label where `correct`, another class elsewhere."""
    predicted = torch.where(torch.tensor(correct, dtype=torch.bool), labels,
                            (labels + 1) % classes)
    return F.one_hot(predicted, classes).float()


def test_forgetting_events_are_counted_per_presentation():
    # correctness at four presentations of examples 0..4; example 5 is never presented
    sequences = {0: [1, 0, 1, 0], 1: [0, 0, 0, 0], 2: [1, 1, 1, 1], 3: [0, 1, 0, 1],
                 4: [1, 0, 0, 1]}
    orders = [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 4, 0, 3, 2]]
    buffer = torch.zeros(3, dtype=torch.long)           # the loader's batch-index buffer
    stats = ExampleStats(6, buffer)
    labels_of = torch.tensor([0, 1, 2, 0, 1, 2])
    for t, order in enumerate(orders):
        for batch in (order[:3], order[3:]):             # a full batch, then a short one
            buffer[:len(batch)] = torch.tensor(batch)
            labels = labels_of[batch]
            stats.update(_logits_for(labels, [sequences[i][t] for i in batch]), labels)
    assert stats.forgotten.tolist() == [2, 0, 0, 1, 1, 0]
    assert stats.presented.tolist() == [4, 4, 4, 4, 4, 0]
    assert stats.learned.tolist() == [True, False, True, True, True, False]
    assert stats.last_correct.tolist() == [False, False, True, True, True, False]
    scores = forgetting_scores(stats.snapshot())
    assert scores.tolist() == [2, NEVER_LEARNED, 0, 1, 1, NOT_PRESENTED]


def test_subset_rules_select_exact_indices():
    scores = torch.tensor([2, NEVER_LEARNED, 0, 1, 1, NOT_PRESENTED, 0, 3])
    assert hard_examples(scores, "threshold", 0).tolist() == [0, 1, 3, 4, 7]
    assert hard_examples(scores, "threshold", 1).tolist() == [0, 1, 7]
    assert hard_examples(scores, "threshold", 3).tolist() == [1]
    # fraction: the highest scores, ties (3 and 4; then 2 and 6) by the lower index
    assert hard_examples(scores, "fraction", keep=4).tolist() == [0, 1, 3, 7]
    assert hard_examples(scores, "fraction", keep=6).tolist() == [0, 1, 2, 3, 4, 7]
    assert hard_examples(scores, "fraction", keep=0).tolist() == []
    assert hard_examples(scores, "fraction", keep=99).tolist() == list(range(8))
    disagree = torch.tensor([False, False, True, False, False, True, False, False])
    assert prac_subset(scores, disagree, "threshold", 0, None).tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert prac_subset(scores, disagree, "fraction", 0, 3).tolist() == [0, 1, 2, 5, 7]
    assert fraction_keep(1257, 0.2, 1) == 1005            # ⌊1257 · 0.8⌋
    assert fraction_keep(1000, 0.2, 2) == 640
    assert fraction_keep(1257, 0.5, 3) == 157             # ⌊1257 / 8⌋


def test_subset_phase_rescales_epochs_schedule_and_start():
    schedule = LRSchedule("multistep_lr", 0.1, 10, (5, 8), 0.1, 2)
    spec = PhaseSpec("level_01", "level", 10, OptimizerSpec(), schedule, level=1,
                     start_step=25)
    subset_steps = steps_per_epoch(400, 64)               # 6 full batches and one of 16
    assert subset_steps == 7
    scaled = subset_phase(spec, 20, 400, 1257, subset_steps, "scaled")
    assert scaled.epochs == 3                             # ⌊10 · 400 / 1257⌋
    assert scaled.schedule.milestones == (1, 2)           # ⌊5·400/1257⌋, ⌊8·400/1257⌋
    assert scaled.schedule.warmup == 0 and scaled.schedule.epochs == 3
    assert scaled.start_step == 25 * 3 * 7 // 200         # same relative position: 2
    same = subset_phase(spec, 20, 400, 1257, subset_steps, "same")
    assert (same.epochs, same.schedule, same.start_step) == (10, schedule, 25 * 70 // 200)
    tiny = subset_phase(spec, 20, 50, 1257, 1, "scaled")
    assert tiny.epochs == 1 and tiny.start_step == 0      # at least one epoch


# ------------------------------------------------------------------ in the step


def _lenet(seed=0):
    torch.manual_seed(seed)
    return architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)


def _loader(n=40, batch=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return DeviceLoader(images, labels, batch, (0.5,), (0.25,), "cpu", train=True, seed=seed)


def test_statistics_update_has_no_host_synchronisation():
    loader = _loader()
    model = _lenet()
    stats = ExampleStats(loader.num_images, loader.batch_indices())
    optimizer = OptimizerSpec("sgd", 0.9, 5e-4).build(model.parameters(), 0.05)
    step = TrainStep(model, optimizer, "cpu", hooks=InStepHooks(after_forward=(stats.update,)))
    batches = iter(loader)
    step(*next(batches))                      # lazy optimizer state
    x, y = next(batches)
    with NoHostSync():
        step(x, y)
    assert int(stats.presented.sum()) == 32


class _CaptureWithStats(SimulatedCapture):
    """SimulatedCapture whose recording also leaves the statistics as they were (a real
    capture executes nothing)."""

    stats: ExampleStats | None = None

    @contextlib.contextmanager
    def _recording(self, graph):
        saved = [(t, t.clone()) for t in self.stats.tensors().values()]
        try:
            with super()._recording(graph):
                yield
        finally:
            for tensor, value in saved:
                tensor.copy_(value)


def test_recorded_step_counts_what_the_eager_step_counts():
    """Replays read the batch indices from the loader's buffer, overwritten per batch: the
    statistics of a recorded (simulated) step equal the eager ones, short batch included."""
    results = []
    for captured in (False, True):
        loader, model = _loader(n=56), _lenet()   # batches of 16, 16, 16, 8
        stats = ExampleStats(loader.num_images, loader.batch_indices())
        optimizer = OptimizerSpec("sgd", 0.9, 5e-4).build(model.parameters(), 0.05)
        step = TrainStep(model, optimizer, "cpu",
                         hooks=InStepHooks(after_forward=(stats.update,)))
        if captured:
            step = _CaptureWithStats(step, warmup=1)
            step.stats = stats
        for epoch in range(3):
            loader.set_epoch(epoch)
            for x, y in loader:
                step(x, y)
        if captured:
            # one warm-up call, then a recording replayed for every full batch; the three
            # short batches run eagerly
            assert (step.eager_calls, step.replays) == (4, 8)
        results.append((stats.snapshot(), model.state_dict()))
    (eager, w_eager), (replayed, w_replayed) = results
    assert all(torch.equal(eager[k], replayed[k]) for k in eager)
    assert all(torch.equal(w_eager[k], w_replayed[k]) for k in w_eager)
    assert eager["presented"].tolist() == [3] * 56


# ------------------------------------------------------------------ the subset loader


def test_subset_loader_draws_only_the_subset_seeded_and_resumable():
    loader = _loader(n=60, batch=8)
    full_batches = [(x.clone(), y.clone()) for x, y in loader]
    buffer = loader.batch_indices()
    tracked = []
    for x, y in loader:                       # the buffer changes nothing in what is drawn
        tracked.append(buffer[:len(y)].clone())
        assert torch.equal(x, full_batches[len(tracked) - 1][0])
        assert torch.equal(normalize(loader.images[tracked[-1]], loader.mean, loader.std), x)
        assert torch.equal(loader.labels[tracked[-1]], y)
    assert sorted(torch.cat(tracked).tolist()) == list(range(60))
    subset = torch.tensor([3, 5, 8, 13, 21, 34, 55, 1, 2, 40, 41, 42, 43, 44, 45, 46, 47, 48])
    loader.set_subset(subset)
    assert loader.train_examples == 18 and len(loader) == steps_per_epoch(18, 8) == 3
    loader.set_epoch(2, seed=7)
    epoch = [(x.clone(), y.clone(), buffer[:len(y)].clone()) for x, y in loader]
    drawn = torch.cat([i for _, _, i in epoch])
    assert sorted(drawn.tolist()) == sorted(subset.tolist())
    for x, y, index in epoch:
        assert torch.equal(normalize(loader.images[index], loader.mean, loader.std), x)
    loader.set_epoch(2, seed=7, start_batch=1)   # a mid-epoch start: batches 1, 2
    later = [(x.clone(), buffer[:len(y)].clone()) for x, y in loader]
    assert len(later) == 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[2])
               for a, b in zip(later, epoch[1:]))
    loader.set_epoch(3, seed=7)
    assert not torch.equal(torch.cat([buffer[:len(y)].clone() for _, y in loader]), drawn)
    loader.set_subset(None)
    loader.set_epoch(0, seed=1)
    assert all(torch.equal(x, ref[0]) and torch.equal(y, ref[1])
               for (x, y), ref in zip(loader, full_batches))


# ------------------------------------------------------------------ gradient flow


def _direct_grad_norm(model, batches) -> float:
    """‖∇θ mean_b CE_b‖ by one autograd.grad call in float64."""
    probe = copy.deepcopy(model).double().train()
    params = [p for p in probe.parameters() if p.requires_grad]
    loss = sum(F.cross_entropy(probe(x.double()), y) for x, y in batches) / len(batches)
    grads = torch.autograd.grad(loss, params)
    return float(torch.sqrt(sum((g ** 2).sum() for g in grads)))


@pytest.mark.parametrize("arch", ["lenet_300_100", "resnet20"])
def test_gradient_norm_equals_a_direct_autograd_computation(arch):
    torch.manual_seed(0)
    model = architecture(arch)(LayerFactory(), 10, 1, 8)
    layers = prunable_layers(model)
    set_masks(model, {n: (torch.rand_like(l.mask) < 0.3).float() for n, l in layers.items()})
    loader = _loader(n=48, batch=1000)
    loader.train = False
    batches = fixed_batches(loader, 16, 3)
    assert [len(y) for _, y in batches] == [16, 16, 16]
    assert torch.equal(batches[1][1], loader.labels[16:32])
    before = copy.deepcopy(model.state_dict())
    ours = gradient_norm(model, batches)
    # float32 (ours) against float64 (direct): the same terms, rounded differently
    assert ours == pytest.approx(_direct_grad_norm(model, batches), rel=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    dense = architecture(arch)(LayerFactory(), 10, 1, 8)
    dense.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.endswith("mask")}, strict=False)
    assert gradient_norm(dense, batches) != pytest.approx(ours, rel=1e-3)


# ------------------------------------------------------------------ runs


def _level(run_dir, level):
    return _load(run_dir / "checkpoints" / f"level_{level:02d}.pt")


def _replay_presentations(subset, epochs, start_step, seed=5):
    """How often each training example is drawn by a level on `subset` with `epochs`
    epochs starting at `start_step` (the level's data order, replayed)."""
    import args_helper
    import data

    cfg = args_helper.resolve(["--dataset", "digits", "--batch-size", str(BATCH)])
    loader = data.load_splits(cfg).make_loaders(BATCH, torch.device("cpu"), seed).train
    loader.set_subset(subset)
    buffer = loader.batch_indices()
    counts = torch.zeros(N_TRAIN, dtype=torch.int32)
    first_epoch, first_batch = divmod(start_step, len(loader))
    for epoch in range(first_epoch, epochs):
        loader.set_epoch(epoch, seed, start_batch=first_batch if epoch == first_epoch else 0)
        for _, y in loader:
            counts[buffer[:len(y)]] += 1
    return counts


def _disagree_of(run_dir, level):
    """Recomputed from the level files: where the dense level 0 and the pruned projection
    m(L)⊙w(L-1) predict different classes (training examples in order)."""
    import args_helper
    import data
    from models import InputSpec, build_model

    cfg = args_helper.resolve(["--config", str(run_dir / "config.yaml")])
    train_eval = data.load_splits(cfg).make_loaders(BATCH, torch.device("cpu"), 5).train_eval
    probe = build_model(cfg, InputSpec(10, 1, 8))
    masks = _level(run_dir, level)["masks"]
    probe.load_state_dict({**_level(run_dir, level - 1)["trained"],
                           **{f"{n}.mask": m for n, m in masks.items()}})
    pruned = predictions(probe, train_eval)
    probe.load_state_dict(_level(run_dir, 0)["trained"])
    return predictions(probe, train_eval) != pruned


@pytest.fixture(scope="module")
def prac_run(tmp_path_factory):
    code, log_dir = run_in_process(tmp_path_factory.mktemp("prac"), "prac", PRAC_CONFIG
                                   + "grad_flow: true\nimp_controls: [ticket, random_mask]\n")
    assert code == 0
    return only_run_dir(log_dir)


def test_prac_levels_train_on_the_rule_subset_for_the_counted_iterations(prac_run):
    run_dir = prac_run
    rows = _csv(run_dir / "levels.csv")
    metrics = _csv(run_dir / "metrics.csv")
    stats = [_load(run_dir / "checkpoints" / f"example_stats_L{L:02d}.pt") for L in range(4)]
    assert rows[0]["train_examples"] == str(N_TRAIN)
    assert rows[0]["iterations"] == str(EPOCHS * SPE)
    assert stats[0]["presented"].tolist() == [EPOCHS] * N_TRAIN   # every example, every epoch
    total = 0
    for level in range(1, 4):
        record = _load(run_dir / "checkpoints" / f"subset_L{level:02d}.pt")
        subset = record["indices"]
        # the rule applied to the saved statistics of the previous level, united with the
        # examples where level 0 and the pruned projection m(L)⊙w(L-1) disagree
        disagree = _disagree_of(run_dir, level)
        expected = prac_subset(forgetting_scores(stats[level - 1]), disagree, "threshold", 0,
                               None)
        assert torch.equal(subset, expected), level
        assert record["disagree"] == int(disagree.sum())
        # the schedule on n examples: ⌊4·n/N⌋ epochs (≥ 1), the rewind at the same position
        n = len(subset)
        epochs = max(1, EPOCHS * n // N_TRAIN)
        steps = steps_per_epoch(n, BATCH)
        start = REWIND * epochs * steps // (EPOCHS * SPE)
        row = rows[level]
        assert (int(row["train_examples"]), int(row["iterations"])) == (n, epochs * steps - start)
        assert int(row["subset_disagree"]) == int(disagree.sum())
        level_rows = [r for r in metrics if r["phase"] == "level" and r["level"] == str(level)]
        assert len(level_rows) == epochs and level_rows[-1]["step"] == str(epochs * steps)
        # the statistics of the level saw exactly the draws of the subset's data order
        assert torch.equal(stats[level]["presented"],
                           _replay_presentations(subset, epochs, start))
        total += epochs * steps - start
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_iterations"] == EPOCHS * SPE + total
    assert summary["data_subset"] == "prac"


def test_prac_controls_train_on_all_examples_and_record_gradient_norms(prac_run):
    rows = _csv(prac_run / "levels.csv")
    controls = {r["control"]: r for r in _csv(prac_run / "controls.csv")}
    ticket, random_mask = controls["ticket"], controls["random_mask"]
    assert ticket["grad_norm"] == ticket["ticket_grad_norm"] == rows[3]["grad_norm"]
    assert random_mask["grad_norm"] != ticket["grad_norm"]
    assert float(rows[0]["grad_norm"]) > 0 and rows[0]["grad_norm_rewind"] != ""
    metrics = _csv(prac_run / "metrics.csv")
    control_rows = [r for r in metrics if r["phase"] == "control_ticket"]
    assert len(control_rows) == EPOCHS                  # the full schedule, all examples
    assert control_rows[-1]["step"] == str(EPOCHS * SPE)
    # the level's gradient norm is the norm at its start weights
    record = _level(prac_run, 2)
    model = _lenet()
    model.load_state_dict(record["start"])
    import args_helper
    import data

    cfg = args_helper.resolve(["--config", str(prac_run / "config.yaml")])
    loader = data.load_splits(cfg).make_loaders(BATCH, torch.device("cpu"), 5).train_eval
    batches = fixed_batches(loader, BATCH, 10)
    assert float(rows[2]["grad_norm"]) == pytest.approx(_direct_grad_norm(model, batches),
                                                        rel=1e-5)


def test_full_data_levels_count_iterations_and_the_ticket_control_repeats_the_level(tmp_path):
    text = PRAC_CONFIG.replace("data_subset: prac", "imp_controls: [ticket]\n"
                               "imp_control_levels: [2]")
    code, log_dir = run_in_process(tmp_path, "full", text.replace("imp_rounds: 4",
                                                                  "imp_rounds: 3"))
    assert code == 0
    run_dir = only_run_dir(log_dir)
    rows = _csv(run_dir / "levels.csv")
    assert [int(r["iterations"]) for r in rows] == [EPOCHS * SPE] + [EPOCHS * SPE - REWIND] * 2
    assert {r["train_examples"] for r in rows} == {str(N_TRAIN)}
    assert "subset_hard" not in rows[0]
    control = _csv(run_dir / "controls.csv")[0]
    assert control["test_acc"] == rows[2]["test_acc"]     # the same training, repeated
    assert not list((run_dir / "checkpoints").glob("subset_*"))
    # grad_flow added to the finished run: measured from the level files, nothing retrained
    stamp = (run_dir / "checkpoints" / "level_02.pt").stat().st_mtime_ns
    code, _ = run_in_process(tmp_path, "full", text.replace("imp_rounds: 4", "imp_rounds: 3"),
                             ["--grad-flow", "true"])
    assert code == 0 and only_run_dir(log_dir) == run_dir
    assert (run_dir / "checkpoints" / "level_02.pt").stat().st_mtime_ns == stamp
    rows = _csv(run_dir / "levels.csv")
    assert all(float(r["grad_norm"]) > 0 for r in rows) and rows[0]["grad_norm_rewind"] != ""
    control = _csv(run_dir / "controls.csv")[0]
    assert control["grad_norm"] == control["ticket_grad_norm"] == rows[2]["grad_norm"]


def test_killed_in_the_middle_of_a_prac_level_resumes_to_the_uninterrupted_run(
        tmp_path, monkeypatch):
    text = PRAC_CONFIG.replace("imp_rounds: 4", "imp_rounds: 3") + "prac_rule: fraction\n"
    code, log_dir = run_in_process(tmp_path / "reference", "resume", text)
    assert code == 0
    reference = only_run_dir(log_dir)
    subset = _load(reference / "checkpoints" / "subset_L01.pt")["indices"]
    assert max(1, EPOCHS * len(subset) // N_TRAIN) == 3   # level 1 trains 3 epochs
    restore = interrupt_training_at(monkeypatch, 6)       # level 1, its second epoch
    code, log_dir = run_in_process(tmp_path / "work", "resume", text)
    assert code == 130
    run_dir = only_run_dir(log_dir)
    last = _load(run_dir / "checkpoints" / "last.pt")
    assert (last["phase_key"], last["epoch"]) == ("level_01", 1)
    assert last["state"]["extra"]["example_stats"]["key"] == "level_01"
    restore()
    code, _ = run_in_process(tmp_path / "work", "resume", text)
    assert code == 0
    for table in ("metrics.csv", "levels.csv"):
        assert _csv(run_dir / table) == _csv(reference / table), table
    for name in ("subset_L01.pt", "subset_L02.pt", "example_stats_L01.pt",
                 "example_stats_L02.pt", "checkpoints/final.pt"):
        path = name if "/" in name else f"checkpoints/{name}"
        ours, ref = _load(run_dir / path), _load(reference / path)
        tensors = ours.get("model", ours)
        expected = ref.get("model", ref)
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(tensors[key], value), (name, key)
            else:
                assert tensors[key] == value, (name, key)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("extra,needle", [
    ("replicates: 2\n", "data_subset"),
    ("prac_data_rate: 1.5\n", "prac_data_rate"),
    ("prac_rule: halves\n", "prac_rule"),
])
def test_prac_config_errors_exit_2_and_write_nothing(tmp_path, capsys, extra, needle):
    cfg = write_config(tmp_path / "bad.yml", PRAC_CONFIG + extra)
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not (tmp_path / "runs").exists()


def test_prac_needs_a_device_resident_dataset(tmp_path, capsys):
    from tests.conftest import write_tiny_imagenet

    write_tiny_imagenet(tmp_path / "data")
    cfg = write_config(tmp_path / "bad.yml", PRAC_CONFIG.replace("digits", "TinyImageNet")
                       .replace("lenet_300_100", "Conv4")
                       .replace("imp_rewind_iter: 5", "imp_rewind_iter: 0")
                       + f"data: {tmp_path / 'data'}\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_subset" in err[0] and "TinyImageNet" in err[0]
    assert not (tmp_path / "runs").exists()


def test_prac_is_refused_under_torchrun():
    import args_helper
    from utils.distributed import DistEnv, configure
    from utils.errors import ConfigError

    cfg = args_helper.resolve(["--algo", "imp_wr", "--data-subset", "prac"])
    with pytest.raises(ConfigError, match="data-subset: prac .* without torchrun"):
        configure(cfg, DistEnv(0, 2, 0, 2, 0), [])


def test_report_keeps_prac_runs_apart_with_iterations_and_gradient_norms(prac_run, tmp_path):
    from analysis import report

    assert report.main([str(prac_run.parent), "--out", str(tmp_path / "report")]) == 0
    table = _csv(tmp_path / "report" / "report.csv")
    levels = _csv(prac_run / "levels.csv")
    assert [r["algo"] for r in table] == ["imp_wr"] * 4
    # data_subset is a science option: PrAC runs form their own series (here the only one,
    # so the option is listed as shared instead of in the series label)
    assert "data_subset=prac" in (tmp_path / "report" / "report.md").read_text()
    assert [float(r["iterations_mean"]) for r in table] == [float(r["iterations"])
                                                            for r in levels]
    assert [float(r["grad_norm_mean"]) for r in table] == pytest.approx(
        [float(r["grad_norm"]) for r in levels], rel=1e-5)    # the CSV keeps 6 digits


def test_without_refresh_the_subset_of_level_1_is_kept(tmp_path):
    code, log_dir = run_in_process(tmp_path, "keep", PRAC_CONFIG + "prac_refresh: false\n"
                                   "prac_rule: fraction\nprac_data_rate: 0.5\n")
    assert code == 0
    run_dir = only_run_dir(log_dir)
    records = [_load(run_dir / "checkpoints" / f"subset_L{L:02d}.pt") for L in (1, 2, 3)]
    assert all(torch.equal(r["indices"], records[0]["indices"]) for r in records)
    assert [(r["level"], r["chosen_at"]) for r in records] == [(1, 1), (2, 1), (3, 1)]
    assert records[0]["keep"] == fraction_keep(N_TRAIN, 0.5, 1) == 628
    scores = forgetting_scores(_load(run_dir / "checkpoints" / "example_stats_L00.pt"))
    assert torch.equal(records[0]["indices"],
                       prac_subset(scores, _disagree_of(run_dir, 1), "fraction", 0, 628))
    stats = sorted(p.name for p in (run_dir / "checkpoints").glob("example_stats_*"))
    assert stats == ["example_stats_L00.pt"]           # later levels record nothing
