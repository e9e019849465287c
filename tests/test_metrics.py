"""Tests of PSNR / SSIM (spikeir.metrics) against scikit-image and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.filters import gaussian
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from spikeir.metrics import psnr, rgb_to_y, ssim, ssim_torch

N = 72  # crop size: big enough for an 11x11 SSIM window after a border crop, small for speed


def _crops() -> dict[str, np.ndarray]:
    """Clean crops on [0, 255] as float64: gray [H, W] and colour [H, W, 3]."""
    cam = data.camera()[200 : 200 + N, 180 : 180 + N + 8]  # non-square on purpose
    ast = data.astronaut()[40 : 40 + N, 160 : 160 + N]
    cof = data.coffee()[100 : 100 + N, 300 : 300 + N + 4]
    return {
        k: v.astype(np.float64) for k, v in {"camera": cam, "astronaut": ast, "coffee": cof}.items()
    }


CLEAN = _crops()


def _degraded(img: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise25":
        return np.clip(img + rng.normal(0, 25, img.shape), 0, 255)
    if kind == "noise5-unclipped":
        return img + rng.normal(0, 5, img.shape)
    if kind == "blur":
        return gaussian(
            img, sigma=1.2, channel_axis=-1 if img.ndim == 3 else None, preserve_range=True
        )
    if kind == "quantised":
        return np.round(np.clip(img * 0.9 + 10 + rng.normal(0, 3, img.shape), 0, 255))
    raise ValueError(kind)


PAIRS = [
    (name, kind) for name in CLEAN for kind in ["noise25", "noise5-unclipped", "blur", "quantised"]
]


def _pair(name: str, kind: str):
    a = CLEAN[name]
    return a, _degraded(a, kind)


def _chw(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(img)
    return t.permute(2, 0, 1) if t.dim() == 3 else t


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2 if a.ndim == 3 else None,
    )


def _y_plane(img: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma, by hand, of an [H, W, 3] image on [0, 255]."""
    r, g, b = img[..., 0] / 255, img[..., 1] / 255, img[..., 2] / 255
    return 16 + 65.481 * r + 128.553 * g + 24.966 * b


# ---------------------------------------------------------------- scikit-image parity


@pytest.mark.parametrize("name, kind", PAIRS)
def test_psnr_matches_skimage(name, kind):
    a, b = _pair(name, kind)
    expected = peak_signal_noise_ratio(a, b, data_range=255)
    assert psnr(a, b) == pytest.approx(expected, abs=1e-6)
    assert psnr(_chw(a), _chw(b)) == pytest.approx(expected, abs=1e-6)  # torch CHW
    assert 10 < expected < 60


@pytest.mark.parametrize("name, kind", PAIRS)
def test_ssim_matches_skimage(name, kind):
    a, b = _pair(name, kind)
    expected = _sk_ssim(a, b)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)
    assert ssim(_chw(a), _chw(b)) == pytest.approx(expected, abs=1e-6)
    assert 0.05 < expected < 0.999


def test_uint8_inputs_match_skimage():
    a = data.camera()[:64, :64]
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-20, 21, a.shape), 0, 255)
    b = b.astype(np.uint8)
    # skimage works in float, so there is no uint8 wrap-around in the difference
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-6)
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b), abs=1e-6)
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(psnr(a, b), abs=1e-12)


def test_data_range_one_equals_scaled_255():
    a, b = _pair("astronaut", "noise25")
    assert psnr(a / 255, b / 255, data_range=1.0) == pytest.approx(psnr(a, b), abs=1e-9)
    assert ssim(a / 255, b / 255, data_range=1.0) == pytest.approx(ssim(a, b), abs=1e-9)
    assert ssim(_chw(a) / 255, _chw(b) / 255, data_range=1.0) == pytest.approx(ssim(a, b), abs=1e-9)


def test_psnr_by_hand():
    a = np.zeros((4, 4))
    b = a.copy()
    b[0, 0] = 16.0  # MSE = 256 / 16 = 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16), abs=1e-12)


# ---------------------------------------------------------------- layouts and batches


