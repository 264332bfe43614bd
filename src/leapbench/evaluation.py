"""One evaluation for every method: adapt an initialization to each held-out task and score it.

Metrics are percentages (0-100), as in the paper's tables:

* ``error``: held-out error of the adapted model (1 - accuracy on the task's held-out images);
* ``auc``: area under the per-step training-error curve of the first ``steps`` updates on a unit time
  axis, ``100 * sum_{i=1}^{T-1} (e_{i-1} + e_i) / 2 / (T - 1)``, i.e. the mean error along the curve
  (the reference ``compute_auc`` divides by T instead, 1 % lower at T = 100); ``e_i`` is the error on the
  i-th training batch before its update;
* ``train_error``: error of the adapted model on the task's whole (un-augmented) training set;
* ``oracle_error``: the best held-out error at any early-stopping check, i.e. the stopping point chosen on the
  held-out images themselves (equal to ``error`` under ``stop_on=heldout`` and in ``fixed`` mode); under
  ``stop_on=val``, ``oracle_error - error`` is the optimism of selecting on the reported images, on one trajectory.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from . import distributed
from .errors import ConfigError
from .inner import Inner, error_on
from .tasks import Task

MODES = ("fixed", "early_stop")
STOP_ON = ("heldout", "val")


@dataclass
class Adaptation:
    """How an initialization is adapted to an evaluation task.

    * ``fixed``: ``steps`` updates, then score (the reference code: 100 steps).
    * ``early_stop``: train until no more improvement: check every ``eval_every`` updates and stop after
      ``patience`` checks without a new best (never before ``steps`` updates, never after ``max_steps``);
      the reported error is the held-out error at the best check. What is watched is ``stop_on``:

      - ``heldout``: the held-out images themselves (the paper's wording; the stopping point is chosen on the
        images it reports, an optimistic estimate);
      - ``val``: the task's validation images (Multi-CV's datasets have them); a task without them gives its
        last ``val_per_class`` training images of every class to validation (:func:`with_validation`), so the
        stopping point never sees the held-out images. AUC and train error then refer to the smaller training set.

    In both modes the AUC covers the first ``steps`` updates, so it is comparable across methods; with
    ``auc_all`` it covers the whole curve until stopping (Multi-CV: the paper trains to convergence).
    With ``epochs`` the counts ``steps``, ``max_steps`` and ``eval_every`` are epochs of the task's training
    set (Multi-CV: at most 100 epochs, early stopping checked after every epoch).
    """

    scores = (
        "error",
        "auc",
        "train_error",
        "oracle_error",
    )  # what ``run`` reports per task; ``evaluate`` averages them

    mode: str = "fixed"
    steps: int = 100
    max_steps: int = 1000
    eval_every: int = 20
    patience: int = 5
    epochs: bool = False
    auc_all: bool = False
    stop_on: str = "heldout"
    val_per_class: int = 3

    def __post_init__(self) -> None:  # messages name the key within its group (eval or val): runner.validate
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode} is not allowed; choose one of {', '.join(MODES)}.")
        if self.stop_on not in STOP_ON:
            raise ConfigError(f"stop_on={self.stop_on} is not allowed; choose one of {', '.join(STOP_ON)}.")
        for key in ("steps", "eval_every", "patience", "val_per_class"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1.")
        if self.mode == "early_stop" and self.max_steps < self.steps:
            raise ConfigError(f"max_steps={self.max_steps} must be >= steps={self.steps}.")

    def run(self, model: nn.Module, task: Task, inner: Inner, generator: torch.Generator, monitor=None) -> dict:
        return adapt(model, task, inner, self, generator)


def auc(errors: list[float] | np.ndarray) -> float:
    """Trapezoidal area under an error curve (0-1 values) on a unit time axis, on a 0-100 scale."""
    e = np.asarray(errors, dtype=np.float64)
    if len(e) < 2:
        return float(100 * e.mean()) if len(e) else float("nan")
    return float(100 * ((e[1:] + e[:-1]) / 2).sum() / (len(e) - 1))


def reset_batchnorm(model: nn.Module) -> None:
    """Forget BatchNorm running statistics, so no task sees another task's statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def adapt(model: nn.Module, task: Task, inner: Inner, adaptation: Adaptation, generator: torch.Generator) -> dict:
    """Adapt ``model`` (in place) to ``task``; return its curve and scores."""
    per = inner.epoch_steps(task) if adaptation.epochs else 1
    steps, max_steps, eval_every = adaptation.steps * per, adaptation.max_steps * per, adaptation.eval_every * per
    if adaptation.mode == "fixed":
        curve = inner.train(model, task, generator, steps=steps)
        best, best_step = error_on(model, *task.heldout(generator)), len(curve)
        oracle = best
    else:
        # stop_on=val: watch the validation images and report the held-out (test) error where they were best;
        # stop_on=heldout: watch and report the held-out images (the paper's wording). Either way ``oracle`` is
        # the best held-out error at any check: what the paper's rule would report on this very trajectory.
        has_val = adaptation.stop_on == "val"
        if has_val and task.x_val is None:
            task = with_validation(task, adaptation.val_per_class)
        state: dict[str, float] = {
            "best": float("inf"),
            "bad": 0,
            "test": float("inf"),
            "step": 0,
            "oracle": float("inf"),
        }

        def watch(step: int) -> bool:
            heldout = error_on(model, *task.heldout(generator))
            err = error_on(model, task.x_val, task.y_val) if has_val else heldout  # type: ignore[arg-type]
            state["oracle"] = min(state["oracle"], heldout)
            improved = err < state["best"]
            if improved:
                state["best"], state["step"], state["test"] = err, step, heldout
            return improved

        def check(i: int) -> bool:
            if (i + 1) % eval_every:
                return False
            state["bad"] = 0 if watch(i + 1) else state["bad"] + 1
            return i + 1 >= steps and state["bad"] >= adaptation.patience

        curve = inner.train(model, task, generator, steps=max_steps, after_step=check)
        watch(len(curve))
        best, best_step, oracle = state["test"], int(state["step"]), state["oracle"]
    return {
        "name": task.name,
        "error": 100 * best,
        "auc": auc(curve if adaptation.auc_all else curve[:steps]),
        "train_error": 100 * error_on(model, task.x_train, task.y_train),
        "steps": len(curve),
        "best_step": best_step,  # the update count the reported error was scored after
        "oracle_error": 100 * oracle,  # the best held-out error at any check (= error under stop_on=heldout)
        "curve": thin(curve),  # every point up to MAX_POINTS; longer curves as means of equal bins
    }


