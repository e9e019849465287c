"""SPIDEN's trade-off, measured: denoising quality, firing rate, synaptic operations and energy
against the number of time steps T (and the width) of the spiking denoiser, beside its ANN twin.

For each width: the ANN twin (ReLU) is trained once by the bundled twin's recipe
(``configs/dncnn-cpu-s25.yaml``); for each T, a quantisation-aware twin (``dncnn`` with
``quant_T = T``: the T-step IF rate code as its activation) is trained with the same recipe
and converted into a ``spiking_dncnn`` with T steps (weights and thresholds copied,
:func:`spikeir.models.spiking_dncnn.init_from_ann`; no spike-domain fine-tuning), then evaluated
as a spiking network: PSNR/SSIM on ``builtin:heldout`` (gray, sigma 25, the papers' protocol), its
measured firing rate, and :func:`spikeir.energy.measure` on 256x256 centre crops of the same
images (45 nm operation model and the memory-aware model, SNN and ANN twin; the memory-aware model
also with 64x64 tiles, ``tile_pixels=4096``, an accelerator that streams the image tile by tile).

    python benchmarks/tradeoff_sweep.py --T 1 2 4 8 16 --width 32 --json benchmarks/results/tradeoff.json

Sparsity as a third axis (``--rate-targets``): the converted SNN at ``--rate-T`` steps is
fine-tuned in the spike domain (surrogate gradients, BPTT) by stage 2 of the bundled spiden-s25
recipe (``configs/spiden-cpu-s25.yaml``, ``--rate-steps`` steps) with
``loss.rate_reg: {weight: --rate-weight, target: R}`` for each target ``R``, plus once with no
regulariser, so the regulariser's effect is told apart from the fine-tuning's.

Training runs go to ``--runs`` and are reused with ``--reuse`` (a run cut short is resumed); a ReLU
twin already trained with the same recipe can be named with ``--ann WIDTH=FILE``.

Seeds: one sweep per ``--seed`` (separate processes can run them side by side), then

    python benchmarks/tradeoff_sweep.py --merge seed0.json seed1.json seed2.json --json tradeoff.json

joins them: every row tagged with its ``seed``, and ``seed_means`` with the mean and sample
standard deviation over seeds of each converted (width, T) point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    command_line,
    denoise_energy_inputs,
    machine_info,
    mean_std,
    spiden_stage2_config,
    train_or_reuse,
    write_json,
)
from spikeir.config import load_config  # noqa: E402
from spikeir.data import builtin_images  # noqa: E402
from spikeir.energy import EnergyModel, measure  # noqa: E402
from spikeir.evaluate import evaluate_denoise  # noqa: E402
from spikeir.io import load_model  # noqa: E402
from spikeir.models import DnCNN, SpikingDnCNN  # noqa: E402
from spikeir.models.spiking_dncnn import init_from_ann  # noqa: E402
from spikeir.plots import line_panel  # noqa: E402
from spikeir.train import _center_crop  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "dncnn-cpu-s25.yaml"
TILE_PIXELS = 64 * 64


def recipe(args: argparse.Namespace, width: int, quant_T: int | None) -> dict:
    """The ANN twin's recipe (configs/dncnn-cpu-s25.yaml) at this width, with QuantReLU if ``quant_T``."""
    cfg = load_config(RECIPE)
    cfg["model"] = {"name": "dncnn", "in_channels": 1, "depth": args.depth, "width": width}
    if quant_T is not None:
        cfg["model"]["quant_T"] = quant_T
    cfg["train"].update({"steps": args.steps, "seed": args.seed, "threads": args.threads})
    return cfg


