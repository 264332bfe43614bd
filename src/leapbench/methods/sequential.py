"""The sequential task engine: the tasks of a meta-batch learn one after another through the learning process.

Each task starts from theta^0 (parameters and BatchNorm buffers), draws its batches from its own generator,
and is trained by ``learner.inner.train``; every step reaches the method as a :class:`~leapbench.protocols.Step`.
The engine beside it, ``batched.py``, trains the same tasks side by side and hands the method the same steps.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from torch import Tensor, nn

from ..inner import DivergenceError
from ..protocols import Step, TaskLearner
from ..tasks import Task
from .flat import flat_grads, flat_params


def train_in_sequence(
    learner: TaskLearner, tasks: list[Task], seeds: list[int], theta0: Tensor, stats: Tensor
) -> Tensor:
    """Train ``tasks`` from theta^0 one at a time; add their statistics to ``stats``; return the summed meta-gradient.

    ``stats``: loss sum, loss count, error sum, error count, skipped tasks. With ``learner.skip_diverging`` a
    task whose loss turns non-finite is dropped with a warning (its meta-gradient is zero, ``skipped`` + 1).
    """
    total = torch.zeros_like(theta0)
    for task, seed in zip(tasks, seeds):
        try:
            total += _train_task(learner, task, seed, theta0, stats)
        except DivergenceError as e:
            if not learner.skip_diverging:
                raise
            warnings.warn(f"Skipped a diverging task (train.on_divergence=skip): {e}", stacklevel=2)
            stats[4] += 1
    return total


def _train_task(learner: TaskLearner, task: Task, seed: int, theta0: Tensor, stats: Tensor) -> Tensor:
    learner.work.load_state_dict(learner.model.state_dict())
    state, losses = learner.begin_task(theta0), []
    params, grads = partial(flat_params, learner.work_params), partial(flat_grads, learner.work_params)
    steps = learner.inner.fixed_steps

    def hook(i: int, loss: float, model: nn.Module) -> None:
        losses.append(loss)
        learner.observe(state, Step(i, loss, None if steps is None else i == steps - 1, params, grads))

    zero_grad = partial(_before_backward, learner, state) if learner.clears_gradients else None
    curve = learner.inner.train(learner.work, task, torch.Generator().manual_seed(seed), hook=hook, zero_grad=zero_grad)
    stats += torch.tensor([sum(losses), len(losses), sum(curve), len(curve), 0.0], dtype=torch.float64)
    return learner.end_task(state, params)


def _before_backward(learner: TaskLearner, state: object, step: int, loss: float) -> None:
    learner.before_backward(state, loss)
