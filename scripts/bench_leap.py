"""Leap's cost on the Omniglot model, measured two ways in one run (``make bench`` runs it).

1. **Leap's overhead**: inner-loop task-steps/s of the shared inner loop with Leap against the same loop with
   no meta-learner, interleaved step by step (with standard errors over repetitions), both as every other
   method runs it and with its gradients in one vector cleared in place as Leap keeps them; plus the time
   spent in Leap's own callbacks as a share of the Leap loop.
2. **Against the reference approach**: meta-training throughput of ``Leap.meta_step`` against a
   re-implementation of the authors' approach (``leap.update`` clones the whole state dict with gradients at
   every inner step and builds the increment parameter by parameter; NCHW; default threads), same model,
   same data, interleaved.

3. **Batched task training** (``method.batched=true``) against the sequential loop, meta-step throughput, for
   one or more meta-batch sizes (``--batched-tasks``); and, in float64, the relative difference between the
   two paths' meta-steps from the same theta^0 (in float32 the paths drift apart: other kernels and layouts
   round differently and max-pooling ties on binary images break differently; float64 shows they agree).

``--device cuda`` runs all three on a GPU (model and images on the device), as ``run.py device=cuda`` trains.

The model is the paper's Conv4 (64 filters, 28x28, 20-way, batch 20, SGD lr 0.1). Images are random tensors
of Omniglot's shape: the cost of a step does not depend on pixel values, so no dataset is needed.
Prints a table and writes ``--out`` (JSON) with the figures, the machine and the command.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from leapbench.inner import Inner
from leapbench.logging import write_json
from leapbench.methods.flat import flat_grads, flat_params, grad_views
from leapbench.methods.leap import Leap
from leapbench.models import ConvNet
from leapbench.protocols import Step
from leapbench.provenance import bench_commit
from leapbench.tasks import Task

DEVICE = torch.device("cpu")  # set by --device


def omniglot_task(seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(400, 1, 28, 28, generator=g) > 0.8).float()  # 20 classes x 20 images, binary like Omniglot
    x, y = x.to(DEVICE), (torch.arange(400) % 20).to(DEVICE)
    return Task(f"task{seed}", x[:300], y[:300], x[300:], y[300:])


def model(channels_last: bool = True) -> ConvNet:
    torch.manual_seed(0)
    net = ConvNet(in_channels=1, num_classes=20, filters=64, layers=4, image_size=28, channels_last=channels_last)
    return net.to(DEVICE)


# ------------------------------------------------------------------------------------------ 1. overhead
def overhead(steps: int, reps: int) -> dict:
    """The inner loop with Leap against the same loop with no meta-learner, interleaved step by step.

    Three learning processes (same task, batches and start) advance one update at a time in turn, the order
    cycling through all six permutations, so drifts in machine speed hit all alike; each rep is one task of
    ``steps`` updates. The arms: the plain loop (what every other method runs: gradients released each step),
    the plain loop with its gradients in one preallocated vector cleared in place (Leap's memory layout without
    its arithmetic), and Leap, driven as the sequential engine drives it. Also times Leap's own hooks
    (``before_backward`` and ``observe``, with the ``Step`` each gets).
    """
    inner = Inner(partial(torch.optim.SGD, lr=0.1), steps=steps, batch_size=20)
    task, plain, flat = omniglot_task(0), model(), model()
    leap = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    leap.setup(model(), inner, 1)
    theta0 = flat_params(leap.params)
    init = {k: v.clone() for k, v in plain.state_dict().items()}
    params, grads = partial(flat_params, leap.work_params), partial(flat_grads, leap.work_params)
    flat_vector = torch.zeros_like(theta0)
    flat_views = grad_views(list(flat.parameters()), flat_vector)
    own = [0.0]

    def timed(fn):
        def call(*args):
            t = time.perf_counter()
            fn(*args)
            own[0] += time.perf_counter() - t

        return call

    orders = list(itertools.permutations(range(3)))
    spent = []
    for rep in range(reps + 1):  # the first rep warms up
        for net in (plain, flat, leap.work):
            net.load_state_dict(init)
        for p, view in zip(flat.parameters(), flat_views):
            p.grad = view
        state = leap.begin_task(theta0)
        hook = timed(lambda i, loss, m: leap.observe(state, Step(i, loss, i == steps - 1, params, grads)))
        runs = [
            inner.updates(plain, task, torch.Generator().manual_seed(1)),
            inner.updates(flat, task, torch.Generator().manual_seed(1), zero_grad=lambda i, f: flat_vector.zero_()),
            inner.updates(
                leap.work,
                task,
                torch.Generator().manual_seed(1),
                hook=hook,
                zero_grad=timed(lambda i, loss: leap.before_backward(state, loss)),
            ),
        ]
        own[0], times = 0.0, [0.0, 0.0, 0.0]
        for i in range(steps):
            for k in orders[i % len(orders)]:
                t = time.perf_counter()
                next(runs[k])
                times[k] += time.perf_counter() - t
        if rep:
            spent.append(times + own)
    total = [sum(r[k] for r in spent) for k in range(4)]

    def versus(k: int) -> dict:
        ratios = [r[2] / r[k] for r in spent]
        return {
            "pct": 100 * (total[2] / total[k] - 1),
            "median_pct": 100 * (statistics.median(ratios) - 1),
            "standard_error_pct": 100 * statistics.stdev(ratios) / math.sqrt(reps) if reps > 1 else None,
        }

    return {
        "steps_per_rep": steps,
        "reps": reps,
        "plain_task_steps_per_s": steps * reps / total[0],
        "flat_task_steps_per_s": steps * reps / total[1],
        "leap_task_steps_per_s": steps * reps / total[2],
        "leap_vs_plain": versus(0),
        "leap_vs_flat": versus(1),
        "own_time_pct": 100 * total[3] / total[2],
        "own_ms_per_step": 1000 * total[3] / (steps * reps),
    }


# -------------------------------------------------------------------------------- 2. reference approach
class ReferenceLeap:
    """The authors' approach, re-implemented: a full state-dict clone (with gradients) at every inner step,
    the increment built parameter by parameter, ``.grad`` of the initialization accumulated in place."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.init = {n: p.detach().clone() for n, p in net.state_dict().items()}
        self.grads = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
        self.tasks = 0

    def init_task(self) -> None:
        self.prev = None
        self.tasks += 1

    def update(self, loss: float, net: torch.nn.Module) -> None:
        params = dict(net.named_parameters())
        state = {n: p.detach().clone() for n, p in net.state_dict(keep_vars=True).items()}
        grads = {n: p.grad.detach().clone() for n, p in params.items()}
        curr = (state, loss, grads)
        if self.prev is not None:
            p_state, p_loss, p_grads = self.prev
            df = -abs(loss - p_loss)
            sq = df * df
            for n in params:
                sq += (state[n] - p_state[n]).pow(2).sum().item()
            norm = sq**0.5
            for n in params:
                add = (p_state[n] - state[n]) - df * p_grads[n]
                self.grads[n] += add / norm
        self.prev = curr

    def step(self, net: torch.nn.Module, meta_lr: float) -> None:
        with torch.no_grad():
            for n, g in self.grads.items():
                self.init[n] -= meta_lr * g / self.tasks
                g.zero_()
        self.tasks = 0


