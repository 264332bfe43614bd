"""The meta-training loop with its early stopping, as one small resumable object.

Every meta-step samples a meta-batch of pretraining tasks and hands it to the method; every ``train.val_every``
steps the current initialization is validated (the best one is kept); at ``train.test_at`` it is also tested
(the budget curve of one run); every ``train.ckpt_every`` steps the loop's whole state is checkpointed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from . import checkpoint, distributed
from .errors import ConfigError
from .evaluation import evaluate
from .inner import DivergenceError
from .methods.base import MetaLearner
from .protocols import Adaptation, Benchmark, LearningProcess


@contextmanager
def where(label: str) -> Iterator[None]:
    """Name the phase (meta-step, validation, test) in a divergence message."""
    try:
        yield
    except DivergenceError as e:
        raise DivergenceError(f"{label}: {e}") from None


def eval_seeds(seed: int) -> tuple[int, int]:
    """The validation and test seeds of a run: fixed per seed, so every method sees the same data."""
    return 2 * seed + 1, 2 * seed


def test_schedule(cfg: DictConfig) -> list[int]:
    """The meta-steps after which the current initialization is also tested (``train.test_at``), sorted."""
    at = cfg.train.get("test_at") or []
    if isinstance(at, (int, str)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in at):
        raise ConfigError(f"train.test_at={at!r} must be a list of meta-steps, e.g. train.test_at=[16,40,80,200].")
    return sorted(set(at))


def _added() -> dict[str, Any]:
    """State keys newer than some checkpoints: a checkpoint without them resumes with these."""
    return {"test_at": [], "seconds": {"meta_train": 0.0, "validation": 0.0, "test_at": 0.0}}


class TaskSampler:
    """Meta-batches as in the reference code: shuffled passes over the tasks, concatenated and cut."""

    def __init__(self, num_tasks: int, generator: torch.Generator) -> None:
        self.n, self.g = num_tasks, generator
        self.queue: list[int] = []

    def sample(self, k: int) -> list[int]:
        while len(self.queue) < k:
            self.queue += torch.randperm(self.n, generator=self.g).tolist()
        out, self.queue = self.queue[:k], self.queue[k:]
        return out


class MetaTraining:
    """Meta-train ``learner`` on ``data.pretrain`` under ``cfg.train``; ``run()`` then ``initialization()``.

    ``state`` is everything the loop changes besides the learner, the generator and the sampler; a checkpoint
    holds all of them (and the logger's row count), so a resumed run continues bit for bit.
    """

    def __init__(
        self,
        cfg: DictConfig,
        data: Benchmark,
        inner: LearningProcess,
        learner: MetaLearner,
        val_adapt: Adaptation,
        test_adapt: Adaptation,
        logger: Any,
        config_hash: str,
    ) -> None:
        self.cfg, self.t, self.data, self.inner, self.learner = cfg, cfg.train, data, inner, learner
        self.val_adapt, self.test_adapt, self.logger, self.config_hash = val_adapt, test_adapt, logger, config_hash
        self.g = torch.Generator().manual_seed(cfg.seed)  # task sampling, batches and augmentation
        self.sampler = TaskSampler(len(data.pretrain), self.g)
        self.val_seed, self.test_seed = eval_seeds(cfg.seed)
        self.steps = self.t.meta_steps if learner.trains else 0
        self.validates = bool(learner.trains and self.t.val_every is not None and data.val)
        self.test_at = set(test_schedule(cfg)) if learner.trains else set()
        self.state: dict[str, Any] = {"meta_step": 0, "best": None, "bad": 0, "stopped": False} | _added()
        self.resumed = False

    def resume(self, saved: dict) -> None:
        """Continue from a checkpoint (``checkpoint.load``); rows logged after it are dropped and redone."""
        self.learner.load_state_dict(saved["learner"])
        self.g.set_state(saved["generator"])
        self.sampler.queue = list(saved["queue"])
        self.state = _added() | saved["state"]
        self.logger.truncate(saved["rows"])
        self.resumed = True

    def run(self) -> None:
        t, state = self.t, self.state
        if self.validates and not self.resumed:
            self.validate(0)
        first = state["meta_step"] + 1
        bar = tqdm(
            range(first, self.steps + 1) if not state["stopped"] else [],
            desc=self.cfg.run_name,
            initial=first - 1,
            total=self.steps,
            disable=not (self.cfg.progress and distributed.is_main()),
            dynamic_ncols=True,
            unit="meta-step",
        )
        for step in bar:
            tasks = [self.data.pretrain[i] for i in self.sampler.sample(t.meta_batch_size)]
            with where(f"Meta-step {step}"), self.timed("meta_train"):
                m = self.learner.meta_step(tasks, self.g)
            bar.set_postfix(loss=f"{m['loss']:.3f}", err=f"{m['error']:.1f}")
            self.logger.log({"meta_step": step, "split": "train", **m})
            state["meta_step"] = step
            if self.validates and (step % t.val_every == 0 or step == self.steps):
                state["stopped"] = self.validate(step)
            if step in self.test_at:
                self.test(step)
            if t.ckpt_every and (step % t.ckpt_every == 0 or state["stopped"] or step == self.steps):
                self.save_checkpoint()
            if state["stopped"]:
                break
        bar.close()

    def validate(self, step: int) -> bool:
        """Validate the current initialization; return True when early stopping says stop."""
        with where(f"Validation at meta-step {step}"), self.timed("validation"):
            res = evaluate(self.learner.initialization(), self.data.val, self.inner, self.val_adapt, self.val_seed)
        self.logger.log(
            {"meta_step": step, "split": "val", "error": res["error"], "auc": res["auc"], "curve": res["curve"]}
        )
        best, metric = self.state["best"], self.t.val_metric
        if best is None or res[metric] < best[metric]:
            self.state["best"] = {
                "meta_step": step,
                "error": res["error"],
                "auc": res["auc"],
                "init": copy.deepcopy(self.learner.initialization().state_dict()),
            }
            self.state["bad"] = 0
        else:
            self.state["bad"] += 1
        return self.t.patience is not None and self.state["bad"] >= self.t.patience

    def test(self, step: int) -> None:
        """Test the current initialization (``train.test_at``): one point of the run's budget curve."""
        with where(f"Test evaluation at meta-step {step}"), self.timed("test_at"):
            res = evaluate(self.learner.initialization(), self.data.test, self.inner, self.test_adapt, self.test_seed)
        first = self.test_adapt.scores[0]
        scores = {k: res[k] for k in self.test_adapt.scores}
        self.logger.log({"meta_step": step, "split": "test_at", **scores, "curve": res["curve"]})
        self.state["test_at"].append(
            {
                "meta_step": step,
                "budget": step * self.t.meta_batch_size,
                **scores,
                f"{first}_per_task": [round(x[first], 2) for x in res["tasks"]],
                "mean_adapt_steps": float(np.mean([x["steps"] for x in res["tasks"]])),
            }
        )

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``state["seconds"][phase]`` (a phase ends with a host sync)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = self.state["seconds"]
            seconds[phase] = round(seconds.get(phase, 0.0) + time.perf_counter() - start, 3)

    def save_checkpoint(self) -> None:
        if not distributed.is_main():
            return
        checkpoint.save(
            Path(self.cfg.run_dir),
            {
                "config_hash": self.config_hash,
                "learner": self.learner.state_dict(),
                "state": self.state,
                "generator": self.g.get_state(),
                "queue": list(self.sampler.queue),
                "rows": self.logger.rows,
            },
        )
        self.logger.commit()  # the rows up to here are never redone: W&B may have them

    def initialization(self) -> nn.Module:
        """The initialization to test: the best validated one under ``train.early_stopping``, else the last."""
        init = self.learner.initialization()
        best = self.state["best"]
        if best is not None and self.t.early_stopping:
            init = copy.deepcopy(init)
            init.load_state_dict(best["init"])
        return init
