"""First-order MAML (the paper's MAML*): the meta-gradient is the task gradient at the adapted parameters.

As in the authors' code, it is the gradient on the last training batch at psi^{K-1} (no separate query set).
When tasks stop early (``inner.patience``) every step's gradient is kept (one buffer, overwritten).
"""
from __future__ import annotations

from torch import Tensor

from .base import Flat, InitializationLearner


class FOMAML(InitializationLearner):
    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        if self.may_be_last(step):
            state["grad"] = grads(out=state.get("grad"))

    def end_task(self, state: dict, params: Flat) -> Tensor:
        return state["grad"]
