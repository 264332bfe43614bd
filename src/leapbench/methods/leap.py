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
    into: Tensor | None = None, scratch: Tensor | None = None,
) -> Tensor:
    """Leap's meta-gradient contribution of the segment from ``prev`` to ``curr`` (flat vectors).

    Returned as a new vector, or added into ``into`` (then returned); ``scratch`` is an optional buffer for
    the step. With both, nothing is allocated: four passes over the vector (difference, dot, two axpys).
    """
    step = torch.sub(curr, prev, out=scratch)
    df = curr_loss - prev_loss
    if stabilizer and df > 0:
        df = -df
    scale = 1.0
    if norm:
        length = math.sqrt(float(step.dot(step)) + (df * df if loss else 0.0))
        if length > 0:
            scale /= length
    out = torch.zeros_like(curr) if into is None else into
    out.add_(step, alpha=-scale)  # -step / length
    if loss:
        out.add_(prev_grad, alpha=-df * scale)  # - df * g_{i-1} / length
    return out


class Leap(InitializationLearner):
    """Leap with switches ``norm`` (length vs energy), ``loss`` (the loss term) and ``stabilizer`` (mu)."""

    def __init__(
        self, name: str, meta_optimizer: Callable[..., Optimizer], norm: bool = True, loss: bool = True,
        stabilizer: bool = True, scope: str | None = None, batched: bool = False,
    ) -> None:
        super().__init__(name, meta_optimizer, scope, batched)
        self.norm, self.loss, self.stabilizer = norm, loss, stabilizer

    def begin_task(self) -> dict:
        # Two (psi, grad) buffer pairs used in turn and one scratch vector: no allocation per inner step.
        buffers = [torch.empty_like(self.theta0) for _ in range(5)]
        return {"prev": None, "acc": torch.zeros_like(self.theta0), "spare": buffers[:2], "other": buffers[2:4],
                "scratch": buffers[4]}

    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        spare = state["spare"]
        curr, grad = params(out=spare[0]), grads(out=spare[1])
        if state["prev"] is not None:
            prev, prev_loss, prev_grad = state["prev"]
            increment(prev, curr, prev_loss, loss, prev_grad, self.norm, self.loss, self.stabilizer,
                      into=state["acc"], scratch=state["scratch"])
        state["prev"] = (curr, loss, grad)
        state["spare"], state["other"] = state["other"], spare  # the old psi^{i-1} buffers are free again

    def end_task(self, state: dict, params: Flat) -> Tensor:
        return state["acc"]
