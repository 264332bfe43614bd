"""Benchmarks as lists of tasks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def undone_on_failure(root: Path, own: Path | None = None) -> Iterator[None]:
    """Create ``root`` for a download into ``own`` (the dataset's own folder; default ``root``). If the download
    fails, remove ``own`` when this call created it, then the folders made for ``root`` that are left empty:
    nothing that was there before is touched. (Two jobs that both create ``own`` at once share it: the one that
    fails removes it.)"""
    own = own or root
    made = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    fresh = not own.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(own, ignore_errors=True)
        for folder in made:
            with suppress(OSError):  # not empty, or gone already
                folder.rmdir()
        raise
