"""Where do the teacher's hints pull? Per-layer gradient norms of the hint term against the task loss.

Builds the student of ``distill_experiment.py`` exactly as its distilled arm starts (same recipe,
seed, command-line settings, adapters), and for the first ``--batches`` training batches takes two
gradients of the student's parameters: of the task loss (reconstruction + FFT amplitude term) and
of the hint term at its step-0 weight (``w_hint * sum of hints``); or the same at a distilled
run's checkpoint (``--checkpoint``). Reports each layer's mean norm
of both and their ratio: a ratio far above 1 means the hints, not the restoration loss, decide
where that layer moves first.

    python benchmarks/distill_gradients.py --width 32 --set model.bn=false \\
        --hints net.1:head_neuron net.4:body.1 --json benchmarks/results/distill_gradients.json

Takes every option of ``distill_experiment.py`` that shapes the student and its hints (the
experiment's training options are accepted and ignored).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line, machine_info, write_json  # noqa: E402
from distill_experiment import build_parser, student_config  # noqa: E402
from spikeir.distill import fft_amplitude_loss  # noqa: E402
from spikeir.models import build_model  # noqa: E402
from spikeir.train import TASKS, _loss_fn, _loss_spec, _make_distiller, resolve_model_cfg  # noqa: E402


def layer_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def gradient_norms(cfg: dict, batches: int, checkpoint: dict | None = None) -> dict:
    """Per layer (a module owning parameters): mean over ``batches`` batches of the task loss's and
    the weighted hint term's gradient norms, at the distilled arm's initial weights, or at a
    ``checkpoint`` of a distilled run (student and adapters as saved, the hint weight of its step,
    the batches it would train on next)."""
    seed = int(cfg["train"]["seed"])
    torch.manual_seed(seed)  # the order of train(): seeds, data, model, then the teacher's adapters
    np.random.seed(seed)
    random.seed(seed)
    task = TASKS[cfg.get("task", "denoise")](cfg["data"], seed)
    model_cfg = resolve_model_cfg(cfg["model"])
    model_cfg.setdefault("in_channels", task.channels)
    model = build_model(model_cfg)
    steps = int(cfg["train"]["steps"])
    dist = _make_distiller(cfg["distill"], model, task, torch.device("cpu"), steps)
    start = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        dist.load_state_dict(checkpoint["distill"])
        start = int(checkpoint["step"])
    model.train()
    dist.train()
    loss_fn = _loss_fn(_loss_spec(cfg.get("loss", "mse"))[0])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, list[float]] = {}
    for i in range(start, start + batches):
        noisy, clean = task.sampler.batch(i)
        with dist.capture():
            out = model(noisy)
        recon = loss_fn(out, clean)
        terms = dist.loss_terms(noisy, out, clean, recon, start, loss_fn)
        task_loss = recon + dist.fft_weight * fft_amplitude_loss(out, clean)
        hint_term = terms["loss"] - task_loss  # w_hint(0) * sum of hints (+ output term, if any)
        g_task = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
        g_hint = torch.autograd.grad(hint_term, params, allow_unused=True)
        per: dict[str, list[float]] = {}
        for n, a, b in zip(names, g_task, g_hint):
            acc = per.setdefault(layer_of(n), [0.0, 0.0])
            acc[0] += 0.0 if a is None else float(a.pow(2).sum())
            acc[1] += 0.0 if b is None else float(b.pow(2).sum())
        for layer, (a2, b2) in per.items():
            s = sums.setdefault(layer, [0.0, 0.0])
            s[0] += a2 ** 0.5 / batches
            s[1] += b2 ** 0.5 / batches
    layers = [{"layer": k, "task_grad": a, "hint_grad": b, "hint_over_task": (b / a) if a > 0 else None}
              for k, (a, b) in sums.items()]
    total_task = sum(r["task_grad"] ** 2 for r in layers) ** 0.5
    total_hint = sum(r["hint_grad"] ** 2 for r in layers) ** 0.5
    return {"layers": layers, "step": start, "hint_weight": float(terms["hint_weight"]),
            "total": {"task_grad": total_task, "hint_grad": total_hint,
                      "hint_over_task": total_hint / total_task if total_task > 0 else None}}


def main() -> None:
    ap = build_parser()
    ap.description = __doc__.splitlines()[0]
    ap.add_argument("--batches", type=int, default=4, help="training batches averaged over")
    ap.add_argument("--checkpoint", help="a distilled run's checkpoint (runs/X/checkpoints/step_*.pt): measure "
                                         "there, with the run's own config, instead of at the start")
    ap.set_defaults(json="benchmarks/results/distill_gradients.json")
    args = ap.parse_args()
    if args.batches < 1:
        raise SystemExit("--batches must be >= 1")
    torch.set_num_threads(args.threads)
    ck = None
    if args.checkpoint:
        try:
            ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise SystemExit(f"--checkpoint {args.checkpoint}: cannot read it ({type(e).__name__})") from None
        if not isinstance(ck, dict) or "distill" not in ck or "config" not in ck:
            raise SystemExit(f"--checkpoint {args.checkpoint}: not a checkpoint of a run with a distill section")
        cfg = ck["config"]
    else:
        cfg = student_config(args, args.seeds[0], True)
    try:
        res = gradient_norms(cfg, args.batches, ck)
    except ValueError as e:  # a wrong layer name, a teacher that is not an ANN, ...
        raise SystemExit(str(e)) from None
    seed = int(cfg["train"]["seed"])
    result = {"command": command_line(), "checkpoint": args.checkpoint, "seed": seed, "batches": args.batches,
              "student": cfg["model"],
              "distill": cfg["distill"], **res, "machine": machine_info(torch.device("cpu"), args.threads)}
    write_json(args.json, result)
    print(f"{'layer':<16} {'|g task|':>10} {'|g hint|':>10} {'hint/task':>10}")
    for r in res["layers"]:
        ratio = "-" if r["hint_over_task"] is None else f"{r['hint_over_task']:.3g}"
        print(f"{r['layer']:<16} {r['task_grad']:>10.3g} {r['hint_grad']:>10.3g} {ratio:>10}")
    print(json.dumps({"total": res["total"], "json": args.json}))


if __name__ == "__main__":
    main()
