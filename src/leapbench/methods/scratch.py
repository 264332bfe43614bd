"""No pretraining: evaluation adapts the random initialization."""

from __future__ import annotations

import torch

from ..tasks import Task
from .base import MetaLearner


class Scratch(MetaLearner):
    trains = False

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        raise RuntimeError("scratch has nothing to meta-train")
