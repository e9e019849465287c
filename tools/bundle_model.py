"""Bundle a finished training run as a package model, with its model card and run record.

    python tools/bundle_model.py runs/dncnn-s25 --name dncnn-s25 --recipe configs/dncnn-cpu-s25.yaml

Copies ``RUN/model.safetensors`` to ``src/spikeir/pretrained/NAME.safetensors``, the run's
``config.yaml``, ``run.json``, ``log.jsonl`` and ``curves.png`` to
``src/spikeir/pretrained/runs/NAME/``, and writes ``NAME.card.json``: data sources and their
licences, recipe, steps, training time and hardware, the evaluation protocol and scores on
``builtin:heldout`` (measured here, now, from the copied file), and the SHA-256 of the weights.
With ``--stage-run``, the earlier stage's record is shipped too and, when its model file is there,
its own held-out score and SHA-256 go into the card's ``stage`` (that file itself is not shipped).
Nothing already bundled is replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
import yaml

from spikeir.data import builtin_images, builtin_licence
from spikeir.evaluate import evaluate_denoise, evaluate_derain
from spikeir.io import PRETRAINED_DIR, atomic_output, load_model, write_json_atomic
from spikeir.models import is_spiking
from spikeir.rain import synthetic_rain_set
from spikeir.train import TASKS

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def training_seconds(log: list[dict]) -> float:
    """Time spent in training steps, from the logged throughput (validation excluded)."""
    total, prev = 0.0, 0
    for r in log:
        if "it_s" in r and r.get("it_s"):
            total += (r["step"] - prev) / r["it_s"]
            prev = r["step"]
        elif r.get("event") == "resume":
            prev = r["step"]
    return total


def evaluate_heldout(model, info: dict) -> tuple[list, dict, str]:
    """The card's scores: ``builtin:heldout`` under the task's test protocol."""
    if info.get("task") == "derain":
        heldout = builtin_images("heldout", gray=False)
        res = evaluate_derain(model, synthetic_rain_set("builtin:heldout", "mixed", seed=0), "cpu")
        protocol = ("builtin:heldout in colour with synthetic rain (preset mixed: light and heavy alternate, "
                    "seed 0 per image name; spikeir.rain.synthetic_rain_set), output clamped and rounded to uint8, "
                    "PSNR/SSIM on the BT.601 Y channel (spikeir.evaluate.evaluate_derain)")
    else:
        gray = bool(info.get("gray", True))
        heldout = builtin_images("heldout", gray=gray)
        res = evaluate_denoise(model, heldout, float(info.get("sigma", 25)), "cpu")
        protocol = (f"builtin:heldout, {'gray' if gray else 'colour'}, Gaussian noise sigma "
                    f"{info.get('sigma')}, generator seeded with 0 per image, unclipped float noise, output "
                    "clamped and rounded to uint8, PSNR/SSIM on 0..255 (spikeir.evaluate.evaluate_denoise)")
    return heldout, res, protocol


def read_log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]


RECORD_FILES = ("config.yaml", "run.json", "log.jsonl", "curves.png")


def copy_record(run: Path, dest: Path) -> None:
    """The run record (config, run.json, log, curves) into a fresh ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)  # nothing of an earlier bundle's record may outlive its model
    dest.mkdir(parents=True)
    for f in RECORD_FILES:
        if (run / f).is_file():
            shutil.copyfile(run / f, dest / f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--recipe", required=True, help="the config file in configs/ that trains this model")
    ap.add_argument("--stage-of", default=None,
                    help="the model or run this run was started from (train.init_from), if any")
    ap.add_argument("--stage-run", type=Path, default=None,
                    help="the run of that earlier stage: its record is shipped too (runs/NAME/stage1/)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the held-out evaluation")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    src = args.run / "model.safetensors"
    if not src.is_file():
        print(f"bundle_model: error: {src} does not exist (is the run finished?)", file=sys.stderr)
        return 2
    dst = PRETRAINED_DIR / f"{args.name}.safetensors"
    card_path = PRETRAINED_DIR / f"{args.name}.card.json"
    if args.stage_run is not None and not (args.stage_run / "log.jsonl").is_file():
        print(f"bundle_model: error: {args.stage_run / 'log.jsonl'} does not exist", file=sys.stderr)
        return 2
    if (dst.exists() or card_path.exists()) and not args.overwrite:
        print(f"bundle_model: error: {dst} exists (use --overwrite)", file=sys.stderr)
        return 2

    # everything is measured on the run's own file before anything in the package changes
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        model = load_model(src, "cpu")
        info = model.spikeir_info
        heldout, res, protocol = evaluate_heldout(model, info)
        stage_file = args.stage_run / "model.safetensors" if args.stage_run is not None else None
        # the earlier stage's own held-out score (its file is not shipped), so the card shows what the
        # last stage added
        stage_res = (evaluate_heldout(load_model(stage_file, "cpu"), info)[1]
                     if stage_file is not None and stage_file.is_file() else None)
    finally:
        torch.set_num_threads(threads)
    if (args.run / "run.json").is_file():
        run = json.loads((args.run / "run.json").read_text())
    else:  # a run from before run.json existed: its data list is rebuilt from its config, nothing else guessed
        cfg = yaml.safe_load((args.run / "config.yaml").read_text())
        task = TASKS[cfg.get("task", "denoise")](cfg["data"], int(cfg["train"]["seed"]))
        run = {"train_data": task.sources, "hardware": None, "git_revision": None, "versions": None,
               "note": "run record rebuilt at bundling time from config.yaml (the run predates run.json)"}
    stage = None
    if args.stage_run is not None:
        stage_log = read_log(args.stage_run)
        stage = {"run_record": f"pretrained/runs/{args.name}/stage1/",
                 "steps": max((r.get("step", 0) for r in stage_log), default=0),
                 "training_seconds": round(training_seconds(stage_log), 1)}
        if stage_res is not None:
            stage["heldout_mean"] = stage_res["mean"]
            stage["sha256"] = sha256(stage_file)
    train_names = [d["name"] for d in run.get("train_data", [])]
    card = {
        "name": args.name,
        "file": dst.name,
        "sha256": sha256(src),
        "task": info.get("task"),
        "model": info.get("model"),
        "params": sum(p.numel() for p in model.parameters()),
        "spiking": is_spiking(model),
        "recipe": args.recipe,
        "stage_of": args.stage_of,
        "stage": stage,  # the earlier stage's run (steps and time not included in steps/training_seconds)
        "train_config": info.get("train_config"),
        "steps": info.get("steps"),
        "training_seconds": round(training_seconds(read_log(args.run)), 1),
        "hardware": run.get("hardware"),
        "git_revision": run.get("git_revision"),
        "run_record_note": run.get("note"),
        "versions": run.get("versions"),
        "data": {
            "train": [{"name": n, "licence": builtin_licence(n)} for n in train_names],
            "train_sha256": {d["name"]: d["sha256"] for d in run.get("train_data", [])},
            "validation": "builtin:val (coffee, centre crop 256"
                          + (", synthetic rain)" if info.get("task") == "derain" else ")"),
            "heldout": [{"name": n, "licence": builtin_licence(n)} for n, _ in heldout],
        },
        "evaluation": {
            "protocol": protocol,
            "mean": res["mean"],
            "images": res["images"],
            "validation_at_end": info.get("val"),
        },
        "run_record": f"pretrained/runs/{args.name}/",
    }

    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    rec_dir = PRETRAINED_DIR / "runs" / args.name
    copy_record(args.run, rec_dir)
    if args.stage_run is not None:
        copy_record(args.stage_run, rec_dir / "stage1")
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)
    if sha256(dst) != card["sha256"]:
        raise SystemExit(f"bundle_model: error: {src} changed while it was being bundled")
    write_json_atomic(card_path, card, overwrite=True)
    print(f"bundled {args.name}: {dst} ({dst.stat().st_size / 1e6:.2f} MB), held-out PSNR "
          f"{res['mean']['psnr']:.2f} dB, card {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