def finetune_recipe(args: argparse.Namespace, width: int, T: int, init: Path, target: float | None) -> dict:
    """Stage 2 of spiden-s25 (spike-domain fine-tuning) from ``init``, with a rate regulariser
    of weight ``--rate-weight`` and this target (none when ``target`` is None)."""
    cfg = spiden_stage2_config(width, args.depth, T, init, args.rate_steps, args.threads)
    cfg["loss"] = "mse" if target is None else {
        "name": "mse", "rate_reg": {"weight": args.rate_weight, "target": target}}
    # fresh patch draws per sweep seed; seed 0 keeps the recipe's own seed (1: stage 1 drew with 0)
    cfg["train"]["seed"] = args.seed + 1
    cfg["train"]["ckpt_every"] = min(100, args.rate_steps)
    return cfg


def row(args, width: int, T: int, snn, ann, heldout, crops, ann_eval: dict, extra: dict) -> dict:
    """PSNR/SSIM/rate on the held-out images, energy on their crops (three energy models)."""
    snn.eval()
    snn_eval = evaluate_denoise(snn, heldout, 25.0, "cpu")["mean"]
    rep = measure(snn, crops, twin=ann)
    e = rep.energy()
    tiled = rep.priced(EnergyModel(tile_pixels=TILE_PIXELS))  # the same counts, tiled memories
    et = tiled.energy()["memory_aware"]
    r = {"width": width, "T": T, **extra, "params_snn": tiled.params, "params_ann": tiled.ann.params,
         "psnr_snn": snn_eval["psnr"], "ssim_snn": snn_eval["ssim"], "firing_rate": snn_eval["firing_rate"],
         "psnr_ann": ann_eval["psnr"], "ssim_ann": ann_eval["ssim"],
         "sops": tiled.totals["sops"], "macs_ann": tiled.ann.totals["macs"]}
    for key, part in (("energy_45nm_j", e["ops_45nm"]), ("energy_memory_aware_j", e["memory_aware"]),
                      ("energy_memory_aware_tiled_j", et)):
        r[key] = {"snn": part["snn_j"], "ann": part["ann_j"], "snn_over_ann": part["snn_over_ann"]}
    extra_txt = "".join(f", {k} {v}" for k, v in extra.items() if k != "psnr_qat")
    print(f"width {width} T {T:2d}{extra_txt}: SNN {r['psnr_snn']:.2f} dB (ANN {r['psnr_ann']:.2f}), rate "
          f"{r['firing_rate']:.3f}, SNN/ANN energy: 45nm {r['energy_45nm_j']['snn_over_ann']:.2f}, memory-aware "
          f"{r['energy_memory_aware_j']['snn_over_ann']:.2f}, tiled {et['snn_over_ann']:.2f}", flush=True)
    return r


def trained(args: argparse.Namespace, name: str, cfg: dict) -> Path:
    return train_or_reuse(Path(args.runs) / name, cfg, args.reuse)


def plot_rows(d: dict) -> list[dict]:
    """The rows to draw: per-seed sweeps as they are; merged ones as the seed means (converted points,
    and the fine-tuned settings every seed ran)."""
    if "seed_means" not in d:
        return d["rows"]
    return [{"width": m["width"], "T": m["T"], "psnr_snn": m["psnr_snn"]["mean"], "psnr_ann": m["psnr_ann"]["mean"],
             "energy_45nm_j": {"snn": m["energy_45nm_j"]["snn"]["mean"], "ann": m["energy_45nm_j"]["ann"]["mean"]},
             **({"finetune_steps": m["finetune_steps"]} if "finetune_steps" in m else {})}
            for m in d["seed_means"] + d.get("tuned_means", [])]


