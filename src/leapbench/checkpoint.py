"""Checkpoints: the whole run state in one file, written atomically, so a killed run resumes exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .errors import ConfigError
from .logging import atomic_open

NAME = "ckpt.pt"


def config_hash(result_config: dict) -> str:
    """A fingerprint of everything that changes what a run computes."""
    return hashlib.sha256(json.dumps(result_config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(run_dir: Path, state: dict, name: str = NAME) -> None:
    """Write ``state`` to ``run_dir/name`` atomically (temporary file, fsync, rename)."""
    with atomic_open(run_dir / name, "wb") as f:
        torch.save(state, f)


def load(run_dir: Path, expected_hash: str) -> dict | None:
    """The checkpoint in ``run_dir`` if there is one; refuse one written by a different config."""
    path = run_dir / NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ConfigError(
            f"Checkpoint {path} is unreadable ({type(e).__name__}: {e}). Delete it to start "
            "the run afresh, or pass overwrite=true."
        ) from e
    if state.get("config_hash") != expected_hash:
        raise ConfigError(
            f"Checkpoint {path} was written by a different config. Use the original config to "
            "resume it, set tag=<name> to start a separate run, or pass overwrite=true to discard it."
        )
    return state
