"""The one runner: build the experiment from its config, meta-train, validate, test and log.

``run(cfg)`` takes a composed config (``run.py`` composes it with Hydra; tests use Hydra's compose API) and
never asks Hydra for anything else, so it runs the same under ``@hydra.main``, a launcher or a test.
"""
from __future__ import annotations

import copy
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import checkpoint, distributed, schema
from .errors import ConfigError, LeapError, WriteError, write_error
from .evaluation import evaluate
from .inner import DivergenceError
from .logging import NullLogger, atomic_open, write_json
from .methods.base import InitializationLearner

# Keys that do not change what a run computes: a finished run with only these changed is the same run.
NON_RESULT_KEYS = ("progress", "overwrite", "threads", "device", "logger", "paths", "cell", "run_name")
# Train keys that say how to survive faults, not what to compute (a run that finished computed the same either way).
NON_RESULT_TRAIN_KEYS = ("ckpt_every", "on_divergence")
# Method keys for tables and figures only: not passed to the method's class, never part of a run's identity.
PRESENTATION_KEYS = ("label", "color")
# Keys added after runs were recorded: at these defaults they leave a run's identity as it was.
ADDED_DEFAULTS = {("method", "batched"): False, ("train", "test_at"): [], ("inner", "patience"): None,
                  ("inner", "check_every"): 20, ("eval", "stop_on"): "heldout", ("eval", "val_per_class"): 3}
REPO = Path(__file__).resolve().parents[2]
CODE = ("src", "conf", "run.py", "pyproject.toml")
LOCK = ".lock"
# What a model gets from its benchmark (``data.model_kwargs``), stubbed to check the model's own keys early.
MODEL_STUBS = {"leapbench.models.MultiHeadConvNet": {"heads": {"stub": 2}},
               "leapbench.rl.a2c.ActorCritic": {"heads": {"stub": 2}}}
# What a method may need (``MetaLearner.requires``) and a learning process or benchmark may offer (``provides``).
NEEDS = {"labels": "labelled training batches (a supervised learning process)",
         "shared_head": "tasks that share one output layer",
         "fixed_length": "every task to train for exactly inner.steps updates (no inner.epochs, no inner.patience)",
         "plain_sgd": "a plain SGD inner optimizer (no momentum or weight decay)"}


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
            raise ConfigError(f"train.test_at={list(t.test_at)} holds {s}; every entry must be a meta-step in "
                              f"1..train.meta_steps={t.meta_steps}.")


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
    offered = inner.provides | get_class(cfg.data._target_).provides
    missing = sorted(learner.requires - offered)
    if missing:
        how, fix = ((" with method.batched=true", "set method.batched=false") if learner.batched else
                    ("", "choose another method (README, Methods)"))
        raise ConfigError(f"method={learner.name}{how} needs {NEEDS[missing[0]]}, which experiment="
                          f"{cfg.experiment_name} does not offer with this config; {fix}.")
    if learner.batched and cfg.train.on_divergence == "skip":
        raise ConfigError("method.batched=true does not support train.on_divergence=skip; use one or the other.")
    return inner, learner, val_adapt, test_adapt


def method_node(cfg: DictConfig) -> DictConfig:
    """``cfg.method`` without its presentation keys (label, colour): what the method's class is built from."""
    node = OmegaConf.to_container(cfg.method, resolve=True)  # resolved here: the copy has no parent config
    return OmegaConf.create({k: v for k, v in node.items() if k not in PRESENTATION_KEYS})


def build_adaptation(cfg: DictConfig, group: str):
    """``build(cfg.eval)`` or ``build(cfg.val)``, with the group named in a refusal (the class serves both)."""
    try:
        return build(cfg[group])
    except ConfigError as e:
        raise ConfigError(f"{group}.{e}") from None


def test_schedule(cfg: DictConfig) -> list[int]:
    """The meta-steps after which the current initialization is also tested (``train.test_at``), sorted."""
    at = cfg.train.get("test_at") or []
    if isinstance(at, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in at):
        raise ConfigError(f"train.test_at={at!r} must be a list of meta-steps, e.g. train.test_at=[16,40,80,200].")
    return sorted(set(at))


