"""Small building blocks shared by the spiking architectures.

Sequences are ``[T, B, C, H, W]``. Stateless layers (convolution, BatchNorm, pooling) see the
flattened ``[T*B, C, H, W]`` batch, so BatchNorm statistics span time and batch (tdBN style).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SeqWrap", "repeat_time", "rate_encode"]


class SeqWrap(nn.Sequential):
    """Apply stateless modules to a sequence ``[T, B, ...]`` by flattening ``T`` into the batch.

    Equivalent to SpikingJelly's ``SeqToANNContainer``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        T, B = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


def repeat_time(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, ...] -> [T, B, ...]`` without copying (direct encoding: same analog input each step)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return x.unsqueeze(0).expand(T, *x.shape)


def rate_encode(x: torch.Tensor, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, ...] -> [T, B, ...]`` Bernoulli spikes with probability ``clamp(x, 0, 1)`` per step
    (rate encoding; the time average estimates ``x`` with variance ``x (1 - x) / T``). Not
    differentiable with respect to ``x``; direct encoding (:func:`repeat_time`) is the usual
    choice for restoration, where the first layer can see the analog image."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    p = x.clamp(0, 1).unsqueeze(0).expand(T, *x.shape)
    return torch.bernoulli(p, generator=generator)
