"""Exceptions that main.py turns into one-line messages and exit codes."""


class UsageError(Exception):
    """A bad config, option, file or dataset: exit 2, one line, nothing written."""


class ConfigError(UsageError):
    """A config value or command-line option is wrong."""


class DataError(UsageError):
    """Dataset files are missing or malformed."""


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
