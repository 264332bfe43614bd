"""The one runner: build the experiment from its config, (resume,) meta-train with early stopping, test, summarize.

``run(cfg)`` takes a composed config (``run.py`` composes it with Hydra; tests use Hydra's compose API) and
never asks Hydra for anything else, so it runs the same under ``@hydra.main``, a launcher or a test. Its
neighbours: ``rundir`` (run identity, lock, finished runs), ``checkpoint`` (resume), ``loop`` (the meta-training
loop), ``provenance`` (command, commit, libraries).
"""

from __future__ import annotations

import os
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from . import checkpoint, distributed, schema
from .errors import ConfigError, LeapError, WriteError
from .evaluation import evaluate
from .logging import NullLogger, TestProgress, write_json
from .loop import MetaTraining, eval_seeds, test_schedule, where
from .methods.base import InitializationLearner
from .protocols import Benchmark
from .provenance import provenance
from .rundir import PRESENTATION_KEYS, finished_run, result_config, run_lock, start_run_dir
from .tasks import Task

__all__ = ["build", "eval_seeds", "method_node", "run", "validate"]

# What a model gets from its benchmark (``data.model_kwargs``), stubbed to check the model's own keys early.
MODEL_STUBS = {
    "leapbench.models.MultiHeadConvNet": {"heads": {"stub": 2}},
    "leapbench.rl.a2c.ActorCritic": {"heads": {"stub": 2}},
}
# What a method may need (``MetaLearner.requires``) and a learning process or benchmark may offer (``provides``).
NEEDS = {
    "labels": "labelled training batches (a supervised learning process)",
    "shared_head": "tasks that share one output layer",
    "fixed_length": "every task to train for exactly inner.steps updates (no inner.epochs, no inner.patience)",
    "plain_sgd": "a plain SGD inner optimizer (no momentum or weight decay)",
}


