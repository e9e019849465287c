"""A compact spiking encoder-decoder: the small student for ANN-to-SNN distillation.

Every convolution except the first and the last reads spikes, so its synaptic operations are
accumulates. Sequences are ``[T, B, C, H, W]``; ``N`` is a spiking neuron (IF with learnable
threshold and threshold-scaled spikes by default, as in :class:`SpikingDnCNN`)::

    x -> conv3x3 (analog, once) -> repeat T -> N                                  (head)
      -> [SpikingResBlock x n_l -> down: conv3x3 stride 2 (c -> 2c) + BN -> N] per level
      -> SpikingResBlock x middle
      -> [up: transposed conv 2x2 (2c -> c) + BN -> N, concat skip, conv1x1 (2c -> c) + BN -> N,
          SpikingResBlock x n_l] per level (mirrored)
      -> time mean -> conv3x3 (analog) = noise;  output = x - noise

``SpikingResBlock``: ``s -> N(BN(conv3x3(s))) -> BN(conv3x3(.)) + s -> N``; the shortcut adds the
incoming spikes to the second neuron's input current (membrane shortcut), so no convolution ever
sees a sum of spike maps. Inputs are padded (replicate) to a multiple of ``2 ** levels`` and
cropped back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import SeqWrap, repeat_time
from ..neurons import make_neuron

__all__ = ["SpikingUNet", "SpikingResBlock"]


def _neuron_kw(neuron_kwargs: dict | None) -> dict:
    kw = {"v_reset": None, "learn_threshold": True, "scale_output": True, "v_threshold": 1.0, "v_init": "half"}
    kw.update(neuron_kwargs or {})
    return kw


class SpikingResBlock(nn.Module):
    """Two 3x3 spiking convolutions with a membrane shortcut. ``[T, B, C, H, W]`` kept."""

    def __init__(self, c: int, neuron: str = "if", neuron_kwargs: dict | None = None) -> None:
        super().__init__()
        kw = _neuron_kw(neuron_kwargs)
        self.conv1 = SeqWrap(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.neuron1 = make_neuron(neuron, **kw)
        self.conv2 = SeqWrap(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.neuron2 = make_neuron(neuron, **kw)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.neuron2(self.conv2(self.neuron1(self.conv1(s))) + s)


class SpikingUNet(nn.Module):
    """Compact spiking U-Net denoiser (see the module docstring).

    Args:
        in_channels: 1 gray, 3 colour.
        width: channels at full resolution (doubled per level).
        blocks: ``SpikingResBlock``s per encoder level (the decoder mirrors them).
        middle: blocks at the lowest resolution.
        T: time steps.
        neuron, neuron_kwargs: as in :class:`SpikingDnCNN`.
    """

    def __init__(self, in_channels: int = 1, width: int = 8, blocks: list[int] | None = None, middle: int = 1,
                 T: int = 4, neuron: str = "if", neuron_kwargs: dict | None = None) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        blocks = list(blocks or [1, 1])
        self.T = T
        kw = _neuron_kw(neuron_kwargs)

        def res(c: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[SpikingResBlock(c, neuron, neuron_kwargs) for _ in range(n)])

        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.head_neuron = make_neuron(neuron, **kw)
        self.encoders, self.downs, self.ups, self.fuses, self.decoders = (nn.ModuleList() for _ in range(5))
        c = width
        for n in blocks:
            self.encoders.append(res(c, n))
            self.downs.append(nn.Sequential(
                SeqWrap(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c)),
                make_neuron(neuron, **kw)))
            c *= 2
        self.middle = res(c, middle)
        for n in reversed(blocks):
            self.ups.append(nn.Sequential(
                SeqWrap(nn.ConvTranspose2d(c, c // 2, 2, stride=2, bias=False), nn.BatchNorm2d(c // 2)),
                make_neuron(neuron, **kw)))
            c //= 2
            self.fuses.append(nn.Sequential(
                SeqWrap(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c)), make_neuron(neuron, **kw)))
            self.decoders.append(res(c, n))
        self.tail = nn.Conv2d(width, in_channels, 3, padding=1, bias=False)
        self.multiple = 2 ** len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = (-H) % self.multiple, (-W) % self.multiple
        inp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        s = self.head_neuron(repeat_time(self.head(inp), self.T))
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            s = enc(s)
            skips.append(s)
            s = down(s)
        s = self.middle(s)
        for up, fuse, dec, skip in zip(self.ups, self.fuses, self.decoders, reversed(skips)):
            s = dec(fuse(torch.cat([up(s), skip], dim=2)))
        return (inp - self.tail(s.mean(0)))[..., :H, :W]
