"""Linear interpolation between two weight sets and the error barrier (Def. 2.1 of
"Unmasking the LTH"): the smallest ε with E(γw + (1−γ)w′) ≤ γE(w) + (1−γ)E(w′) + ε for all
γ ∈ [0, 1].  Sparse networks are interpolated through their effective weights m ⊙ w."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from analysis.batchnorm import reestimate_batchnorm
from analysis.weights import combine, effective_state
from utils.train import evaluate


@dataclass
class Curve:
    """Errors (%) along γ ∈ [0, 1]: point γ is γ·A + (1−γ)·B, so γ = 1 is A."""

    gammas: list
    train_error: list
    test_error: list
    train_loss: list
    test_loss: list

    @property
    def test_barrier(self) -> float:
        return error_barrier(self.gammas, self.test_error)

    @property
    def train_barrier(self) -> float:
        return error_barrier(self.gammas, self.train_error)

    def rows(self) -> list[dict]:
        return [{"gamma": g, "train_error": tr, "test_error": te, "train_loss": trl,
                 "test_loss": tel} for g, tr, te, trl, tel in zip(
                    self.gammas, self.train_error, self.test_error, self.train_loss,
                    self.test_loss)]


def error_barrier(gammas: list, errors: list) -> float:
    """max over γ of E(γ) − [γ·E(1) + (1−γ)·E(0)] (0 when the path lies below the chord)."""
    at = dict(zip(gammas, errors))
    e0, e1 = at[min(gammas)], at[max(gammas)]
    return max(0.0, max(e - (g * e1 + (1 - g) * e0) for g, e in zip(gammas, errors)))


def interpolate(model: torch.nn.Module, state_a: dict, state_b: dict, loaders, *,
                points: int = 11, bn_reset_batches: int = 20,
                autocast_dtype=None, progress=None) -> Curve:
    """Evaluate `points` networks on the segment from B (γ = 0) to A (γ = 1), re-estimating
    BatchNorm statistics at each point on `bn_reset_batches` training batches (0: keep the
    interpolated statistics).  `model` provides the architecture and is not modified;
    `progress()` (optional) is called after each point."""
    probe = copy.deepcopy(model)
    a, b = effective_state(state_a), effective_state(state_b)
    gammas = [i / (points - 1) for i in range(points)] if points > 1 else [1.0]
    curve = Curve(gammas, [], [], [], [])
    for gamma in gammas:
        probe.load_state_dict(combine([a, b], [gamma, 1.0 - gamma]))
        reestimate_batchnorm(probe, loaders.train, bn_reset_batches)
        train = evaluate(probe, loaders.train_eval, autocast_dtype)
        test = evaluate(probe, loaders.test, autocast_dtype)
        curve.train_error.append(100.0 - train["acc"])
        curve.test_error.append(100.0 - test["acc"])
        curve.train_loss.append(train["loss"])
        curve.test_loss.append(test["loss"])
        if progress is not None:
            progress()
    return curve


def projection_distance(trained: dict, next_masks: dict) -> tuple[float, float]:
    """‖w − m′⊙w‖ and its ratio to ‖w‖ for trained weights w (effective) and the next level's
    masks m′ (by layer name): how far pruning moves the solution."""
    eff = effective_state(trained)
    removed = total = 0.0
    for name, mask in next_masks.items():
        weight = eff[f"{name}.weight"].float()
        removed += float(((weight * (1 - mask.to(weight.dtype))) ** 2).sum())
        total += float((weight ** 2).sum())
    return removed ** 0.5, (removed / total) ** 0.5 if total else 0.0
