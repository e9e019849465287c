"""Training cost of the whole-sequence LIF neuron against a naive per-step autograd loop.

Variants (same conv weights, same data, same seed):

* ``spikeir``      -- :class:`spikeir.neurons.LIF`, one autograd function over the sequence;
* ``naive``        -- the same neuron as :func:`spikeir.neurons.reference_loop` (per-step graph);
* ``spikingjelly`` -- ``spikingjelly.activation_based.neuron.LIFNode(step_mode="m")`` when
  SpikingJelly is importable (skipped with a note otherwise);
* ``ann``          -- a ReLU twin without time steps, the cost floor.

Two workloads:

* ``network``: 8 x (conv3x3 32ch + BatchNorm2d over the flattened ``[T*B]`` + neuron) on
  ``[T, B, C, H, W]`` (input repeated ``T`` times), readout = mean over ``T`` + conv to 3
  channels, MSE loss; one training step = forward + backward + Adam step;
* ``neuron``: forward + backward of the neuron alone on a ``[T, B, 32, H, W]`` tensor.

Timing: all variants of a workload run in one subprocess, interleaved (each repeat runs every
variant once, in a rotating order), so load from other processes hits them alike; the JSON has
medians and the median of per-repeat (paired) ratios. Memory: each (workload, variant) runs in
its own fresh subprocess: bytes of the unique storages autograd saves for backward
(``saved_tensors_hooks``), growth of the peak RSS over the steps and, on CUDA,
``torch.cuda.max_memory_allocated`` growth.

    python benchmarks/bench_neurons.py --json benchmarks/results/neurons.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULT_TAG,
    SavedTensorMeter,
    command_line,
    count_graph_nodes,
    format_table,
    machine_info,
    memory_probe,
    mib,
    ratio,
    resolve_device,
    spawn_worker,
    summarize,
    sync,
    time_interleaved,
    write_json,
)
from spikeir.neurons import LIF, reference_loop  # noqa: E402

VARIANTS = ("spikeir", "naive", "spikingjelly", "ann")
SNN_VARIANTS = ("spikeir", "naive", "spikingjelly")
TAU = 2.0
ALPHA = 4.0


# ----------------------------------------------------------------------------- variants


def spikingjelly_version() -> str | None:
    try:
        from importlib.metadata import version

        from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: F401

        return version("spikingjelly")
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None


class NaiveLIF(nn.Module):
    """The spikeir LIF run as a plain per-step autograd loop."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.neuron = LIF(**kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_loop(self.neuron, x)


def make_neuron(variant: str, v_threshold: float) -> nn.Module:
    kw = dict(tau=TAU, v_threshold=v_threshold, v_reset=0.0, decay_input=False)
    if variant == "spikeir":
        return LIF(**kw, surrogate={"name": "sigmoid", "alpha": ALPHA})
    if variant == "naive":
        return NaiveLIF(**kw, surrogate={"name": "sigmoid", "alpha": ALPHA})
    if variant == "spikingjelly":
        from spikingjelly.activation_based import neuron, surrogate

        return neuron.LIFNode(**kw, surrogate_function=surrogate.Sigmoid(alpha=ALPHA), step_mode="m")
    raise ValueError(f"unknown neuron variant {variant!r}")


def reset_fn(variant: str):
    """SpikingJelly keeps the membrane as module state; the others start fresh each call."""
    if variant != "spikingjelly":
        return lambda module: None
    from spikingjelly.activation_based import functional

    return functional.reset_net


