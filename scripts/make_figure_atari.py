"""Fig. 3 (Atari) from the committed results: average episode return against training frames, per game,
Leap's initialization against a random one (and any other method that was run), mean over seeds shaded by the
range over seeds.

    python scripts/make_figure_atari.py --scale small                 # reads results/atari/small/
    python scripts/make_figure_atari.py --scale small --collect runs  # first exports finished runs and makes the table

Writes results/atari/<scale>/figures/fig3.{png,pdf}; the table (fig3.md, with intervals) is
`scripts/make_table.py atari`, which this runs first with ``--collect``. Reads runs.csv and the per-run curves.
Returns are the unclipped game scores, as a moving average over the last `eval.window` (100) episodes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable without installing
from leapbench import tables  # noqa: E402
from leapbench.errors import script_main  # noqa: E402
from leapbench.rl.a2c import moving_average  # noqa: E402

SPEC = tables.SPECS["atari"]


def curves(base: Path, df) -> dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]:
    """Per (game, method): one moving-average curve per seed, for the runs in runs.csv."""
    out: dict[tuple[str, str], list] = {}
    for run_path in dict.fromkeys(df["run"]):
        run = base / run_path
        method = df.loc[df["run"] == run_path, "method"].iloc[0]
        window = int(_config(run).eval.window)
        for game, eps in json.loads((run / "curves.json").read_text()).get("episodes", {}).items():
            if eps:
                frames = [f for f, _ in eps]
                score = np.array(moving_average(eps, window, frames))
                out.setdefault((game, method), []).append((np.array(frames, dtype=float), score))
    return out


def _config(run: Path):
    return OmegaConf.load(run / "config.yaml")


def draw(base: Path, axes=None):
    """Fig. 3 in the paper's layout (one panel per test game); returns the figure."""
    df = tables.read_runs(base / "runs.csv")
    data, games = curves(base, df), list(dict.fromkeys(df["game"]))
    info = df.drop_duplicates("method").set_index("method")
    if axes is None:
        cols = min(3, len(games))
        fig, axes = plt.subplots(
            (len(games) + cols - 1) // cols,
            cols,
            figsize=(3.3 * cols, 2.6 * ((len(games) + cols - 1) // cols)),
            squeeze=False,
            constrained_layout=True,
        )
    axes = np.asarray(axes).ravel()
    heldout = {g for run in dict.fromkeys(df["run"]) for g in _config(base / run).data.heldout}
    for ax, game in zip(axes, games):
        for m in tables.method_order(df, SPEC, base.parents[1]):
            runs = data.get((game, m))
            if not runs:
                continue
            grid = np.linspace(max(f[0] for f, _ in runs), min(f[-1] for f, _ in runs), 200)  # every seed has a value
            ys = np.array([np.interp(grid, f, y) for f, y in runs])
            mean = ys.mean(axis=0)
            color, label = info.loc[m, "color"], info.loc[m, "label"]
            ax.plot(
                grid,
                mean,
                color=color,
                marker="o" if grid[0] == grid[-1] else None,
                label=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})",
            )
            if len(runs) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=color, alpha=0.2, lw=0)
        ax.set_title(f"{game}{' (held out)' if game in heldout else ''}", fontsize=9)
        ax.set_xlabel("frames", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(games) :]:
        ax.axis("off")
    axes[0].set_ylabel("average return (100 episodes)", fontsize=8)
    axes[0].legend(fontsize=7)
    return axes[0].figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="small")
    p.add_argument(
        "--collect", metavar="RUNS", help="export finished runs from this runs folder (and make the table) first"
    )
    p.add_argument("--results", default=str(ROOT / "results"), help="results folder")
    args = p.parse_args()
    matplotlib.use("Agg")
    base = Path(args.results) / "atari" / args.scale
    if args.collect:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "make_table.py"),
                "atari",
                "--scale",
                args.scale,
                "--collect",
                args.collect,
                "--results",
                args.results,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not (base / "runs.csv").exists():
        sys.exit(f"{base / 'runs.csv'} is missing; run scripts/make_table.py atari --scale {args.scale} first.")
    fig = draw(base)
    (base / "figures").mkdir(exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(base / "figures" / f"fig3.{ext}", dpi=150, metadata=tables.STABLE_METADATA[ext])
    print(base / "figures" / "fig3.png")


if __name__ == "__main__":
    script_main(main)
