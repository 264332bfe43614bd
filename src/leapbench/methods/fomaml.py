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
