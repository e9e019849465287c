"""Do rain pixels drive stronger spikes (ESDNet's claim), beyond being bright?

    python benchmarks/rain_spikes.py --model esdnet-s --json benchmarks/results/rain_spikes.json
    python benchmarks/rain_spikes.py --model runs/seeds-esdnet-1k/snn-seed{0,1,2}/model.safetensors \
        --json benchmarks/results/rain_spikes_seeds.json     # one model per training seed

Samples: centre crops of ``builtin:heldout`` and ``builtin:val`` (never trained on), each with
synthetic rain at several seeds that training never drew (light and heavy alternate); the rain
mask comes from the generator. Per layer: rain-minus-background firing rate, raw and at matched
input brightness (``spikeir.analysis.matched_contrast``), with 95% bootstrap intervals over samples.
Several models (the same network trained with different seeds) are each measured on the same
samples; ``layers`` then summarises every layer over them: the mean and sample std of the
matched effect, and in how many models its interval lies above (``more_in``) or below
(``less_in``) zero. Per-model reports are kept under ``models``.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from _common import command_line, format_table, machine_info, mean_std, write_json
from spikeir.analysis import rain_spike_effect
from spikeir.data import builtin_images
from spikeir.io import load_model
from spikeir.rain import synth_rain


def over_models(reports: list[tuple[str, dict]]) -> dict:
    """Per layer, the effect across models trained with different seeds (same architecture)."""
    names = [r["name"] for r in reports[0][1]["layers"]]
    for m, rep in reports[1:]:
        if [r["name"] for r in rep["layers"]] != names:
            raise SystemExit(f"error: {m} has other spiking layers than {reports[0][0]}; "
                             "give models of one architecture (one per training seed)")
    layers = []
    for i, name in enumerate(names):
        rows = [rep["layers"][i] for _, rep in reports]
        matched = [r["matched"] for r in rows if r["matched"] is not None]
        ms = mean_std(matched) if matched else {"mean": None, "std": None}
        layers.append({
            "name": name, "models": len(rows), "matched": ms["mean"], "matched_std": ms["std"],
            "matched_per_model": [r["matched"] for r in rows], "raw": sum(r["raw"] for r in rows) / len(rows),
            "raw_per_model": [r["raw"] for r in rows],
            "more_in": sum(r["matched_ci"] is not None and r["matched_ci"][0] > 0 for r in rows),
            "less_in": sum(r["matched_ci"] is not None and r["matched_ci"][1] < 0 for r in rows),
            "raw_more_in": sum(r["raw_ci"] is not None and r["raw_ci"][0] > 0 for r in rows)})
    first = reports[0][1]
    return {"layers": layers, "models": [{"model": m, "layers": rep["layers"]} for m, rep in reports],
            "bins": first["bins"], "n_boot": first["n_boot"], "convention": first["convention"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["esdnet-s"],
                    help="a model, or one per training seed (summarised over them)")
    ap.add_argument("--seeds", type=int, default=3, help="rain seeds per image")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/rain_spikes.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = []
    for name, img in builtin_images("heldout", gray=False) + builtin_images("val", gray=False):
        h, w = img.shape[:2]
        c = min(args.crop, h, w)
        img = img[(h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c]
        for k in range(args.seeds):
            rainy, _, mask = synth_rain(img, ("light", "heavy")[k % 2], seed=10_000 + k)
            samples.append((f"{name}/{k}", torch.from_numpy(rainy).float().permute(2, 0, 1) / 255.0,
                            torch.from_numpy(mask)))
    reports = [(m, rain_spike_effect(load_model(m, "cpu"), samples)) for m in args.model]
    rep = reports[0][1] if len(reports) == 1 else over_models(reports)
    # which weights were measured (model files of a seed run are not shipped: their hashes are kept)
    rep["model_sha256"] = {m: hashlib.sha256(Path(m).read_bytes()).hexdigest() for m in args.model
                           if Path(m).is_file()}
    rep.update({"benchmark": "rain_spikes", "command": command_line(),
                "model": args.model[0] if len(args.model) == 1 else args.model,
                "samples": [n for n, _, _ in samples], "crop": args.crop,
                "machine": machine_info(torch.device("cpu"), args.threads)})
    write_json(args.json, rep)

    def ci(v):
        return "-" if v is None else f"[{v[0]:+.4f}, {v[1]:+.4f}]"

    if len(reports) == 1:
        rows = [[r["name"], f"{r['rate_rain']:.3f}", f"{r['rate_background']:.3f}", f"{r['raw']:+.4f}",
                 ci(r["raw_ci"]), "-" if r["matched"] is None else f"{r['matched']:+.4f}", ci(r["matched_ci"]),
                 r["verdict"]] for r in rep["layers"]]
        print(format_table(["layer", "rain", "bg", "raw", "95% CI", "matched", "95% CI", "verdict"], rows))
    else:
        def pm(r):
            std = "" if r["matched_std"] is None else f" +- {r['matched_std']:.4f}"
            return "-" if r["matched"] is None else f"{r['matched']:+.4f}{std}"

        rows = [[r["name"], f"{r['raw']:+.4f}", pm(r), f"{r['more_in']}/{r['models']}", f"{r['less_in']}/{r['models']}"]
                for r in rep["layers"]]
        print(format_table(["layer", "raw (mean)", "matched (mean +- std)", "more (CI > 0)", "less (CI < 0)"],
                           rows))
    print(f"{len(samples)} samples; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
