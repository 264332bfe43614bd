"""The interface every method implements, and the shared machinery of initialization meta-learners."""
from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .. import distributed
from ..errors import ConfigError
from ..inner import DivergenceError, Inner, optimizer_lr
from ..tasks import Task

Flat = Callable[..., Tensor]  # a flat copy of psi^i or of its gradient; ``out=`` may name a buffer to fill


class MetaLearner(ABC):
    """A method: it learns from pretraining tasks and hands evaluation an initialization.

    The runner calls ``setup`` once, ``meta_step`` once per meta-step (unless ``trains`` is False), and
    ``initialization`` whenever it validates or tests.
    """

    trains = True
    requires: frozenset[str] = frozenset()  # what the experiment must offer (runner.NEEDS)
    batched = False  # tasks side by side (methods/batched.py)
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


def is_channels_last(param: Tensor) -> bool:
    """A conv weight stored channels-last (flattened in NHWC order, see :func:`flat_params`)."""
    return param.dim() == 4 and not param.is_contiguous() and param.is_contiguous(memory_format=torch.channels_last)


def _in_memory_order(t: Tensor, param: Tensor) -> Tensor:
    """``t`` (a parameter or its gradient) as 1-D in ``param``'s memory order.

    Channels-last conv weights are read in NHWC order, a free view instead of a permuting copy; the order is
    the parameter's, so a parameter and its gradient always line up element by element.
    """
    return t.permute(0, 2, 3, 1).reshape(-1) if is_channels_last(param) else t.reshape(-1)


def flat_params(params: list[Tensor], out: Tensor | None = None) -> Tensor:
    """Parameters as one detached vector (a copy; written into ``out`` when given)."""
    return torch.cat([_in_memory_order(p.detach(), p) for p in params], out=out)


