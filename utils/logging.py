"""What a run records: printed lines (mirrored into log.txt), TensorBoard events and the
metrics.csv table."""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time

from utils.checkpoint import write_text

METRIC_COLUMNS = ("phase", "level", "epoch", "step", "lr", "train_loss", "train_acc",
                  "val_acc", "test_acc", "density_pct", "sparsity_pct", "seconds")


class RunLogger:
    """Prints lines and appends them, time-stamped, to <run>/log.txt once a run directory is
    attached (lines printed before that are kept and written then, with the time they were
    printed); owns the TensorBoard writers: the run's own (in the run directory) and one per
    phase (`phases/<key>/`, see utils/board.py), of which one is open at a time."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._pending: list[tuple[float, str]] = []
        self._log = None
        self.run_dir: str | None = None
        self.tb = None
        self._phase_key: str | None = None
        self._phase_tb = None
        self.phase_state: dict = {}     # what utils/board.py remembers about the open phase

    def attach(self, run_dir: str, purge_step: int | None = None) -> None:
        """Start writing log.txt and TensorBoard events in `run_dir` (events at or after
        `purge_step` from an interrupted earlier attempt are discarded)."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self._log = open(os.path.join(run_dir, "log.txt"), "a", encoding="utf-8")
        for when, line in self._pending:
            self._log.write(_stamped(when, line))
        self._pending.clear()
        self._log.flush()
        self.tb = SummaryWriter(log_dir=run_dir, purge_step=purge_step)

    def info(self, message: str = "") -> None:
        print(message, file=self.stream, flush=True)
        now = time.time()
        for line in message.splitlines() or [""]:
            if self._log is None:
                self._pending.append((now, line))
            else:
                self._log.write(_stamped(now, line))
        if self._log is not None:
            self._log.flush()

    def phase_writer(self, key: str, purge_step: int | None = None):
        """The TensorBoard writer of phase `key` (`<run>/phases/<key>/`), opened on first use
        (`purge_step`: as for `attach`); opening another phase's closes the previous one.
        None before a run directory is attached (and on torchrun ranks other than 0)."""
        if self.tb is None:
            return None
        if key != self._phase_key:
            from torch.utils.tensorboard import SummaryWriter

            self.close_phase()
            self._phase_tb = SummaryWriter(log_dir=os.path.join(self.run_dir, PHASES_DIR, key),
                                           purge_step=purge_step)
            self._phase_key = key
        return self._phase_tb

    def close_phase(self) -> None:
        """Flush and close the open phase writer (if any)."""
        if self._phase_tb is not None:
            self._phase_tb.close()
        self._phase_tb, self._phase_key = None, None
        self.phase_state = {}

    def scalars(self, values: dict, step: int, writer=None) -> None:
        """Finite values as scalars at `step`, in the run's events (or `writer`'s)."""
        writer = self.tb if writer is None else writer
        if writer is None:
            return
        for tag, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values, step: int, writer=None) -> None:
        writer = self.tb if writer is None else writer
        if writer is not None and values.numel():
            writer.add_histogram(tag, values, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """A text panel (markdown) in the run's events."""
        if self.tb is not None:
            self.tb.add_text(tag, text, step)

    def figure(self, tag: str, figure, step: int = 0) -> None:
        """A matplotlib figure as an image in the run's events (the figure is closed)."""
        if self.tb is not None:
            self.tb.add_figure(tag, figure, step, close=True)

    def hparams(self, hparams: dict, metrics: dict, experiment: tuple | None = None) -> None:
        """Record the run's hyper-parameters and final metrics for TensorBoard's HPARAMS tab.
        `experiment` = (example hparams, metric names): the columns every run declares (the
        tab shows one run's declaration for all runs, so all runs should declare the same);
        default: this run's own."""
        if self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: (v if v is None or isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in hparams.items()}
        finite = {k: v for k, v in metrics.items()
                  if isinstance(v, (int, float)) and math.isfinite(v)}
        declared, start, end = hparams_summary(clean, finite)
        if experiment is not None:
            declared = hparams_summary(experiment[0], {m: 0.0 for m in experiment[1]})[0]
        for summary in (declared, start, end):
            self.tb.file_writer.add_summary(summary)
        self.scalars(finite, 0)

    def close(self) -> None:
        self.close_phase()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self._log is not None:
            self._log.close()
            self._log = None


PHASES_DIR = "phases"


def _stamped(when: float, line: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + "  " + line + "\n"


def format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_metrics_csv(path: str, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically from the run's rows (one per evaluated epoch)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in rows:
        writer.writerow([format_cell(row.get(col)) for col in METRIC_COLUMNS])
    write_text(path, buffer.getvalue())


def write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    """Write a small CSV table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(col)) for col in columns])
    write_text(path, buffer.getvalue())
