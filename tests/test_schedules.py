"""Learning-rate policies and optimizers (upstream semantics)."""
from __future__ import annotations

import math

import pytest
import torch

from args_helper import resolve
from utils.schedules import (LRSchedule, OptimizerSpec, default_milestones,
                             schedule_from_config)


@pytest.mark.parametrize("epochs,expected", [
    (100, [50, 80]), (150, [80, 120]), (160, [80, 120]), (200, [100, 150]),
    (300, [150, 250]), (30, [15, 20]), (9, [4, 6])])
def test_upstream_milestone_table(epochs, expected):
    assert default_milestones(epochs) == expected


def test_multistep_uses_table_or_explicit_milestones():
    cfg = resolve(["--algo", "training", "--epochs", "160", "--lr", "0.1", "--lr-policy",
                   "multistep_lr"])
    schedule = schedule_from_config(cfg)
    assert [schedule.lr_at(e) for e in (0, 79, 80, 119, 120, 159)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cfg = resolve(["--algo", "training", "--epochs", "160", "--lr", "0.1", "--lr-policy",
                   "multistep_lr", "--milestones", "10", "--lr-gamma", "0.5"])
    schedule = schedule_from_config(cfg)
    assert (schedule.lr_at(9), schedule.lr_at(10), schedule.lr_at(100)) == (0.1, 0.05, 0.05)


def test_cosine_and_warmup():
    s = LRSchedule("cosine_lr", 0.1, 10)
    assert s.lr_at(0) == 0.1
    assert s.lr_at(5) == pytest.approx(0.05)
    assert s.lr_at(9) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.9)))
    w = LRSchedule("cosine_lr", 0.1, 12, warmup=2)
    assert [w.lr_at(0), w.lr_at(1), w.lr_at(2)] == pytest.approx([0.05, 0.1, 0.1])
    assert w.lr_at(7) == pytest.approx(0.05)
    assert LRSchedule("constant_lr", 0.3, 5).lr_at(4) == 0.3


def test_optimizers():
    params = [torch.nn.Parameter(torch.ones(3))]
    sgd = OptimizerSpec("sgd", 0.8, 1e-4, True).build(params, 0.1)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.8, 1e-4, True)
    adam = OptimizerSpec("adam", 0.9, 5e-4).build(params, 0.01)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 5e-4
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    assert len(OptimizerSpec().build(params + [frozen], 0.1).param_groups[0]["params"]) == 1
