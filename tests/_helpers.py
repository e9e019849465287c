"""Small fixtures shared by the slice tests: generated images and tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_SNN = {"name": "spiking_dncnn", "in_channels": 1, "depth": 3, "width": 8, "T": 2}
TINY_ANN = {"name": "dncnn", "in_channels": 1, "depth": 3, "width": 8}


def smooth_image(seed: int, h: int = 48, w: int = 56, rgb: bool = False) -> np.ndarray:
    """A smooth random uint8 image (sums of low-frequency sinusoids)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(3 if rgb else 1):
        img = np.zeros((h, w))
        for _ in range(4):
            fy, fx, ph = rng.uniform(0.5, 4, 2).tolist() + [rng.uniform(0, 6.28)]
            img += np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
        chans.append((img - img.min()) / (np.ptp(img) + 1e-9))
    arr = np.stack(chans, -1) if rgb else chans[0]
    return (arr * 200 + 25).astype(np.uint8)


def write_images(folder: Path, n: int = 3, rgb: bool = False, **kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(smooth_image(i, rgb=rgb, **kw)).save(p)
        paths.append(p)
    return paths
