"""The shared training loop: hooks, extra loss, label smoothing, evaluation, precision."""
from __future__ import annotations

import math

import pytest
import torch

from args_helper import resolve
from data.loader import DeviceLoader
from models import architecture
from models.layers import LayerFactory
from utils.device import autocast_dtype, select_device
from utils.schedules import OptimizerSpec
from utils.train import evaluate, train_epoch


def _setup(seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (40,))
    loader = DeviceLoader(images, labels, 16, (0.5,), (0.25,), "cpu", train=True, seed=1)
    model = architecture("lenet_300_100")(LayerFactory(), 10, 1, 8)
    return model, loader


def test_after_step_hook_and_step_count():
    model, loader = _setup()
    steps = []
    out = train_epoch(model, loader, OptimizerSpec().build(model.parameters(), 0.01),
                      after_step=steps.append, start_step=7)
    assert steps == [8, 9, 10] and out["step"] == 10     # 40 images / 16 → 3 batches
    assert 0 <= out["acc"] <= 100 and math.isfinite(out["loss"])


def test_extra_loss_and_label_smoothing_enter_the_loss():
    losses = {}
    for name, kwargs in {"plain": {}, "extra": {"extra_loss": lambda m: torch.tensor(5.0)},
                         "smooth": {"label_smoothing": 0.5}}.items():
        model, loader = _setup()
        opt = OptimizerSpec().build(model.parameters(), 0.0)    # lr 0: same model each time
        losses[name] = train_epoch(model, loader, opt, **kwargs)["loss"]
    assert losses["extra"] == pytest.approx(losses["plain"] + 5.0, abs=1e-5)
    assert losses["smooth"] != pytest.approx(losses["plain"])


def test_evaluate_empty_split_is_nan_and_restores_mode():
    model, _ = _setup()
    empty = DeviceLoader(torch.zeros(0, 1, 8, 8, dtype=torch.uint8),
                         torch.zeros(0, dtype=torch.long), 16, (0.5,), (0.25,), "cpu",
                         train=False)
    assert math.isnan(evaluate(model, empty)["acc"])
    model.train()
    full = DeviceLoader(torch.zeros(5, 1, 8, 8, dtype=torch.uint8),
                        torch.zeros(5, dtype=torch.long), 16, (0.5,), (0.25,), "cpu",
                        train=False)
    evaluate(model, full)
    assert model.training


def test_precision_and_device_selection_on_cpu():
    cfg = resolve(["--algo", "training"])
    device = select_device(cfg)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(cfg, torch.device("cpu")) is None
    assert autocast_dtype(cfg, torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype(resolve(["--algo", "training", "--precision", "fp32"]),
                          torch.device("cuda")) is None
    assert autocast_dtype(resolve(["--algo", "training", "--precision", "bf16"]),
                          torch.device("cpu")) is torch.bfloat16
    assert select_device(resolve(["--algo", "training", "--device", "cpu"])).type == "cpu"
