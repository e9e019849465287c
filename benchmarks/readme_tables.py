"""Print the README's result tables (markdown) from the JSON files in benchmarks/results/.

    python benchmarks/readme_tables.py                  # print every table
    python benchmarks/readme_tables.py --write README.md

With ``--write``, each block between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in the
file is replaced by the table ``NAME`` (``tradeoff``, ``claims``, ...), so quoted numbers come
from the result files, never from a hand copy.
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
             "test protocol of the papers (seed 0 per image, unclipped noise, uint8 output)."
             + (f" BM3D: the `bm3d` package {bm}, installed beside spikeir for this run (non-commercial "
                "licence; not a dependency)." if (bm := (d.get("optional") or {}).get("bm3d")) else ""), "",
             "| method | PSNR (dB) | SSIM | firing rate |", "|---|---|---|---|"]
    for name, v in d["mean"].items():
        rate = f"{v['firing_rate']:.3f}" if "firing_rate" in v else "-"
        lines.append(f"| {name} | {v['psnr']:.2f} | {v['ssim']:.4f} | {rate} |")
    return "\n".join(lines)


def _pm(s: dict) -> str:
    return f"{s['mean']:.2f}" + (f" +- {s['std']:.2f}" if s.get("std") is not None else "")


def energy_inputs(d: dict) -> str:
    """What a denoising result's energy was measured on. Results written before the benchmarks fed
    the noisy inputs the network sees (and recorded them as ``energy_inputs``) were measured on the
    clean images, and say that."""
    return d.get("energy_inputs") or ("the clean images, without noise; rates differ on noisy inputs, "
                                      "see the energy section")


def student_options(s: dict) -> str:
    """The spiking DnCNN student's settings beyond the recipe's (BatchNorm, membranes from V_th/2), in words."""
    out = []
    if s.get("bn") is False:
        out.append("no BatchNorm")
    if "neuron_kwargs" in s and "v_init" not in (s["neuron_kwargs"] or {}):
        out.append("membranes from 0")
    return "".join(f", {o}" for o in out)


def named_hints(d: dict) -> bool:
    """Whether a distillation result's hints were named on its command line (``--hints``), not
    picked by the experiment's relative-depth rule."""
    return "--hints" in d.get("command", "")


def distill_table(file: str = "distill.json") -> str:
    d = json.loads((RESULTS / file).read_text())
    p, e, h = d["params"], d["energy_45nm_j"], d["distill"]
    st = d.get("final_psnr_stats") or {}
    s = d["student"]
    student = (f"{s['preset']}, T={s['T']}" if "preset" in s else
               f"{s['name']} depth {s['depth']}, width {s['width']}, T={s['T']}{student_options(s)}")
    hints = ("; hints (teacher -> student) " + ", ".join(f"{t} -> {u}" for t, u in h["hints"].items())
             if ("preset" in s or named_hints(d)) and h.get("hints") else "")
    lines = [f"`{d['command']}`: student {student} ({p['student']:,} parameters); teacher {d['teacher']} "
             f"({p['teacher']:,} parameters, validation {d['teacher_val_psnr']:.2f} dB); hint weight "
             f"{h['hint_weight']:g} ({h.get('hint_norm') or 'none'} MSE, {h['hint_schedule']} decay){hints}; "
             f"{d['steps']} steps, seed(s) {', '.join(map(str, d['seeds']))}; validation PSNR on builtin:val.", "",
             "| run | final PSNR (dB), mean +- std over seeds | per seed | steps for the mean curve to reach the "
             "baseline's final mean |", "|---|---|---|---|"]
    for arm in ("baseline", "distill"):
        reach = d["steps_to_target"][arm]
        final = _pm(st[arm]) if arm in st else f"{d['final_psnr'][arm]:.2f}"
        per = ", ".join(f"{v:.2f}" for v in d["final_psnr_per_seed"][arm])
        lines.append(f"| {'with hints' if arm == 'distill' else 'without hints'} | {final} | {per} | "
                     f"{reach if reach is not None else 'not reached'} |")
    if "distill_minus_baseline" in st:
        lines += ["", f"Paired difference (with - without hints, same seed): {_pm(st['distill_minus_baseline'])} dB."]
    if d.get("hint_selection"):
        lines += ["", "Hint settings tried first on seed " f"{d['hint_selection'][0]['seed']} (not one of the "
                  "seeds above): " + "; ".join(
                      ("no hints" if r["hint_norm"] is None else f"weight {r['hint_weight']:g} {r['hint_norm']}")
                      + f" {r['final_psnr']:.2f} dB" for r in d["hint_selection"]) + "."]
    lines += ["", f"Student/teacher: parameters {p['student'] / p['teacher']:.3f}, energy (45 nm ops) "
              f"{e['student_over_teacher']:.3f}, memory-aware "
              f"{d['energy_memory_aware_j']['student_over_teacher']:.3f} (energy inputs: {energy_inputs(d)})."]
    return "\n".join(lines)


