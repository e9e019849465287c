"""Run an image model on overlapping tiles and blend them: memory bounded by the tile size.

Tiles of ``tile x tile`` pixels start every ``tile - overlap`` pixels; the last tile of a row or
column is aligned to the image border, so it may overlap its neighbour by more. Each tile's
output is weighted by a linear ramp over the ``overlap`` pixels on every side that faces a
neighbouring tile (weight 1 elsewhere, including the image border), and the weighted outputs are
normalised by the summed weights. Outputs within ``r < overlap`` pixels of a tile's inner edge
(``r``: the model's receptive radius), where the tile lacks context, thus mix with a tile that
has it, and no seam shows; for a local model with ``r <= overlap`` the result equals the untiled
one away from the overlaps. Models with global pooling (ESDNet's attention and refinement) see
per-tile statistics instead, as in the released ESDNet's tiled evaluation (80 px, 8 px overlap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["tiled_forward", "tile_starts"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis of ``size`` pixels (one tile of the whole axis if it fits)."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _ramp(length: int, overlap: int, left: bool, right: bool, like: torch.Tensor) -> torch.Tensor:
    """1-d blending weights ``[length]``: ``(i+1)/(overlap+1)`` over the first/last ``overlap``
    pixels on the sides with a neighbour, 1 elsewhere."""
    w = torch.ones(length, dtype=like.dtype, device=like.device)
    n = min(overlap, length)
    if n:
        ramp = torch.arange(1, n + 1, dtype=like.dtype, device=like.device) / (overlap + 1)
        if left:
            w[:n] = torch.minimum(w[:n], ramp)
        if right:
            w[-n:] = torch.minimum(w[-n:], ramp.flip(0))
    return w


def tiled_forward(
    model: nn.Module,
    x: torch.Tensor,
    tile: int = 80,
    overlap: int = 8,
    pad_multiple: int = 4,
    tile_batch: int = 1,
) -> torch.Tensor:
    """``model`` applied to ``x`` ``[B, C, H, W]`` tile by tile, blended; returns ``[B, C', H, W]``.

    Args:
        model: an image-to-image model keeping the spatial size (``[N, C, h, w] -> [N, C', h, w]``).
        tile: tile side in pixels (a multiple of ``pad_multiple``); images no larger run whole.
        overlap: pixels shared by neighbouring tiles (``0 <= overlap < tile``), blended linearly.
        pad_multiple: the image is reflect-padded to a multiple of this (for models that need
            it) and the output cropped back.
        tile_batch: tiles per model call (each call sees ``B * tile_batch`` images).

    Gradients flow if enabled; wrap in ``torch.no_grad()`` for inference.
    """
    if x.dim() != 4:
        raise ValueError(f"tiled_forward expects [B, C, H, W], got shape {tuple(x.shape)}")
    if pad_multiple < 1 or tile < pad_multiple or tile % pad_multiple:
        raise ValueError(f"tile ({tile}) must be a positive multiple of pad_multiple ({pad_multiple})")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
    B, _, H, W = x.shape
    ph, pw = -H % pad_multiple, -W % pad_multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if H > ph and W > pw else "replicate")
    Hp, Wp = x.shape[-2:]
    th, tw = min(tile, Hp), min(tile, Wp)
    boxes = [(a, b) for a in tile_starts(Hp, th, overlap) for b in tile_starts(Wp, tw, overlap)]
    if len(boxes) == 1:
        return model(x)[..., :H, :W]

    out = norm = None
    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i:i + tile_batch]
        y = model(torch.cat([x[..., a:a + th, b:b + tw] for a, b in chunk]))
        if y.shape[-2:] != (th, tw):
            raise ValueError(f"tiled_forward needs a size-preserving model: tile {(th, tw)} -> {tuple(y.shape[-2:])}")
        if out is None:
            out = y.new_zeros(B, y.shape[1], Hp, Wp)
            norm = y.new_zeros(1, 1, Hp, Wp)
        for k, (a, b) in enumerate(chunk):
            wy = _ramp(th, overlap, a > 0, a + th < Hp, y)
            wx = _ramp(tw, overlap, b > 0, b + tw < Wp, y)
            w = wy[:, None] * wx[None, :]
            out[..., a:a + th, b:b + tw] += y[k * B:(k + 1) * B] * w
            norm[..., a:a + th, b:b + tw] += w
    return (out / norm)[..., :H, :W]
