"""Small helpers shared by the benchmarks: machine info, memory meters, stats, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import sys
from contextlib import contextmanager
from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when it is available, otherwise the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


ROOT = Path(__file__).resolve().parents[1]


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a result, runnable from the repository root: a run started in
    another folder is recorded with a ``cd`` into it, since its paths are relative to it."""
    cmd = shlex.join(["python", *(sys.argv if argv is None else argv)])
    try:
        rel = Path.cwd().resolve().relative_to(ROOT)
    except ValueError:  # outside the checkout: nothing to anchor on
        return cmd
    return cmd if rel == Path(".") else f"cd {shlex.quote(rel.as_posix())} && {cmd}"


def machine_info(device: torch.device, threads: int) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": threads,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: ``VmHWM`` on Linux (resettable with
    :func:`reset_peak_rss`), else ``ru_maxrss``."""
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024  # macOS: bytes, Linux: KiB


def reset_peak_rss() -> tuple[int, str]:
    """Start a new peak-RSS window; returns (baseline bytes, method).

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS,
    so peak minus baseline is the growth inside the window alone. Elsewhere the baseline is
    the ``ru_maxrss`` so far (imports included), which can hide growth smaller than it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _proc_status_kib("VmRSS")
        hwm = _proc_status_kib("VmHWM")
        if rss is not None and hwm is not None and hwm - rss < 1024:  # reset took effect
            return rss * 1024, "VmHWM after clear_refs"
    except OSError:
        pass
    return peak_rss_bytes(), "ru_maxrss"


class SavedTensorMeter:
    """Sum of the unique storages that autograd saves for backward inside :meth:`record`.

    Views of one storage are counted once, so this is the memory the backward graph keeps
    alive (parameters included, which are tiny here)."""

    def __init__(self) -> None:
        self._storages: dict[tuple[str, int], int] = {}
        self.saved_count = 0

    @contextmanager
    def record(self):
        def pack(t: torch.Tensor) -> torch.Tensor:
            self.saved_count += 1
            try:
                st = t.untyped_storage()
                self._storages[(str(t.device), st.data_ptr())] = st.nbytes()
            except (RuntimeError, NotImplementedError):  # sparse / exotic tensors
                self._storages[(str(t.device), id(t))] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield self

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())


