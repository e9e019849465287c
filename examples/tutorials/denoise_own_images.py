"""Tutorial: denoise, then train a spiking denoiser, on your own folder of images.

Run it as ``python examples/tutorials/denoise_own_images.py [FOLDER]``. Without a folder it makes
one from images that ship with scikit-image, so it runs anywhere; ``SPIKEIR_TUTORIAL_TINY=1``
shrinks everything to seconds (that is how the test suite runs it).

1. Denoise with the bundled SNN: ``spikeir.load_model`` returns an ``nn.Module`` in eval mode.
2. Measure it on your images under the papers' protocol: ``evaluate_denoise``.
3. Train your own: a recipe is a plain dict (or a YAML file for ``spikeir train``); the trainer
   writes checkpoints, a log, a run record and ``model.safetensors`` into the run folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import spikeir
from spikeir.config import load_config
from spikeir.data import add_test_noise, builtin_images, load_image_set, to_uint8, write_image_atomic
from spikeir.evaluate import evaluate_denoise, restore
from spikeir.metrics import psnr
from spikeir.train import train

TINY = os.environ.get("SPIKEIR_TUTORIAL_TINY") == "1"
work = Path(tempfile.mkdtemp(prefix="spikeir-tutorial-"))

# --- your images: a folder of PNG/JPEG/TIFF files (here: crops of built-in photos) ----------------
folder = Path(sys.argv[1]) if len(sys.argv) > 1 else work / "my_images"
if len(sys.argv) <= 1:
    for name, img in builtin_images("train", gray=True)[:4]:
        write_image_atomic(folder / f"{name}.png", img[:96, :96] if TINY else img)
images = load_image_set(folder, gray=True)
print(f"{len(images)} images in {folder}")

# --- 1. denoise one image with the bundled spiking denoiser -----------------------------------
model = spikeir.load_model("spiden-s25")  # trained at sigma 25 on gray images
name, clean = images[0]
noisy = add_test_noise(clean, 25.0, seed=0)  # float image in [0, 1] scale, not clipped
out, rate = restore(model, noisy)  # -> [C, H, W] tensor and the mean firing rate
print(f"{name}: PSNR {psnr(to_uint8(out), clean):.2f} dB (noisy input "
      f"{psnr(np.clip(noisy * 255 + 0.5, 0, 255).astype(np.uint8), clean):.2f} dB), firing rate {rate:.3f}")

# --- 2. evaluate on the whole folder ---------------------------------------------------------
res = evaluate_denoise(model, images, sigma=25.0)
print(f"mean over the folder: PSNR {res['mean']['psnr']:.2f} dB, SSIM {res['mean']['ssim']:.4f}")

# --- 3. train a small spiking denoiser on the folder -----------------------------------------
cfg = load_config("configs/smoke.yaml" if Path("configs/smoke.yaml").is_file() else None)
cfg["model"] = {"preset": "spiden-cpu", "depth": 4 if TINY else 10, "width": 8 if TINY else 32}
cfg["data"].update({"train": str(folder), "val": str(folder), "patch": 32, "batch_size": 4, "val_crop": 64})
cfg["train"].update({"steps": 4 if TINY else 2000, "log_every": 2, "val_every": 1000, "ckpt_every": 1000})
result = train(cfg, work / "run", device="cpu", progress=not TINY)
print(f"trained {result['steps']} steps: validation PSNR {result['mean']['psnr']:.2f} dB -> {work / 'run'}")
mine = spikeir.load_model(work / "run" / "model.safetensors")
with torch.no_grad():
    print("my model keeps the size:", tuple(mine(torch.rand(1, 1, 33, 47)).shape))
