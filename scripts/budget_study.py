"""The meta-training budget study: test error and AUC on the held-out alphabets against the number of task trainings.

    python scripts/budget_study.py                 # table and figure from the committed budget.csv (seconds)
    python scripts/budget_study.py --collect runs  # first export finished runs of `+sweep=omniglot_budget`

A budget is the number of task trainings (meta-steps x tasks per meta-step) the tested initialization has seen:
each run is tested at ``train.test_at`` and at its end. Writes results/omniglot/budget/{budget.csv, budget.md,
budget.png, budget.pdf}. ``--collect`` copies each finished run's summary, config and curves to budget/runs/ and
rebuilds budget.csv from everything there. A run tagged as one of the study's arms (``--arms``, default the
authors' code's meta learning rates: ``tag=-lr0.1`` for Reptile, ``tag=-lr0.5`` for MAML*) is an arm of its own:
method ``<method>-<name>``, label ``<label> [<name>]``, its own column, paired with Leap by seed like every other;
other tagged runs are left out.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable without installing
from leapbench import registry, tables  # noqa: E402
from leapbench.errors import script_main  # noqa: E402
from leapbench.results import export_run, format_interval  # noqa: E402

OUT = ROOT / "results" / "omniglot" / "budget"
ARMS = ("lr0.1", "lr0.5")  # tags (without their leading -) of the study's arms: conf/sweep/omniglot_budget.yaml
ROW = 20  # the Table 1 row the study runs at
PAPER_BUDGET = 1000 * 20  # the paper's meta-training: 1000 meta-steps of 20 tasks
# The study's table: a row is a budget; the paper's Table 1 columns give the method order.
SPEC = tables.Spec(
    "omniglot",
    "budget",
    "budget",
    "budget",
    {"test_error": "test error (%)", "auc": "AUC", "train_error": "train error (%)"},
    paper="table1.csv",
)
FIELDS = [
    "method",
    "tag",
    "label",
    "color",
    "num_pretrain",
    "budget",
    "meta_step",
    "seed",
    "split_seed",
    "test_error",
    "auc",
    "train_error",
    "mean_adapt_steps",
    "run_wall_time_s",
    "commit",
    "command",
]


def collect(runs: Path, out: Path = OUT, row: int = ROW, arms: tuple[str, ...] = ARMS) -> int:
    """Export the finished budget runs at ``row`` pretraining tasks, untagged or tagged ``-<arm>``, to
    ``out/runs``; return how many."""
    done, tags = 0, "|".join(re.escape(a) for a in arms)
    for run_dir in sorted(runs.glob(f"omniglot/*/budget/n{row}-s*")):
        if re.fullmatch(rf"n{row}-s\d+(-({tags}))?" if arms else rf"n{row}-s\d+", run_dir.name):
            done += export_run(run_dir, out / "runs" / f"{run_dir.parents[1].name}-{run_dir.name}") is not None
    return done


def table_rows(exported: Path) -> list[dict]:
    """One row per (method, budget, seed) from the exported runs (``test_at`` entries and the final test)."""
    rows, known = [], registry.methods()
    for folder in sorted(p.parent for p in exported.glob("*/summary.json")):
        summary = json.loads((folder / "summary.json").read_text())
        cfg = OmegaConf.load(folder / "config.yaml")
        batch, tag = cfg.train.meta_batch_size, str(cfg.get("tag") or "")
        base = registry.info(summary["method"], known)
        final = {
            "meta_step": summary["meta_steps_done"],
            "budget": summary["meta_steps_done"] * batch,
            **summary["test"],
            "mean_adapt_steps": summary["mean_adapt_steps"],
        }
        tested = summary.get("test_at", [])
        for t in tested + ([final] if final["meta_step"] not in {x["meta_step"] for x in tested} else []):
            rows.append(
                {
                    "method": summary["method"] + tag,
                    "tag": tag,
                    "label": base.label + (f" [{tag.strip('-_')}]" if tag else ""),
                    "color": base.color,
                    "num_pretrain": summary["num_pretrain"],
                    "budget": t["budget"],
                    "meta_step": t["meta_step"],
                    "seed": summary["seed"],
                    "split_seed": summary["split_seed"],
                    "test_error": round(t["error"], 2),
                    "auc": round(t["auc"], 2),
                    "train_error": round(t["train_error"], 2),
                    "mean_adapt_steps": round(t["mean_adapt_steps"], 1),
                    "run_wall_time_s": summary["wall_time_s"],
                    "commit": summary["commit"],
                    "command": summary["command"],
                }
            )
    return sorted(rows, key=lambda r: (r["method"], r["budget"], r["seed"]))


def read(path: Path) -> pd.DataFrame:
    """budget.csv as written (an untagged run's empty ``tag`` stays an empty string)."""
    df = pd.read_csv(path, dtype={"tag": str})
    df["tag"] = df["tag"].fillna("") if "tag" in df else ""
    return df


def write_csv(rows: list[dict], path: Path) -> None:
    tables.write_csv(pd.DataFrame(rows, columns=FIELDS), path)


def by_budget(df: pd.DataFrame) -> pd.DataFrame:
    """No pretraining has no budget (0): it stands beside every budget, so that the others pair with it."""
    none = df["budget"] == 0
    budgets = sorted(set(df.loc[~none, "budget"]))
    return pd.concat([df[~none]] + [df[none].assign(budget=b) for b in budgets], ignore_index=True)


def paper_row(row: int = ROW) -> dict[str, float]:
    paper = pd.read_csv(ROOT / "results" / "paper" / "table1.csv").set_index("num_pretrain")
    return paper.loc[row].astype(float).to_dict()


def trend(values: dict[int, float]) -> tuple[float, float]:
    """Least-squares line of the error against log10(budget): (change per 10x budget, value at the paper's budget)."""
    b = np.array(sorted(values), dtype=float)
    slope, intercept = np.polyfit(np.log10(b), [values[int(x)] for x in b], 1)
    return float(slope), float(intercept + slope * np.log10(PAPER_BUDGET))


def table_row(df: pd.DataFrame) -> int:
    """The one Table 1 row (number of pretraining tasks) the study ran at."""
    found = set(df.loc[df["budget"] > 0, "num_pretrain"]) or set(df["num_pretrain"])
    if len(found) != 1:
        sys.exit(f"budget.csv mixes rows of Table 1 ({sorted(found)}); keep one number of pretraining tasks.")
    return int(found.pop())


def markdown(rows: pd.DataFrame) -> str:
    row = table_row(rows)
    df, root = by_budget(rows), ROOT / "results"
    cells, pairs = tables.cell_stats(df, SPEC, root), tables.paired(df, SPEC, root)
    methods = tables.method_order(df, SPEC, root)
    learners = [m for m in methods if (rows.loc[rows["method"] == m, "budget"] > 0).any()]
    paper = paper_row(row)
    seeds = sorted(set(rows["seed"]))
    lines = [
        f"# Omniglot meta-training budget study ({row} pretraining alphabets)",
        "",
        "Generated by `python scripts/budget_study.py` from `budget.csv` "
        "(runs: `python run.py +sweep=omniglot_budget`; an arm `<label> [<tag>]`: the same with one changed "
        "hyperparameter and `tag=-<tag>`, `make reproduce-budget`). "
        f"Mean ± std over seeds {seeds} (each seed its own split; [k] marks a cell with fewer). A budget is the number "
        f"of task trainings the tested initialization has seen; the paper's is {PAPER_BUDGET:,}. No pretraining "
        "has no budget: its one value stands in every row.",
        "",
    ]
    for title, metric in (
        ("Test error % on the 10 held-out alphabets", "test_error"),
        ("AUC of the training-error curve (first 100 steps)", "auc"),
    ):
        lines += [f"## {title}", "", tables.markdown_cells(cells, SPEC, metric, df, root)]
        if metric == "test_error":
            lines.append(
                f"| paper ({PAPER_BUDGET:,}) | "
                + " | ".join(f"{paper[m]:.1f}" if m in paper else "" for m in methods)
                + " |"
            )
        lines.append("")
    lines += [
        "## Paired differences: test error / AUC (Leap minus the other method, 95 % t-interval over seeds)",
        "",
        tables.markdown_paired(pairs, SPEC, ["test_error", "auc"], df, root),
        "",
        "`*`: the interval excludes zero.",
        "",
        f"## Trend: a line in log10(budget) through each seed's test errors, extended to {PAPER_BUDGET:,}",
        "",
        "Mean and 95 % t-interval over seeds of each seed's fit. An extrapolation over more than a decade beyond "
        "the data, with the preset's smaller network and evaluation: a direction, not a prediction.",
        "",
        "| method | change per 10x budget (points) | at the paper's budget | paper |",
        "|---|---|---|---|",
    ]
    label = df.drop_duplicates("method").set_index("method")["label"]
    for m in learners:
        fits = []
        for seed in seeds:
            mine = df[(df["method"] == m) & (df["seed"] == seed)]
            if len(mine) >= 2:
                fits.append(trend(dict(zip(mine["budget"], mine["test_error"]))))
        if fits:
            lines.append(
                f"| {label[m]} | {format_interval([f[0] for f in fits])} | {format_interval([f[1] for f in fits])} "
                f"| {f'{paper[m]:.1f}' if m in paper else ''} |"
            )
    commits = sorted(set(rows["commit"]))
    last = rows[rows["budget"] == rows.groupby("method")["budget"].transform("max")]
    walls = last.groupby("method")["run_wall_time_s"].mean()
    lines += [
        "",
        "Mean wall time per run: " + ", ".join(f"{label[m]} {walls[m]:.0f} s" for m in methods) + ".",
        f"Commit(s): {', '.join(commits)}.",
        "",
    ]
    return "\n".join(lines)


def figure(rows: pd.DataFrame, out: Path) -> None:
    """budget.png and budget.pdf (fixed metadata, so regenerating them changes no byte)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot(rows, axes)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out.with_suffix(f".{ext}"), dpi=150, metadata=tables.STABLE_METADATA[ext])
    plt.close(fig)


def plot(rows: pd.DataFrame, axes) -> None:
    """Test error (left) and AUC (right) against the budget: mean ± std over seeds, the paper's value, the trend."""
    row = table_row(rows)
    paper = paper_row(row)
    root = ROOT / "results"
    cells = tables.cell_stats(rows, SPEC, root)
    arms = set(rows.loc[rows["tag"] != "", "method"])  # changed hyperparameters: dashed, in the method's colour
    for ax, metric, ylabel in ((axes[0], "test_error", "test error (%)"), (axes[1], "auc", "AUC of training error")):
        for m in tables.method_order(rows, SPEC, root):
            c = cells[cells["method"] == m].sort_values("budget")
            color, label = c["color"].iloc[0], c["label"].iloc[0]
            b = c["budget"].to_numpy()
            mean, sd = c[f"{metric}_mean"].to_numpy(), np.nan_to_num(c[f"{metric}_std"].to_numpy())
            if (c["budget"] == 0).all():  # no meta-training (no pretraining): one value for every budget
                ax.axhline(mean[0], color=color, ls="--", lw=1, label=label)
                ax.axhspan(mean[0] - sd[0], mean[0] + sd[0], color=color, alpha=0.1, lw=0)
                if metric == "test_error" and m in paper:
                    ax.plot([PAPER_BUDGET], [paper[m]], "*", color=color, ms=11, mec="black", mew=0.5)
                continue
            ax.plot(b, mean, "s--" if m in arms else "o-", color=color, label=label, ms=4)
            ax.fill_between(b, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
            if metric == "test_error" and m in paper:
                ax.plot([PAPER_BUDGET], [paper[m]], "*", color=color, ms=11, mec="black", mew=0.5)
                if len(b) >= 2:  # the trend line of the table, extended to the paper's budget
                    slope, at = trend(dict(zip(b, mean)))
                    ax.plot(
                        [b[-1], PAPER_BUDGET], [at - slope * np.log10(PAPER_BUDGET / b[-1]), at], ":", color=color, lw=1
                    )
        ax.set_xscale("log")
        if metric == "test_error":
            ax.set_ylim(bottom=0)  # an error below zero is where a straight trend stops meaning anything
        ax.set(xlabel="task trainings seen by the initialization (log)", ylabel=ylabel)
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0].set_title(f"Test error; ★ the paper's Table 1 ({row} tasks, {PAPER_BUDGET:,}); dotted: trend", fontsize=10)
    axes[1].set_title("AUC (the paper prints no AUC table)", fontsize=10)
    axes[1].legend(frameon=False, fontsize=8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", metavar="RUNS", help="export finished budget runs from this runs folder first")
    p.add_argument("--out", default=str(OUT), help="output folder (default: results/omniglot/budget)")
    p.add_argument(
        "--row", type=int, default=ROW, help=f"the Table 1 row (pretraining tasks) to collect (default {ROW})"
    )
    p.add_argument(
        "--arms", nargs="*", default=list(ARMS), help=f"tags (without -) of the arms to collect (default {ARMS})"
    )
    args = p.parse_args()
    matplotlib.use("Agg")
    out = Path(args.out)
    if args.collect:  # exported runs accumulate under out/runs, so a study finished over several sessions merges
        print(f"exported {collect(Path(args.collect), out, args.row, tuple(args.arms))} finished runs", file=sys.stderr)
        rows = table_rows(out / "runs")
        if not rows:
            sys.exit(f"No finished budget runs under {args.collect}; run `python run.py +sweep=omniglot_budget` first.")
        write_csv(rows, out / "budget.csv")
    if not (out / "budget.csv").exists():
        sys.exit(f"No {out / 'budget.csv'}; run the study and pass --collect runs.")
    rows = read(out / "budget.csv")
    (out / "budget.md").write_text(markdown(rows))
    figure(rows, out / "budget")
    print(f"wrote {out / 'budget.md'}, budget.png and budget.pdf from {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    script_main(main)
