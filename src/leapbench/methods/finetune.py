"""Multi-task fine-tuning: train one model on the pretraining tasks, then adapt it to new tasks.

* ``multi_head=True`` (the paper's Finetune-dagger, the reference ``FtWrapper``): a linear head per pretraining
  task on the shared body; evaluation starts from the body with a fresh, untrained head.
* ``multi_head=False`` (Finetune-double-dagger, not in the authors' code; written from the paper): one head
  shared by all alphabets, whose label sets collide, and evaluation starts from body *and* that head.

With a model that carries a named head per task (``models.MultiHeadConvNet``, Multi-CV) the model's own
heads are used: each pretraining task trains its head, and the held-out task's head, never trained, is fresh.

One meta-step draws the same batches as the other methods (``inner.steps_for(task)`` per task, for each task
of the batch) and trains on them in a random interleaving with one persistent optimizer, as ``FtWrapper``
does; it has no per-task early stopping. The task learning rate comes from ``inner.optimizer`` (0.01 for
fine-tuning on Omniglot in the paper).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..inner import Inner, train_step
from ..models import ConvNet
from ..tasks import Task
from .base import MetaLearner


class Finetune(MetaLearner):
    def __init__(self, name: str, multi_head: bool = True) -> None:
        super().__init__(name)
        self.multi_head = multi_head
        self.requires = frozenset({"labels"} | (set() if multi_head else {"shared_head"}))

    model: ConvNet
    inner: Inner  # a supervised learning process: fine-tuning requires "labels"

    def setup(self, model: ConvNet, inner: Inner, num_tasks: int) -> None:  # type: ignore[override]
        super().setup(model, inner, num_tasks)
        self.named_heads = model.named_heads  # a single head (multi_head=false) needs none: checks.validate
        self.heads = nn.ModuleList()
        if self.multi_head and not self.named_heads:
            self.heads = nn.ModuleList(_fresh(model.head) for _ in range(num_tasks))
            self.fresh_head = _fresh(model.head)  # drawn once: every evaluation task starts from it
        self.opt = inner.optimizer(list(model.parameters()) + list(self.heads.parameters()))

    def _forward(self, task: Task):
        if task.head is not None:  # the model's own head for this task

            def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
                model.select(task.head)  # type: ignore[operator]
                return model(x)

            return forward
        if not self.multi_head:
            return lambda model, x: model(x)
        head = self.heads[task.task_id]
        return lambda model, x: head(model.embed(x))

    def meta_step(self, tasks: list[Task], generator: torch.Generator) -> dict[str, float]:
        steps, bs = [self.inner.steps_for(t) for t in tasks], self.inner.batch_size
        streams = [iter(t.batches(n, bs, generator)) for t, n in zip(tasks, steps)]
        order = torch.arange(len(tasks)).repeat_interleave(torch.tensor(steps))
        order = order[torch.randperm(len(order), generator=generator)]
        self.model.train()
        device = next(self.model.parameters()).device
        losses, errors = [], []
        for i, k in enumerate(order.tolist()):
            x, y = next(streams[k])
            loss, err = train_step(
                self.model, self.opt, x.to(device), y.to(device), self._forward(tasks[k]), tasks[k].name, i
            )
            self.opt.step()
            losses.append(loss)
            errors.append(err)
        return {"loss": float(np.mean(losses)), "error": 100 * float(np.mean(errors))}

    def initialization(self) -> nn.Module:
        if not self.multi_head or self.named_heads:
            return self.model
        init = copy.deepcopy(self.model)
        init.head = copy.deepcopy(self.fresh_head)  # type: ignore[assignment]
        return init

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "heads": self.heads.state_dict(), "opt": self.opt.state_dict()}
        if self.multi_head and not self.named_heads:
            state["fresh_head"] = self.fresh_head.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.heads.load_state_dict(state["heads"])
        self.opt.load_state_dict(state["opt"])
        if self.multi_head and not self.named_heads:
            self.fresh_head.load_state_dict(state["fresh_head"])


def _fresh(head: nn.Module) -> nn.Module:
    new = copy.deepcopy(head)
    new.reset_parameters()  # type: ignore[operator]
    return new
