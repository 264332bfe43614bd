"""Flat vectors over a list of parameters: psi^i, its gradient and the meta-gradient, in one order.

A leaf module: the method base class and both task engines (``sequential.py``, ``batched.py``) use it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def is_channels_last(param: Tensor) -> bool:
    """A conv weight stored channels-last (flattened in NHWC order, see :func:`flat_params`)."""
    return param.dim() == 4 and not param.is_contiguous() and param.is_contiguous(memory_format=torch.channels_last)


def _in_memory_order(t: Tensor, param: Tensor) -> Tensor:
    """``t`` (a parameter or its gradient) as 1-D in ``param``'s memory order.

    Channels-last conv weights are read in NHWC order, a free view instead of a permuting copy; the order is
    the parameter's, so a parameter and its gradient always line up element by element.
    """
    return t.permute(0, 2, 3, 1).reshape(-1) if is_channels_last(param) else t.reshape(-1)


def flat_params(params: list[Tensor]) -> Tensor:
    """Parameters as one detached vector (a copy)."""
    return torch.cat([_in_memory_order(p.detach(), p) for p in params])


def flat_grads(params: list[Tensor]) -> Tensor:
    """Gradients as one vector (a copy), in the order of :func:`flat_params`; a missing gradient counts as zero."""
    parts = [_in_memory_order(p.grad, p) if p.grad is not None else p.new_zeros(p.numel()) for p in params]
    return torch.cat(parts)


def grad_views(params: list[Tensor], flat: Tensor) -> list[Tensor]:
    """Views of ``flat`` (in the order of :func:`flat_params`) shaped and strided like each parameter."""
    views, i = [], 0
    for p in params:
        chunk = flat[i : i + p.numel()]
        if is_channels_last(p):
            b, c, h, w = p.shape
            views.append(chunk.view(b, h, w, c).permute(0, 3, 1, 2))
        else:
            views.append(chunk.view(p.shape))
        i += p.numel()
    return views


def set_grads(params: list[Tensor], flat: Tensor) -> None:
    """Write a flat vector (in the order of :func:`flat_params`) into the ``.grad`` of each parameter."""
    for p, view in zip(params, grad_views(params, flat)):
        p.grad = view.clone(memory_format=torch.preserve_format)
