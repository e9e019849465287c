"""ONNX Runtime vs PyTorch: CPU inference time of the bundled models exported with ``spikeir export``.

    python benchmarks/bench_export.py --threads 1 --json benchmarks/results/export.json

Each model is exported to ONNX (``spikeir.export.export_onnx``: T unrolled, BatchNorm folded) in a
temporary folder and run on the same input by both runtimes in one process: PyTorch eval mode
under ``torch.inference_mode`` with ``torch.set_num_threads(N)``, ONNX Runtime's CPU provider with
``intra_op_num_threads=N`` (default graph optimisations). Input: a noisy centre crop of a held-out
built-in photo (sigma 25, seed 0), so the spiking models fire as they do on real images. Repeats
alternate the two runtimes, starting with each in turn, after warm-up runs; the JSON keeps every
sample, the medians and the median of the per-repeat time ratios, plus the largest output
difference between the two runtimes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from _common import command_line, format_table, machine_info, summarize, write_json
from spikeir.data import add_test_noise, builtin_images
from spikeir.evaluate import model_in_channels
from spikeir.export import OnnxRunner, export_onnx
from spikeir.io import load_model
from spikeir.models import is_spiking
from spikeir.neurons import BaseNeuron


def _input(channels: int, size: int) -> torch.Tensor:
    name, clean = builtin_images("heldout", gray=channels == 1)[0]
    h, w = clean.shape[:2]
    if min(h, w) < size:
        raise SystemExit(f"--size {size} is larger than the test image {name} ({w}x{h})")
    top, left = (h - size) // 2, (w - size) // 2
    noisy = add_test_noise(clean[top:top + size, left:left + size], 25, seed=0)
    t = torch.from_numpy(noisy).float()
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def spike_flips(model: torch.nn.Module, x: torch.Tensor, path: Path, threads: int) -> dict | None:
    """Spikes that differ between PyTorch and ONNX Runtime on ``x`` (a second export with the spike
    outputs), against all spikes PyTorch emits; None when the two sets of spike tensors do not line up."""
    rec: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: rec.append(o != 0))
             for m in model.modules() if isinstance(m, BaseNeuron)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    export_onnx(model, path, spikes=True, overwrite=True)
    outs = OnnxRunner(path, threads=threads).run(x.numpy())[1:]
    if len(outs) != len(rec) or any(o.shape != tuple(r.shape) for o, r in zip(outs, rec)):
        return None
    differ = sum(int(((o != 0) != r.numpy()).sum()) for o, r in zip(outs, rec))
    return {"differ": differ, "torch_spikes": sum(int(r.sum()) for r in rec),
            "neuron_outputs": sum(r.numel() for r in rec)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["spiden-s25", "spiden-s25-scratch", "dncnn-s25"],
                    help="bundled names or model files")
    ap.add_argument("--size", type=int, default=256, help="square input of this many pixels a side")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads and ORT intra-op threads")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per runtime and model")
    ap.add_argument("--json", default="benchmarks/results/export.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    info = machine_info(torch.device("cpu"), args.threads)
    info.update(onnxruntime=onnxruntime.__version__, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS"),
                load_average_at_start=list(os.getloadavg()))
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), "
          f"{args.size}x{args.size}, load average {info['load_average_at_start'][0]:.1f}")
    results, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            model = load_model(key, "cpu")
            x = _input(model_in_channels(model), args.size)
            path = Path(tmp) / f"{Path(key).stem}.onnx"
            t0 = time.perf_counter()
            export_onnx(model, path)
            export_s = time.perf_counter() - t0
            runner = OnnxRunner(path, threads=args.threads)
            xn = x.numpy()

            def run_torch(m=model, inp=x):
                with torch.inference_mode():
                    return m(inp)

            def run_ort(r=runner, inp=xn):
                return r.run(inp)[0]

            delta = np.abs(run_ort() - run_torch().numpy())
            diff = float(delta.max())
            for _ in range(args.warmup):
                run_torch()
                run_ort()
            t_torch: list[float] = []
            t_ort: list[float] = []
            for i in range(args.repeats):  # alternate, so that load from other processes hits both alike
                pair = [(run_torch, t_torch), (run_ort, t_ort)]
                for fn, acc in (pair if i % 2 == 0 else pair[::-1]):
                    acc += _time(fn, 1)
            ratio = statistics.median(a / b for a, b in zip(t_torch, t_ort))
            res = {"model": key, "model_config": model.spikeir_info.get("model"), "input_shape": list(x.shape),
                   "onnx_bytes": path.stat().st_size, "export_s": round(export_s, 2),
                   "max_abs_output_diff": diff, "output_pixels_over_1e-4": int((delta > 1e-4).sum()),
                   "torch": summarize(t_torch), "onnxruntime": summarize(t_ort),
                   "torch_over_onnxruntime": ratio}
            if is_spiking(model):
                res["spike_flips"] = spike_flips(model, x, Path(tmp) / "spikes.onnx", args.threads)
            results.append(res)
            ms = {k: f"{res[k]['median_s'] * 1e3:.0f} ms" for k in ("torch", "onnxruntime")}
            rows.append([key, ms["torch"], ms["onnxruntime"], f"{ratio:.2f}", f"{diff:.1e}"])
            print(f"{key}: torch {res['torch']['median_s'] * 1e3:.0f} ms, onnxruntime "
                  f"{res['onnxruntime']['median_s'] * 1e3:.0f} ms (torch/ort {ratio:.2f}), max |diff| {diff:.1e}")
    info["load_average_at_end"] = list(os.getloadavg())
    faster = [r["model"] for r in results if r["torch_over_onnxruntime"] > 1.0]
    data = {
        "benchmark": "export",
        "command": command_line(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "config": {"size": args.size, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                   "input": "noisy centre crop of builtin:heldout image 0, sigma 25, seed 0"},
        "metrics": {"time": "seconds per forward pass of one image (batch 1), after warm-up",
                    "torch_over_onnxruntime": "median over repeats of the per-repeat time ratio (> 1: ONNX "
                                              "Runtime faster)",
                    "max_abs_output_diff": "largest |ONNX Runtime - PyTorch| over the output image (0..1 scale); "
                                           "rounding differences (folded BatchNorm, another convolution code) "
                                           "can flip a spike whose membrane is within rounding of its threshold",
                    "output_pixels_over_1e-4": "output pixels where the runtimes differ by more than 1e-4",
                    "spike_flips": "spiking models: neuron outputs (all layers and steps) where ONNX Runtime "
                                   "and PyTorch disagree on spike / no spike, beside PyTorch's spike count"},
        "results": results,
        "onnxruntime_faster_for": faster,
    }
    print()
    print(format_table(["model", "PyTorch", "ONNX Runtime", "torch/ort", "max |diff|"], rows))
    path = write_json(args.json, data)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