def build(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that surfaces our own errors instead of Hydra's wrapper."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, LeapError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"Cannot build {node.get('_target_', 'config node')}: {e}") from e


def check(cfg: DictConfig) -> None:
    t = cfg.train
    for key in ("seed", "data.split_seed"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int) and not 0 <= value < 2**32:
            raise ConfigError(f"{key}={value} must be in 0..2**32-1.")
    if not str(cfg.paths.runs).strip():
        raise ConfigError("paths.runs is empty; name the folder for run directories (default: ./runs).")
    if not re.fullmatch(r"[\w.,=+-]*", str(cfg.tag)):
        raise ConfigError(
            f"tag={cfg.tag} becomes part of the run's folder name; use letters, digits and . , = + - _ only."
        )
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads={cfg.threads} must be at least 1 (or null: PyTorch's default).")
    if t.meta_steps < 0:
        raise ConfigError(f"train.meta_steps={t.meta_steps} must be >= 0.")
    if t.meta_batch_size < 1:
        raise ConfigError(f"train.meta_batch_size={t.meta_batch_size} must be at least 1.")
    if t.val_every is not None and t.val_every < 1:
        raise ConfigError(f"train.val_every={t.val_every} must be at least 1 (or null to never validate).")
    if t.ckpt_every is not None and t.ckpt_every < 1:
        raise ConfigError(f"train.ckpt_every={t.ckpt_every} must be at least 1 (or null for no checkpoints).")
    for s in test_schedule(cfg):
        if not 1 <= s <= t.meta_steps:
            raise ConfigError(
                f"train.test_at={list(t.test_at)} holds {s}; every entry must be a meta-step in "
                f"1..train.meta_steps={t.meta_steps}."
            )


def validate(cfg: DictConfig) -> tuple:
    """Every check that needs no data, before anything is written: the device, the schema's types and choices
    (``schema.check_types``), ranges (here and in the constructors) and the method x experiment pair.
    Returns the learning process, the method and the validation and test adaptations, built."""
    check_device(str(cfg.device))
    schema.check_types(cfg)
    check(cfg)
    inner, learner = build(cfg.inner), build(method_node(cfg))
    build(cfg.model, **MODEL_STUBS.get(cfg.model._target_, {}))  # its ranges (the real one waits for the data)
    test_adapt, val_adapt = (build_adaptation(cfg, group) for group in ("eval", "val"))
    if cfg.device != "cpu" and inner.cpu_only:
        raise ConfigError(f"experiment={cfg.experiment_name} runs on the CPU only; use device=cpu.")
    offered = inner.provides | cast(Benchmark, get_class(cfg.data._target_)).provides
    missing = sorted(learner.requires - offered)
    if missing:
        how, fix = (
            (" with method.batched=true", "set method.batched=false")
            if learner.batched
            else ("", "choose another method (README, Methods)")
        )
        raise ConfigError(
            f"method={learner.name}{how} needs {NEEDS[missing[0]]}, which experiment="
            f"{cfg.experiment_name} does not offer with this config; {fix}."
        )
    for group, adapt in (("eval", test_adapt), ("val", val_adapt)):
        if adapt.batched and not {"shared_head", "plain_sgd"} <= offered:
            raise ConfigError(
                f"{group}.batched=true adapts tasks side by side on one shared head with plain SGD, which "
                f"experiment={cfg.experiment_name} does not offer with this config; set {group}.batched=false."
            )
    if learner.batched and cfg.train.on_divergence == "skip":
        raise ConfigError("method.batched=true does not support train.on_divergence=skip; use one or the other.")
    return inner, learner, val_adapt, test_adapt


def check_data(cfg: DictConfig, data: Benchmark) -> None:
    """The checks that need the tasks: something to test, batches the training sets can fill, labels the model
    can output. Still before anything is written."""
    if not data.test:
        raise ConfigError(f"experiment={cfg.experiment_name} has no test tasks with this config; name at least one.")
    tasks = [t for t in [*data.pretrain, *data.val, *data.test] if isinstance(t, Task)]
    size = cfg.inner.get("batch_size")
    small = min(tasks, key=lambda t: len(t.y_train), default=None)
    if size is not None and small is not None and size > len(small.y_train):
        raise ConfigError(
            f"inner.batch_size={size} is larger than task {small.name}'s {len(small.y_train)} training images; "
            f"choose 1..{len(small.y_train)}."
        )
    channels = cfg.model.get("in_channels")
    if channels is not None and tasks and tasks[0].x_train.dim() == 4 and tasks[0].x_train.shape[1] != channels:
        raise ConfigError(
            f"model.in_channels={channels} but the images have {tasks[0].x_train.shape[1]} channel(s); "
            f"set model.in_channels={tasks[0].x_train.shape[1]}."
        )
    outputs = cfg.model.get("num_classes")
    labels = max((int(t.y_train.max()) + 1 for t in tasks if t.head is None and len(t.y_train)), default=0)
    if outputs is not None and labels > outputs:
        raise ConfigError(
            f"model.num_classes={outputs} is smaller than the tasks' {labels} classes; set model.num_classes={labels}."
        )


def method_node(cfg: DictConfig) -> DictConfig:
    """``cfg.method`` without its presentation keys (label, colour): what the method's class is built from."""
    node = cast(dict, OmegaConf.to_container(cfg.method, resolve=True))  # resolved here: the copy has no parent config
    return OmegaConf.create({k: v for k, v in node.items() if k not in PRESENTATION_KEYS})


def build_adaptation(cfg: DictConfig, group: str):
    """``build(cfg.eval)`` or ``build(cfg.val)``, with the group named in a refusal (the class serves both)."""
    try:
        return build(cfg[group])
    except ConfigError as e:
        raise ConfigError(f"{group}.{e}") from None


def check_device(name: str) -> int | None:
    """The GPU index that ``device`` names (None for the CPU); a ConfigError if it is malformed or not there."""
    if name == "cpu":
        return None
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"device={name} is not allowed; choose cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} but PyTorch sees no CUDA GPU; run with device=cpu, or install a CUDA "
            "build of PyTorch on a machine with a GPU."
        )
    index = int(os.environ.get("LOCAL_RANK", "0")) if name == "cuda" else int(name.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} asks for GPU {index}, but only {torch.cuda.device_count()} are visible.")
    return index


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
    data = build(cfg.data)
    data.to(device)  # images live on the run's device (a no-op on the CPU)
    seconds = {"data": round(time.perf_counter() - start, 3)}
    learner.skip_diverging = cfg.train.on_divergence == "skip"
    check_data(cfg, data)
    with torch.random.fork_rng(devices=[]):  # model init from the run seed, without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = build(cfg.model, **data.model_kwargs).to(device)  # e.g. Multi-CV's heads
        learner.setup(model, inner, len(data.pretrain))  # its refusals (method.scope, ...) come before any write
    if learner.trains and not data.pretrain:
        raise ConfigError(f"method={learner.name} needs pretraining tasks; set data.num_pretrain >= 1.")
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
    logger = build(cfg.logger)(run_dir=cfg.run_dir, run_name=cfg.run_name, config=config) if main else NullLogger()
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
    scores = loop.test_adapt.scores  # Omniglot, Multi-CV: error, auc, train_error; Atari: returns
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
