"""Table 1 and the data behind Fig. 2 (right) from the committed Omniglot results, beside the paper's Table 1.

    python scripts/aggregate_omniglot.py --scale small                 # reads results/omniglot/small/runs/
    python scripts/aggregate_omniglot.py --scale small --collect runs  # first exports finished runs from runs/

Writes results/omniglot/<scale>/{table1.csv,fig2_auc.csv,table1.md}. Reads local files only.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.results import export_run, format_interval, mean_std, script_summaries, t_interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["leap", "finetune", "reptile", "fomaml", "finetune_single", "scratch"]
LABELS = {"leap": "Leap", "finetune": "Finetune†", "reptile": "Reptile", "fomaml": "MAML*",
          "finetune_single": "Finetune‡", "scratch": "No pretraining"}


def collect(runs: Path, out: Path, scale: str) -> int:
    n = 0
    for run_dir in sorted(runs.glob(f"omniglot/*/{scale}/n*-s*")):
        if "-" in run_dir.name.split("-s", 1)[1]:
            continue  # tagged variants (changed hyperparameters) are not Table 1 cells
        n += export_run(run_dir, out / "runs" / run_dir.parent.parent.name / run_dir.name) is not None
    return n


def paper_table() -> dict[int, dict[str, float]]:
    with open(ROOT / "results" / "paper" / "table1.csv") as f:
        return {int(r["num_pretrain"]): {m: float(r[m]) for m in METHODS} for r in csv.DictReader(f)}


def cells(summaries: list[dict], metric: str) -> dict[tuple[str, int], tuple[float, float, int]]:
    groups: dict[tuple[str, int], list[float]] = {}
    for s in summaries:
        groups.setdefault((s["method"], s["num_pretrain"]), []).append(s["test"][metric])
    return {k: (*mean_std(v), len(v)) for k, v in groups.items()}


def paired(summaries: list[dict], counts: list[int], others: list[str]) -> list[str]:
    """Leap minus each method per task count, paired by seed (one seed = one split and one initialization)."""
    by = {(s["method"], s["num_pretrain"], s["seed"]): s["test"] for s in summaries}
    lines = ["## Leap's paired difference to each method (Leap - method; negative: Leap is better)", "",
             "Points of test error / AUC, mean and 95 % t-interval over the seeds both ran, paired by seed (= split); "
             "* marks an interval that excludes 0.", "",
             "| tasks | " + " | ".join(LABELS[m] for m in others) + " |", "|---|" + "---|" * len(others)]
    for n in counts:
        row = []
        for m in others:
            seeds = sorted(s for (mm, nn, s) in by if mm == "leap" and nn == n and (m, n, s) in by)
            parts = []
            for metric in ("error", "auc"):
                d = [by[("leap", n, s)][metric] - by[(m, n, s)][metric] for s in seeds]
                if not d:
                    parts.append("–")
                    continue
                _, lo, hi = t_interval(d)
                parts.append(format_interval(d) + ("*" if len(d) > 1 and (hi < 0 or lo > 0) else ""))
            row.append(" / ".join(parts))
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return lines


def write_tables(summaries: list[dict], out: Path, scale: str) -> None:
    err, auc = cells(summaries, "error"), cells(summaries, "auc")
    counts = sorted({n for _, n in err})
    methods = [m for m in METHODS if any(k[0] == m for k in err)]
    paper = paper_table()
    seeds = sorted({s["seed"] for s in summaries})
    commits = sorted({s["commit"] for s in summaries})

    with open(out / "table1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_pretrain", "method", "error_mean", "error_std", "n_seeds", "paper_error"])
        for n in counts:
            for m in methods:
                if (m, n) in err:
                    mu, sd, k = err[(m, n)]
                    w.writerow([n, m, round(mu, 2), round(sd, 2), k, paper.get(n, {}).get(m, "")])
    with open(out / "fig2_auc.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_pretrain", "method", "auc_mean", "auc_std", "n_seeds"])
        for n in counts:
            for m in methods:
                if (m, n) in auc:
                    mu, sd, k = auc[(m, n)]
                    w.writerow([n, m, round(mu, 2), round(sd, 2), k])

    most = max(k for _, _, k in err.values())

    def md(table, title, with_paper):
        lines = [f"## {title}", "", "| tasks | " + " | ".join(LABELS[m] for m in methods) + " |",
                 "|---|" + "---|" * len(methods)]
        for n in counts:
            row = []
            for m in methods:
                c = table.get((m, n))
                txt = f"{c[0]:.1f} ± {c[1]:.1f}" if c else "–"
                if c and c[2] < most:
                    txt += f" [{c[2]} seed{'s' if c[2] > 1 else ''}]"  # fewer seeds than the rest of the table
                if with_paper and n in paper:
                    txt += f" ({paper[n][m]:.1f})"
                row.append(txt)
            lines.append(f"| {n} | " + " | ".join(row) + " |")
        return lines

    header = [f"# Omniglot, scale={scale}: ours beside the paper", "",
              f"Mean ± std over seeds {seeds} ([k seeds] marks a cell with fewer); the paper's Table 1 value in "
              "parentheses where it prints that row.",
              f"Generated by `python scripts/aggregate_omniglot.py --scale {scale}` from `results/omniglot/{scale}/runs/`"
              f" ({len(summaries)} runs; commit(s) {', '.join(c[:12] for c in commits)}).", ""]
    text = header + md(err, "Table 1: mean test error (%) on the 10 held-out alphabets", True)
    text += [""] + md(auc, "Fig. 2 (right): AUC of the training-error curve (0-100)", False)
    if "leap" in methods:
        text += [""] + paired(summaries, counts, [m for m in methods if m != "leap"])
    wall: dict[tuple[str, int], list[float]] = {}
    for x in summaries:
        if "wall_time_s" in x:
            wall.setdefault((x["method"], x["seed"]), []).append(x["wall_time_s"])
    text += ["", "## Wall time per run (s), mean over its task counts", "",
             "| seed | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for sd in seeds:
        cells_ = [f"{np.mean(wall[(m, sd)]):.0f}" if (m, sd) in wall else "–" for m in methods]
        text.append(f"| {sd} | " + " | ".join(cells_) + " |")
    (out / "table1.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def main() -> None:
    args, out, summaries = script_summaries(__doc__, "omniglot", collect, ROOT / "results")
    write_tables(summaries, out, args.scale)


if __name__ == "__main__":
    main()
