"""Results a researcher reads: the report's series (grouping, labels, side columns, figures),
the TensorBoard layout (phase sub-runs, HParams, config text, histograms, figures), run
identity and provenance, progress lines, dry runs without dataset files, list clearing."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import time

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
from analysis import report
from args_helper import resolve
from conftest import only_run_dir, write_cifar10, write_config
from utils.progress import RunProgress, Ticker, duration

# ----------------------------------------------------------------------------- the report


def _fake_run(root, name: str, config: dict, summary: dict, levels: list[dict] | None = None):
    """A run directory as main.py leaves it: config.yaml, summary.json, levels.csv."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "summary.json").write_text(json.dumps(summary))
    if levels:
        with open(folder / "levels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(levels[0]))
            writer.writeheader()
            writer.writerows(levels)
    return folder


IMP_BASE = {"algo": "imp_wr", "arch": "lenet_300_100", "dataset": "digits", "lr": 0.05,
            "iter_period": 2, "imp_rounds": 3, "name": "grid"}


def _imp_run(root, rewind, seed: int, accs: list[float], controls: list[dict], **extra):
    config = {**IMP_BASE, "imp_rewind_iter": rewind, "seed": seed, **extra}
    levels = [{"level": i, "density_pct": d, "sparsity_pct": 100 - d, "test_acc": a,
               "val_acc": a + 1, "seconds": 2.0 + i, "matching": "dense" if i == 0 else
               ("yes" if a >= accs[0] - 0.5 else "no")}
              for i, (d, a) in enumerate(zip((100.0, 80.0, 64.0), accs))]
    summary = {"status": "done", "algo": "imp_wr", "arch": "lenet_300_100", "dataset": "digits",
               "seed": seed, "density_pct": 64.0, "test_acc": accs[-1], "val_acc": accs[-1] + 1,
               "wall_seconds": 30.0 + seed, "controls": controls}
    return _fake_run(root, f"grid-imp_wr-s{seed}-r{rewind}", config, summary, levels)


def _synthetic_runs(root):
    """IMP-WR at rewind 0 (seeds 1, 2; seed 2 also measured barriers: same series) and at
    rewind 1ep (seeds 1, 2), two Gem-Miner seeds, and a failed run (left out)."""
    _imp_run(root, 0, 1, [90.0, 91.0, 89.0], [{"level": 2, "control": "reinit",
                                               "test_acc": 80.0}])
    _imp_run(root, 0, 2, [92.0, 91.0, 87.0], [{"level": 2, "control": "reinit",
                                               "test_acc": 84.0}], lmc_successive=True)
    _imp_run(root, "1ep", 1, [90.0, 90.5, 90.0], [])
    _imp_run(root, "1ep", 2, [92.0, 92.5, 91.0], [])
    gem = {"algo": "hc_iter", "arch": "lenet_300_100", "dataset": "digits", "lr": 0.1,
           "target_sparsity": 5.0, "name": "gm"}
    for seed, (tuned, untrained) in ((1, (95.0, 88.0)), (2, (94.0, 90.0))):
        _fake_run(root, f"gm-hc_iter-s{seed}", {**gem, "seed": seed},
                  {"status": "done", "algo": "hc_iter", "seed": seed, "density_pct": 5.0,
                   "test_acc": tuned, "val_acc": tuned, "wall_seconds": 10.0,
                   "ticket_test_acc": untrained, "sanity_reinit_test_acc": 93.0 + seed,
                   "sanity_shuffle_test_acc": 90.0})
    _fake_run(root, "broken", {**gem, "seed": 9}, {"status": "failed", "algo": "hc_iter"})


def test_report_groups_by_science_options_and_labels_what_differs(tmp_path, capsys):
    _synthetic_runs(tmp_path / "runs")
    out = tmp_path / "report"
    assert report.main([str(tmp_path / "runs"), "--out", str(out),
                        "--formats", "png,pdf,svg"]) == 0
    assert "6 runs in 3 series" in capsys.readouterr().out
    with open(out / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["series"], r["level"]) for r in rows] == [
        ("hc_iter", ""),
        ("imp_wr · imp_rewind_iter=0", "0"), ("imp_wr · imp_rewind_iter=0", "1"),
        ("imp_wr · imp_rewind_iter=0", "2"),
        ("imp_wr · imp_rewind_iter=1ep", "0"), ("imp_wr · imp_rewind_iter=1ep", "1"),
        ("imp_wr · imp_rewind_iter=1ep", "2")]
    gem, rewind0 = rows[0], rows[1:4]
    assert gem["runs"] == "2" and gem["seeds"] == "1 2" and gem["imp_rewind_iter"] == "unset"
    assert float(gem["test_acc_mean"]) == 94.5
    assert float(gem["test_acc_std"]) == pytest.approx(math.sqrt(0.5), abs=1e-5)
    assert float(gem["untrained_ticket_test_acc_mean"]) == 89.0
    assert float(gem["sanity_reinit_test_acc_mean"]) == 94.5
    assert float(gem["sanity_shuffle_test_acc_std"]) == 0.0
    assert gem["control_reinit_test_acc_mean"] == ""
    # the rewind-0 series pools both seeds although seed 2 also measured barriers
    assert [r["runs"] for r in rewind0] == ["2", "2", "2"]
    assert rewind0[0]["imp_rewind_iter"] == "0"
    assert [float(r["test_acc_mean"]) for r in rewind0] == [91.0, 91.0, 88.0]
    assert float(rewind0[0]["test_acc_std"]) == pytest.approx(math.sqrt(2), abs=1e-5)  # 6 digits in the CSV
    assert [r["matching"] for r in rewind0] == ["dense", "1/2", "0/2"]
    assert rewind0[2]["control_reinit_test_acc_mean"] == "82"
    assert rewind0[1]["control_reinit_test_acc_mean"] == ""
    assert [float(r["level_train_s_mean"]) for r in rewind0] == [2.0, 3.0, 4.0]
    assert {float(r["run_wall_s_mean"]) for r in rewind0} == {31.5}
    md = (out / "report.md").read_text()
    assert "| imp_wr · imp_rewind_iter=0 | 2 | 64 | 2 | 88.00 ± 1.41 |" in md
    assert "untrained ticket %" in md and "control reinit %" in md
    assert "Shared by every series: arch=lenet_300_100, dataset=digits\n" in md
    assert "broken" not in md
    names = {p.name for p in out.iterdir()}
    for stem in ("accuracy_vs_density", "s02-imp_wr-levels", "s03-imp_wr-levels"):
        for ext in ("png", "pdf", "svg"):
            assert f"{stem}.{ext}" in names, (stem, ext)
    assert (out / "accuracy_vs_density.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (out / "accuracy_vs_density.svg").read_bytes()[:400]
    assert not any(".tmp." in n for n in names)


def test_report_errors_are_one_line_exit_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert report.main([str(tmp_path / "empty"), "--formats", "png,jpg"]) == 2
    assert "unknown format jpg" in capsys.readouterr().err


# ----------------------------------------------------------------------------- TensorBoard

IMP_TB = """
algo: imp_wr
arch: lenet_300_100
dataset: digits
iter_period: 2
imp_rounds: 2
imp_rewind_iter: 0
imp_controls: [reinit]
batch_size: 128
lr: 0.05
seed: 1
"""


def _events(path, **guidance) -> EventAccumulator:
    events = EventAccumulator(str(path), size_guidance={"images": 0, "histograms": 0,
                                                          "tensors": 0, **guidance})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def imp_tb_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tb")
    cfg = write_config(folder / "imp.yml", IMP_TB)
    assert main.main(["--config", str(cfg), "--log-dir", str(folder / "runs"), "--quiet"]) == 0
    return only_run_dir(folder / "runs")


def test_each_level_and_control_is_a_sub_run_from_its_first_epoch(imp_tb_run):
    phases = sorted(p.name for p in (imp_tb_run / "phases").iterdir())
    assert phases == ["control_reinit_L01", "level_00", "level_01"]
    metrics = list(csv.DictReader(open(imp_tb_run / "metrics.csv")))
    for phase in phases:
        events = _events(imp_tb_run / "phases" / phase)
        assert [e.step for e in events.Scalars("test/acc")] == [1, 2]
        key_rows = [r for r in metrics if (r["phase"] == "level" and phase ==
                                           f"level_{int(r['level']):02d}")
                    or (r["phase"] != "level" and phase.startswith("control"))]
        assert [e.value for e in events.Scalars("test/acc")] == pytest.approx(
            [float(r["test_acc"]) for r in key_rows], abs=1e-3)
        tags = events.Tags()
        for layer in ("net.1", "net.3", "net.5"):
            assert f"layer_density/{layer}" in tags["scalars"]
            assert f"weights/{layer}" in tags["histograms"] and f"masks/{layer}" in \
                tags["histograms"]
            assert [e.step for e in events.Histograms(f"weights/{layer}")] == [2]   # its end
    level1 = _events(imp_tb_run / "phases" / "level_01")
    assert level1.Scalars("density_pct")[-1].value == pytest.approx(80.0)
    # the surviving weights only: as many as level 1's mask keeps in net.1
    masks = torch.load(imp_tb_run / "checkpoints" / "level_01.pt", weights_only=True)["masks"]
    kept = int(masks["net.1"].sum())
    assert level1.Histograms("weights/net.1")[0].histogram_value.num == kept < 19200
    assert level1.Scalars("layer_density/net.1")[-1].value == pytest.approx(
        100 * kept / 19200, abs=1e-4)


def test_run_events_hold_config_hparams_figures_and_no_step_hacks(imp_tb_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = _events(imp_tb_run)
    tags = events.Tags()
    assert not any(t.startswith(("train/", "test/", "imp_vs_density")) for t in tags["scalars"])
    assert [e.step for e in events.Scalars("imp/test_acc")] == [0, 1]        # step = level
    assert {"figures/levels", "figures/layer_density"} <= set(tags["images"])
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "algo: imp_wr" in text and "imp_controls:" in text
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    hparams = set(start.hparams)                # this run: its algorithm's options
    assert {"algo", "arch", "lr", "seed", "imp_rewind_iter", "iter_period"} <= hparams
    assert "prune_rate" not in hparams           # unset (null): no value
    assert start.hparams["imp_rewind_iter"].string_value == "0"
    assert start.hparams["lr"].number_value == 0.05
    assert start.hparams["bias"].string_value == "false"
    assert not hparams & {"gpu", "workers", "log_dir", "data", "device", "score_init",
                          "matching_tolerance"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    declared = {h.name for h in experiment.hparam_infos}   # the same for every run
    assert {"score_init", "prune_rate", "target_sparsity"} <= declared
    assert not declared & {"gpu", "workers", "log_dir", "data", "device"}
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"hparam/test_acc", "hparam/density_pct", "hparam/dense_test_acc",
            "hparam/control_reinit_test_acc", "hparam/untrained_ticket_test_acc",
            "hparam/sanity_shuffle_test_acc", "hparam/control_shuffle_weights_test_acc"} \
        <= metrics
    summary = json.loads((imp_tb_run / "summary.json").read_text())
    assert events.Scalars("hparam/control_reinit_test_acc")[0].value == pytest.approx(
        summary["controls"][0]["test_acc"], abs=1e-3)


def test_pruning_at_init_logs_per_layer_density_and_its_figures(tmp_path):
    cfg = write_config(tmp_path / "snip.yml", "algo: snip\narch: lenet_300_100\n"
                       "dataset: digits\ntarget_sparsity: 5\nepochs: 1\nbatch_size: 128\n"
                       "lr: 0.05\nat_init_controls: [reinit]\n")
    assert main.main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"),
                      "--quiet"]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    layers = list(csv.DictReader(open(run_dir / "layer_density.csv")))
    root = _events(run_dir)
    for row in layers:
        assert root.Scalars(f"layer_density/{row['layer']}")[0].value == pytest.approx(
            float(row["density_pct"]), abs=1e-4)
    assert {"figures/accuracy_vs_density", "figures/layer_density"} <= set(
        root.Tags()["images"])
    train = _events(run_dir / "phases" / "train")
    assert train.Scalars("layer_density/net.1")[0].value == pytest.approx(
        float(layers[0]["density_pct"]), abs=1e-4)
    content = root.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2
    metrics = {m.name.tag for m in plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment.metric_infos}
    assert {"hparam/untrained_ticket_test_acc", "hparam/control_reinit_test_acc"} <= metrics


def test_an_interrupted_epoch_is_purged_from_its_phase_events(tmp_path, digits_config,
                                                              monkeypatch):
    from utils.context import RunContext

    real = RunContext.save_last
    calls = {"n": 0}

    def dying(self, *args, **kwargs):       # epoch 2 is logged, then the process "dies"
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    args = ["--config", str(digits_config), "--log-dir", str(tmp_path / "runs"), "--quiet"]
    monkeypatch.setattr(RunContext, "save_last", dying)
    assert main.main(args) == 130
    monkeypatch.setattr(RunContext, "save_last", real)
    time.sleep(1.1)   # event files are ordered by their name: the second's timestamp first
    assert main.main(args) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    events = _events(run_dir / "phases" / "train")
    assert [e.step for e in events.Scalars("test/acc")] == [1, 2, 3]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [e.value for e in events.Scalars("test/acc")] == pytest.approx(
        [float(r["test_acc"]) for r in rows], abs=1e-3)


# ----------------------------------------------------------------------------- run identity


def test_run_directory_name_and_provenance(imp_tb_run):
    cfg = resolve(["--config", str(imp_tb_run.parent.parent / "imp.yml")])
    assert imp_tb_run.name == f"imp-imp_wr-s1-{cfg.run_hash()}"
    prov = json.loads((imp_tb_run / "summary.json").read_text())["provenance"]
    assert prov["torch"] == torch.__version__ and prov["device"] == "cpu"
    assert prov["torch_threads"] == torch.get_num_threads() and prov["cpu_count"] >= 1
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    for key in ("host", "python", "cuda", "device_name", "torch_interop_threads",
                "omp_num_threads", "git_dirty"):
        assert key in prov, key
    log = (imp_tb_run / "log.txt").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line) for line in log)
    assert re.search(r"  code \S+ \| host \S+ \| torch ", log[2])
    assert any(line.endswith("| run 6/6 epochs (100 %), ETA 0s") for line in log)


