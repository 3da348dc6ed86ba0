"""Progress a researcher can read from the log: the whole run's epochs with an ETA (added to
every epoch line), and periodic lines for long steps that train nothing (interpolation,
Hessian, landscape slices)."""
from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """12s, 4m05s, 2h13m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunProgress:
    """Epochs done out of the run's planned total (all phases, levels, controls); the ETA
    extrapolates this attempt's wall-clock pace per epoch (analyses and checkpointing
    between epochs included)."""

    def __init__(self, total: int | None, done: int = 0, clock=time.monotonic):
        self.total = total
        self.done = done
        self._clock = clock
        self._start = clock()
        self._start_done = done

    def epoch_done(self) -> None:
        self.done += 1

    def eta_seconds(self) -> float | None:
        """Seconds left at this attempt's pace; None before an epoch was timed."""
        timed = self.done - self._start_done
        if not self.total or timed <= 0:
            return None
        pace = (self._clock() - self._start) / timed
        return max(self.total - self.done, 0) * pace

    def text(self) -> str:
        """`run 37/280 epochs (13 %), ETA 4m12s` (without a planned total: `run epoch 37`)."""
        if not self.total:
            return f"run epoch {self.done}"
        done = min(self.done, self.total)
        eta = self.eta_seconds()
        tail = "" if eta is None else f", ETA {duration(eta)}"
        return f"run {done}/{self.total} epochs ({100.0 * done / self.total:.0f} %){tail}"


class Ticker:
    """Progress of a long step in `total` units (points, pairs, eigenvalues): silent while it
    is short; once it has run `every` seconds, a log line then and every `every` seconds
    (`label: 7/11 points, 40s, ETA 23s`), and a last line with the time it took."""

    def __init__(self, logger, label: str, total: int, unit: str = "", every: float = 20.0,
                 clock=time.monotonic):
        self.logger, self.label, self.total, self.unit = logger, label, total, unit
        self.every, self._clock = every, clock
        self.count = 0
        self._start = clock()
        self._next = self._start + every
        self._spoke = False

    def tick(self, count: int = 1) -> None:
        self.count += count
        now = self._clock()
        if now >= self._next and self.count < self.total:
            elapsed = now - self._start
            eta = elapsed / self.count * (self.total - self.count)
            unit = f" {self.unit}" if self.unit else ""
            self.logger.info(f"{self.label}: {self.count}/{self.total}{unit}, "
                             f"{duration(elapsed)}, ETA {duration(eta)}")
            self._spoke = True
            self._next = now + self.every

    def done(self) -> None:
        if self._spoke:
            self.logger.info(f"{self.label}: done in {duration(self._clock() - self._start)}")
