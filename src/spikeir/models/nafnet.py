"""A small NAFNet (Chen et al., ECCV 2022, "Simple Baselines for Image Restoration"): the strong
ANN teacher for feature distillation, CPU-trainable at small width.

Layout: a 3x3 intro convolution, an encoder of ``len(enc_blk_nums)`` levels (``NAFBlock``s, then a
2x2 stride-2 convolution that doubles the channels), ``middle_blk_num`` blocks, a mirrored decoder
(1x1 convolution + pixel shuffle halving the channels, skip added, ``NAFBlock``s) and a 3x3 ending
convolution; the network predicts the residual (``output = x + f(x)``). Inputs of any size are
padded (reflect; replicate for tiny inputs) to a multiple of ``2 ** levels`` and cropped back.

``NAFBlock``: ``y = x + beta * conv1x1(SCA(SimpleGate(dwconv3x3(conv1x1(LN(x))))))``, then
``y + gamma * conv1x1(SimpleGate(conv1x1(LN(y))))``, where ``SimpleGate`` splits the channels in
two halves and multiplies them, and ``SCA`` rescales channels by a 1x1 convolution of their mean.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NAFNet", "NAFBlock", "LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map, per pixel."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None]


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block (see the module docstring). Shape ``[B, C, H, W]`` kept."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        ffn = c * ffn_expand
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        # zero-initialised residual scales: every block starts as the identity
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.sg(self.conv2(self.conv1(self.norm1(x))))
        h = self.conv3(h * self.sca(h))
        y = x + self.beta * h
        h = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.gamma * h


class NAFNet(nn.Module):
    """NAFNet U-Net (see the module docstring).

    Args:
        in_channels: image channels (1 gray, 3 colour).
        width: channels at full resolution.
        enc_blk_nums: blocks per encoder level; the decoder mirrors its length.
        middle_blk_num: blocks at the lowest resolution.
        dec_blk_nums: blocks per decoder level (lowest resolution first).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, enc_blk_nums: list[int] | None = None,
                 middle_blk_num: int = 1, dec_blk_nums: list[int] | None = None) -> None:
        super().__init__()
        enc_blk_nums = list(enc_blk_nums or [1, 1, 2])
        dec_blk_nums = list(dec_blk_nums or [1, 1, 1])
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f"enc_blk_nums and dec_blk_nums need the same length, got {enc_blk_nums}, {dec_blk_nums}")
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, in_channels, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle_blk_num)])
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
        self.multiple = 2 ** len(enc_blk_nums)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = (-H) % self.multiple, (-W) % self.multiple
        mode = "reflect" if ph < H and pw < W else "replicate"  # reflect needs pad < size
        inp = F.pad(x, (0, pw, 0, ph), mode=mode) if ph or pw else x
        h = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = dec(up(h) + skip)
        return (inp + self.ending(h))[..., :H, :W]