def tradeoff_table() -> str:
    d = json.loads((RESULTS / "tradeoff.json").read_text())
    merged = "seed_means" in d
    tiled = all("energy_memory_aware_tiled_j" in r for r in (d["seed_means"] if merged else d["rows"]))
    head = ("| width | T | SNN | spike-domain fine-tuning | SNN PSNR | ANN PSNR | firing rate | "
            "SNN/ANN energy, 45 nm ops | SNN/ANN energy, memory-aware (whole image) |"
            + (" memory-aware (64x64 tiles) |" if tiled else ""))
    protocol = f"{d['protocol']}; energy inputs: {energy_inputs(d)}"
    if merged:
        cmds = "; ".join(f"`{c}`" for c in d["commands"].values())
        seeds = ", ".join(map(str, d["seeds"]))
        lines = [f"{cmds}; then `{d['command']}`: {protocol}; {d['steps']} steps per model. Converted "
                 f"points and fine-tuned settings every seed ran: mean +- std over seeds {seeds}; "
                 f"other fine-tuned rows: the seed named.",
                 "", head, "|" + "---|" * (head.count("|") - 1)]
    else:
        lines = [f"`{d['command']}`: {protocol}; {d['steps']} steps per model.", "", head,
                 "|" + "---|" * (head.count("|") - 1)]

    def pm(x) -> str:
        if not isinstance(x, dict):
            return f"{x:.2f}"
        return f"{x['mean']:.2f}" + ("" if x["std"] is None else f" +- {x['std']:.2f}")

    def rate(x) -> str:
        return f"{x:.3f}" if not isinstance(x, dict) else f"{x['mean']:.3f}"

    def line(r: dict, kind: str, how: str) -> str:
        cells = [str(r["width"]), str(r["T"]), kind, how, pm(r["psnr_snn"]), pm(r["psnr_ann"]),
                 rate(r["firing_rate"]), pm(r["energy_45nm_j"]["snn_over_ann"]),
                 pm(r["energy_memory_aware_j"]["snn_over_ann"])]
        if tiled:
            cells.append(pm(r["energy_memory_aware_tiled_j"]["snn_over_ann"]))
        return "| " + " | ".join(cells) + " |"

    points = d["seed_means"] if merged else [r for r in d["rows"] if "finetune_steps" not in r]
    # fine-tuned settings: their seed means where every seed ran them (merge marks those rows
    # "averaged"), else the rows of the seeds that did
    tuned = d.get("tuned_means", []) + [r for r in d["rows"] if "finetune_steps" in r and not r.get("averaged")]
    for r in sorted(points, key=lambda r: (-r["width"], r["T"])):
        lines.append(line(r, f"converted (QAT twin {pm(r['psnr_qat'])} dB)" if "psnr_qat" in r else "converted",
                          "none"))
        for t in (x for x in tuned if (x["width"], x["T"]) == (r["width"], r["T"])):
            rr = t.get("rate_reg")
            how = (f"{t['finetune_steps']} steps, no rate_reg" if not rr else
                   f"{t['finetune_steps']} steps, rate_reg target {rr['target']:g} (weight {rr['weight']:g})")
            who = "" if not merged else " (seed mean)" if "seeds" in t else f" (seed {t['seed']})"
            lines.append(line(t, "converted + fine-tuned" + who, how))
    return "\n".join(lines)


