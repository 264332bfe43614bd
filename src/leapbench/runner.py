"""The one runner: build the experiment from its config, (resume,) meta-train with early stopping, test, summarize.

``run(cfg)`` takes a composed config (``run.py`` composes it with Hydra; tests use Hydra's compose API) and
never asks Hydra for anything else, so it runs the same under ``@hydra.main``, a launcher or a test. Its
neighbours: ``checks`` (building and every check before a write), ``rundir`` (run identity, lock, finished runs),
``checkpoint`` (resume), ``loop`` (the meta-training loop), ``provenance`` (command, commit, libraries).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, distributed
from .checks import build, check_data, check_device, validate
from .errors import ConfigError, WriteError
from .evaluation import evaluate
from .logging import NullLogger, TestProgress, write_json
from .loop import MetaTraining, where
from .methods.base import InitializationLearner
from .provenance import provenance
from .rundir import finished_run, result_config, run_lock, start_run_dir

__all__ = ["run"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (under torchrun each rank takes ``cuda:LOCAL_RANK``) or ``cuda:N``, made current."""
    index = check_device(name)
    if index is None:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Meta-train, validate and test one configuration; return its summary (also in ``summary.json``).

    Under ``torchrun`` every rank calls this: the ranks split each meta-batch and each evaluation, and rank 0
    alone writes the run directory and the logs.
    """
    inner, learner, val_adapt, test_adapt = validate(cfg)
    device = resolve_device(str(cfg.device))
    distributed.init(device)
    done = finished_run(cfg, refuse=False)  # a different finished run is refused below, once every value is checked
    if done is not None:
        say(f"{cfg.run_dir} already finished with this config; skipping (overwrite=true reruns it).")
        return done
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))

    start = time.perf_counter()
    data = build(cfg.data, "data")
    data.to(device)  # images live on the run's device (a no-op on the CPU)
    seconds = {"data": round(time.perf_counter() - start, 3)}
    learner.skip_diverging = cfg.train.on_divergence == "skip"
    check_data(cfg, data, learner, {"val": val_adapt, "eval": test_adapt})
    with torch.random.fork_rng(devices=[]):  # model init from the run seed, without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = build(cfg.model, "model", **data.model_kwargs).to(device)  # e.g. Multi-CV's heads
        learner.setup(model, inner, len(data.pretrain))  # its refusals (method.scope, ...) come before any write
    if learner.trains and not data.pretrain:
        fix = (
            "name games in data.pretrain (or null: every game of data.pool not held out)"
            if "pretrain" in cfg.data
            else "set data.num_pretrain >= 1"
        )
        raise ConfigError(f"method={learner.name} needs pretraining tasks; {fix}.")
    if distributed.world() > 1 and learner.trains and not isinstance(learner, InitializationLearner):
        raise ConfigError(
            f"method={learner.name} trains one model on all tasks at once and has no task-parallel "
            "mode; run it without torchrun (one process per run, e.g. launcher=joblib)."
        )
    finished_run(cfg)  # a different finished run: refused now that every value is known good, before the lock
    # Only now, and only on rank 0: a config or data error leaves nothing behind.
    with run_lock(Path(cfg.run_dir)) if distributed.is_main() else nullcontext():
        # Again, under the lock (another job may have finished it); rank 0 decides for every rank.
        done = distributed.broadcast(finished_run(cfg) if distributed.is_main() else None)
        return (
            done
            if done is not None
            else _run(cfg, overrides, data, inner, learner, val_adapt, test_adapt, device, seconds)
        )


def say(message: str) -> None:
    if distributed.is_main():
        print(f"[leapbench] {message}", flush=True)


def _run(cfg, overrides, data, inner, learner, val_adapt, test_adapt, device, seconds) -> dict:
    main, run_dir = distributed.is_main(), Path(cfg.run_dir)
    config_hash = checkpoint.config_hash(result_config(cfg))
    # Rank 0 reads the checkpoint and hands it to every rank (run directories need not be shared across nodes).
    resume = distributed.broadcast(None if cfg.overwrite or not main else checkpoint.load(run_dir, config_hash))
    if main:
        start_run_dir(cfg, resuming=resume is not None)

    config = OmegaConf.to_container(cfg, resolve=True)
    logger = (
        build(cfg.logger, "logger")(run_dir=cfg.run_dir, run_name=cfg.run_name, config=config) if main else NullLogger()
    )
    origin = provenance(overrides)  # taken at the start: the code that runs is the code recorded
    start = time.time()
    exit_code = 1
    try:
        loop = MetaTraining(cfg, data, inner, learner, val_adapt, test_adapt, logger, config_hash)
        if resume is not None:
            say(f"resuming {cfg.run_dir} after meta-step {resume['state']['meta_step']}")
            loop.resume(resume)
        loop.run()
        test_start = time.perf_counter()
        test = _test(cfg, loop, logger)
        seconds |= loop.state["seconds"] | {"test": round(time.perf_counter() - test_start, 3)}
        summary = _summary(cfg, data, learner, loop, test) | {
            "status": "finished",
            "wall_time_s": round(time.time() - start, 1),
            "seconds": seconds,  # per phase: data (loading and moving), meta_train, validation, test_at, test
            **origin,
            "world_size": distributed.world(),
            "device": str(device),
        }
        logger.summary(summary)
        if main:
            (run_dir / checkpoint.NAME).unlink(missing_ok=True)  # finished: summary.json is the record
        exit_code = 0
        return summary
    except BaseException as e:
        # Killed by a signal handler (SLURM preemption, submitit requeue) or Ctrl-C: interrupted; else crashed.
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "crashed"
        try:
            if main:
                write_json(
                    run_dir / "summary.json",
                    {
                        "status": status,
                        "error": f"{type(e).__name__}: {e}",
                        "wall_time_s": round(time.time() - start, 1),
                    },
                )
        except WriteError:
            pass  # the disk is full or read-only: the original error says so
        raise
    finally:
        logger.close(exit_code)


def _test(cfg: DictConfig, loop: MetaTraining, logger: Any) -> dict:
    """Test the chosen initialization on the benchmark's test tasks; save it (``init.pt``) and the per-task results."""
    init, step, main = loop.initialization(), loop.state["meta_step"], distributed.is_main()
    if main:
        checkpoint.save(Path(cfg.run_dir), init.state_dict(), name="init.pt")  # the tested initialization
    with where("Test evaluation"), TestProgress(logger, step, cfg.progress and main) as monitor:
        test = evaluate(init, loop.data.test, loop.inner, loop.test_adapt, loop.test_seed, monitor)
    scores = loop.test_adapt.scores  # error, auc, train_error, oracle_error; Atari: return, mean_return
    logger.log({"meta_step": step, "split": "test", **{k: test[k] for k in scores}, "curve": test["curve"]})
    if main:
        write_json(Path(cfg.run_dir) / "eval_test.json", test)
    return test


def _summary(cfg: DictConfig, data: Any, learner: Any, loop: MetaTraining, test: dict) -> dict:
    scores, best, state = loop.test_adapt.scores, loop.state["best"], loop.state
    return {
        "experiment": cfg.experiment_name,
        "method": learner.name,
        "scale": cfg.scale.name,
        "cell": cfg.cell,
        "label": cfg.method.get("label", learner.name),
        "color": cfg.method.get("color"),
        "num_pretrain": len(data.pretrain),
        "seed": cfg.seed,
        "split_seed": cfg.data.get("split_seed"),
        "test": {k: test[k] for k in scores}
        | {
            f"{scores[0]}_per_task": [round(x[scores[0]], 2) for x in test["tasks"]],
            "tasks": [x["name"] for x in test["tasks"]],
        },
        "val_tasks": [x.name for x in data.val],
        "pretrain_tasks": [x.name for x in data.pretrain],
        "val_best": None if best is None else {k: best[k] for k in ("meta_step", "error", "auc")},
        "test_at": state["test_at"],
        "meta_steps_done": state["meta_step"],
        "stopped_early": state["stopped"],
        "mean_adapt_steps": float(np.mean([x["steps"] for x in test["tasks"]])),
    }
