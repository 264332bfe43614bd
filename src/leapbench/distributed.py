"""Task-parallel meta-training on torch.distributed: ranks split each meta-batch and all-reduce the meta-gradient.

``torchrun --nproc_per_node=N run.py ...`` sets ``WORLD_SIZE``/``RANK``; :func:`init` joins the process group
with gloo on CPU and nccl on GPUs (``LEAP_DIST_BACKEND`` overrides). In a plain process every function here is
a no-op, so one code path serves both.

A failure on one rank (a diverging task, a failed write on rank 0) ends that rank; torchrun then stops the
others, which may report the broken connection rather than the cause: read the failing rank's message.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import ConfigError

T = TypeVar("T")


def init(device: torch.device = torch.device("cpu")) -> None:
    """Join the process group when launched by torchrun with more than one process (gloo, or nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:  # WORLD_SIZE set by hand or left over, not by torchrun
            raise ConfigError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} not: start several "
                "processes with torchrun (torchrun --nproc_per_node=N run.py ...), or unset WORLD_SIZE."
            )
        default = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(os.environ.get("LEAP_DIST_BACKEND", default))


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 alone writes run files and logs."""
    return rank() == 0


def mine(n: int) -> range:
    """The indices of ``n`` items (tasks of a meta-batch, evaluation tasks) this rank works on."""
    return range(rank(), n, world())


def sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (once per meta-step: the meta-gradient and its statistics)."""
    if world() > 1:
        if dist.get_backend() == "nccl" and not t.is_cuda:  # nccl reduces GPU tensors only (the statistics)
            buf = t.cuda()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather(items: dict[int, T]) -> dict[int, T]:
    """Merge every rank's ``{index: result}`` into one dict on every rank."""
    if world() == 1:
        return items
    parts: list[Any] = [None] * world()
    dist.all_gather_object(parts, items)
    return {k: v for part in parts for k, v in part.items()}


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world() > 1:
        dist.barrier()
