"""The interface every method implements, and the shared machinery of initialization meta-learners.

A method is one file and one config: ``MetaLearner`` for any method (fine-tuning, no pretraining), and
``InitializationLearner`` for those that meta-learn theta^0 through the per-task hooks of
``protocols.TaskHooks`` (Leap, Reptile, FOMAML). The task engines (``sequential.py``, ``batched.py``) drive the
hooks; neither imports this module.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .. import distributed
from ..errors import ConfigError
from ..inner import DivergenceError, check_optimizer
from ..protocols import Flat, LearningProcess, Step
from ..tasks import Task
from .batched import train_in_lockstep
from .flat import flat_params, set_grads
from .sequential import train_in_sequence


class MetaLearner(ABC):
    """A method: it learns from pretraining tasks and hands evaluation an initialization.

    The runner calls ``setup`` once; ``loop.MetaTraining`` calls ``meta_step`` once per meta-step (unless
    ``trains`` is False) and ``initialization`` whenever it validates or tests.
    """

    trains = True
    requires: frozenset[str] = frozenset()  # what the experiment must offer (checks.NEEDS)
    batched = False  # tasks side by side (methods/batched.py)
    skip_diverging = False  # train.on_divergence=skip: drop a diverging task from its meta-batch (see below)

    def __init__(self, name: str) -> None:
        self.name = name

    def setup(self, model: nn.Module, inner: LearningProcess, num_tasks: int) -> None:
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


def task_seeds(n: int, generator: torch.Generator) -> list[int]:
    """One seed per task of a meta-batch, for the generator its batches (and augmentation) are drawn from."""
    return torch.randint(0, 2**62, (n,), generator=generator).tolist()


class InitializationLearner(MetaLearner):
    """Meta-learns the initialization theta^0 of the model (Leap, Reptile, FOMAML).

    Each task starts from theta^0 (parameters and BatchNorm buffers, so running statistics restart for every
    task, as in the reference code), is trained by the learning process, and yields a meta-gradient through
    ``begin_task``/``observe``/``end_task`` (``protocols.TaskHooks``; a subclass defines ``observe`` and
    ``end_task``). The mean over the task batch is written into ``.grad`` of theta^0 and any ``torch.optim``
    meta-optimizer takes the step.

    ``scope`` restricts the meta-parameters to names starting with it (e.g. ``"body."`` for a shared encoder);
    ``None`` meta-learns every parameter, as the reference code does (conv, BatchNorm affine and head).
    """

    def __init__(
        self,
        name: str,
        meta_optimizer: Callable[..., Optimizer],
        scope: str | None = None,
        batched: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__(name)
        self.cuda_graphs = cuda_graphs
        check_optimizer(meta_optimizer, "method.meta_optimizer")
        self.meta_optimizer, self.scope, self.batched = meta_optimizer, scope, batched
        # Tasks side by side (batched.py) need labelled batches, one network shape, a known length and plain SGD.
        self.requires = frozenset({"labels", "shared_head", "fixed_length", "plain_sgd"} if batched else ())

    def setup(self, model: nn.Module, inner: LearningProcess, num_tasks: int) -> None:
        super().setup(model, inner, num_tasks)
        if self.batched and inner.fixed_steps is None:
            raise ConfigError(
                "method.batched=true needs every task to train for exactly inner.steps updates; it "
                "cannot run with inner.epochs=true or inner.patience (tasks that stop early): "
                "set method.batched=false."
            )
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
        theta0 = flat_params(self.params)
        stats = torch.zeros(5, dtype=torch.float64)  # loss sum, loss count, error sum, error count, skipped
        mine = list(distributed.mine(len(tasks)))
        engine = train_in_lockstep if self.batched else train_in_sequence
        total = engine(self, [tasks[k] for k in mine], [seeds[k] for k in mine], theta0, stats)
        distributed.sum_(total)
        loss_sum, loss_n, err_sum, err_n, skipped = distributed.sum_(stats).tolist()
        if skipped == len(tasks):
            raise DivergenceError(f"every task of the meta-batch ({', '.join(t.name for t in tasks)}) diverged.")
        self.meta_opt.zero_grad(set_to_none=True)
        set_grads(self.params, total / (len(tasks) - skipped))
        self.meta_opt.step()
        out = {"loss": loss_sum / loss_n, "error": 100 * err_sum / err_n}
        return out | ({"skipped": int(skipped)} if skipped else {})

    # -- the per-task hooks (protocols.TaskHooks) ----------------------------------------------------------
    clears_gradients = False  # declared by a method that clears the gradients itself (Leap's SGD shortcut)

    def begin_task(self, theta0: Tensor) -> Any:
        """A task's learning process starts from theta^0: return its fresh state."""
        return {"theta0": theta0}

    @abstractmethod
    def observe(self, state: Any, step: Step) -> None:
        """Inner step ``step.index`` after backward, before the update: its loss, psi^i and gradient."""

    def before_backward(self, state: Any, loss: float) -> None:
        """Only with ``clears_gradients``: clear ``.grad`` in place, which still holds the previous gradient."""
        raise NotImplementedError(f"{type(self).__name__} declares clears_gradients but defines no before_backward")

    @abstractmethod
    def end_task(self, state: Any, final: Flat) -> Tensor:
        """This task's meta-gradient as a flat vector over the meta-parameters (``final()``: psi^K)."""

    # -- the side-by-side hooks (protocols.RowHooks): here through the per-task ones, one row at a time ----------
    capturable = False  # declared by a method whose observe_rows works in place on the device (CUDA graphs)

    def begin_rows(self, theta0: Tensor, n: int) -> Any:
        return [self.begin_task(theta0) for _ in range(n)]

    def observe_rows(self, state: Any, index: int, last: bool, losses: Tensor, params: Tensor, grads: Tensor) -> None:
        for k, value in enumerate(losses.tolist()):
            self.observe(state[k], Step(index, value, last, _row(params, k), _row(grads, k)))

    def end_rows(self, state: Any, final: Tensor) -> Tensor:
        total = torch.zeros_like(final[0])
        for k, s in enumerate(state):
            total += self.end_task(s, _row(final, k))
        return total

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.meta_opt.load_state_dict(state["meta_opt"])


def _row(rows: Tensor, k: int) -> Flat:
    """Row ``k`` of a stacked (tasks, P) tensor as a fresh copy, as the ``Step`` hooks take it."""
    return lambda: rows[k].clone()