def flat_grads(params: list[Tensor], out: Tensor | None = None) -> Tensor:
    """Gradients as one vector (a copy), in the order of :func:`flat_params`; a missing gradient counts as zero."""
    parts = [_in_memory_order(p.grad, p) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    return torch.cat(parts, out=out)


def grad_views(params: list[Tensor], flat: Tensor) -> list[Tensor]:
    """Views of ``flat`` (in the order of :func:`flat_params`) shaped and strided like each parameter."""
    views, i = [], 0
    for p in params:
        chunk = flat[i:i + p.numel()]
        if is_channels_last(p):
            b, c, h, w = p.shape
            views.append(chunk.view(b, h, w, c).permute(0, 3, 1, 2))
        else:
            views.append(chunk.view(p.shape))
        i += p.numel()
    return views


def set_grads(params: list[Tensor], flat: Tensor) -> None:
    """Write a flat vector (in the order of :func:`flat_params`) into the ``.grad`` of each parameter."""
    for p, view in zip(params, grad_views(params, flat)):
        p.grad = view.clone(memory_format=torch.preserve_format)


def task_seeds(n: int, generator: torch.Generator) -> list[int]:
    """One seed per task of a meta-batch, for the generator its batches (and augmentation) are drawn from."""
    return torch.randint(0, 2**62, (n,), generator=generator).tolist()


class InitializationLearner(MetaLearner):
    """Meta-learns the initialization theta^0 of the model (Leap, Reptile, FOMAML).

    Each task starts from theta^0 (parameters and BatchNorm buffers, so running statistics restart for every
    task, as in the reference code), is trained by the shared inner loop, and yields a meta-gradient
    through ``begin_task``/``observe``/``end_task``. The mean over the task batch is written into ``.grad``
    of theta^0 and any ``torch.optim`` meta-optimizer takes the step.

    ``scope`` restricts the meta-parameters to names starting with it (e.g. ``"body."`` for a shared encoder);
    ``None`` meta-learns every parameter, as the reference code does (conv, BatchNorm affine and head).
    """

    def __init__(self, name: str, meta_optimizer: Callable[..., Optimizer], scope: str | None = None,
                 batched: bool = False) -> None:
        super().__init__(name)
        lr = optimizer_lr(meta_optimizer)
        if lr is not None and not lr > 0:
            raise ConfigError(f"method.meta_optimizer.lr={lr} must be positive.")
        self.meta_optimizer, self.scope, self.batched = meta_optimizer, scope, batched
        # Tasks side by side (batched.py) need one network shape, a known length and plain SGD.
        self.requires = frozenset({"shared_head", "fixed_length", "plain_sgd"} if batched else ())

    def setup(self, model: nn.Module, inner: Inner, num_tasks: int) -> None:
        super().setup(model, inner, num_tasks)
        if self.batched and inner.fixed_steps is None:
            raise ConfigError("method.batched=true needs every task to train for exactly inner.steps updates; it "
                              "cannot run with inner.epochs=true or inner.patience (tasks that stop early): "
                              "set method.batched=false.")
        # The index of every task's last step when the learning process has a fixed length; None: any step may be.
        self.last_index = None if inner.fixed_steps is None else inner.fixed_steps - 1
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
        With ``batched`` the tasks of this process train in lockstep through ``torch.func`` (see ``batched.py``).
        """
        seeds = task_seeds(len(tasks), generator)
        self.theta0 = flat_params(self.params)
        stats = torch.zeros(5, dtype=torch.float64)  # loss sum, loss count, error sum, error count, skipped
        mine = list(distributed.mine(len(tasks)))
        if self.batched:
            from .batched import train_in_lockstep

            total = train_in_lockstep(self, [tasks[k] for k in mine], [seeds[k] for k in mine], stats)
        else:
            total = torch.zeros_like(self.theta0)
            for k in mine:
                total += self._train_task(tasks[k], seeds[k], stats)
        distributed.sum_(total)
        loss_sum, loss_n, err_sum, err_n, skipped = distributed.sum_(stats).tolist()
        if skipped == len(tasks):
            raise DivergenceError(f"every task of the meta-batch ({', '.join(t.name for t in tasks)}) diverged.")
        self.meta_opt.zero_grad(set_to_none=True)
        set_grads(self.params, total / (len(tasks) - skipped))
        self.meta_opt.step()
        out = {"loss": loss_sum / loss_n, "error": 100 * err_sum / err_n}
        return out | ({"skipped": int(skipped)} if skipped else {})

    def _train_task(self, task: Task, seed: int, stats: Tensor) -> Tensor:
        """One task's learning process from theta^0 through the shared inner loop; its meta-gradient."""
        self.work.load_state_dict(self.model.state_dict())
        state, losses = self.begin_task(), []
        params, grads = partial(flat_params, self.work_params), partial(flat_grads, self.work_params)

        def hook(step: int, loss: float, model: nn.Module) -> None:
            losses.append(loss)
            self.observe(state, step, loss, params, grads)

        try:
            curve = self.inner.train(self.work, task, torch.Generator().manual_seed(seed), hook=hook,
                                     **self.inner_options(state))
        except DivergenceError as e:
            if not self.skip_diverging:
                raise
            warnings.warn(f"Skipped a diverging task (train.on_divergence=skip): {e}", stacklevel=2)
            stats[4] += 1
            return torch.zeros_like(self.theta0)
        stats += torch.tensor([sum(losses), len(losses), sum(curve), len(curve), 0.0], dtype=torch.float64)
        return self.end_task(state, params)

    # -- the three hooks a method defines -----------------------------------------------------------------
    # Per-task state lives in the object ``begin_task`` returns, so tasks can also be trained side by side.
    # ``params()``/``grads()`` return flat copies of psi^i and its gradient; call them only when needed.
    # ``params(out=buf)`` may fill ``buf`` to save an allocation; always use the returned tensor.
    def may_be_last(self, step: int) -> bool:
        """Whether inner step ``step`` can be the task's last (every step when tasks stop early)."""
        return self.last_index is None or step == self.last_index

    def begin_task(self) -> dict:
        """A task's learning process starts from theta^0: return its fresh state."""
        return {}

    @abstractmethod
    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        """Inner step ``step`` after backward, before the update: loss f(psi^i; B_i), psi^i and its gradient."""

    def inner_options(self, state: dict) -> dict:
        """Extra keyword arguments for ``Inner.train`` on this task (Leap's ``zero_grad``); none by default."""
        return {}

    @abstractmethod
    def end_task(self, state: dict, params: Flat) -> Tensor:
        """This task's meta-gradient as a flat vector over the meta-parameters (``params()``: the final psi^K)."""

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.meta_opt.load_state_dict(state["meta_opt"])