def reference_meta_step(net: torch.nn.Module, ref: ReferenceLeap, tasks: list[Task], steps: int) -> None:
    for i, task in enumerate(tasks):
        net.load_state_dict(ref.init)
        ref.init_task()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net.train()
        for x, y in task.batches(steps, 20, torch.Generator().manual_seed(i)):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            ref.update(loss.item(), net)
            opt.step()
    ref.step(net, 0.1)


def against_reference(tasks_per_step: int, steps: int, reps: int) -> dict:
    tasks = [omniglot_task(s) for s in range(tasks_per_step)]
    inner = Inner(partial(torch.optim.SGD, lr=0.1), steps=steps, batch_size=20)
    ours = Leap("leap", partial(torch.optim.SGD, lr=0.1))
    ours.setup(model(channels_last=True), inner, tasks_per_step)
    ref_net = model(channels_last=False)
    ref = ReferenceLeap(ref_net)

    def time_ours() -> float:
        t = time.perf_counter()
        ours.meta_step(tasks, torch.Generator().manual_seed(0))
        return time.perf_counter() - t

    def time_ref() -> float:
        t = time.perf_counter()
        reference_meta_step(ref_net, ref, tasks, steps)
        return time.perf_counter() - t

    time_ours(), time_ref()
    a, b = [], []
    for _ in range(reps):
        b.append(time_ref())
        a.append(time_ours())
    n, ratios = tasks_per_step * steps, [y / x for x, y in zip(a, b)]
    return {
        "tasks_per_meta_step": tasks_per_step,
        "steps_per_task": steps,
        "reps": reps,
        "ours_task_steps_per_s": n * reps / sum(a),
        "reference_task_steps_per_s": n * reps / sum(b),
        "speedup": sum(b) / sum(a),
        "speedup_median_of_reps": statistics.median(ratios),
        "speedup_standard_error": statistics.stdev(ratios) / math.sqrt(reps),
    }


