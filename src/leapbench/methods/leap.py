"""Leap: the pull-forward meta-gradient (paper Alg. 1 and eq. 8, with J = I), accumulated on the fly.

At inner step i the model holds psi^i, its minibatch loss f_i = f(psi^i; B_i) and gradient g_i. Each step
after the first closes the segment (psi^{i-1}, psi^i) and adds

    increment = -(psi^i - psi^{i-1}) - df * g_{i-1},      df = f_i - f_{i-1},

where the stabilizer (the paper's mu) flips df to -|df| so that the loss term always pulls downhill, the
loss term is dropped when ``loss=False``, and ``norm=True`` divides by the segment length
sqrt(||psi^i - psi^{i-1}||^2 + df^2), giving the gradient of the path *length* instead of the *energy*.

Defaults follow the authors' code: norm, loss and stabilizer on; the K - 1 segments closed by the K recorded
steps (the last update is never observed); summed over steps, averaged over tasks, no factor 2. The paper's
text (energy, factor 2) is ``method=leap_paper``. Only the previous point is kept: no trajectory is stored.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .base import InitializationLearner, flat_grads, flat_params


def increment(
    prev: Tensor, curr: Tensor, prev_loss: float, curr_loss: float, prev_grad: Tensor,
    norm: bool = True, loss: bool = True, stabilizer: bool = True,
) -> Tensor:
    """Leap's meta-gradient contribution of the segment from ``prev`` to ``curr`` (flat vectors)."""
    step = curr - prev
    df = curr_loss - prev_loss
    if stabilizer and df > 0:
        df = -df
    out = -step
    if loss:
        out = out - df * prev_grad
    if norm:
        length = (step.dot(step) + (df * df if loss else 0.0)).sqrt()
        if length > 0:
            out = out / length
    return out


class Leap(InitializationLearner):
    """Leap with switches ``norm`` (length vs energy), ``loss`` (the loss term) and ``stabilizer`` (mu)."""

    def __init__(
        self, name: str, meta_optimizer: Callable[..., Optimizer], norm: bool = True, loss: bool = True,
        stabilizer: bool = True, scope: str | None = None,
    ) -> None:
        super().__init__(name, meta_optimizer, scope)
        self.norm, self.loss, self.stabilizer = norm, loss, stabilizer

    def begin_task(self) -> None:
        self.prev: tuple[Tensor, float, Tensor] | None = None
        self.acc = torch.zeros_like(self.theta0)

    def on_step(self, step: int, loss: float, model: nn.Module) -> None:
        curr, grad = flat_params(self.work_params), flat_grads(self.work_params)
        if self.prev is not None:
            prev, prev_loss, prev_grad = self.prev
            self.acc += increment(prev, curr, prev_loss, loss, prev_grad, self.norm, self.loss, self.stabilizer)
        self.prev = (curr, loss, grad)

    def end_task(self) -> Tensor:
        return self.acc
