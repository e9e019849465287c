"""A new spiking derainer in under 100 lines, built from spikeir's public pieces and trained by
the standard trainer. Name it in a recipe by import path:

    model: {class: "tiny_spiking_derainer:TinySpikingDerainer", dim: 16, T: 4}

(run from this folder, or put it on PYTHONPATH), then `spikeir train recipe.yaml --out runs/tiny`.

Pieces used, with their shape contracts:
* ``repeat_time``: direct encoding, ``[B, C, H, W] -> [T, B, C, H, W]``;
* ``SeqWrap``: stateless layers (conv, BatchNorm) on ``[T, B, ...]`` with T folded into the batch,
  so BatchNorm statistics span time and batch (tdBN);
* ``LIF``: multi-step neurons on ``[T, B, ...]``, fresh membrane each call;
* ``MDA``: ESDNet's multi-dimensional attention on ``[T, B, C, H, W]``, rescaling the membrane input.
The model pads to a multiple of 2, crops back and adds the rainy input (global residual).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikeir.layers import SeqWrap, repeat_time
from spikeir.models.esdnet import MDA
from spikeir.neurons import LIF


def lif() -> LIF:
    return LIF(tau=2.0, v_threshold=0.15, v_reset=0.0, decay_input=False, surrogate="sigmoid")


class SpikingBlock(nn.Module):
    """``[T, B, C, H, W] -> same``: LIF -> conv -> tdBN -> attention, plus the input."""

    def __init__(self, channels: int, T: int) -> None:
        super().__init__()
        self.neuron = lif()
        self.conv = SeqWrap(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.attn = MDA(T, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.conv(self.neuron(x))) + x


class TinySpikingDerainer(nn.Module):
    """Two-level spiking encoder-decoder for RGB deraining, ``[B, 3, H, W] -> [B, 3, H, W]``."""

    def __init__(self, in_channels: int = 3, dim: int = 16, T: int = 4) -> None:
        super().__init__()
        self.T = T
        self.embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.enc = SpikingBlock(dim, T)
        self.down_neuron = lif()
        self.down = SeqWrap(nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * dim))
        self.mid = SpikingBlock(2 * dim, T)
        self.up_neuron = lif()
        self.up = SeqWrap(nn.Conv2d(2 * dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim))
        self.dec = SpikingBlock(dim, T)
        self.out = nn.Conv2d(dim, in_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        xp = F.pad(x, (0, W % 2, 0, H % 2), mode="reflect")
        e = self.enc(repeat_time(self.embed(xp), self.T))  # patch embedding computed once
        m = self.mid(self.down(self.down_neuron(e)))
        u = F.interpolate(m.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)
        d = self.dec(self.up(self.up_neuron(u.unflatten(0, m.shape[:2]))) + e)
        return self.out(d.mean(0))[..., :H, :W] + x
