"""Atari throughput: the vectorised emulator alone against the full A2C learning loop, in emulator frames/s.

Measured in one run, on this machine, for one game (Pong by default), 32 envs, the env settings of
``leapbench.rl.atari.make_env`` (84x84 RGB, frame skip 4):

* emulator: ``AtariVectorEnv`` stepped with uniformly random actions;
* A2C: ``A2C.train`` with the paper's settings (Mnih-2013 ActorCritic, 5-step unroll, RMSProp).

Both rates are steady state: env construction and the seeded reset (reported separately as ``startup_s``)
are left out, and the A2C rate is timed from the end of its first update. Frames are emulator frames
summed over envs (4 per env step). Prints the figures and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from leapbench.logging import write_json
from leapbench.provenance import bench_commit
from leapbench.rl.a2c import A2C, ActorCritic, Game
from leapbench.rl.atari import action_counts, make_env

FRAMESKIP = 4


def emulator_rate(game: str, num_envs: int, threads: int, seconds: float) -> dict:
    """Frames/s of the vector env under random actions."""
    t0 = time.perf_counter()
    env = make_env(game, num_envs, seed=0, threads=threads)
    env.reset()
    startup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n_actions = env.single_action_space.n
    try:
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            env.step(rng.integers(0, n_actions, num_envs))
            steps += 1
        elapsed = time.perf_counter() - t0
    finally:
        env.close()
    return {
        "frames_per_s": steps * num_envs * FRAMESKIP / elapsed,
        "frames": steps * num_envs * FRAMESKIP,
        "seconds": elapsed,
        "startup_s": startup,
    }


def a2c_rate(game: str, num_envs: int, threads: int, seconds: float) -> dict:
    """Frames/s of the A2C learning loop (acting, learning and env) after its first update."""
    a2c = A2C(
        partial(torch.optim.RMSprop, lr=1e-4, eps=1e-4, alpha=0.99),
        updates=10**9,
        num_envs=num_envs,
        env_threads=threads,
    )
    model = ActorCritic({game: action_counts()[game]})
    marks: list[tuple[float, int]] = []

    def after_step(i: int) -> bool:
        marks.append((time.perf_counter(), a2c.frames))
        return marks[-1][0] - marks[0][0] >= seconds

    t0 = time.perf_counter()
    a2c.train(model, Game(game), torch.Generator().manual_seed(0), after_step=after_step)
    (t1, f1), (t2, f2) = marks[0], marks[-1]
    return {
        "frames_per_s": (f2 - f1) / (t2 - t1),
        "frames": f2 - f1,
        "seconds": t2 - t1,
        "updates": len(marks) - 1,
        "startup_and_first_update_s": t1 - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--game", default="pong")
    ap.add_argument("--seconds", type=float, default=30.0, help="timed seconds per measurement")
    ap.add_argument("--threads", type=int, default=2, help="env threads (and torch threads unless --torch-threads)")
    ap.add_argument("--torch-threads", type=int, default=None)
    ap.add_argument("--envs", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("results/bench/atari.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads or args.threads)
    load_before = os.getloadavg()
    emu = emulator_rate(args.game, args.envs, args.threads, args.seconds)
    loop = a2c_rate(args.game, args.envs, args.threads, args.seconds)
    res = {
        "command": "python " + " ".join(sys.argv),
        "commit": bench_commit(),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "env_threads": args.threads,
        "game": args.game,
        "num_envs": args.envs,
        "emulator": emu,
        "a2c": loop,
        "a2c_over_emulator": loop["frames_per_s"] / emu["frames_per_s"],
    }
    print(
        f"{args.game}, {args.envs} envs, {args.threads} env threads, {res['torch_threads']} torch threads "
        f"(load average before {load_before[0]:.2f})"
    )
    print(f"  emulator, random actions  {emu['frames_per_s']:8.0f} frames/s  (startup {emu['startup_s']:.1f} s)")
    print(f"  A2C loop                  {loop['frames_per_s']:8.0f} frames/s  ({loop['updates']} updates)")
    print(f"  A2C / emulator            {res['a2c_over_emulator']:8.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, res)


if __name__ == "__main__":
    main()
