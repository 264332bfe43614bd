"""First-order MAML (the paper's MAML*): the meta-gradient is the task gradient at the adapted parameters.

As in the authors' code, it is the gradient on the last training batch at psi^{K-1} (no separate query set).
When tasks stop early (``inner.patience``) the gradient of every step that may be the last is kept.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..protocols import Flat, Step
from .base import InitializationLearner


class FOMAML(InitializationLearner):
    def observe(self, state: Any, step: Step) -> None:
        if step.may_be_last:
            state["grad"] = step.grads()

    def end_task(self, state: Any, final: Flat) -> Tensor:
        return state["grad"]

    capturable = True  # side by side: the last step's gradient rows copied (methods/batched.py)

    def begin_rows(self, theta0: Tensor, n: int) -> Any:
        return {"grad": theta0.new_zeros(n, theta0.numel())}

    def observe_rows(self, state: Any, index: int, last: bool, losses: Tensor, params: Tensor, grads: Tensor) -> None:
        if last:
            state["grad"].copy_(grads)

    def end_rows(self, state: Any, final: Tensor) -> Tensor:
        return state["grad"].sum(0)
