"""With and without BatchNorm: pairs of finished training runs that differ only in ``model.bn``.

Each ``--pair LABEL=WITH_BN,WITHOUT_BN`` names two runs of one recipe, each a run folder
(``config.yaml``, ``log.jsonl``, ``model.safetensors``), ``bundled:NAME`` (a bundled model: its
shipped weights and run record) or ``bundled:NAME:stage`` (the first stage of a two-stage model:
its shipped record, and the held-out score its model card recorded). The script checks that the
two configs differ in ``model.bn`` only (the thread count, and a stage-2 run's
``train.init_from``, may differ too; the JSON lists every difference), reads each run's
validation curve from its log, scores each model on ``builtin:heldout`` under the denoising test
protocol (seed 0 per image, unclipped noise, uint8 output) and writes JSON.

    python benchmarks/batchnorm_ablation.py \\
        --pair ann=bundled:dncnn-s25,runs/dncnn-nobn --json benchmarks/results/batchnorm.json

Train the runs first, e.g. ``spikeir train configs/dncnn-cpu-s25.yaml --set model.bn=false
--out runs/dncnn-nobn``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from _common import command_line, write_json
from spikeir.data import builtin_images
from spikeir.evaluate import evaluate_denoise
from spikeir.io import PRETRAINED_DIR, load_model, model_card
from spikeir.models import build_model
from spikeir.plots import read_log
from spikeir.train import resolve_model_cfg

# keys that may differ between the arms without making them different experiments
_FREE = {("train", "threads"), ("train", "init_from")}


def _source(spec: str) -> dict:
    """Run folder, config, log and model file (or ``None``) behind one ``--pair`` entry."""
    if spec.startswith("bundled:"):
        name, _, part = spec.removeprefix("bundled:").partition(":")
        card = model_card(name)
        if card is None:
            raise SystemExit(f"batchnorm_ablation: error: no bundled model named {name!r}")
        if part == "stage":  # the first stage: its record ships, its weights do not, its score is on the card
            if not card.get("stage"):
                raise SystemExit(f"batchnorm_ablation: error: {name} has no earlier stage on its card")
            record = PRETRAINED_DIR / card["stage"]["run_record"].removeprefix("pretrained/")
            return {"spec": spec, "record": record, "model": None, "card_heldout": card["stage"].get("heldout_mean")}
        if part:
            raise SystemExit(f"batchnorm_ablation: error: {spec}: only 'bundled:NAME' or 'bundled:NAME:stage'")
        record = PRETRAINED_DIR / card["run_record"].removeprefix("pretrained/")
        return {"spec": spec, "record": record, "model": PRETRAINED_DIR / card["file"]}
    run = Path(spec)
    if not (run / "config.yaml").is_file() or not (run / "log.jsonl").is_file():
        raise SystemExit(f"batchnorm_ablation: error: {spec} is not a run folder (config.yaml and log.jsonl)")
    if not any(r.get("event") == "end" for r in read_log(run)):
        raise SystemExit(f"batchnorm_ablation: error: {spec} has not finished (no end event in its log)")
    model = run / "model.safetensors"
    return {"spec": spec, "record": run, "model": model if model.is_file() else None}


def config_differences(a: dict, b: dict) -> list[str]:
    """Dotted keys (two levels) whose values differ between two run configs."""
    out = []
    for sec in sorted(set(a) | set(b)):
        x, y = a.get(sec), b.get(sec)
        if isinstance(x, dict) and isinstance(y, dict):
            out += [f"{sec}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(sec)
    return out


def val_curve(run: Path) -> list[list[float]]:
    """``[step, val_psnr]`` for every validation in a run's log."""
    return [[int(r["step"]), float(r["val_psnr"])] for r in read_log(run) if "val_psnr" in r]


def first_step_at(curve: list[list[float]], target: float) -> int | None:
    return next((s for s, p in curve if p >= target), None)


def _config(src: dict) -> dict:
    cfg = yaml.safe_load((src["record"] / "config.yaml").read_text())
    if cfg.get("task", "denoise") != "denoise":
        raise SystemExit(f"batchnorm_ablation: error: {src['spec']} is a {cfg['task']} run; only denoising runs")
    return cfg


