"""Every upstream config family, through its compatibility fixtures in tests/compat/ (written
in upstream's style for this project): each dry-runs on tiny data files in the real formats
(CIFAR-10/100 pickles, TinyImageNet and ImageNet folders, Caltech-101 JPEGs) and prints the
plan upstream's config asks for; nothing is written."""
from __future__ import annotations

import pytest
import torch

import main
from args_helper import resolve
from conftest import (REPO, write_caltech101, write_cifar10, write_cifar100, write_imagenet,
                      write_tiny_imagenet)
from models import InputSpec, build_model
from utils.checkpoint import save_checkpoint

COMPAT = REPO / "tests" / "compat"
FAMILIES = {"hypercube", "ep", "sr", "imp", "param_tuning", "sanity", "training", "warm_gm",
            "final_hc", "ablation"}
WRITERS = {"CIFAR10": write_cifar10, "CIFAR100": write_cifar100,
           "TinyImageNet": write_tiny_imagenet, "ImageNet": write_imagenet,
           "Caltech101": write_caltech101}
# a validation hold-out that fits the tiny training sets (CIFAR: 60 images, ImageNet: 12)
VAL_SIZE = {"CIFAR10": ["--val-size", "10"], "CIFAR100": ["--val-size", "10"],
            "ImageNet": ["--val-size", "2"]}

# fixture → (family, dataset, lines of the plan)
FIXTURES = {
    "resnet20_hc_iter_1_44": ("hypercube", "CIFAR10", [
        "N = 29 steps, p = 1 − (1.44/100)^(1/29) = 0.1360"]),
    "hypercube_conv4_periodic_rounding": ("hypercube", "CIFAR10", [
        "periodic rounding: after 0-based epochs 50, 60, ... (every 10 from hc_warmup 50) the "
        "scores become their rounded values (round naive) and the search goes on from them",
        "ckpt_at_fixed_epochs [49, 99] (0-based): checkpoints/after_epoch_050.pt, "
        "checkpoints/after_epoch_100.pt",
        "key 'width' has no effect (legacy upstream key)"]),
    "hypercube_resnet20_bottom_k_rewind": ("hypercube", "CIFAR10", [
        "forward mask (bottom_k_on_forward): the flagged weights with the highest scores",
        "evaluated each epoch: the network of that forward mask on val and test",
        "step  4 after epoch   41:       13,417 weights, density 5.00 % / sparsity 95.00 %",
        "score rewinding: the scores at the start of 0-based epoch 3 are restored after every "
        "later pruning step",
        "ticket: mask = the final flags (bottom_k_on_forward)"]),
    "hypercube_conv4_mode_connect": ("hypercube", "CIFAR10", [
        "algorithm: mode_connect; arch Conv4",
        "mode_connect: 5 networks on the straight line between the effective weights of"]),
    "resnet20_ep": ("ep", "CIFAR10", [
        "13,428 of 268,336 weights, density 5.00 % / sparsity 95.00 %"]),
    "ep_vgg16_cifar100": ("ep", "CIFAR100", [
        "key 'override_prune_rate' without prune_rate uses upstream's default prune_rate 0.5 "
        "(half of each layer kept)",
        "7,380,832 of 14,761,664 weights, density 50.00 % / sparsity 50.00 %"]),
    "sr_tiny_resnet18_random_subnet": ("sr", "TinyImageNet", [
        "key 'random_subnet' without prune_rate uses upstream's default prune_rate 0.5",
        "ticket: random mask, each weight kept with probability 0.5"]),
    "resnet20_imp": ("imp", "CIFAR10", ["IMP-WR (weight rewinding): 20 levels × 160 epochs",
                                        "rewind point: iteration 10 of level 0"]),
    "imp_resnet32_cifar100": ("imp", "CIFAR100", [
        "IMP-WR (weight rewinding): 10 levels × 30 epochs",
        "dataset CIFAR100: train 30 / val 10 / test 20 images, 100 classes"]),
    "param_tuning_caltech101_resnet50": ("param_tuning", "Caltech101", [
        "algorithm: hc_iter; arch ResNet50; dataset Caltech101: train 9 / val 3 / test 3 "
        "images, 3 classes",
        "key 'transfer_learning': legacy upstream key, no effect here"]),
    "sanity_resnet20_only_sanity": ("sanity", "CIFAR10", [
        "only_sanity: no search; for each source run, its saved ticket is fine-tuned as "
        "sanity_reinit",
        "  source 1: {source} (ticket density 100.00 % / sparsity 0.00 %)"]),
    "training_conv4_normal": ("training", "CIFAR10", [
        "algorithm: training; arch Conv4Normal",
        "ckpt_at_fixed_epochs [0, 9, 49] (0-based): checkpoints/after_epoch_001.pt, "
        "checkpoints/after_epoch_010.pt, checkpoints/after_epoch_050.pt",
        "note: arch Conv4Normal keeps upstream's own layers and init (no BatchNorm, bias-free "
        "layers, standard init); no effect: init"]),
    "training_tiny_resnet18_normal": ("training", "TinyImageNet", [
        "algorithm: training; arch TinyResNet18Normal; dataset TinyImageNet: train 12 / val 6 "
        "/ test 6 images, 3 classes"]),
    "training_resnet32_normal_cifar100": ("training", "CIFAR100", [
        "algorithm: training; arch resnet32Normal; dataset CIFAR100",
        "no effect: bn_type"]),
    "warm_gm_resnet20_drop_half": ("warm_gm", "CIFAR10", [
        "after epoch 1: the flags of the lower-scoring half of the flagged weights are cleared "
        "(drop_bottom_half_weights, warm start from `pretrained`)"]),
    "final_hc_resnet18_imagenet": ("final_hc", "ImageNet", [
        "algorithm: hc_iter; arch ResNet18; dataset ImageNet: train 10 / val 2 / test 6 "
        "images, 3 classes",
        "N = 10 steps, p = 1 − (5/100)^(1/10) = 0.2589"]),
    "ablation_resnet20_global_ep_iter": ("ablation", "CIFAR10", [
        "epochs   32-50  :      109,909 weights, density 40.96 % / sparsity 59.04 %"]),
}


