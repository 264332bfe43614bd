"""The task learning process u_tau: minibatch training of a model on one task.

Every method and the evaluation share this loop. Meta-learners observe it through ``hook``, which is
called after ``backward()`` and before the optimizer step, so the model holds psi^i and its gradient
grad f(psi^i; B_i) for the batch B_i that produced ``loss`` (the reference code's ``leap.update`` point).
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from .errors import ConfigError, LeapError
from .tasks import Task

Forward = Callable[[nn.Module, Tensor], Tensor]


class StepHook(Protocol):
    def __call__(self, step: int, loss: float, model: nn.Module) -> None: ...


class DivergenceError(LeapError):
    """A non-finite loss in a task's learning process."""


def default_forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def optimizer_lr(factory: Callable[..., Optimizer]) -> float | None:
    """The ``lr`` bound in an optimizer ``functools.partial``, if any."""
    return getattr(factory, "keywords", {}).get("lr")


class Inner:
    """Trains a model on one task: ``steps`` minibatches of ``batch_size`` with a fresh ``optimizer``.

    ``optimizer`` is a factory (``functools.partial`` of a ``torch.optim`` class) called on the
    model's parameters at the start of each task, as in the reference code.
    """

    def __init__(self, optimizer: Callable[..., Optimizer], steps: int, batch_size: int) -> None:
        lr = optimizer_lr(optimizer)
        if lr is not None and not lr > 0:
            raise ConfigError(f"inner.optimizer.lr={lr} must be positive.")
        if steps < 1:
            raise ConfigError(f"inner.steps={steps} must be at least 1.")
        if batch_size < 1:
            raise ConfigError(f"inner.batch_size={batch_size} must be at least 1.")
        self.optimizer, self.steps, self.batch_size = optimizer, steps, batch_size

    def train(
        self,
        model: nn.Module,
        task: Task,
        generator: torch.Generator,
        *,
        steps: int | None = None,
        hook: StepHook | None = None,
        after_step: Callable[[int], bool] | None = None,
        forward: Forward = default_forward,
    ) -> list[float]:
        """Train ``model`` in place; return the per-step training error (0-1) on each batch before its update.

        ``after_step(i)`` runs after the i-th update and may return True to stop early.
        """
        if task.head is not None:
            model.select(task.head)  # its own output layer; later scoring (error_on) uses the same head
        model.train()
        opt = self.optimizer(model.parameters())
        errors: list[float] = []
        for i, (x, y) in enumerate(task.batches(steps or self.steps, self.batch_size, generator)):
            loss, err = train_step(model, opt, x, y, forward, task.name, i)
            errors.append(err)
            if hook is not None:
                hook(i, loss, model)
            opt.step()
            if after_step is not None and after_step(i):
                break
        return errors


def train_step(model: nn.Module, opt: Optimizer, x: Tensor, y: Tensor, forward: Forward, task: str, step: int) -> tuple[float, float]:
    """Forward and backward one batch (no optimizer step); return its loss and error (0-1)."""
    opt.zero_grad(set_to_none=True)
    logits = forward(model, x)
    loss = F.cross_entropy(logits, y)
    value = loss.item()
    if not math.isfinite(value):
        raise DivergenceError(
            f"Non-finite loss ({value}) on task {task!r} at inner step {step}. Lower the learning rates "
            "(inner.optimizer.lr, method.meta_optimizer.lr) and run again."
        )
    loss.backward()
    return value, (logits.argmax(1) != y).float().mean().item()


@torch.no_grad()
def error_on(model: nn.Module, x: Tensor, y: Tensor, forward: Forward = default_forward) -> float:
    """Classification error (0-1) in eval mode, i.e. with BatchNorm running statistics."""
    was_training = model.training
    model.eval()
    err = (forward(model, x).argmax(1) != y).float().mean().item()
    model.train(was_training)
    return err