def arm(src: dict, cfg: dict, model_cfg: dict, images, device: torch.device) -> dict:
    """One run: its size, validation curve and held-out score (at the run's own sigma);
    ``model_cfg`` is its resolved model config."""
    curve = val_curve(src["record"])
    out = {"source": src["spec"], "bn": bool(model_cfg.get("bn", True)),
           "params": sum(p.numel() for p in build_model(model_cfg).parameters()), "steps": int(cfg["train"]["steps"]),
        "val_curve": curve, "val_final": curve[-1][1] if curve else None, "heldout": None}
    if src["model"] is not None:
        res = evaluate_denoise(load_model(src["model"], device), images, float(cfg["data"]["sigma"]), device)
        out["heldout"] = {k: res["mean"][k] for k in ("psnr", "ssim", "firing_rate")}
        out["heldout_from"] = "measured now"
    elif src.get("card_heldout"):  # measured by tools/bundle_model.py under the same protocol
        out["heldout"] = {k: src["card_heldout"].get(k) for k in ("psnr", "ssim", "firing_rate")}
        out["heldout_from"] = "model card"
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", action="append", required=True, metavar="LABEL=WITH_BN,WITHOUT_BN",
                    help="two runs of one recipe, with and without BatchNorm (repeatable)")
    ap.add_argument("--json", default="benchmarks/results/batchnorm.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    pairs = {}
    for spec in args.pair:
        label, sep, runs = spec.partition("=")
        parts = runs.split(",")
        if not sep or len(parts) != 2 or not label:
            raise SystemExit(f"batchnorm_ablation: error: --pair wants LABEL=WITH_BN,WITHOUT_BN, got {spec!r}")
        pairs[label] = [_source(p) for p in parts]

    images = builtin_images("heldout", gray=True)
    result = {"command": command_line(None if argv is None else ["benchmarks/batchnorm_ablation.py", *argv]),
              "protocol": "builtin:heldout gray, each run's sigma, seed 0 per image, unclipped noise, uint8 output; "
                          "validation curves from each run's log (builtin:val crop)",
              "threads": args.threads, "pairs": {}}
    for label, (src_bn, src_nobn) in pairs.items():
        cfg_a, cfg_b = _config(src_bn), _config(src_nobn)
        model_a, model_b = resolve_model_cfg(cfg_a["model"]), resolve_model_cfg(cfg_b["model"])
        bn_a, bn_b = bool(model_a.get("bn", True)), bool(model_b.get("bn", True))
        if not bn_a or bn_b:
            raise SystemExit(f"batchnorm_ablation: error: pair {label!r}: the first run must have BatchNorm "
                             f"and the second not (got bn={bn_a}, {bn_b})")
        diff = config_differences(cfg_a, cfg_b)
        others = [d for d in diff if d != "model" and d != "model.bn" and tuple(d.split(".", 1)) not in _FREE]
        same_model = {**model_a, "bn": None} == {**model_b, "bn": None}
        if others or not same_model:
            raise SystemExit(f"batchnorm_ablation: error: pair {label!r} differs in more than BatchNorm: "
                             f"{', '.join(others) or 'model'}")
        with_bn = arm(src_bn, cfg_a, model_a, images, device)
        without = arm(src_nobn, cfg_b, model_b, images, device)
        row = {"with_bn": with_bn, "without_bn": without, "config_differences": diff,
               "val_gain": without["val_final"] - with_bn["val_final"],
               "steps_to_bn_final": first_step_at(without["val_curve"], with_bn["val_final"])}
        if with_bn["heldout"] and without["heldout"]:
            row["heldout_gain"] = without["heldout"]["psnr"] - with_bn["heldout"]["psnr"]
        result["pairs"][label] = row
        h = f", held-out {row['heldout_gain']:+.2f} dB" if "heldout_gain" in row else ""
        print(f"{label}: validation {with_bn['val_final']:.2f} -> {without['val_final']:.2f} dB without BatchNorm"
              f"{h}; the BN run's final PSNR reached at step {row['steps_to_bn_final']} of {with_bn['steps']}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
