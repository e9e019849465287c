"""Speed and memory of spikeir's ESDNet and SpikingDnCNN against SpikingJelly 2.0.0 versions of the
same networks (``benchmarks/sj_reference.py``) and against their ANN twins.

Cases (each timed for every variant; SpikingJelly variants are skipped with a note when it cannot
be imported):

* ``esdnet_infer``: the released ESDNet (dim 48, blocks [4,4,8]/[2,2,2], T=4), eval mode, one RGB
  image; variants ``spikeir``, ``spikeir_folded`` (:meth:`ESDNet.fold_bn`),
  ``spikeir_folded_compiled`` (also inside :func:`spikeir.neurons.compiled_inference`),
  ``spikingjelly``, ``ann`` (:class:`ESDNetANN`);
* ``esdnet_train``: one training step (L1 loss, AdamW) on a batch of RGB crops; variants
  ``spikeir``, ``spikeir_ckpt_attn`` (``checkpoint_attention=True``), ``spikeir_ckpt``
  (``checkpoint_blocks=True``), ``spikeir_compact`` (forward inside
  :func:`spikeir.neurons.compact_spike_storage`: saved spikes as bool), ``spikeir_compact_ckpt_attn``
  (both), ``spikingjelly``, ``ann``;
* ``dncnn_infer`` / ``dncnn_train``: the ``spiden`` preset (17 layers, 64 channels, T=4) on gray
  images; variants ``spikeir``, ``spikeir_compact`` (training), ``spikeir_compiled`` (inference),
  ``spikingjelly``, ``ann`` (:class:`DnCNN`);
* ``tiled``: ``spikeir.tiling.tiled_forward`` of ESDNet on large images: peak RSS growth at two
  image sizes and for a single tile (the memory bound).

Before timing, checks: the SpikingJelly ESDNet against the shared parity fixture (float64),
spikeir against SpikingJelly on the same weights (eval outputs in float32 at the benchmark size;
outputs and all gradients in float64 on a small configuration), and the optimised spikeir paths
against the plain one. All max abs differences go to the JSON.

Timing: all variants of a case in one subprocess, interleaved (each repeat runs every variant
once, rotating the order), median after warm-up, plus the median of per-repeat ratios. Memory:
one fresh subprocess per (case, variant): peak RSS growth over the steps (CUDA:
``torch.cuda.max_memory_allocated`` growth) and, for training, the bytes autograd saves.

    python benchmarks/bench_esdnet.py --threads 1 --json benchmarks/results/esdnet_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    RESULT_TAG,
    SavedTensorMeter,
    command_line,
    format_table,
    machine_info,
    memory_probe,
    mib,
    resolve_device,
    spawn_worker,
    summarize,
    sync,
    time_interleaved,
    write_json,
)
from spikeir.models import PRESETS, DnCNN, ESDNet, ESDNetANN, SpikingDnCNN  # noqa: E402
from spikeir.neurons import compact_spike_storage, compiled_inference  # noqa: E402

FIXTURE = HERE.parents[1] / "shared" / "fixtures" / "esdnet_reference_small.safetensors"
ESDNET = {k: v for k, v in PRESETS["esdnet"].items() if k != "name"}
ESDNET_SMALL = {k: v for k, v in PRESETS["esdnet-small"].items() if k != "name"}
SPIDEN = {k: v for k, v in PRESETS["spiden"].items() if k != "name"}
CASES = {
    "esdnet_infer": ("spikeir", "spikeir_folded", "spikeir_folded_compiled", "spikingjelly", "ann"),
    "esdnet_train": ("spikeir", "spikeir_ckpt_attn", "spikeir_ckpt", "spikeir_compact", "spikeir_compact_ckpt_attn",
                     "spikingjelly", "ann"),
    "dncnn_infer": ("spikeir", "spikeir_compiled", "spikingjelly", "ann"),
    "dncnn_train": ("spikeir", "spikeir_compact", "spikingjelly", "ann"),
}
SJ_VARIANTS = {"spikingjelly"}


def sj_version() -> str | None:
    try:
        from importlib.metadata import version

        import sj_reference  # noqa: F401

        return version("spikingjelly")
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None


# ----------------------------------------------------------------------------- models


@torch.no_grad()
def perturb(model: nn.Module, seed: int) -> nn.Module:
    """Move every parameter and BN buffer off its initial value (as the parity fixture does), so
    that BN folding, running statistics and spike patterns are not trivial."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.empty(t.shape).uniform_(0.5, 2.0, generator=g))
        elif not name.endswith("v_threshold"):
            t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model


