"""Committed results: export finished runs into ``results/`` and read them back for tables and figures.

An exported run is a folder with ``summary.json`` (scores and provenance: command, commit, seed),
``config.yaml`` (the resolved config, with this machine's paths replaced by their defaults) and
``curves.json`` (validation curves by meta-step, the mean test curve and the meta-training loss; for Atari
also every test episode's frames and score).
Nothing here needs W&B or the network.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from .logging import write_json


def portable_config(run_dir: Path) -> str:
    """The run's config with paths replaced by their defaults (paths never change results)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.paths = {
        "data": "${oc.env:LEAP_DATA_DIR,data}",
        "runs": "${oc.env:LEAP_RUNS_DIR,runs}",
        "cache": "${oc.env:LEAP_CACHE_DIR,.cache}",
    }
    if "root" in cast(DictConfig, cfg).get("data", {}):
        cfg.data.root = "${paths.data}"
    if "cache_dir" in cast(DictConfig, cfg).get("data", {}):
        cfg.data.cache_dir = "${paths.cache}"
    cfg.run_dir = "${paths.runs}/${run_name}"
    return OmegaConf.to_yaml(cfg)


def export_run(run_dir: Path, dest: Path) -> dict | None:
    """Copy a finished run's summary, portable config and curves to ``dest``; None if it is not finished."""
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "finished":
        return None
    summary["command"] = " ".join(w for w in summary["command"].split() if not w.startswith("paths."))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = {
        "val": {str(r["meta_step"]): r["curve"] for r in rows if r["split"] == "val"},
        "test": next((r["curve"] for r in rows if r["split"] == "test"), []),
        "train": [[r["meta_step"], r["loss"], r["error"]] for r in rows if r["split"] == "train"],
    }
    evaluation = run_dir / "eval_test.json"
    tasks = json.loads(evaluation.read_text())["tasks"] if evaluation.exists() else []
    if tasks and "episodes" in tasks[0]:  # Atari: every episode's (frames, score) per test game, for Fig. 3
        curves["episodes"] = {t["name"]: t["episodes"] for t in tasks}
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / "summary.json", summary)
    write_json(dest / "curves.json", curves)
    (dest / "config.yaml").write_text(portable_config(run_dir))
    return summary


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def format_interval(values, digits: int = 1) -> str:
    """``+m [+lo, +hi]`` (``+m`` alone for one value)."""
    from .tables import interval

    r = interval(values)
    m, lo, hi = r["diff_mean"], r["t_low"], r["t_high"]
    return f"{m:+.{digits}f}" if len(values) < 2 else f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