def esdnet_bench_table() -> str:
    """Whole networks against SpikingJelly (bench_esdnet.py): the ratios of one run, paired medians."""
    d = json.loads((RESULTS / "esdnet_bench.json").read_text())
    m, c, r = d["machine"], d["config"], d["results"]
    load = m.get("load_average_at_start")
    lines = [f"`{d['command']}` on {m['cpu_count']} CPU cores ({m['processor']}, torch {m['torch']}, "
             f"{m['threads']} thread(s), SpikingJelly {m.get('spikingjelly') or 'not installed'}"
             + (f"; load average at start {load[0]:.1f}" if load else "") + ").", "",
             "| case | spikeir / SpikingJelly: time | peak RSS growth | saved for backward "
             "| spikeir / (T x ANN twin): time |", "|---|---|---|---|---|"]
    T = c["esdnet"]["T"]

    def cells(res: dict, v: str) -> str:
        a, b = res["ratios"][f"{v}/spikingjelly"], res["ratios"][f"{v}/({T}xann)"]
        saved = f"{a['saved_bytes']:.2f}" if "saved_bytes" in a else "-"
        return f"{a['time_paired']:.2f} | {a['rss_peak_delta_bytes']:.2f} | {saved} | {b['time_paired']:.2f}"

    e, n, bt = c["esdnet_size"], c["dncnn_size"], c["train_batch"]
    et, nt = c["esdnet_train_size"], c["dncnn_train_size"]
    sp = c["spiden"]
    rows = [("esdnet_infer", "spikeir", f"ESDNet (released config) inference, {e}x{e}"),
            ("esdnet_infer", "spikeir_folded", "same, `fold_bn()`"),
            ("esdnet_infer", "spikeir_folded_compiled", "same, `fold_bn()` and `compiled_inference()`"),
            ("esdnet_train", "spikeir", f"ESDNet training step, {bt} x {et}x{et}"),
            ("esdnet_train", "spikeir_compact", "same, bool spike storage (the trainer's default)"),
            ("esdnet_train", "spikeir_ckpt_attn", "same, `checkpoint_attention=True`"),
            ("esdnet_train", "spikeir_compact_ckpt_attn", "same, bool spikes and `checkpoint_attention=True`"),
            ("esdnet_train", "spikeir_ckpt", "same, `checkpoint_blocks=True`"),
            ("dncnn_infer", "spikeir", f"SpikingDnCNN ({sp['depth']} x {sp['width']}, T={sp['T']}) inference, {n}x{n}"),
            ("dncnn_infer", "spikeir_compiled", "same, `compiled_inference()`"),
            ("dncnn_train", "spikeir", f"SpikingDnCNN training step, {bt} x {nt}x{nt}"),
            ("dncnn_train", "spikeir_compact", "same, bool spike storage")]
    for case, v, label in rows:
        if f"{v}/spikingjelly" in r.get(case, {}).get("ratios", {}):
            lines.append(f"| {label} | {cells(r[case], v)} |")
    t = r.get("tiled")
    if t:
        runs = t["runs"]
        sizes = ", ".join(f"{k.replace('_', ' ')} {_mib(v['rss_peak_delta_bytes'])} MiB" for k, v in runs.items())
        lines += ["", f"Tiled inference (`{t['model']}`, {t['tile']} px tiles, overlap {t['overlap']}), peak RSS "
                  f"growth: {sizes}; one tile of the released ESDNet "
                  f"{_mib(t['one_tile_released_esdnet']['rss_peak_delta_bytes'])} MiB."]
    return "\n".join(lines)


