"""The ``spikeir`` command line. Every user error ends in one line ``spikeir: error: ...``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__

# OSError covers missing files, existing outputs, directories given as files, full disks
USER_ERRORS = (ValueError, OSError)


def _fail(msg: str) -> int:
    print(f"spikeir: error: {msg}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------ commands


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.set)
    out = args.out or cfg.get("out") or f"runs/{Path(args.config).stem}"
    res = train(cfg, out, device=args.device, resume=args.resume, progress=not args.quiet)
    if res.get("paused"):
        print(f"paused at step {res['steps']} (train.stop_at); continue with --resume --out {out}")
        return 0
    mean = res.get("mean") or {}
    msg = f"done: {res['steps']} steps -> {Path(out) / 'model.safetensors'}"
    if mean:
        msg += f" (val PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.4f})"
    print(msg)
    return 0


def _collect_inputs(inputs: list[str]) -> list[Path]:
    from .data import list_images

    files: list[Path] = []
    for s in inputs:
        files += list_images(s)
    return files


def _restore_files(args: argparse.Namespace, task: str) -> int:
    """Shared body of ``denoise`` and ``derain``: files/folders in, PNGs out, never clobbering."""
    from .evaluate import model_in_channels
    from .io import load_model
    from .neurons import compiled_inference

    files = _collect_inputs(args.inputs)
    outdir = Path(args.output)
    targets = [outdir / (f.stem + ".png") for f in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"two inputs share a file name; {task} them into separate folders")
    inputs = {f.resolve() for f in files}
    if any(t.resolve() in inputs for t in targets):
        raise ValueError("an output would replace one of the input images; choose another -o folder")
    clash = [t for t in targets if t.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"{clash[0]} exists (use --overwrite to replace; {len(clash)} file(s) would be)")
    onnx = args.runtime == "onnx"
    if onnx and args.device not in ("auto", "cpu"):
        raise ValueError("--runtime onnx runs on the CPU (ONNX Runtime's CPU provider); use --device cpu")
    model = load_model(args.model, "cpu" if onnx else args.device)
    model_task = model.spikeir_info.get("task")
    if model_task and model_task != task:
        raise ValueError(f"model {args.model!r} was trained for {model_task}, not {task}")
    if onnx:
        from .export import OnnxModel

        model = OnnxModel(model)
    gray = model_in_channels(model) == 1
    sigma = getattr(args, "sigma", 0.0)
    with compiled_inference(args.runtime == "compiled"):
        done = _restore_each(args, model, files, targets, gray, sigma)
    if not done:
        raise ValueError("no input image could be read")
    return 0


def _restore_each(args: argparse.Namespace, model, files: list[Path], targets: list[Path], gray: bool,
                  sigma: float) -> int:
    from .data import ImageReadError, add_test_noise, read_image, to_uint8, write_image_atomic
    from .evaluate import restore

    done = 0
    for f, t in zip(files, targets):
        try:
            img = read_image(f, gray=gray)
        except ImageReadError as e:
            warnings.warn(f"skipping {e}", stacklevel=1)
            continue
        x = add_test_noise(img, sigma, args.seed) if sigma else img.astype(np.float64) / 255.0
        out, rate = restore(model, x, tile=args.tile or None, overlap=args.overlap)
        write_image_atomic(t, to_uint8(out), overwrite=args.overwrite)
        extra = "" if rate is None else f", firing rate {rate:.3f}"
        print(f"{f} -> {t}{extra}")
        done += 1
    return done


def cmd_denoise(args: argparse.Namespace) -> int:
    return _restore_files(args, "denoise")


def cmd_derain(args: argparse.Namespace) -> int:
    return _restore_files(args, "derain")


def cmd_eval(args: argparse.Namespace) -> int:
    from .data import load_image_set
    from .evaluate import evaluate_denoise, evaluate_derain, model_in_channels
    from .io import load_model, write_json_atomic
    from .rain import load_rain_set

    if args.json and Path(args.json).exists() and not args.overwrite:
        raise FileExistsError(f"{args.json} exists (use --overwrite to replace it)")
    model = load_model(args.model, args.device)
    model_task = model.spikeir_info.get("task")
    if model_task and model_task != args.task:
        raise ValueError(f"model {args.model!r} was trained for {model_task}, not {args.task}")
    if args.task == "derain" and model_in_channels(model) != 3:
        raise ValueError(f"deraining needs an RGB model; {args.model!r} takes {model_in_channels(model)} channel(s)")
    if args.task == "denoise":
        gray = model_in_channels(model) == 1
        res = evaluate_denoise(model, load_image_set(args.data, gray=gray), args.sigma, seed=args.seed)
        footer = (f"denoise, sigma {args.sigma:g}, {'gray' if gray else 'RGB'}, "
                  "PSNR in dB on 0..255 after uint8 rounding")
    else:
        desc, triples = load_rain_set(args.data, args.layout, args.rainy_half, seed=args.seed)
        print(f"{args.data}: {desc}")
        res = evaluate_derain(model, triples, y_channel=args.channel == "y", crop_border=args.crop_border,
                              tile=args.tile or None, overlap=args.overlap)
        footer = (f"derain, PSNR/SSIM on {'the Y channel (BT.601)' if args.channel == 'y' else 'RGB'}, "
                  f"crop_border {args.crop_border}, after uint8 rounding")
    res["model"] = str(args.model)
    res["data"] = str(args.data)
    w = max(8, max(len(r["name"]) for r in res["images"]))
    print(f"{'image':<{w}}  {'PSNR':>7}  {'SSIM':>6}  {'rate':>6}")
    for r in res["images"] + [{"name": "mean", **res["mean"]}]:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.3f}"
        print(f"{r['name']:<{w}}  {r['psnr']:7.2f}  {r['ssim']:.4f}  {rate:>6}")
    print(f"({footer})")
    if args.json:
        write_json_atomic(args.json, res, overwrite=args.overwrite)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .io import bundled_models, load_model, model_card
    from .models import PRESETS, build_model

    bundled, presets = [], []
    for name, path in bundled_models().items():
        m = load_model(name, "cpu")
        info = m.spikeir_info
        bundled.append({"name": name, "file": str(path), "bytes": path.stat().st_size,
                        "params": sum(p.numel() for p in m.parameters()), "model": info.get("model"),
                        "task": info.get("task"), "sigma": info.get("sigma"), "card": model_card(name)})
    for name, cfg in PRESETS.items():
        presets.append({"name": name, "params": sum(p.numel() for p in build_model(cfg).parameters()), "model": cfg})
    if args.json:
        print(json.dumps({"bundled": bundled, "presets": presets}, indent=2))
        return 0
    rows = bundled + presets
    w = max(len("name"), *(len(r["name"]) for r in rows))
    pw = max(len("params"), *(len(f"{r['params']:,}") for r in rows))
    print(f"{'name':<{w}} {'kind':<8} {'params':>{pw}}  description")
    for b in bundled:
        card = b["card"] or {}
        score = card.get("evaluation", {}).get("mean", {}).get("psnr")
        desc = (f"{b['model']['name']} {b['task'] or ''} sigma {b['sigma'] if b['sigma'] is not None else '-'}, "
                f"{b['bytes'] / 1e6:.2f} MB" + (f", held-out {score:.2f} dB" if score is not None else ""))
        print(f"{b['name']:<{w}} {'bundled':<8} {b['params']:>{pw},}  {desc}")
    for p in presets:
        desc = ", ".join(f"{k}={v}" for k, v in p["model"].items() if k != "neuron_kwargs")
        print(f"{p['name']:<{w}} {'preset':<8} {p['params']:>{pw},}  {desc}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .train import reproduce

    r = reproduce(args.run_dir, args.device, args.tolerance)
    rec, mea = r["recorded"], r["measured"]
    print(f"{args.run_dir}: validation PSNR recorded {rec['psnr']:.4f} dB, measured now {mea['psnr']:.4f} dB on "
          f"{r['device']} (trained on {r['trained_on'] or 'unknown'}); difference {r['diff_db']:+.2e} dB, "
          f"tolerance {r['tolerance_db']:g} dB: {'reproduced' if r['ok'] else 'NOT reproduced'}")
    return 1 if (args.check and not r["ok"]) else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .io import resolve_device
    from .serve import serve

    models = None
    if args.model:
        models = {}
        for item in args.model:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--model takes NAME=PATH, got {item!r}")
            if not Path(path).is_file():
                raise FileNotFoundError(f"--model {name}: no model file at {path}")
            models[name] = path
    resolve_device(args.device)  # a device that is not there is a one-line error before the server starts
    serve(args.host, args.port, models, args.device)
    return 0


def _print_energy(model, crop: np.ndarray, name: str) -> None:
    import torch

    from .energy import measure

    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    e = measure(model, [t], name=name).energy()
    ops, mem = e["ops_45nm"], e["memory_aware"]
    h, w = crop.shape[:2]
    print(f"estimated energy per {w}x{h} pixels (firing rates measured on this image): "
          f"45 nm ops SNN {ops['snn_j'] * 1e6:.1f} uJ vs ANN {ops['ann_j'] * 1e6:.1f} uJ "
          f"(x{ops['snn_over_ann']:.2f}); memory-aware SNN {mem['snn_j'] * 1e6:.1f} uJ vs ANN "
          f"{mem['ann_j'] * 1e6:.1f} uJ (x{mem['snn_over_ann']:.2f})  [spikeir energy --model {name}]")


def _print_scores(rows: list[tuple[str, float, float, float | None]], channel: str = "") -> None:
    print(f"{'':<24} {'PSNR dB' + channel:>10} {'SSIM' + channel:>9} {'firing rate':>12}")
    for label, p, s, rate in rows:
        print(f"{label:<24} {p:10.2f} {s:9.4f} {'-' if rate is None else f'{rate:.3f}':>12}")


def _demo_pair(args: argparse.Namespace, snn_name: str, ann_name: str, x: np.ndarray):
    """Run a bundled SNN (recording its spike maps) and its ANN twin on the float image ``x``.
    Returns the SNN, both outputs as uint8, the SNN's firing rate and spike maps."""
    from .data import to_uint8
    from .evaluate import restore
    from .io import load_model
    from .visualize import record_spike_maps

    snn = load_model(snn_name, args.device)
    ann = load_model(ann_name, args.device)
    with record_spike_maps(snn) as maps:
        out_snn, rate = restore(snn, x)
    out_ann, _ = restore(ann, x)
    return snn, to_uint8(out_snn), to_uint8(out_ann), rate, maps


