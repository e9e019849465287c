"""Running restoration models on images and scoring them with the papers' protocols."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import add_test_noise, to_uint8
from .metrics import psnr, ssim
from .models import is_spiking
from .neurons import record_firing_rates

__all__ = ["restore", "evaluate_denoise", "evaluate_derain", "model_in_channels"]


def model_in_channels(model: nn.Module) -> int:
    """Input channels of a model (from its config when known, else its first convolution)."""
    info = getattr(model, "spikeir_info", None)
    if info and "in_channels" in info.get("model", {}):
        return int(info["model"]["in_channels"])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("cannot tell the model's input channels")


@torch.no_grad()
def restore(
    model: nn.Module,
    img: np.ndarray,
    device: torch.device | None = None,
    tile: int | None = None,
    overlap: int = 8,
) -> tuple[torch.Tensor, float | None]:
    """Run ``model`` on one float image in [0, 1] scale (``[H, W]`` or ``[H, W, C]``, values may
    fall outside [0, 1] for noisy inputs), whole or in blended ``tile`` x ``tile`` tiles.
    Returns the output ``[C, H, W]`` float tensor (not clamped) and the mean firing rate
    (``None`` for ANNs)."""
    from .tiling import tiled_forward

    device = device or next(model.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    t = (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None].to(device)
    with record_firing_rates(model) as fr:
        out = tiled_forward(model, t, tile=tile, overlap=overlap) if tile else model(t)
    return out[0].cpu(), (fr.mean if is_spiking(model) else None)


def _summary(rows: list[dict]) -> dict:
    def mean(k: str) -> float | None:
        vals = [r[k] for r in rows if r.get(k) is not None]
        return float(np.mean(vals)) if vals else None

    return {k: mean(k) for k in rows[0] if k != "name"}


def evaluate_denoise(
    model: nn.Module,
    images: list[tuple[str, np.ndarray]],
    sigma: float,
    device: torch.device | None = None,
    seed: int = 0,
) -> dict:
    """Gaussian denoising protocol: noise from a generator seeded with ``seed`` per image, input
    neither clipped nor quantised, output clamped and rounded to uint8, PSNR/SSIM on 0..255."""
    model.eval()
    rows = []
    for name, clean in images:
        noisy = add_test_noise(clean, sigma, seed)
        out, rate = restore(model, noisy, device)
        den = to_uint8(out)
        noisy_u8 = np.clip(noisy * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rows.append({
            "name": name,
            "psnr": psnr(den, clean),
            "ssim": ssim(den, clean),
            "psnr_noisy": psnr(noisy_u8, clean),
            "firing_rate": rate,
        })
    return {
        "task": "denoise",
        "sigma": sigma,
        "seed": seed,
        "protocol": "clean uint8/255 + N(0, sigma/255) from RandomState(seed) per image, "
                    "unclipped input; output clamped to [0,1], rounded to uint8; PSNR/SSIM on 0..255",
        "mean": _summary(rows),
        "images": rows,
    }


@torch.no_grad()
def evaluate_derain(
    model: nn.Module,
    triples: list[tuple[str, np.ndarray, np.ndarray]],
    device: torch.device | None = None,
    y_channel: bool = True,
    crop_border: int = 0,
    tile: int | None = None,
    overlap: int = 8,
) -> dict:
    """Deraining protocol: RGB uint8 ``(name, rainy, clean)`` triples, output clamped and rounded
    to uint8, PSNR/SSIM on the BT.601 Y channel (``y_channel``) or RGB, ``crop_border`` removed."""
    model.eval()
    rows = []
    for name, rainy, clean in triples:
        out, rate = restore(model, rainy.astype(np.float64) / 255.0, device, tile=tile, overlap=overlap)
        der = to_uint8(out)
        kw = {"crop_border": crop_border, "y_channel": y_channel}
        rows.append({"name": name, "psnr": psnr(der, clean, **kw), "ssim": ssim(der, clean, **kw),
                     "psnr_input": psnr(rainy, clean, **kw), "firing_rate": rate})
    return {
        "task": "derain",
        "channel": "y" if y_channel else "rgb",
        "crop_border": crop_border,
        "protocol": "output clamped to [0,1], rounded to uint8; PSNR/SSIM on "
                    + ("BT.601 Y (unrounded)" if y_channel else "RGB") + " on 0..255",
        "mean": _summary(rows),
        "images": rows,
    }
