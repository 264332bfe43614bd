"""Which evaluation protocol explains the paper's Table 1, across splits? Adapt the random initialization
(method=scratch) to the 10 test alphabets of several splits (one per seed) under each adaptation rule x
augmentation, through run.py, and tabulate the mean and spread across splits.

    python scripts/protocol_study.py                 # runs the missing cells (about 3 h on 2 cores for 5 splits)
    python scripts/protocol_study.py --seeds 0,1     # only these splits (a study can be run in parts)
    python scripts/protocol_study.py --augments rotate36   # only this augmentation
    python scripts/protocol_study.py --collect       # only exports finished runs and re-tabulates
    python scripts/protocol_study.py --seeds 0 --runs R --out O model.filters=8 eval.max_steps=200   # a quick look

Rules: the paper's early stopping (patience 15, 100-5000 steps) stopping on the held-out images (the paper's
wording) or on validation images carved from the training images (``eval.stop_on=val``), and the authors' 100
fixed steps. Runs land in runs/omniglot/scratch/paper/n20-s<seed>-<mode>-<augment>-<stop_on>. Finished runs are
exported to results/omniglot/protocol/runs/, and a cell found there is not run again, so the study resumes from
the committed results. Writes results/omniglot/protocol/{protocol.csv,protocol.md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.errors import script_main  # noqa: E402
from leapbench.results import export_run, format_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "omniglot" / "protocol"
SEEDS = "0,1,2,3,4"
AUGMENTS = ("rotate36", "reference", "none")
RULES = {  # label: overrides
    "early stopping on held-out (paper)": ["eval.mode=early_stop", "eval.stop_on=heldout"],
    "early stopping on validation": ["eval.mode=early_stop", "eval.stop_on=val"],
    "fixed 100 steps (authors' code)": ["eval.mode=fixed", "eval.stop_on=heldout"],
}
TAG = "tag=-${eval.mode}-${data.augment}-${eval.stop_on}"
PAPER_SCRATCH = "15.9-17.9 (mean 16.5)"  # Table 1, "No pretraining", over all task counts


def suffix(seed: int, overrides: list[str], augment: str) -> str:
    """The end of a run's folder name (after ``n<num_pretrain>``), as ``TAG`` makes it."""
    keys = dict(o.split("=", 1) for o in overrides)
    return f"-s{seed}-{keys['eval.mode']}-{augment}-{keys['eval.stop_on']}"


def run_missing(seeds: list[int], augments: list[str], runs: Path, out: Path, extra: list[str]) -> None:
    """One joblib multirun per (rule, augmentation) over the seeds whose run is not exported yet."""
    for overrides in RULES.values():
        for augment in augments:
            todo = [
                s for s in seeds if not list((out / "runs").glob(f"n*{suffix(s, overrides, augment)}/summary.json"))
            ]
            if todo:
                subprocess.run(
                    [
                        sys.executable,
                        "run.py",
                        "-m",
                        "launcher=joblib",
                        "method=scratch",
                        f"seed={','.join(map(str, todo))}",
                        *overrides,
                        f"data.augment={augment}",
                        TAG,
                        f"paths.runs={runs}",
                        *extra,
                    ],
                    cwd=ROOT,
                    check=True,
                )
            collect(runs, out)  # export as cells finish, so an interrupted study keeps them


def collect(runs: Path, out: Path) -> int:
    return sum(
        export_run(d, out / "runs" / d.name) is not None for d in sorted(runs.glob("omniglot/scratch/*/n*-s*-*-*-*"))
    )


def rows(out: Path) -> pd.DataFrame:
    """One row per exported run of this study (runs without ``eval.stop_on`` predate it and are left out)."""
    out_rows = []
    for folder in sorted(p.parent for p in (out / "runs").glob("*/summary.json")):
        cfg = OmegaConf.load(folder / "config.yaml")
        if "stop_on" not in cfg.eval:
            continue
        s = json.loads((folder / "summary.json").read_text())
        rule = next(label for label, o in RULES.items() if folder.name.endswith(suffix(s["seed"], o, cfg.data.augment)))
        out_rows.append(
            {
                "rule": rule,
                "augment": cfg.data.augment,
                "seed": s["seed"],
                "split_seed": s["split_seed"],
                "test_error": round(s["test"]["error"], 2),
                "oracle_error": round(s["test"]["oracle_error"], 2),
                "auc": round(s["test"]["auc"], 2),
                "train_error": round(s["test"]["train_error"], 2),
                "mean_steps": s["mean_adapt_steps"],
                "test_alphabets": " ".join(s["test"]["tasks"]),
                "wall_time_s": s["wall_time_s"],
                "commit": s["commit"],
                "command": s["command"],
            }
        )
    df = pd.DataFrame(out_rows)
    if df.empty:
        return df
    df["order"] = df["rule"].map(list(RULES).index) * len(AUGMENTS) + df["augment"].map(AUGMENTS.index)
    return df.sort_values(["order", "seed"], kind="stable").drop(columns="order").reset_index(drop=True)


