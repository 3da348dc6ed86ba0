"""IMP on a pruning-aware critical subset of the training data (`data_subset: prac`;
Zhang et al., "Efficient Lottery Ticket Finding: Less Data is More", ICML 2021).

Level 0 trains the dense network on every training example while an in-step hook counts, per
example, its forgetting events: presentations at which the example is misclassified after
having been classified correctly at its previous presentation (correctness as the training
forward pass sees it: augmented input, before the update).  An example never classified
correctly counts as infinitely forgotten (always hard); one never presented counts -1.

Before level L ≥ 1 trains, its subset is chosen from the statistics recorded while training
level L-1:
  - the forgetting rule, `prac_rule`:
      threshold  examples forgotten more than `prac_threshold` times (default 0: forgotten at
                 least once, or never learned; the paper's default "zero-out" rule)
      fraction   the ⌊N·(1 − prac_data_rate)^L⌋ examples with the most forgetting events
                 (ties: lower index first; the paper's constant-rate rule, rate 0.2)
  - united with the pruning-aware examples: training examples (in order, no augmentation,
    evaluation mode) on which the dense network of level 0 and the pruned projection
    m(L)⊙w(L-1) — the previous level's trained weights under the new masks — predict
    different classes.
With `prac_refresh: true` (the paper re-selects after every level) levels ≥ 1 record their
own statistics on their subset and the next level selects again; with false the subset chosen
for level 1 is kept.  `prac_epochs: scaled` (the paper's "dynamic training iterations") trains
a level on a subset of n of the N examples for ⌊E·n/N⌋ epochs (at least 1) with the
learning-rate milestones and warm-up scaled by n/N; `same` keeps E epochs.  A level that
starts part-way into its schedule (IMP-WR) starts at the same relative position.

Only the levels train on the subset; controls and stability copies train on all examples (the
subset is a device for finding the mask; a control is a judgement of the ticket).

Statistics live on the training device and are updated inside the training step without a
host synchronisation (a step recorded as a CUDA graph updates them at every replay).  They
are saved in checkpoints/last.pt after every epoch (resume continues them exactly), in
checkpoints/example_stats_LXX.pt when level XX ends, and every level's subset in
checkpoints/subset_LXX.pt.
"""
from __future__ import annotations

import copy
import dataclasses
import os

import torch

from models.masks import prunable_layers, set_masks
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.phases import PhaseSpec
from utils.schedules import LRSchedule
from utils.step import NO_HOOKS, InStepHooks

NEVER_LEARNED = 2 ** 40      # the forgetting score of an example never classified correctly
NOT_PRESENTED = -1           # ... of one the statistics never saw
STATS_KEY = "example_stats"  # where the live statistics sit in the run state (last.pt)


class ExampleStats:
    """Per-example forgetting statistics of one training run, on the device.

    `update(logits, labels)` is an in-step hook (`InStepHooks.after_forward`); it reads the
    batch's example indices from `batch_indices`, the loader's in-place buffer."""

    def __init__(self, num_examples: int, batch_indices: torch.Tensor):
        device = batch_indices.device
        self.batch_indices = batch_indices
        self.forgotten = torch.zeros(num_examples, dtype=torch.int32, device=device)
        self.presented = torch.zeros(num_examples, dtype=torch.int32, device=device)
        self.learned = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.last_correct = torch.zeros(num_examples, dtype=torch.bool, device=device)

    def tensors(self) -> dict:
        return {"forgotten": self.forgotten, "presented": self.presented,
                "learned": self.learned, "last_correct": self.last_correct}

    def reset(self) -> None:
        for tensor in self.tensors().values():
            tensor.zero_()

    def load(self, saved: dict) -> None:
        """Put saved values (any device) into the live tensors, in place."""
        for name, tensor in self.tensors().items():
            tensor.copy_(saved[name])

    def snapshot(self) -> dict:
        """CPU copies of the statistics."""
        return {name: t.detach().cpu().clone() for name, t in self.tensors().items()}

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count this batch's presentations and forgetting events (device-only)."""
        index = self.batch_indices[:labels.shape[0]]
        correct = logits.argmax(1) == labels
        before = self.last_correct.index_select(0, index)
        forgot = (before & ~correct).to(torch.int32)
        self.forgotten.index_copy_(0, index, self.forgotten.index_select(0, index) + forgot)
        self.presented.index_copy_(0, index, self.presented.index_select(0, index) + 1)
        self.learned.index_copy_(0, index, self.learned.index_select(0, index) | correct)
        self.last_correct.index_copy_(0, index, correct)


