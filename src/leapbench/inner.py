"""The task learning process u_tau: minibatch training of a model on one task.

Every method and the evaluation share this loop. Meta-learners observe it through ``hook``, which is
called after ``backward()`` and before the optimizer step, so the model holds psi^i and its gradient
grad f(psi^i; B_i) for the batch B_i that produced ``loss`` (the reference code's ``leap.update`` point).
A meta-learner may also take over clearing the gradients (``zero_grad``, see ``train_step``). ``Inner``
implements ``protocols.LearningProcess``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from .errors import ConfigError, LeapError
from .protocols import StepHook, ZeroGrad
from .tasks import Task

Forward = Callable[[nn.Module, Tensor], Tensor]


class DivergenceError(LeapError):
    """A non-finite loss in a task's learning process."""


LOWER_LR = "Lower the learning rates (inner.optimizer.lr, method.meta_optimizer.lr) and run again."


def default_forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def optimizer_lr(factory: Callable[..., Optimizer]) -> float | None:
    """The ``lr`` bound in an optimizer ``functools.partial``, if any."""
    return getattr(factory, "keywords", {}).get("lr")


def check_optimizer(factory: Callable[..., Optimizer], key: str) -> None:
    """Refuse an optimizer factory whose lr is not a positive finite number or whose other values its class rejects
    (a negative momentum, nesterov without momentum, ...): built once on a stand-in parameter, before any run."""
    lr = optimizer_lr(factory)
    if lr is not None and not 0 < lr < math.inf:
        raise ConfigError(f"{key}.lr={lr} must be a positive finite number.")
    try:
        factory([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as e:
        cls = getattr(factory, "func", factory)
        given = ", ".join(f"{key}.{k}={v}" for k, v in getattr(factory, "keywords", {}).items())
        name = f"{cls.__module__}.{cls.__qualname__}"
        raise ConfigError(f"{key}: {name} refused {given or 'its defaults'} ({e}).") from None


def plain_sgd_lr(factory: Callable[..., Optimizer]) -> float | None:
    """The ``lr`` of an optimizer factory that is plain SGD (every update is psi - lr * grad), else None."""
    kw = dict(getattr(factory, "keywords", {}))
    lr = kw.pop("lr", None)
    extra = {k: v for k, v in kw.items() if v}  # momentum=0, weight_decay=0, nesterov=False are plain SGD
    plain = getattr(factory, "func", None) is torch.optim.SGD and not getattr(factory, "args", ()) and not extra
    return float(lr) if plain and lr is not None else None


class Inner:
    """Trains a model on one task: minibatches of ``batch_size`` with a fresh ``optimizer``.

    ``optimizer`` is a factory (``functools.partial`` of a ``torch.optim`` class) called on the
    model's parameters at the start of each task, as in the reference code.

    By default a task gets ``steps`` updates (Omniglot). With ``epochs=True`` (Multi-CV) ``steps`` counts
    epochs of the task's training set instead, so each dataset trains for at most that many passes.

    With ``patience`` a task trains "until no more improvement on held-out images" (paper App. D): it stops
    once its error on its validation images (the held-out images when it has none) has not improved for
    ``patience`` checks, one check every ``check_every`` updates (every epoch with ``epochs=True``), and after
    at most ``steps`` updates (epochs). Evaluation brings its own stopping rule (``evaluation.Adaptation``),
    so ``patience`` applies to meta-training only.
    """

    cpu_only = False

    def __init__(
        self,
        optimizer: Callable[..., Optimizer],
        steps: int,
        batch_size: int,
        epochs: bool = False,
        patience: int | None = None,
        check_every: int = 20,
    ) -> None:
        check_optimizer(optimizer, "inner.optimizer")
        if steps < 1:
            raise ConfigError(f"inner.steps={steps} must be at least 1.")
        if batch_size < 1:
            raise ConfigError(f"inner.batch_size={batch_size} must be at least 1.")
        if patience is not None and patience < 1:
            raise ConfigError(
                f"inner.patience={patience} must be at least 1 (or null: train every task for inner.steps)."
            )
        if check_every < 1:
            raise ConfigError(f"inner.check_every={check_every} must be at least 1.")
        self.optimizer, self.steps, self.batch_size = optimizer, steps, batch_size
        self.epochs, self.patience, self.check_every = epochs, patience, check_every

    @property
    def fixed_steps(self) -> int | None:
        """The updates every task takes in meta-training when known before the task starts, else None."""
        return None if self.epochs or self.patience is not None else self.steps

    @property
    def provides(self) -> frozenset[str]:
        """What this learning process offers a method (``checks.NEEDS``): labelled batches, and with this config
        maybe a fixed number of updates per task and plain SGD (what ``method.batched=true`` needs)."""
        return frozenset(
            {"labels"}
            | ({"fixed_length"} if self.fixed_steps is not None else set())
            | ({"plain_sgd"} if self.sgd_lr is not None else set())
        )

    @property
    def sgd_lr(self) -> float | None:
        """The lr when every update between two hook calls is exactly psi <- psi - lr * grad (plain SGD), else None.

        Then a zero gradient is a zero update, so a meta-learner may keep the gradients in a buffer of its own
        and clear them in place through ``zero_grad`` (Leap does, see ``methods/leap.py``).
        """
        return plain_sgd_lr(self.optimizer)

    def epoch_steps(self, task: Task) -> int:
        return math.ceil(len(task.y_train) / self.batch_size)

    def steps_for(self, task: Task) -> int:
        """The number of updates ``task`` trains for at most in meta-training."""
        return self.steps * self.epoch_steps(task) if self.epochs else self.steps

    def train(
        self,
        model: nn.Module,
        task: Task,
        generator: torch.Generator,
        *,
        steps: int | None = None,
        hook: StepHook | None = None,
        after_step: Callable[[int], bool] | None = None,
        zero_grad: ZeroGrad | None = None,
    ) -> list[float]:
        """Train ``model`` in place; return the per-step training error (0-1) on each batch before its update.

        ``after_step(i)`` runs after the i-th update and may return True to stop early. Without ``steps`` and
        ``after_step`` (meta-training) the task trains for ``steps_for(task)`` updates with ``patience``.
        ``zero_grad``: see ``train_step``.
        """
        if steps is None and after_step is None and self.patience is not None:
            after_step = self._early_stop(model, task)
        errors: list[float] = []
        for i, err in enumerate(self.updates(model, task, generator, steps=steps, hook=hook, zero_grad=zero_grad)):
            errors.append(err)
            if after_step is not None and after_step(i):
                break
        return errors

    def updates(
        self,
        model: nn.Module,
        task: Task,
        generator: torch.Generator,
        *,
        steps: int | None = None,
        hook: StepHook | None = None,
        zero_grad: ZeroGrad | None = None,
    ) -> Iterator[float]:
        """The learning process one update at a time: yields each batch's training error after its update.

        ``train`` drives it; a benchmark may interleave two of them step by step.
        """
        if task.head is not None:
            model.select(task.head)  # type: ignore[operator]  # its own output layer; later scoring (error_on) uses the same head
        model.train()
        opt = self.optimizer(model.parameters())
        device = next(model.parameters()).device  # a no-op when the images are on the model's device (runner)
        for i, (x, y) in enumerate(task.batches(steps or self.steps_for(task), self.batch_size, generator)):
            loss, err = train_step(model, opt, x.to(device), y.to(device), default_forward, task.name, i, zero_grad)
            if hook is not None:
                hook(i, loss, model)
            opt.step()
            yield err

    def _early_stop(self, model: nn.Module, task: Task) -> Callable[[int], bool]:
        """Stop after ``patience`` checks without a new best error on the validation (else held-out) images."""
        every = self.epoch_steps(task) if self.epochs else self.check_every
        x, y = (task.x_val, task.y_val) if task.x_val is not None else (task.x_heldout, task.y_heldout)
        patience = cast(int, self.patience)
        state: dict[str, float] = {"best": float("inf"), "bad": 0}

        def after_step(i: int) -> bool:
            if (i + 1) % every:
                return False
            err = error_on(model, x, cast(Tensor, y))
            state["bad"] = 0 if err < state["best"] else state["bad"] + 1
            state["best"] = min(state["best"], err)
            return state["bad"] >= patience

        return after_step


def train_step(
    model: nn.Module,
    opt: Optimizer,
    x: Tensor,
    y: Tensor,
    forward: Forward,
    task: str,
    step: int,
    zero_grad: ZeroGrad | None = None,
) -> tuple[float, float]:
    """Forward and backward one batch (no optimizer step); return its loss and error (0-1).

    Gradients are cleared after the forward pass: released by the optimizer (``set_to_none``), or by
    ``zero_grad(step, loss)`` when given, which then sees this step's loss while ``.grad`` still holds the
    previous step's gradients (Leap closes its path segment there, see ``methods/leap.py``).
    """
    logits = forward(model, x)
    loss = F.cross_entropy(logits, y)
    value = loss.item()
    if not math.isfinite(value):
        raise DivergenceError(f"Non-finite loss ({value}) on task {task!r} at inner step {step}. {LOWER_LR}")
    if zero_grad is None:
        opt.zero_grad(set_to_none=True)
    else:
        zero_grad(step, value)
    loss.backward()
    return value, (logits.argmax(1) != y).float().mean().item()


@torch.no_grad()
def error_on(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 1000) -> float:
    """Classification error (0-1) in eval mode, i.e. with BatchNorm running statistics; ``chunk`` images at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wrong = sum(
        int((model(x[i : i + chunk].to(device)).argmax(1) != y[i : i + chunk].to(device)).sum())
        for i in range(0, len(y), chunk)
    )
    model.train(was_training)
    return wrong / max(len(y), 1)
