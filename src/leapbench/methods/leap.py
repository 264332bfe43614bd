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

Under a plain SGD learning process (``sgd_lr``, ``protocols.LearningProcess``) the segment is known without
looking at the parameters: psi^i - psi^{i-1} = -lr * g_{i-1}, so the increment is
(lr - df) * g_{i-1} / sqrt(lr^2 ||g_{i-1}||^2 + df^2). Leap then keeps the work model's gradients in one flat
vector (every ``.grad`` a view of it, like the buckets of DistributedDataParallel) and declares that it clears
them itself (``clears_gradients``): in ``before_backward`` of step i, f_i is known and the vector still holds
g_{i-1}, so one dot product (||g_{i-1}||) and one axpy close the segment before the vector is zeroed. Three
passes over one vector per step and no copies (``shortcut``; tested equal to the general path). A zero
gradient is a zero SGD update, so parameters without a gradient (another task's head) still do not move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..protocols import Flat, LearningProcess, Step
from .base import InitializationLearner
from .flat import flat_params, grad_views


def increment(
    prev: Tensor,
    curr: Tensor,
    prev_loss: float,
    curr_loss: float,
    prev_grad: Tensor,
    norm: bool = True,
    loss: bool = True,
    stabilizer: bool = True,
    into: Tensor | None = None,
    scratch: Tensor | None = None,
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
        self,
        name: str,
        meta_optimizer: Callable[..., Optimizer],
        norm: bool = True,
        loss: bool = True,
        stabilizer: bool = True,
        scope: str | None = None,
        batched: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__(name, meta_optimizer, scope, batched, cuda_graphs)
        self.norm, self.loss, self.stabilizer = norm, loss, stabilizer

    def setup(self, model: nn.Module, inner: LearningProcess, num_tasks: int) -> None:
        super().setup(model, inner, num_tasks)
        # Batched training hands observe() rows of stacked parameters, not the work model's tensors; with a
        # scope, the parameters outside it would need their gradients cleared separately.
        whole = len(self.work_params) == len(list(self.work.parameters()))
        self.sgd_lr = inner.sgd_lr if self.shortcut and whole and not self.batched else None
        self.clears_gradients = self.sgd_lr is not None
        if self.clears_gradients:
            self.grads = torch.zeros_like(flat_params(self.work_params))  # g_i, in the order of flat_params
            self.grad_views = grad_views(self.work_params, self.grads)

    def begin_task(self, theta0: Tensor) -> Any:
        if self.clears_gradients:
            for p, view in zip(self.work_params, self.grad_views):
                p.grad = view
        return {"prev": None, "acc": torch.zeros_like(theta0), "scratch": torch.empty_like(theta0)}

    def before_backward(self, state: Any, loss: float) -> None:
        """The shortcut at step i, after the forward pass: ``self.grads`` still holds g_{i-1}; add the increment of
        the segment (psi^{i-1}, psi^i) from it and f_i, then zero it for this step's backward. The three passes
        (dot, axpy, zero) run back to back while the vector is in cache."""
        if state["prev"] is not None:
            lr, df = cast(float, self.sgd_lr), loss - state["prev"]
            if self.stabilizer and df > 0:
                df = -df
            if not self.loss:
                df = 0.0
            length = math.sqrt(lr * lr * float(self.grads.dot(self.grads)) + df * df) if self.norm else 0.0
            state["acc"].add_(self.grads, alpha=(lr - df) / length if length > 0 else lr - df)
        self.grads.zero_()

    def observe(self, state: Any, step: Step) -> None:
        if self.clears_gradients:
            if self.work_params[0].grad is not self.grad_views[0]:
                raise RuntimeError(
                    "Leap's SGD shortcut keeps the gradients in its own buffer, but the learning "
                    "process replaced them: it must clear them through before_backward."
                )
            state["prev"] = step.loss  # the next step closes the segment from here
            return
        curr, grad = step.params(), step.grads()
        if state["prev"] is not None:
            prev, prev_loss, prev_grad = state["prev"]
            increment(
                prev,
                curr,
                prev_loss,
                step.loss,
                prev_grad,
                self.norm,
                self.loss,
                self.stabilizer,
                into=state["acc"],
                scratch=state["scratch"],
            )
        state["prev"] = (curr, step.loss, grad)

    def end_task(self, state: Any, final: Flat) -> Tensor:
        return state["acc"]

    # -- side by side (methods/batched.py): the general increment on (tasks, P) rows, in place --------------
    capturable = True

    def begin_rows(self, theta0: Tensor, n: int) -> Any:
        rows = theta0.new_zeros(n, theta0.numel())
        return {"acc": rows, "prev": rows.clone(), "prev_grad": rows.clone(), "prev_loss": theta0.new_zeros(n)}

    def observe_rows(self, state: Any, index: int, last: bool, losses: Tensor, params: Tensor, grads: Tensor) -> None:
        if index > 0:  # close the segment (psi^{i-1}, psi^i), as ``increment`` does for one task
            step = params - state["prev"]
            df = losses.to(params.dtype) - state["prev_loss"]
            if self.stabilizer:
                df = -df.abs()
            if not self.loss:
                df = torch.zeros_like(df)
            scale = torch.ones_like(df)
            if self.norm:
                length = ((step * step).sum(1) + df * df).sqrt()
                scale = torch.where(length > 0, 1 / length, scale)
            state["acc"].sub_(step * scale[:, None])
            state["acc"].sub_(state["prev_grad"] * (df * scale)[:, None])
        state["prev"].copy_(params)
        state["prev_grad"].copy_(grads)
        state["prev_loss"].copy_(losses)

    def end_rows(self, state: Any, final: Tensor) -> Tensor:
        return state["acc"].sum(0)
