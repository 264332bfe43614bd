"""A run's identity, its folder and its lock: when two configs are the same run, whether a finished run may be
reused, and how a run folder is claimed and (re)started. Resume itself is ``checkpoint.load`` on this folder."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from . import checkpoint
from .errors import ConfigError, LeapError, write_error
from .logging import atomic_open

# Keys that do not change what a run computes: a finished run with only these changed is the same run.
NON_RESULT_KEYS = ("progress", "overwrite", "threads", "device", "logger", "paths", "cell", "run_name", "batched")
# Train keys that say how to survive faults, not what to compute (a run that finished computed the same either way).
NON_RESULT_TRAIN_KEYS = ("ckpt_every", "on_divergence")
# Method keys for tables and figures only: not passed to the method's class, never part of a run's identity.
PRESENTATION_KEYS = ("label", "color")
# Keys added after runs were recorded: at these defaults they leave a run's identity as it was.
ADDED_DEFAULTS = {
    ("method", "batched"): False,
    ("method", "cuda_graphs"): True,
    ("eval", "batched"): False,
    ("val", "batched"): False,
    ("train", "test_at"): [],
    ("inner", "patience"): None,
    ("inner", "check_every"): 20,
    ("eval", "stop_on"): "heldout",
    ("eval", "val_per_class"): 3,
}
LOCK = ".lock"


def upgrade(config: dict) -> dict:
    """A config recorded by an earlier version, in today's keys, for the same computation (a copy).

    ``data.seed`` (the legacy split's seed) became ``data.split_seed``; Multi-CV stopped on validation images
    before ``eval.stop_on`` existed (``val`` is ``eval`` there).
    """
    c = copy.deepcopy(config)
    data = c.get("data")
    if isinstance(data, dict) and "seed" in data:
        seed = data.pop("seed")
        if data.get("legacy_split"):
            data["split_seed"] = seed
    if c.get("experiment_name") == "multicv":
        for group in ("eval", "val"):
            if isinstance(c.get(group), dict):
                c[group].setdefault("stop_on", "val")
    return c


def result_config(config: DictConfig | dict) -> dict:
    """The resolved config without the keys that only say where things are (they never change results)."""
    c = cast(dict, OmegaConf.to_container(config, resolve=True)) if isinstance(config, DictConfig) else dict(config)
    c = upgrade(c)
    c = {k: v for k, v in c.items() if k not in NON_RESULT_KEYS and k != "run_dir"}
    if isinstance(c.get("data"), dict):
        c["data"] = {k: v for k, v in c["data"].items() if k not in ("root", "cache_dir", "download")}
    if isinstance(c.get("train"), dict):
        c["train"] = {k: v for k, v in c["train"].items() if k not in NON_RESULT_TRAIN_KEYS}
    if isinstance(c.get("method"), dict):
        c["method"] = {k: v for k, v in c["method"].items() if k not in PRESENTATION_KEYS}
    defaults = ADDED_DEFAULTS | (
        {("eval", "stop_on"): "val", ("val", "stop_on"): "val"} if c.get("experiment_name") == "multicv" else {}
    )
    for (group, key), default in defaults.items():
        if isinstance(c.get(group), dict) and key in c[group] and c[group][key] == default:
            c[group] = {k: v for k, v in c[group].items() if k != key}
    return c


def finished_run(cfg: DictConfig, refuse: bool = True) -> dict | None:
    """The summary of a finished run with this config in ``run_dir``, if any; refuse to clobber a different one
    (``refuse=False``: None for a different one)."""
    run_dir = Path(cfg.run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    if cfg.overwrite or not summary_path.exists():
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{summary_path} is not valid JSON ({e}); move it away, or set overwrite=true to run again."
        ) from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path} holds no run summary; move it away, or set overwrite=true to run again.")
    if summary.get("status") != "finished":
        return None  # crashed or interrupted: run again
    old: object = None
    if config_path.exists():
        try:
            old = OmegaConf.to_container(OmegaConf.load(config_path))
        except Exception:  # noqa: BLE001 - unreadable YAML of any kind: refused just below
            pass
        if not isinstance(old, dict) or not old:
            raise ConfigError(
                f"{config_path} of a finished run is unreadable or empty; restore it, or set overwrite=true to run "
                "again."
            )
    if isinstance(old, dict) and result_config(old) == result_config(cfg):
        return summary
    if not refuse:
        return None
    raise ConfigError(
        f"{run_dir} holds a finished run with a different config. Set tag=<name> to keep both, "
        "or overwrite=true to replace it."
    )


class RunsFolderCheck(Callback):
    """Hydra callback: fail with one message, exit 2, when ``paths.runs`` cannot be written.

    A multirun's sweeper writes ``multirun.yaml`` there before any job starts, so an unwritable runs folder
    would otherwise surface as Hydra's traceback. The folder itself is not created here: the nearest folder
    that exists is probed (and left as it was).
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        runs = runs_folder(config)
        if runs is None:
            return  # not a path at all, or one that does not resolve: the schema refuses it (checks.validate)
        try:
            folder = next(p for p in (runs, *runs.parents) if p.exists())
            if not folder.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(folder))
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")  # unique: ranks check at once
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            print(f"error: {write_error(runs, e)}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if launcher.endswith("SlurmLauncher") and not (shutil.which("srun") and shutil.which("sbatch")):
            print(
                "error: launcher=slurm submits jobs through SLURM (sbatch, srun), which this machine does not have; "
                "sweep from the cluster's login node, or use launcher=joblib or launcher=submitit_local here.",
                file=sys.stderr,
            )
            sys.exit(2)
        self.on_run_start(config)
        remember_sweep_folder(runs_folder(config))


def runs_folder(config: DictConfig) -> Path | None:
    value = OmegaConf.select(config, "paths.runs", throw_on_resolution_failure=False)
    return Path(value).absolute() if isinstance(value, str) else None


SWEEP_MANIFEST = "multirun.yaml"  # what Hydra's sweeper writes into paths.runs before any job starts
_sweep_folder: tuple[Path, Path, dict[str, int], tuple[bytes, os.stat_result] | None] | None = None


def remember_sweep_folder(runs: Path | None) -> None:
    """Note what ``runs`` holds before a multirun, for :func:`restore_sweep_folder`."""
    global _sweep_folder
    if runs is None:
        return
    existing = next(p for p in (runs, *runs.parents) if p.exists())
    manifest = runs / SWEEP_MANIFEST
    old = (manifest.read_bytes(), manifest.stat()) if manifest.is_file() else None
    _sweep_folder = (runs, existing, entries(runs), old)


def entries(folder: Path) -> dict[str, int]:
    """The folder's entries but the sweep manifest, and the modification time of every folder below it (a job that
    writes anywhere, even into an existing run folder, changes one); empty if the folder does not exist."""
    if not folder.is_dir():
        return {}
    seen = {e.name: 0 for e in os.scandir(folder) if e.name != SWEEP_MANIFEST}
    for sub, _, _ in os.walk(folder):
        if sub != str(folder):
            seen[sub] = os.stat(sub).st_mtime_ns
    return seen


def restore_sweep_folder() -> None:
    """After a failed multirun in which no job wrote anything (each was refused), leave ``paths.runs`` as it was:
    the sweeper's ``multirun.yaml`` removed (or its earlier content back), and the folders made for it removed."""
    if _sweep_folder is None:
        return
    runs, existing, before, old = _sweep_folder
    try:
        if entries(runs) != before:
            return  # a job wrote there: the manifest records the sweep that did it
        manifest = runs / SWEEP_MANIFEST
        if old is not None:
            content, stat = old
            with atomic_open(manifest, "wb") as f:
                f.write(content)
            os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            return
        manifest.unlink(missing_ok=True)
        for folder in (runs, *runs.parents):
            if folder == existing:
                break
            folder.rmdir()
    except (OSError, LeapError):
        pass  # best effort: the refusal itself is already printed


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` and hold an exclusive lock on it while this job works there.

    A second job aimed at the same directory fails at once instead of interleaving files. The kernel drops
    the lock when the process dies (even by SIGKILL), so a preempted run never leaves a stale lock.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")
    except OSError as e:
        raise write_error(run_dir, e) from e
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise ConfigError(
            f"{run_dir} is in use by {owner}. Two jobs get one directory when they differ only in keys that the "
            "run name omits: give each its own tag=<name>, or wait for the other job to finish."
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        for stale in run_dir.glob(".*.tmp"):  # a write cut off by SIGKILL (atomic_open): never a result
            stale.unlink(missing_ok=True)
        yield
    finally:
        f.close()  # releases the lock


def start_run_dir(cfg: DictConfig, resuming: bool) -> None:
    """Clear a replaced run's files (all but the metrics when resuming) and save the config."""
    run_dir = Path(cfg.run_dir)
    stale = ["summary.json", "eval_test.json", "init.pt"] + ([] if resuming else ["metrics.jsonl", checkpoint.NAME])
    try:
        for name in stale:
            (run_dir / name).unlink(missing_ok=True)
        with atomic_open(run_dir / "config.yaml") as f:
            OmegaConf.save(cfg, f, resolve=True)
    except OSError as e:
        raise write_error(run_dir, e) from e
