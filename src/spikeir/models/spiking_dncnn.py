"""SPIDEN-style spiking DnCNN (Castagnetti et al., 2023) and its ANN twin.

Layout (``depth`` convolutions of ``width`` channels, 3x3, same padding)::

    x [B,C,H,W] -> conv(C->w) -> N -> [conv(w->w) -> BN -> N] x (depth-2) -> conv(w->C) = noise
    output = x - noise

``N`` is a spiking neuron in :class:`SpikingDnCNN` and ReLU in :class:`DnCNN`. The spiking model
uses direct encoding: the first convolution sees the analog image once and its result is fed to
the first neuron at each of the ``T`` steps; the last convolution reads the time average of the
spikes and stays analog. Every layer in between receives spikes only (binary, or scaled by the
layer's threshold with ``scale_output``), so its synaptic operations are accumulates.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import SeqWrap, repeat_time
from ..neurons import make_neuron

__all__ = ["SpikingDnCNN", "DnCNN"]


def _conv(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class SpikingDnCNN(nn.Module):
    """Spiking DnCNN trained with surrogate gradients.

    Args:
        in_channels: 1 for gray, 3 for colour.
        depth: number of convolutions (>= 3); SPIDEN uses 17.
        width: channels of the hidden layers; SPIDEN uses 64.
        T: time steps.
        neuron: ``"if"`` (default), ``"lif"`` or ``"plif"``.
        neuron_kwargs: passed to every neuron. The default is the trainable-quantisation IF of
            the SPIDEN group: soft reset, learnable per-layer threshold, threshold-scaled spikes.
        bn: BatchNorm after every hidden convolution (statistics over time and batch).

    Shape: ``[B, C, H, W] -> [B, C, H, W]`` (any H, W: all convolutions keep the size).
    """

    def __init__(
        self,
        in_channels: int = 1,
        depth: int = 17,
        width: int = 64,
        T: int = 4,
        neuron: str = "if",
        neuron_kwargs: dict | None = None,
        bn: bool = True,
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T
        kw = {"v_reset": None, "learn_threshold": True, "scale_output": True, "v_threshold": 1.0}
        kw.update(neuron_kwargs or {})
        self.head = _conv(in_channels, width, bias=True)
        self.head_neuron = make_neuron(neuron, **kw)
        body = []
        for _ in range(depth - 2):
            layers = [_conv(width, width, bias=not bn)] + ([nn.BatchNorm2d(width)] if bn else [])
            body += [SeqWrap(*layers), make_neuron(neuron, **kw)]
        self.body = nn.Sequential(*body)
        self.tail = _conv(width, in_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.head_neuron(repeat_time(self.head(x), self.T))
        s = self.body(s)
        return x - self.tail(s.mean(0))


class DnCNN(nn.Module):
    """The ANN twin of :class:`SpikingDnCNN`: the same layout with ReLU (Zhang et al., 2017)."""

    def __init__(self, in_channels: int = 1, depth: int = 17, width: int = 64, bn: bool = True) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        layers: list[nn.Module] = [_conv(in_channels, width, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [_conv(width, width, bias=not bn)]
            layers += [nn.BatchNorm2d(width)] if bn else []
            layers += [nn.ReLU(inplace=True)]
        layers += [_conv(width, in_channels, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.net(x)
