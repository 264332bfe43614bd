"""Batched task training (``method.batched=true``): the tasks of a meta-batch learn side by side.

The engine beside ``sequential.py``. Per-task parameters are stacked along a leading task axis and one
``torch.func.vmap`` of ``grad_and_value`` over ``functional_call`` takes every task's SGD step at once
(``lockstep.py``). Each task draws the same batches as in the sequential loop (its own generator, drawn ahead of
time), and the method sees the same steps as rows of (tasks, P) tensors through its side-by-side hooks
(``protocols.RowHooks``), so the meta-gradient is the sequential one up to float rounding (tested).

Nothing in the loop waits for the device: losses, errors and the divergence check stay there until the
meta-batch ends. On CUDA, when the method declares its row hooks ``capturable``, one inner step is recorded as a
CUDA graph and replayed for the middle steps (``method.cuda_graphs``); the first two steps run eagerly (the
first has no previous point, the second warms the kernels up) and so does the last (it may be kept). The same
code runs eagerly on the CPU.

Limits: plain SGD inner loop (no momentum or weight decay), ``train.on_divergence=stop``. BatchNorm runs on
batch statistics as in training mode; running statistics are not tracked, since nothing in meta-training
reads them. On the project's 2-core CPU this path measured slower than the sequential loop
(docs/performance.md), so it is off by default; it is meant for GPUs, where one Conv4 step is latency-bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import replace_all_batch_norm_modules_

from ..errors import ConfigError
from ..inner import LOWER_LR, DivergenceError
from ..lockstep import Lockstep, check_stackable, functional_model, sgd_step, stack
from ..protocols import TaskLearner
from ..tasks import Task
from .flat import is_channels_last

EAGER_FIRST = 2  # steps before the recorded one: the first (no previous point) and a warm-up


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
    assert steps is not None, "InitializationLearner.setup refuses batched tasks of variable length"
    if n == 0:
        return torch.zeros_like(theta0)
    check_stackable(tasks, "method.batched")
    device = theta0.device
    model = functional_model(learner.model, device)
    replace_all_batch_norm_modules_(model)  # batch statistics only, no in-place buffer updates under vmap
    model.train()
    meta = {id(p) for p in learner.params}
    order = [(name, is_channels_last(p)) for name, p in learner.model.named_parameters() if id(p) in meta]
    params = stack(dict(model.named_parameters()), n)
    step_all = sgd_step(model)

    def flat(tensors: dict[str, Tensor]) -> Tensor:
        """(tasks, P) rows in the order of ``flat_params`` over the meta-parameters."""
        return torch.cat(
            [(tensors[name].permute(0, 1, 3, 4, 2) if cl else tensors[name]).reshape(n, -1) for name, cl in order],
            dim=1,
        )

    data = Lockstep(tasks, [torch.Generator().manual_seed(s) for s in seeds], steps, inner.batch_size, device)  # type: ignore[attr-defined]
    state = learner.begin_rows(theta0, n)
    counter = torch.zeros(1, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    error_sum = torch.zeros((), dtype=torch.float64, device=device)
    finite = torch.ones(n, dtype=torch.bool, device=device)

    def step(index: int, last: bool) -> None:
        """One inner step of every task; touches only tensors that live across steps, in place."""
        x, y = data.batch(counter)
        grads, (loss, logits) = step_all(params, {}, x, y)
        finite.logical_and_(torch.isfinite(loss))
        loss_sum.add_(loss.to(torch.float64).sum())
        error_sum.add_((logits.argmax(-1) != y).float().mean(1).to(torch.float64).sum())  # as train_step's
        learner.observe_rows(state, index, last, loss.detach(), flat(params), flat(grads))
        for name, p in params.items():
            p.sub_(lr * grads[name])
        counter.add_(1)

    graphs = device.type == "cuda" and learner.capturable and learner.cuda_graphs
    run_steps(step, steps, graphs)
    if not bool(finite.all()):
        names = ", ".join(t.name for t, ok in zip(tasks, finite.tolist()) if not ok)
        raise DivergenceError(f"Non-finite loss on task(s) {names} within their {steps} inner steps. {LOWER_LR}")
    stats[:4] += torch.tensor([float(loss_sum), n * steps, float(error_sum), n * steps], dtype=torch.float64)
    return learner.end_rows(state, flat(params))


def run_steps(step: Callable[[int, bool], None], steps: int, graphs: bool) -> None:
    """``step(i, i == steps - 1)`` for every i; with ``graphs`` the middle steps replay one recorded CUDA graph."""
    if not graphs or steps < EAGER_FIRST + 2:
        for i in range(steps):
            step(i, i == steps - 1)
        return
    graph = _record(step, EAGER_FIRST)
    if graph is None:  # recording failed (warned once): the other steps run eagerly
        for i in range(EAGER_FIRST, steps):
            step(i, i == steps - 1)
        return
    for _ in range(EAGER_FIRST, steps - 1):
        graph.replay()
    step(steps - 1, True)


_failed: list[str] = []
_streams: dict[torch.device, torch.cuda.Stream] = {}
_last: dict[torch.device, torch.cuda.CUDAGraph] = {}  # the latest graph per device: the next records into its pool


def _record(step: Callable[[int, bool], None], first: int) -> torch.cuda.CUDAGraph | None:
    """Run steps 0..first-1 and record step ``first`` as a CUDA graph (recording runs nothing), both on one side
    stream, as CUDA graphs ask; None where the recording fails (then only the first steps have run)."""
    device = torch.device("cuda", torch.cuda.current_device())
    stream = _streams.setdefault(device, torch.cuda.Stream())
    stream.wait_stream(torch.cuda.current_stream())
    graph: torch.cuda.CUDAGraph | None = None
    with torch.cuda.stream(stream):
        for i in range(first):
            step(i, False)
        if not _failed:
            graph = torch.cuda.CUDAGraph()
            # capture_begin/end, not torch.cuda.graph: that empties the allocator's cache at every recording. Every
            # meta-batch records into one memory pool (a dropped graph's own pool is only freed by empty_cache);
            # sharing it is safe because an older graph is never replayed again.
            last = _last.get(device)
            try:
                graph.capture_begin(pool=None if last is None else last.pool())
                try:
                    step(first, False)
                finally:
                    graph.capture_end()
                _last[device] = graph
            except RuntimeError as e:
                _failed.append(str(e))
                graph = None
                warnings.warn(
                    f"Recording the batched inner step as a CUDA graph failed ({e}); the steps run eagerly. "
                    "Set method.cuda_graphs=false to skip the attempt.",
                    stacklevel=2,
                )
    torch.cuda.current_stream().wait_stream(stream)
    return graph