def derain_table() -> str:
    d = json.loads((RESULTS / "derain_heldout.json").read_text())
    lines = [f"`{d['command']}`: {d['protocol']}; {len(d['images'])} image/rain pairs.", "",
             "| method | parameters | Y-PSNR (dB) | Y-SSIM | firing rate |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"
        params = f"{r['params']:,}" if "params" in r else "-"
        lines.append(f"| {r['method']} | {params} | {r['psnr']:.2f} | {r['ssim']:.4f} | {rate} |")
    return "\n".join(lines)


def convert_table() -> str:
    d = json.loads((RESULTS / "convert_baseline.json").read_text())
    lines = [f"`{d['command']}`: {d['protocol']}; thresholds calibrated on {d['calibration']}; noisy input "
             f"{d['noisy_psnr']:.2f} dB.", "",
             "| model | T | PSNR (dB) | SSIM | firing rate |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"
        lines.append(f"| {r['model']} | {r['T'] if r['T'] is not None else '-'} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{rate} |")
    return "\n".join(lines)


def claims_table() -> str:
    d = json.loads((RESULTS / "claims.json").read_text())
    lines = ["| paper | claim | measured here | verdict |", "|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['source']} | {r['claim']} | {r['measured']} | **{r['verdict']}** |")
    return "\n".join(lines)


def batchnorm_table() -> str:
    d = json.loads((RESULTS / "batchnorm.json").read_text())
    lines = [f"`{d['command']}`: {d['protocol']}.", "",
             "| pair (steps) | validation with / without BatchNorm (dB) | held-out with / without (dB) "
             "| step where the run without BatchNorm first reaches the other's final validation PSNR "
             "| firing rate with / without |", "|---|---|---|---|---|"]

    def pair(a: dict, b: dict, key: str, fmt: str) -> str:
        if a["heldout"] is None or b["heldout"] is None or a["heldout"].get(key) is None:
            return "-"
        return f"{a['heldout'][key]:{fmt}} / {b['heldout'][key]:{fmt}}"

    for label, r in d["pairs"].items():
        a, b = r["with_bn"], r["without_bn"]
        step = r["steps_to_bn_final"]
        lines.append(f"| {label} ({a['steps']}) | {a['val_final']:.2f} / {b['val_final']:.2f} | "
                     f"{pair(a, b, 'psnr', '.2f')} | {step if step is not None else 'never'} | "
                     f"{pair(a, b, 'firing_rate', '.3f')} |")
    return "\n".join(lines)

TABLES = {"denoise": denoise_table, "derain": derain_table, "convert": convert_table, "distill": distill_table,
          "distill_unet": lambda: distill_table("distill_unet.json"),
          "distill_unet_3k": lambda: distill_table("distill_unet_3k.json"),
          "distill_silent": lambda: distill_table("distill_silent.json"),
          "distill_nobn": lambda: distill_table("distill_nobn.json"),
          "distill_w32": lambda: distill_table("distill_w32.json"),
          "batchnorm": batchnorm_table, "tradeoff": tradeoff_table, "neurons": neurons_table,
          "esdnet_bench": esdnet_bench_table,
          "claims": claims_table}


def render_tables(text: str, where: str = "text") -> tuple[str, list[str]]:
    """``text`` with every marked table block filled from the result files, and the names filled."""
    import re

    done = []

    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown table {name!r}; known: {', '.join(TABLES)}")
        done.append(name)
        return f"<!-- table:{name} -->\n{TABLES[name]()}\n<!-- /table:{name} -->"

    return re.sub(r"<!-- table:(\w+) -->.*?<!-- /table:\1 -->", fill, text, flags=re.S), done


def write_tables(path: Path) -> list[str]:
    """Replace every marked table block in ``path`` (atomically); returns the names replaced."""
    from spikeir.io import write_text_atomic

    new, done = render_tables(path.read_text(), str(path))
    write_text_atomic(path, new, overwrite=True)
    return done


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        print("replaced:", ", ".join(write_tables(Path(sys.argv[2]))) or "nothing")
    else:
        for fn in TABLES.values():
            try:
                print(fn() + "\n")
            except FileNotFoundError as e:
                print(f"(missing: {e.filename})\n")