def write(table: pd.DataFrame, out: Path) -> None:
    table.to_csv(out / "protocol.csv", index=False, lineterminator="\n")
    lines = [
        "# Adaptation protocol study: no pretraining (random init) on the 10 test alphabets of each split",
        "",
        f"Paper, Table 1, No pretraining: {PAPER_SCRATCH} % test error.",
        "Generated by `python scripts/protocol_study.py` from the exported runs beside this file. Conv4, 64 filters; "
        "each seed is its own split (test alphabets, characters). Mean ± std across splits, and the range.",
        "",
        "| adaptation | augmentation | test error % | range | train-error AUC | mean steps | splits |",
        "|---|---|---|---|---|---|---|",
    ]
    cells = table.groupby(["rule", "augment"], sort=False).agg(
        mean=("test_error", "mean"),
        std=("test_error", "std"),
        low=("test_error", "min"),
        high=("test_error", "max"),
        auc=("auc", "mean"),
        steps=("mean_steps", "mean"),
        n=("test_error", "size"),
    )
    for (rule, aug), c in cells.iterrows():
        sd = f" ± {c['std']:.1f}" if c["n"] > 1 else ""
        lines.append(
            f"| {rule} | {aug} | {c['mean']:.1f}{sd} | {c['low']:.1f}-{c['high']:.1f} | {c['auc']:.1f} | "
            f"{c['steps']:.0f} | {int(c['n'])} |"
        )
    lines += [
        "",
        "Stopping-rule bias, paired by split (mean and 95 % t-interval over splits). *Total*: the held-out rule's "
        "error minus the validation rule's (the latter also trains on 12 instead of 15 images per character). "
        "*Selection*: on the validation rule's own runs, the best held-out error at any check minus the error "
        "reported at the validation-chosen point: the optimism of choosing the stopping point on the reported "
        "images, on one trajectory and training set.",
        "",
        "| augmentation | total (points) | selection (points) | splits |",
        "|---|---|---|---|",
    ]
    heldout, val = list(RULES)[:2]
    by_split = table.pivot_table(index=["augment", "seed"], columns="rule", values="test_error")
    for aug in AUGMENTS:
        v = table[(table["rule"] == val) & (table["augment"] == aug)]
        pairs = by_split.loc[aug].dropna(subset=[heldout, val]) if aug in by_split.index.get_level_values(0) else None
        if pairs is not None and heldout in pairs and len(pairs) >= 2:
            total = format_interval((pairs[heldout] - pairs[val]).tolist())
            selection = format_interval((v["oracle_error"] - v["test_error"]).tolist())
            lines.append(f"| {aug} | {total} | {selection} | {len(pairs)} |")
    lines += ["", f"Commit(s): {', '.join(sorted(table['commit'].unique()))}.", ""]
    (out / "protocol.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", action="store_true", help="only export finished runs and tabulate")
    p.add_argument("--seeds", default=SEEDS, help=f"splits to run (default {SEEDS})")
    p.add_argument(
        "--augments", default=",".join(AUGMENTS), help=f"augmentations to run (default {','.join(AUGMENTS)})"
    )
    p.add_argument("--runs", default=str(ROOT / "runs"), help="runs folder (paths.runs)")
    p.add_argument("--out", default=str(OUT), help="results folder (default: results/omniglot/protocol)")
    p.add_argument(
        "overrides", nargs="*", help="more run.py overrides for every run (e.g. a smaller model, for a test)"
    )
    args = p.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    if not args.collect:
        augments = args.augments.split(",")
        unknown = sorted(set(augments) - set(AUGMENTS))
        if unknown:
            p.error(f"--augments: unknown {', '.join(unknown)}; choose from {', '.join(AUGMENTS)}")
        run_missing([int(s) for s in args.seeds.split(",")], augments, runs, out, args.overrides)
    collect(runs, out)
    table = rows(out)
    if table.empty:
        sys.exit("No finished protocol runs found; run without --collect first.")
    write(table, out)


if __name__ == "__main__":
    script_main(main)