def _demo_panel(args: argparse.Namespace, task: str, shown: tuple[str, np.ndarray], outs: list[tuple[str, np.ndarray]],
                clean: np.ndarray, maps: dict) -> None:
    from .visualize import make_panel, rate_map_image

    rate_img, peak = rate_map_image(maps)
    out = Path(args.output) / f"{task}_panel.png"
    make_panel([shown, *outs, ("clean", clean), (f"spike rate (max {peak:.2f})", rate_img)], out,
               overwrite=args.overwrite)
    print(f"panel: {out}  ({shown[0]} | SNN | ANN | clean | SNN spike-rate map)")


def _demo_denoise(args: argparse.Namespace) -> None:
    from .data import add_test_noise, builtin_images
    from .metrics import psnr, ssim

    name, clean = builtin_images("heldout", gray=True)[0]
    noisy = add_test_noise(clean, args.sigma, seed=0)
    snn, den_snn, den_ann, rate, maps = _demo_pair(args, args.snn, args.ann, noisy)
    noisy_u8 = np.clip(noisy * 255.0 + 0.5, 0, 255).astype(np.uint8)
    print(f"denoising demo: '{name}' ({clean.shape[1]}x{clean.shape[0]}, gray, held out from training), "
          f"Gaussian noise sigma {args.sigma:g}, seed 0")
    _print_scores([("noisy input", psnr(noisy_u8, clean), ssim(noisy_u8, clean), None),
                   ("SNN " + args.snn, psnr(den_snn, clean), ssim(den_snn, clean), rate),
                   ("ANN " + args.ann, psnr(den_ann, clean), ssim(den_ann, clean), None)])
    _print_energy(snn, noisy[:128, :128], args.snn)
    _demo_panel(args, "denoise", ("noisy", noisy_u8), [(f"SNN {args.snn}", den_snn), (f"ANN {args.ann}", den_ann)],
                clean, maps)


