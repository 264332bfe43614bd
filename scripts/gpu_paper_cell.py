"""One paper-scale Omniglot cell on one GPU: equality checks on the device, then Leap and no pretraining.

    bash scripts/gpu_paper_cell.sh              # on a GPU: about 9 minutes at most, resumes if cut off
    bash scripts/gpu_paper_cell.sh --smoke      # its CPU form (the test runs it): the same steps at scale=smoke

1. **Checks on the device, before anything is timed** (float64, real alphabets): the batched meta-step (with
   its CUDA graph) against the sequential one for Leap, and side-by-side evaluation against one alphabet at a
   time under both stopping rules. A path that fails its check is switched off for the cell (recorded); the graph
   check also fails when the recording fell back to eager steps. The choice is kept beside the runs, so a resumed
   cell keeps its config.
2. **Throughput** of one paper-shaped meta-step (Conv4-64, 20 tasks x 100 steps, float32): sequential,
   batched, batched with the CUDA graph; task-steps/s.
3. **The cell**: ``run.py experiment=omniglot method=leap scale=paper data.num_pretrain=20`` on the GPU with every
   fast path on (1000 meta-steps x 20 tasks x 100 steps, validation every 20 meta-steps with early stopping, the
   paper's evaluation on the 10 test alphabets), then ``method=scratch`` on the same split. Leap is stopped (Ctrl-C,
   so it checkpoints) where it would leave scratch less than ``--reserve`` seconds; a cut-off run resumes on the
   next call, and the report gives the meta-steps it reached and their rate. The report is rewritten after every
   phase, so a window that closes early still returns what was measured. Runs land in ``--runs``; finished ones
   are exported to ``results/omniglot/paper/runs/`` and the figures to ``--out``
   (``results/bench/gpu_paper_cell.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf

from leapbench.data.omniglot import Omniglot
from leapbench.evaluation import Adaptation, evaluate
from leapbench.inner import Inner
from leapbench.logging import write_json
from leapbench.methods import batched as engine
from leapbench.methods.flat import flat_params
from leapbench.methods.leap import Leap
from leapbench.models import ConvNet
from leapbench.provenance import bench_commit
from leapbench.results import export_run

ROOT = Path(__file__).resolve().parents[1]
SGD = partial(torch.optim.SGD, lr=0.1)
REPS = 3  # timed meta-steps per path
GRACE = 20.0  # seconds a stopped run gets to checkpoint and write its summary
CHECKS = ("meta_step", "meta_step_graphs", "evaluation")


def alphabets(device: torch.device, cache: str, dtype: torch.dtype = torch.float64) -> list:
    """Six alphabets of split 0 with the paper's rotations (as the cell), on ``device`` in ``dtype``."""
    root = os.environ.get("LEAP_DATA_DIR", "data")
    data = Omniglot(root, 5, split_seed=0, augment="rotate36", cache_dir=cache, download=False)
    tasks = data.pretrain + data.test[:1]
    return [
        dataclasses.replace(t, x_train=t.x_train.to(dtype), x_heldout=t.x_heldout.to(dtype)).to(device) for t in tasks
    ]


def small_model(device: torch.device) -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(filters=8, channels_last=False).double().to(device)


def check_meta_step(tasks: list, device: torch.device, graphs: bool) -> dict:
    """Leap's batched meta-step (CUDA graph on or off) against the sequential one: relative difference."""
    out = []
    for batched in (False, True):
        learner = Leap("leap", SGD, batched=batched, cuda_graphs=graphs)
        learner.setup(small_model(device), Inner(SGD, steps=8, batch_size=20), len(tasks))
        row = learner.meta_step(tasks, torch.Generator().manual_seed(3))
        out.append((flat_params(learner.params), row))
    (seq, seq_row), (bat, bat_row) = out
    rel = float((bat - seq).norm() / (seq - flat_params(list(small_model(device).parameters()))).norm())
    recorded = not (graphs and device.type == "cuda" and engine._failed)  # a failed recording runs eagerly
    ok = rel < 1e-6 and bat_row["error"] == seq_row["error"] and recorded
    out_ = {"relative_difference": rel, "same_error": bat_row["error"] == seq_row["error"], "ok": ok}
    return out_ | ({} if recorded else {"error": f"recording failed: {engine._failed[0]}"})