def test_a_run_directory_of_the_old_name_is_still_found(tmp_path, digits_config, capsys):
    args = ["--config", str(digits_config), "--log-dir", str(tmp_path / "runs"), "--quiet",
            "--epochs", "1"]
    assert main.main(args) == 0
    new = only_run_dir(tmp_path / "runs")
    cfg = resolve(args)
    legacy = tmp_path / "runs" / f"digits-{cfg.run_hash()}"
    shutil.move(str(new), str(legacy))
    capsys.readouterr()
    assert main.main(args) == 0
    assert f"already finished: {legacy}" in capsys.readouterr().out
    assert main.main(args + ["--dry-run"]) == 0
    assert f"run directory: {legacy} (finished; would be skipped)" in capsys.readouterr().out
    assert main.main(args + ["--force"]) == 0              # a fresh run gets the new name
    assert new.is_dir() and (new / "summary.json").is_file()


# ----------------------------------------------------------------------------- progress


def test_run_progress_and_ticker_lines():
    now = {"t": 100.0}
    progress = RunProgress(total=10, done=4, clock=lambda: now["t"])
    assert progress.text() == "run 4/10 epochs (40 %)"
    now["t"] += 6.0
    progress.epoch_done()
    progress.epoch_done()                      # 2 epochs in 6 s: 3 s each, 4 epochs left
    assert progress.text() == "run 6/10 epochs (60 %), ETA 12s"
    assert RunProgress(None, 3).text() == "run epoch 3"
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]

    class Lines:
        def __init__(self):
            self.lines = []

        def info(self, line):
            self.lines.append(line)

    quiet, slow = Lines(), Lines()
    ticker = Ticker(quiet, "fast", 3, "points", every=20, clock=lambda: now["t"])
    for _ in range(3):
        ticker.tick()
    ticker.done()
    assert quiet.lines == []                   # short steps stay silent
    start = now["t"]
    ticker = Ticker(slow, "level 2 analysis: interpolation", 11, "points", every=20,
                    clock=lambda: now["t"])
    for _ in range(11):
        now["t"] += 5.0
        ticker.tick()
    ticker.done()
    assert slow.lines == ["level 2 analysis: interpolation: 4/11 points, 20s, ETA 35s",
                          "level 2 analysis: interpolation: 8/11 points, 40s, ETA 15s",
                          "level 2 analysis: interpolation: done in 55s"]
    assert now["t"] - start == 55.0


