"""Benchmarks as lists of tasks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def undone_on_failure(root: Path) -> Iterator[None]:
    """Create ``root`` for a download; if the download fails, remove what it made: new entries under ``root``,
    and ``root`` with any parent folders created for it (a refused run leaves the disk as it was)."""
    made = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    before = set(root.iterdir()) if root.is_dir() else set()
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for entry in set(root.iterdir()) - before:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                os.rmdir(folder)
        raise
