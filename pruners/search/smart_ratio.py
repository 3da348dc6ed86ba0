"""Smart-Ratio layer-wise densities (Su et al. 2020, as upstream's random-subnet baseline).

For L prunable layers in order, layer l gets the unnormalised keep ratio
p_l = (L − l + 1)² + (L − l + 1) (VGG: divided by l²); the classifier is fixed at 0.3; the
other layers are scaled together so the whole network keeps the requested density; a ratio
above 1 is capped and its excess (whole weights) carried to the next layers; a layer then
keeps exactly ⌊p_l · N_l⌋ weights.  Version 2 (ResNet-20) fixes the first layer and the
classifier at Gem-Miner's densities and, unlike upstream, rescales the other layers so the
total density stays the requested one.
"""
from __future__ import annotations

from pruners.search.checks import SR_V2_FIRST_LAST_PCT, sr_version2_density

CLASSIFIER_KEEP = 0.3


def smart_ratio_fractions(sizes: list[int], density: float, vgg: bool = False,
                          fixed: dict[int, float] | None = None) -> list[float]:
    """Keep ratio per layer (in layer order) for a network that keeps `density` of its
    weights; `fixed` maps layer index → ratio (default: the classifier at 0.3)."""
    count = len(sizes)
    fixed = {count - 1: CLASSIFIER_KEEP} if fixed is None else dict(fixed)
    raw = []
    for l in range(1, count + 1):
        depth = count - l + 1
        raw.append((depth * depth + depth) / (l * l if vgg else 1))
    free = [i for i in range(count) if i not in fixed]
    budget = density * sum(sizes) - sum(sizes[i] * ratio for i, ratio in fixed.items())
    scale = budget / sum(sizes[i] * raw[i] for i in free)
    ratios = [fixed.get(i, scale * raw[i]) for i in range(count)]
    extra = 0                               # whole weights above a ratio of 1, carried on
    for i in free:
        size = sizes[i]
        if ratios[i] >= 1:
            extra += int((ratios[i] - 1) * size)
            ratios[i] = 1.0
        else:
            room = int((1 - ratios[i]) * size)
            if room >= extra:
                ratios[i] += extra / size
                extra = 0
            else:
                extra -= room
                ratios[i] = 1.0
    return ratios


def smart_ratio_counts(sizes: list[int], density: float, vgg: bool = False,
                       fixed: dict[int, float] | None = None) -> list[int]:
    """Weights kept per layer: ⌊ratio · size⌋."""
    return [int(ratio * size) for ratio, size in
            zip(smart_ratio_fractions(sizes, density, vgg, fixed), sizes)]


def counts_for_config(cfg, sizes: list[int]) -> list[int]:
    """Smart-Ratio counts for the config's arch, smart_ratio (fraction pruned), sr_version."""
    fixed = None
    if cfg.sr_version == 2:
        first, last = SR_V2_FIRST_LAST_PCT[sr_version2_density(cfg.values)]
        fixed = {0: first / 100.0, len(sizes) - 1: last / 100.0}
    return smart_ratio_counts(sizes, 1.0 - cfg.smart_ratio, "vgg" in cfg.arch.lower(), fixed)
