"""Reptile (Nichol et al., 2018): the meta-gradient is theta^0 - psi, averaged over tasks.

As in the authors' code, psi is the point before the last update (psi^{K-1}); ``last_step=True`` uses the
final parameters psi^K, as in Nichol et al. The paper's meta learning rate for Reptile is 0.01. When tasks stop
early (``inner.patience``) K is known only at the end, so psi is kept at every step that may be the last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from ..protocols import Flat, Step
from .base import InitializationLearner


class Reptile(InitializationLearner):
    def __init__(
        self,
        name: str,
        meta_optimizer: Callable[..., Optimizer],
        last_step: bool = False,
        scope: str | None = None,
        batched: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__(name, meta_optimizer, scope, batched, cuda_graphs)
        self.last_step = last_step

    def observe(self, state: Any, step: Step) -> None:
        if not self.last_step and step.may_be_last:  # psi^{K-1}: the point of the last observed step
            state["final"] = step.params()

    def end_task(self, state: Any, final: Flat) -> Tensor:
        return state["theta0"] - (final() if self.last_step else state["final"])

    capturable = True  # side by side: psi^{K-1} rows copied at the last step (methods/batched.py)

    def begin_rows(self, theta0: Tensor, n: int) -> Any:
        return {"theta0": theta0, "final": theta0.new_zeros(n, theta0.numel())}

    def observe_rows(self, state: Any, index: int, last: bool, losses: Tensor, params: Tensor, grads: Tensor) -> None:
        if last and not self.last_step:
            state["final"].copy_(params)

    def end_rows(self, state: Any, final: Tensor) -> Tensor:
        return (state["theta0"] - (final if self.last_step else state["final"])).sum(0)
