"""Task-parallel scaling: Leap meta-training throughput with N torchrun ranks against the best single process.

The same code path as ``torchrun --nproc_per_node=N run.py ...``: ``Leap.meta_step`` splits each meta-batch over
the ranks and all-reduces the meta-gradient once per meta-step. Measured in one run, on this machine:

* one process with 1 thread, and with every core as torch threads (the best single process);
* N ranks of one thread each (``--ranks``, default 2; several values measure a scaling curve);
* N independent single-thread processes at once, each with its 1/N of the tasks and no communication: the
  most any task-parallel scheme can get from N cores here (they share memory bandwidth and caches).

The configurations run in interleaved rounds (``--rounds``), so a drift in machine speed hits all alike;
each figure is total task-steps over total time across its rounds.

Model and tasks as in ``bench_leap.py`` (Conv4, 64 filters, batch 20, random Omniglot-shaped images).
Prints a table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from bench_leap import model, omniglot_task

from leapbench import distributed
from leapbench.inner import Inner
from leapbench.logging import write_json
from leapbench.methods.leap import Leap
from leapbench.provenance import bench_commit


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    distributed.init()
    tasks = [omniglot_task(s) for s in range(args.tasks)]
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.setup(model(), Inner(partial(torch.optim.SGD, lr=0.1), steps=args.steps, batch_size=20), args.tasks)
    g = torch.Generator().manual_seed(0)
    leap.meta_step(tasks, g)  # warm up
    distributed.barrier()
    late = bool(args.start_at) and time.time() > args.start_at
    if args.start_at:  # independent processes start their timed loops together
        time.sleep(max(0.0, args.start_at - time.time()))
    t = time.perf_counter()
    for _ in range(args.meta_steps):
        leap.meta_step(tasks, g)
    elapsed = time.perf_counter() - t
    if distributed.is_main():
        print(
            json.dumps(
                {
                    "task_steps_per_s": args.meta_steps * args.tasks * args.steps / elapsed,
                    "seconds": elapsed,
                    "ranks": distributed.world(),
                    "threads": torch.get_num_threads(),
                    "late": late,
                }
            )
        )


def launch(ranks: int, threads: int, args: argparse.Namespace) -> dict:
    here = Path(__file__).resolve()
    common = [
        str(here),
        "--worker",
        "--threads",
        str(threads),
        "--tasks",
        str(args.tasks),
        "--steps",
        str(args.steps),
        "--meta-steps",
        str(args.meta_steps),
    ]
    cmd = (
        [sys.executable, *common]
        if ranks == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *common]
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def launch_independent(n: int, args: argparse.Namespace) -> dict:
    """``n`` single-thread processes with ``tasks / n`` tasks each, timed from a common start; pooled."""
    start = time.time() + 20 + 2 * n  # after every process has imported torch and warmed up
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--threads",
        "1",
        "--tasks",
        str(args.tasks // n),
        "--steps",
        str(args.steps),
        "--meta-steps",
        str(args.meta_steps),
        "--start-at",
        str(start),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs) or any(o["late"] for o in outs):
        raise RuntimeError("an independent worker failed, or warmed up after the common start (raise its delay)")
    seconds = max(o["seconds"] for o in outs)
    return {"task_steps_per_s": args.meta_steps * args.tasks * args.steps / seconds, "seconds": seconds}


def measure(ranks: int, threads: int, args: argparse.Namespace, runs: list[dict]) -> dict:
    """Pool the rounds of one configuration: total task-steps over total seconds."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "ranks": ranks,
        "threads": threads,
        "rounds": len(runs),
        "seconds": seconds,
        "task_steps_per_s": len(runs) * args.meta_steps * args.tasks * args.steps / seconds,
        "per_round": [r["task_steps_per_s"] for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2], help="rank counts to measure (one thread each)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every configuration")
    ap.add_argument("--tasks", type=int, default=4, help="tasks per meta-step (a multiple of --ranks)")
    ap.add_argument("--steps", type=int, default=50, help="inner steps per task")
    ap.add_argument("--meta-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/bench/distributed.json"))
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    if any(args.tasks % n for n in args.ranks):
        ap.error(f"--tasks {args.tasks} must be a multiple of every --ranks value {args.ranks}")
    configs = [(1, 1), (1, cores)] + [(n, 1) for n in args.ranks] + [(-n, 1) for n in args.ranks]
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for ranks, threads in configs:  # ranks < 0: that many independent processes
            run = launch(ranks, threads, args) if ranks > 0 else launch_independent(-ranks, args)
            runs[(ranks, threads)].append(run)
    one, best = measure(1, 1, args, runs[(1, 1)]), measure(1, cores, args, runs[(1, cores)])
    single = max(one["task_steps_per_s"], best["task_steps_per_s"])
    res = {
        "command": "python " + " ".join(sys.argv),
        "commit": bench_commit(),
        "machine": platform.processor() or platform.machine(),
        "cores": cores,
        "torch": torch.__version__,
        "tasks": args.tasks,
        "steps": args.steps,
        "meta_steps": args.meta_steps,
        "rounds": args.rounds,
        "one_process_1_thread": one,
        f"one_process_{cores}_threads": best,
        # With perfect scaling, N single-thread ranks reach N x (1 thread); this is that over the best single.
        "ideal_scaling_vs_best_single": {n: n * one["task_steps_per_s"] / single for n in args.ranks},
    }
    print(
        f"Leap meta-training, {args.tasks} tasks x {args.steps} steps per meta-step, {args.meta_steps} meta-steps, "
        f"{args.rounds} interleaved rounds"
    )
    print(f"  1 process, 1 thread        {one['task_steps_per_s']:6.1f} task-steps/s")
    print(f"  1 process, {cores} threads{' ' * (7 - len(str(cores)))}{best['task_steps_per_s']:6.1f} task-steps/s")
    for n in args.ranks:
        many, apart = measure(n, 1, args, runs[(n, 1)]), measure(n, 1, args, runs[(-n, 1)])
        res[f"{n}_ranks_1_thread"], res[f"{n}_independent_processes_1_thread"] = many, apart
        res[f"scaling_vs_best_single_{n}_ranks"] = many["task_steps_per_s"] / single
        res[f"ceiling_vs_best_single_{n}_processes"] = apart["task_steps_per_s"] / single
        print(
            f"  {n} ranks, 1 thread each{' ' * (5 - len(str(n)))}{many['task_steps_per_s']:6.1f} task-steps/s  -> "
            f"{many['task_steps_per_s'] / single:.2f}x the best single process (perfect scaling: "
            f"{res['ideal_scaling_vs_best_single'][n]:.2f}x)"
        )
        print(
            f"  {n} independent processes{' ' * (4 - len(str(n)))}{apart['task_steps_per_s']:6.1f} task-steps/s  -> "
            f"{apart['task_steps_per_s'] / single:.2f}x (no communication: the ceiling on this machine)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, res)


if __name__ == "__main__":
    main()
