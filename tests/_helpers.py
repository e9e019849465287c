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


def tiny_train_cfg(tmp_path: Path, model: dict | None = None, **train_kw) -> dict:
    """A complete training config for a tiny model on generated images (3 to train on, 1 to validate)."""
    from spikeir.config import load_config

    write_images(tmp_path / "train", 3)
    write_images(tmp_path / "val", 1, h=24, w=24)
    cfg = load_config(None)
    cfg["model"] = dict(model or TINY_SNN)
    cfg["data"].update({"train": str(tmp_path / "train"), "val": str(tmp_path / "val"),
                        "patch": 16, "batch_size": 4, "val_crop": None})
    cfg["train"].update({"steps": 6, "log_every": 2, "val_every": 3, "ckpt_every": 2, "threads": None, **train_kw})
    cfg["sched"]["warmup"] = 2
    return cfg


def break_torch_compile(monkeypatch, error: Exception) -> None:
    """Make every kernel ``torch.compile`` builds from now on raise ``error`` when called (a
    machine without a C++ compiler or Triton), with no kernel cached from another test."""
    import torch

    from spikeir import neurons

    def broken(*args, **kwargs):
        def fn(*a):
            raise error
        return fn

    monkeypatch.setattr(neurons, "_KERNELS", {})
    monkeypatch.setattr(torch, "compile", broken)
