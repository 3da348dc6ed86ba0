"""Upstream's optional hc / hc_iter search features (see pruners/upstream_checks.py for when
each applies):

  * periodic rounding (`hc_warmup`, `hc_period`): the scores themselves become their rounded
    values after some epochs and the search goes on from them;
  * score rewinding (`rewind_score`, `rewind_to_epoch`): after every flag-pruning step the
    scores go back to those saved at the start of one epoch;
  * `drop_bottom_half_weights`: a warm-started search clears the flags of the lower-scoring
    half of the flagged weights after its first epoch;
  * `bottom_k_on_forward`: every forward pass uses exactly the weights the next pruning step
    would keep, instead of 1[score > quantize_threshold].

Everything here runs between epochs on the host, except `BottomKOnForward`'s per-forward
mask, which is pure tensor work (no host synchronisation, fixed shapes) so that it can run
inside a captured training step.
"""
from __future__ import annotations

import os

import torch

from models.masks import keep_top, prunable_layers
from pruners.search.scores import (count_for_fraction, flags_of, rounded_scores, set_flags,
                                   step_removal, straight_through)
from utils.checkpoint import load_checkpoint, save_checkpoint


@torch.no_grad()
def round_scores_(model, scheme: str, threshold: float, noise_std: float,
                  generator: torch.Generator) -> None:
    """Replace every score by its rounded value in place (flags untouched): naive
    1[s > threshold], prob Bernoulli(s), all_ones 1; Gaussian noise of std `noise_std` is
    added first (upstream's round_model applied to the training network)."""
    for layer in prunable_layers(model).values():
        rounded = rounded_scores(layer.scores, scheme, threshold, noise_std, generator)
        layer.scores.copy_(rounded.to(layer.scores.device, layer.scores.dtype))


def rounds_after(epoch0: int, warmup: int, period: int) -> bool:
    """Whether the scores are rounded after 0-based epoch `epoch0` (upstream's test
    epoch >= hc_warmup and epoch % hc_period == 0)."""
    return epoch0 >= warmup and epoch0 % period == 0


@torch.no_grad()
def drop_bottom_half_(model, invert: bool = False) -> int:
    """Clear the flags of ceil(½ · flagged) flagged weights with the lowest scores (the
    highest with `invert`; ties: the later entries go); returns how many were cleared."""
    scores = {n: layer.scores.detach() for n, layer in prunable_layers(model).items()}
    flags = {n: f.clone() for n, f in flags_of(model).items()}
    active = sum(int(f.count_nonzero()) for f in flags.values())
    remove = count_for_fraction(0.5, active)
    set_flags(model, keep_top(scores, flags, active - remove, largest=not invert))
    return remove


class ScoreRewind:
    """The scores saved at the start of one epoch, restored after every pruning step.  They
    are kept in a file of the run directory, so a resumed run rewinds to the same scores."""

    def __init__(self, model, path: str):
        self.model, self.path = model, path
        self.saved = load_checkpoint(path)["scores"] if os.path.isfile(path) else None

    @torch.no_grad()
    def save(self) -> None:
        self.saved = {n: layer.scores.detach().cpu().clone()
                      for n, layer in prunable_layers(self.model).items()}
        save_checkpoint({"scores": self.saved}, self.path)

    @torch.no_grad()
    def restore(self) -> bool:
        """Put the saved scores back (nothing saved yet: no change); True if restored."""
        if self.saved is None:
            return False
        for name, layer in prunable_layers(self.model).items():
            layer.scores.copy_(self.saved[name].to(layer.scores.device, layer.scores.dtype))
        return True


def _recording() -> bool:
    """Whether a CUDA graph is being recorded on this thread's current stream."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class BottomKOnForward:
    """Forward masks keeping exactly the weights the next BottomK step would keep.

    Before every forward pass of the training network a pre-hook ranks the scores of the
    flagged weights of all layers together (descending, stable: equal scores keep the earlier
    entry; with `invert` ascending) and keeps the first `keep` of them; each layer's score
    function returns its slice of that mask with a straight-through gradient.  `keep` is a
    device tensor: the count after the next pruning step of the schedule, or every flagged
    weight once the schedule is done.  The search calls `refresh` between epochs, which
    recomputes it on the host only when the flags changed (pruning, resume: detected through
    the flags' version counters, plain integers) or `steps_done` was set; the per-forward work
    is tensor operations of fixed shapes without host synchronisation."""

    def __init__(self, model, schedule, invert: bool = False):
        self.model, self.schedule, self.invert = model, schedule, invert
        self.layers = prunable_layers(model)
        device = next(iter(self.layers.values())).scores.device
        self.keep = torch.zeros((), dtype=torch.long, device=device)
        self.total = sum(layer.scores.numel() for layer in self.layers.values())
        self.positions = torch.arange(self.total, device=device)
        self.current: dict[str, torch.Tensor] = {}
        self.steps_done = 0
        self._flag_versions = None
        self._handle = None

    def set_steps_done(self, steps: int) -> None:
        """The number of pruning steps of the schedule already taken."""
        self.steps_done = steps
        self._flag_versions = None

    def install(self) -> None:
        """Register the pre-hook and every layer's score function."""
        model = self.model

        def hook(module, args):        # a plain function: deep copies of the model share it
            if module is model:
                if not _recording():   # flags loaded in place (resume) change the count;
                    self.refresh()     # never inside a recording (a fill would be replayed)
                self.current = self._compute()

        self._handle = model.register_forward_pre_hook(hook)
        for name, layer in self.layers.items():
            layer.score_fn = self._score_fn(name)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _score_fn(self, name: str):
        def score_fn(scores: torch.Tensor) -> torch.Tensor:
            return straight_through(scores, self.current[name].to(scores.dtype))
        return score_fn

    def next_keep(self) -> int:
        """Flagged weights after the next pruning step (all of them when none is left)."""
        active = sum(int(layer.mask.count_nonzero()) for layer in self.layers.values())
        done = self.steps_done
        if done >= self.schedule.steps:
            return active
        final = self.schedule.final_count(self.total)
        return active - step_removal(active, done + 1, self.schedule.steps,
                                     self.schedule.fraction, final)

    def refresh(self) -> None:
        """Recompute `keep` if the flags changed since the last call (host work)."""
        versions = tuple(layer.mask._version for layer in self.layers.values())
        if versions != self._flag_versions:
            self.keep.fill_(self.next_keep())
            self._flag_versions = versions

    def masks(self) -> dict[str, torch.Tensor]:
        """The current forward masks by layer name (0/1 in the scores' dtype), with `keep`
        refreshed first (host use, between epochs)."""
        self.refresh()
        return self._compute()

    @torch.no_grad()
    def _compute(self) -> dict[str, torch.Tensor]:
        """The masks for the current scores, flags and `keep` — tensor work only (it runs
        inside the training step, possibly recorded as a CUDA graph: no host reads and no
        host-side count updates here)."""
        keys = []
        for layer in self.layers.values():
            s = -layer.scores if self.invert else layer.scores
            keys.append(torch.where(layer.mask != 0, s, torch.full_like(s, float("-inf")))
                        .flatten())
        order = torch.sort(torch.cat(keys), descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(0, order, self.positions)
        kept = (rank < self.keep).to(keys[0].dtype)
        out, start = {}, 0
        for name, layer in self.layers.items():
            n = layer.scores.numel()
            out[name] = kept[start:start + n].view_as(layer.scores)
            start += n
        return out
