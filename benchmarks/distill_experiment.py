"""Does ANN-to-SNN feature distillation make a small spiking student train faster and better?

Trains the same spiking student twice per seed, on the built-in photos (sigma 25, gray), for the
same steps, batches and losses (L1 + FFT amplitude): once with the teacher's feature hints
(cosine-decayed hint weight), once without (hint weight 0, so the teacher is never run). Validation
PSNR on ``builtin:val`` is logged every ``--val-every`` steps; the target is the baseline's final
PSNR (mean over seeds), and ``steps_to_target`` is the first validation step at which each arm's
mean reaches it.

    python benchmarks/distill_experiment.py --json benchmarks/results/distill.json

Runs go to ``--runs``; with ``--reuse`` a finished run is kept and one cut short is resumed. Writes the JSON and
a PNG of validation PSNR against step for both arms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line, denoise_energy_inputs, machine_info, mean_std, train_or_reuse, write_json  # noqa: E402
from spikeir.config import apply_overrides, load_config  # noqa: E402
from spikeir.data import builtin_images  # noqa: E402
from spikeir.distill import HINT_NORMS, SCHEDULES  # noqa: E402
from spikeir.energy import count_parameters, measure  # noqa: E402
from spikeir.evaluate import evaluate_denoise  # noqa: E402
from spikeir.io import load_model  # noqa: E402
from spikeir.plots import line_panel, read_log  # noqa: E402
from spikeir.train import _center_crop  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "distill-spiking-student-cpu.yaml"


def student_config(args: argparse.Namespace, seed: int, distill: bool) -> dict:
    """``configs/distill-spiking-student-cpu.yaml`` with this run's seed and the command line's settings."""
    cfg = load_config(RECIPE)
    if args.student:
        cfg["model"] = {"preset": args.student, "T": args.T}
    else:
        cfg["model"].update({"depth": args.depth, "width": args.width, "T": args.T})
    cfg["data"]["batch_size"] = args.batch
    cfg["optim"]["lr"] = args.lr
    cfg["train"].update({"steps": args.steps, "seed": seed, "val_every": args.val_every,
                         "ckpt_every": max(args.val_every, 250), "threads": args.threads})
    cfg["distill"].update({"teacher": args.teacher, "hints": hint_pairs(args),
                           "hint_weight": args.hint_weight if distill else 0.0, "hint_schedule": args.hint_schedule,
                           "hint_until": args.hint_until, "hint_norm": args.hint_norm,
                           "output_weight": args.output_weight if distill else 0.0})
    if distill and args.hint_weight == 0 and args.output_weight > 0:  # output distillation alone: no adapters
        cfg["distill"]["hints"] = {}
    for item in args.set:  # a distill key would reach the baseline too: both arms distilled, or neither
        if item.split("=", 1)[0].strip().split(".")[0] == "distill":
            raise SystemExit(f"--set {item}: the distill section is the experiment's own (use --hint-weight, "
                             "--hint-norm, --hint-schedule, --hint-until, --output-weight, --hints or --teacher)")
    try:  # both arms get the same overrides, so they stay one recipe apart only in the teacher signal
        return apply_overrides(cfg, args.set)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def hint_pairs(args: argparse.Namespace) -> dict:
    """Teacher layer -> student layer: ``--hints`` when given; otherwise, for each fraction in
    ``--hint-at`` (default 1/4, 1/2, 3/4 and 1: the recipe's pairs for its sizes), the teacher ReLU at
    that fraction of all its ReLUs (the first one, ``net.1``, counted) hints the spiking DnCNN
    student's body neuron at that fraction of its body neurons (``head_neuron`` not counted). The
    two counts differ by one, so the pairs are one activation apart early on: ``net.4 -> body.3``,
    ``net.10 -> body.7``, ``net.19 -> body.11``, ``net.25 -> body.15`` at depth 10."""
    if args.hints:
        pairs = {}
        for pair in args.hints:
            t, sep, s = pair.partition(":")
            if not (sep and t and s):
                raise SystemExit(f"--hints takes TEACHER_LAYER:STUDENT_LAYER pairs, got {pair!r}")
            if t in pairs:
                raise SystemExit(f"--hints names teacher layer {t!r} twice")
            pairs[t] = s
        return pairs
    if args.student:
        raise SystemExit("--student needs --hints (the relative-depth rule knows only the spiking DnCNN's layers)")
    teacher = load_model(args.teacher, "cpu")
    relus = [n for n, m in teacher.named_modules() if isinstance(m, torch.nn.ReLU)]
    student_neurons = [f"body.{2 * i + 1}" for i in range(args.depth - 2)]
    pairs = {}
    for frac in args.hint_at:
        t = relus[max(0, round(frac * len(relus)) - 1)]
        s = student_neurons[max(0, round(frac * len(student_neurons)) - 1)]
        pairs[t] = s
    return pairs


def val_curve(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["val_psnr"]) for r in read_log(run) if "val_psnr" in r]


def hint_selection(args: argparse.Namespace) -> list[dict]:
    """Train (or reuse) the baseline and every ``--select`` setting on ``--select-seed``; their final
    validation PSNRs."""
    out = []
    for spec in ["baseline"] + list(args.select):
        a = argparse.Namespace(**vars(args))
        if spec != "baseline":
            try:
                w, a.hint_norm = spec.split(":")
                a.hint_weight = float(w)
            except ValueError:
                raise SystemExit(f"--select takes WEIGHT:NORM (e.g. 0.01:relative), got {spec!r}") from None
            if a.hint_norm not in HINT_NORMS:
                raise SystemExit(f"--select {spec}: the norm must be one of {', '.join(HINT_NORMS)}")
        name = "baseline" if spec == "baseline" else f"{a.hint_norm}-w{a.hint_weight:g}"
        run = Path(args.runs) / f"select-{name}-seed{args.select_seed}"
        train_or_reuse(run, student_config(a, args.select_seed, spec != "baseline"), args.reuse)
        out.append({"run": str(run), "seed": args.select_seed,
                    "hint_weight": 0.0 if spec == "baseline" else a.hint_weight,
                    "hint_norm": None if spec == "baseline" else a.hint_norm, "final_psnr": val_curve(run)[-1][1]})
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="dncnn-s25", help="a bundled ANN's name or a model file")
    ap.add_argument("--student", default=None, metavar="PRESET",
                    help="a spiking preset (e.g. spiking-unet-s) instead of the recipe's spiking DnCNN "
                         "(--depth/--width then do not apply); needs --hints")
    ap.add_argument("--hints", nargs="+", default=None, metavar="TEACHER:STUDENT",
                    help="hint pairs by layer name (e.g. decoders.2:decoders.1); replaces --hint-at")
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hint-weight", type=float, default=0.01)
    ap.add_argument("--hint-norm", default="relative", choices=HINT_NORMS)
    ap.add_argument("--hint-schedule", default="cosine", choices=SCHEDULES)
    ap.add_argument("--hint-at", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], metavar="FRACTION",
                    help="relative depths of the hinted layers (1.0: the last hidden layer)")
    ap.add_argument("--output-weight", type=float, default=0.0,
                    help="weight of the teacher's output as a second target (same schedule as the hints)")
    ap.add_argument("--hint-until", type=int, default=None, help="step where the hint weight reaches 0 "
                    "(default: the last step)")
    ap.add_argument("--arms", nargs="+", default=["baseline", "distill"], choices=("baseline", "distill"),
                    help="train only these arms (the summary needs both, trained or reused)")
    ap.add_argument("--train-only", action="store_true",
                    help="train the chosen arms and seeds and stop (to run arms in parallel processes; "
                         "a later call with --reuse writes the summary)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key in both arms (dotted, as spikeir train --set), "
                         "e.g. model.bn=false")
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="runs/distill-exp")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --runs")
    ap.add_argument("--select", nargs="+", default=[], metavar="WEIGHT:NORM",
                    help="hint settings tried on --select-seed before the experiment (e.g. 0.1:none 0.01:relative): "
                         "each is trained (or reused) with a baseline on that seed, and all go to the JSON as "
                         "'hint_selection', so the choice of the settings is on record")
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/distill.json")
    ap.add_argument("--png", default=None, help="default: the JSON path with .png")
    return ap


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)

    curves: dict[str, list[list[tuple[int, float]]]] = {"baseline": [], "distill": []}
    wall: dict[str, list[float]] = {"baseline": [], "distill": []}
    for seed in args.seeds:
        for arm in ("baseline", "distill"):
            run = Path(args.runs) / f"{arm}-seed{seed}"
            finished = (run / "model.safetensors").is_file()
            kept = arm not in args.arms  # trained by another call: summarised, never trained here
            if kept and args.train_only:
                continue
            if kept and not finished:
                raise SystemExit(f"{run} has not finished; train it (--arms {arm}) first")
            cfg = student_config(args, seed, arm == "distill")
            if finished and (kept or args.reuse):
                train_or_reuse(run, cfg, True)  # a kept run must have been trained by this recipe
            else:
                t0 = time.perf_counter()
                train_or_reuse(run, cfg, args.reuse)
                wall[arm].append(time.perf_counter() - t0)
            if not args.train_only:
                curves[arm].append(val_curve(run))
    if args.train_only:
        return

    mean: dict[str, list[tuple[int, float]]] = {}
    for arm, cs in curves.items():
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in cs)))
        mean[arm] = [(s, float(np.mean([dict(c)[s] for c in cs]))) for s in steps]
    target = mean["baseline"][-1][1]
    reach = {arm: next((s for s, p in m if p >= target), None) for arm, m in mean.items()}

    recipe = student_config(args, args.seeds[0], True)
    teacher = load_model(args.teacher, "cpu")
    student = load_model(Path(args.runs) / f"distill-seed{args.seeds[0]}" / "model.safetensors", "cpu")
    val_images = builtin_images("val", gray=True)
    images, energy_inputs = denoise_energy_inputs([im for _, im in val_images], float(recipe["data"]["sigma"]))
    rep = measure(student, images, twin=teacher)
    energy = rep.energy()
    val = [(n, _center_crop(im, 256)) for n, im in val_images]
    teacher_val = evaluate_denoise(teacher, val, 25, "cpu")["mean"]["psnr"]  # as the trainer validates
    result = {
        "command": command_line(),
        "steps": args.steps,
        "seeds": args.seeds,
        "target_psnr": target,
        "steps_to_target": reach,
        "final_psnr": {arm: m[-1][1] for arm, m in mean.items()},
        "final_psnr_per_seed": {arm: [c[-1][1] for c in cs] for arm, cs in curves.items()},
        # over seeds: each arm's final PSNR, and the paired difference distill - baseline per seed
        "final_psnr_stats": {**{arm: mean_std([c[-1][1] for c in cs]) for arm, cs in curves.items()},
                             "distill_minus_baseline": mean_std([d[-1][1] - b[-1][1] for d, b in
                                                                 zip(curves["distill"], curves["baseline"])])},
        "curves": {arm: m for arm, m in mean.items()},
        "curves_per_seed": {arm: {str(seed): c for seed, c in zip(args.seeds, cs)} for arm, cs in curves.items()},
        "params": {"teacher": count_parameters(teacher), "student": count_parameters(student)},
        "energy_45nm_j": {"teacher": energy["ops_45nm"]["ann_j"], "student": energy["ops_45nm"]["snn_j"],
                          "student_over_teacher": energy["ops_45nm"]["snn_over_ann"]},
        "energy_inputs": energy_inputs,
        "energy_memory_aware_j": {"teacher": energy["memory_aware"]["ann_j"],
                                  "student": energy["memory_aware"]["snn_j"],
                                  "student_over_teacher": energy["memory_aware"]["snn_over_ann"]},
        "student": recipe["model"],
        "distill": recipe["distill"],
        "teacher": args.teacher,
        "teacher_val_psnr": teacher_val,
        "hint_selection": hint_selection(args) if args.select else [],
        "wall_s": wall,
        "machine": machine_info(torch.device("cpu"), args.threads),
    }
    write_json(args.json, result)
    png = Path(args.png or Path(args.json).with_suffix(".png"))
    img = line_panel(f"validation PSNR (dB), student {result['params']['student']} params, mean of "
                     f"{len(args.seeds)} seed(s)", {k: v for k, v in mean.items()}, size=(640, 340))
    img.save(png)
    print(json.dumps({k: result[k] for k in ("steps_to_target", "final_psnr", "params", "energy_45nm_j")}, indent=1))


if __name__ == "__main__":
    main()
