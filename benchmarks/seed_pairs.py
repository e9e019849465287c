"""An SNN against its ANN twin over several seeds: the gap, its spread, and the energy ratio.

For each seed the spiking model and its ANN twin are trained by one recipe (same data, steps,
optimiser, loss; only the model differs), then evaluated on held-out images and measured with
:func:`spikeir.energy.measure` (the SNN at its measured firing rates, the twin on the same inputs):

* ``--pair spiden``: ``spiking_dncnn`` (IF, T steps) vs ``dncnn``, the recipe of the bundled twin
  (``configs/dncnn-cpu-s25.yaml``) at ``--width``/``--depth``; gray, sigma 25, ``builtin:heldout``.
  The SNN is trained as the bundled ``spiden-s25`` is (``--snn-recipe two-stage``, the default): a
  quantisation-aware twin for ``--steps`` steps, then ``--ft-steps`` steps of spike-domain BPTT
  from it (stage 2 of ``configs/spiden-cpu-s25.yaml``); the ANN gets ``--steps + --ft-steps``
  steps, so both see as many batches. ``--snn-recipe scratch`` trains the SNN from scratch by the
  ANN's recipe instead.
* ``--pair esdnet``: ``esdnet`` vs ``esdnet_ann``, the recipe of the bundled ``esdnet-s``
  (``configs/esdnet-small-cpu.yaml``) at ``--dim`` with one block per level; synthetic light and
  heavy rain (seed 20000, never drawn in training) over ``builtin:heldout``, Y-channel PSNR/SSIM.

    python benchmarks/seed_pairs.py --pair spiden --seeds 0 1 2 --json benchmarks/results/seeds_spiden.json
    python benchmarks/seed_pairs.py --pair esdnet --steps 1000 --seeds 0 1 2 --json benchmarks/results/seeds_esdnet.json

The summary gives mean and sample standard deviation over seeds of each PSNR and of the paired
gap (ANN - SNN, per seed), and of the energy ratios. Runs go to ``--runs`` (``--reuse`` keeps
finished runs and resumes cut ones).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    CONFIGS,
    command_line,
    denoise_energy_inputs,
    machine_info,
    mean_std,
    spiden_stage2_config,
    spiking_dncnn_model,
    train_or_reuse,
    write_json,
)
from spikeir.config import load_config  # noqa: E402
from spikeir.data import builtin_images  # noqa: E402
from spikeir.energy import measure  # noqa: E402
from spikeir.evaluate import evaluate_denoise, evaluate_derain  # noqa: E402
from spikeir.io import load_model  # noqa: E402
from spikeir.rain import synth_rain  # noqa: E402
from spikeir.train import _center_crop  # noqa: E402

RAIN_SEED = 20_000


def recipe(args: argparse.Namespace, spiking: bool, seed: int, quant: bool = False) -> dict:
    steps = args.steps
    if args.pair == "spiden":
        cfg = load_config(CONFIGS / "dncnn-cpu-s25.yaml")
        cfg["model"] = {"name": "dncnn", "in_channels": 1, "depth": args.depth, "width": args.width}
        if spiking:
            cfg["model"] = spiking_dncnn_model(args.width, args.depth, args.T)
        elif quant:
            cfg["model"]["quant_T"] = args.T
        elif args.snn_recipe == "two-stage":
            steps = args.steps + args.ft_steps  # as many batches as the SNN's two stages
    else:
        cfg = load_config(CONFIGS / "esdnet-small-cpu.yaml")
        blocks = {"en_num_blocks": [1, 1, 1], "de_num_blocks": [1, 1, 1]}
        cfg["model"] = ({"name": "esdnet", "dim": args.dim, "T": args.T, **blocks} if spiking
                        else {"name": "esdnet_ann", "dim": args.dim, **blocks})
        cfg["data"]["patch"] = args.patch
    cfg["train"].update({"steps": steps, "seed": seed, "threads": args.threads,
                         "val_every": steps, "ckpt_every": max(50, steps // 20)})
    cfg["sched"]["warmup"] = min(cfg["sched"].get("warmup", 0), steps // 10)
    return cfg


def finetune_recipe(args: argparse.Namespace, seed: int, init: Path) -> dict:
    """Stage 2 of spiden-s25: spike-domain BPTT from the quantisation-aware twin ``init``."""
    steps = args.ft_steps
    cfg = spiden_stage2_config(args.width, args.depth, args.T, init, steps, args.threads)
    cfg["train"].update({"seed": seed + 1000, "ckpt_every": max(50, steps // 20)})
    cfg["sched"]["warmup"] = min(cfg["sched"].get("warmup", 0), steps // 10)
    return cfg


def train_snn(args: argparse.Namespace, runs: Path, seed: int) -> tuple[Path, dict]:
    """The SNN of this seed (trained or reused) and the model config it was trained with."""
    if args.pair == "spiden" and args.snn_recipe == "two-stage":
        qat = train_or_reuse(runs / f"qat-seed{seed}", recipe(args, False, seed, quant=True), args.reuse)
        cfg = finetune_recipe(args, seed, qat)
        return train_or_reuse(runs / f"snn2-seed{seed}", cfg, args.reuse), cfg
    cfg = recipe(args, True, seed)
    return train_or_reuse(runs / f"snn-seed{seed}", cfg, args.reuse), cfg


def held_out(args: argparse.Namespace) -> tuple[list, list, str]:
    """The evaluation set, the 256x256 (or smaller, ``--crop``) crops energy is measured on (the
    inputs the network sees: noisy, or rainy), and a line saying which they are."""
    def crop(im):
        return im if args.eval_crop is None else _center_crop(im, args.eval_crop)

    if args.pair == "spiden":
        imgs = [(n, crop(im)) for n, im in builtin_images("heldout", gray=True)]
        crops, inputs = denoise_energy_inputs([_center_crop(im, args.crop) for _, im in imgs], 25.0)
        return imgs, crops, inputs
    triples = []
    for name, clean in builtin_images("heldout", gray=False):
        clean = crop(clean)
        for preset in ("light", "heavy"):
            triples.append((f"{name}/{preset}", synth_rain(clean, preset, seed=RAIN_SEED)[0], clean))
    return (triples, [_center_crop(r, args.crop) for _, r, _ in triples[::2]],
            f"light-rain inputs (seed {RAIN_SEED}), as the network sees them")


def evaluate(args: argparse.Namespace, model, data) -> dict:
    if args.pair == "spiden":
        return evaluate_denoise(model, data, 25.0, "cpu")["mean"]
    return evaluate_derain(model, data, "cpu")["mean"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=["spiden", "esdnet"], default="spiden")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="default: 800 (spiden), 1000 (esdnet)")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--snn-recipe", choices=["two-stage", "scratch"], default="two-stage",
                    help="spiden: how the SNN is trained (see above)")
    ap.add_argument("--ft-steps", type=int, default=200, help="spiden two-stage: spike-domain steps")
    ap.add_argument("--width", type=int, default=16, help="spiden: channels")
    ap.add_argument("--depth", type=int, default=10, help="spiden: layers")
    ap.add_argument("--dim", type=int, default=8, help="esdnet: channels of the first level")
    ap.add_argument("--patch", type=int, default=48, help="esdnet: training patch")
    ap.add_argument("--crop", type=int, default=256, help="energy: centre crop of each held-out image")
    ap.add_argument("--eval-crop", type=int, default=None, help="evaluate on centre crops (default: whole images)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=None, help="default: runs/seeds-PAIR")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--json", default=None, help="default: benchmarks/results/seeds_PAIR.json")
    args = ap.parse_args()
    args.steps = args.steps or (800 if args.pair == "spiden" else 1000)
    runs = Path(args.runs or f"runs/seeds-{args.pair}")
    out = args.json or f"benchmarks/results/seeds_{args.pair}.json"
    torch.set_num_threads(args.threads)
    data, crops, energy_inputs = held_out(args)

    rows = []
    for seed in args.seeds:
        row: dict = {"seed": seed}
        models = {}
        for kind, spiking in (("snn", True), ("ann", False)):
            t0 = time.perf_counter()
            if spiking:
                path, cfg = train_snn(args, runs, seed)
            else:
                cfg = recipe(args, False, seed)
                path = train_or_reuse(runs / f"{kind}-seed{seed}", cfg, args.reuse)
            models[kind] = load_model(path, "cpu")
            ev = evaluate(args, models[kind], data)
            row[kind] = {"psnr": ev["psnr"], "ssim": ev["ssim"], "firing_rate": ev["firing_rate"],
                         "params": sum(p.numel() for p in models[kind].parameters()),
                         "seconds": round(time.perf_counter() - t0, 1), "model": cfg["model"]}
        row["gap_db"] = row["ann"]["psnr"] - row["snn"]["psnr"]
        e = measure(models["snn"], crops, twin=models["ann"]).energy()
        row["energy_snn_over_ann"] = {"ops_45nm": e["ops_45nm"]["snn_over_ann"],
                                      "memory_aware": e["memory_aware"]["snn_over_ann"]}
        rows.append(row)
        print(f"seed {seed}: SNN {row['snn']['psnr']:.2f} dB (rate {row['snn']['firing_rate']:.3f}), ANN "
              f"{row['ann']['psnr']:.2f} dB, gap {row['gap_db']:.2f} dB, SNN/ANN energy 45nm "
              f"{row['energy_snn_over_ann']['ops_45nm']:.3f}", flush=True)

    summary = {
        "psnr_snn": mean_std([r["snn"]["psnr"] for r in rows]),
        "psnr_ann": mean_std([r["ann"]["psnr"] for r in rows]),
        "gap_db": mean_std([r["gap_db"] for r in rows]),
        "firing_rate": mean_std([r["snn"]["firing_rate"] for r in rows]),
        "energy_snn_over_ann_45nm": mean_std([r["energy_snn_over_ann"]["ops_45nm"] for r in rows]),
        "energy_snn_over_ann_memory_aware": mean_std([r["energy_snn_over_ann"]["memory_aware"] for r in rows]),
    }
    protocol = ("builtin:heldout gray, sigma 25, seed 0 per image; uint8 output" if args.pair == "spiden" else
                f"synthetic light+heavy rain (seed {RAIN_SEED}) over builtin:heldout; uint8 output; BT.601 Y")
    snn_recipe = args.snn_recipe if args.pair == "spiden" else "scratch"
    result = {"benchmark": f"seed_pairs/{args.pair}", "command": command_line(),
              "pair": args.pair, "seeds": args.seeds, "steps": args.steps, "T": args.T, "protocol": protocol,
              "snn_recipe": snn_recipe, "ft_steps": args.ft_steps if snn_recipe == "two-stage" else None,
              "energy_crop": args.crop, "energy_inputs": energy_inputs, "rows": rows, "summary": summary,
              "machine": machine_info(torch.device("cpu"), args.threads)}
    write_json(out, result)
    g = summary["gap_db"]
    print(f"gap ANN - SNN over {len(rows)} seeds: {g['mean']:.2f} +- {g['std'] or 0:.2f} dB; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
