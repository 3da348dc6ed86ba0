"""Gem-Miner (`algo: hc_iter`) and `hc` (REFERENCE.md §4).

The weights stay frozen at their random init; one score in [0, 1] per weight trains instead
(clamped after every optimizer step), under cross-entropy plus `lmbda` · regulariser.  The
forward mask is 1[score > quantize_threshold] ∧ flag with a straight-through gradient
(`hc_quantized`), else weight · score · flag.  hc_iter also clears flags every iter_period
epochs: BottomK removes exactly ceil(p · active) of the lowest-score active weights (ties:
the later entries go), p = 1 − (T/100)^(1/N), and the last step lands exactly on T % density.
The rounded mask becomes the ticket, which is fine-tuned and sanity-checked (finetune.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.masks import density_pct, density_text, keep_top, prunable_layers
from pruners import Algorithm
from pruners.epoch_checkpoints import plan_fixed_epochs, save_fixed_epoch
from pruners.search.checks import prune_steps, step_fraction
from pruners.search.finetune import finish_search, last_row, plan_finish, search_phase, \
    write_phase_table
from pruners.search.hc_extras import BottomKOnForward, ScoreRewind, drop_bottom_half_, \
    round_scores_, rounds_after
from pruners.search.scores import (binary_copy, clamp_scores_, continuous_score_fn,
                                   count_for_fraction, flags_of, layer_sizes, level_counts,
                                   quantized_score_fn, rounded_scores, set_flags, step_removal,
                                   train_scores_only)
from utils.board import phase_histogram, phase_scalars
from utils.phases import run_phase
from utils.seeds import seeded_generator
from utils.step import InStepHooks

REGULARISERS = ("L2", "L1", "L1_L2", "var_red_1", "var_red_2", "bin_entropy")
SEARCH_COLUMNS = ["flag_density_pct", "reg_loss", "pruned"]


def regulariser(model, kind: str, alpha: float = 1.0, alpha_prime: float = 1.0,
                capturable: bool = False):
    """The score regulariser summed over every score of every prunable layer (upstream).

    bin_entropy is defined on scores inside (0, 1) only; `capturable` computes it without
    selecting those entries (masking instead), so it can be recorded in a CUDA graph — the
    same value up to the order of the float summation."""
    total = None
    for layer in prunable_layers(model).values():
        s = layer.scores
        if kind == "L2":
            term = (s * s).sum()
        elif kind == "L1":
            term = s.abs().sum()
        elif kind == "L1_L2":
            term = s.abs().sum() + (s * s).sum()
        elif kind == "var_red_1":
            term = (s.pow(alpha) * (1 - s).pow(alpha_prime)).sum()
        elif kind == "var_red_2":
            term = (layer.weight.pow(2) * s * (1 - s)).sum()
        elif kind == "bin_entropy" and capturable:
            inside = (s > 0) & (s < 1)
            safe = torch.where(inside, s, torch.full_like(s, 0.5))
            entropy = -safe * torch.log(safe) - (1 - safe) * torch.log1p(-safe)
            term = torch.where(inside, entropy, torch.zeros_like(s)).sum()
        elif kind == "bin_entropy":        # log(0) is undefined: only scores inside (0, 1)
            inner = s[(s > 0) & (s < 1)]
            term = (-inner * torch.log(inner) - (1 - inner) * torch.log1p(-inner)).sum()
        else:
            raise ValueError(f"unknown regularization {kind!r}")
        total = term if total is None else total + term
    return total


@dataclass(frozen=True)
class FlagSchedule:
    """When and how hc_iter clears flags: after 0-based epochs period, 2·period, ... (N steps)."""

    kind: str                 # BottomK | LocalBottomK | FixThresholding
    period: int
    steps: int
    fraction: float           # p, the share of active weights removed per step
    target_pct: float
    invert: bool = False      # remove the highest scores instead (invert_sanity_check)
    threshold: float = 0.5    # FixThresholding

    def step_after(self, epoch0: int) -> int | None:
        """The pruning step (1..N) that follows 0-based epoch `epoch0`, if any."""
        if epoch0 > 0 and epoch0 % self.period == 0 and epoch0 // self.period <= self.steps:
            return epoch0 // self.period
        return None

    def final_count(self, size: int) -> int:
        return count_for_fraction(self.target_pct / 100.0, size)


def flag_schedule(cfg) -> FlagSchedule:
    steps = prune_steps(cfg.epochs, cfg.iter_period)
    fraction = step_fraction(cfg.target_sparsity, steps) if steps > 0 else 0.0
    return FlagSchedule(cfg.prune_type, cfg.iter_period, steps, fraction, cfg.target_sparsity,
                        cfg.invert_sanity_check, cfg.quantize_threshold)


@torch.no_grad()
def prune_flags(model, schedule: FlagSchedule, step: int) -> int:
    """Apply pruning step `step` to the flags (weights untouched); returns weights removed."""
    scores = {n: layer.scores.detach() for n, layer in prunable_layers(model).items()}
    flags = {n: f.clone() for n, f in flags_of(model).items()}
    before = sum(int(f.count_nonzero()) for f in flags.values())
    if schedule.kind == "FixThresholding":
        new = {n: flags[n] * (scores[n] > schedule.threshold).to(flags[n].dtype)
               for n in flags}
    elif schedule.kind == "BottomK":
        new = _remove(scores, flags, before, schedule, step,
                      schedule.final_count(sum(f.numel() for f in flags.values())))
    elif schedule.kind == "LocalBottomK":
        new = {}
        for n in flags:
            active = int(flags[n].count_nonzero())
            new.update(_remove({n: scores[n]}, {n: flags[n]}, active, schedule, step,
                               schedule.final_count(flags[n].numel())))
    else:
        raise ValueError(f"unknown prune_type {schedule.kind!r}")
    set_flags(model, new)
    return before - sum(int(f.count_nonzero()) for f in new.values())


def _remove(scores, flags, active: int, schedule: FlagSchedule, step: int, final: int):
    remove = step_removal(active, step, schedule.steps, schedule.fraction, final)
    # keep the largest scores (or, inverted, the smallest); ties keep the earlier entries
    return keep_top(scores, flags, active - remove, largest=not schedule.invert)


@torch.no_grad()
def rounded_masks(model, scheme: str, threshold: float, noise_std: float,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """flag ∧ round(score): naive 1[s > threshold], prob Bernoulli(s), all_ones 1; with
    Gaussian noise of std `noise_std` added to the scores first (upstream's `noise`)."""
    out = {}
    for name, layer in prunable_layers(model).items():
        rounded = rounded_scores(layer.scores, scheme, threshold, noise_std, generator)
        out[name] = layer.mask * rounded.to(layer.mask.device, layer.mask.dtype)
    return out


class _SearchHooks:
    """The per-step and per-epoch work of the search phase (clamping, pruning, records) and
    upstream's optional extras (hc_extras.py): periodic rounding, score rewinding, dropping
    half the flags of a warm start, BottomK forward masks, per-epoch checkpoints."""

    def __init__(self, ctx, model, schedule: FlagSchedule | None,
                 bottom_k: BottomKOnForward | None = None, rewind: ScoreRewind | None = None):
        self.ctx, self.model, self.schedule = ctx, model, schedule
        self.cfg = ctx.cfg
        self.bottom_k, self.rewind = bottom_k, rewind
        self.eval_masks = None
        self.capturable = ctx.captures_steps

    def regulariser_loss(self, model):
        cfg = self.cfg
        return cfg.lmbda * regulariser(model, cfg.regularization, cfg.alpha, cfg.alpha_prime,
                                       capturable=self.capturable)

    def clamp_scores(self) -> None:
        """In-step hook: scores back into [0, 1] after every optimizer step."""
        clamp_scores_(self.model)

    def after_epoch(self, epoch: int) -> dict:
        ctx, cfg, model = self.ctx, self.cfg, self.model
        epoch0 = epoch - 1
        if epoch0 % cfg.iter_period == 0:
            self._histograms(epoch)
        noise = cfg.noise_ratio if cfg.noise else 0.0
        eval_masks, dropped = None, 0
        if cfg.drop_bottom_half_weights and cfg.pretrained and epoch == 1:
            # upstream dropped at the start of epoch 1 (0-based): epoch 0 was evaluated before
            eval_masks = self._current_masks(epoch, noise)
            dropped = drop_bottom_half_(model, cfg.invert_sanity_check)
            ctx.logger.info(f"search: drop_bottom_half_weights after epoch 1 cleared "
                            f"{dropped:,} flags; flags {density_text(density_pct(model))}")
        removed = 0
        step = self.schedule.step_after(epoch0) if self.schedule else None
        if step is not None:
            removed = prune_flags(model, self.schedule, step)
            ctx.logger.info(f"search: pruning step {step}/{self.schedule.steps} after epoch "
                            f"{epoch} ({self.schedule.kind}) removed {removed:,} weights; "
                            f"flags {density_text(density_pct(model))}")
            if self.rewind is not None and self.rewind.restore():
                ctx.logger.info(f"search: scores rewound to the start of epoch "
                                f"{cfg.rewind_to_epoch} (0-based)")
            if self.bottom_k is not None:
                self.bottom_k.set_steps_done(step)
            if cfg.checkpoint_at_prune:
                ctx.save_model(model, f"prune_{step:02d}.pt")
        if cfg.algo_name == "hc" and rounds_after(epoch0, cfg.hc_warmup, cfg.hc_period):
            round_scores_(model, cfg.round, cfg.quantize_threshold, noise,
                          seeded_generator(ctx.seed, f"hc_round:{epoch}"))
            ctx.logger.info(f"search: scores rounded ({cfg.round}) after epoch {epoch} "
                            f"(hc_warmup {cfg.hc_warmup}, hc_period {cfg.hc_period})")
        if self.rewind is not None and cfg.rewind_to_epoch == epoch:
            self.rewind.save()      # the scores at the start of 0-based epoch `epoch`
        save_fixed_epoch(ctx, model, epoch)
        if self.bottom_k is not None:
            self.bottom_k.refresh()     # host work between epochs, never inside a step
        self.eval_masks = eval_masks if eval_masks is not None else \
            self._current_masks(epoch, noise)
        with torch.no_grad():
            reg = self.regulariser_loss(model).item() if cfg.regularization else 0.0
        return {"flag_density_pct": density_pct(model), "reg_loss": reg,
                "pruned": removed + dropped}

    def _current_masks(self, epoch: int, noise: float) -> dict:
        """The binary masks of the network the search defines now."""
        if self.bottom_k is not None:
            return self.bottom_k.masks()
        cfg = self.cfg
        return rounded_masks(self.model, cfg.round, cfg.quantize_threshold, noise,
                             seeded_generator(self.ctx.seed, f"round:{epoch}"))

    def eval_model(self):
        return binary_copy(self.model, self.eval_masks)

    def _histograms(self, epoch: int) -> None:
        """Into the search phase's TensorBoard sub-run at step `epoch`."""
        ctx = self.ctx
        active = [layer.scores.detach()[layer.mask != 0].float().cpu()
                  for layer in prunable_layers(self.model).values()]
        phase_histogram(ctx, "search", "search/scores_of_active_weights", torch.cat(active),
                        epoch)
        phase_scalars(ctx, "search", {
            f"search_layer_flag_density/{name}":
                100.0 * float(layer.mask.count_nonzero()) / layer.mask.numel()
            for name, layer in prunable_layers(self.model).items()}, epoch)


def _search_epochs_done(ctx) -> int:
    """Search epochs already completed (a resumed run continues after them)."""
    return sum(1 for row in ctx.state.rows if row.get("key") == "search")


def run_hc(ctx, model) -> dict:
    """Search (score training + flag pruning), then ticket, fine-tuning and sanity checks."""
    cfg = ctx.cfg
    train_scores_only(model, also_weights=not cfg.freeze_weights)
    score_fn = quantized_score_fn(cfg.quantize_threshold) if cfg.hc_quantized \
        else continuous_score_fn
    for layer in prunable_layers(model).values():
        layer.score_fn = score_fn
    clamp_scores_(model)
    schedule = flag_schedule(cfg) if cfg.algo_name == "hc_iter" else None
    done = _search_epochs_done(ctx)
    bottom_k = None
    if _uses_bottom_k(cfg):
        bottom_k = BottomKOnForward(model, schedule, cfg.invert_sanity_check)
        bottom_k.set_steps_done(min(max(done - 1, 0) // schedule.period, schedule.steps))
        bottom_k.install()
        bottom_k.refresh()
    rewind = None
    if schedule is not None and cfg.rewind_score and schedule.kind != "FixThresholding":
        rewind = ScoreRewind(model, ctx.path("checkpoints", "rewind_scores.pt"))
        if cfg.rewind_to_epoch == 0 and done == 0 and "search" not in ctx.state.completed:
            rewind.save()           # the initial scores
    hooks = _SearchHooks(ctx, model, schedule, bottom_k, rewind)
    result = run_phase(ctx, model, search_phase(cfg),
                       extra_loss=hooks.regulariser_loss if cfg.regularization else None,
                       hooks=InStepHooks(after_update=(hooks.clamp_scores,)),
                       after_epoch=hooks.after_epoch, eval_model=hooks.eval_model)
    if bottom_k is not None:
        bottom_k.remove()
    write_phase_table(ctx, "search", "search.csv", SEARCH_COLUMNS)
    row = last_row(ctx, "search")
    search = {"search_val_acc": result["val_acc"], "search_test_acc": result["test_acc"],
              "search_density_pct": row.get("density_pct"),
              "flag_density_pct": row.get("extra", {}).get("flag_density_pct")}
    if schedule is not None and schedule.kind != "FixThresholding":
        search["target_density_pct"] = cfg.target_sparsity

    def ticket_masks():
        if cfg.unflag_before_finetune or bottom_k is not None:   # the mask is the flags
            return {name: flag.clone() for name, flag in flags_of(model).items()}
        return rounded_masks(model, cfg.round, cfg.quantize_threshold,
                             cfg.noise_ratio if cfg.noise else 0.0,
                             seeded_generator(ctx.seed, "ticket"))

    return finish_search(ctx, model, search, ticket_masks)


def plan_hc(cfg, splits, model=None) -> list[str]:
    steps = math.ceil(splits.num_train / cfg.batch_size)
    spec = search_phase(cfg)
    bottom_k = _uses_bottom_k(cfg)
    if bottom_k:
        forward = ("forward mask (bottom_k_on_forward): the flagged weights with the highest "
                   "scores, as many as the next pruning step keeps (all flags after the last "
                   "step), straight-through gradient")
        evaluated = "evaluated each epoch: the network of that forward mask on val and test"
    else:
        forward = (f"forward mask: 1[score > {cfg.quantize_threshold:g}] ∧ flag, straight-"
                   f"through gradient" if cfg.hc_quantized else
                   "forward: weight · score · flag (continuous relaxation)")
        evaluated = (f"evaluated each epoch: the rounded network (round {cfg.round}"
                     f"{f', noise std {cfg.noise_ratio:g}' if cfg.noise else ''}) on val and "
                     f"test")
    lines = [f"phase search: {cfg.epochs} epochs × ~{steps} steps (batch {cfg.batch_size}); "
             f"scores train ({'weights frozen' if cfg.freeze_weights else 'weights train too'}"
             f"), clamped to [0, 1] after every step; {spec.optimizer.describe()}; "
             f"lr {spec.schedule.describe()}", forward,
             (f"loss: cross-entropy + {cfg.lmbda:g} · {cfg.regularization}"
              if cfg.regularization else "loss: cross-entropy (no regulariser)"), evaluated]
    if cfg.algo_name == "hc_iter":
        lines += _plan_schedule(cfg, splits)
    lines += _plan_extras(cfg) + plan_fixed_epochs(cfg)
    if bottom_k:
        ticket = "ticket: mask = the final flags (bottom_k_on_forward)"
    elif cfg.unflag_before_finetune:
        ticket = "ticket: mask = flags (unflag_before_finetune: scores set to 1)"
    else:
        ticket = f"ticket: mask = flags ∧ rounded scores (round {cfg.round})"
    return lines + plan_finish(cfg, splits, ticket)


def _plan_schedule(cfg, splits) -> list[str]:
    schedule = flag_schedule(cfg)
    epochs = [schedule.period * i + 1 for i in range(1, schedule.steps + 1)]   # 1-based
    shown = ", ".join(map(str, epochs[:3])) + (f", ..., {epochs[-1]}" if len(epochs) > 3
                                               else "")
    shown = f"{shown} (1-based; 0-based e with e % {schedule.period} == 0, e > 0)"
    if schedule.kind == "FixThresholding":
        return [f"pruning (FixThresholding) after epochs {shown}: flags of weights "
                f"with score <= {schedule.threshold:g} are cleared (density not scheduled)"]
    sizes = layer_sizes(cfg, splits)
    total = sum(sizes.values())
    if schedule.kind == "BottomK":
        counts = level_counts(total, schedule.steps, schedule.fraction,
                              schedule.final_count(total))
    else:
        per_layer = [level_counts(n, schedule.steps, schedule.fraction,
                                  schedule.final_count(n)) for n in sizes.values()]
        counts = [sum(c[i] for c in per_layer) for i in range(schedule.steps + 1)]
    which = "highest (invert_sanity_check)" if schedule.invert else "lowest"
    lines = [f"pruning ({schedule.kind}{', per layer' if schedule.kind == 'LocalBottomK' else ''}"
             f") after epochs {shown}: N = {schedule.steps} steps, p = 1 − "
             f"({cfg.target_sparsity:g}/100)^(1/{schedule.steps}) = {schedule.fraction:.4f}; "
             f"each step clears the flags of exactly ceil(p · active) {which}-score weights "
             f"(ties: later entries), the last step lands on the target; "
             f"{total:,} prunable weights"]
    for i, (epoch, count) in enumerate(zip(epochs, counts[1:]), start=1):
        lines.append(f"  step {i:>2} after epoch {epoch:>4}: {count:>12,} weights, "
                     f"{density_text(100.0 * count / total)}")
    return lines


def _uses_bottom_k(cfg) -> bool:
    """bottom_k_on_forward applies (hc_iter with global BottomK and quantised forward)."""
    return (cfg.algo_name == "hc_iter" and cfg.bottom_k_on_forward and cfg.hc_quantized
            and cfg.prune_type == "BottomK")


def _plan_extras(cfg) -> list[str]:
    """Dry-run lines of upstream's optional search features that this config switches on."""
    lines = []
    if cfg.algo_name == "hc" and cfg.hc_warmup < cfg.epochs:
        first = cfg.hc_warmup + (-cfg.hc_warmup) % cfg.hc_period
        lines.append(f"periodic rounding: after 0-based epochs {first}, {first + cfg.hc_period}"
                     f", ... (every {cfg.hc_period} from hc_warmup {cfg.hc_warmup}) the scores "
                     f"become their rounded values (round {cfg.round}) and the search goes "
                     f"on from them")
    if (cfg.algo_name == "hc_iter" and cfg.prune_type != "FixThresholding"
            and cfg.rewind_score and cfg.rewind_to_epoch >= 0):
        lines.append(f"score rewinding: the scores at the start of 0-based epoch "
                     f"{cfg.rewind_to_epoch} are restored after every later pruning step")
    if cfg.drop_bottom_half_weights and cfg.pretrained and cfg.epochs >= 2:
        lines.append("after epoch 1: the flags of the lower-scoring half of the flagged "
                     "weights are cleared (drop_bottom_half_weights, warm start from "
                     "`pretrained`); the pruning steps then continue from what is left, so "
                     "the counts above are upper bounds until the last step")
    return lines


def _score_init(cfg) -> str:
    return cfg.score_init


HC_ITER = Algorithm("hc_iter", run_hc, plan_hc, _score_init)
HC = Algorithm("hc", run_hc, plan_hc, _score_init)
