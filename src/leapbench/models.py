"""Networks: the Conv4 body with a linear head used for Omniglot and Multi-CV."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .errors import ConfigError


class ConvNet(nn.Module):
    """The reference ``OmniConv``: ``layers`` x [conv3x3 -> maxpool 2 -> BatchNorm -> ReLU], then a linear head.

    ``body`` maps images to features, ``head`` maps features to logits. Methods that need several heads
    (multi-headed fine-tuning, Multi-CV) keep extra heads of their own and call ``body`` directly.
    ``named_heads`` declares whether the model carries one named head per task (``select(name)``).
    """

    named_heads: ClassVar[bool] = False

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 20,
        filters: int = 64,
        layers: int = 4,
        image_size: int = 28,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("filters", filters), ("layers", layers)):
            if value < 1:
                raise ConfigError(f"model.{key}={value} must be at least 1.")
        if image_size < 2**layers:
            raise ConfigError(
                f"model.image_size={image_size} is too small for model.layers={layers} (each layer "
                f"halves it): use at least {2**layers}."
            )
        blocks: list[nn.Module] = []
        c, size = in_channels, image_size
        for _ in range(layers):
            blocks += [nn.Conv2d(c, filters, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(filters), nn.ReLU()]
            c, size = filters, size // 2
        blocks.append(nn.Flatten())
        self.body = nn.Sequential(*blocks)
        self.features = filters * size * size
        self.head = nn.Linear(self.features, num_classes)
        self.channels_last = channels_last
        if channels_last:  # faster on the project's CPUs (docs/performance.md)
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))

    def embed(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x)


class MultiHeadConvNet(ConvNet):
    """The Conv4 body with one linear head per task, each sized to its task's classes (Multi-CV).

    ``select(name)`` routes ``forward`` through that task's head; the shared inner loop selects the head of
    the task it trains (``Task.head``), so a head only ever sees its own task. A task never trained on (the
    held-out dataset) keeps its head at the random initialization: a fresh head.
    """

    named_heads: ClassVar[bool] = True

    def __init__(
        self,
        heads: dict[str, int],
        in_channels: int = 3,
        filters: int = 64,
        layers: int = 4,
        image_size: int = 32,
        channels_last: bool = True,
    ) -> None:
        super().__init__(in_channels, 1, filters, layers, image_size, channels_last)
        del self.head
        self.heads = nn.ModuleDict({name: nn.Linear(self.features, n) for name, n in heads.items()})
        self.active = next(iter(self.heads))

    def select(self, name: str) -> None:
        if name not in self.heads:
            raise KeyError(f"No head for task {name!r}; the model has heads for {', '.join(self.heads)}.")
        self.active = name

    def forward(self, x: Tensor) -> Tensor:
        return self.heads[self.active](self.embed(x))
