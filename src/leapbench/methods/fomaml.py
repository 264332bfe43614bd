"""First-order MAML (the paper's MAML*): the meta-gradient is the task gradient at the adapted parameters.

As in the authors' code, it is the gradient on the last training batch at psi^{K-1} (no separate query set).
"""
from __future__ import annotations

from torch import Tensor, nn

from .base import InitializationLearner, flat_grads


class FOMAML(InitializationLearner):
    def on_step(self, step: int, loss: float, model: nn.Module) -> None:
        if step == self.inner.steps - 1:
            self.grad = flat_grads(self.work_params)

    def end_task(self) -> Tensor:
        return self.grad