class ConvNet(nn.Module):
    """``layers`` x (conv3x3 + BN + neuron); readout = mean over T + conv3x3 to 3 channels.

    With ``variant="ann"`` the neuron is a ReLU and there is no time dimension. Layers are
    created in the same order for every variant, so one seed gives the same weights."""

    def __init__(self, variant: str, layers: int, channels: int, T: int, v_threshold: float):
        super().__init__()
        self.variant, self.T = variant, T
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.acts = nn.ModuleList()
        cin = 3
        for _ in range(layers):
            self.convs.append(nn.Conv2d(cin, channels, 3, padding=1, bias=False))
            self.bns.append(nn.BatchNorm2d(channels))
            act = nn.ReLU() if variant == "ann" else make_neuron(variant, v_threshold)
            self.acts.append(act)
            cin = channels
        self.readout = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "ann":
            for conv, bn, act in zip(self.convs, self.bns, self.acts):
                x = act(bn(conv(x)))
            return self.readout(x)
        T, B = self.T, x.shape[0]
        z = x.unsqueeze(0).expand(T, *x.shape).reshape(T * B, *x.shape[1:])
        for conv, bn, act in zip(self.convs, self.bns, self.acts):
            z = bn(conv(z))
            z = act(z.reshape(T, B, *z.shape[1:])).flatten(0, 1)
        z = z.reshape(T, B, *z.shape[1:]).mean(0)
        return self.readout(z)


def make_data(cfg: dict, device: torch.device, dtype: torch.dtype, size: int | None = None):
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    s = size or cfg["size"]
    clean = torch.rand(cfg["batch"], 3, s, s, generator=g, dtype=torch.float64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return noisy.to(device, dtype), clean.to(device, dtype)


def build_net(variant: str, cfg: dict, device: torch.device, dtype=torch.float32) -> ConvNet:
    torch.manual_seed(cfg["seed"])
    net = ConvNet(variant, cfg["layers"], cfg["channels"], cfg["T"], cfg["v_threshold"])
    return net.to(device=device, dtype=dtype).train()


def neuron_input(cfg: dict, device: torch.device):
    g = torch.Generator().manual_seed(cfg["seed"] + 2)
    shape = (cfg["T"], cfg["batch"], cfg["channels"], cfg["size"], cfg["size"])
    x = (0.5 * torch.randn(shape, generator=g)).to(device)
    grad = torch.randn(shape, generator=g).to(device)
    return x.requires_grad_(True), grad


# ----------------------------------------------------------------------------- workers


class Task:
    """One (workload, variant): ``step()`` runs one timed unit, ``probe_graph()`` measures the
    backward graph of one forward."""

    def __init__(self, workload: str, variant: str, cfg: dict, device: torch.device):
        self.workload, self.variant, self.device = workload, variant, device
        self.reset = reset_fn(variant)
        if workload == "network":
            self.module = build_net(variant, cfg, device)
            self.opt = torch.optim.Adam(self.module.parameters(), lr=1e-3)
            self.x, self.target = make_data(cfg, device, torch.float32)
        else:
            self.module = make_neuron(variant, cfg["v_threshold"]).to(device)
            self.x, self.target = neuron_input(cfg, device)

    def _forward(self) -> torch.Tensor:
        if self.workload == "network":
            return F.mse_loss(self.module(self.x), self.target)
        return self.module(self.x)

    def step(self) -> float:
        """Network: forward + backward + Adam step (returns the loss). Neuron: forward +
        backward with a fixed output gradient (returns the input-gradient L1 norm)."""
        if self.workload == "network":
            self.opt.zero_grad(set_to_none=True)
            loss = self._forward()
            loss.backward()
            self.opt.step()
            self.reset(self.module)
            return loss.item()
        self.x.grad = None
        self._forward().backward(self.target)
        self.reset(self.module)
        return float(self.x.grad.abs().sum())

    def probe_graph(self) -> dict:
        if self.workload == "network":
            self.opt.zero_grad(set_to_none=True)
        meter = SavedTensorMeter()
        with meter.record():
            out = self._forward()
        res = {
            "saved_bytes": meter.nbytes,
            "saved_tensors": meter.saved_count,
            "graph_nodes": count_graph_nodes(out),
        }
        if self.workload == "neuron":
            res["firing_rate"] = float((out.detach() != 0).float().mean())
        del out
        self.reset(self.module)
        return res



def memory_worker(workload: str, variant: str, cfg: dict, device: torch.device) -> dict:
    """Peak memory of ``memory_steps`` steps in a fresh process, then the saved-tensor bytes."""
    task = Task(workload, variant, cfg, device)
    probe = memory_probe(device)
    values = [task.step() for _ in range(cfg["memory_steps"])]
    sync(device)
    res = probe()
    res["first_value"] = values[0]
    res.update(task.probe_graph())
    return res


def timing_worker(workload: str, variants: list[str], cfg: dict, device: torch.device) -> dict:
    """Interleaved timing: every repeat runs each variant once, in a rotating order, so that
    load from other processes hits all variants alike (paired samples)."""
    tasks: dict[str, Task] = {}
    errors: dict[str, str] = {}
    for v in variants:
        try:
            tasks[v] = Task(workload, v, cfg, device)
        except Exception as e:  # noqa: BLE001 - report and time the others
            errors[v] = f"{type(e).__name__}: {e}"
    repeats = cfg["repeats"] if workload == "network" else cfg["neuron_repeats"]
    return time_interleaved(tasks, errors, cfg["warmup"], repeats, device)


def worker_main(spec: dict) -> None:
    cfg = spec["cfg"]
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    if spec["job"] == "memory":
        res = memory_worker(spec["workload"], spec["variant"], cfg, device)
    else:
        res = timing_worker(spec["workload"], spec["variants"], cfg, device)
    print(RESULT_TAG + json.dumps(res), flush=True)


def spawn(spec: dict) -> dict:
    return spawn_worker(__file__, spec)


# ----------------------------------------------------------------------------- checks


def _grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in net.parameters()]


