"""Held-out denoising table: bundled SNNs and their ANN twin vs non-local means (and BM3D if installed).

Images: ``builtin:heldout`` (never used in training or validation), read as gray. Protocol:
``spikeir.data.add_test_noise`` (seed 0 per image, unclipped float noise), outputs clamped and
rounded to uint8, PSNR/SSIM on 0..255.

    python benchmarks/denoise_heldout.py --json benchmarks/results/denoise_heldout.json

Non-local means uses scikit-image's recommended settings for a known sigma (``h = 0.8 sigma``,
5x5 patches, 13x13 search window, ``fast_mode``) with the true sigma; it is not tuned on these
images. BM3D (the ``bm3d`` package, non-commercial licence, never a dependency of spikeir) is run
only if importable, with the true sigma; the JSON records its version under ``optional``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from _common import command_line, write_json
from spikeir.data import add_test_noise, builtin_images, to_uint8
from spikeir.evaluate import restore
from spikeir.io import load_model
from spikeir.metrics import psnr, ssim


def _nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    s = sigma / 255.0
    return denoise_nl_means(noisy, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True)


def _bm3d():
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return None
    return lambda noisy, sigma: bm3d.bm3d(noisy, sigma_psd=sigma / 255.0)


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--models", nargs="+", default=["spiden-s25", "spiden-s25-scratch", "dncnn-s25", "nafnet-s25"],
                    help="bundled names or model files")
    ap.add_argument("--json", default="benchmarks/results/denoise_heldout.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    methods: dict = {}
    for key in args.models:
        model = load_model(key, "cpu")
        methods[key] = lambda noisy, _s, m=model: restore(m, noisy)
    methods["nl-means (skimage)"] = _nlm
    if (bm := _bm3d()) is not None:
        methods["bm3d"] = bm

    images = builtin_images("heldout", gray=True)
    rows = {name: [] for name in methods}
    for img_name, clean in images:
        noisy = add_test_noise(clean, args.sigma, seed=0)
        for name, fn in methods.items():
            t0 = time.perf_counter()
            out = fn(noisy, args.sigma)
            secs = time.perf_counter() - t0
            rate = None
            if isinstance(out, tuple):
                out, rate = out
                den = to_uint8(out)
            else:
                den = _u8(out)
            rows[name].append({"image": img_name, "psnr": psnr(den, clean), "ssim": ssim(den, clean),
                               "firing_rate": rate, "seconds": secs})
        rows.setdefault("noisy input", []).append(
            {"image": img_name, "psnr": psnr(_u8(noisy), clean), "ssim": ssim(_u8(noisy), clean)})

    summary = {}
    for name, rs in rows.items():
        summary[name] = {k: float(np.mean([r[k] for r in rs])) for k in ("psnr", "ssim")}
        rates = [r.get("firing_rate") for r in rs if r.get("firing_rate") is not None]
        if rates:
            summary[name]["firing_rate"] = float(np.mean(rates))
    result = {
        "command": command_line(),
        "sigma": args.sigma,
        "images": [n for n, _ in images],
        "protocol": "gray; RandomState(0) noise per image, unclipped; output clamped, rounded to uint8",
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "optional": {"bm3d": _version("bm3d") if "bm3d" in methods else None},
        "mean": summary,
        "per_image": rows,
    }
    write_json(args.json, result)
    w = max(len(n) for n in summary)
    print(f"held-out images: {', '.join(result['images'])}; sigma {args.sigma:g}")
    print(f"{'method':<{w}}  {'PSNR':>6}  {'SSIM':>6}")
    for name, s in summary.items():
        print(f"{name:<{w}}  {s['psnr']:6.2f}  {s['ssim']:.4f}")


if __name__ == "__main__":
    main()
