"""Tasks side by side on one device: stacked images, batches drawn ahead of time, one vmapped SGD step.

Both side-by-side paths use it: meta-training (``methods/batched.py``) and evaluation
(``evaluation.adapt_side_by_side``). Each task keeps its own generator: :class:`Lockstep` makes, on the CPU and
in ``Task.batches``' order, every draw the task's batches would make (indices and augmentation parameters), and
moves them to the device once. A step then reads its batch with a device counter: no host work and no host sync
inside the loop, so the loop can be recorded as a CUDA graph. The images and the augmentation stay on the device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from .errors import ConfigError
from .tasks import Task

Stacked = dict[str, Tensor]  # a parameter or buffer name -> that tensor for every task, stacked on dim 0


def check_stackable(tasks: Sequence[Task], key: str) -> None:
    """Tasks side by side need one image and training-set shape, one shared head and one augmentation."""
    first = tasks[0]
    for t in tasks[1:]:
        if t.x_train.shape != first.x_train.shape or t.x_heldout.shape != first.x_heldout.shape:
            raise ConfigError(
                f"{key}=true stacks tasks of one size, but {t.name} and {first.name} differ; set {key}=false."
            )
        if t.augment is not first.augment or t.augment_heldout != first.augment_heldout:
            raise ConfigError(f"{key}=true needs one augmentation for every task; set {key}=false.")
    if any(t.head is not None for t in tasks):
        raise ConfigError(
            f"{key}=true trains one shared network shape; tasks with heads of their own cannot be stacked. "
            f"Set {key}=false."
        )


class Lockstep:
    """``tasks`` stacked on ``device`` with ``steps`` batches each planned from ``generators`` (one per task).

    Where the tasks augment their held-out images too, evaluation draws those augmentations from the same
    generator between batches: with ``every`` the plan also makes the draws of a check after every ``every``
    batches (``checks``), and of the last check of a task that stops right there (``finals``, taken from a copy
    of the generator; the last row is the check after all ``steps`` batches), exactly as ``evaluation.adapt``
    makes them.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        generators: Sequence[torch.Generator],
        steps: int,
        batch_size: int,
        device: torch.device,
        every: int | None = None,
    ) -> None:
        self.augment = augment = tasks[0].augment
        heldout = augment is not None and tasks[0].augment_heldout
        plans: list[list[tuple[Tensor, Tensor | None]]] = []
        checks: list[list[Tensor]] = []
        finals: list[list[Tensor]] = []
        for t, g in zip(tasks, generators):
            plan, check, final = [], [], []
            for i, batch in enumerate(t.plan(steps, batch_size, g)):
                plan.append(batch)
                if heldout and every is not None and (i + 1) % every == 0:
                    check.append(augment.draw(len(t.y_heldout), g))  # type: ignore[union-attr]
                    final.append(augment.draw(len(t.y_heldout), _copy(g)))  # type: ignore[union-attr]
            if heldout:
                final.append(augment.draw(len(t.y_heldout), g))  # type: ignore[union-attr]
            plans.append(plan)
            checks.append(check)
            finals.append(final)
        self.x = torch.stack([t.x_train.to(device) for t in tasks])  # (tasks, N, C, H, W)
        self.y = torch.stack([t.y_train.to(device) for t in tasks])
        self.idx = torch.stack([torch.stack([i for i, _ in p]) for p in plans]).to(device)  # (tasks, steps, B)
        self.aug = None if augment is None else _stack2([[cast(Tensor, a) for _, a in p] for p in plans], device)
        self.checks = _stack2(checks, device) if heldout and checks[0] else None
        self.finals = _stack2(finals, device) if heldout else None
        self.rows = torch.arange(len(tasks), device=device)[:, None]

    def batch(self, step: Tensor) -> tuple[Tensor, Tensor]:
        """Every task's batch number ``step`` (a one-element device tensor): images (tasks, B, C, H, W), labels."""
        idx = self.idx.index_select(1, step).squeeze(1)
        x, y = self.x[self.rows, idx], self.y[self.rows, idx]
        if self.aug is not None and self.augment is not None:
            x = self.augment.apply(x, self.aug.index_select(1, step).squeeze(1))
        return x, y

    def heldout(self, x: Tensor, check: int | None, final: bool = False) -> Tensor:
        """The stacked held-out images ``x`` as check number ``check`` sees them (augmented where the tasks say so);
        ``final``: the last check of a task that stops there; ``check=None``: the check after all batches."""
        if self.finals is None or self.augment is None:
            return x
        if check is None:
            params = self.finals[:, -1]
        else:
            params = (self.finals if final else self.checks)[:, check]  # type: ignore[index]
        return self.augment.apply(x, params)


def _stack2(rows: list[list[Tensor]], device: torch.device) -> Tensor:
    """A list of lists of equal tensors as one (len, len, ...) tensor on ``device``."""
    return torch.stack([torch.stack(r) for r in rows]).to(device)


def _copy(g: torch.Generator) -> torch.Generator:
    copy = torch.Generator()
    copy.set_state(g.get_state())
    return copy


def functional_model(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` for ``functional_call`` under vmap: contiguous layout (the suite's models switch
    channels-last off through their ``channels_last`` flag), on ``device``."""
    model = copy.deepcopy(model).to(device)
    if getattr(model, "channels_last", False):  # a layout switch of the suite's models, not a capability
        model.channels_last = False  # type: ignore[assignment]
        model.to(memory_format=torch.contiguous_format)
    return model


def stack(tensors: dict[str, Tensor], n: int) -> Stacked:
    """``n`` contiguous copies of every tensor, stacked on a new dim 0."""
    return {k: v.detach().unsqueeze(0).repeat(n, *[1] * v.dim()).contiguous() for k, v in tensors.items()}


def sgd_step(model: nn.Module) -> Callable[[Stacked, Stacked, Tensor, Tensor], tuple[Stacked, tuple[Tensor, Tensor]]]:
    """``step(params, buffers, x, y) -> (grads, (losses, logits))`` for every task at once (training mode; BatchNorm
    running statistics in ``buffers`` are updated in place, task by task)."""

    def loss_and_logits(ps: Stacked, bs: Stacked, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = functional_call(model, (ps, bs), (x,))
        return F.cross_entropy(logits, y), logits

    return vmap(grad_and_value(loss_and_logits, has_aux=True))


def scorer(model: nn.Module) -> Callable[[Stacked, Stacked, Tensor, Tensor], Tensor]:
    """``errors(params, buffers, x, y)``: every task's classification error (0-1) on its own images, in eval mode
    (BatchNorm running statistics), as ``inner.error_on`` scores one task."""

    def error(ps: Stacked, bs: Stacked, x: Tensor, y: Tensor) -> Tensor:
        wrong = (functional_call(model, (ps, bs), (x,)).argmax(-1) != y).sum()
        return wrong.to(torch.float64) / max(y.shape[-1], 1)  # as error_on's int / int

    batched = vmap(error)

    def errors(ps: Stacked, bs: Stacked, x: Tensor, y: Tensor) -> Tensor:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return batched(ps, bs, x, y)
        finally:
            model.train(was)

    return errors