def test_numpy_hwc_equals_torch_chw_float32():
    a, b = _pair("coffee", "noise25")
    ta, tb = _chw(a).float(), _chw(b).float()
    # float32 tensors are measured in float64 after conversion: same as the float32-rounded arrays
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert psnr(ta, tb) == pytest.approx(psnr(a32, b32), abs=1e-9)
    assert ssim(ta, tb) == pytest.approx(ssim(a32, b32), abs=1e-9)


def test_gray_numpy_and_torch_layouts():
    a, b = _pair("camera", "blur")
    expected_p, expected_s = psnr(a, b), ssim(a, b)
    for ta, tb in [
        (torch.from_numpy(a), torch.from_numpy(b)),  # [H, W]
        (torch.from_numpy(a)[None], torch.from_numpy(b)[None]),  # [1, H, W]
    ]:
        assert psnr(ta, tb) == pytest.approx(expected_p, abs=1e-12)
        assert ssim(ta, tb) == pytest.approx(expected_s, abs=1e-12)
    assert isinstance(psnr(a, b), float) and isinstance(ssim(a, b), float)


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_gives_per_image_values(channels):
    names = ["astronaut", "coffee"] if channels == 3 else ["camera", "camera"]
    kinds = ["noise25", "blur", "quantised"]
    clean, deg = [], []
    for i, kind in enumerate(kinds):
        a = CLEAN[names[i % 2]][:N, :N]
        b = _degraded(a, kind, seed=i)
        clean.append(_chw(a) if channels == 3 else torch.from_numpy(a)[None])
        deg.append(_chw(b) if channels == 3 else torch.from_numpy(b)[None])
    A, B = torch.stack(clean), torch.stack(deg)
    assert A.shape == (3, channels, N, N)
    p, s = psnr(A, B), ssim(A, B)
    assert isinstance(p, np.ndarray) and p.shape == (3,) and p.dtype == np.float64
    assert isinstance(s, np.ndarray) and s.shape == (3,)
    for i in range(3):
        assert p[i] == pytest.approx(psnr(clean[i], deg[i]), abs=1e-12)
        assert s[i] == pytest.approx(ssim(clean[i], deg[i]), abs=1e-12)
    assert len(set(np.round(p, 6))) == 3  # really per image, not a broadcast mean
    # a batch of one is still an array
    assert psnr(A[:1], B[:1]).shape == (1,)


@pytest.mark.parametrize("crop", [1, 4, 8])
def test_crop_border_equals_manual_crop(crop):
    a, b = _pair("astronaut", "noise25")
    c = slice(crop, -crop)
    assert psnr(a, b, crop_border=crop) == pytest.approx(psnr(a[c, c], b[c, c]), abs=1e-12)
    assert ssim(a, b, crop_border=crop) == pytest.approx(ssim(a[c, c], b[c, c]), abs=1e-12)
    assert ssim(a, b, crop_border=crop) == pytest.approx(_sk_ssim(a[c, c], b[c, c]), abs=1e-6)
    ta, tb = _chw(a), _chw(b)
    assert psnr(ta, tb, crop_border=crop) == pytest.approx(psnr(a[c, c], b[c, c]), abs=1e-12)
    assert psnr(a, b, crop_border=crop) != pytest.approx(psnr(a, b), abs=1e-6)


# ---------------------------------------------------------------- Y channel


def test_rgb_to_y_known_colours():
    colours = {
        "black": ((0, 0, 0), 16.0),
        "white": ((255, 255, 255), 235.0),
        "red": ((255, 0, 0), 16 + 65.481),
        "green": ((0, 255, 0), 16 + 128.553),
        "blue": ((0, 0, 255), 16 + 24.966),
        "grey": ((128, 128, 128), 16 + 219.0 * 128 / 255),
    }
    rgb = torch.tensor([c for c, _ in colours.values()], dtype=torch.float64)  # [K, 3]
    img = rgb.T.reshape(1, 3, 1, -1)
    y = rgb_to_y(img)
    assert y.shape == (1, 1, 1, len(colours))
    expected = torch.tensor([v for _, v in colours.values()], dtype=torch.float64)
    assert torch.allclose(y.flatten(), expected, atol=1e-10, rtol=0)
    # on a [0, 1] scale the output is still 16..235
    y1 = rgb_to_y(img / 255, data_range=1.0)
    assert torch.allclose(y1.flatten(), expected, atol=1e-10, rtol=0)


