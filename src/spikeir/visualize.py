"""Pictures of what the spikes do: spike-rate maps and side-by-side panels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from .neurons import BaseNeuron

__all__ = ["record_spike_maps", "rate_map_image", "make_panel", "spike_rates_by_region", "spike_map_panel"]


@contextmanager
def record_spike_maps(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Per-layer spike-rate maps ``[B, H, W]`` (fraction of channel-steps that spiked at each
    pixel) of every neuron layer on image-shaped sequences ``[T, B, C, H, W]``."""
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, BaseNeuron):

            def hook(_m, _inp, out, name=name):
                if out.dim() == 5:
                    maps[name] = (out != 0).float().mean(dim=(0, 2)).detach().cpu()

            handles.append(mod.register_forward_hook(hook))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def _colormap(v: np.ndarray) -> np.ndarray:
    """A perceptually ordered dark-blue -> yellow ramp (viridis-like), ``v`` in [0, 1]."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
    x = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def rate_map_image(maps: dict[str, torch.Tensor], size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Average the layers' maps that have the image's size (first batch item) into one RGB
    picture scaled to its own maximum; returns ``(uint8 [H, W, 3], max_rate)``."""
    if not maps:
        raise ValueError("no spike maps were recorded (is the model spiking?)")
    if size is None:
        size = max((m.shape[-2:] for m in maps.values()), key=lambda s: s[0] * s[1])
    same = [m[0] for m in maps.values() if tuple(m.shape[-2:]) == tuple(size)]
    avg = torch.stack(same).mean(0).numpy()
    peak = float(avg.max()) or 1.0
    return _colormap(avg / peak), peak


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def make_panel(
    tiles: list[tuple[str, np.ndarray]], path: str | Path | None = None, overwrite: bool = False
) -> Image.Image:
    """Tiles side by side with a caption above each; saved to ``path`` (atomically) if given."""
    from .data import write_image_atomic

    rgb = [(label, _as_rgb(img)) for label, img in tiles]
    H = max(im.shape[0] for _, im in rgb)
    gap, cap = 6, 18
    W = sum(im.shape[1] for _, im in rgb) + gap * (len(rgb) - 1)
    canvas = Image.new("RGB", (W, H + cap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for label, im in rgb:
        canvas.paste(Image.fromarray(im), (x, cap))
        draw.text((x + 3, 3), label, fill=(0, 0, 0))
        x += im.shape[1] + gap
    if path is not None:
        write_image_atomic(path, np.asarray(canvas), overwrite=overwrite)
    return canvas


def _valid_map(m: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, int]:
    """Crop a ``[h, w]`` rate map of an ``H x W`` image to the part that covers the image.

    Models that pad their input (ESDNet pads to a multiple of 4) give maps of the padded image,
    at full resolution or downsampled by a power of two ``s``; the map's valid region is
    ``ceil(H / s) x ceil(W / s)``. Returns the cropped map and ``s``."""
    h, w = m.shape[-2:]
    s = 1
    while h * s < H or w * s < W:
        s *= 2
    return m[..., : -(-H // s), : -(-W // s)], s


def _upsample_map(m: torch.Tensor, s: int, H: int, W: int) -> torch.Tensor:
    """Each cell of a (valid) map of stride ``s`` repeated over the ``s x s`` pixels it covers."""
    return m.repeat_interleave(s, -2).repeat_interleave(s, -1)[..., :H, :W]


def spike_rates_by_region(maps: dict[str, torch.Tensor], mask: np.ndarray) -> list[dict]:
    """Per layer, the mean firing rate inside ``mask`` (bool ``[H, W]`` at input resolution, e.g.
    rain streaks) and outside it. For a layer of stride ``s`` a map cell counts as inside when at
    least half of the image pixels it covers are inside (cells over padding count image pixels only)."""
    H, W = mask.shape
    m = torch.from_numpy(mask.astype(np.float32))
    rows = []
    for name, rate in maps.items():
        r, s = _valid_map(rate[0], H, W)
        if s == 1:
            inside = m.bool()
        else:
            pad = (0, r.shape[1] * s - W, 0, r.shape[0] * s - H)
            F = torch.nn.functional
            covered = F.avg_pool2d(F.pad(m, pad)[None, None], s)
            real = F.avg_pool2d(F.pad(torch.ones_like(m), pad)[None, None], s)  # image share of each cell
            inside = (covered / real)[0, 0] >= 0.5
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        rows.append({
            "name": name,
            "rate_rain": float(r[inside].mean()) if n_in else None,
            "rate_background": float(r[~inside].mean()) if n_out else None,
            "pixels_rain": n_in,
            "pixels_background": n_out,
        })
    return rows


def spike_map_panel(
    image: np.ndarray, maps: dict[str, torch.Tensor], path: str | Path, layers: list[str] | None = None,
    overwrite: bool = False, columns: int = 4,
) -> Image.Image:
    """The input image followed by one heat map per layer (resized to the image, each scaled to
    its own maximum rate, which the caption gives), in a grid of ``columns``."""
    from .data import write_image_atomic

    names = layers or list(maps)
    missing = [n for n in names if n not in maps]
    if missing:
        raise ValueError(f"no spike map for layer(s) {missing}; layers: {', '.join(maps)}")
    H, W = image.shape[:2]
    tiles = [("input", _as_rgb(image))]
    for n in names:
        valid, stride = _valid_map(maps[n][0], H, W)
        r = _upsample_map(valid, stride, H, W).numpy()
        peak = float(r.max())
        tiles.append((f"{n} (max {peak:.2f})", _colormap(r / (peak or 1.0))))
    gap, cap = 6, 18
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    canvas = Image.new("RGB", (columns * (W + gap) - gap, len(rows) * (H + cap + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for ri, row in enumerate(rows):
        for ci, (label, im) in enumerate(row):
            x, y = ci * (W + gap), ri * (H + cap + gap)
            canvas.paste(Image.fromarray(im), (x, y + cap))
            draw.text((x + 3, y + 3), label[: max(8, W // 6)], fill=(0, 0, 0))
    write_image_atomic(path, np.asarray(canvas), overwrite=overwrite)
    return canvas
