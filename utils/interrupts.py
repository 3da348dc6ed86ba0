"""Ctrl-C and SIGTERM that wait for a file write to finish.

Inside `deferred()` a SIGINT or SIGTERM is only noted; when the block ends the signal's own
handler runs (for Ctrl-C: KeyboardInterrupt), so a stop never leaves half of a checkpoint
behind or breaks the writer mid-file.  Only the main thread can handle signals; elsewhere the
block runs unchanged.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: dict = {"depth": 0, "handlers": {}, "pending": []}


def _note(signum, frame) -> None:
    _held["pending"].append(signum)


@contextlib.contextmanager
def deferred():
    """Hold SIGINT / SIGTERM while the block runs, then deliver the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _held["depth"] == 0:
        _held["handlers"] = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        _held["pending"] = []
        for s in STOP_SIGNALS:
            signal.signal(s, _note)
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if _held["depth"] == 0:
            for s, handler in _held["handlers"].items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
            if _held["pending"]:
                _deliver(_held["pending"][0], _held["handlers"].get(_held["pending"][0]))


def _deliver(signum: int, handler) -> None:
    """Act on a held signal as its handler would have when it arrived."""
    _held["pending"] = []
    if handler is signal.SIG_IGN:
        return
    if callable(handler):
        handler(signum, None)
        return
    os.kill(os.getpid(), signum)      # default action (e.g. SIGTERM terminates)
