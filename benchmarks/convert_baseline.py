"""ANN-to-SNN conversion baseline: PSNR against T for the converted ANN twin, beside the directly
trained SNN and the ANN itself, on ``builtin:heldout`` (gray, sigma 25, the test protocol of
``benchmarks/denoise_heldout.py``).

    python benchmarks/convert_baseline.py --json benchmarks/results/convert_baseline.json

The converted networks are what ``spikeir convert-ann ANN --T T --threshold METHOD`` writes: IF
neurons with soft reset started at ``V_th / 2``, threshold-scaled spikes, per-layer thresholds from
4 batches of 8 noisy 64x64 patches of ``builtin:train`` (an activation percentile, or the least
T-step code error). No training after conversion.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import command_line, format_table, machine_info, write_json
from spikeir.data import DenoisePatchSampler, builtin_images, load_image_set
from spikeir.evaluate import evaluate_denoise
from spikeir.io import load_model
from spikeir.models.spiking_dncnn import convert_ann


def calibration_batch(sigma: float, batches: int = 4) -> torch.Tensor:
    imgs = [im for _, im in load_image_set("builtin:train", gray=True)]
    sampler = DenoisePatchSampler(imgs, patch=64, batch_size=8, seed=0, sigma=float(sigma))
    return torch.cat([sampler.batch(i)[0] for i in range(batches)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann", default="dncnn-s25")
    ap.add_argument("--snn", default="spiden-s25", help="the directly trained SNN to compare with")
    ap.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--threshold", nargs="+", default=["percentile", "error"], choices=["percentile", "error"])
    ap.add_argument("--percentile", type=float, default=99.9)
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--crop", type=int, default=0, help="centre crops of this size (0 = whole images)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/convert_baseline.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    heldout = builtin_images("heldout", gray=True)
    if args.crop:
        c = args.crop
        heldout = [(n, im[(im.shape[0] - c) // 2:][:c, (im.shape[1] - c) // 2:][:, :c]) for n, im in heldout]
    ann = load_model(args.ann, "cpu")
    calib = calibration_batch(args.sigma)
    rows = []

    def run(label: str, model, **extra) -> None:
        t0 = time.perf_counter()
        res = evaluate_denoise(model, heldout, args.sigma, "cpu")
        rows.append({"model": label, **extra, "psnr": res["mean"]["psnr"], "ssim": res["mean"]["ssim"],
                     "firing_rate": res["mean"]["firing_rate"], "seconds": round(time.perf_counter() - t0, 1)})
        r = rows[-1]
        print(f"{label:<40} PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  rate {r['firing_rate']}", flush=True)

    run(f"ANN {args.ann}", ann, T=None)
    snn = load_model(args.snn, "cpu")
    run(f"trained SNN {args.snn}", snn, T=snn.T, method="surrogate-gradient BPTT (two-stage recipe)")
    for method in args.threshold:
        for T in args.T:
            conv = convert_ann(ann, T, calib, threshold=method, percentile=args.percentile)
            run(f"converted {args.ann} ({method}) T={T}", conv, T=T, method=f"conversion, {method} thresholds")

    noisy = evaluate_denoise(ann, heldout, args.sigma, "cpu")["mean"]["psnr_noisy"]
    result = {
        "benchmark": "convert_baseline",
        "command": command_line(),
        "images": [n for n, _ in heldout],
        "protocol": f"builtin:heldout gray{f', centre crops {args.crop}x{args.crop}' if args.crop else ''}, "
                    f"Gaussian sigma {args.sigma:g}, seed 0 per image, uint8 output",
        "calibration": "4 batches of 8 noisy 64x64 patches of builtin:train (seed 0)",
        "percentile": args.percentile,
        "noisy_psnr": noisy,
        "machine": machine_info(torch.device("cpu"), args.threads),
        "rows": rows,
    }
    write_json(args.json, result)
    table = [[r["model"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}",
              "-" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"] for r in rows]
    print(format_table(["model", "PSNR", "SSIM", "rate"], table))
    print(f"noisy input: {noisy:.2f} dB; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
