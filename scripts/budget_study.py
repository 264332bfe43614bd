"""The meta-training budget study: test error and AUC on the held-out alphabets against the number of task trainings.

    python scripts/budget_study.py                 # table and figure from the committed budget.csv (seconds)
    python scripts/budget_study.py --collect runs  # first export finished runs of `+sweep=omniglot_budget`

A budget is the number of task trainings (meta-steps x tasks per meta-step) the tested initialization has seen:
each run is tested at ``train.test_at`` and at its end. Writes results/omniglot/budget/{budget.csv, budget.md,
budget.png, budget.pdf}. ``--collect`` copies each finished run's summary, config and curves to budget/runs/ and
rebuilds budget.csv from everything there.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable without installing
from leapbench.results import export_run, format_interval, t_interval  # noqa: E402

OUT = ROOT / "results" / "omniglot" / "budget"
ROW = 20  # the Table 1 row the study runs at
PAPER_BUDGET = 1000 * 20  # the paper's meta-training: 1000 meta-steps of 20 tasks
LABELS = {"leap": "Leap", "reptile": "Reptile", "fomaml": "MAML*", "finetune": "Finetune†", "scratch": "No pretraining"}
COLORS = {"leap": "tab:orange", "reptile": "tab:red", "fomaml": "tab:purple", "finetune": "tab:green",
          "scratch": "tab:blue"}
FIELDS = ["method", "label", "num_pretrain", "budget", "meta_step", "seed", "split_seed", "test_error", "auc", "train_error",
          "mean_adapt_steps", "run_wall_time_s", "commit", "command"]


def collect(runs: Path, out: Path = OUT, row: int = ROW) -> int:
    """Export the finished, untagged budget runs at ``row`` pretraining tasks to ``out/runs``; return how many."""
    done = 0
    for run_dir in sorted(runs.glob(f"omniglot/*/budget/n{row}-s*")):
        if re.fullmatch(rf"n{row}-s\d+", run_dir.name):  # a tagged run (changed hyperparameters) is not the study
            done += export_run(run_dir, out / "runs" / f"{run_dir.parents[1].name}-{run_dir.name}") is not None
    return done


def table_rows(exported: Path) -> list[dict]:
    """One row per (method, budget, seed) from the exported runs (``test_at`` entries and the final test)."""
    rows = []
    for folder in sorted(p.parent for p in exported.glob("*/summary.json")):
        summary = json.loads((folder / "summary.json").read_text())
        batch = OmegaConf.load(folder / "config.yaml").train.meta_batch_size
        final = {"meta_step": summary["meta_steps_done"], "budget": summary["meta_steps_done"] * batch,
                 **summary["test"], "mean_adapt_steps": summary["mean_adapt_steps"]}
        tested = summary.get("test_at", [])
        for t in tested + ([final] if final["meta_step"] not in {x["meta_step"] for x in tested} else []):
            rows.append({
                "method": summary["method"], "label": LABELS.get(summary["method"], summary["method"]),
                "num_pretrain": summary["num_pretrain"], "budget": t["budget"], "meta_step": t["meta_step"], "seed": summary["seed"],
                "split_seed": summary["split_seed"], "test_error": round(t["error"], 2), "auc": round(t["auc"], 2),
                "train_error": round(t["train_error"], 2), "mean_adapt_steps": round(t["mean_adapt_steps"], 1),
                "run_wall_time_s": summary["wall_time_s"], "commit": summary["commit"], "command": summary["command"],
            })
    return sorted(rows, key=lambda r: (list(LABELS).index(r["method"]) if r["method"] in LABELS else 99,
                                       r["method"], r["budget"], r["seed"]))


def read(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("num_pretrain", "budget", "meta_step", "seed", "split_seed"):
            r[k] = int(r[k])
        for k in ("test_error", "auc", "train_error"):
            r[k] = float(r[k])
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def cells(rows: list[dict], metric: str) -> dict[tuple[str, int], dict[int, float]]:
    """``{(method, budget): {seed: value}}``."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows:
        out.setdefault((r["method"], r["budget"]), {})[r["seed"]] = r[metric]
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, int] | None:
    """Mean of a - b over the seeds both have, with its 95 % Student-t interval; None with fewer than 2 seeds."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return (*t_interval([a[s] - b[s] for s in seeds]), len(seeds))


def paper_row(row: int = ROW) -> dict[str, float]:
    with open(ROOT / "results" / "paper" / "table1.csv") as f:
        found = next(r for r in csv.DictReader(f) if int(r["num_pretrain"]) == row)
    return {m: float(v) for m, v in found.items() if m != "num_pretrain"}


def trend(values: dict[int, float]) -> tuple[float, float]:
    """Least-squares line of the error against log10(budget): (change per 10x budget, value at the paper's budget)."""
    b = np.array(sorted(values), dtype=float)
    slope, intercept = np.polyfit(np.log10(b), [values[int(x)] for x in b], 1)
    return float(slope), float(intercept + slope * np.log10(PAPER_BUDGET))


def table_row(rows: list[dict]) -> int:
    """The one Table 1 row (number of pretraining tasks) the study ran at."""
    found = {r["num_pretrain"] for r in rows if r["method"] != "scratch"} or {r["num_pretrain"] for r in rows}
    if len(found) != 1:
        sys.exit(f"budget.csv mixes rows of Table 1 ({sorted(found)}); keep one number of pretraining tasks.")
    return found.pop()


def markdown(rows: list[dict]) -> str:
    row = table_row(rows)
    err, auc_ = cells(rows, "test_error"), cells(rows, "auc")
    methods = [m for m in LABELS if any(k[0] == m for k in err)] + sorted({k[0] for k in err} - set(LABELS))
    learners = [m for m in methods if m != "scratch"]
    budgets = sorted({b for m, b in err if m != "scratch"})
    paper = paper_row(row)
    seeds = sorted({r["seed"] for r in rows})

    def ms(v: dict[int, float]) -> str:
        x = np.array(list(v.values()))
        sd = f" ± {x.std(ddof=1):.1f}" if len(x) > 1 else ""
        return f"{x.mean():.1f}{sd}" + (f" [{len(x)}]" if len(x) != len(seeds) else "")

    lines = [f"# Omniglot meta-training budget study ({row} pretraining alphabets)", "",
             "Generated by `python scripts/budget_study.py` from `budget.csv` (runs: `python run.py +sweep=omniglot_budget`). "
             f"Mean ± std over seeds {seeds} (each seed its own split; [k] marks a cell with fewer). A budget is the number "
             f"of task trainings the tested initialization has seen; the paper's is {PAPER_BUDGET:,}.", ""]
    for title, table, metric in (("Test error % on the 10 held-out alphabets", err, "test_error"),
                                 ("AUC of the training-error curve (first 100 steps)", auc_, "auc")):
        lines += [f"## {title}", "", "| budget | " + " | ".join(LABELS.get(m, m) for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for b in budgets:
            vals = [ms(table[(m, b)]) if (m, b) in table else ("" if m != "scratch" else ms(table[("scratch", 0)]))
                    for m in methods]
            lines.append(f"| {b:,} | " + " | ".join(vals) + " |")
        if metric == "test_error":
            lines.append(f"| paper ({PAPER_BUDGET:,}) | " + " | ".join(f"{paper[m]:.1f}" if m in paper else "" for m in methods) + " |")
        lines.append("")
    top = budgets[-1]
    lines += [f"## Paired differences at {top:,} task trainings (Leap minus the other method, 95 % t-interval over seeds)", "",
              "| metric | " + " | ".join(LABELS.get(m, m) for m in methods if m != "leap") + " |",
              "|---|" + "---|" * (len(methods) - 1)]
    for name, table in (("test error", err), ("AUC", auc_)):
        out = []
        for m in methods:
            if m == "leap":
                continue
            other = table.get((m, top if m != "scratch" else 0))
            p = paired(table[("leap", top)], other) if other and ("leap", top) in table else None
            out.append("" if p is None else f"{p[0]:+.1f} [{p[1]:+.1f}, {p[2]:+.1f}]{' *' if p[1] > 0 or p[2] < 0 else ''}")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    lines += ["", "`*`: the interval excludes zero.", "",
              f"## Trend: a line in log10(budget) through each seed's test errors, extended to {PAPER_BUDGET:,}", "",
              "Mean and 95 % t-interval over seeds of each seed's fit. An extrapolation over more than a decade beyond "
              "the data, with the preset's smaller network and evaluation: a direction, not a prediction.", "",
              "| method | change per 10x budget (points) | at the paper's budget | paper |", "|---|---|---|---|"]
    for m in learners:
        fits = []
        for seed in seeds:
            by_budget = {b: err[(m, b)][seed] for b in budgets if seed in err.get((m, b), {})}
            if len(by_budget) >= 2:
                fits.append(trend(by_budget))
        if fits:
            lines.append(f"| {LABELS.get(m, m)} | {format_interval([f[0] for f in fits])} | {format_interval([f[1] for f in fits])} "
                         f"| {paper.get(m, float('nan')):.1f} |")
    commits = sorted({r["commit"] for r in rows})
    walls = {m: [float(r["run_wall_time_s"]) for r in rows if r["method"] == m and r["budget"] == max(
        x["budget"] for x in rows if x["method"] == m)] for m in methods}
    lines += ["", "Mean wall time per run: " + ", ".join(
        f"{LABELS.get(m, m)} {np.mean(w):.0f} s" for m, w in walls.items() if w) + ".",
        f"Commit(s): {', '.join(commits)}.", ""]
    return "\n".join(lines)


def figure(rows: list[dict], out: Path) -> None:
    """budget.png and budget.pdf (fixed metadata, so regenerating them changes no byte)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot(rows, axes)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=150, metadata={"Software": None})
    fig.savefig(out.with_suffix(".pdf"), metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)


def plot(rows: list[dict], axes) -> None:
    """Test error (left) and AUC (right) against the budget: mean ± std over seeds, the paper's value, the trend."""
    row = table_row(rows)
    paper = paper_row(row)
    for ax, metric, ylabel in ((axes[0], "test_error", "test error (%)"), (axes[1], "auc", "AUC of training error")):
        table = cells(rows, metric)
        for m in [m for m in LABELS if any(k[0] == m for k in table)]:
            if m == "scratch":
                v = np.array(list(table[("scratch", 0)].values()))
                ax.axhline(v.mean(), color=COLORS[m], ls="--", lw=1, label=LABELS[m])
                ax.axhspan(v.mean() - v.std(ddof=1), v.mean() + v.std(ddof=1), color=COLORS[m], alpha=0.1, lw=0)
                continue
            b = sorted(k[1] for k in table if k[0] == m)
            v = [np.array(list(table[(m, x)].values())) for x in b]
            mean, sd = np.array([x.mean() for x in v]), np.array([x.std(ddof=1) if len(x) > 1 else 0 for x in v])
            ax.plot(b, mean, "o-", color=COLORS[m], label=LABELS[m], ms=4)
            ax.fill_between(b, mean - sd, mean + sd, color=COLORS[m], alpha=0.15, lw=0)
            if metric == "test_error" and m in paper:
                ax.plot([PAPER_BUDGET], [paper[m]], "*", color=COLORS[m], ms=11, mec="black", mew=0.5)
                if len(b) >= 2:  # the trend line of the table, extended to the paper's budget
                    slope, at = trend(dict(zip(b, mean)))
                    ax.plot([b[-1], PAPER_BUDGET], [at - slope * np.log10(PAPER_BUDGET / b[-1]), at], ":",
                            color=COLORS[m], lw=1)
        if metric == "test_error" and "scratch" in paper:
            ax.plot([PAPER_BUDGET], [paper["scratch"]], "*", color=COLORS["scratch"], ms=11, mec="black", mew=0.5)
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
    p.add_argument("--row", type=int, default=ROW, help=f"the Table 1 row (pretraining tasks) to collect (default {ROW})")
    args = p.parse_args()
    matplotlib.use("Agg")
    out = Path(args.out)
    if args.collect:  # exported runs accumulate under out/runs, so a study finished over several sessions merges
        print(f"exported {collect(Path(args.collect), out, args.row)} finished runs", file=sys.stderr)
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
    main()
