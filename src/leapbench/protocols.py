"""The suite's contracts, in one leaf module (it imports nothing of the suite).

Four parties meet here:

* a **learning process** (``inner.Inner`` for supervised tasks, ``rl.a2c.A2C`` for games) trains a model on
  one task and declares what it is: plain SGD or not, CPU only or not, a fixed or variable number of updates,
  whether it lets a method clear the gradients (own the gradient buffer);
* a **method** that meta-learns an initialization (``methods.base.InitializationLearner``) is handed, per
  task, theta^0 and then every step's loss, psi^i and gradient (a :class:`Step`), and returns the task's
  meta-gradient; a task engine (``methods/sequential.py``, ``methods/batched.py``) drives the two;
* a **benchmark** (``data.omniglot``, ``data.multicv``, ``data.atari``) offers pretraining, validation and test
  tasks, and what the model needs from it (one head per task or a shared one);
* an **adaptation** (``evaluation.Adaptation``, ``rl.a2c.Training``) says how evaluation adapts an
  initialization to a test task and which scores it reports.

Methods read these declarations; nothing here is discovered by probing attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

Flat = Callable[[], Tensor]  # a flat copy of psi^i or of its gradient, made on demand; the method may keep it


# hook(step, loss, model): called by a learning process after each step's backward() and before its update.
StepHook = Callable[[int, float, nn.Module], None]


# zero_grad(step, loss): called by the learning process after the forward pass, instead of releasing the
# gradients itself; ``.grad`` still holds the previous step's gradient and must be cleared in place.
ZeroGrad = Callable[[int, float], None]


class LearningProcess(Protocol):
    """What trains a model on one task, and what it declares about itself."""

    @property
    def provides(self) -> frozenset[str]:
        """Capabilities a method may require (``checks.NEEDS``): labels, fixed_length, plain_sgd."""

    @property
    def cpu_only(self) -> bool:
        """``checks.validate`` refuses device=cuda."""

    @property
    def fixed_steps(self) -> int | None:
        """Updates every meta-training task takes when known before it starts; None: variable length."""

    @property
    def sgd_lr(self) -> float | None:
        """The lr when every update is psi <- psi - lr * grad (plain SGD); None otherwise. A plain-SGD process
        also offers its gradient buffer: ``train(..., zero_grad=...)`` lets the method clear it in place."""

    def steps_for(self, task: Any) -> int:
        """The most updates ``task`` trains for in meta-training."""

    def train(
        self,
        model: nn.Module,
        task: Any,
        generator: torch.Generator,
        *,
        steps: int | None = None,
        hook: StepHook | None = None,
        after_step: Callable[[int], bool] | None = None,
        zero_grad: ZeroGrad | None = None,
    ) -> list[float]:
        """Train ``model`` in place; ``hook`` sees every step; ``after_step(i)`` may stop after update i."""


@dataclass(frozen=True)
class Step:
    """One inner step as a method sees it: the model holds psi^i, after ``backward()`` on batch B_i.

    ``last`` is True on the task's last observed step and False before it when the length is fixed; None when
    the process stops on its own (any step may be the last). ``params()`` and ``grads()`` are fresh flat
    copies of psi^i and grad f(psi^i; B_i) over the meta-parameters: call them only when needed.
    """

    index: int
    loss: float
    last: bool | None
    params: Flat
    grads: Flat

    @property
    def may_be_last(self) -> bool:
        return self.last is not False


class TaskHooks(Protocol):
    """The per-task contract of an initialization meta-learner (``methods.base.InitializationLearner``).

    Per-task state lives in the object ``begin_task`` returns, so the engines may run tasks one after another
    or side by side. ``clears_gradients`` is a declaration: a method that sets it is called through
    ``before_backward`` in place of the learning process clearing the gradients (only under plain SGD).
    """

    clears_gradients: bool

    def begin_task(self, theta0: Tensor) -> Any:
        """A task starts from theta^0 (flat, over the meta-parameters): its fresh state."""

    def observe(self, state: Any, step: Step) -> None:
        """Every inner step, after backward and before the update."""

    def before_backward(self, state: Any, loss: float) -> None:
        """With ``clears_gradients``: after the forward pass; ``.grad`` holds the previous step's gradient."""

    def end_task(self, state: Any, final: Flat) -> Tensor:
        """The task's meta-gradient (flat, over the meta-parameters); ``final()`` is psi^K."""


class RowHooks(Protocol):
    """The side-by-side form of :class:`TaskHooks` (``methods/batched.py``): one state for ``n`` tasks, whose losses
    come as an (n,) tensor and psi^i and gradients as (n, P) rows, all on the device and valid during the call only.

    ``capturable`` declares that ``observe_rows`` keeps what it needs by writing into its state in place and
    never reads a value on the host, so the engine may record one call as a CUDA graph and replay it: on every
    replay ``index`` and ``last`` are those of the recording, and the engine records a step that is neither the
    first nor the last. ``InitializationLearner`` implements these hooks through the per-task ones (not capturable).
    """

    capturable: bool

    def begin_rows(self, theta0: Tensor, n: int) -> Any:
        """``n`` tasks start from theta^0: their fresh state."""

    def observe_rows(self, state: Any, index: int, last: bool, losses: Tensor, params: Tensor, grads: Tensor) -> None:
        """Inner step ``index`` of every task, after backward and before the update."""

    def end_rows(self, state: Any, final: Tensor) -> Tensor:
        """The sum of the tasks' meta-gradients (flat); ``final`` holds psi^K as rows."""


class TaskLearner(TaskHooks, RowHooks, Protocol):
    """What a task engine reads from the method it drives."""

    model: nn.Module  # holds theta^0
    work: nn.Module  # the task learner, reloaded from ``model`` for every task
    params: list[Tensor]  # the meta-parameters of ``model``
    work_params: list[Tensor]  # the same parameters of ``work``
    inner: LearningProcess
    skip_diverging: bool
    cuda_graphs: bool  # the batched engine may record its steps as a CUDA graph (when ``capturable``)


class Benchmark(Protocol):
    """A benchmark: its tasks and what the model needs from it.

    ``provides`` is a class attribute (checked before any data is loaded): ``shared_head`` when every task has
    the same classes on one output layer. ``model_kwargs`` is what the model's constructor needs from the data:
    ``{"heads": {task: outputs}}`` when every task has a head of its own (Multi-CV, Atari), else nothing.
    A task is a ``tasks.Task`` (supervised) or what the benchmark's learning process trains on (``rl.a2c.Game``).
    """

    provides: ClassVar[frozenset[str]]
    pretrain: Sequence[Any]
    val: Sequence[Any]
    test: Sequence[Any]

    @property
    def model_kwargs(self) -> dict[str, Any]: ...

    def to(self, device: torch.device) -> None:
        """Move the tasks' data to the run's device, once, before anything trains on it."""


class Adaptation(Protocol):
    """How evaluation adapts an initialization to one task (``evaluation.Adaptation``, ``rl.a2c.Training``)."""

    scores: ClassVar[tuple[str, ...]]  # the per-task scores ``run`` returns, averaged by ``evaluate``
    batched: bool  # the tasks adapt side by side (``evaluation.adapt_side_by_side``), not through ``run``

    def run(
        self,
        model: nn.Module,
        task: Any,
        inner: Any,
        generator: torch.Generator,
        monitor: Callable[[str, int, int, float | None], None] | None = None,
    ) -> dict: ...
