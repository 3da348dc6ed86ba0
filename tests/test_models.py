"""Masked layers, BatchNorm flavours, initialisations and architectures."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision

from args_helper import resolve
from models import InputSpec, architecture, build_model
from models.init import init_scores_, init_weight_
from models.layers import (AffineBatchNorm, LayerFactory, MaskedConv2d, MaskedLinear,
                           NonAffineBatchNorm)
from models.masks import count_weights, get_masks, layer_density_report, set_masks


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny inputs gain nothing from intra-op threads, and on a busy machine the threads'
    synchronisation made a ResNet-101 forward pass take seconds instead of 0.1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prunable(model):
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (MaskedConv2d, MaskedLinear)))


@pytest.mark.parametrize("arch,classes,channels,size,expected", [
    ("resnet20", 10, 3, 32, 268_336),          # upstream's layer set
    ("resnet32", 10, 3, 32, 461_872),
    ("cResNet18", 10, 3, 32, 11_164_352),
    ("ResNet18", 10, 3, 32, 11_172_032),
    ("ResNet50", 10, 3, 32, 23_475_392),
    ("Conv4", 10, 3, 32, 2_425_024),
    ("lenet_300_100", 10, 1, 28, 266_200),
    ("resnet20", 100, 3, 32, 268_336 - 640 + 6_400),   # classifier follows the class count
    ("resnet20", 10, 1, 8, 268_336 - 432 + 144),       # stem follows the channel count
    ("lenet_300_100", 10, 1, 8, 64 * 300 + 300 * 100 + 100 * 10),
    # issue 8 architectures; counts worked out by hand from the layer lists
    ("resnet32_double", 10, 3, 32, 1_845_344),        # widths 32/64/128, option-A shortcuts
    ("WideResNet28", 10, 3, 32, 1_463_984),           # WRN-28-2, 1×1 projection shortcuts
    ("vgg16", 10, 3, 32, 14_710_464 + 512 * 10),      # vgg16_bn features + 512×classes
    ("tinyvgg16", 200, 3, 64, 14_710_464 + 512 * 200),
    ("MobileNetV2", 10, 3, 32, 2_261_824),
    ("tinyMobileNetV2", 200, 3, 64, 2_261_824 - 1280 * 10 + 1280 * 200),
    ("TinyResNet18", 200, 3, 64, 11_269_312),
    ("ResNet101", 10, 3, 32, 42_415_296),
    ("WideResNet28", 100, 1, 16, 1_463_984 - 432 + 144 - 1280 + 12_800),
])
def test_exact_prunable_weight_counts(arch, classes, channels, size, expected):
    model = architecture(arch)(LayerFactory(), classes, channels, size)
    assert _prunable(model) == expected
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)


def _torchvision_count(module):
    return sum(m.weight.numel() for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("ours,theirs", [("ResNet18", "resnet18"), ("ResNet50", "resnet50"),
                                         ("ResNet101", "resnet101")])
def test_imagenet_resnets_match_torchvision_counts(ours, theirs):
    model = architecture(ours)(LayerFactory(), 1000, 3, 224)
    reference = getattr(torchvision.models, theirs)(weights=None)
    ref_count = sum(m.weight.numel() for m in reference.modules()
                    if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert _prunable(model) == ref_count
    assert ref_count == {"resnet18": 11_678_912, "resnet50": 25_502_912,
                         "resnet101": 44_442_816}[theirs]


def test_vgg16_features_match_torchvision_vgg16_bn():
    model = architecture("vgg16")(LayerFactory(), 10, 3, 32)
    reference = torchvision.models.vgg16_bn(weights=None).features
    ours = [tuple(m.weight.shape) for m in model.features.modules()
            if isinstance(m, MaskedConv2d)]
    theirs = [tuple(m.weight.shape) for m in reference.modules() if isinstance(m, nn.Conv2d)]
    assert ours == theirs and len(ours) == 13
    assert _torchvision_count(reference) == 14_710_464


def test_mobilenet_v2_is_torchvisions_layer_set_plus_the_cifar_port_extras():
    # The CIFAR port differs from torchvision's mobilenet_v2 only by (a) a 1×1 expand conv in
    # the expansion-1 block (32×32 weights) and (b) 1×1 projection shortcuts in the four
    # stride-1 blocks that change width (32→16, 16→24, 64→96, 160→320).
    model = architecture("MobileNetV2")(LayerFactory(), 1000, 3, 32)
    shortcuts = {n: m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, MaskedConv2d) and ".shortcut." in n}
    assert sorted(shortcuts.values()) == sorted([32 * 16, 16 * 24, 64 * 96, 160 * 320])
    expand_t1 = model.layers[0].conv1.weight.numel()
    assert expand_t1 == 32 * 32
    reference = torchvision.models.mobilenet_v2(weights=None)
    assert _prunable(model) - sum(shortcuts.values()) - expand_t1 == \
        _torchvision_count(reference) == 3_469_760
    depthwise = [m for m in model.modules() if isinstance(m, MaskedConv2d) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.weight.shape[1] == 1 for m in depthwise)


@pytest.mark.parametrize("arch,size", [("vgg16", 64), ("tinyvgg16", 64), ("tinyvgg16", 96),
                                       ("tinyMobileNetV2", 64), ("TinyResNet18", 64)])
def test_logits_follow_the_class_count_on_larger_inputs(arch, size):
    # upstream's tinyvgg16 emitted 800 = 200 × 2 × 2 logits on 64×64 input
    model = architecture(arch)(LayerFactory(), 200, 3, size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 200)


def test_vgg_refuses_images_smaller_than_its_pooling():
    with pytest.raises(ValueError, match="at least 32×32"):
        architecture("vgg16")(LayerFactory(), 10, 1, 28)


def test_tiny_resnet18_shortcuts_are_prunable():
    model = architecture("TinyResNet18")(LayerFactory(), 200, 3, 64)
    shortcuts = [n for n, m in model.named_modules()
                 if isinstance(m, MaskedConv2d) and "shortcut" in n]
    assert shortcuts == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]


def test_projection_shortcuts_are_prunable():
    model = architecture("ResNet50")(LayerFactory(), 10, 3, 32)
    names = [n for n, m in model.named_modules() if isinstance(m, MaskedConv2d)]
    assert "layer1.0.shortcut.0" in names and "layer4.0.shortcut.0" in names


def test_batchnorm_flavours():
    assert not list(NonAffineBatchNorm(8).parameters())
    assert [p.shape for p in AffineBatchNorm(8).parameters()] == [(8,), (8,)]
    bn = NonAffineBatchNorm(4)
    bn.train()
    bn(torch.randn(16, 4, 3, 3) + 5)
    assert bn.running_mean.mean() > 0.3     # running statistics still update
    f = LayerFactory(bn_type="NonAffineBatchNorm")
    model = architecture("resnet20")(f, 10, 3, 32)
    assert all(isinstance(m, NonAffineBatchNorm) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_bias_option():
    with_bias = architecture("resnet20")(LayerFactory(bias=True), 10, 3, 32)
    without = architecture("resnet20")(LayerFactory(bias=False), 10, 3, 32)
    assert all(m.bias is not None for m in with_bias.modules()
               if isinstance(m, (MaskedConv2d, MaskedLinear)))
    assert all(m.bias is None for m in without.modules()
               if isinstance(m, (MaskedConv2d, MaskedLinear)))


def _conv(in_ch=16, out_ch=32, k=3):
    return MaskedConv2d(in_ch, out_ch, k, padding=1, bias=False)


def test_signed_and_unsigned_constant_init():
    torch.manual_seed(0)
    layer = _conv()
    fan_in = 16 * 9
    init_weight_(layer, "signed_constant", "fan_in", "relu")
    expected = math.sqrt(2.0) / math.sqrt(fan_in)
    assert torch.allclose(layer.weight.abs(), torch.full_like(layer.weight, expected))
    positive = (layer.weight > 0).float().mean().item()
    assert 0.4 < positive < 0.6                      # random signs
    init_weight_(layer, "signed_constant", "fan_out", "relu")
    assert torch.allclose(layer.weight.abs(), torch.full_like(layer.weight,
                                                              math.sqrt(2.0 / (32 * 9))))
    init_weight_(layer, "unsigned_constant", "fan_in", "relu")
    assert torch.all(layer.weight == expected)
    init_weight_(layer, "signed_constant", "fan_in", "relu", scale_fan=True, prune_rate=0.75)
    assert torch.allclose(layer.weight.abs(), torch.full_like(
        layer.weight, math.sqrt(2.0) / math.sqrt(fan_in * 0.25)))


def test_random_inits_have_the_documented_scale():
    torch.manual_seed(0)
    layer = MaskedConv2d(64, 256, 3, bias=False)
    fan_in, fan_out = 64 * 9, 256 * 9
    init_weight_(layer, "kaiming_normal", "fan_in", "relu")
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.02)
    init_weight_(layer, "kaiming_uniform", "fan_in", "relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    assert layer.weight.abs().max().item() <= bound
    assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    init_weight_(layer, "xavier_normal")
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)),
                                                      rel=0.02)
    init_weight_(layer, "xavier_constant")
    assert torch.allclose(layer.weight.abs(), torch.full_like(
        layer.weight, math.sqrt(2.0 / (fan_in + fan_out))))
    init_weight_(layer, "standard")
    assert layer.weight.abs().max().item() <= 1 / math.sqrt(fan_in) + 1e-6


def test_score_inits():
    torch.manual_seed(0)
    s = torch.empty(20000)
    init_scores_(s, "unif")
    assert 0 <= s.min() and s.max() <= 1 and s.mean().item() == pytest.approx(0.5, abs=0.01)
    init_scores_(s, "half")
    assert torch.all(s == 0.5)
    init_scores_(s, "bern")
    assert set(s.unique().tolist()) == {0.0, 1.0}
    init_scores_(s, "bimodal")
    assert ((s < 0.1) | (s > 0.9)).float().mean() > 0.6       # Beta(0.1, 0.1) piles at 0/1
    init_scores_(s, "skew")
    assert s.mean().item() == pytest.approx(1 / 6, abs=0.01)   # Beta(1, 5) mean


def test_build_model_fixed_init_shares_weights_across_seeds():
    spec = InputSpec(10, 1, 8)
    cfg_a = resolve(["--algo", "training", "--fixed-init", "--seed", "1", "--init",
                     "signed_constant"])
    cfg_b = resolve(["--algo", "training", "--fixed-init", "--seed", "2", "--init",
                     "signed_constant"])
    torch.manual_seed(cfg_a.run_seed)
    a = build_model(cfg_a, spec, with_scores=True)
    after_a = torch.rand(1)
    torch.manual_seed(cfg_b.run_seed)
    b = build_model(cfg_b, spec, with_scores=True)
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)
    assert a.conv1.scores is not None and 0 <= a.conv1.scores.min() <= a.conv1.scores.max() <= 1
    torch.manual_seed(cfg_a.run_seed)
    assert torch.equal(torch.rand(1), after_a)   # the global random stream is untouched
    cfg_c = resolve(["--algo", "training", "--seed", "2", "--init", "signed_constant"])
    torch.manual_seed(cfg_c.run_seed)
    c = build_model(cfg_c, spec)
    assert not torch.equal(c.conv1.weight, a.conv1.weight)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_under_training(optimizer):
    torch.manual_seed(0)
    model = architecture("resnet20")(LayerFactory(), 10, 3, 16)
    masks = {n: (torch.rand_like(m) > 0.7).float() for n, m in get_masks(model).items()}
    set_masks(model, masks)
    params = model.parameters()
    opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4) if optimizer ==
           "sgd" else torch.optim.Adam(params, lr=0.01, weight_decay=5e-4))
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16)),
                                           torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, layer in model.named_modules():
        if isinstance(layer, (MaskedConv2d, MaskedLinear)):
            assert torch.all(layer.weight[masks[name] == 0] == 0), name
            assert torch.all(layer.weight[masks[name] == 1] != 0), name
    remaining, total = count_weights(model)
    assert remaining == sum(int(m.sum()) for m in masks.values()) and total == 268_336
    report = layer_density_report(model)
    assert report[-1]["zeros"] == total - remaining


def test_score_function_enters_the_effective_weight():
    layer = MaskedLinear(4, 3, bias=False)
    scores = layer.enable_scores()
    with torch.no_grad():
        scores.fill_(0.25)
    layer.score_fn = lambda s: s * 2
    assert torch.allclose(layer.effective_weight(), layer.weight * 0.5)
    mask = torch.ones(3, 4)
    mask[0] = 0
    layer.set_mask(mask)
    assert torch.all(layer.effective_weight()[0] == 0)
    assert torch.all(layer.weight[0] == 0)
