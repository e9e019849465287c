"""Held-out deraining table: the bundled spiking derainer, its ANN twin and the rainy input.

Images: ``builtin:heldout`` in colour (never used in training or validation) with synthetic rain
from seeds training never drew, both presets (light and heavy) on every image. Protocol of the
deraining papers: output clamped and rounded to uint8, PSNR/SSIM on the BT.601 Y channel.

    python benchmarks/derain_heldout.py --json benchmarks/results/derain_heldout.json
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import command_line, format_table, machine_info, write_json
from spikeir.data import builtin_images
from spikeir.evaluate import evaluate_derain
from spikeir.io import load_model
from spikeir.metrics import psnr, ssim
from spikeir.rain import synth_rain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["esdnet-s", "esdnet-s-ann"])
    ap.add_argument("--seed", type=int, default=20_000, help="rain seed (training draws seeds below 2**31 per patch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/derain_heldout.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    triples = []
    for name, clean in builtin_images("heldout", gray=False):
        for preset in ("light", "heavy"):
            triples.append((f"{name}/{preset}", synth_rain(clean, preset, seed=args.seed)[0], clean))
    y = {"y_channel": True}
    rows = [{"method": "rainy input", "psnr": sum(psnr(r, c, **y) for _, r, c in triples) / len(triples),
             "ssim": sum(ssim(r, c, **y) for _, r, c in triples) / len(triples), "firing_rate": None}]
    per_image = {}
    for key in args.models:
        model = load_model(key, "cpu")
        t0 = time.perf_counter()
        res = evaluate_derain(model, triples, "cpu")
        rows.append({"method": key, "psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                     "firing_rate": res["mean"]["firing_rate"], "seconds": round(time.perf_counter() - t0, 1),
                     "params": sum(p.numel() for p in model.parameters())})
        per_image[key] = res["images"]
    result = {"benchmark": "derain_heldout", "command": command_line(),
              "images": [n for n, _, _ in triples], "protocol": "synthetic rain (spikeir.rain.synth_rain, light and "
              f"heavy, seed {args.seed}) over builtin:heldout in colour; uint8 output; PSNR/SSIM on BT.601 Y",
              "rows": rows, "per_image": per_image, "machine": machine_info(torch.device("cpu"), args.threads)}
    write_json(args.json, result)
    print(format_table(["method", "Y-PSNR", "Y-SSIM", "rate"],
                       [[r["method"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}",
                         "-" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"] for r in rows]))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
