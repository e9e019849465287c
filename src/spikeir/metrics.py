"""PSNR and SSIM with the conventions of the restoration literature.

Conventions (the ones BasicSR and the MATLAB scripts of most papers use):

* Pixel values are on the scale ``[0, data_range]`` (default 255); compute in float64.
* ``crop_border`` pixels are removed from every side before measuring.
* ``y_channel=True`` converts RGB to the Y of YCbCr (ITU-R BT.601, studio swing, not rounded):
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for ``R, G, B`` in ``[0, 1]``; Y is then on
  ``[16, 235]`` of a 255 scale and PSNR uses a peak of 255.
* SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  statistics without sample-covariance correction, averaged over the valid region (no padding),
  then over channels. This equals scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``.

Inputs: numpy arrays ``[H, W]`` or ``[H, W, C]`` (channel-last), or torch tensors ``[H, W]``,
``[C, H, W]`` (channel-first) or ``[B, C, H, W]``. Single images give a float; a 4-D batch
gives one value per image (a float64 numpy array).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "rgb_to_y", "ssim_torch"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _to_bchw(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float64 ``[B, C, H, W]`` tensor from the accepted layouts."""
    if isinstance(img, np.ndarray):
        a = np.ascontiguousarray(img)
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # read-only arrays (e.g. cached data)
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t.permute(2, 0, 1)[None]
        else:
            raise ValueError(f"numpy images must be [H, W] or [H, W, C], got shape {img.shape}")
    elif isinstance(img, torch.Tensor):
        t = img.detach()
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t[None]
        elif t.dim() != 4:
            raise ValueError(f"tensors must be [H, W], [C, H, W] or [B, C, H, W], got {tuple(t.shape)}")
    else:
        raise ValueError(f"expected a numpy array or torch tensor, got {type(img).__name__}")
    return t.to(device="cpu", dtype=torch.float64)


def rgb_to_y(img: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """BT.601 luma of ``[B, 3, H, W]`` RGB on ``[0, data_range]``; returns ``[B, 1, H, W]`` on a
    0..255 scale (16..235), unrounded."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"Y conversion needs 3 RGB channels, got shape {tuple(img.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return 16.0 + (img / data_range * w).sum(1, keepdim=True)


def _prepare(a, b, crop_border: int, y_channel: bool, data_range: float):
    x, y = _to_bchw(a), _to_bchw(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if 2 * crop_border >= min(x.shape[-2:]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {tuple(x.shape[-2:])} image")
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    peak = float(data_range)
    if y_channel:
        x, y = rgb_to_y(x, data_range), rgb_to_y(y, data_range)
        peak = 255.0
    return x, y, peak


def _out(values: torch.Tensor, batched: bool):
    vals = values.numpy()
    return vals if batched else float(vals[0])


def _is_batch(a) -> bool:
    return isinstance(a, torch.Tensor) and a.dim() == 4


def psnr(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    data_range: float = 255.0,
    crop_border: int = 0,
    y_channel: bool = False,
):
    """Peak signal-to-noise ratio in dB, ``10 log10(peak^2 / MSE)``; ``inf`` for equal images."""
    x, y, peak = _prepare(a, b, crop_border, y_channel, data_range)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    vals = torch.where(mse == 0, torch.full_like(mse, math.inf), 10.0 * torch.log10(peak**2 / mse))
    return _out(vals, _is_batch(a))


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None):
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_torch(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Differentiable SSIM per image of ``[B, C, H, W]`` tensors (valid region, channel mean).

    Works in the input's dtype and device, so it also serves as a training loss (``1 - ssim``)."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    g = _gaussian_window(dtype=x.dtype, device=x.device)
    C = x.shape[1]
    gh = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)
    gv = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, gh, groups=C), gv, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1)


def ssim(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    data_range: float = 255.0,
    crop_border: int = 0,
    y_channel: bool = False,
):
    """Structural similarity (Wang et al. 2004), conventions in the module docstring."""
    x, y, peak = _prepare(a, b, crop_border, y_channel, data_range)
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {tuple(x.shape[-2:])}")
    return _out(ssim_torch(x, y, peak), _is_batch(a))