def check_evaluation(tasks: list, device: torch.device) -> dict:
    """Side-by-side evaluation against one alphabet at a time, both stopping rules: same stops, same errors."""
    inner, init, out = Inner(SGD, steps=100, batch_size=20), small_model(device), {}
    for stop_on in ("heldout", "val"):
        rule = dict(mode="early_stop", steps=20, max_steps=120, eval_every=10, patience=2, stop_on=stop_on)
        one, side = (evaluate(init, tasks, inner, Adaptation(**rule, batched=b), seed=5) for b in (False, True))
        pairs = list(zip(one["tasks"], side["tasks"]))
        out[stop_on] = {
            "same_stops": all(a["steps"] == b["steps"] and a["best_step"] == b["best_step"] for a, b in pairs),
            "max_error_difference": max(abs(a["error"] - b["error"]) for a, b in pairs),
            "steps": [a["steps"] for a, _ in pairs],
        }
    out["ok"] = all(v["same_stops"] and v["max_error_difference"] == 0 for v in out.values())
    return out


def attempt(check, *args, **kwargs) -> dict:
    """A check's result; one that raises has failed (its path is then switched off for the cell)."""
    try:
        return check(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of a fast path only switches it off
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def throughput(device: torch.device, cache: str, smoke: bool) -> dict:
    """Task-steps/s of one paper-shaped Leap meta-step (after one warm-up step) on each path."""
    tasks = alphabets(device, cache, torch.float32)[:5] * (1 if smoke else 4)  # 20 tasks on the GPU
    steps = 8 if smoke else 100
    out = {}
    for name, batched, graphs in (("sequential", False, False), ("batched", True, False), ("graphs", True, True)):
        torch.manual_seed(0)
        learner = Leap("leap", SGD, batched=batched, cuda_graphs=graphs)
        learner.setup(ConvNet(filters=8 if smoke else 64).to(device), Inner(SGD, steps=steps, batch_size=20), 20)
        g = torch.Generator().manual_seed(0)
        learner.meta_step(tasks, g)
        sync(device)
        start = time.perf_counter()
        for _ in range(REPS):
            learner.meta_step(tasks, g)
        sync(device)
        out[name] = round(REPS * len(tasks) * steps / (time.perf_counter() - start), 1)
    return {"task_steps_per_s": out, "tasks": len(tasks), "steps": steps, "meta_steps_timed": REPS}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cell(args: argparse.Namespace, method: str, extra: list[str], deadline: float) -> dict:
    """Run (or resume) one run of the cell through run.py, stopped with Ctrl-C at ``deadline`` (it checkpoints);
    what it reached: the summary's figures if it finished, else the meta-steps done so far and their rate."""
    command = [
        sys.executable,
        "run.py",
        "experiment=omniglot",
        f"method={method}",
        f"scale={'smoke' if args.smoke else 'paper'}",
        f"data.num_pretrain={3 if args.smoke else 20}",
        f"seed={args.seed}",
        f"device={args.device}",
        f"paths.runs={args.runs}",
        "logger=local",
        f"progress={str(not args.smoke).lower()}",
        *extra,
    ]
    print("[gpu_paper_cell] " + " ".join(command[1:]), flush=True)
    child = subprocess.Popen(command, cwd=ROOT)
    try:
        code = child.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
        print(f"[gpu_paper_cell] {method} stopped at the time budget; run the script again to resume.", flush=True)
        child.send_signal(signal.SIGINT)  # the runner records the run as interrupted; its checkpoint stays
        try:
            code = child.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    name = f"n{3 if args.smoke else 20}-s{args.seed}"
    run_dir = Path(args.runs) / "omniglot" / method / ("smoke" if args.smoke else "paper") / name
    summary = export_run(run_dir, Path(args.results) / "runs" / method / run_dir.name) if code == 0 else None
    if summary is None:
        return {"finished": False, "exit_code": code} | progress(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task_steps = summary["meta_steps_done"] * cfg.train.meta_batch_size * cfg.inner.steps
    figures = {k: summary[k] for k in ("meta_steps_done", "seconds", "wall_time_s") if k in summary}
    return {
        "finished": True,
        "test_error": summary["test"]["error"],
        "auc": summary["test"]["auc"],
        **figures,
        "val_best": summary.get("val_best"),
        "meta_task_steps_per_s": round(task_steps / max(summary["seconds"]["meta_train"], 1e-9), 1),
    }


def progress(run_dir: Path) -> dict:
    """How far an unfinished run got: meta-steps and seconds from its checkpoint, and the rate they give."""
    path = run_dir / "ckpt.pt"
    if not path.exists():
        return {"meta_steps_done": 0}
    state = torch.load(path, map_location="cpu", weights_only=False)["state"]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    done, seconds = state["meta_step"], state.get("seconds", {})
    rate = done * cfg.train.meta_batch_size * cfg.inner.steps / max(seconds.get("meta_train", 0), 1e-9)
    return {"meta_steps_done": done, "seconds": seconds, "meta_task_steps_per_s": round(rate, 1)}


def fast_paths(args: argparse.Namespace, checks: dict) -> dict:
    """The fast paths the checks allow; the first call's choice is kept beside the runs (a resumed run keeps its
    config)."""
    kept = Path(args.runs) / "gpu_paper_cell_paths.json"
    if kept.exists():
        return json.loads(kept.read_text())
    paths = {
        "method.batched": checks["meta_step"]["ok"],
        "method.cuda_graphs": checks["meta_step_graphs"]["ok"],
        "eval.batched": checks["evaluation"]["ok"],
    }
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_json(kept, paths)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the CPU form: scale=smoke on the CPU, same steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole script (cells resume)")
    p.add_argument("--reserve", type=float, default=90.0, help="seconds kept for the scratch run")
    p.add_argument("--runs", default=os.environ.get("LEAP_RUNS_DIR", str(ROOT / "runs")))
    p.add_argument("--results", default=str(ROOT / "results" / "omniglot" / "paper"))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "gpu_paper_cell.json")
    args = p.parse_args()
    start = time.time()
    deadline = start + args.budget
    args.device = "cpu" if args.smoke else "cuda"
    device = torch.device(args.device)
    cache = os.environ.get("LEAP_CACHE_DIR", str(ROOT / ".cache"))
    report: dict = {"command": "bash scripts/gpu_paper_cell.sh " + " ".join(sys.argv[1:]), "commit": bench_commit()}
    report |= {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    report["finished"] = False

    def save(phase: str) -> None:
        report["wall_s"] = round(time.time() - start, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, report)
        print(f"[gpu_paper_cell] {phase}: {json.dumps(report.get(phase))}", flush=True)

    try:
        tasks = alphabets(device, cache)
        report["checks"] = {
            "meta_step": attempt(check_meta_step, tasks, device, graphs=False),
            "meta_step_graphs": attempt(check_meta_step, tasks, device, graphs=True),
            "evaluation": attempt(check_evaluation, tasks, device),
        }
    except Exception as e:  # noqa: BLE001 - no data, no device: say so in the report
        report["checks"] = {name: {"ok": False, "error": f"{type(e).__name__}: {e}"} for name in CHECKS}
    save("checks")
    report["throughput"] = attempt(throughput, device, cache, args.smoke)
    save("throughput")
    report["paths"] = paths = fast_paths(args, report["checks"])
    side = str(paths["eval.batched"]).lower()
    fast = [f"eval.batched={side}", f"val.batched={side}"]
    leap = [f"method.batched={str(paths['method.batched']).lower()}"]
    leap += [f"method.cuda_graphs={str(paths['method.cuda_graphs']).lower()}"]
    report["leap"] = cell(args, "leap", fast + leap, deadline - args.reserve) | {"paper_error": 2.6}  # Table 1, 20
    save("leap")
    report["scratch"] = cell(args, "scratch", fast, deadline) | {"paper_error": 16.6}  # no pretraining, 20 tasks
    report["finished"] = report["leap"]["finished"] and report["scratch"]["finished"]
    save("scratch")
    print(
        f"[gpu_paper_cell] {'finished' if report['finished'] else 'not finished'} in {report['wall_s']} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