def test_the_fixtures_cover_every_upstream_config_family():
    assert {p.stem for p in COMPAT.glob("*.yml")} == set(FIXTURES)
    assert {family for family, _, _ in FIXTURES.values()} == FAMILIES


def _saved_network(path, arch, spec, algo="training"):
    """A checkpoint file in this project's format holding a freshly built network."""
    cfg = resolve(["--algo", algo, "--arch", arch])
    model = build_model(cfg, spec, with_scores=algo != "training")
    save_checkpoint({"model": model.state_dict()}, str(path))
    return path


def _placeholders(name, tmp_path) -> list[str]:
    """Command-line replacements for the fixture's paths to earlier runs."""
    cifar = InputSpec(10, 3, 32)
    if name == "hypercube_conv4_mode_connect":
        a = _saved_network(tmp_path / "a.pt", "Conv4", cifar, "hc")
        b = _saved_network(tmp_path / "b.pt", "Conv4", cifar, "hc")
        return ["--pretrained", str(a), "--pretrained2", str(b)]
    if name == "sanity_resnet20_only_sanity":
        source = tmp_path / "searches" / "resnet20_hc-0"
        (source / "checkpoints").mkdir(parents=True)
        for file in ("before_finetune.pt", "init.pt"):
            _saved_network(source / "checkpoints" / file, "resnet20", cifar, "hc_iter")
        return ["--sanity-folder", str(tmp_path / "searches")]
    if name == "warm_gm_resnet20_drop_half":
        return ["--pretrained", str(_saved_network(tmp_path / "dense.pt", "resnet20", cifar))]
    if FIXTURES[name][0] == "imp":      # one step per epoch on the tiny files: the rewind
        return ["--imp-rewind-iter", "10"]   # point must lie inside level 0
    return []


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_dry_runs_on_real_format_files(tmp_path, capsys, name):
    family, dataset, lines = FIXTURES[name]
    data = tmp_path / "data"
    WRITERS[dataset](data)
    torch.manual_seed(0)
    extra = _placeholders(name, tmp_path)
    log_dir = tmp_path / "runs"
    rc = main.main(["--config", str(COMPAT / f"{name}.yml"), "--data", str(data),
                    "--download", "false", "--log-dir", str(log_dir), "--dry-run",
                    *VAL_SIZE.get(dataset, []), *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"dataset {dataset}:" in out.out
    source = tmp_path / "searches" / "resnet20_hc-0"
    for line in lines:
        assert line.format(source=source) in out.out, line
    assert "error" not in out.err
    assert not log_dir.exists()