def _demo_derain(args: argparse.Namespace) -> None:
    from .data import builtin_images
    from .metrics import psnr, ssim
    from .rain import synth_rain
    from .visualize import spike_rates_by_region

    name, clean = builtin_images("heldout", gray=False)[0]
    rainy, _, mask = synth_rain(clean, "heavy", seed=0)
    x = rainy.astype(np.float64) / 255.0
    snn, der_snn, der_ann, rate, maps = _demo_pair(args, args.derain_snn, args.derain_ann, x)
    print(f"\nderaining demo: '{name}' ({clean.shape[1]}x{clean.shape[0]}, held out from training), "
          f"synthetic heavy rain, seed 0; PSNR/SSIM on the Y channel")
    y = {"y_channel": True}
    _print_scores([("rainy input", psnr(rainy, clean, **y), ssim(rainy, clean, **y), None),
                   ("SNN " + args.derain_snn, psnr(der_snn, clean, **y), ssim(der_snn, clean, **y), rate),
                   ("ANN " + args.derain_ann, psnr(der_ann, clean, **y), ssim(der_ann, clean, **y), None)])
    regions = spike_rates_by_region(maps, mask)
    valid = [r for r in regions if r["rate_rain"] is not None and r["rate_background"] is not None]
    shown = valid[:2] + [r for r in valid[2:] if r["name"].startswith("down2_3")]
    print("firing rate inside rain streaks vs background (raw: streaks are also brighter; the README "
          "compares at matched brightness): " + "; ".join(
              f"{r['name']} {r['rate_rain']:.3f} vs {r['rate_background']:.3f}" for r in shown)
          + f"  [spikeir spikes RAINY.png --model {args.derain_snn} --mask MASK.png]")
    _print_energy(snn, x[:128, :128], args.derain_snn)
    _demo_panel(args, "derain", ("rainy", rainy),
                [(f"SNN {args.derain_snn}", der_snn), (f"ANN {args.derain_ann}", der_ann)], clean, maps)


