"""Errors that carry a message for the user; ``cli.main`` prints them and exits non-zero."""


class LeapError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(LeapError):
    """An invalid configuration value."""


class DataError(LeapError):
    """A missing or unreadable dataset."""


class WriteError(LeapError):
    """A file could not be written (disk full, read-only folder); nothing already written was replaced."""


def write_error(path, e: OSError) -> WriteError:
    """The one message for a failed write: what failed, and how to go on without losing anything."""
    return WriteError(
        f"Could not write {path} ({e.strerror or e}). Free disk space or make the folder writable (or point "
        "paths.runs / LEAP_RUNS_DIR elsewhere), then run the same command again: a run resumes from its last "
        "checkpoint, and files written before the failure are unchanged."
    )
