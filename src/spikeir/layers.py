"""Small building blocks shared by the spiking architectures.

Sequences are ``[T, B, C, H, W]``. Stateless layers (convolution, BatchNorm, pooling) see the
flattened ``[T*B, C, H, W]`` batch, so BatchNorm statistics span time and batch (tdBN style).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SeqWrap", "repeat_time"]


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