def _max_rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(a, b))


def first_step(variant: str, cfg: dict, device, dtype, size=None) -> tuple[float, list]:
    net = build_net(variant, cfg, device, dtype)
    x, y = make_data(cfg, device, dtype, size)
    loss = F.mse_loss(net(x), y)
    loss.backward()
    reset_fn(variant)(net)
    return float(loss.detach()), _grads(net)


def agreement_checks(cfg: dict, device: torch.device, variants: list[str]) -> dict:
    """First-step loss and gradients of the SNN variants against ``spikeir``.

    float32 at the benchmark size (the code paths being timed) and float64 on a tiny input
    (SpikingJelly then takes its Torch reference path, since its fused op is float32-only)."""
    snn = [v for v in variants if v in SNN_VARIANTS]
    out: dict = {}
    for name, dtype, size in (("float32", torch.float32, None), ("float64", torch.float64, 16)):
        losses, grads, errors = {}, {}, {}
        for v in snn:
            try:
                losses[v], grads[v] = first_step(v, cfg, device, dtype, size)
            except Exception as e:  # noqa: BLE001 - e.g. a backend missing on this device
                errors[v] = f"{type(e).__name__}: {e}"
        ok = [v for v in snn if v in losses]
        ref = "spikeir" if "spikeir" in ok else (ok[0] if ok else None)
        others = [v for v in ok if v != ref]
        out[name] = {
            "input_size": size or cfg["size"],
            "first_step_loss": losses,
            "max_abs_loss_diff_vs_spikeir": {v: abs(losses[v] - losses[ref]) for v in others},
            "max_rel_grad_diff_vs_spikeir": {v: _max_rel_diff(grads[v], grads[ref]) for v in others},
        }
        if errors:
            out[name]["errors"] = errors
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default="benchmarks/results/neurons.json", help="output JSON path")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="smoke run: few repeats")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    p.add_argument("--repeats", type=int, default=5, help="timed training steps per variant")
    p.add_argument("--neuron-repeats", type=int, default=12, help="timed neuron-only passes")
    p.add_argument("--memory-steps", type=int, default=2, help="steps in each memory probe")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--v-threshold", type=float, default=0.15, help="ESDNet's LIF threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-checks", action="store_true", help="skip the agreement checks")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats, args.neuron_repeats, args.memory_steps = 1, 2, 3, 1
    return args


PAIRS = (
    ("naive/spikeir", "naive", "spikeir"),
    ("spikingjelly/spikeir", "spikingjelly", "spikeir"),
    ("spikeir/ann", "spikeir", "ann"),
)


