"""Print the README's result tables (markdown) from the JSON files in benchmarks/results/.

    python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f}"


def neurons_table() -> str:
    d = json.loads((RESULTS / "neurons.json").read_text())
    m = d["machine"]
    lines = [f"`{d['command']}` on {m['cpu_count']} CPU cores ({m['processor']}, torch {m['torch']}, "
             f"{m['threads']} thread(s), SpikingJelly {m.get('spikingjelly') or 'not installed'}); "
             f"load average at start {m['load_average_at_start'][0]:.1f}.", "",
             "| workload | variant | median time | saved for backward | peak RSS growth |",
             "|---|---|---|---|---|"]
    for wl, label in (("network", "training step, 8x conv32 + neuron, T=4, 8x64x64"),
                      ("neuron_only", "neuron fwd+bwd, [4,8,32,64,64]")):
        for name, v in d[wl].items():
            if not isinstance(v, dict) or "time" not in v:
                continue
            t_ms = v["time"]["median_s"] * 1e3
            lines.append(f"| {label} | {name} | {t_ms:.0f} ms | {_mib(v['saved_bytes'])} MiB | "
                         f"{_mib(v['rss_peak_delta_bytes'])} MiB |")
    lines += ["", "| ratio (>1: spikeir cheaper; spikeir/ann: price of spiking) | time (paired) | saved | peak RSS |",
              "|---|---|---|---|"]
    for wl in ("network", "neuron_only"):
        r = d["ratios"][wl]
        for key in r["time_paired"]:
            lines.append(f"| {wl}: {key} | {r['time_paired'][key]:.2f} | {r['saved_bytes'][key]:.2f} | "
                         f"{r['rss_peak_delta_bytes'][key]:.2f} |")
    return "\n".join(lines)


def denoise_table() -> str:
    d = json.loads((RESULTS / "denoise_heldout.json").read_text())
    lines = [f"`{d['command']}`: held-out images {', '.join(d['images'])} (gray), sigma {d['sigma']:g}, "
             "test protocol of the papers (seed 0 per image, unclipped noise, uint8 output).", "",
             "| method | PSNR (dB) | SSIM | firing rate |", "|---|---|---|---|"]
    for name, v in d["mean"].items():
        rate = f"{v['firing_rate']:.3f}" if "firing_rate" in v else "-"
        lines.append(f"| {name} | {v['psnr']:.2f} | {v['ssim']:.4f} | {rate} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for fn in (denoise_table, neurons_table):
        try:
            print(fn() + "\n")
        except FileNotFoundError as e:
            print(f"(missing: {e.filename})\n")