def plot(rows: list[dict], png: Path) -> None:
    """PSNR against 45 nm energy: one line per width over T, the rate_reg runs, the ANN twins."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        key = f"SNN w{r['width']} T{r['T']} reg" if "finetune_steps" in r else f"SNN w{r['width']} over T"
        series.setdefault(key, []).append((r["energy_45nm_j"]["snn"] * 1e6, r["psnr_snn"]))
    for width in dict.fromkeys(r["width"] for r in rows):
        r = next(x for x in rows if x["width"] == width)
        series[f"ANN w{width}"] = [(r["energy_45nm_j"]["ann"] * 1e6, r["psnr_ann"])]
    line_panel("PSNR (dB) against energy per 256x256 image (uJ, 45 nm ops)", series, size=(640, 340)).save(png)


MEAN_KEYS = ("psnr_snn", "ssim_snn", "psnr_ann", "psnr_qat", "firing_rate")
ENERGY_KEYS = ("energy_45nm_j", "energy_memory_aware_j", "energy_memory_aware_tiled_j")


def merge(files: list[str]) -> dict:
    """One result from per-seed sweeps of the same settings: rows tagged with their seed, and
    ``seed_means``, per converted (width, T), the mean +- std over seeds of PSNRs, rate and
    energies (the SNN's, the ANN's and their ratio)."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    first = parts[0]

    def grid(d: dict) -> list:
        return sorted((r["width"], r["T"]) for r in d["rows"] if "finetune_steps" not in r)

    for f, d in zip(files, parts):
        for key in ("protocol", "steps", "depth", "images", "seed"):
            if key not in d:
                raise SystemExit(f"{f} has no {key!r}: not a tradeoff_sweep result")
            if key != "seed" and d[key] != first[key]:
                raise SystemExit(f"{f}: {key} differs from {files[0]}'s; only sweeps of the same settings merge")
        if d.get("energy_inputs") != first.get("energy_inputs"):  # absent: measured on clean crops
            raise SystemExit(f"{f}: its energy was measured on other inputs than {files[0]}'s; "
                             "only sweeps of the same settings merge")
        if grid(d) != grid(first):  # every mean must be over every seed
            raise SystemExit(f"{f}: its (width, T) points {grid(d)} differ from {files[0]}'s {grid(first)}")
    seeds = [d["seed"] for d in parts]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the files repeat a seed: {seeds}")
    rows = [{**r, "seed": d["seed"]} for d in parts for r in d["rows"]]

    def tuned_key(r: dict) -> tuple:
        rr = r.get("rate_reg") or {}
        return r["width"], r["T"], r["finetune_steps"], rr.get("target"), rr.get("weight")

    points: dict[tuple, list[dict]] = {}
    tuned: dict[tuple, list[dict]] = {}
    for r in rows:
        if "finetune_steps" not in r:
            points.setdefault((r["width"], r["T"]), []).append(r)
        else:
            tuned.setdefault(tuned_key(r), []).append(r)

    def means_of(rs: list[dict], head: dict) -> dict:
        m = {**head, "seeds": [r["seed"] for r in rs]}
        m.update({k: mean_std([r[k] for r in rs]) for k in MEAN_KEYS if all(k in r for r in rs)})
        for k in ENERGY_KEYS:
            if all(k in r for r in rs):
                m[k] = {part: mean_std([r[k][part] for r in rs]) for part in ("snn", "ann", "snn_over_ann")}
        return m

    means = [means_of(rs, {"width": w, "T": T}) for (w, T), rs in points.items()]
    # a fine-tuned setting is averaged only when every seed ran it; otherwise its rows stay per seed
    tuned_means = []
    for rs in tuned.values():
        averaged = sorted(r["seed"] for r in rs) == sorted(seeds)
        for r in rs:
            r["averaged"] = averaged
        if averaged:
            tuned_means.append(means_of(rs, {k: rs[0].get(k) for k in ("width", "T", "finetune_steps", "rate_reg")}))
    return {"command": command_line(), "commands": {str(d["seed"]): d["command"] for d in parts},
            **{k: first.get(k) for k in ("protocol", "energy_inputs", "images", "steps", "depth", "tile_pixels",
                                         "rows_note")},
            "seeds": seeds, "rows": rows, "seed_means": means, "tuned_means": tuned_means,
            "machine": {str(d["seed"]): d["machine"] for d in parts}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                    help="join per-seed result files of the same settings into --json, train nothing")
    ap.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--width", type=int, nargs="+", default=[32])
    ap.add_argument("--width-T", nargs="*", default=[], metavar="WIDTH=T,T,...",
                    help="run only these T at this width (default: every --T)")
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ann", nargs="*", default=[], help="WIDTH=FILE: a ReLU twin already trained by this recipe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="runs/sweep")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/tradeoff.json")
    ap.add_argument("--png", default=None, help="default: the JSON path with .png")
    ap.add_argument("--rate-targets", type=float, nargs="*", default=[],
                    help="firing-rate targets of the rate regulariser (third axis; empty: skip)")
    ap.add_argument("--rate-weight", type=float, default=0.01)
    ap.add_argument("--rate-T", type=int, default=4)
    ap.add_argument("--rate-width", type=int, default=None, help="default: the first --width")
    ap.add_argument("--rate-steps", type=int, default=250)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON, train nothing")
    args = ap.parse_args()
    png = Path(args.png or Path(args.json).with_suffix(".png"))
    if args.merge:
        result = merge(args.merge)
        write_json(args.json, result)
        plot(plot_rows(result), png)
        print(json.dumps({"json": args.json, "png": str(png), "seeds": result["seeds"]}))
        return
    if args.plot_only:
        plot(plot_rows(json.loads(Path(args.json).read_text())), png)
        return
    torch.set_num_threads(args.threads)
    given = {int(k): v for k, v in (a.split("=", 1) for a in args.ann)}
    only_T = {int(k): [int(t) for t in v.split(",")] for k, v in (a.split("=", 1) for a in args.width_T)}

    heldout = builtin_images("heldout", gray=True)
    crops, energy_inputs = denoise_energy_inputs([_center_crop(im, 256) for _, im in heldout], 25.0)
    rows = []
    for width in args.width:
        ann_file = given.get(width) or trained(args, f"dncnn-w{width}", recipe(args, width, None))
        ann = load_model(ann_file, "cpu")
        assert isinstance(ann, DnCNN)
        ann_eval = evaluate_denoise(ann, heldout, 25.0, "cpu")["mean"]
        for T in only_T.get(width, args.T):
            qat_file = trained(args, f"dncnn-q{T}-w{width}", recipe(args, width, T))
            qat = load_model(qat_file, "cpu")
            qat_eval = evaluate_denoise(qat, heldout, 25.0, "cpu")["mean"]
            snn = SpikingDnCNN(in_channels=1, depth=args.depth, width=width, T=T, neuron_kwargs={"v_init": "half"})
            init_from_ann(snn, qat, torch.zeros(1, 1, 8, 8))
            rows.append(row(args, width, T, snn, ann, heldout, crops, ann_eval, {"psnr_qat": qat_eval["psnr"]}))
            if T != args.rate_T or width != (args.rate_width or args.width[0]) or not args.rate_targets:
                continue
            for target in [None, *args.rate_targets]:
                tag = "none" if target is None else f"{target:g}"
                cfg = finetune_recipe(args, width, T, qat_file, target)
                ft = load_model(trained(args, f"spiden-q{T}-w{width}-ft{args.rate_steps}-rr{tag}", cfg), "cpu")
                rate_reg = None if target is None else {"weight": args.rate_weight, "target": target}
                rows.append(row(args, width, T, ft, ann, heldout, crops, ann_eval,
                                {"finetune_steps": args.rate_steps, "rate_reg": rate_reg}))

    result = {
        "command": command_line(),
        "protocol": "builtin:heldout gray, sigma 25, seed 0 per image, unclipped noise, uint8 output; energy per "
                    "256x256 crop of the same images",
        "energy_inputs": energy_inputs,
        "images": [n for n, _ in heldout],
        "steps": args.steps, "depth": args.depth, "seed": args.seed, "tile_pixels": TILE_PIXELS,
        "rows_note": "rows without finetune_steps: QAT twin converted, no spike-domain training; rows with it: "
                     "that SNN fine-tuned in the spike domain (rate_reg null: no regulariser)",
        "rows": rows,
        "machine": machine_info(torch.device("cpu"), args.threads),
    }
    write_json(args.json, result)
    plot(rows, png)
    print(json.dumps({"json": args.json, "png": str(png)}))


if __name__ == "__main__":
    main()