def count_graph_nodes(t: torch.Tensor) -> int:
    """Number of autograd nodes reachable from ``t`` (the size of the backward graph)."""
    seen: set[int] = set()
    stack = [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return len(seen)


def summarize(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
        "all_s": [round(t, 6) for t in times],
    }


def mean_std(xs: list[float]) -> dict:
    """``{"mean", "std" (sample; None for one value), "n"}`` of a list of per-seed values."""
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def mib(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.1f}"


def write_json(path: str | Path, data: dict) -> Path:
    """Write a result file atomically (a cut run never leaves half a JSON), replacing the old one."""
    from spikeir.io import write_json_atomic

    write_json_atomic(path, data, overwrite=True)
    return Path(path)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    line = fmt(headers)
    return "\n".join([line, "-" * len(line), *(fmt(r) for r in rows)])


# config keys that appeared after some kept runs were made, with the value those runs used
ADDED_KEYS = {("distill", "output_weight"): 0.0}


def reused_config_diff(run: Path, cfg: dict) -> list[str]:
    """How the recipe a finished ``run`` was trained with differs from ``cfg`` (empty: the same),
    ignoring what cannot change the weights (logging, validation, checkpoint cadence, threads).

    Files are compared by the name the config gives them (a teacher, ``init_from``), not by
    content: a bundled model retrained under the same name, or a replaced file, is not noticed."""
    import copy

    import yaml

    from spikeir.train import _config_diff, resolve_model_cfg

    saved_file = Path(run) / "config.yaml"
    if not saved_file.is_file():
        return [f"no {saved_file.name} in the run"]
    saved, wanted = yaml.safe_load(saved_file.read_text()), copy.deepcopy(cfg)
    for c in (saved, wanted):
        c["model"] = resolve_model_cfg(dict(c["model"]))
    for (section, key), value in ADDED_KEYS.items():  # older runs trained at the then-implicit value
        if isinstance(saved.get(section), dict):
            saved[section].setdefault(key, value)
    # YAML has no tuples: compare both sides through the same round trip
    def plain(c: dict) -> dict:
        return yaml.safe_load(yaml.safe_dump(c, sort_keys=False))

    return _config_diff(plain(saved), plain(wanted))


def train_or_reuse(run: Path, cfg: dict, reuse: bool) -> Path:
    """Train ``cfg`` into ``run`` and return its model file; with ``reuse``, a finished run is kept
    and a run cut short (checkpoints, no model file) is resumed. An existing run is never
    overwritten without ``reuse``."""
    from spikeir.train import train

    run = Path(run)
    if reuse and (run / "model.safetensors").is_file():
        diff = reused_config_diff(run, cfg)
        if diff:
            raise SystemExit(f"{run} was trained with a different recipe ({'; '.join(diff[:3])}); "
                             "remove it or choose another --runs")
        return run / "model.safetensors"
    resume = reuse and any((run / "checkpoints").glob("step_*.pt"))
    if run.exists() and not resume:
        raise SystemExit(f"{run} exists; remove it or pass --reuse")
    print(f"{'resuming' if resume else 'training'} {run.name} ({cfg['train']['steps']} steps)", flush=True)
    train(cfg, run, progress=False, resume=resume)
    return run / "model.safetensors"


RESULT_TAG = "@@RESULT "


def memory_probe(device: torch.device):
    """Starts a peak-memory window; the returned function reads the growth since then (peak RSS,
    and on CUDA the peak allocated bytes)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)
    rss_base, rss_method = reset_peak_rss()

    def read() -> dict:
        peak = peak_rss_bytes()
        out = {"rss_peak_delta_bytes": peak - rss_base, "rss_peak_bytes": peak, "rss_method": rss_method}
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            out["cuda_peak_bytes"] = peak
            out["cuda_peak_delta_bytes"] = peak - cuda_base
        return out

    return read


def time_interleaved(tasks: dict, errors: dict[str, str], warmup: int, repeats: int,
                     device: torch.device) -> dict:
    """Time ``task.step()`` of every task, ``warmup + repeats`` rounds, rotating the order each
    round so that drift in machine load falls on every variant alike; a task that raises is
    recorded in ``errors`` and dropped. Returns ``{"times": {name: [s, ...]}, "errors": errors}``."""
    import time

    times: dict[str, list[float]] = {v: [] for v in tasks}
    for i in range(warmup + repeats):
        live = [v for v in tasks if v not in errors]
        k = i % max(len(live), 1)
        for v in live[k:] + live[:k]:
            sync(device)
            t0 = time.perf_counter()
            try:
                tasks[v].step()
            except Exception as e:  # noqa: BLE001
                errors[v] = f"{type(e).__name__}: {e}"
                continue
            sync(device)
            if i >= warmup:
                times[v].append(time.perf_counter() - t0)
    return {"times": {v: t for v, t in times.items() if v not in errors}, "errors": errors}


def spawn_worker(script: str | Path, spec: dict) -> dict:
    """Run ``script --_worker SPEC`` in a fresh process (clean peak-memory counters) and return the
    JSON it prints after :data:`RESULT_TAG`, or ``{"error": ...}``."""
    import subprocess

    cmd = [sys.executable, str(Path(script).resolve()), "--_worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def spiking_dncnn_model(width: int, depth: int, T: int) -> dict:
    """The spiden-cpu layout (IF, membrane from V_th/2) at this width, depth and T."""
    return {"name": "spiking_dncnn", "in_channels": 1, "depth": depth, "width": width, "T": T,
            "neuron_kwargs": {"v_init": "half"}}


def spiden_stage2_config(width: int, depth: int, T: int, init: Path, steps: int, threads: int) -> dict:
    """Stage 2 of the bundled spiden-s25 (``configs/spiden-cpu-s25.yaml``: spike-domain BPTT from a
    quantisation-aware twin ``init``) for this network, ``steps`` steps, validated at the end."""
    from spikeir.config import load_config

    cfg = load_config(CONFIGS / "spiden-cpu-s25.yaml")
    cfg["model"] = spiking_dncnn_model(width, depth, T)
    cfg["train"].update({"steps": steps, "init_from": str(init), "threads": threads, "val_every": steps})
    return cfg


def denoise_energy_inputs(images: list, sigma: float, seed: int = 0) -> tuple[list, str]:
    """The inputs a denoiser's energy is measured on, and how to say so in a result: the images with
    the test protocol's noise (:func:`spikeir.data.add_test_noise`, ``seed`` per image), because
    the network's spike counts, and so its energy, depend on the input it actually sees (on the
    held-out crops, SNN/ANN at 45 nm with and without noise: spiden-s25 0.418 and 0.385,
    spiden-s25-scratch 0.378 and 0.399)."""
    from spikeir.data import add_test_noise

    return ([add_test_noise(im, sigma, seed) for im in images],
            f"noisy inputs (sigma {sigma:g}, seed {seed} per image), as the network sees them")

