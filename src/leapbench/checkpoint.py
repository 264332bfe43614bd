"""Checkpoints: the whole run state in one file, written atomically, so a killed run resumes exactly."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import ConfigError

NAME = "ckpt.pt"


def config_hash(result_config: dict) -> str:
    """A fingerprint of everything that changes what a run computes."""
    return hashlib.sha256(json.dumps(result_config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(run_dir: Path, state: dict, name: str = NAME) -> None:
    """Write ``state`` to ``run_dir/name`` atomically (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(run_dir: Path, expected_hash: str) -> dict | None:
    """The checkpoint in ``run_dir`` if there is one; refuse one written by a different config."""
    path = run_dir / NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ConfigError(f"Checkpoint {path} is unreadable ({type(e).__name__}: {e}). Delete it to start "
                          "the run afresh, or pass overwrite=true.") from e
    if state.get("config_hash") != expected_hash:
        raise ConfigError(f"Checkpoint {path} was written by a different config. Use the original config to "
                          "resume it, set tag=<name> to start a separate run, or pass overwrite=true to discard it.")
    return state
