"""A supervised task: training images to learn from and held-out images to score the result."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch
from torch import Tensor


class Augment(Protocol):
    """A random image transform in two halves, so its draws can be made ahead of time (``Task.plan``).

    ``draw`` takes the parameters of ``n`` images from ``generator`` (on the CPU, in a fixed order); ``apply``
    transforms images ``(*lead, B, C, H, W)`` with parameters ``(*lead, B, k)`` on the images' device. A batch
    is the last four dimensions: a transform that depends on the batch (a fill value) treats each leading
    index as a batch of its own, so stacked tasks augment as they would one by one.
    """

    def draw(self, n: int, generator: torch.Generator) -> Tensor: ...

    def apply(self, x: Tensor, params: Tensor) -> Tensor: ...


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

    def plan(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Each of ``steps`` batches as its image indices and augmentation parameters (None without one), drawn
        in the order ``batches`` draws them; each epoch is a fresh permutation of the training set."""
        n = len(self.y_train)
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            idx, order = order[:batch_size], order[batch_size:]
            yield idx, None if self.augment is None else self.augment.draw(len(idx), generator)

    def batches(self, steps: int, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``steps`` training batches (images, labels) on the device the task's images are on."""
        for idx, params in self.plan(steps, batch_size, generator):
            idx = idx.to(self.x_train.device)
            yield self.augmented(self.x_train[idx], params), self.y_train[idx]

    def augmented(self, x: Tensor, params: Tensor | None) -> Tensor:
        """``x`` transformed by drawn augmentation parameters (a no-op for None)."""
        if params is None or self.augment is None:
            return x
        return self.augment.apply(x, params.to(x.device))

    def heldout(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The held-out images (augmented when the protocol says so) and their labels."""
        x = self.x_heldout
        if self.augment is not None and self.augment_heldout:
            x = self.augmented(x, self.augment.draw(len(x), generator))
        return x, self.y_heldout

    def to(self, device: torch.device | str) -> Task:
        """This task with its images and labels on ``device`` (the data stays there for every batch)."""
        moved = {
            f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)
