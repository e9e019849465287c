"""Tutorial: derain with the authors' released ESDNet weights.

Run it as ``python examples/tutorials/derain_released_esdnet.py [RELEASE.pth [RAINY_FOLDER]]``.

ESDNet's authors publish PyTorch checkpoints of their trained networks (e.g. the Rain200H model).
spikeir reads them without running any pickled code (``torch.load(weights_only=True)``), infers
the configuration from the tensor names and shapes, and writes an ordinary spikeir model file:

    spikeir convert esdnet model_best.pth -o esdnet-rain200h.safetensors
    spikeir derain rainy/ -o derained/ --model esdnet-rain200h.safetensors

This script does the same from Python. spikeir never downloads anything, so without a release
file on the command line it writes a stand-in in the release's format: the bundled ``esdnet-s``
weights under the release's key names, nested under ``state_dict`` with DataParallel's
``module.`` prefix, as a ``.pth``, so every step below runs on any machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import spikeir
from spikeir.data import builtin_images, load_image_set, to_uint8
from spikeir.evaluate import evaluate_derain, restore
from spikeir.metrics import psnr
from spikeir.rain import synth_rain
from spikeir.release import convert_esdnet_release, esdnet_config_from_state, load_esdnet_release
from spikeir.visualize import record_spike_maps, spike_map_panel, spike_rates_by_region

TINY = os.environ.get("SPIKEIR_TUTORIAL_TINY") == "1"
work = Path(tempfile.mkdtemp(prefix="spikeir-tutorial-"))

# --- 1. the released checkpoint (or a stand-in in its format) -----------------------------------
if len(sys.argv) > 1:
    release = Path(sys.argv[1])
else:
    bundled = spikeir.load_model("esdnet-s")
    release = work / "model_best.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bundled.state_dict().items()}}, release)
state = torch.load(release, map_location="cpu", weights_only=True)
print(f"{release.name}: {len(state.get('state_dict', state))} tensors")

# the configuration comes from the names and shapes alone
model = load_esdnet_release(release)
print("inferred configuration:", esdnet_config_from_state(model.state_dict()))

# --- 2. convert once, then load it like any bundled model ---------------------------------------
converted = work / "esdnet-release.safetensors"
convert_esdnet_release(release, converted)
model = spikeir.load_model(converted)  # eval mode, float32, task "derain"
print(f"converted to {converted.name}: {sum(p.numel() for p in model.parameters()):,} parameters, T = {model.T}")

# --- 3. derain: your rainy photos, or synthetic rain over a built-in photo ----------------------
size = 96 if TINY else 256
if len(sys.argv) > 2:
    for name, rainy in load_image_set(sys.argv[2], gray=False)[:3]:
        out, rate = restore(model, rainy.astype(np.float32) / 255)
        print(f"{name}: derained, firing rate {rate:.3f}")
name, clean = builtin_images("heldout", gray=False)[0]
clean = clean[:size, :size]
rainy, streaks, mask = synth_rain(clean, "heavy", seed=7)
out, rate = restore(model, rainy.astype(np.float32) / 255)
print(f"{name} with heavy synthetic rain: {psnr(rainy, clean):.2f} dB -> {psnr(to_uint8(out), clean):.2f} dB "
      f"(RGB PSNR), firing rate {rate:.3f}")

# the papers' protocol: PSNR/SSIM on the Y channel of uint8 outputs
res = evaluate_derain(model, [(name, rainy, clean)])
print(f"Y-channel PSNR {res['mean']['psnr']:.2f} dB, SSIM {res['mean']['ssim']:.4f}")

# --- 4. where the spikes are: rain streaks against the background -------------------------------
with record_spike_maps(model) as maps, torch.no_grad():
    model(torch.from_numpy(rainy).permute(2, 0, 1)[None].float() / 255)
for row in spike_rates_by_region(maps, mask)[:4]:
    print(f"{row['name']:>32}: rate in rain {row['rate_rain']:.3f}, background {row['rate_background']:.3f}")
panel = spike_map_panel(rainy, maps, work / "spikes.png", layers=list(maps)[:4])
print(f"spike maps: {work / 'spikes.png'} ({panel.width}x{panel.height})")
print("note: rain streaks are brighter than most background; spikeir.analysis.rain_spike_effect compares rain "
      "with background pixels of matched brightness before calling the difference a rain effect")