def build(family: str, variant: str, cfg: dict, dtype=torch.float32, small: bool = False) -> nn.Module:
    """The model of ``variant``: spikeir and SpikingJelly share the (perturbed) spikeir weights."""
    if family == "esdnet":
        arch = ESDNET_SMALL if small else ESDNET
        if variant == "ann":
            torch.manual_seed(cfg["seed"])
            return perturb(ESDNetANN(**{k: v for k, v in arch.items() if k != "T"}), cfg["seed"])
        torch.manual_seed(cfg["seed"])
        base = perturb(ESDNet(**arch, checkpoint_blocks=variant == "spikeir_ckpt",
                              checkpoint_attention=variant.endswith("ckpt_attn")), cfg["seed"])
    else:
        arch = {**SPIDEN, "depth": 5, "width": 16} if small else SPIDEN
        if variant == "ann":
            torch.manual_seed(cfg["seed"])
            return perturb(DnCNN(**{k: v for k, v in arch.items() if k != "T"}), cfg["seed"])
        torch.manual_seed(cfg["seed"])
        base = perturb(SpikingDnCNN(**arch), cfg["seed"])
    base = base.to(dtype)
    if variant == "spikingjelly":
        import sj_reference

        cls = sj_reference.SJESDNet if family == "esdnet" else sj_reference.SJSpikingDnCNN
        ref = cls(**{k: v for k, v in arch.items() if k != "neuron_kwargs"}).to(dtype)
        ref.load_state_dict(base.state_dict(), strict=True)
        return ref
    return base


def reset_fn(variant: str):
    if variant not in SJ_VARIANTS:
        return lambda m: None
    import sj_reference

    return sj_reference.reset


def forward(model: nn.Module, x: torch.Tensor, variant: str) -> torch.Tensor:
    """The model's forward, inside :func:`compact_spike_storage` for the ``*compact*`` variants and
    :func:`compiled_inference` for the ``*compiled*`` ones."""
    compact = compact_spike_storage() if "compact" in variant else nullcontext()
    with compact, compiled_inference("compiled" in variant):
        return model(x)


def make_data(family: str, batch: int, size: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 1)
    c = 3 if family == "esdnet" else 1
    clean = torch.rand(batch, c, size, size, generator=g, dtype=torch.float64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return noisy.to(dtype), clean.to(dtype)


class Task:
    """One (case, variant): ``step()`` is one timed unit (a no-grad forward, or forward +
    backward + AdamW step)."""

    def __init__(self, case: str, variant: str, cfg: dict, device: torch.device) -> None:
        family, mode = case.split("_")
        self.train, self.reset, self.variant = mode == "train", reset_fn(variant), variant
        model = build(family, variant, cfg)
        if variant.startswith("spikeir_folded"):
            model = model.fold_bn()
        self.model = model.to(device).train(self.train)
        batch, size = (cfg["train_batch"], cfg[f"{family}_train_size"]) if self.train else (1, cfg[f"{family}_size"])
        x, y = make_data(family, batch, size, cfg["seed"])
        self.x, self.y = x.to(device), y.to(device)
        if self.train:
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.01)

    def step(self) -> float:
        if not self.train:
            with torch.no_grad():
                out = forward(self.model, self.x, self.variant)
            self.reset(self.model)
            return float(out.abs().mean())
        self.opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(forward(self.model, self.x, self.variant), self.y)
        loss.backward()
        self.opt.step()
        self.reset(self.model)
        return loss.item()

    def saved_bytes(self) -> int:
        meter = SavedTensorMeter()
        with meter.record():
            loss = F.l1_loss(self.model(self.x), self.y)
        del loss
        self.reset(self.model)
        if "compact" not in self.variant:
            return meter.nbytes
        # the meter cannot see inside compact_spike_storage's own hooks: the plain graph's bytes
        # less what compaction saved (each spike tensor is saved once, by the conv after it)
        with compact_spike_storage() as stats:
            loss = F.l1_loss(self.model(self.x), self.y)
        del loss
        return meter.nbytes - stats.bytes_saved


# ----------------------------------------------------------------------------- workers