def with_validation(task: Task, per_class: int) -> Task:
    """``task`` with the last ``per_class`` training images of every class moved to its validation set."""
    counts = torch.bincount(task.y_train)
    if int(counts[counts > 0].min()) <= per_class:
        raise ConfigError(
            f"Task {task.name} has only {int(counts[counts > 0].min())} training images in some class; "
            f"eval.val_per_class={per_class} must leave at least one for training."
        )
    val = torch.zeros(len(task.y_train), dtype=torch.bool)
    for c in torch.unique(task.y_train):
        val[torch.nonzero(task.y_train == c).flatten()[-per_class:]] = True
    return replace(
        task, x_train=task.x_train[~val], y_train=task.y_train[~val], x_val=task.x_train[val], y_val=task.y_train[val]
    )


MAX_POINTS = 1000


def thin(curve: list[float], points: int = MAX_POINTS) -> list[float]:
    """A curve of at most ``points`` values: longer ones averaged over bins of ``ceil(len / points)`` steps."""
    k = -(-len(curve) // points)
    if k > 1:
        curve = [float(np.mean(curve[i : i + k])) for i in range(0, len(curve), k)]
    return [round(e, 4) for e in curve]


def evaluate(init: nn.Module, tasks: Sequence, inner, adaptation, seed: int, monitor=None) -> dict:
    """Adapt a copy of ``init`` to each task (BatchNorm statistics reset per task) and average the scores.

    ``adaptation`` is any object with ``run(model, task, inner, generator, monitor) -> dict`` and the names of
    the ``scores`` it reports (``Adaptation`` here; Atari's ``rl.a2c.Training`` trains agents instead). A long
    adaptation reports its progress to ``monitor(task_name, done, total, score)`` (Atari: frames and the moving
    average return); a short one may ignore it.

    ``seed`` fixes batches and augmentation, so every method sees the same data in the same order.
    """
    model = copy.deepcopy(init)
    results = {}
    for k in distributed.mine(len(tasks)):  # under torchrun each rank adapts its share of the tasks
        model.load_state_dict(init.state_dict())
        reset_batchnorm(model)
        generator = torch.Generator().manual_seed(1000 * seed + k)  # per task: independent of other tasks' lengths
        results[k] = adaptation.run(model, tasks[k], inner, generator, monitor)
    results = distributed.gather(results)
    per_task = [results[k] for k in range(len(tasks))]
    n = min(len(t["curve"]) for t in per_task)
    return {k: float(np.mean([t[k] for t in per_task])) for k in adaptation.scores} | {
        "curve": np.mean([t["curve"][:n] for t in per_task], axis=0).round(4).tolist(),
        "tasks": per_task,
    }
