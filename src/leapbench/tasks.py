"""A supervised task: training images to learn from and held-out images to score the result."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class Task:
    """One classification task (an Omniglot alphabet, a Multi-CV dataset).

    Images are float tensors ``(N, C, H, W)``; labels are ``int64`` in ``[0, num_classes)``.
    ``augment`` is applied on the fly to every training batch, and to held-out images when
    ``augment_heldout`` is set (the reference code does this for Omniglot). ``head`` names the task's own
    output layer in a multi-head model (``models.MultiHeadConvNet``); ``None`` for single-head models.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_heldout: Tensor
    y_heldout: Tensor
    task_id: int = 0
    augment: Augment | None = None
    augment_heldout: bool = False
    head: str | None = None
    x_val: Tensor | None = None  # validation images: early stopping watches them instead of the held-out ones
    y_val: Tensor | None = None

    def batches(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``steps`` training batches; each epoch is a fresh permutation of the training set."""
        n = len(self.y_train)
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            idx, order = order[:batch_size], order[batch_size:]
            x = self.x_train[idx]
            if self.augment is not None:
                x = self.augment(x, generator)
            yield x, self.y_train[idx]

    def heldout(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The held-out images (augmented when the protocol says so) and their labels."""
        x = self.x_heldout
        if self.augment is not None and self.augment_heldout:
            x = self.augment(x, generator)
        return x, self.y_heldout
