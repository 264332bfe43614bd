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

Under a plain SGD inner loop (``Inner.sgd_lr``) the segment is known without looking at the parameters:
psi^i - psi^{i-1} = -lr * g_{i-1}, so the increment is (lr - df) * g_{i-1} / sqrt(lr^2 ||g_{i-1}||^2 + df^2).
Leap then keeps references to the previous step's ``.grad`` tensors (the inner loop releases them instead of
zeroing them) and per step does one norm and one fused axpy over them: no flat copies (``shortcut``; tested
equal to the general path).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..inner import Inner
from .base import Flat, InitializationLearner, flat_params


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

    shortcut = True  # use the plain-SGD form of the increment when the inner loop allows it

    def __init__(
        self, name: str, meta_optimizer: Callable[..., Optimizer], norm: bool = True, loss: bool = True,
        stabilizer: bool = True, scope: str | None = None, batched: bool = False,
    ) -> None:
        super().__init__(name, meta_optimizer, scope, batched)
        self.norm, self.loss, self.stabilizer = norm, loss, stabilizer

    def setup(self, model: nn.Module, inner: Inner, num_tasks: int) -> None:
        super().setup(model, inner, num_tasks)
        # Batched training hands observe() rows of stacked parameters, not the work model's tensors.
        self.sgd_lr = getattr(inner, "sgd_lr", None) if self.shortcut and not self.batched else None

    def begin_task(self) -> dict:
        if self.sgd_lr is not None:
            return {"prev": None, "acc": [torch.zeros_like(p) for p in self.work_params]}
        # Two (psi, grad) buffer pairs used in turn and one scratch vector: no allocation per inner step.
        buffers = [torch.empty_like(self.theta0) for _ in range(5)]
        return {"prev": None, "acc": torch.zeros_like(self.theta0), "spare": buffers[:2], "other": buffers[2:4],
                "scratch": buffers[4]}

    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        if self.sgd_lr is not None:
            return self._observe_sgd(state, loss)
        spare = state["spare"]
        curr, grad = params(out=spare[0]), grads(out=spare[1])
        if state["prev"] is not None:
            prev, prev_loss, prev_grad = state["prev"]
            increment(prev, curr, prev_loss, loss, prev_grad, self.norm, self.loss, self.stabilizer,
                      into=state["acc"], scratch=state["scratch"])
        state["prev"] = (curr, loss, grad)
        state["spare"], state["other"] = state["other"], spare  # the old psi^{i-1} buffers are free again

    def _observe_sgd(self, state: dict, loss: float) -> None:
        """The increment under plain SGD, from the previous step's gradient tensors (see the module docstring)."""
        if state["prev"] is not None:
            prev_loss, which, prev_grads, g_norm = state["prev"]
            if which and self.work_params[which[0]].grad is prev_grads[0]:
                raise RuntimeError("Leap's SGD shortcut needs gradients released between steps "
                                   "(zero_grad(set_to_none=True)); this inner loop zeroes them in place.")
            lr, df = self.sgd_lr, loss - prev_loss
            if self.stabilizer and df > 0:
                df = -df
            if not self.loss:
                df = 0.0
            length = math.sqrt((lr * g_norm) ** 2 + df * df) if self.norm else 0.0
            scale = 1.0 / length if length > 0 else 1.0
            torch._foreach_add_([state["acc"][k] for k in which], prev_grads, alpha=(lr - df) * scale)
        which = [k for k, p in enumerate(self.work_params) if p.grad is not None]  # no gradient: did not move
        grads = [self.work_params[k].grad for k in which]
        # ||g_i|| now, while the fresh gradients are in cache; the next step closes the segment with it.
        g_norm = float(torch.stack(torch._foreach_norm(grads)).norm()) if self.norm and grads else 0.0
        state["prev"] = (loss, which, grads, g_norm)

    def end_task(self, state: dict, params: Flat) -> Tensor:
        if self.sgd_lr is not None:
            return flat_params(state["acc"])  # laid out like the parameters, so in flat_params' order
        return state["acc"]
