"""Exceptions that main.py turns into one-line messages and exit codes."""


class UsageError(Exception):
    """A bad config, option, file or dataset: exit 2, one line, nothing written."""


class ConfigError(UsageError):
    """A config value or command-line option is wrong."""


class DataError(UsageError):
    """Dataset files are missing or malformed."""


class DataMissing(DataError):
    """A dataset's files are not there at all (a dry run can still plan with its published
    split sizes)."""
