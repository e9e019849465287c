"""Small building blocks shared by the spiking architectures.

Sequences are ``[T, B, C, H, W]``. Stateless layers (convolution, BatchNorm, pooling) see the
flattened ``[T*B, C, H, W]`` batch, so BatchNorm statistics span time and batch (tdBN style).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SeqWrap", "TdBatchNorm2d", "repeat_time", "rate_encode", "fold_bn_weights", "fold_conv_bn"]


class SeqWrap(nn.Sequential):
    """Apply stateless modules to a sequence ``[T, B, ...]`` by flattening ``T`` into the batch.

    Equivalent to SpikingJelly's ``SeqToANNContainer``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        T, B = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.reshape(T, B, *y.shape[1:])


class TdBatchNorm2d(nn.BatchNorm2d):
    """Threshold-dependent BatchNorm (tdBN; Zheng et al., AAAI 2021) for spike sequences.

    Statistics span time, batch and space: for ``x`` of shape ``[T, B, C, H, W]``

        y[t, b, c] = lambda_c * (x[t, b, c] - mu_c) / sqrt(var_c + eps) + beta_c,

    with ``mu_c, var_c`` over ``(T, B, H, W)``. The scale starts at ``lambda_c = alpha * V_th`` so that
    the next neuron's pre-activations have a spread matched to its threshold (``alpha = 1/sqrt(2)``
    for a block with two summed branches, as in the paper; 1 otherwise).

    Shapes: ``[T, B, C, H, W] -> [T, B, C, H, W]``, or an already flattened ``[T*B, C, H, W]``
    (inside :class:`SeqWrap`). The parameters and buffers are those of ``nn.BatchNorm2d``, so a
    state dict moves between the two, and BatchNorm folding at export treats it as one.
    """

    def __init__(self, num_features: int, v_threshold: float = 1.0, alpha: float = 1.0 / math.sqrt(2.0),
                 eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        if v_threshold <= 0 or alpha <= 0:
            raise ValueError(f"tdBN needs v_threshold > 0 and alpha > 0, got {v_threshold}, {alpha}")
        self.v_threshold, self.alpha = float(v_threshold), float(alpha)
        nn.init.constant_(self.weight, self.alpha * self.v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            return super().forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, v_threshold={self.v_threshold}, alpha={self.alpha:.4g}"


def channels_last_wanted(option: bool | None, x: torch.Tensor, training: bool) -> bool:
    """A model's ``channels_last`` option for input ``x``: ``None`` means for inference on CPU,
    where oneDNN's 3x3 convolutions run 20-35% faster on channels-last activations at
    restoration sizes (ESDNet's inference 8-15% faster end to end, ``benchmarks/bench_esdnet.py``);
    a training step at 64x64 crops measured 5-10% slower, and CUDA keeps the default layout
    unless asked."""
    return (x.device.type == "cpu" and not training) if option is None else bool(option)


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


@torch.no_grad()
def fold_bn_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) of ``bn(conv(x))`` as one convolution, ``bn`` in eval mode:
    ``w' = w * g``, ``b' = (b - mu) * g + beta`` with ``g = gamma / sqrt(var + eps)`` per channel."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is not None:
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("BatchNorm without running statistics cannot be folded")
        g = (bn.weight.detach().double() if bn.weight is not None else 1.0) / torch.sqrt(
            bn.running_var.double() + bn.eps)
        w = w * g.reshape(-1, 1, 1, 1)
        b = (b - bn.running_mean.double()) * g + (bn.bias.detach().double() if bn.bias is not None else 0.0)
    return w, b


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """``conv`` followed by eval-mode ``bn`` as one new convolution with bias (folded in float64,
    stored in the convolution's dtype)."""
    w, b = fold_bn_weights(conv, bn)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    out.weight.data.copy_(w.to(conv.weight.dtype))
    out.bias.data.copy_(b.to(conv.weight.dtype))
    return out