def test_y_channel_psnr_and_ssim_by_hand():
    a, b = _pair("coffee", "noise25")
    ya, yb = _y_plane(a), _y_plane(b)
    mse = np.mean((ya - yb) ** 2)
    expected = 10 * math.log10(255**2 / mse)
    assert psnr(a, b, y_channel=True) == pytest.approx(expected, abs=1e-9)
    assert psnr(_chw(a), _chw(b), y_channel=True) == pytest.approx(expected, abs=1e-9)
    assert ssim(a, b, y_channel=True) == pytest.approx(_sk_ssim(ya, yb), abs=1e-6)
    # crop then Y == Y then crop
    assert psnr(a, b, y_channel=True, crop_border=4) == pytest.approx(
        peak_signal_noise_ratio(ya[4:-4, 4:-4], yb[4:-4, 4:-4], data_range=255), abs=1e-6
    )
    # Y PSNR is not the RGB PSNR
    assert abs(psnr(a, b, y_channel=True) - psnr(a, b)) > 0.1


def test_y_channel_with_unit_range():
    a, b = _pair("astronaut", "blur")
    assert psnr(a / 255, b / 255, data_range=1.0, y_channel=True) == pytest.approx(
        psnr(a, b, y_channel=True), abs=1e-9
    )


# ---------------------------------------------------------------- edge cases / errors


@pytest.mark.parametrize("name", list(CLEAN))
def test_identical_images(name):
    a = CLEAN[name]
    assert psnr(a, a.copy()) == math.inf
    assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    A = _chw(a)[None].repeat(2, 1, 1, 1) if a.ndim == 3 else torch.from_numpy(a)[None, None]
    assert np.all(np.isinf(psnr(A, A.clone())))
    # a batch mixing an identical and a different pair
    if a.ndim == 3:
        B = A.clone()
        B[1] += 1.0
        p = psnr(A, B)
        assert p[0] == math.inf and p[1] == pytest.approx(10 * math.log10(255**2), abs=1e-9)


def test_ssim_torch_is_differentiable():
    a, b = _pair("camera", "noise25")
    x = torch.from_numpy(b / 255)[None, None].requires_grad_(True)
    y = torch.from_numpy(a / 255)[None, None]
    s = ssim_torch(x, y, peak=1.0)
    assert s.shape == (1,)
    assert float(s.detach()) == pytest.approx(_sk_ssim(a, b), abs=1e-6)
    (1 - s).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: psnr(np.zeros((20, 20)), np.zeros((20, 21))), r"differ in shape"),
        (lambda: ssim(np.zeros((20, 20, 3)), np.zeros((20, 20))), r"differ in shape"),
        (lambda: psnr(torch.zeros(2, 3, 16, 16), torch.zeros(1, 3, 16, 16)), r"differ in shape"),
        (lambda: ssim(np.zeros((10, 10)), np.zeros((10, 10))), r"at least 11x11"),
        (lambda: ssim(np.zeros((40, 10, 3)), np.zeros((40, 10, 3))), r"at least 11x11"),
        # cropping can make an image too small for SSIM
        (lambda: ssim(np.zeros((16, 16)), np.zeros((16, 16)), crop_border=3), r"at least 11x11"),
        (lambda: psnr(np.zeros((8, 8)), np.zeros((8, 8)), crop_border=4), r"leaves nothing"),
        (lambda: psnr(np.zeros((8, 8)), np.zeros((8, 8)), crop_border=-1), r"crop_border"),
        (lambda: psnr(np.zeros((16, 16)), np.zeros((16, 16)), y_channel=True), r"3 RGB channels"),
        (lambda: psnr(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 3))), r"\[H, W\] or \[H, W, C\]"),
        (lambda: psnr(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4)), r"tensors must be"),
        (lambda: psnr([[0.0]], [[0.0]]), r"numpy array or torch tensor"),
    ],
)
def test_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
