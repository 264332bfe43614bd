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

import math
from typing import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .base import Flat, InitializationLearner


def increment(
    prev: Tensor, curr: Tensor, prev_loss: float, curr_loss: float, prev_grad: Tensor,
    norm: bool = True, loss: bool = True, stabilizer: bool = True,
) -> Tensor:
    """Leap's meta-gradient contribution of the segment from ``prev`` to ``curr`` (flat vectors)."""
    step = curr - prev
    df = curr_loss - prev_loss
    if stabilizer and df > 0:
        df = -df
    # out = -(step + df * prev_grad), divided by the segment length: four passes over the vector in all.
    out = torch.add(step, prev_grad, alpha=df) if loss else step
    scale = -1.0
    if norm:
        length = math.sqrt(float(step.dot(step)) + (df * df if loss else 0.0))
        if length > 0:
            scale /= length
    return out.mul_(scale)


class Leap(InitializationLearner):
    """Leap with switches ``norm`` (length vs energy), ``loss`` (the loss term) and ``stabilizer`` (mu)."""

    def __init__(
        self, name: str, meta_optimizer: Callable[..., Optimizer], norm: bool = True, loss: bool = True,
        stabilizer: bool = True, scope: str | None = None, batched: bool = False,
    ) -> None:
        super().__init__(name, meta_optimizer, scope, batched)
        self.norm, self.loss, self.stabilizer = norm, loss, stabilizer

    def begin_task(self) -> dict:
        return {"prev": None, "acc": torch.zeros_like(self.theta0)}

    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        curr, grad = params(), grads()
        if state["prev"] is not None:
            prev, prev_loss, prev_grad = state["prev"]
            state["acc"] += increment(prev, curr, prev_loss, loss, prev_grad, self.norm, self.loss, self.stabilizer)
        state["prev"] = (curr, loss, grad)

    def end_task(self, state: dict, params: Flat) -> Tensor:
        return state["acc"]
