"""Test finished runs' initializations again under another adaptation protocol, on the same test tasks and seed.

    python scripts/retest.py RUN_DIR [RUN_DIR ...] --set eval.stop_on=val [--set KEY=VALUE ...] --out FILE.csv

Each run's ``init.pt`` (the initialization its test used) is adapted with the run's own config changed by the
``--set`` overrides (dotted keys, OmegaConf syntax) and the run's test seed, so the two results differ only by the
overrides (with the same keys it repeats the recorded test exactly; ``eval.stop_on=val`` also shrinks the training
set, so its batches differ). One row per run: the recorded test and the new one. Used for the bias of the paper's
stopping rule (docs/reproduction.md): the same initializations stopped on held-out versus validation images.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.checks import build  # noqa: E402
from leapbench.errors import LeapError, script_main  # noqa: E402
from leapbench.evaluation import evaluate  # noqa: E402
from leapbench.loop import eval_seeds  # noqa: E402
from leapbench.provenance import commit  # noqa: E402
from leapbench.results import format_interval  # noqa: E402
from leapbench.rundir import upgrade  # noqa: E402


def retest(run_dir: Path, overrides: list[str]) -> dict:
    recorded = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    cfg = OmegaConf.merge(OmegaConf.create(upgrade(recorded)), OmegaConf.from_dotlist(overrides))  # older runs too
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "finished" or not (run_dir / "init.pt").exists():
        raise LeapError("no finished run with an init.pt here; run it to the end first.")
    data = build(cfg.data)
    model = build(cfg.model, **data.model_kwargs)
    model.load_state_dict(torch.load(run_dir / "init.pt", map_location="cpu"))
    res = evaluate(model, data.test, build(cfg.inner), build(cfg.eval), eval_seeds(cfg.seed)[1])
    return {
        "run": "/".join(run_dir.parts[-4:]),
        "method": summary["method"],
        "seed": summary["seed"],
        "split_seed": summary.get("split_seed"),
        "recorded_error": round(summary["test"]["error"], 2),
        "recorded_auc": round(summary["test"]["auc"], 2),
        "recorded_steps": summary["mean_adapt_steps"],
        "error": round(res["error"], 2),
        "oracle_error": round(res["oracle_error"], 2),
        "auc": round(res["auc"], 2),
        "steps": sum(t["steps"] for t in res["tasks"]) / len(res["tasks"]),
        "overrides": " ".join(overrides),
        "run_commit": summary["commit"],
        "commit": commit(("src", "conf", "scripts")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<experiment>/<method>/<scale>/<cell>-s<seed>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", required=True)
    p.add_argument("--out", type=Path, required=True, help="CSV to write (one row per run)")
    p.add_argument("--append", action="store_true", help="keep the rows already in --out; retest only runs not there")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        sys.exit(f"--set {bad[0]} is not KEY=VALUE; write e.g. --set eval.stop_on=val.")
    missing = [d for d in args.runs if not (d / "summary.json").is_file() or not (d / "config.yaml").is_file()]
    if missing:
        sys.exit(f"{missing[0]} holds no run (summary.json and config.yaml); name a run folder.")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, done = [], set()
    if args.append and args.out.exists():  # a study retested in parts: keep the rows already there
        with args.out.open() as f:
            rows = list(csv.DictReader(f))
        done = {(r["run"], r["overrides"]) for r in rows}
    for run_dir in args.runs:
        if ("/".join(run_dir.parts[-4:]), " ".join(args.overrides)) in done:
            continue
        try:
            rows.append(retest(run_dir, args.overrides))
        except LeapError as e:
            print(f"error: {run_dir}: {e}", file=sys.stderr)
            sys.exit(2)
        print(
            f"{run_dir}: {rows[-1]['recorded_error']:.1f} -> {rows[-1]['error']:.1f} % ({' '.join(args.overrides)})",
            file=sys.stderr,
        )
    rows.sort(key=lambda r: r["run"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        diff = lambda a, b: [float(r[a]) - float(r[b]) for r in mine]  # noqa: E731
        print(
            f"{method} ({len(mine)} runs): recorded - retested {format_interval(diff('recorded_error', 'error'), 2)}, "
            f"oracle - retested {format_interval(diff('oracle_error', 'error'), 2)} points of test error"
        )


if __name__ == "__main__":
    script_main(main)
