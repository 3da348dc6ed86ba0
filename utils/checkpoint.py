"""Atomic file writes and safe checkpoint loading.

Every file is written to a temporary name in the same folder and renamed into place, so a
crash (even SIGKILL) leaves either the old or the new file, never half of one (a killed
process can leave the temporary `.<name>.*.tmp`; the next start of the run removes it).
Ctrl-C and SIGTERM wait for a write to finish (`utils.interrupts`).  A full disk raises
`DiskFullError` naming the file.  Checkpoints are loaded with
`torch.load(..., weights_only=True)`: they hold only tensors and plain data; a missing or
unreadable file raises `DamagedFileError` naming it.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import tempfile
import zipfile

import torch

from utils.errors import DamagedFileError, DiskFullError
from utils.interrupts import deferred

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Writer:
    """A file handle that remembers the OSError of a failed write (torch.save reports a
    failed write as a RuntimeError about the zip position, losing the reason)."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    with deferred():
        os.makedirs(folder, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                       suffix=TEMP_SUFFIX, dir=folder)
        except OSError as exc:
            raise _disk_full(exc, path) from None
        writer = None
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as handle:
                writer = _Writer(handle)
                write(writer)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if os.path.exists(tmp):
                os.remove(tmp)
            cause = writer.error if writer is not None and writer.error is not None else exc
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(path) from None
            raise


def _disk_full(exc: OSError, path: str) -> OSError:
    return DiskFullError(path) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc


def save_checkpoint(obj, path: str) -> None:
    """torch.save `obj` to `path` atomically."""
    _atomic(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(path: str, map_location="cpu"):
    """Load a checkpoint written by this project (or any weights-only torch file);
    DamagedFileError (naming the problem) when it is missing or unreadable."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DamagedFileError(path, "missing") from None
    except IsADirectoryError:
        raise DamagedFileError(path, "a directory, not a checkpoint file") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EIO):
            raise DamagedFileError(path, f"unreadable ({exc.strerror})") from None
        # torch's reader seeking past the end of a cut file
        raise DamagedFileError(path, f"not a complete PyTorch checkpoint (truncated or "
                                     f"overwritten: {exc.strerror or exc})") from None
    except EOFError:
        raise DamagedFileError(path, "empty or cut short") from None
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            KeyError, TypeError, AttributeError, ImportError, IndexError,
            UnicodeDecodeError) as exc:
        raise DamagedFileError(path, _load_problem(exc)) from None


def _load_problem(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    if "Weights only load failed" in str(exc) or "weights_only" in str(exc):
        return ("not a checkpoint of tensors and plain data (weights-only loading refused "
                "its content)")
    if "zip archive" in first or "central directory" in first:
        return f"not a complete PyTorch checkpoint (truncated or overwritten: {first})"
    return f"not a PyTorch checkpoint ({type(exc).__name__}: {first})"


def write_text(path: str, text: str) -> None:
    """Write a text file atomically."""
    _atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: str, obj) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def is_temp_file(name: str) -> bool:
    """Whether `name` is the temporary of an atomic write (`.<file>.<random>.tmp`)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)