# ----------------------------------------------------------------------------- dry run, lists


def test_dry_run_plans_without_the_dataset_files(tmp_path, capsys):
    args = ["--config", "configs/cifar10/resnet20/imp_wr.yml", "--data",
            str(tmp_path / "nodata"), "--log-dir", str(tmp_path / "runs"), "--dry-run"]
    assert main.main(args) == 0                  # download: true, but a plan downloads nothing
    out = capsys.readouterr().out
    assert (f"train 45000 / val 5000 / test 10000 images (published sizes; files not found "
            f"under {tmp_path / 'nodata'})") in out
    assert "level 19: density   1.441 %" in out
    assert not (tmp_path / "nodata").exists() and not (tmp_path / "runs").exists()
    assert main.main(args + ["--dataset", "TinyImageNet", "--arch", "cResNet18"]) == 0
    assert "train 100000 / val 5000 / test 5000 images (published sizes" in \
        capsys.readouterr().out
    write_cifar10(tmp_path / "data")             # with the files there, their real sizes
    assert main.main(args[:2] + ["--data", str(tmp_path / "data"), "--val-size", "10",
                                 "--imp-rewind-iter", "0", "--dry-run", "--log-dir",
                                 str(tmp_path / "runs")]) == 0
    assert "train 50 / val 10 / test 20 images" in capsys.readouterr().out


def test_published_holdouts_match_the_loaders():
    from data import cifar, imagenet, mnist
    from data.known_sizes import DEFAULT_HOLDOUT

    assert DEFAULT_HOLDOUT == {"MNIST": mnist.DEFAULT_VAL, "CIFAR10": cifar.DEFAULT_VAL,
                               "CIFAR100": cifar.DEFAULT_VAL, "ImageNet": imagenet.DEFAULT_VAL,
                               "FfcvImageNet": imagenet.DEFAULT_VAL}


def test_list_options_can_be_cleared_from_the_command_line(tmp_path):
    cfg = write_config(tmp_path / "c.yml", IMP_TB)
    assert resolve(["--config", str(cfg)]).imp_controls == ["reinit"]
    for word in ("none", "null", "NONE", ""):
        assert resolve(["--config", str(cfg), "--imp-controls", word]).imp_controls is None
    assert resolve(["--config", str(cfg), "--milestones", "none"]).milestones is None
    with pytest.raises(Exception, match="must be one of"):
        resolve(["--config", str(cfg), "--imp-controls", "none", "reinit"])
