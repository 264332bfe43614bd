"""Committed results: export finished runs into ``results/`` and read them back for tables and figures.

An exported run is a folder with ``summary.json`` (scores and provenance: command, commit, seed),
``config.yaml`` (the resolved config, with this machine's paths replaced by their defaults) and
``curves.json`` (validation curves by meta-step, the mean test curve and the meta-training loss; for Atari
also every test episode's frames and score).
Nothing here needs W&B or the network.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from .logging import write_json


def portable_config(run_dir: Path) -> str:
    """The run's config with paths replaced by their defaults (paths never change results)."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.paths = {"data": "${oc.env:LEAP_DATA_DIR,data}", "runs": "${oc.env:LEAP_RUNS_DIR,runs}",
                 "cache": "${oc.env:LEAP_CACHE_DIR,.cache}"}
    if "root" in cfg.get("data", {}):
        cfg.data.root = "${paths.data}"
    if "cache_dir" in cfg.get("data", {}):
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


def load_summaries(root: Path) -> list[dict]:
    """Every exported ``summary.json`` under ``root``, with ``path`` set to its folder."""
    out = []
    for p in sorted(root.rglob("summary.json")):
        s = json.loads(p.read_text())
        if s.get("status") == "finished":
            out.append(s | {"path": str(p.parent)})
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def t_interval(values) -> tuple[float, float, float]:
    """Mean and its 95 % Student-t interval ``(mean, low, high)``; the interval is the mean alone for one value."""
    import numpy as np
    from scipy import stats

    d = np.asarray(values, dtype=float)
    if len(d) < 2:
        return float(d.mean()), float(d.mean()), float(d.mean())
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def format_interval(values, digits: int = 1) -> str:
    """``+m [+lo, +hi]`` (``+m`` alone for one value)."""
    m, lo, hi = t_interval(values)
    return f"{m:+.{digits}f}" if len(values) < 2 else f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def script_summaries(doc: str, experiment: str, collect: Callable[[Path, Path, str], int], default_results: Path):
    """The command line shared by the table and figure scripts: ``--scale``, ``--collect RUNS``, ``--results``.

    Exports finished runs first when asked, then returns ``(args, base, summaries)`` with ``base`` =
    ``<results>/<experiment>/<scale>``; exits with a message when there is nothing to read.
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="small")
    p.add_argument("--collect", metavar="RUNS", help="export finished runs from this runs folder first")
    p.add_argument("--results", default=str(default_results), help="results folder")
    args = p.parse_args()
    base = Path(args.results) / experiment / args.scale
    if args.collect:
        print(f"exported {collect(Path(args.collect), base, args.scale)} finished runs", file=sys.stderr)
    summaries = [s for s in load_summaries(base / "runs") if s.get("experiment") == experiment]
    if not summaries:
        sys.exit(f"No finished {experiment} runs under {base / 'runs'}; run the sweep, then pass --collect runs.")
    return args, base, summaries
