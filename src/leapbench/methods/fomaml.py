"""First-order MAML (the paper's MAML*): the meta-gradient is the task gradient at the adapted parameters.

As in the authors' code, it is the gradient on the last training batch at psi^{K-1} (no separate query set).
"""
from __future__ import annotations

from torch import Tensor

from .base import Flat, InitializationLearner


class FOMAML(InitializationLearner):
    fixed_length = True

    def observe(self, state: dict, step: int, loss: float, params: Flat, grads: Flat) -> None:
        if step == self.inner.steps - 1:
            state["grad"] = grads()

    def end_task(self, state: dict, params: Flat) -> Tensor:
        return state["grad"]
