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
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .errors import ConfigError
from .inner import DivergenceError, Inner, error_on
from .lockstep import Lockstep, check_stackable, functional_model, scorer, sgd_step, stack
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

    With ``batched`` every task of the evaluation adapts at once, each with its own stopping point
    (:func:`adapt_side_by_side`); it needs tasks of one size on one shared head and a plain SGD learning process.

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
    batched: bool = False  # adapt the tasks side by side (adapt_side_by_side); equal to one after another

    def __post_init__(self) -> None:  # messages name the key within its group (eval or val): checks.validate
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode} is not allowed; choose one of {', '.join(MODES)}.")
        if self.stop_on not in STOP_ON:
            raise ConfigError(f"stop_on={self.stop_on} is not allowed; choose one of {', '.join(STOP_ON)}.")
        for key in ("steps", "eval_every", "patience", "val_per_class"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1.")
        if self.mode == "early_stop" and self.max_steps < self.steps:
            raise ConfigError(f"max_steps={self.max_steps} must be >= steps={self.steps}.")
        if self.mode == "early_stop" and self.eval_every > self.max_steps:
            raise ConfigError(
                f"eval_every={self.eval_every} is more than max_steps={self.max_steps}: it could never stop early "
                f"(its only check would be at max_steps); choose eval_every in 1..{self.max_steps}."
            )
        if self.batched and self.epochs:
            raise ConfigError(
                "batched=true counts updates, but this adaptation counts epochs (epochs=true): leave batched=false."
            )

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


def check_val_per_class(task: Task, per_class: int, key: str = "val_per_class") -> None:
    """Refuse a ``val_per_class`` that would leave a class of ``task`` without training images."""
    counts = torch.bincount(task.y_train)
    fewest = int(counts[counts > 0].min())
    if fewest <= per_class:
        raise ConfigError(
            f"{key}={per_class} must leave a training image in every class, but task {task.name} has only "
            f"{fewest} in some class; choose 1..{fewest - 1}."
        )


def with_validation(task: Task, per_class: int) -> Task:
    """``task`` with the last ``per_class`` training images of every class moved to its validation set."""
    check_val_per_class(task, per_class)
    val = torch.zeros(len(task.y_train), dtype=torch.bool, device=task.y_train.device)
    for c in torch.unique(task.y_train):
        val[torch.nonzero(task.y_train == c).flatten()[-per_class:]] = True
    return replace(
        task, x_train=task.x_train[~val], y_train=task.y_train[~val], x_val=task.x_train[val], y_val=task.y_train[val]
    )


def adapt_side_by_side(
    init: nn.Module, tasks: Sequence[Task], inner: Inner, adaptation: Adaptation, generators: Sequence[torch.Generator]
) -> list[dict]:
    """:func:`adapt` for every task at once: one vmapped SGD step for all (``lockstep.py``), each task with its own
    stopping point. A task that has stopped keeps its parameters, BatchNorm statistics and result while the
    others go on. Each task draws what ``adapt`` draws from its generator, so the results are ``adapt``'s up to
    float rounding (tested). The host waits for the device once per check, to know whether every task stopped.
    """
    lr = inner.sgd_lr
    if lr is None:
        raise ConfigError("batched=true needs a plain SGD inner.optimizer (no momentum or weight decay).")
    n, early = len(tasks), adaptation.mode == "early_stop"
    has_val = early and adaptation.stop_on == "val"
    tasks = [with_validation(t, adaptation.val_per_class) if has_val and t.x_val is None else t for t in tasks]
    check_stackable(tasks, "batched")
    device = next(init.parameters()).device
    model = functional_model(init, device)
    reset_batchnorm(model)
    model.train()
    params, buffers = stack(dict(model.named_parameters()), n), stack(dict(model.named_buffers()), n)
    step_all, errors = sgd_step(model), scorer(model)
    every = adaptation.eval_every
    total = adaptation.max_steps if early else adaptation.steps
    data = Lockstep(tasks, generators, total, inner.batch_size, device, every=every if early else None)
    heldout = _stacked([(t.x_heldout, t.y_heldout) for t in tasks], device)
    val = _stacked([(cast(Tensor, t.x_val), cast(Tensor, t.y_val)) for t in tasks], device) if has_val else None
    counter = torch.zeros(1, dtype=torch.long, device=device)
    finite = torch.ones(n, dtype=torch.bool, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    curve: list[Tensor] = []
    inf = torch.full((n,), float("inf"), dtype=torch.float64, device=device)
    best, test, oracle = inf.clone(), inf.clone(), inf.clone()
    bad, best_step = (torch.zeros(n, dtype=torch.long, device=device) for _ in range(2))
    length = torch.full((n,), total, dtype=torch.long, device=device)
    all_active = True

    def watch(step: int, mask: Tensor, check: int | None, final: bool = False) -> Tensor:
        """``adapt``'s watch for the tasks in ``mask``: returns which of them improved."""
        xh = data.heldout(heldout[0], check, final)
        err_heldout = errors(params, buffers, xh, heldout[1])
        err = errors(params, buffers, *val) if val is not None else err_heldout
        oracle.copy_(torch.where(mask, torch.minimum(oracle, err_heldout), oracle))
        improved = mask & (err < best)
        best.copy_(torch.where(improved, err, best))
        test.copy_(torch.where(improved, err_heldout, test))
        best_step.copy_(torch.where(improved, step, best_step))
        return improved

    for i in range(total):
        kept = None if all_active else {k: b.clone() for k, b in buffers.items()}
        x, y = data.batch(counter)
        grads, (loss, logits) = step_all(params, buffers, x, y)
        finite.logical_and_(torch.isfinite(loss) | ~active)
        curve.append((logits.argmax(-1) != y).float().mean(1))
        for name, p in params.items():
            p.copy_(torch.where(active.reshape(n, *[1] * (p.dim() - 1)), p - lr * grads[name], p))
        if kept is not None:
            for name, b in buffers.items():
                b.copy_(torch.where(active.reshape(n, *[1] * (b.dim() - 1)), b, kept[name]))
        counter.add_(1)
        if early and (i + 1) % every == 0:
            check = (i + 1) // every - 1
            improved = watch(i + 1, active, check)
            bad.copy_(torch.where(active, torch.where(improved, 0, bad + 1), bad))
            if i + 1 >= adaptation.steps:
                stop = active & (bad >= adaptation.patience)
                length.copy_(torch.where(stop, i + 1, length))
                watch(i + 1, stop, check, final=True)  # adapt's watch after training ends
                active.logical_and_(~stop)
            if not bool(finite.all()):
                break
            if not bool(active.any()):
                break
            all_active = bool(active.all())
    if not bool(finite.all()):
        name = tasks[int((~finite).nonzero()[0])].name
        raise DivergenceError(
            f"Non-finite loss on evaluation task {name!r}. Lower the learning rate (inner.optimizer.lr) and run again."
        )
    if early:
        watch(total, active, None)  # the tasks that ran all max_steps updates: adapt's watch after training
    else:
        err = errors(params, buffers, data.heldout(heldout[0], None), heldout[1])
        best, test, oracle = err, err, err
        best_step.fill_(total)
    train_errors = errors(params, buffers, data.x, data.y)
    curves = torch.stack(curve, 1).tolist()
    rows = zip(
        tasks, length.tolist(), test.tolist(), best_step.tolist(), oracle.tolist(), train_errors.tolist(), curves
    )
    out = []
    for task, steps, err, at, best_heldout, train, row in rows:
        row = row[:steps]
        out.append(
            {
                "name": task.name,
                "error": 100 * err,
                "auc": auc(row if adaptation.auc_all else row[: adaptation.steps]),
                "train_error": 100 * train,
                "steps": steps,
                "best_step": at,
                "oracle_error": 100 * best_heldout,
                "curve": thin(row),
            }
        )
    return out


def _stacked(pairs: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Every task's images and labels, stacked on ``device``."""
    return torch.stack([x.to(device) for x, _ in pairs]), torch.stack([y.to(device) for _, y in pairs])


MAX_POINTS = 1000


def thin(curve: list[float], points: int = MAX_POINTS) -> list[float]:
    """A curve of at most ``points`` values: longer ones averaged over bins of ``ceil(len / points)`` steps."""
    k = -(-len(curve) // points)
    if k > 1:
        curve = [float(np.mean(curve[i : i + k])) for i in range(0, len(curve), k)]
    return [round(e, 4) for e in curve]


def evaluate(init: nn.Module, tasks: Sequence, inner, adaptation, seed: int, monitor=None) -> dict:
    """Adapt a copy of ``init`` to each task (BatchNorm statistics reset per task) and average the scores.

    With ``adaptation.batched`` the tasks adapt side by side (:func:`adapt_side_by_side`), with the same results.

    ``adaptation`` is any object with ``run(model, task, inner, generator, monitor) -> dict`` and the names of
    the ``scores`` it reports (``Adaptation`` here; Atari's ``rl.a2c.Training`` trains agents instead). A long
    adaptation reports its progress to ``monitor(task_name, done, total, score)`` (Atari: frames and the moving
    average return); a short one may ignore it.

    ``seed`` fixes batches and augmentation, so every method sees the same data in the same order.
    """
    mine = list(distributed.mine(len(tasks)))  # under torchrun each rank adapts its share of the tasks
    generators = {k: torch.Generator().manual_seed(1000 * seed + k) for k in mine}  # independent of other tasks
    if adaptation.batched and mine:
        side = adapt_side_by_side(init, [tasks[k] for k in mine], inner, adaptation, [generators[k] for k in mine])
        results = dict(zip(mine, side))
    else:
        model, results = copy.deepcopy(init), {}
        for k in mine:
            model.load_state_dict(init.state_dict())
            reset_batchnorm(model)
            results[k] = adaptation.run(model, tasks[k], inner, generators[k], monitor)
    results = distributed.gather(results)
    per_task = [results[k] for k in range(len(tasks))]
    n = min(len(t["curve"]) for t in per_task)
    return {k: float(np.mean([t[k] for t in per_task])) for k in adaptation.scores} | {
        "curve": np.mean([t["curve"][:n] for t in per_task], axis=0).round(4).tolist(),
        "tasks": per_task,
    }
