"""Batched task training (``method.batched=true``): the tasks of a meta-batch learn side by side.

The engine beside ``sequential.py``, behind the same contract (``protocols.TaskLearner``). Per-task
parameters are stacked along a leading task axis and one ``torch.func.vmap`` of ``grad_and_value`` over
``functional_call`` takes every task's SGD step at once. Each task draws the same batches as in the
sequential loop (its own generator), and the method's ``observe``/``end_task`` hooks see the same steps
(psi^i, f_i, g_i), so the meta-gradient is the sequential one up to float rounding (tested).

Limits: plain SGD inner loop (no momentum or weight decay), ``train.on_divergence=stop``. BatchNorm runs on
batch statistics as in training mode; running statistics are not tracked, since nothing in meta-training
reads them. On the project's 2-core CPU this path measured slower than the sequential loop
(docs/performance.md), so it is off by default; it is meant for GPUs, where one Conv4 step is latency-bound.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad_and_value, replace_all_batch_norm_modules_, vmap

from ..errors import ConfigError
from ..inner import DivergenceError
from ..protocols import Flat, Step, TaskLearner
from ..tasks import Task
from .flat import is_channels_last


def train_in_lockstep(
    learner: TaskLearner, tasks: list[Task], seeds: list[int], theta0: Tensor, stats: Tensor
) -> Tensor:
    """Train ``tasks`` from theta^0 side by side; add their statistics to ``stats``; return the summed meta-gradient."""
    inner, n = learner.inner, len(tasks)
    lr, steps = inner.sgd_lr, inner.fixed_steps
    if lr is None:
        raise ConfigError(
            "method.batched=true needs a plain SGD inner optimizer with an lr (no momentum or weight "
            "decay). Set method.batched=false."
        )
    if learner.skip_diverging:
        raise ConfigError("method.batched=true does not support train.on_divergence=skip; use one or the other.")
    if any(t.head is not None for t in tasks):
        raise ConfigError(
            "method.batched=true trains one shared network shape; tasks with heads of their own "
            "cannot be stacked. Set method.batched=false."
        )
    assert steps is not None, "InitializationLearner.setup refuses batched tasks of variable length"
    if n == 0:
        return torch.zeros_like(theta0)
    model = copy.deepcopy(learner.model)
    replace_all_batch_norm_modules_(model)  # batch statistics only, no in-place buffer updates under vmap
    if getattr(model, "channels_last", False):  # a layout switch of the suite's models, not a capability
        model.channels_last = False  # type: ignore[assignment]
        model.to(memory_format=torch.contiguous_format)
    model.train()
    meta = {id(p) for p in learner.params}
    names = [name for name, p in learner.model.named_parameters()]
    order = [(name, is_channels_last(p)) for name, p in learner.model.named_parameters() if id(p) in meta]
    params = {name: p.detach().unsqueeze(0).repeat(n, *[1] * p.dim()) for name, p in model.named_parameters()}
    assert list(params) == names

    def loss_and_logits(ps: dict[str, Tensor], x: Tensor, y: Tensor):
        logits = functional_call(model, ps, (x,))
        return F.cross_entropy(logits, y), logits

    step_all = vmap(grad_and_value(loss_and_logits, has_aux=True))

    def flat(tensors: dict[str, Tensor]) -> Tensor:
        """(tasks, P) rows in the order of ``flat_params`` over the meta-parameters."""
        return torch.cat(
            [(tensors[name].permute(0, 1, 3, 4, 2) if cl else tensors[name]).reshape(n, -1) for name, cl in order],
            dim=1,
        )

    batch_size = inner.batch_size  # type: ignore[attr-defined]  # a supervised process (requires "labels")
    streams = [iter(t.batches(steps, batch_size, torch.Generator().manual_seed(s))) for t, s in zip(tasks, seeds)]
    states = [learner.begin_task(theta0) for _ in tasks]
    sums = torch.zeros(4, dtype=torch.float64)
    for step in range(steps):
        batch = [next(s) for s in streams]
        x = torch.stack([b[0] for b in batch]).to(theta0.device)
        y = torch.stack([b[1] for b in batch]).to(theta0.device)
        grads, (loss, logits) = step_all(params, x, y)
        losses = loss.tolist()
        for task, value in zip(tasks, losses):
            if not math.isfinite(value):
                raise DivergenceError(
                    f"Non-finite loss ({value}) on task {task.name!r} at inner step {step}. Lower "
                    "the learning rates (inner.optimizer.lr, method.meta_optimizer.lr) and run again."
                )
        errors = (logits.argmax(-1) != y).float().mean(1).tolist()
        sums += torch.tensor([sum(losses), n, sum(errors), n], dtype=torch.float64)
        p_rows, g_rows = flat(params), flat(grads)
        for k in range(n):
            learner.observe(states[k], Step(step, losses[k], step == steps - 1, _row(p_rows, k), _row(g_rows, k)))
        params = {name: params[name] - lr * grads[name] for name in names}
    final = flat(params)
    stats[:4] += sums
    total = torch.zeros_like(theta0)
    for k in range(n):
        total += learner.end_task(states[k], _row(final, k))
    return total


def _row(rows: Tensor, k: int) -> Flat:
    """Task ``k``'s row of a stacked (tasks, P) tensor, as the ``Step`` hooks take it."""
    return lambda: rows[k]
