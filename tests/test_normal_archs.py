"""Upstream's plain-layer reference networks (*Normal): layers, init, and where they may run."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision

import main
from args_helper import resolve
from conftest import only_run_dir, write_config
from models import InputSpec, build_model
from models.layers import MaskedConv2d, MaskedLinear
from utils.errors import ConfigError

# the options the plain networks ignore, set to values that would show if they were read
IGNORED = ["--init", "signed_constant", "--bn-type", "NonAffineBatchNorm", "--scale-fan",
           "true"]


def _build(arch, spec, *extra):
    cfg = resolve(["--weight-training", "true", "--arch", arch, *IGNORED, *extra])
    torch.manual_seed(0)
    return cfg, build_model(cfg, spec)


def _masked(model):
    return [m for m in model.modules() if isinstance(m, (MaskedConv2d, MaskedLinear))]


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,spec,prunable,batchnorm,conv_bias", [
    ("Conv4Normal", InputSpec(10, 3, 32), 2_425_024, False, False),
    ("resnet20Normal", InputSpec(10, 3, 32), 268_336, True, False),
    ("resnet32Normal", InputSpec(10, 3, 32), 461_872, True, False),
    ("TinyResNet18Normal", InputSpec(200, 3, 64), 11_269_312, True, False),
    ("vgg16_normal", InputSpec(10, 3, 32), 14_710_464 + 5_120, False, True),
])
def test_plain_layers_as_upstream_wrote_them(arch, spec, prunable, batchnorm, conv_bias):
    _, model = _build(arch, spec)
    layers = _masked(model)
    assert sum(m.weight.numel() for m in layers) == prunable
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bool(norms) == batchnorm
    assert all(n.weight is not None and n.bias is not None for n in norms)   # always affine
    convs = [m for m in layers if isinstance(m, MaskedConv2d)]
    assert all((c.bias is not None) == conv_bias for c in convs)
    classifier = layers[-1]
    # upstream's classifier: nn.Linear with bias, except Conv4Normal's bias-free 1×1 convs
    assert (classifier.bias is not None) == (arch != "Conv4Normal")
    assert all(float(m.mask.min()) == 1.0 for m in layers)            # every weight trains
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, spec.image_size, spec.image_size))
    assert out.shape == (2, spec.num_classes)


@pytest.mark.parametrize("arch,reference", [
    ("TinyResNet18Normal", lambda: torchvision.models.resnet18(num_classes=200)),
    ("vgg16_normal", lambda: nn.Sequential(      # VGG-16 features without BatchNorm
        torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]),
        nn.Linear(512, 10))),
])
def test_plain_networks_have_the_torchvision_parameter_count(arch, reference):
    spec = InputSpec(200, 3, 64) if arch == "TinyResNet18Normal" else InputSpec(10, 3, 32)
    _, model = _build(arch, spec)
    assert _params(model) == _params(reference())


def test_plain_networks_ignore_the_config_init():
    # resnet20Normal / resnet32Normal: kaiming-normal (fan_in, gain √2) on every conv and
    # linear weight, whatever `init` says; Conv4Normal: PyTorch's default init
    _, resnet = _build("resnet20Normal", InputSpec(10, 3, 32))
    weight = resnet.layer3[0].conv2.weight                      # 64·64·9 weights
    assert weight.unique().numel() > 30_000                     # not signed constant
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.03)
    fc = resnet.fc.weight
    assert fc.std().item() == pytest.approx(math.sqrt(2.0 / 64), rel=0.15)   # 640 weights
    _, conv4 = _build("Conv4Normal", InputSpec(10, 3, 32))
    conv = _masked(conv4)[1]                                    # 64 → 64, 3×3
    bound = 1 / math.sqrt(64 * 9)                               # kaiming_uniform(a=√5)
    assert conv.weight.abs().max().item() <= bound + 1e-7
    assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_plain_networks_refuse_a_mask_search_and_note_ignored_keys():
    with pytest.raises(ConfigError, match="Conv4Normal is upstream's plain-layer reference "
                                          "network .* use arch Conv4 for a mask search"):
        resolve(["--algo", "hc_iter", "--arch", "Conv4Normal"])
    cfg = resolve(["--weight-training", "true", "--arch", "Conv4Normal", *IGNORED])
    assert ("note: arch Conv4Normal keeps upstream's own layers and init (no BatchNorm, "
            "bias-free layers, standard init); no effect: init, scale_fan, bn_type") \
        in cfg.warnings


def test_plain_network_training_run_with_fixed_epoch_checkpoints(tmp_path):
    config = write_config(tmp_path / "normal.yml", """
weight_training: true
arch: resnet20Normal
dataset: synthetic
epochs: 2
batch_size: 16
lr: 0.05
ckpt_at_fixed_epochs: [0, 5]
""")
    rc = main.main(["--config", str(config), "--synthetic-size", "40", "--log-dir",
                    str(tmp_path / "runs"), "--quiet"])
    assert rc == 0
    checkpoints = only_run_dir(tmp_path / "runs") / "checkpoints"
    # upstream's 0-based epoch 0 = after the first epoch; epoch 5 is never reached
    assert sorted(p.name for p in checkpoints.glob("after_epoch_*")) == ["after_epoch_001.pt"]
    load = lambda name: torch.load(checkpoints / name, weights_only=True)["model"]  # noqa
    first, init, final = load("after_epoch_001.pt"), load("init.pt"), load("final.pt")
    assert first["fc.bias"].shape == (10,)
    assert not torch.equal(first["fc.weight"], init["fc.weight"])
    assert not torch.equal(first["fc.weight"], final["fc.weight"])
