"""The mask API: exact counts, deterministic ties, nesting."""
from __future__ import annotations

import torch

from models.masks import keep_top, prune_lowest


def test_keep_top_exact_count_and_nesting():
    torch.manual_seed(0)
    scores = {"a": torch.randn(10, 10), "b": torch.randn(37)}
    masks = {"a": torch.ones(10, 10), "b": (torch.rand(37) > 0.3).float()}
    active = int(masks["a"].sum() + masks["b"].sum())
    new = keep_top(scores, masks, 50)
    assert int(new["a"].sum() + new["b"].sum()) == 50
    for n in masks:
        assert torch.all(new[n] <= masks[n])          # nested
    kept = torch.cat([scores["a"][new["a"] == 1], scores["b"][new["b"] == 1]])
    dropped = torch.cat([scores["a"][(new["a"] == 0) & (masks["a"] == 1)],
                         scores["b"][(new["b"] == 0) & (masks["b"] == 1)]])
    assert kept.min() > dropped.max()
    again = prune_lowest(scores, masks, 7)
    assert int(again["a"].sum() + again["b"].sum()) == active - 7


def test_ties_never_over_prune_and_break_by_position():
    scores = {"a": torch.zeros(4), "b": torch.tensor([0.0, 1.0, 0.0])}
    masks = {"a": torch.ones(4), "b": torch.ones(3)}
    new = prune_lowest(scores, masks, 2)               # six zeros tie; remove exactly 2
    assert int(new["a"].sum() + new["b"].sum()) == 5
    # among equal scores, the earliest entries are kept, the last ones removed
    assert new["a"].tolist() == [1, 1, 1, 1] and new["b"].tolist() == [0, 1, 0]
    assert torch.equal(prune_lowest(scores, masks, 2)["b"], new["b"])   # deterministic


def test_smallest_mode():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0, 0.5])}
    new = keep_top(scores, {"a": torch.ones(4)}, 2, largest=False)
    assert new["a"].tolist() == [0, 1, 0, 1]


def test_shuffle_keeps_each_layer_multiset_and_random_masks_exact():
    from pruners.ticket_controls import random_masks, shuffle_within_layers

    g = torch.Generator().manual_seed(0)
    masks = {"a": (torch.rand(6, 5, generator=g) > 0.5).float(), "b": torch.ones(7)}
    shuffled = shuffle_within_layers(masks, torch.Generator().manual_seed(1))
    for name in masks:
        assert torch.equal(shuffled[name].flatten().sort().values,
                           masks[name].flatten().sort().values)
    assert not torch.equal(shuffled["a"], masks["a"])
    again = shuffle_within_layers(masks, torch.Generator().manual_seed(1))
    assert all(torch.equal(again[n], shuffled[n]) for n in masks)
    rand = random_masks({"a": torch.Size([6, 5]), "b": torch.Size([7])}, 11,
                        torch.Generator().manual_seed(2))
    assert int(rand["a"].sum() + rand["b"].sum()) == 11


def test_reinitialize_keeps_masks_and_changes_survivors():
    from models import architecture
    from models.layers import LayerFactory
    from models.masks import get_masks, set_masks
    from pruners.ticket_controls import reinitialize_weights

    torch.manual_seed(0)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    masks = {n: (torch.rand_like(m) > 0.5).float() for n, m in get_masks(model).items()}
    set_masks(model, masks)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    state = torch.get_rng_state()
    reinitialize_weights(model, "kaiming_normal", torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)          # global stream untouched
    for name, mask in masks.items():
        w = model.state_dict()[name + ".weight"]
        assert torch.all(w[mask == 0] == 0)
        assert not torch.equal(w, before[name + ".weight"])
