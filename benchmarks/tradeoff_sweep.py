"""SPIDEN's trade-off, measured: denoising quality, firing rate, synaptic operations and energy
against the number of time steps T (and the width) of the spiking denoiser, beside its ANN twin.

For each width: the ANN twin (ReLU) is trained once by the bundled twin's recipe
(``configs/dncnn-cpu-s25.yaml``); for each T, a quantisation-aware twin (``dncnn`` with
``quant_T = T``: the T-step IF rate code as its activation) is trained with the same recipe
and converted into a ``spiking_dncnn`` with T steps (weights and thresholds copied,
:func:`spikeir.models.spiking_dncnn.init_from_ann`; no spike-domain fine-tuning), then evaluated
as a spiking network: PSNR/SSIM on ``builtin:heldout`` (gray, sigma 25, the papers' protocol), its
measured firing rate, and :func:`spikeir.energy.measure` on 256x256 centre crops of the same
images (45 nm operation model and the memory-aware model, SNN and ANN twin).

    python benchmarks/tradeoff_sweep.py --T 1 2 4 8 16 --width 32 --json benchmarks/results/tradeoff.json

Training runs go to ``--runs`` and are reused with ``--reuse`` (a run cut short is resumed); a ReLU
twin already trained with the same recipe can be named with ``--ann WIDTH=FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_json  # noqa: E402
from spikeir.config import load_config  # noqa: E402
from spikeir.data import builtin_images  # noqa: E402
from spikeir.energy import measure  # noqa: E402
from spikeir.evaluate import evaluate_denoise  # noqa: E402
from spikeir.io import load_model  # noqa: E402
from spikeir.models import DnCNN, SpikingDnCNN  # noqa: E402
from spikeir.models.spiking_dncnn import init_from_ann  # noqa: E402
from spikeir.plots import line_panel  # noqa: E402
from spikeir.train import _center_crop, train  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "dncnn-cpu-s25.yaml"


def recipe(args: argparse.Namespace, width: int, quant_T: int | None) -> dict:
    """The ANN twin's recipe (configs/dncnn-cpu-s25.yaml) at this width, with QuantReLU if ``quant_T``."""
    cfg = load_config(RECIPE)
    cfg["model"] = {"name": "dncnn", "in_channels": 1, "depth": args.depth, "width": width}
    if quant_T is not None:
        cfg["model"]["quant_T"] = quant_T
    cfg["train"].update({"steps": args.steps, "seed": args.seed, "threads": args.threads})
    return cfg


def trained(args: argparse.Namespace, name: str, cfg: dict) -> Path:
    run = Path(args.runs) / name
    if (run / "model.safetensors").is_file() and args.reuse:
        return run / "model.safetensors"
    resume = args.reuse and any((run / "checkpoints").glob("step_*.pt"))  # a run cut short: continue it
    if run.exists() and not resume:
        raise SystemExit(f"{run} exists; remove it or pass --reuse")
    print(f"{'resuming' if resume else 'training'} {name} ({args.steps} steps)", flush=True)
    train(cfg, run, progress=False, resume=resume)
    return run / "model.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--width", type=int, nargs="+", default=[32])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ann", nargs="*", default=[], help="WIDTH=FILE: a ReLU twin already trained by this recipe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="runs/sweep")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/tradeoff.json")
    ap.add_argument("--png", default=None, help="default: the JSON path with .png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    given = {int(k): v for k, v in (a.split("=", 1) for a in args.ann)}

    heldout = builtin_images("heldout", gray=True)
    crops = [_center_crop(im, 256) for _, im in heldout]
    rows = []
    for width in args.width:
        ann_file = given.get(width) or trained(args, f"dncnn-w{width}", recipe(args, width, None))
        ann = load_model(ann_file, "cpu")
        assert isinstance(ann, DnCNN)
        ann_eval = evaluate_denoise(ann, heldout, 25.0, "cpu")["mean"]
        for T in args.T:
            qat = load_model(trained(args, f"dncnn-q{T}-w{width}", recipe(args, width, T)), "cpu")
            qat_eval = evaluate_denoise(qat, heldout, 25.0, "cpu")["mean"]
            snn = SpikingDnCNN(in_channels=1, depth=args.depth, width=width, T=T, neuron_kwargs={"v_init": "half"})
            init_from_ann(snn, qat, torch.zeros(1, 1, 8, 8))
            snn.eval()
            snn_eval = evaluate_denoise(snn, heldout, 25.0, "cpu")["mean"]
            rep = measure(snn, crops, twin=ann)
            e = rep.energy()
            rows.append({
                "width": width, "T": T, "params_snn": rep.params, "params_ann": rep.ann.params,
                "psnr_snn": snn_eval["psnr"], "ssim_snn": snn_eval["ssim"], "firing_rate": snn_eval["firing_rate"],
                "psnr_qat": qat_eval["psnr"], "psnr_ann": ann_eval["psnr"], "ssim_ann": ann_eval["ssim"],
                "sops": rep.totals["sops"], "macs_ann": rep.ann.totals["macs"],
                "energy_45nm_j": {"snn": e["ops_45nm"]["snn_j"], "ann": e["ops_45nm"]["ann_j"],
                                  "snn_over_ann": e["ops_45nm"]["snn_over_ann"]},
                "energy_memory_aware_j": {"snn": e["memory_aware"]["snn_j"], "ann": e["memory_aware"]["ann_j"],
                                          "snn_over_ann": e["memory_aware"]["snn_over_ann"]},
            })
            r = rows[-1]
            print(f"width {width} T {T:2d}: SNN {r['psnr_snn']:.2f} dB (QAT {r['psnr_qat']:.2f}, ANN "
                  f"{r['psnr_ann']:.2f}), rate {r['firing_rate']:.3f}, 45nm SNN/ANN "
                  f"{r['energy_45nm_j']['snn_over_ann']:.2f}, memory-aware "
                  f"{r['energy_memory_aware_j']['snn_over_ann']:.2f}", flush=True)

    result = {
        "command": " ".join(["python"] + sys.argv),
        "protocol": "builtin:heldout gray, sigma 25, seed 0 per image, unclipped noise, uint8 output; energy per "
                    "256x256 crop of the same images",
        "images": [n for n, _ in heldout],
        "steps": args.steps, "depth": args.depth, "seed": args.seed,
        "rows": rows,
        "machine": machine_info(torch.device("cpu"), args.threads),
    }
    write_json(args.json, result)
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        series.setdefault(f"SNN w{r['width']}", []).append((r["energy_45nm_j"]["snn"] * 1e6, r["psnr_snn"]))
    for width in args.width:
        r = next(x for x in rows if x["width"] == width)
        series[f"ANN w{width}"] = [(r["energy_45nm_j"]["ann"] * 1e6, r["psnr_ann"])]
    png = Path(args.png or Path(args.json).with_suffix(".png"))
    line_panel("PSNR (dB) against energy per 256x256 image (uJ, 45 nm ops)", series, size=(640, 340)).save(png)
    print(json.dumps({"json": args.json, "png": str(png)}))


if __name__ == "__main__":
    main()
