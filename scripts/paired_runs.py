"""Two variants of one cell, paired by seed: test error, AUC and wall time of each, and their paired difference.

    python scripts/paired_runs.py --a runs/omniglot/leap/small/n20-s{0,1,2}-task_stopping \
        --b runs/omniglot/leap/small/n20-s{0,1,2} --export results/omniglot/task_stopping   # to <export>/<method>/<run>

Reads finished run folders (or exported ones); ``--export`` first copies them to a results folder (summaries,
portable configs and curves, as the table scripts do), so the numbers it prints can be printed again from there.
Differences are a - b, mean and 95 % Student-t interval over the seeds both hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runnable without installing
from leapbench.errors import script_main  # noqa: E402
from leapbench.results import export_run, format_interval  # noqa: E402


def load(folders: list[Path]) -> dict[int, dict]:
    summaries = {}
    for folder in folders:
        if not (folder / "summary.json").is_file():
            sys.exit(f"error: {folder} holds no finished run.")
        s = json.loads((folder / "summary.json").read_text())
        if s.get("status") != "finished":
            sys.exit(f"error: {folder} holds no finished run.")
        summaries[s["seed"]] = s
    return summaries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="+", type=Path, required=True, help="run folders of variant a")
    p.add_argument("--b", nargs="+", type=Path, required=True, help="run folders of variant b (the reference)")
    p.add_argument("--export", type=Path, help="copy the runs to this results folder first, and read them there")
    args = p.parse_args()
    if args.export:
        dest = {d: args.export / d.parent.parent.name / d.name for d in [*args.a, *args.b]}  # <method>/<run>
        for d, to in dest.items():
            if export_run(d, to) is None:
                sys.exit(f"error: {d} holds no finished run to export.")
        args.a, args.b = ([dest[d] for d in side] for side in (args.a, args.b))
    a, b = load(args.a), load(args.b)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        sys.exit("error: no seed is in both --a and --b.")
    print(f"a = {a[seeds[0]]['command']}\nb = {b[seeds[0]]['command']}\nseeds {seeds}\n")
    print("| seed | a error | b error | a AUC | b AUC | a wall s | b wall s |\n|---|---|---|---|---|---|---|")
    for s in seeds:
        print(
            f"| {s} | {a[s]['test']['error']:.1f} | {b[s]['test']['error']:.1f} | {a[s]['test']['auc']:.1f} | "
            f"{b[s]['test']['auc']:.1f} | {a[s]['wall_time_s']:.0f} | {b[s]['wall_time_s']:.0f} |"
        )
    for metric in ("error", "auc"):
        d = [a[s]["test"][metric] - b[s]["test"][metric] for s in seeds]
        print(f"\na - b, test {metric}: {format_interval(d)} points")


if __name__ == "__main__":
    script_main(main)
