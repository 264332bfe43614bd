"""Table 1 (Omniglot), Table 2 (Multi-CV) or Fig. 3's table (Atari) from the committed results, beside the paper's.

    python scripts/make_table.py omniglot --scale small                 # reads results/omniglot/small/runs/
    python scripts/make_table.py multicv --scale small --collect runs   # first exports finished runs from runs/

Writes results/<experiment>/<scale>/runs.csv (one row per run; Atari: per run and test game), then from it
<table>.csv (cell means, stds, counts, 95 % t half-widths, the paper's value), <table>_paired.csv (Leap minus
each method, paired by seed, with its intervals) and <table>.md. ``--conf DIR`` adds method configs (labels,
colours) from another config folder. Reads local files only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable without installing
from leapbench import tables  # noqa: E402
from leapbench.errors import script_main  # noqa: E402
from leapbench.results import export_run  # noqa: E402


def collect(runs: Path, base: Path, experiment: str, scale: str) -> int:
    """Export the finished untagged runs ``runs/<experiment>/<method>/<scale>/<cell>-s<seed>`` into ``base/runs``
    (a tagged run, ``<cell>-s<seed><tag>``, changed a hyperparameter: it is not a table cell)."""
    n = 0
    for run_dir in sorted(runs.glob(f"{experiment}/*/{scale}/*-s*")):
        if re.fullmatch(r"[^-]+-s\d+", run_dir.name):
            n += export_run(run_dir, base / "runs" / run_dir.parent.parent.name / run_dir.name) is not None
    return n


def omniglot_text(df, cells, pairs, spec, root) -> list[str]:
    return [
        "## Table 1: mean test error (%) on the held-out alphabets, the paper's value in parentheses",
        "",
        tables.markdown_cells(cells, spec, "test_error", df, root),
        "",
        "## Fig. 2 (right): AUC of the training-error curve (0-100)",
        "",
        tables.markdown_cells(cells, spec, "auc", df, root),
        "",
        "## Leap's paired difference to each method: test error / AUC (Leap - method; negative: Leap is better)",
        "",
        tables.markdown_paired(pairs, spec, ["test_error", "auc"], df, root),
    ]


def multicv_text(df, cells, pairs, spec, root) -> list[str]:
    text = []
    for score, title in (("test_error", "Test error (%)"), ("train_error", "Train error (%)"), ("auc", "AUC")):
        text += [
            f"## Table 2, {title}: the paper's value in parentheses",
            "",
            tables.markdown_cells(cells, spec, score, df, root),
            "",
        ]
    text += [
        "## Leap's paired difference to each method: test error / AUC (Leap - method; negative: Leap is better)",
        "",
        tables.markdown_paired(pairs, spec, ["test_error", "auc"], df, root),
        "",
        "## The paper's claims on these runs",
        "",
    ] + multicv_claims(pairs, spec)
    return text


def multicv_claims(pairs: pd.DataFrame, spec) -> list[str]:
    """Table 2's claims, judged by paired intervals: Leap better than both other methods (both differences below 0
    with intervals that exclude 0), per held-out dataset."""
    out = []
    for score, claim in (("test_error", "test error"), ("auc", "AUC")):
        p = pairs[pairs["score"] == score]
        sets = list(dict.fromkeys(p["heldout"]))
        better = [
            d
            for d in sets
            if ((g := p[p["heldout"] == d])["diff_mean"] < 0).all() and g["excludes_zero"].all() and len(g) >= 2
        ]
        worse = [d for d in sets if (p[p["heldout"] == d].eval("diff_mean > 0 and excludes_zero")).any()]
        out.append(
            f"- Lower {claim} than every other method, interval excluding 0: {len(better)} of {len(sets)} "
            f"({', '.join(spec.names[d] for d in better) or 'none'}); clearly higher than one of them: "
            f"{', '.join(spec.names[d] for d in worse) or 'none'}. The paper: 7 of 8 (all but Facescrub)."
        )
    return out


def atari_text(df, cells, pairs, spec, root) -> list[str]:
    return [
        "## Final return (mean of the last 100 episodes): mean and 95 % t-interval over seeds",
        "",
        tables.markdown_cells(cells, spec, "final_return", df, root, ci=True),
        "",
        "## Mean return over all of training (faster learning: higher): mean and 95 % t-interval over seeds",
        "",
        tables.markdown_cells(cells, spec, "mean_return", df, root, ci=True),
        "",
        "## Leap's paired difference: final / mean return (Leap - method; positive: Leap is better)",
        "",
        tables.markdown_paired(pairs, spec, ["final_return", "mean_return"], df, root),
        "",
        "Figure: `figures/fig3.png` (unclipped game scores, moving average over 100 episodes).",
    ]


TEXT = {"omniglot": omniglot_text, "multicv": multicv_text, "atari": atari_text}


def write(base: Path, spec: tables.Spec, root: Path, scale: str, conf: tuple[Path, ...] = ()) -> str:
    """runs.csv, then the tables from it; returns the Markdown."""
    df = tables.misfits(tables.runs_table(base, spec, conf), spec)
    if df.empty:
        sys.exit(f"No finished {spec.experiment} runs under {base / 'runs'}; run the sweep, then pass --collect runs.")
    tables.write_csv(df, base / "runs.csv")
    df = tables.read_runs(base / "runs.csv")  # what every reader sees
    cells, pairs = tables.cell_stats(df, spec, root), tables.paired(df, spec, root)
    tables.write_csv(cells, base / f"{spec.name}.csv")
    tables.write_csv(pairs, base / f"{spec.name}_paired.csv")
    better = "higher" if spec.higher_is_better else "lower"
    wall = df.groupby("method", sort=False)["wall_time_s"].mean()
    text = [
        f"# {spec.experiment}, scale={scale}: ours beside the paper",
        "",
        tables.provenance_line(df, f"python scripts/make_table.py {spec.experiment} --scale {scale}"),
        f"Cells: mean ± std over seeds ([k]: a cell with fewer seeds); {better} is better. Paired differences: "
        "mean and 95 % Student-t interval over the seeds both methods ran (one seed = one split and one "
        f"initialization); a bootstrap interval too from {tables.BOOTSTRAP_FROM} seeds; * marks an interval that "
        "excludes 0.",
        "",
    ]
    text += TEXT[spec.experiment](df, cells, pairs, spec, root)
    text += [
        "",
        "Mean wall time per run: "
        + ", ".join(
            f"{df.loc[df['method'] == m, 'label'].iloc[0]} {wall[m]:.0f} s"
            for m in tables.method_order(df, spec, root)
            if not np.isnan(wall[m])
        )
        + ".",
    ]
    (base / f"{spec.name}.md").write_text("\n".join(text) + "\n")
    return "\n".join(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(tables.SPECS))
    p.add_argument("--scale", default="small")
    p.add_argument("--collect", metavar="RUNS", help="export finished runs from this runs folder first")
    p.add_argument("--results", default=str(ROOT / "results"), help="results folder")
    p.add_argument("--conf", action="append", default=[], type=Path, help="another config folder with method/*.yaml")
    args = p.parse_args()
    spec, root = tables.SPECS[args.experiment], Path(args.results)
    base = root / args.experiment / args.scale
    for folder in [d for d in args.conf if not (d / "method").is_dir()][:1]:
        sys.exit(f"--conf {folder} holds no method/ folder of configs; name a config folder like conf/.")
    if args.collect and not Path(args.collect).is_dir():
        sys.exit(f"--collect {args.collect} is not a folder; name the runs folder (paths.runs, default ./runs).")
    if args.collect:
        print(
            f"exported {collect(Path(args.collect), base, args.experiment, args.scale)} finished runs", file=sys.stderr
        )
    print(write(base, spec, root, args.scale, tuple(args.conf)))


if __name__ == "__main__":
    script_main(main)