def ratios(res: dict, times: dict[str, list[float]], mem_keys: list[str]) -> dict:
    """Ratios of medians, plus ``time_paired``: the median over repeats of the per-repeat
    ratio (the variants ran back to back in each repeat, so this cancels slow drifts)."""

    def get(v: str, key: str) -> float | None:
        r = res.get(v)
        if not r or "error" in r:
            return None
        return r["time"]["median_s"] if key == "time" else r.get(key)

    out = {}
    for key in ["time", *mem_keys]:
        vals = {name: ratio(get(a, key), get(b, key)) for name, a, b in PAIRS}
        out[key] = {k: v for k, v in vals.items() if v is not None}
    out["time_paired"] = {
        name: statistics.median(x / y for x, y in zip(times[a], times[b]))
        for name, a, b in PAIRS
        if times.get(a) and times.get(b)
    }
    return out


def print_table(title: str, res: dict, extra: str | None = None) -> None:
    headers = ["variant", "median ms", "min ms", "saved MiB", "peak RSS+ MiB"]
    cuda = any("cuda_peak_delta_bytes" in r for r in res.values())
    if cuda:
        headers.append("CUDA peak+ MiB")
    headers.append("graph nodes")
    if extra:
        headers.append(extra)
    rows = []
    for v, r in res.items():
        t = r.get("time")
        row = [
            v,
            "error" if t is None else f"{1e3 * t['median_s']:.1f}",
            "" if t is None else f"{1e3 * t['min_s']:.1f}",
            mib(r.get("saved_bytes")),
            mib(r.get("rss_peak_delta_bytes")),
        ]
        if cuda:
            row.append(mib(r.get("cuda_peak_delta_bytes")))
        row.append(str(r.get("graph_nodes", "-")))
        if extra:
            val = r.get(extra)
            row.append("-" if val is None else f"{val:.6g}")
        rows.append(row)
    print(f"\n{title}")
    print(format_table(headers, rows))


def print_ratios(title: str, rat: dict) -> None:
    print(f"ratios ({title}; > 1 means the denominator is cheaper):")
    for key, vals in rat.items():
        txt = ", ".join(f"{k} = {v:.2f}x" for k, v in vals.items()) or "-"
        print(f"  {key:22s} {txt}")