def forgetting_scores(stats: dict) -> torch.Tensor:
    """Per example (int64): its forgetting events; NEVER_LEARNED when it was presented but
    never classified correctly, NOT_PRESENTED when never presented."""
    scores = stats["forgotten"].long().clone()
    scores[~stats["learned"].bool()] = NEVER_LEARNED
    scores[stats["presented"] == 0] = NOT_PRESENTED
    return scores


def hard_examples(scores: torch.Tensor, rule: str, threshold: int = 0,
                  keep: int | None = None) -> torch.Tensor:
    """The examples the forgetting rule selects, as sorted indices: `threshold` → score above
    `threshold`; `fraction` → the `keep` highest scores (ties: lower index first)."""
    scores = scores.cpu()
    if rule == "threshold":
        return torch.nonzero(scores > threshold).flatten()
    if rule == "fraction":
        order = torch.sort(-scores, stable=True).indices      # ties keep the index order
        return order[:min(keep, len(scores))].sort().values
    raise ValueError(f"unknown PrAC rule {rule!r}")


def prac_subset(scores: torch.Tensor, disagree: torch.Tensor, rule: str, threshold: int,
                keep: int | None) -> torch.Tensor:
    """The PrAC subset: the forgetting rule's examples ∪ the pruning-aware examples
    (`disagree`: one bool per example), as sorted indices."""
    hard = torch.zeros(len(scores), dtype=torch.bool)
    hard[hard_examples(scores, rule, threshold, keep)] = True
    return torch.nonzero(hard | disagree.cpu().bool()).flatten()


def fraction_keep(num_examples: int, rate: float, level: int) -> int:
    """The fraction rule's count for level `level`: ⌊N·(1 − rate)^level⌋."""
    return int(num_examples * (1.0 - rate) ** level)


