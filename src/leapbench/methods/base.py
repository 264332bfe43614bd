"""The interface every method implements, and the shared machinery of initialization meta-learners."""
from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .. import distributed
from ..errors import ConfigError
from ..inner import DivergenceError, Inner, optimizer_lr
from ..tasks import Task


class MetaLearner(ABC):
    """A method: it learns from pretraining tasks and hands evaluation an initialization.

    The runner calls ``setup`` once, ``meta_step`` once per meta-step (unless ``trains`` is False), and
    ``initialization`` whenever it validates or tests.
    """

    trains = True
    skip_diverging = False  # train.on_divergence=skip: drop a diverging task from its meta-batch (see below)

    def __init__(self, name: str) -> None:
        self.name = name

    def setup(self, model: nn.Module, inner: Inner, num_tasks: int) -> None:
        """Take ownership of the freshly initialized ``model``; ``num_tasks`` is the number of pretraining tasks."""
        self.model, self.inner = model, inner

    @abstractmethod
    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        """Learn from one batch of pretraining tasks; return the mean training loss and error (0-100)."""
        raise NotImplementedError

    def initialization(self) -> nn.Module:
        """The model that evaluation adapts to new tasks (not modified by the caller)."""
        return self.model

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])


def flat_params(params: list[Tensor]) -> Tensor:
    """Parameters as one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def flat_grads(params: list[Tensor]) -> Tensor:
    """Gradients as one vector (a copy); a missing gradient counts as zero."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def set_grads(params: list[Tensor], flat: Tensor) -> None:
    """Write a flat vector into the ``.grad`` of each parameter."""
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i:i + n].view(p.shape).clone()
        i += n


def task_seeds(n: int, generator: torch.Generator) -> list[int]:
    """One seed per task of a meta-batch, for the generator its batches (and augmentation) are drawn from."""
    return torch.randint(0, 2**62, (n,), generator=generator).tolist()


class InitializationLearner(MetaLearner):
    """Meta-learns the initialization theta^0 of the model (Leap, Reptile, FOMAML).

    Each task starts from theta^0 (parameters and BatchNorm buffers, so running statistics restart for every
    task, as in the reference code), is trained by the shared inner loop, and yields a meta-gradient
    through ``begin_task``/``on_step``/``end_task``. The mean over the task batch is written into ``.grad``
    of theta^0 and any ``torch.optim`` meta-optimizer takes the step.

    ``scope`` restricts the meta-parameters to names starting with it (e.g. ``"body."`` for a shared encoder);
    ``None`` meta-learns every parameter, as the reference code does (conv, BatchNorm affine and head).
    """

    def __init__(self, name: str, meta_optimizer: Callable[..., Optimizer], scope: str | None = None) -> None:
        super().__init__(name)
        lr = optimizer_lr(meta_optimizer)
        if lr is not None and not lr > 0:
            raise ConfigError(f"method.meta_optimizer.lr={lr} must be positive.")
        self.meta_optimizer, self.scope = meta_optimizer, scope

    def setup(self, model: nn.Module, inner: Inner, num_tasks: int) -> None:
        super().setup(model, inner, num_tasks)
        self.work = copy.deepcopy(model)  # the task learner; self.model holds theta^0
        self.params = self._scoped(self.model)
        if not self.params:
            raise ConfigError(f"method.scope={self.scope!r} selects no parameters of the model.")
        self.work_params = self._scoped(self.work)
        self.meta_opt = self.meta_optimizer(self.params)

    def _scoped(self, model: nn.Module) -> list[Tensor]:
        return [p for n, p in model.named_parameters() if self.scope is None or n.startswith(self.scope)]

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        """Train every task from theta^0, average their meta-gradients and take one meta-optimizer step.

        Each task draws its batches from its own generator, seeded from ``generator``, so the result does not
        depend on which process trains which task: under torchrun each rank trains its share of the tasks
        and the meta-gradient is summed over ranks once (equal to one process up to float summation order).
        With ``skip_diverging`` a task whose loss turns non-finite is dropped with a warning and the mean runs
        over the other tasks (the row gets ``skipped``); the step still fails if every task diverges.
        """
        seeds = task_seeds(len(tasks), generator)
        self.theta0 = flat_params(self.params)
        total = torch.zeros_like(self.theta0)
        stats = torch.zeros(5, dtype=torch.float64)  # loss sum, loss count, error sum, error count, skipped
        for k in distributed.mine(len(tasks)):
            task = tasks[k]
            self.work.load_state_dict(self.model.state_dict())
            self.begin_task()
            self._losses: list[float] = []
            try:
                curve = self.inner.train(self.work, task, torch.Generator().manual_seed(seeds[k]), hook=self._observe)
            except DivergenceError as e:
                if not self.skip_diverging:
                    raise
                warnings.warn(f"Skipped a diverging task (train.on_divergence=skip): {e}", stacklevel=2)
                stats[4] += 1
                continue
            stats += torch.tensor([sum(self._losses), len(self._losses), sum(curve), len(curve), 0.0], dtype=torch.float64)
            total += self.end_task()
        distributed.sum_(total)
        loss_sum, loss_n, err_sum, err_n, skipped = distributed.sum_(stats).tolist()
        if skipped == len(tasks):
            raise DivergenceError(f"every task of the meta-batch ({', '.join(t.name for t in tasks)}) diverged.")
        self.meta_opt.zero_grad(set_to_none=True)
        set_grads(self.params, total / (len(tasks) - skipped))
        self.meta_opt.step()
        out = {"loss": loss_sum / loss_n, "error": 100 * err_sum / err_n}
        return out | ({"skipped": int(skipped)} if skipped else {})

    def _observe(self, step: int, loss: float, model: nn.Module) -> None:
        self._losses.append(loss)
        self.on_step(step, loss, model)

    # -- the three hooks a method defines -----------------------------------------------------------------
    def begin_task(self) -> None:
        """Called before a task's learning process starts from theta^0."""

    @abstractmethod
    def on_step(self, step: int, loss: float, model: nn.Module) -> None:
        """Called at each inner step after backward, before the update (model holds psi^i and its gradient)."""

    @abstractmethod
    def end_task(self) -> Tensor:
        """This task's meta-gradient as a flat vector over the meta-parameters."""

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.meta_opt.load_state_dict(state["meta_opt"])
