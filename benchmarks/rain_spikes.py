"""Do rain pixels drive stronger spikes (ESDNet's claim), beyond being bright?

    python benchmarks/rain_spikes.py --model esdnet-s --json benchmarks/results/rain_spikes.json

Samples: centre crops of ``builtin:heldout`` and ``builtin:val`` (never trained on), each with
synthetic rain at several seeds that training never drew (light and heavy alternate); the rain
mask comes from the generator. Per layer: rain-minus-background firing rate, raw and at matched
input brightness (``spikeir.analysis.matched_contrast``), with 95% bootstrap intervals over samples.
"""

from __future__ import annotations

import argparse
import sys

import torch

from _common import format_table, machine_info, write_json
from spikeir.analysis import rain_spike_effect
from spikeir.data import builtin_images
from spikeir.io import load_model
from spikeir.rain import synth_rain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="esdnet-s")
    ap.add_argument("--seeds", type=int, default=3, help="rain seeds per image")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/rain_spikes.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    samples = []
    for name, img in builtin_images("heldout", gray=False) + builtin_images("val", gray=False):
        h, w = img.shape[:2]
        c = min(args.crop, h, w)
        img = img[(h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c]
        for k in range(args.seeds):
            rainy, _, mask = synth_rain(img, ("light", "heavy")[k % 2], seed=10_000 + k)
            samples.append((f"{name}/{k}", torch.from_numpy(rainy).float().permute(2, 0, 1) / 255.0,
                            torch.from_numpy(mask)))
    rep = rain_spike_effect(model, samples)
    rep.update({"benchmark": "rain_spikes", "command": " ".join(["python"] + sys.argv), "model": args.model,
                "samples": [n for n, _, _ in samples], "crop": args.crop,
                "machine": machine_info(torch.device("cpu"), args.threads)})
    write_json(args.json, rep)

    def ci(v):
        return "-" if v is None else f"[{v[0]:+.4f}, {v[1]:+.4f}]"

    rows = [[r["name"], f"{r['rate_rain']:.3f}", f"{r['rate_background']:.3f}", f"{r['raw']:+.4f}", ci(r["raw_ci"]),
             "-" if r["matched"] is None else f"{r['matched']:+.4f}", ci(r["matched_ci"]), r["verdict"]]
            for r in rep["layers"]]
    print(format_table(["layer", "rain", "bg", "raw", "95% CI", "matched", "95% CI", "verdict"], rows))
    print(f"{len(samples)} samples; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