# ------------------------------------------------------------------------------- 3. batched task training
def batched_vs_sequential(tasks_per_step: int, steps: int, reps: int) -> dict:
    """``method.batched=true`` (vmap over stacked per-task parameters) against the sequential loop."""
    tasks = [omniglot_task(s) for s in range(tasks_per_step)]
    inner = Inner(partial(torch.optim.SGD, lr=0.1), steps=steps, batch_size=20)
    learners = {}
    for batched in (False, True):
        learners[batched] = Leap("leap", partial(torch.optim.SGD, lr=0.1), batched=batched)
        learners[batched].setup(model(), inner, tasks_per_step)
    times = {False: [], True: []}
    for rep in range(reps + 1):
        for batched, learner in learners.items():
            t = time.perf_counter()
            learner.meta_step(tasks, torch.Generator().manual_seed(0))
            if rep:  # the first round warms up
                times[batched].append(time.perf_counter() - t)
    n = tasks_per_step * steps * reps
    return {
        "tasks_per_meta_step": tasks_per_step,
        "steps_per_task": steps,
        "reps": reps,
        "sequential_task_steps_per_s": n / sum(times[False]),
        "batched_task_steps_per_s": n / sum(times[True]),
        "batched_vs_sequential": sum(times[False]) / sum(times[True]),
    }


def batched_equals_sequential(tasks_per_step: int = 3, steps: int = 5) -> float:
    """One float64 meta-step of each path from the same theta^0: ||batched - sequential|| / ||step||."""
    tasks = [omniglot_task(s) for s in range(tasks_per_step)]
    for t in tasks:
        t.x_train = t.x_train.double()
    inner = Inner(partial(torch.optim.SGD, lr=0.1), steps=steps, batch_size=20)
    after = []
    for batched in (False, True):
        learner = Leap("leap", partial(torch.optim.SGD, lr=0.1), batched=batched)
        learner.setup(model().double(), inner, tasks_per_step)
        theta0 = flat_params(learner.params)
        learner.meta_step(tasks, torch.Generator().manual_seed(0))
        after.append(flat_params(learner.params))
    return float((after[1] - after[0]).norm() / (after[0] - theta0).norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="inner steps per task (the paper's 100)")
    ap.add_argument("--reps", type=int, default=16, help="interleaved repetitions (tasks)")
    ap.add_argument("--tasks", type=int, default=4, help="tasks per meta-step in the comparison with the reference")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to measure on a GPU")
    ap.add_argument(
        "--batched-tasks",
        type=int,
        nargs="+",
        default=None,
        help="meta-batch sizes for the batched comparison (default: --tasks)",
    )
    ap.add_argument("--batched-steps", type=int, default=None, help="inner steps there (default: --steps / 2)")
    ap.add_argument("--out", type=Path, default=Path("results/bench/leap.json"))
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = {
        "command": "python " + " ".join(sys.argv),
        "commit": bench_commit(),
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "overhead": overhead(args.steps, args.reps),
        "reference": against_reference(args.tasks, args.steps, max(2, args.reps // 2)),
        "batched": [
            batched_vs_sequential(n, args.batched_steps or args.steps // 2, 2)
            for n in args.batched_tasks or [args.tasks]
        ],
        "batched_relative_difference_float64": batched_equals_sequential(),
    }
    o, r = res["overhead"], res["reference"]
    print(f"{res['device']}, threads {res['threads']}, Conv4 64 filters, batch 20, {args.steps} steps per task")

    def pct(v: dict) -> str:
        return f"{v['pct']:+.2f} % +- {v['standard_error_pct'] or 0:.2f} (median of reps {v['median_pct']:+.2f} %)"

    print(f"  inner loop alone       {o['plain_task_steps_per_s']:7.1f} task-steps/s (gradients released every step)")
    print(f"  ... gradients in place {o['flat_task_steps_per_s']:7.1f} task-steps/s (one vector, cleared in place)")
    print(f"  inner loop + Leap      {o['leap_task_steps_per_s']:7.1f} task-steps/s")
    print(f"  Leap against the plain loop    {pct(o['leap_vs_plain'])}; standard errors over {o['reps']} reps")
    print(f"  Leap against in-place gradients {pct(o['leap_vs_flat'])}")
    print(f"  Leap's own time        {o['own_time_pct']:7.2f} % ({o['own_ms_per_step']:.3f} ms/step)")
    print(f"  reference approach     {r['reference_task_steps_per_s']:7.1f} task-steps/s (state-dict clone, NCHW)")
    print(
        f"  leapbench Leap         {r['ours_task_steps_per_s']:7.1f} task-steps/s  -> {r['speedup']:.2f}x +- "
        f"{r['speedup_standard_error']:.2f} (median of {r['reps']} reps {r['speedup_median_of_reps']:.2f}x)"
    )
    for b in res["batched"]:
        print(
            f"  batched (vmap) Leap    {b['batched_task_steps_per_s']:7.1f} task-steps/s against sequential "
            f"{b['sequential_task_steps_per_s']:.1f} -> {b['batched_vs_sequential']:.2f}x "
            f"({b['tasks_per_meta_step']} tasks of {b['steps_per_task']} steps)"
        )
    print(f"  batched = sequential   relative difference {res['batched_relative_difference_float64']:.1e} (float64)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, res)


if __name__ == "__main__":
    main()
