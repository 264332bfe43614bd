"""Table 2 (Multi-CV) from the committed results, beside the paper's Table 2.

    python scripts/aggregate_multicv.py --scale small                 # reads results/multicv/small/runs/
    python scripts/aggregate_multicv.py --scale small --collect runs  # first exports finished runs from runs/

Writes results/multicv/<scale>/{table2.csv,table2.md}. Reads local files only (no W&B, no network).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.data.multicv import DATASETS  # noqa: E402
from leapbench.results import export_run, mean_std, script_summaries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["leap", "finetune", "scratch"]
LABELS = {"leap": "Leap", "finetune": "Fine-tuning", "scratch": "No pre-training"}
NAMES = {"facescrub": "Facescrub", "notmnist": "NotMNIST", "mnist": "MNIST", "fashionmnist": "Fashion MNIST",
         "cifar10": "Cifar10", "svhn": "SVHN", "cifar100": "Cifar100", "gtsrb": "Traffic Signs"}
METRICS = {"test": "error", "train": "train_error", "auc": "auc"}  # Table 2 column -> summary["test"] key


def collect(runs: Path, out: Path, scale: str) -> int:
    """Export finished untagged runs ``runs/multicv/<method>/<scale>/<heldout>-s<seed>`` into ``out/runs``."""
    n = 0
    for run_dir in sorted(runs.glob(f"multicv/*/{scale}/*-s*")):
        heldout, _, rest = run_dir.name.partition("-s")
        if heldout not in DATASETS or not rest.isdigit():
            continue  # tagged variants (changed hyperparameters) are not Table 2 cells
        n += export_run(run_dir, out / "runs" / run_dir.parent.parent.name / run_dir.name) is not None
    return n


def paper_table(results: Path) -> dict[tuple[str, str], dict[str, float]]:
    with open(results / "paper" / "table2.csv") as f:
        return {(r["heldout"], r["method"]): {k: float(r[k]) for k in METRICS} for r in csv.DictReader(f)}


def table(summaries: list[dict]) -> list[dict]:
    """One row per (held-out dataset, method): mean and std over seeds of test error, train error and AUC."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["cell"], s["method"]), []).append(s)
    rows = []
    for d in DATASETS:
        for m in METHODS:
            runs = groups.get((d, m))
            if not runs:
                continue
            row = {"heldout": d, "method": m, "n_seeds": len(runs)}
            for col, key in METRICS.items():
                row[f"{col}_mean"], row[f"{col}_std"] = mean_std([r["test"][key] for r in runs])
            row["wall_s"] = float(np.mean([r.get("wall_time_s", np.nan) for r in runs]))
            rows.append(row)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """The paper's two claims, checked on these rows (test error; lower is better)."""
    by = {(r["heldout"], r["method"]): r for r in rows}
    sets = [d for d in DATASETS if all((d, m) in by for m in METHODS)]
    if not sets:
        return []
    wins = [d for d in sets if by[(d, "leap")]["test_mean"] < min(by[(d, m)]["test_mean"] for m in ("finetune", "scratch"))]
    auc_wins = [d for d in sets if by[(d, "leap")]["auc_mean"] < min(by[(d, m)]["auc_mean"] for m in ("finetune", "scratch"))]
    out = [f"- Leap has the lowest test error on {len(wins)} of {len(sets)} held-out datasets "
           f"({', '.join(NAMES[d] for d in wins) or 'none'}); the paper: 7 of 8 (all but Facescrub).",
           f"- Leap has the lowest AUC on {len(auc_wins)} of {len(sets)} "
           f"({', '.join(NAMES[d] for d in auc_wins) or 'none'}); the paper: 7 of 8."]
    if "facescrub" in sets:
        s, lp, ft = (by[("facescrub", m)]["test_mean"] for m in ("scratch", "leap", "finetune"))
        hurts = lp > s and ft > s
        out.append(f"- Facescrub: no pre-training {s:.1f} %, Leap {lp:.1f} %, fine-tuning {ft:.1f} %: pretraining "
                   f"{'hurts (as in the paper)' if hurts else 'does not hurt throughout (the paper: it hurts)'}.")
    return out


def write_tables(summaries: list[dict], out: Path, scale: str, results: Path) -> list[dict]:
    rows, paper = table(summaries), paper_table(results)
    with open(out / "table2.csv", "w", newline="") as f:
        cols = ["heldout", "method", "n_seeds"] + [f"{c}_{s}" for c in METRICS for s in ("mean", "std")]
        w = csv.writer(f)
        w.writerow(cols + ["wall_s"] + [f"paper_{c}" for c in METRICS])
        for r in rows:
            p = paper.get((r["heldout"], r["method"]), {})
            w.writerow([r[c] if isinstance(r[c], (str, int)) else round(r[c], 2) for c in cols]
                       + [round(r["wall_s"], 1)] + [p.get(c, "") for c in METRICS])
    most = max(r["n_seeds"] for r in rows)
    seeds = sorted({s["seed"] for s in summaries})
    commits = sorted({s["commit"] for s in summaries})
    text = [f"# Multi-CV, scale={scale}: ours beside the paper", "",
            f"Mean ± std over seeds {seeds} ([k seeds] marks a cell with fewer); the paper's Table 2 value in "
            "parentheses. Test and train error in %, AUC of the held-out task's training-error curve on 0-100.",
            f"Generated by `python scripts/aggregate_multicv.py --scale {scale}` from `results/multicv/{scale}/runs/`"
            f" ({len(summaries)} runs; commit(s) {', '.join(c[:12] for c in commits)}).", "",
            "| Held-out task | Method | Test (%) | Train (%) | AUC | wall (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        p = paper.get((r["heldout"], r["method"]))
        cells = []
        for c in METRICS:
            txt = f"{r[c + '_mean']:.1f} ± {r[c + '_std']:.1f}"
            cells.append(txt + (f" ({p[c]:.1f})" if p else ""))
        seeds_note = f" [{r['n_seeds']} seed{'s' if r['n_seeds'] > 1 else ''}]" if r["n_seeds"] < most else ""
        text.append(f"| {NAMES[r['heldout']]} | {LABELS[r['method']]}{seeds_note} | " + " | ".join(cells)
                    + f" | {r['wall_s']:.0f} |")
    claims = verdicts(rows)
    if claims:
        text += ["", "## The paper's claims on these runs", ""] + claims
    (out / "table2.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return rows


def main() -> None:
    args, out, summaries = script_summaries(__doc__, "multicv", collect, ROOT / "results")
    write_tables(summaries, out, args.scale, Path(args.results))


if __name__ == "__main__":
    main()