def memory_worker(spec: dict, device: torch.device) -> dict:
    cfg = spec["cfg"]
    task = Task(spec["case"], spec["variant"], cfg, device)
    if "compiled" in spec["variant"]:
        task.step()  # compiling is once per process: measure the steady state, not the compiler
    read = memory_probe(device)
    value = [task.step() for _ in range(cfg["memory_steps"])][0]
    sync(device)
    res = read()
    res["first_value"] = value
    if task.train:
        res["saved_bytes"] = task.saved_bytes()
    return res


def timing_worker(spec: dict, device: torch.device) -> dict:
    cfg = spec["cfg"]
    tasks, errors = {}, {}
    for v in spec["variants"]:
        try:
            tasks[v] = Task(spec["case"], v, cfg, device)
        except Exception as e:  # noqa: BLE001 - report and time the others
            errors[v] = f"{type(e).__name__}: {e}"
    return time_interleaved(tasks, errors, cfg["warmup"], cfg["repeats"], device)


def tiled_worker(spec: dict, device: torch.device) -> dict:
    """Peak RSS growth of a tiled no-grad ESDNet forward of a ``size x size`` image (``size=0``:
    one tile alone, the per-tile working set)."""
    from spikeir.tiling import tiled_forward

    cfg = spec["cfg"]
    torch.manual_seed(cfg["seed"])
    model = perturb(ESDNet(**(ESDNET if spec["model"] == "esdnet" else ESDNET_SMALL)), cfg["seed"]).eval().to(device)
    size = spec["size"] or cfg["tile"]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    read = memory_probe(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = tiled_forward(model, x, tile=cfg["tile"], overlap=cfg["overlap"])
    sync(device)
    res = read()
    res.update(time_s=time.perf_counter() - t0, image_bytes=x.numel() * x.element_size(),
               finite=bool(torch.isfinite(y).all()))
    return res


def _op_kind(name: str) -> str:
    if "conv" in name:
        return "convolution"
    if name.startswith("aten::") or name.startswith("Optimizer.") or name.startswith("autograd::"):
        return "other aten"
    return "python-level"  # autograd Functions (spikeir's neurons, SpikingJelly's surrogate) and hooks


def profile_worker(spec: dict, device: torch.device) -> dict:
    """Where one variant's time goes: self CPU time per operator over ``repeats`` timed units
    (after warm-up), grouped into convolutions and the rest, plus the top operators."""
    from torch.profiler import ProfilerActivity, profile

    cfg = spec["cfg"]
    task = Task(spec["case"], spec["variant"], cfg, device)
    for _ in range(cfg["warmup"]):
        task.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(cfg["repeats"]):
            task.step()
    ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in ops)
    kinds: dict[str, float] = {}
    for name, t in ops:
        kind = _op_kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + t / total
    top = sorted(ops, key=lambda o: -o[1])[:8]
    return {"self_cpu_s": total / 1e6 / cfg["repeats"], "share": kinds,
            "top_ops": [{"op": n, "share": t / total} for n, t in top]}


def worker_main(spec: dict) -> None:
    torch.set_num_threads(spec["cfg"]["threads"])
    device = torch.device(spec["cfg"]["device"])
    job = {"memory": memory_worker, "timing": timing_worker, "tiled": tiled_worker,
           "profile": profile_worker}[spec["job"]]
    print(RESULT_TAG + json.dumps(job(spec, device)), flush=True)


def spawn(spec: dict) -> dict:
    return spawn_worker(__file__, spec)


# ----------------------------------------------------------------------------- checks


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def fixture_check(has_sj: bool) -> dict:
    """SpikingJelly and spikeir ESDNets on the release parity fixture, float64."""
    if not FIXTURE.is_file():
        return {"status": "skipped", "reason": f"fixture not found at {FIXTURE}"}
    from safetensors.torch import load_file

    from spikeir.release import load_esdnet_release

    ref = load_file(str(FIXTURE))
    state = {k[6:]: v for k, v in ref.items() if k.startswith("state.")}
    out = {"status": "ran", "fixture": str(FIXTURE)}
    models = {"spikeir": lambda: load_esdnet_release(state).double()}
    if has_sj:
        import sj_reference
        from spikeir.release import esdnet_config_from_state

        def make_sj():
            m = sj_reference.SJESDNet(**esdnet_config_from_state(state)).double()
            m.load_state_dict(state, strict=True)
            return m

        models["spikingjelly"] = make_sj
    for name, make in models.items():
        reset = reset_fn(name)
        m = make().eval()
        with torch.no_grad():
            ev = m(ref["input"])
        reset(m)
        m = make().train()
        x = ref["input"].clone().requires_grad_(True)
        tr = m(x)
        (tr * ref["grad_weight"]).sum().backward()
        reset(m)
        out[name] = {"output_eval": _maxdiff(ev, ref["output_eval"]), "output_train": _maxdiff(tr, ref["output_train"]),
                     "grad_input": _maxdiff(x.grad, ref["grad_input"]),
                     "grad_patch_embed": _maxdiff(m.patch_embed.proj.weight.grad, ref["grad_patch_embed"])}
    out["max_abs_diff"] = max(v for k in models for v in out[k].values())
    out["passed"] = out["max_abs_diff"] < 1e-8
    return out


