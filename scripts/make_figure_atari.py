"""Fig. 3 (Atari) from the committed results: average episode return against training frames, per game,
Leap's initialization against a random one (and Reptile's where it was run).

    python scripts/make_figure_atari.py --scale small                 # reads results/atari/small/runs/
    python scripts/make_figure_atari.py --scale small --collect runs  # first exports finished runs from runs/

Writes results/atari/<scale>/{fig3.csv,fig3.md} and figures/fig3.{png,pdf}. Reads local files only.
Returns are the unclipped game scores, as a moving average over the last `eval.window` (100) episodes.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.results import export_run, load_summaries, mean_std, script_summaries  # noqa: E402
from leapbench.rl.a2c import moving_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["scratch", "leap", "reptile"]
LABELS = {"scratch": "Random init", "leap": "Leap", "reptile": "Reptile"}
COLORS = {"scratch": "tab:blue", "leap": "tab:orange", "reptile": "tab:green"}  # the paper: blue, orange


def collect(runs: Path, out: Path, scale: str) -> int:
    """Export finished untagged runs ``runs/atari/<method>/<scale>/fig3-s<seed>`` into ``out/runs``."""
    n = 0
    for run_dir in sorted(runs.glob(f"atari/*/{scale}/fig3-s*")):
        if run_dir.name[len("fig3-s"):].isdigit():  # tagged variants are not Fig. 3 curves
            n += export_run(run_dir, out / "runs" / run_dir.parent.parent.name / run_dir.name) is not None
    return n


def curves(base: Path) -> dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]:
    """Per (game, method): one moving-average curve per seed."""
    out: dict[tuple[str, str], list] = {}
    for s in load_summaries(base / "runs"):
        if s.get("experiment") != "atari":
            continue
        run = Path(s["path"])
        window = int(_config(run).eval.window)
        for game, eps in json.loads((run / "curves.json").read_text()).get("episodes", {}).items():
            if eps:
                frames = [f for f, _ in eps]
                score = np.array(moving_average(eps, window, frames))
                out.setdefault((game, s["method"]), []).append((np.array(frames, dtype=float), score))
    return out


def _config(run: Path):
    return OmegaConf.load(run / "config.yaml")


def games_in_order(summaries: list[dict]) -> list[str]:
    order: list[str] = []
    for s in summaries:
        order += [g for g in s["test"]["tasks"] if g not in order]
    return order


def draw(base: Path, axes=None):
    """Fig. 3 in the paper's layout (one panel per test game); returns the figure."""
    summaries = [s for s in load_summaries(base / "runs") if s.get("experiment") == "atari"]
    data, games = curves(base), games_in_order(summaries)
    if axes is None:
        cols = min(3, len(games))
        fig, axes = plt.subplots((len(games) + cols - 1) // cols, cols, figsize=(3.3 * cols, 2.6 * ((len(games) + cols - 1) // cols)),
                                 squeeze=False, constrained_layout=True)
    axes = np.asarray(axes).ravel()
    heldout = {g for s in summaries for g in _config(Path(s["path"])).data.heldout}
    for ax, game in zip(axes, games):
        for m in METHODS:
            runs = data.get((game, m))
            if not runs:
                continue
            grid = np.linspace(max(f[0] for f, _ in runs), min(f[-1] for f, _ in runs), 200)  # every seed has a value
            ys = np.array([np.interp(grid, f, y) for f, y in runs])
            mean = ys.mean(axis=0)
            ax.plot(grid, mean, color=COLORS[m], marker="o" if grid[0] == grid[-1] else None, label=f"{LABELS[m]} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
            if len(runs) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=COLORS[m], alpha=0.2, lw=0)
        ax.set_title(f"{game}{' (held out)' if game in heldout else ''}", fontsize=9)
        ax.set_xlabel("frames", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(games):]:
        ax.axis("off")
    axes[0].set_ylabel("average return (100 episodes)", fontsize=8)
    axes[0].legend(fontsize=7)
    return axes[0].figure


def write_table(base: Path, scale: str) -> str:
    summaries = [s for s in load_summaries(base / "runs") if s.get("experiment") == "atari"]
    rows, cell = [], {}
    for s in summaries:
        for k, game in enumerate(s["test"]["tasks"]):
            cell.setdefault((game, s["method"]), []).append(s["test"]["return_per_task"][k])
    with open(base / "fig3.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["game", "method", "final_return_mean", "final_return_std", "n_seeds"])
        for game in games_in_order(summaries):
            for m in METHODS:
                if (game, m) in cell:
                    mu, sd = mean_std(cell[(game, m)])
                    w.writerow([game, m, round(mu, 2), round(sd, 2), len(cell[(game, m)])])
                    rows.append((game, m, mu, sd, len(cell[(game, m)])))
    seeds = sorted({s["seed"] for s in summaries})
    commits = sorted({s["commit"] for s in summaries})
    text = [f"# Atari, scale={scale}: final average return (last 100 episodes), mean ± std over seeds {seeds}", "",
            f"Generated by `python scripts/make_figure_atari.py --scale {scale}` from `results/atari/{scale}/runs/` "
            f"({len(summaries)} runs; commit(s) {', '.join(c[:12] for c in commits)}). Figure: `figures/fig3.png`.", "",
            "| game | method | final return | seeds |", "|---|---|---|---|"]
    text += [f"| {g} | {LABELS[m]} | {mu:.1f} ± {sd:.1f} | {n} |" for g, m, mu, sd, n in rows]
    (base / "fig3.md").write_text("\n".join(text) + "\n")
    return "\n".join(text)


def main() -> None:
    args, base, _ = script_summaries(__doc__, "atari", collect, ROOT / "results")
    print(write_table(base, args.scale))
    fig = draw(base)
    (base / "figures").mkdir(exist_ok=True)
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):  # byte-stable reruns
        fig.savefig(base / "figures" / f"fig3.{ext}", dpi=150, metadata=metadata)


if __name__ == "__main__":
    main()
