"""Fig. 2 of the paper from the committed Omniglot results (local files only).

    python scripts/make_figures_omniglot.py --scale small

Left: Leap's mean training-error curve on the validation alphabets at each validation during
meta-training, blue (start) to red (end), as a 5-step moving average. Right: AUC of the training-error curve
on the test alphabets against the number of pretraining tasks, per method, shaded by the standard deviation over
seeds (the paper's
shading), from runs.csv (`scripts/make_table.py omniglot` writes it); labels and colours are the methods' own.
Writes results/omniglot/<scale>/figures/fig2_{left,right}.{png,pdf}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable without installing
from leapbench import tables  # noqa: E402
from leapbench.errors import script_main  # noqa: E402

SMOOTH = 5
SPEC = tables.SPECS["omniglot"]


def fig2_left(runs: Path, ax) -> str:
    """Mean over seeds of Leap's validation curves, for the largest number of pretraining tasks."""
    leap = sorted(runs.glob("leap/n*-s*/curves.json"), key=lambda p: int(p.parent.name[1:].split("-")[0]))
    if not leap:
        raise SystemExit(f"No Leap runs under {runs}; nothing to plot for Fig. 2 (left).")
    n = leap[-1].parent.name.split("-")[0]
    by_step: dict[int, list[list[float]]] = {}
    for p in (q for q in leap if q.parent.name.split("-")[0] == n):
        for step, curve in json.loads(p.read_text())["val"].items():
            by_step.setdefault(int(step), []).append(curve)
    steps = sorted(by_step)
    cmap = matplotlib.colors.LinearSegmentedColormap.from_list("start_end", ["tab:blue", "tab:red"])
    for i, s in enumerate(steps):
        curve = 100 * np.mean(by_step[s], axis=0)
        if len(curve) >= SMOOTH:  # a moving average over SMOOTH steps, for readability
            curve = np.convolve(curve, np.ones(SMOOTH) / SMOOTH, mode="valid")
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            color=cmap(i / max(1, len(steps) - 1)),
            lw=1.2,
            label=f"meta-step {s}" if i in (0, len(steps) - 1) else None,
        )
    ax.set(
        xlabel="training step on a validation alphabet",
        ylabel="training error (%)",
        title=f"Leap, {n[1:]} pretraining tasks",
    )
    ax.legend(frameon=False)
    return n


def fig2_right(runs_csv: Path, ax) -> None:
    df = tables.read_runs(runs_csv)
    cells = tables.cell_stats(df, SPEC, runs_csv.parents[2])
    for m in tables.method_order(df, SPEC, runs_csv.parents[2]):
        c = cells[cells["method"] == m].sort_values("num_pretrain")
        n, mu, sd = (c[k].to_numpy(dtype=float) for k in ("num_pretrain", "auc_mean", "auc_std"))
        sd = np.nan_to_num(sd)  # one seed: no spread to shade
        ax.plot(n, mu, marker="o", ms=3, color=c["color"].iloc[0], label=c["label"].iloc[0])
        ax.fill_between(n, mu - sd, mu + sd, color=c["color"].iloc[0], alpha=0.2, lw=0)
    ax.set(xlabel="number of pretraining tasks", ylabel="AUC of training error", title="Held-out alphabets")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(frameon=False, fontsize=8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="small")
    p.add_argument("--results", default=str(ROOT / "results"))
    args = p.parse_args()
    matplotlib.use("Agg")  # files only; a notebook importing this module keeps its inline backend
    base = Path(args.results) / "omniglot" / args.scale
    if not (base / "runs.csv").exists():
        sys.exit(f"{base / 'runs.csv'} is missing; run scripts/make_table.py omniglot --scale {args.scale} first.")
    out = base / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("fig2_left", lambda ax: fig2_left(base / "runs", ax)),
        ("fig2_right", lambda ax: fig2_right(base / "runs.csv", ax)),
    ):
        fig, ax = plt.subplots(figsize=(4.2, 3.2), constrained_layout=True)
        draw(ax)
        ax.spines[["top", "right"]].set_visible(False)
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{name}.{ext}", dpi=150, metadata=tables.STABLE_METADATA[ext])
        plt.close(fig)
        print(out / f"{name}.png")


if __name__ == "__main__":
    script_main(main)