def _run_train(model: nn.Module, x: torch.Tensor, g: torch.Tensor, reset, variant: str = "spikeir"
               ) -> tuple[torch.Tensor, dict]:
    x = x.clone().requires_grad_(True)
    out = forward(model.train(), x, variant)
    (out * g).sum().backward()
    reset(model)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    grads["<input>"] = x.grad
    return out.detach(), grads


def agreement_checks(cfg: dict, has_sj: bool) -> dict:
    """Eval outputs in float32 at the benchmark size (the timed configuration), train-mode
    outputs and all gradients in float64 on a small configuration; against plain spikeir."""
    res: dict = {}
    for family in ("esdnet", "dncnn"):
        size = cfg[f"{family}_size"] if not cfg["quick"] else min(cfg[f"{family}_size"], 64)
        x, _ = make_data(family, 1, size, cfg["seed"])
        others = ((["spikeir_folded", "spikeir_folded_compiled"] if family == "esdnet" else ["spikeir_compiled"])
                  + (["spikingjelly"] if has_sj else []))
        base = build(family, "spikeir", cfg).eval()
        with torch.no_grad():
            y = base(x)
        f32 = {"input_size": size}
        for v in others:
            m = build(family, v, cfg).eval()
            if v.startswith("spikeir_folded"):
                m = m.fold_bn()
            with torch.no_grad():
                f32[v] = _maxdiff(forward(m, x, v), y)
            reset_fn(v)(m)
        # float64: outputs in train mode and every gradient (same names on both sides)
        xs, _ = make_data(family, 2, 32 if family == "esdnet" else 16, cfg["seed"], torch.float64)
        g = torch.randn(xs.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        y64, g64 = _run_train(build(family, "spikeir", cfg, torch.float64, small=True), xs, g, lambda m: None)
        small = "esdnet-small" if family == "esdnet" else "spiden, depth 5, width 16"
        f64: dict = {"input_size": xs.shape[-1], "config": small}
        opt = [v for v in CASES[f"{family}_train"] if v.startswith("spikeir_")]
        for v in opt + (["spikingjelly"] if has_sj else []):
            o, gr = _run_train(build(family, v, cfg, torch.float64, small=True), xs, g, reset_fn(v), v)
            common = [k for k in g64 if k in gr]
            f64[v] = {"output_train": _maxdiff(o, y64),
                      "max_abs_grad_diff": max(_maxdiff(gr[k], g64[k]) for k in common),
                      "grads_compared": len(common),
                      "grads_not_compared": sorted(set(g64) - set(gr))}
        res[family] = {"float32_eval_max_abs_diff_vs_spikeir": f32, "float64_train_vs_spikeir": f64}
    return res


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="benchmarks/results/esdnet_bench.json", help="output JSON path")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="smaller images, fewer repeats (about 15 min on 2 CPU cores)")
    p.add_argument("--cases", default=",".join([*CASES, "tiled"]),
                   help="comma-separated subset; 'profile' (not in the default) adds where ESDNet's time goes")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-steps", type=int, default=1)
    p.add_argument("--esdnet-size", type=int, default=256, help="inference image side")
    p.add_argument("--esdnet-train-size", type=int, default=64, help="training crop side")
    p.add_argument("--dncnn-size", type=int, default=256)
    p.add_argument("--dncnn-train-size", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--tiled-sizes", default="1024,2048", help="image sides for the tiled case")
    p.add_argument("--tiled-model", default="esdnet-small", choices=["esdnet-small", "esdnet"])
    p.add_argument("--tile", type=int, default=80)
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-checks", action="store_true")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.esdnet_size, args.esdnet_train_size = min(args.esdnet_size, 64), min(args.esdnet_train_size, 32)
        args.dncnn_size, args.dncnn_train_size = min(args.dncnn_size, 128), min(args.dncnn_train_size, 32)
        if args.tiled_sizes == p.get_default("tiled_sizes"):
            args.tiled_sizes = "256,512"
    return args


def run_case(case: str, variants: list[str], cfg: dict, notes: list[str]) -> dict:
    res: dict[str, dict] = {}
    for v in variants:
        print(f"{case}/{v}: memory ...", flush=True)
        res[v] = spawn({"job": "memory", "case": case, "variant": v, "cfg": cfg})
    print(f"{case}: interleaved timing of {', '.join(variants)} ...", flush=True)
    timing = spawn({"job": "timing", "case": case, "variants": variants, "cfg": cfg})
    errors = {v: timing["error"] for v in variants} if "error" in timing else timing.get("errors", {})
    for v in variants:
        if timing.get("times", {}).get(v):
            res[v]["time"] = summarize(timing["times"][v])
            res[v]["times_s"] = timing["times"][v]
        for err in (res[v].pop("error", None), errors.get(v)):
            if err:
                res[v].setdefault("errors", []).append(err)
                notes.append(f"{case}/{v} failed: {err}")
                print(f"note: {case}/{v} failed: {err}")
    return res


def case_ratios(res: dict, T: int) -> dict:
    """spikeir variants over the reference (< 1: spikeir cheaper) and over T x ANN."""

    def t(v):
        return res.get(v, {}).get("times_s")

    out = {}
    mem_keys = ("rss_peak_delta_bytes", "saved_bytes", "cuda_peak_delta_bytes")
    for v in [k for k in res if k.startswith("spikeir")]:
        for den, scale in (("spikingjelly", 1), ("ann", T)):
            if not (t(v) and t(den)):
                continue
            r = {"time_paired": statistics.median(a / (scale * b) for a, b in zip(t(v), t(den))),
                 "time_medians": res[v]["time"]["median_s"] / (scale * res[den]["time"]["median_s"])}
            if den == "spikingjelly":
                r.update({k: res[v][k] / res[den][k] for k in mem_keys if res[v].get(k) and res[den].get(k)})
            out[f"{v}/{'spikingjelly' if scale == 1 else f'({T}xann)'}"] = r
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_main(json.loads(args._worker))
        return 0
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = sorted(set(cases) - set(CASES) - {"tiled", "profile"})
    if bad:
        raise SystemExit(f"unknown cases {bad}; choose from {[*CASES, 'tiled', 'profile']}")
    notes: list[str] = []
    version = sj_version()
    if version is None:
        notes.append("spikingjelly is not importable: the 'spikingjelly' variants were skipped "
                     "(pip install --no-deps spikingjelly==2.0.0 loguru)")
        print(f"note: {notes[-1]}")
    cfg = {"device": str(device), "threads": args.threads, "quick": args.quick, "seed": args.seed,
           "warmup": args.warmup, "repeats": args.repeats, "memory_steps": args.memory_steps,
           "esdnet_size": args.esdnet_size, "esdnet_train_size": args.esdnet_train_size,
           "dncnn_size": args.dncnn_size, "dncnn_train_size": args.dncnn_train_size,
           "train_batch": args.train_batch, "tile": args.tile, "overlap": args.overlap,
           "esdnet": ESDNET, "spiden": SPIDEN, "loss": "L1", "optimizer": "AdamW(lr=1e-3, weight_decay=0.01)"}
    info = machine_info(device, args.threads)
    info["spikingjelly"] = version
    info["load_average_at_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"device={device} threads={args.threads} torch={torch.__version__} spikingjelly={version}")
    t_start = time.perf_counter()

    checks: dict = {}
    if not args.skip_checks:
        print("checks: parity fixture ...", flush=True)
        checks["fixture"] = fixture_check(version is not None)
        print(f"  fixture: {json.dumps({k: v for k, v in checks['fixture'].items() if k != 'fixture'})}")
        print("checks: spikeir vs reference / optimised paths ...", flush=True)
        checks["agreement"] = agreement_checks(cfg, version is not None)
        print(f"  {json.dumps(checks['agreement'])}")

    results: dict = {}
    for case in [c for c in cases if c in CASES]:
        variants = [v for v in CASES[case] if version is not None or v not in SJ_VARIANTS]
        res = run_case(case, variants, cfg, notes)
        results[case] = {"variants": res, "ratios": case_ratios(res, ESDNET["T"] if "esdnet" in case else SPIDEN["T"])}
    if "tiled" in cases:
        model = args.tiled_model
        sizes = [int(s) for s in args.tiled_sizes.split(",")]
        tiled: dict = {"model": model, "tile": args.tile, "overlap": args.overlap, "runs": {}}
        for size in [0, *sizes]:
            label = "one_tile" if size == 0 else f"{size}x{size}"
            print(f"tiled/{label}: ...", flush=True)
            tiled["runs"][label] = spawn({"job": "tiled", "model": model, "size": size, "cfg": cfg})
        print("tiled/one_tile (released ESDNet): ...", flush=True)
        tiled["one_tile_released_esdnet"] = spawn({"job": "tiled", "model": "esdnet", "size": 0, "cfg": cfg})
        one = tiled["runs"]["one_tile"].get("rss_peak_delta_bytes")
        for size in sizes:
            r = tiled["runs"][f"{size}x{size}"]
            if one is not None and "rss_peak_delta_bytes" in r:
                # the bound: one tile's working set plus a few image-sized buffers (input, output
                # accumulator, normaliser, the final division): independent of the activations
                r["bound_bytes"] = one + 4 * r["image_bytes"]
                r["within_bound"] = r["rss_peak_delta_bytes"] <= r["bound_bytes"]
        results["tiled"] = tiled
    if "profile" in cases:
        results["profile"] = {}
        for case in ("esdnet_infer", "esdnet_train"):
            for v in [v for v in ("spikeir", "spikingjelly") if version is not None or v not in SJ_VARIANTS]:
                print(f"profile/{case}/{v}: ...", flush=True)
                results["profile"][f"{case}/{v}"] = spawn({"job": "profile", "case": case, "variant": v, "cfg": cfg})

    print_report(results)
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    data = {
        "benchmark": "esdnet",
        "command": command_line(),
        "python_executable": sys.executable,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "machine": info,
        "config": cfg,
        "metrics": {
            "time": "seconds per no-grad forward (infer) or per training step (forward + backward + "
                    "AdamW, L1 loss), after warm-up; variants of a case interleaved in one process",
            "time_paired": "median over repeats of the per-repeat time ratio",
            "rss_peak_delta_bytes": "growth of the process peak RSS over memory_steps steps in a fresh "
                                    "subprocess per variant (VmHWM reset via /proc/self/clear_refs)",
            "saved_bytes": "unique storage bytes autograd saves for backward in one training forward",
            "cuda_peak_delta_bytes": "torch.cuda.max_memory_allocated growth (CUDA only)",
            "ratios": "spikeir variant / spikingjelly (< 1: spikeir cheaper) and / (T x ann)",
            "profile": "share of torch.profiler self CPU time per operator kind over the timed repeats",
        },
        "checks": checks,
        "results": results,
        "notes": notes,
    }
    write_json(args.json, data)
    print(f"\nwrote {args.json} ({data['elapsed_s']:.0f} s)")
    return 0


def print_report(results: dict) -> None:
    for case, r in results.items():
        if case == "tiled":
            rows = [[k, f"{v.get('time_s', 0):.1f}", mib(v.get("rss_peak_delta_bytes")), mib(v.get("bound_bytes")),
                     str(v.get("within_bound", "-"))] for k, v in r["runs"].items()]
            print(f"\ntiled no-grad inference, {r['model']}, tile {r['tile']}, overlap {r['overlap']}")
            print(format_table(["image", "time s", "peak RSS+ MiB", "bound MiB", "within"], rows))
            continue
        if case == "profile":
            print("\nshare of self CPU time by operator kind")
            for k, x in r.items():
                print(f"  {k:28s} " + (", ".join(f"{n} {f:.0%}" for n, f in sorted(x["share"].items()))
                                       if "share" in x else f"error: {x.get('error')}"))
            continue
        rows = []
        for v, x in r["variants"].items():
            t = x.get("time")
            rows.append([v, "error" if t is None else f"{1e3 * t['median_s']:.0f}", mib(x.get("rss_peak_delta_bytes")),
                         mib(x.get("saved_bytes")), mib(x.get("cuda_peak_delta_bytes"))])
        print(f"\n{case}")
        print(format_table(["variant", "median ms", "peak RSS+ MiB", "saved MiB", "CUDA peak+ MiB"], rows))
        for name, rat in r["ratios"].items():
            print(f"  {name:34s} " + ", ".join(f"{k}={v:.2f}" for k, v in rat.items()))


if __name__ == "__main__":
    sys.exit(main())