def run_workload(workload: str, variants: list[str], cfg: dict, notes: list[str]):
    """Memory probes (one fresh process per variant) and one interleaved timing process."""
    res: dict[str, dict] = {}
    for v in variants:
        print(f"{workload}/{v}: memory ...", flush=True)
        spec = {"job": "memory", "workload": workload, "variant": v, "cfg": cfg}
        res[v] = spawn(spec)
    print(f"{workload}: interleaved timing of {', '.join(variants)} ...", flush=True)
    spec = {"job": "timing", "workload": workload, "variants": variants, "cfg": cfg}
    timing = spawn(spec)
    times = timing.get("times", {})
    errors = dict(timing.get("errors", {}))
    if "error" in timing:
        errors = {v: timing["error"] for v in variants}
    for v in variants:
        r = res[v]
        if v in times and times[v]:
            r["time"] = summarize(times[v])
        for err in (r.pop("error", None), errors.get(v)):
            if err:
                r.setdefault("errors", []).append(err)
                notes.append(f"{workload}/{v} failed: {err}")
                print(f"note: {workload}/{v} failed: {err}")
    return res, times


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_main(json.loads(args._worker))
        return 0

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = sorted(set(variants) - set(VARIANTS))
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {VARIANTS}")
    notes: list[str] = []
    sj_version = spikingjelly_version()
    if "spikingjelly" in variants and sj_version is None:
        variants.remove("spikingjelly")
        note = "spikingjelly is not importable: the 'spikingjelly' variant was skipped"
        notes.append(note)
        print(f"note: {note}")

    cfg = {
        "device": str(device),
        "threads": args.threads,
        "layers": args.layers,
        "channels": args.channels,
        "T": args.T,
        "batch": args.batch,
        "size": args.size,
        "v_threshold": args.v_threshold,
        "tau": TAU,
        "decay_input": False,
        "v_reset": 0.0,
        "surrogate": f"sigmoid(alpha={ALPHA:g})",
        "seed": args.seed,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "neuron_repeats": args.neuron_repeats,
        "memory_steps": args.memory_steps,
        "quick": args.quick,
    }
    info = machine_info(device, args.threads)
    info["spikingjelly"] = sj_version
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    print(
        f"device={device} threads={args.threads} torch={torch.__version__} "
        f"spikingjelly={sj_version} cpus={os.cpu_count()}"
    )
    print(
        f"network: {args.layers} x conv3x3({args.channels}) + BN + LIF, T={args.T}, "
        f"batch {args.batch} of {args.size}x{args.size}"
    )
    t_start = time.perf_counter()

    checks = None
    if not args.skip_checks and any(v in SNN_VARIANTS for v in variants):
        checks = agreement_checks(cfg, device, variants)
        for name, c in checks.items():
            losses = ", ".join(f"{v}={loss:.9g}" for v, loss in c["first_step_loss"].items())
            grads = ", ".join(f"{v}={d:.2e}" for v, d in c["max_rel_grad_diff_vs_spikeir"].items())
            print(
                f"check {name} ({c['input_size']}px) first-step loss: {losses}; "
                f"max rel grad diff vs spikeir: {grads or '-'}"
            )
            for v, err in c.get("errors", {}).items():
                notes.append(f"check {name}/{v} failed: {err}")
                print(f"note: check {name}/{v} failed: {err}")

    network, net_times = run_workload("network", variants, cfg, notes)
    neuron_variants = [v for v in variants if v != "ann"]
    neuron, neu_times = run_workload("neuron", neuron_variants, cfg, notes)

    mem_keys = ["saved_bytes", "rss_peak_delta_bytes"]
    if device.type == "cuda":
        mem_keys.append("cuda_peak_delta_bytes")
    rat = {
        "network": ratios(network, net_times, mem_keys),
        "neuron_only": ratios(neuron, neu_times, mem_keys),
    }

    shape = f"[{args.T},{args.batch},{args.channels},{args.size},{args.size}]"
    print_table("training step (forward + backward + Adam), per step", network, "first_value")
    print_ratios("training step", rat["network"])
    print_table(f"neuron only (forward + backward on {shape})", neuron, "firing_rate")
    print_ratios("neuron only", rat["neuron_only"])

    elapsed = time.perf_counter() - t_start
    try:
        info["load_average_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    data = {
        "benchmark": "neurons",
        "command": command_line(),
        "python_executable": sys.executable,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "config": cfg,
        "variants": variants,
        "metrics": {
            "time": "seconds per training step (forward+backward+Adam) or per neuron "
            "forward+backward, after warm-up; all variants timed in one process, interleaved "
            "(each repeat runs every variant once, rotating the order)",
            "time_paired": "median over repeats of the per-repeat time ratio",
            "saved_bytes": "unique storage bytes saved for backward during one forward "
            "(torch.autograd.graph.saved_tensors_hooks)",
            "rss_peak_delta_bytes": "growth of the process peak RSS over memory_steps steps "
            "in a fresh subprocess per variant (VmHWM reset via /proc/self/clear_refs, "
            "else ru_maxrss)",
            "cuda_peak_delta_bytes": "torch.cuda.max_memory_allocated minus the allocation "
            "before the steps (CUDA only)",
            "graph_nodes": "autograd nodes reachable from the loss / neuron output",
            "first_value": "network: loss of the first step (same weights and data for all "
            "SNN variants); neuron: L1 norm of the input gradient",
        },
        "checks": checks,
        "network": network,
        "neuron_only": neuron,
        "ratios": rat,
        "notes": notes,
        "elapsed_s": round(elapsed, 1),
    }
    path = write_json(args.json, data)
    print(f"\nwrote {path} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