def cmd_demo(args: argparse.Namespace) -> int:
    panels = [Path(args.output) / f"{t}_panel.png" for t in ("denoise", "derain") if args.task in (t, "all")]
    for p in panels:  # refuse before spending a minute on models
        if p.exists() and not args.overwrite:
            raise FileExistsError(f"{p} exists (use --overwrite to replace it)")
    if args.task in ("denoise", "all"):
        _demo_denoise(args)
    if args.task in ("derain", "all"):
        _demo_derain(args)
    return 0


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def cmd_spikes(args: argparse.Namespace) -> int:
    from .data import read_image
    from .evaluate import model_in_channels, restore
    from .io import load_model, write_json_atomic
    from .models import is_spiking
    from .visualize import record_spike_maps, spike_map_panel, spike_rates_by_region

    if not (args.output or args.json):
        raise ValueError("nothing to write: give -o OUT.png and/or --json FILE")
    out_png = Path(args.output) if args.output else None
    for out in (out_png, args.json):
        if out is not None and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    model = load_model(args.model, args.device)
    if not is_spiking(model):
        raise ValueError(f"model {args.model!r} has no spiking neurons")
    img = read_image(args.input, gray=model_in_channels(model) == 1)
    mask = None
    if args.mask:
        mask = read_image(args.mask, gray=True) > 127
        if mask.shape != img.shape[:2]:
            raise ValueError(f"mask {args.mask} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                             f"{img.shape[1]}x{img.shape[0]}")
    x = img.astype(np.float64) / 255.0
    if args.sigma:
        from .data import add_test_noise

        x = add_test_noise(img, args.sigma, seed=0)
    with record_spike_maps(model) as maps:
        _, rate = restore(model, x)
    layers = [args.layer] if args.layer else None
    if out_png is not None:
        spike_map_panel(img, maps, out_png, layers=layers, overwrite=args.overwrite)
        print(f"spike-rate maps: {out_png} (input + {len(layers or maps)} layer(s); mean firing rate {rate:.3f})")
    result: dict = {"model": str(args.model), "input": str(args.input), "mean_firing_rate": rate,
                    "layers": [{"name": n, "rate": float(m.mean())} for n, m in maps.items()]}
    if mask is not None:
        result["mask"] = str(args.mask)
        result["layers"] = spike_rates_by_region(maps, mask)
        print(f"{'layer':<40} {'rain':>7} {'background':>11}")
        for r in result["layers"]:
            print(f"{r['name']:<40} {_fmt_rate(r['rate_rain']):>7} {_fmt_rate(r['rate_background']):>11}")
    if args.json:
        write_json_atomic(args.json, result, overwrite=args.overwrite)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_run

    print(f"curves: {plot_run(args.run_dir, args.output, overwrite=args.overwrite)}")
    return 0


def _fmt_opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def cmd_analyze(args: argparse.Namespace) -> int:
    import torch

    from .analysis import quantization_report
    from .data import add_test_noise, load_image_set
    from .evaluate import model_in_channels
    from .io import load_model, write_json_atomic

    for out in (args.json, args.plot):
        if out is not None and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    if args.crop < 0:
        raise ValueError(f"--crop must be >= 0, got {args.crop}")
    model = load_model(args.model, args.device)
    info = getattr(model, "spikeir_info", {})
    gray = model_in_channels(model) == 1
    derain = info.get("task") == "derain"
    sigma = args.sigma if args.sigma is not None else (0 if derain else info.get("sigma", 25.0))
    if not isinstance(sigma, (int, float)):
        raise ValueError(f"{args.model} was trained on a range of noise levels {sigma}; choose one with --sigma")
    dev = next(model.parameters()).device
    inputs = []
    for i, (_, img) in enumerate(load_image_set(args.images, gray=gray)):
        if args.crop:
            h, w = img.shape[:2]
            c = min(args.crop, h, w)
            img = img[(h - c) // 2 : (h - c) // 2 + c, (w - c) // 2 : (w - c) // 2 + c]
        if derain and not args.sigma:  # a derainer is analysed on what it is for: synthetic rain, seeded
            from .rain import synth_rain

            img = synth_rain(img, ("light", "heavy")[i % 2], seed=i)[0]
        x = add_test_noise(img, float(sigma), seed=i) if sigma else img.astype("float64") / 255.0
        t = torch.from_numpy(x).float()
        inputs.append((t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None].to(dev))
    rep = quantization_report(model, inputs, args.T)
    rep.update({"model_name": str(args.model), "images": args.images, "crop": args.crop, "sigma": sigma,
                "inputs": "synthetic rain (light/heavy alternate, seed = image index)" if derain and not args.sigma
                else (f"Gaussian noise sigma {sigma:g}, seed = image index" if sigma else "the images as they are"),
                "command": " ".join(["spikeir", *sys.argv[1:]])})
    print(f"{'T':>3} {'firing rate':>12} {'spikes/neuron':>14} {'quant RMS':>10} {'sat RMS':>9}   "
          "first layers: quant RMS / bound (share of elements the bound covers)")
    for sw in rep["sweeps"]:
        per = ", ".join(f"{lay['quant_rms']:.3g}/{_fmt_opt(lay['bound'])} ({_fmt_opt(lay['in_range'])})"
                        for lay in sw["layers"][:3])
        print(f"{sw['T']!s:>3} {sw['firing_rate']:12.4f} {_fmt_opt(sw['spikes_per_neuron']):>14} "
              f"{sw['quant_rms']:10.4f} {sw['sat_rms']:9.4f}   {per}"
              + (" ..." if len(sw["layers"]) > 3 else ""))
    if args.json:
        write_json_atomic(args.json, rep, overwrite=args.overwrite)
    if args.plot:
        from .data import write_image_atomic
        from .plots import line_panel

        # the energy side of the trade-off is the spike count per inference (rate x T), not the rate alone
        x = [sw["firing_rate"] if sw["spikes_per_neuron"] is None else sw["spikes_per_neuron"] for sw in rep["sweeps"]]
        series = {"quantisation": [(xi, sw["quant_rms"]) for xi, sw in zip(x, rep["sweeps"])],
                  "saturation": [(xi, sw["sat_rms"]) for xi, sw in zip(x, rep["sweeps"])]}
        ts = ", ".join(str(sw["T"]) for sw in rep["sweeps"])
        img = line_panel(f"RMS code error (y) vs spikes per neuron per image (x = rate x T), T = {ts}", series,
                         size=(560, 320))
        write_image_atomic(args.plot, np.asarray(img), overwrite=args.overwrite)
        print(f"plot: {args.plot}")
    return 0


def cmd_convert_ann(args: argparse.Namespace) -> int:
    import torch

    from .data import DenoisePatchSampler, load_image_set
    from .io import load_model, save_model
    from .models import DnCNN
    from .models.spiking_dncnn import convert_ann, converted_config

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    if args.T < 1 or args.batches < 1:
        raise ValueError("--T and --batches must be >= 1")
    ann = load_model(args.ann, "cpu")
    if not isinstance(ann, DnCNN):
        raise ValueError(f"convert-ann takes a trained DnCNN (an ANN twin); {args.ann!r} is a {type(ann).__name__}")
    info = getattr(ann, "spikeir_info", {})
    gray = bool(info.get("gray", True))
    sigma = args.sigma if args.sigma is not None else info.get("sigma", 25.0)
    imgs = [im for _, im in load_image_set(args.calib, gray=gray)]
    sampler = DenoisePatchSampler(imgs, patch=args.patch, batch_size=8, seed=0,
                                  sigma=tuple(sigma) if isinstance(sigma, list) else float(sigma))
    torch.manual_seed(0)
    calib = torch.cat([sampler.batch(i)[0] for i in range(args.batches)])
    from .models.spiking_dncnn import QuantReLU

    qat = [m.T for m in ann.modules() if isinstance(m, QuantReLU)]
    method = args.threshold
    if qat:  # a quantisation-aware twin brings the thresholds it learned
        method = f"learned by the quant_T={qat[0]} twin"
        if qat[0] != args.T:
            print(f"spikeir: warning: {args.ann} learned its thresholds for T={qat[0]}, converting to T={args.T}",
                  file=sys.stderr)
    snn = convert_ann(ann, args.T, calib, args.threshold, args.percentile)
    ths = [float(m.v_threshold.detach()) for m in snn.modules() if hasattr(m, "v_threshold")]
    save_model(out, snn, converted_config(ann, args.T), task="denoise", gray=gray, sigma=sigma,
               converted_from=str(args.ann), conversion={"T": args.T, "threshold": method,
                                                         "percentile": args.percentile, "calib": args.calib,
                                                         "calib_patches": int(calib.shape[0]), "thresholds": ths})
    print(f"converted {args.ann} to an IF network with T={args.T} ({method} thresholds "
          f"{', '.join(f'{t:.3g}' for t in ths)}): {out}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .release import cmd_convert as run

    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import cmd_export as run

    return run(args)


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from .rain import LAYOUTS

    p = argparse.ArgumentParser(prog="spikeir", description="Image restoration with spiking neural networks.")
    p.add_argument("--version", action="version", version=f"spikeir {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML recipe")
    t.add_argument("config", help="YAML recipe (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted)")
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    for name, helptext, default in (("denoise", "denoise image files or folders into PNGs", "spiden-s25"),
                                    ("derain", "derain image files or folders into PNGs", "esdnet-s")):
        d = sub.add_parser(name, help=helptext)
        d.add_argument("inputs", nargs="+", help="image files or folders")
        d.add_argument("-o", "--output", required=True, help="output folder")
        d.add_argument("--model", default=default, help="bundled model name or .safetensors path")
        if name == "denoise":
            d.add_argument("--sigma", type=float, default=0.0,
                           help="add Gaussian noise of this sigma first (test protocol, seed --seed); "
                           "0 = inputs are already noisy")
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--tile", type=int, default=0, help="process in tiles of this size (0 = whole image)")
        d.add_argument("--overlap", type=int, default=8, help="tile overlap in pixels")
        d.add_argument("--device", default="auto")
        d.add_argument("--runtime", default="torch", choices=["torch", "compiled", "onnx"],
                       help="compiled: the neurons' recurrence and ESDNet's attention through torch.compile "
                       "(3-9x faster neurons; the first image compiles for seconds; needs a C++ compiler on CPU); "
                       "onnx: run the model exported to ONNX in ONNX Runtime on the CPU (faster there, see "
                       "benchmarks/bench_export.py; needs spikeir[export]; no firing rate is reported)")
        d.add_argument("--overwrite", action="store_true", help="replace existing output files")
        d.set_defaults(func=cmd_denoise if name == "denoise" else cmd_derain)

    e = sub.add_parser("eval", help="evaluate a model on a test set")
    e.add_argument("--task", default="denoise", choices=["denoise", "derain"])
    e.add_argument("--data", required=True,
                   help="denoise: folder of clean images; derain: paired rain set (any layout); or builtin:heldout")
    e.add_argument("--model", required=True, help="bundled model name or .safetensors path")
    e.add_argument("--sigma", type=float, default=25.0, help="denoise: noise level")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--layout", choices=LAYOUTS, help="derain: dataset layout (default: detect)")
    e.add_argument("--rainy-half", default="left", choices=["left", "right"],
                   help="derain, side_by_side layout: which half is rainy")
    e.add_argument("--channel", default="y", choices=["y", "rgb"], help="derain: measure on Y (default) or RGB")
    e.add_argument("--crop-border", type=int, default=0)
    e.add_argument("--tile", type=int, default=0, help="derain: tiles of this size (0 = whole image)")
    e.add_argument("--overlap", type=int, default=8)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", help="write the results as JSON here")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    e.set_defaults(func=cmd_eval)

    rp = sub.add_parser("reproduce", help="re-evaluate a finished run's model and compare with its recorded scores")
    rp.add_argument("run_dir")
    rp.add_argument("--check", action="store_true", help="exit with status 1 when the scores differ beyond tolerance")
    rp.add_argument("--tolerance", type=float, default=None,
                    help="dB (default 1e-6 on the device kind it was trained on, 0.05 across devices)")
    rp.add_argument("--device", default="auto")
    rp.set_defaults(func=cmd_reproduce)

    dm = sub.add_parser("demo", help="denoise and derain built-in images with the bundled SNNs and their ANN twins")
    dm.add_argument("-o", "--output", default="demo_out", help="folder for the panel PNGs")
    dm.add_argument("--task", default="all", choices=["all", "denoise", "derain"])
    dm.add_argument("--snn", default="spiden-s25", help="denoising SNN")
    dm.add_argument("--ann", default="dncnn-s25", help="denoising ANN twin")
    dm.add_argument("--derain-snn", default="esdnet-s", help="deraining SNN")
    dm.add_argument("--derain-ann", default="esdnet-s-ann", help="deraining ANN twin")
    dm.add_argument("--sigma", type=float, default=25.0)
    dm.add_argument("--device", default="auto")
    dm.add_argument("--overwrite", action="store_true", help="replace existing panels")
    dm.set_defaults(func=cmd_demo)

    sp = sub.add_parser("spikes", help="per-layer spike-rate maps; rain vs background rates with --mask")
    sp.add_argument("input", help="an image")
    sp.add_argument("--model", required=True, help="spiking model: bundled name or .safetensors path")
    sp.add_argument("-o", "--output", help="PNG of the input next to per-layer rate maps")
    sp.add_argument("--layer", help="only this layer (name as listed in the JSON)")
    sp.add_argument("--mask", help="PNG mask of the same size, white = rain: report rates inside vs outside")
    sp.add_argument("--sigma", type=float, default=0.0, help="add test noise of this sigma first (denoisers)")
    sp.add_argument("--json", help="write per-layer rates as JSON")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(func=cmd_spikes)

    pl = sub.add_parser("plot", help="redraw a run's training curves (loss, validation PSNR, firing rates)")
    pl.add_argument("run_dir", help="a run directory written by spikeir train")
    pl.add_argument("-o", "--output", help="PNG path (default RUN_DIR/curves.png, replaced)")
    pl.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    pl.set_defaults(func=cmd_plot)

    an = sub.add_parser("analyze", help="analyses of a spiking model: 'quantization' (code error vs sparsity)")
    an.add_argument("what", choices=["quantization"])
    an.add_argument("--model", required=True, help="spiking model: bundled name or .safetensors path")
    an.add_argument("--images", default="builtin:heldout", help="images (folder, file or builtin:NAME)")
    an.add_argument("--crop", type=int, default=128, help="centre crop of each image (0 = whole image)")
    an.add_argument("--sigma", type=float, default=None, help="test noise first (default: a denoiser's own sigma)")
    an.add_argument("--T", type=int, nargs="+", default=None, help="time steps to analyse (SpikingDnCNN)")
    an.add_argument("--json", help="write the report as JSON")
    an.add_argument("--plot", help="PNG of code error against firing rate across T")
    an.add_argument("--device", default="auto")
    an.add_argument("--overwrite", action="store_true")
    an.set_defaults(func=cmd_analyze)

    ca = sub.add_parser("convert-ann", help="ANN-to-SNN conversion baseline: a trained DnCNN twin as an IF network")
    ca.add_argument("ann", help="the trained ANN (bundled name or .safetensors path), e.g. dncnn-s25")
    ca.add_argument("-o", "--output", required=True, help="output .safetensors file")
    ca.add_argument("--T", type=int, default=4, help="time steps")
    ca.add_argument("--threshold", default="percentile", choices=["percentile", "error"],
                    help="per-layer threshold: an activation percentile (default) or the least T-step code error")
    ca.add_argument("--percentile", type=float, default=99.9)
    ca.add_argument("--calib", default="builtin:train", help="images whose noisy patches calibrate the thresholds")
    ca.add_argument("--batches", type=int, default=4, help="calibration batches of 8 patches")
    ca.add_argument("--patch", type=int, default=64)
    ca.add_argument("--sigma", type=float, default=None, help="calibration noise (default: the ANN's)")
    ca.add_argument("--overwrite", action="store_true")
    ca.set_defaults(func=cmd_convert_ann)

    c = sub.add_parser("convert", help="convert released weights to a spikeir model file")
    c.add_argument("kind", choices=["esdnet"], help="which release format")
    c.add_argument("src", help="released checkpoint (.pth/.pt, loaded without running pickled code)")
    c.add_argument("-o", "--output", required=True, help="output .safetensors file")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_convert)

    x = sub.add_parser("export", help="export a model to NIR (neuromorphic hardware) or ONNX (standard runtimes)")
    x.add_argument("model", help="bundled model name, .safetensors path or preset (untrained weights)")
    x.add_argument("--format", required=True, choices=["nir", "onnx"])
    x.add_argument("-o", "--output", required=True, help="output file (.nir or .onnx)")
    x.add_argument("--size", default="64x64", metavar="HxW", help="nir: image size of the (fixed-size) graph")
    x.add_argument("--dt", type=float, default=1e-4, help="nir: seconds per time step, recorded in the graph")
    x.add_argument("--no-readout", action="store_true",
                   help="nir: end the graph at the tail convolution (the host averages over T and subtracts)")
    x.add_argument("--spikes", action="store_true", help="onnx: add every neuron's spikes as outputs")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export)

    from .energy import add_energy_parser

    add_energy_parser(sub)

    sv = sub.add_parser("serve", help="a local web page: upload an image, restore it, see spikes and energy")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="offer this model file under NAME (repeatable; default: the bundled models)")
    sv.add_argument("--device", default=None)
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("models", help="list bundled models (with their model cards) and presets")
    m.add_argument("--json", action="store_true", help="print everything, model cards included, as JSON")
    m.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except RuntimeError as e:
        import torch

        from .neurons import CompiledNeuronError
        from .train import TrainingError

        if isinstance(e, (TrainingError, CompiledNeuronError)):
            return _fail(str(e))
        if isinstance(e, torch.cuda.OutOfMemoryError):
            return _fail("out of GPU memory; process large images in tiles (--tile 256) or use --device cpu")
        raise
    except Exception as e:
        from PIL import Image

        if isinstance(e, Image.DecompressionBombError):
            return _fail(f"image too large to read safely: {e}")
        raise


if __name__ == "__main__":
    sys.exit(main())