def check_device(name: str) -> int | None:
    """The GPU index that ``device`` names (None for the CPU); a ConfigError if it is malformed or not there."""
    if name == "cpu":
        return None
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"device={name} is not allowed; choose cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={name} but PyTorch sees no CUDA GPU; run with device=cpu, or install a CUDA "
                          "build of PyTorch on a machine with a GPU.")
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


def provenance(overrides: list[str] | None, code: tuple[str, ...] = CODE) -> dict:
    """The command, commit and library versions behind a result (``-dirty``: uncommitted changes under ``code``)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no", "--", *code):
        commit += "-dirty"  # uncommitted changes to code or configs (docs do not count)
    return {
        "command": "python run.py " + " ".join(overrides or []),
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def bench_commit() -> str:
    """The commit a benchmark ran at (``-dirty`` with uncommitted changes to the code or the scripts)."""
    return provenance(None, CODE + ("scripts",))["commit"]


def upgrade(config: dict) -> dict:
    """A config recorded by an earlier version, in today's keys, for the same computation (a copy).

    ``data.seed`` (the legacy split's seed) became ``data.split_seed``; Multi-CV stopped on validation images
    before ``eval.stop_on`` existed (``val`` is ``eval`` there).
    """
    c = copy.deepcopy(config)
    data = c.get("data")
    if isinstance(data, dict) and "seed" in data:
        seed = data.pop("seed")
        if data.get("legacy_split"):
            data["split_seed"] = seed
    if c.get("experiment_name") == "multicv":
        for group in ("eval", "val"):
            if isinstance(c.get(group), dict):
                c[group].setdefault("stop_on", "val")
    return c


def _result_config(config: DictConfig | dict) -> dict:
    """The resolved config without the keys that only say where things are (they never change results)."""
    c = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
    c = upgrade(c)
    c = {k: v for k, v in c.items() if k not in NON_RESULT_KEYS and k != "run_dir"}
    if isinstance(c.get("data"), dict):
        c["data"] = {k: v for k, v in c["data"].items() if k not in ("root", "cache_dir", "download")}
    if isinstance(c.get("train"), dict):
        c["train"] = {k: v for k, v in c["train"].items() if k not in NON_RESULT_TRAIN_KEYS}
    if isinstance(c.get("method"), dict):
        c["method"] = {k: v for k, v in c["method"].items() if k not in PRESENTATION_KEYS}
    defaults = ADDED_DEFAULTS | ({("eval", "stop_on"): "val", ("val", "stop_on"): "val"}
                                 if c.get("experiment_name") == "multicv" else {})
    for (group, key), default in defaults.items():
        if isinstance(c.get(group), dict) and key in c[group] and c[group][key] == default:
            c[group] = {k: v for k, v in c[group].items() if k != key}
    return c


def finished_run(cfg: DictConfig) -> dict | None:
    """The summary of a finished run with this config in ``run_dir``, if any; refuse to clobber a different one."""
    run_dir = Path(cfg.run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    if cfg.overwrite or not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "finished":
        return None  # crashed or interrupted: run again
    old = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.exists() else None
    if old is not None and _result_config(old) == _result_config(cfg):
        return summary
    raise ConfigError(
        f"{run_dir} holds a finished run with a different config. Set tag=<name> to keep both, "
        "or overwrite=true to replace it."
    )


class RunsFolderCheck(Callback):
    """Hydra callback: fail with one message, exit 2, when ``paths.runs`` cannot be written.

    A multirun's sweeper writes ``multirun.yaml`` there before any job starts, so an unwritable runs folder
    would otherwise surface as Hydra's traceback. The folder itself is not created here: the nearest folder
    that exists is probed (and left as it was).
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not isinstance(config.paths.runs, str):
            return  # not a path at all: the schema refuses it (runner.validate)
        runs = Path(config.paths.runs).absolute()
        try:
            folder = next(p for p in (runs, *runs.parents) if p.exists())
            if not folder.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(folder))
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")  # unique: ranks check at once
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            print(f"error: {write_error(runs, e)}", file=sys.stderr)
            sys.exit(2)

    on_multirun_start = on_run_start


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` and hold an exclusive lock on it while this job works there.

    A second job aimed at the same directory fails at once instead of interleaving files. The kernel drops
    the lock when the process dies (even by SIGKILL), so a preempted run never leaves a stale lock.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")
    except OSError as e:
        raise write_error(run_dir, e) from e
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise ConfigError(
            f"{run_dir} is in use by {owner}. Two jobs get one directory when they differ only in keys that the "
            "run name omits: give each its own tag=<name>, or wait for the other job to finish."
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def start_run_dir(cfg: DictConfig, resuming: bool) -> None:
    """Clear a replaced run's files (all but the metrics when resuming) and save the config."""
    run_dir = Path(cfg.run_dir)
    stale = ["summary.json", "eval_test.json", "init.pt"] + ([] if resuming else ["metrics.jsonl", checkpoint.NAME])
    try:
        for name in stale:
            (run_dir / name).unlink(missing_ok=True)
        with atomic_open(run_dir / "config.yaml") as f:
            OmegaConf.save(cfg, f, resolve=True)
    except OSError as e:
        raise write_error(run_dir, e) from e


@contextmanager
def where(label: str):
    """Name the phase (meta-step, validation, test) in a divergence message."""
    try:
        yield
    except DivergenceError as e:
        raise DivergenceError(f"{label}: {e}") from None


def eval_seeds(seed: int) -> tuple[int, int]:
    """The validation and test seeds of a run: fixed per seed, so every method sees the same data."""
    return 2 * seed + 1, 2 * seed


class TaskSampler:
    """Meta-batches as in the reference code: shuffled passes over the tasks, concatenated and cut."""

    def __init__(self, num_tasks: int, generator: torch.Generator) -> None:
        self.n, self.g, self.queue = num_tasks, generator, []

    def sample(self, k: int) -> list[int]:
        while len(self.queue) < k:
            self.queue += torch.randperm(self.n, generator=self.g).tolist()
        out, self.queue = self.queue[:k], self.queue[k:]
        return out


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Meta-train, validate and test one configuration; return its summary (also in ``summary.json``).

    Under ``torchrun`` every rank calls this: the ranks split each meta-batch and each evaluation, and rank 0
    alone writes the run directory and the logs.
    """
    inner, learner, val_adapt, test_adapt = validate(cfg)
    device = resolve_device(str(cfg.device))
    distributed.init(device)
    done = finished_run(cfg)
    if done is not None:
        say(f"{cfg.run_dir} already finished with this config; skipping (overwrite=true reruns it).")
        return done
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))

    data = build(cfg.data)
    learner.skip_diverging = cfg.train.on_divergence == "skip"
    if learner.trains and not data.pretrain:
        raise ConfigError(f"method={learner.name} needs pretraining tasks; set data.num_pretrain >= 1.")
    if distributed.world() > 1 and learner.trains and not isinstance(learner, InitializationLearner):
        raise ConfigError(f"method={learner.name} trains one model on all tasks at once and has no task-parallel "
                          "mode; run it without torchrun (one process per run, e.g. launcher=joblib).")
    # Only now, and only on rank 0: a config or data error leaves nothing behind.
    with run_lock(Path(cfg.run_dir)) if distributed.is_main() else nullcontext():
        # Again, under the lock (another job may have finished it); rank 0 decides for every rank.
        done = distributed.broadcast(finished_run(cfg) if distributed.is_main() else None)
        return done if done is not None else _run(cfg, overrides, data, inner, learner, val_adapt, test_adapt, device)


def say(message: str) -> None:
    if distributed.is_main():
        print(f"[leapbench] {message}", flush=True)


def _run(cfg, overrides, data, inner, learner, val_adapt, test_adapt, device) -> dict:
    main = distributed.is_main()
    config_hash = checkpoint.config_hash(_result_config(cfg))
    # Rank 0 reads the checkpoint and hands it to every rank (run directories need not be shared across nodes).
    resume = None if cfg.overwrite or not main else checkpoint.load(Path(cfg.run_dir), config_hash)
    resume = distributed.broadcast(resume)
    if main:
        start_run_dir(cfg, resuming=resume is not None)
    with torch.random.fork_rng(devices=[]):  # model init from the run seed, without touching global RNG state
        torch.manual_seed(cfg.seed)
        model = build(cfg.model, **data.model_kwargs).to(device)  # e.g. Multi-CV's heads
        learner.setup(model, inner, len(data.pretrain))

    config = OmegaConf.to_container(cfg, resolve=True)
    logger = build(cfg.logger)(run_dir=cfg.run_dir, run_name=cfg.run_name, config=config) if main else NullLogger()
    origin = provenance(overrides)  # taken at the start: the code that runs is the code recorded
    start = time.time()
    exit_code = 1
    try:
        if resume is not None:
            say(f"resuming {cfg.run_dir} after meta-step {resume['state']['meta_step']}")
        summary = _meta_train_and_test(cfg, data, inner, learner, val_adapt, test_adapt, logger, resume, config_hash)
        summary.update(status="finished", wall_time_s=round(time.time() - start, 1), **origin,
                       world_size=distributed.world(), device=str(device))
        logger.summary(summary)
        if main:
            (Path(cfg.run_dir) / checkpoint.NAME).unlink(missing_ok=True)  # finished: summary.json is the record
        exit_code = 0
        return summary
    except BaseException as e:
        # Killed by a signal handler (SLURM preemption, submitit requeue) or Ctrl-C: interrupted; else crashed.
        status = "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "crashed"
        try:
            if main:
                write_json(Path(cfg.run_dir) / "summary.json", {"status": status, "error": f"{type(e).__name__}: {e}",
                                                                "wall_time_s": round(time.time() - start, 1)})
        except WriteError:
            pass  # the disk is full or read-only: the original error says so
        raise
    finally:
        logger.close(exit_code)


class TestProgress:
    """The monitor of a long test adaptation (Atari: frames per game): a progress bar with ETA per task, and each
    report streamed to the logger (and W&B) as a ``test_progress/<task>`` row while the test runs."""

    def __init__(self, logger, step: int, show: bool) -> None:
        self.logger, self.step, self.show, self.bars = logger, step, show, {}

    def __call__(self, task: str, done: int, total: int, score: float | None) -> None:
        if task not in self.bars:
            self.bars[task] = tqdm(total=total, desc=f"test {task}", unit="frame", unit_scale=True,
                                   disable=not self.show, dynamic_ncols=True)
        bar = self.bars[task]
        bar.update(done - bar.n)
        if score is not None:
            bar.set_postfix(avg_return=f"{score:.1f}")
            self.logger.log({"meta_step": self.step, "split": f"test_progress/{task}", "frames": done, "return": score})
            self.logger.commit()

    def __enter__(self) -> TestProgress:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()


def _meta_train_and_test(cfg, data, inner, learner, val_adapt, test_adapt, logger, resume, config_hash) -> dict:
    t = cfg.train
    run_dir = Path(cfg.run_dir)
    g = torch.Generator().manual_seed(cfg.seed)  # task sampling, batches and augmentation during meta-training
    sampler = TaskSampler(len(data.pretrain), g)
    val_seed, test_seed = eval_seeds(cfg.seed)
    steps = t.meta_steps if learner.trains else 0
    validate = learner.trains and t.val_every is not None and data.val
    # Everything the loop changes, besides the learner, the generator and the sampler: checkpointed together.
    state = {"meta_step": 0, "best": None, "bad": 0, "stopped": False, "test_at": []}
    if resume is not None:
        learner.load_state_dict(resume["learner"])
        g.set_state(resume["generator"])
        sampler.queue = list(resume["queue"])
        state = {"test_at": []} | resume["state"]
        logger.truncate(resume["rows"])  # drop rows logged after the checkpoint; they are redone

    def validation(step: int) -> bool:
        """Validate the current initialization; return True when early stopping says stop."""
        with where(f"Validation at meta-step {step}"):
            res = evaluate(learner.initialization(), data.val, inner, val_adapt, val_seed)
        logger.log({"meta_step": step, "split": "val", "error": res["error"], "auc": res["auc"], "curve": res["curve"]})
        best = state["best"]
        if best is None or res[t.val_metric] < best[t.val_metric]:
            state["best"] = {"meta_step": step, "error": res["error"], "auc": res["auc"],
                             "init": copy.deepcopy(learner.initialization().state_dict())}
            state["bad"] = 0
        else:
            state["bad"] += 1
        return t.patience is not None and state["bad"] >= t.patience

    def test_now(step: int) -> None:
        """Test the current initialization (``train.test_at``): the budget curve of one run."""
        with where(f"Test evaluation at meta-step {step}"):
            res = evaluate(learner.initialization(), data.test, inner, test_adapt, test_seed)
        scores = {k: res[k] for k in test_adapt.scores}
        logger.log({"meta_step": step, "split": "test_at", **scores, "curve": res["curve"]})
        state["test_at"].append({"meta_step": step, "budget": step * t.meta_batch_size, **scores,
                                 f"{test_adapt.scores[0]}_per_task": [round(x[test_adapt.scores[0]], 2) for x in res["tasks"]],
                                 "mean_adapt_steps": float(np.mean([x["steps"] for x in res["tasks"]]))})

    test_at = set(test_schedule(cfg)) if learner.trains else set()

    def save_checkpoint() -> None:
        if not distributed.is_main():
            return
        checkpoint.save(run_dir, {"config_hash": config_hash, "learner": learner.state_dict(), "state": state,
                                  "generator": g.get_state(), "queue": list(sampler.queue), "rows": logger.rows})
        logger.commit()  # the rows up to here are never redone: W&B may have them

    if validate and resume is None:
        validation(0)
    first = state["meta_step"] + 1
    bar = tqdm(range(first, steps + 1) if not state["stopped"] else [], desc=cfg.run_name, initial=first - 1,
               total=steps, disable=not (cfg.progress and distributed.is_main()), dynamic_ncols=True,
               unit="meta-step")
    for step in bar:
        tasks = [data.pretrain[i] for i in sampler.sample(t.meta_batch_size)]
        with where(f"Meta-step {step}"):
            m = learner.meta_step(tasks, g)
        bar.set_postfix(loss=f"{m['loss']:.3f}", err=f"{m['error']:.1f}")
        logger.log({"meta_step": step, "split": "train", **m})
        state["meta_step"] = step
        if validate and (step % t.val_every == 0 or step == steps):
            state["stopped"] = validation(step)
        if step in test_at:
            test_now(step)
        if t.ckpt_every and (step % t.ckpt_every == 0 or state["stopped"] or step == steps):
            save_checkpoint()
        if state["stopped"]:
            break
    bar.close()

    best, step = state["best"], state["meta_step"]
    init = learner.initialization()
    if best is not None and t.early_stopping:
        init = copy.deepcopy(init)
        init.load_state_dict(best["init"])
    if distributed.is_main():
        checkpoint.save(run_dir, init.state_dict(), name="init.pt")  # the tested initialization
    with where("Test evaluation"), TestProgress(logger, step, cfg.progress and distributed.is_main()) as monitor:
        test = evaluate(init, data.test, inner, test_adapt, test_seed, monitor)
    scores = test_adapt.scores  # Omniglot, Multi-CV: error, auc, train_error; Atari: returns
    logger.log({"meta_step": step, "split": "test", **{k: test[k] for k in scores}, "curve": test["curve"]})
    if distributed.is_main():
        write_json(Path(cfg.run_dir) / "eval_test.json", test)
    return {
        "experiment": cfg.experiment_name, "method": learner.name, "scale": cfg.scale.name, "cell": cfg.cell,
        "label": cfg.method.get("label", learner.name), "color": cfg.method.get("color"),
        "num_pretrain": len(data.pretrain), "seed": cfg.seed, "split_seed": cfg.data.get("split_seed"),
        "test": {k: test[k] for k in scores}
        | {f"{scores[0]}_per_task": [round(x[scores[0]], 2) for x in test["tasks"]],
           "tasks": [x["name"] for x in test["tasks"]]},
        "val_tasks": [x.name for x in data.val], "pretrain_tasks": [x.name for x in data.pretrain],
        "val_best": None if best is None else {k: best[k] for k in ("meta_step", "error", "auc")},
        "test_at": state["test_at"],
        "meta_steps_done": step, "stopped_early": state["stopped"],
        "mean_adapt_steps": float(np.mean([x["steps"] for x in test["tasks"]])),
    }
