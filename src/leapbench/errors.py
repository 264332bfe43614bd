"""Errors that carry a message for the user; ``cli.main`` prints them and exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


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


def script_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: its own refusals (``sys.exit("...")``) and an unreadable or malformed input file
    become one ``error: ...`` line and exit 2, without a traceback (``LEAP_DEBUG=1`` shows it)."""
    try:
        main()
        return
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        message = e.code.removeprefix("error: ")
    except (LeapError, OSError, ValueError, KeyError, TypeError, subprocess.CalledProcessError) as e:
        if os.environ.get("LEAP_DEBUG") == "1":
            raise
        message = (
            f"{e}" if isinstance(e, LeapError) else f"{type(e).__name__}: {e} (an input file is missing or malformed)"
        )
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
