"""Exceptions that main.py turns into one-line messages and exit codes."""


class UsageError(Exception):
    """A bad config, option, file or dataset: exit 2, one line, nothing written."""


class ConfigError(UsageError):
    """A config value or command-line option is wrong."""


class DataError(UsageError):
    """Dataset files are missing or malformed."""


class Diverged(Exception):
    """The training loss became non-finite: the phase stops, the run ends with status
    "diverged" (exit 3) and keeps what it recorded before."""

    def __init__(self, phase_key: str, epoch: int, loss: float, run_dir: str | None = None):
        self.phase_key, self.epoch, self.loss, self.run_dir = phase_key, epoch, loss, run_dir
        super().__init__(f"the training loss became {loss} in phase {phase_key}, epoch "
                         f"{epoch}")

    def record(self) -> dict:
        """What summary.json records about the divergence."""
        return {"phase": self.phase_key, "epoch": self.epoch, "loss": str(self.loss)}


class DamagedFileError(RuntimeError):
    """A file a run needs is missing or unreadable (found during a run: exit 1, one line
    naming the file, partial results kept).  `str()` is the problem alone, `path` the file."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path = path
        self.problem = problem


class DiskFullError(OSError):
    """No space left on the device while writing `path` (exit 1, partial results kept)."""

    def __init__(self, path: str):
        import errno

        super().__init__(errno.ENOSPC, "no space left on the device", path)
        self.path = path


class DataMissing(DataError):
    """A dataset's files are not there at all (a dry run can still plan with its published
    split sizes)."""