def subset_epochs(epochs: int, train_examples: int, num_examples: int, mode: str) -> int:
    """Epochs of a level on a subset: scaled → ⌊E·n/N⌋ (at least 1); same → E."""
    if mode == "same":
        return epochs
    return max(1, epochs * train_examples // num_examples)


def subset_phase(spec: PhaseSpec, steps_per_epoch: int, train_examples: int,
                 num_examples: int, subset_steps: int, mode: str) -> PhaseSpec:
    """`spec` (a level on all N examples, `steps_per_epoch` steps per epoch) rescaled for a
    subset of `train_examples` with `subset_steps` steps per epoch: its epochs (and, when
    scaled, LR milestones and warm-up) and its start at the same relative position."""
    epochs = subset_epochs(spec.epochs, train_examples, num_examples, mode)
    schedule = spec.schedule
    if mode == "scaled":
        def scale(value: int) -> int:
            return value * train_examples // num_examples
        schedule = LRSchedule(schedule.policy, schedule.base_lr, epochs,
                              tuple(scale(m) for m in schedule.milestones), schedule.gamma,
                              min(scale(schedule.warmup), epochs - 1))
    full_total = spec.epochs * steps_per_epoch
    start = spec.start_step * epochs * subset_steps // full_total if full_total else 0
    return dataclasses.replace(spec, epochs=epochs, schedule=schedule, start_step=start)


@torch.no_grad()
def predictions(model: torch.nn.Module, loader, autocast_dtype=None) -> torch.Tensor:
    """The predicted class of every example `loader` yields, in order (evaluation mode)."""
    from utils.step import autocast

    was_training = model.training
    model.eval()
    out = []
    for images, _ in loader:
        with autocast(loader.device, autocast_dtype):
            out.append(model(images).argmax(1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class PracRun:
    """The PrAC state of one IMP run: the live statistics and every level's subset."""

    def __init__(self, ctx, plan):
        cfg = ctx.cfg
        loader = ctx.loaders.train
        self.ctx, self.plan = ctx, plan
        self.rule, self.threshold = cfg.prac_rule, cfg.prac_threshold
        self.rate, self.refresh, self.epochs_mode = (cfg.prac_data_rate, cfg.prac_refresh,
                                                     cfg.prac_epochs)
        self.num_examples = loader.num_images
        self.stats = ExampleStats(self.num_examples, loader.batch_indices())
        self.hooks = InStepHooks(after_forward=(self.stats.update,))

    # --------------------------------------------------------------- files

    def _subset_path(self, level: int) -> str:
        return self.ctx.path("checkpoints", f"subset_L{level:02d}.pt")

    def _stats_path(self, level: int) -> str:
        return self.ctx.path("checkpoints", f"example_stats_L{level:02d}.pt")

    def records(self, level: int) -> bool:
        """Whether `level`'s training records statistics (level 0, or any with refresh)."""
        return level == 0 or self.refresh

    def level_hooks(self, level: int) -> InStepHooks:
        return self.hooks if self.records(level) else NO_HOOKS

    # --------------------------------------------------------------- levels

    def subset(self, level: int) -> dict | None:
        """The saved subset record of `level` (None for level 0 or before it was chosen)."""
        path = self._subset_path(level)
        return load_checkpoint(path) if level > 0 and os.path.isfile(path) else None

    def choose(self, model, level: int, masks: dict, bias_masks: dict, dense_path: str) -> dict:
        """The subset of `level` ≥ 1 (chosen once and saved; a rerun loads it): `model` holds
        the previous level's trained weights, `masks` / `bias_masks` are the new level's,
        `dense_path` is level 0's file (its trained weights are the dense network)."""
        saved = self.subset(level)
        if saved is not None:
            return saved
        if level > 1 and not self.refresh:
            record = dict(self.subset(level - 1), level=level)    # chosen_at kept
        else:
            record = self._select(model, level, masks, bias_masks, dense_path)
        save_checkpoint(record, self._subset_path(level))
        return record

    def _select(self, model, level: int, masks: dict, bias_masks: dict,
                dense_path: str) -> dict:
        ctx = self.ctx
        stats = load_checkpoint(self._stats_path(level - 1))
        scores = forgetting_scores(stats)
        keep = fraction_keep(self.num_examples, self.rate, level) \
            if self.rule == "fraction" else None
        hard = hard_examples(scores, self.rule, self.threshold, keep)
        disagree = self._disagreements(model, masks, bias_masks, dense_path)
        indices = prac_subset(scores, disagree, self.rule, self.threshold, keep)
        if len(indices) < 2:
            raise RuntimeError(
                f"PrAC selected {len(indices)} training example(s) for level {level}: too "
                f"few to train on; lower prac_threshold or use prac_rule: fraction")
        ctx.logger.info(
            f"level {level}: PrAC subset of {len(indices):,} / {self.num_examples:,} training "
            f"examples ({100.0 * len(indices) / self.num_examples:.1f} %): {len(hard):,} by "
            f"forgetting ({self.rule}), {int(disagree.sum()):,} where the dense network and "
            f"the pruned projection disagree")
        return {"indices": indices, "level": level, "chosen_at": level,
                "hard": len(hard), "disagree": int(disagree.sum()),
                "num_examples": self.num_examples, "rule": self.rule,
                "threshold": self.threshold, "keep": keep}

    def _disagreements(self, model, masks: dict, bias_masks: dict,
                       dense_path: str) -> torch.Tensor:
        """Per training example: the dense level 0 and the pruned projection m(L)⊙w(L-1)
        predict different classes."""
        ctx = self.ctx
        probe = copy.deepcopy(model)
        set_masks(probe, masks)
        layers = prunable_layers(probe)
        for name, mask in bias_masks.items():
            layers[name].set_bias_mask(mask)
        pruned = predictions(probe, ctx.loaders.train_eval, ctx.autocast_dtype)
        probe.load_state_dict(load_checkpoint(dense_path, ctx.device)["trained"])
        dense = predictions(probe, ctx.loaders.train_eval, ctx.autocast_dtype)
        return (dense != pruned).cpu()

    def begin(self, level: int, key: str) -> None:
        """Before `level` (phase `key`) trains: its statistics continue from the run state
        (resume) or start from zero, and are registered there so last.pt carries them."""
        if not self.records(level):
            return
        extra = self.ctx.state.extra
        saved = extra.get(STATS_KEY)
        if saved is not None and saved.get("key") == key:
            self.stats.load(saved["tensors"])
        else:
            self.stats.reset()
        extra[STATS_KEY] = {"key": key, "tensors": self.stats.tensors()}

    def end(self, level: int) -> None:
        """After `level` trained: its statistics go to example_stats_LXX.pt."""
        if not self.records(level):
            return
        save_checkpoint(self.stats.snapshot(), self._stats_path(level))
        self.ctx.state.extra.pop(STATS_KEY, None)

    def train_on(self, indices: torch.Tensor | None) -> None:
        """Make the training loader draw `indices` only (None: every example)."""
        self.ctx.loaders.train.set_subset(indices)

    def phase(self, spec: PhaseSpec, train_examples: int) -> PhaseSpec:
        """The level's phase for a subset of `train_examples` examples."""
        from data.loader import steps_per_epoch

        return subset_phase(spec, self.plan.steps_per_epoch, train_examples,
                            self.num_examples,
                            steps_per_epoch(train_examples, self.ctx.loaders.train.batch_size),
                            self.epochs_mode)
