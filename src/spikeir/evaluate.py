"""Running restoration models on images and scoring them with the papers' protocols."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import add_test_noise, to_uint8
from .metrics import psnr, ssim
from .models import is_spiking
from .neurons import record_firing_rates

__all__ = ["restore", "evaluate_denoise", "model_in_channels"]


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
    model: nn.Module, img: np.ndarray, device: torch.device | None = None
) -> tuple[torch.Tensor, float | None]:
    """Run ``model`` on one float image in [0, 1] scale (``[H, W]`` or ``[H, W, C]``, values may
    fall outside [0, 1] for noisy inputs). Returns the output ``[C, H, W]`` float tensor (not
    clamped) and the mean firing rate (``None`` for ANNs)."""
    device = device or next(model.parameters()).device
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    with record_firing_rates(model) as fr:
        out = model(t[None].to(device))[0]
    return out.cpu(), (fr.mean if is_spiking(model) else None)


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
    def mean(k: str) -> float | None:
        vals = [r[k] for r in rows if r[k] is not None]
        return float(np.mean(vals)) if vals else None
    return {
        "task": "denoise",
        "sigma": sigma,
        "seed": seed,
        "protocol": "clean uint8/255 + N(0, sigma/255) from RandomState(seed) per image, "
                    "unclipped input; output clamped to [0,1], rounded to uint8; PSNR/SSIM on 0..255",
        "mean": {"psnr": mean("psnr"), "ssim": mean("ssim"), "psnr_noisy": mean("psnr_noisy"),
                 "firing_rate": mean("firing_rate")},
        "images": rows,
    }
