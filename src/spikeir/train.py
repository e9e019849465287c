"""The trainer behind ``spikeir train``: surrogate-gradient BPTT for spiking models (and plain
backprop for their ANN twins) under one loop.

A run directory holds ``config.yaml`` (the resolved config), ``run.json`` (config, git revision,
package versions, hardware, seed, and name, shape and SHA-256 of every training image's pixels;
a resumed leg adds ``run.resume-STEP.json``), ``log.jsonl`` (one JSON object per
logged step or validation), ``checkpoints/step_XXXXXXX.pt`` (weights, optimizer, step, RNG; the
last ``keep_ckpts`` kept; written to a temporary file and renamed) and, at the end,
``model.safetensors`` (weights + model config, loadable with :func:`spikeir.load_model`).
Training batches are a pure function of ``(seed, step)``, so ``--resume`` continues exactly.

Workflow keys (all off by default; :mod:`spikeir.train_tools`): ``train.ema: DECAY`` (validated
as ``val_psnr_ema``, saved as ``model_ema.safetensors``), ``train.accum_steps: N`` (N micro-batches
per optimiser step), ``train.amp: bf16|fp16`` (autocast; each validation logs the share of spikes
that flip against fp32), ``train.best: METRIC`` (``model_best.safetensors``), ``data.val`` as a
list (each set logged under ``val_sets``; the first is the main one) and ``train.tensorboard: true``.

Two ways to bring an ANN into a spiking run:

* ``train.init_from: FILE`` starts a ``spiking_dncnn`` from a trained ``dncnn`` of the same
  layout (weights copied; thresholds learned by a ``quant_T`` twin, or chosen from the ANN's
  activations), then trains in the spike domain.
* ``distill: {teacher: FILE, hints: {...}, ...}`` adds feature hints from a frozen ANN teacher
  (:mod:`spikeir.distill`); each loss term is logged under ``terms``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from . import distributed as ddp
from .data import DenoisePatchSampler, load_image_set
from .evaluate import evaluate_denoise, evaluate_derain
from .io import atomic_output, atomic_torch_save, resolve_device, save_model, write_json_atomic
from .metrics import ssim_torch
from .models import PRESETS, build_model, is_spiking
from .neurons import compact_spike_storage, record_firing_rates
from .plots import plot_run
from .rain import RainPatchSampler, load_rain_set, synthetic_rain_set
from .train_tools import EMA, BestKeeper, TensorBoardLog, amp_dtype, autocast, spike_flips

__all__ = ["train", "reproduce", "RateRegulariser", "REPRODUCE_TOL_DB", "run_record", "resolve_model_cfg", "lr_at",
           "TrainingError", "TASKS", "DenoiseTask", "DerainTask"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says why."""


def resolve_model_cfg(model_cfg: dict) -> dict:
    """Expand ``{"preset": NAME, ...}`` into a full model config (extra keys override)."""
    cfg = dict(model_cfg)
    preset = cfg.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg = {**PRESETS[preset], **cfg}
    if "name" not in cfg and "class" not in cfg:
        raise ValueError("model config needs a 'name', a 'preset' or a 'class' (package.module:Class)")
    return cfg


def lr_at(step: int, total: int, lr: float, warmup: int, min_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class RateRegulariser:
    """``loss.rate_reg: {weight: w, target: r}``: adds ``w * mean_l max(0, rate_l - r)`` over the
    spiking layers ``l``, where ``rate_l`` is the layer's mean spike count per neuron and step in
    this batch, taken from the spikes themselves so the surrogate gradient pushes it down."""

    def __init__(self, model: nn.Module, weight: float, target: float) -> None:
        from .neurons import BaseNeuron

        if weight < 0 or not 0 <= target <= 1:
            raise ValueError(f"loss.rate_reg needs weight >= 0 and 0 <= target <= 1, got {weight}, {target}")
        self.weight, self.target = float(weight), float(target)
        self.neurons = [m for m in model.modules() if isinstance(m, BaseNeuron)]
        if not self.neurons:
            raise ValueError("loss.rate_reg needs a spiking model")
        self._outs: list[torch.Tensor] = []
        for m in self.neurons:
            m.register_forward_hook(self._hook)
        self.active = False

    def _hook(self, mod, _inp, out: torch.Tensor) -> None:
        if self.active:
            s = out / mod.threshold(out.dim() - 1).detach().to(out.dtype) if mod.scale_output else out
            self._outs.append(s.mean())

    def penalty(self) -> torch.Tensor:
        rates = torch.stack(self._outs)
        self._outs = []
        return self.weight * torch.relu(rates - self.target).mean()


def _loss_spec(spec) -> tuple[str, dict | None]:
    """``loss: NAME`` or ``loss: {name: NAME, rate_reg: {weight, target}}``."""
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict):
        rr = spec.get("rate_reg")
        if rr is not None and (not isinstance(rr, dict) or set(rr) - {"weight", "target"}):
            raise ValueError(f"loss.rate_reg must be {{weight: W, target: R}}, got {rr!r}")
        return str(spec.get("name", "mse")), rr
    raise ValueError(f"loss must be a name or a mapping with 'name' (and 'rate_reg'), got {spec!r}")


def _loss_fn(name: str):
    if name == "ssim":  # 1 - SSIM (11x11 Gaussian, on [0, 1]), the ESDNet release's loss
        return lambda a, b: 1.0 - ssim_torch(a, b, peak=1.0).mean()
    if name == "mse":
        return nn.functional.mse_loss
    if name == "l1":
        return nn.functional.l1_loss
    if name == "charbonnier":
        return lambda a, b: torch.sqrt((a - b) ** 2 + 1e-6).mean()
    raise ValueError(f"unknown loss {name!r}; choose mse, l1, charbonnier or ssim")


def _make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    name = cfg.get("name", "adam").lower()
    kw = {"lr": float(cfg["lr"]), "weight_decay": float(cfg.get("weight_decay", 0.0)),
          "betas": tuple(cfg.get("betas", (0.9, 0.999)))}
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    raise ValueError(f"unknown optimizer {name!r}; choose adam or adamw")


def _center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return img
    H, W = img.shape[:2]
    y, x = max(0, (H - size) // 2), max(0, (W - size) // 2)
    return img[y : y + size, x : x + size]


def _fingerprints(named) -> list[dict]:
    """Name, shape and SHA-256 of the decoded pixels of each training image (for ``run.json``)."""
    return [{"name": n, "shape": list(im.shape),
             "sha256": hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest()} for n, im in named]


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_record(cfg: dict, task, dev: torch.device) -> dict:
    """What ``run.json`` holds: config, code revision, package versions, hardware, seed, data."""
    from importlib import metadata

    from . import __version__

    versions = {"spikeir": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("numpy", "pillow", "scikit-image", "safetensors"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    hw = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
          "device": str(dev), "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(dev)
    return {"config": cfg, "git_revision": _git_revision(), "versions": versions, "hardware": hw,
            "seed": int(cfg["train"]["seed"]), "train_data": getattr(task, "sources", []),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _val_specs(dcfg: dict) -> list[str]:
    """``data.val``: one set or a list of sets (``builtin:NAME`` or folders)."""
    v = dcfg.get("val")
    if not v:
        return []
    specs = v if isinstance(v, list) else [v]
    if not all(isinstance(x, str) and x for x in specs):
        raise ValueError(f"data.val must be a data set or a list of data sets, got {v!r}")
    return [str(x) for x in specs]


def _validate_sets(sets: dict[str, list], run) -> dict | None:
    """Validate on every set; the first set's result is the main one (``mean``, ``images``) and
    ``sets`` maps each set to its mean."""
    results = {spec: run(items) for spec, items in sets.items() if items}
    if not results:
        return None
    first = next(iter(results.values()))
    return {**first, "sets": {spec: r["mean"] for spec, r in results.items()}}


class DenoiseTask:
    """Gaussian denoising: random patches of clean images with fresh noise; validation on
    centre crops of ``data.val`` under the test protocol."""

    name = "denoise"

    def __init__(self, dcfg: dict, seed: int) -> None:
        self.gray = bool(dcfg.get("gray", True))
        self.channels = 1 if self.gray else 3
        self.sigma = dcfg["sigma"]
        self.val_sigma = float(dcfg.get("val_sigma", 25.0))
        named = load_image_set(dcfg["train"], gray=self.gray)
        self.sources = _fingerprints(named)
        imgs = [im for _, im in named]
        self.sampler = DenoisePatchSampler(
            imgs, patch=int(dcfg["patch"]), batch_size=int(dcfg["batch_size"]), seed=seed,
            sigma=tuple(self.sigma) if isinstance(self.sigma, list) else float(self.sigma))
        crop = dcfg.get("val_crop")
        self.val_sets = {spec: [(n, _center_crop(im, crop)) for n, im in load_image_set(spec, self.gray)]
                         for spec in _val_specs(dcfg)}

    def validate(self, model: nn.Module, dev: torch.device) -> dict | None:
        return _validate_sets(self.val_sets, lambda items: evaluate_denoise(model, items, self.val_sigma, dev))

    def first_val_input(self) -> torch.Tensor | None:
        """The first validation image as the model sees it, ``[1, C, H, W]`` (noisy, seed 0)."""
        from .data import add_test_noise

        items = next((v for v in self.val_sets.values() if v), None)
        if not items:
            return None
        x = torch.from_numpy(add_test_noise(items[0][1], self.val_sigma, seed=0)).float()
        return (x[None] if x.dim() == 2 else x.permute(2, 0, 1))[None]

    def meta(self) -> dict:
        return {"task": "denoise", "gray": self.gray, "sigma": self.sigma}


class DerainTask:
    """Deraining: aligned crops of a paired rain dataset (``data.train_pairs``, any layout) or
    of clean images (``data.train``) with fresh synthetic rain (``data.rain``: light, heavy,
    mixed); validation on ``data.val`` with synthetic rain (fixed seeds) or ``data.val_pairs``,
    PSNR/SSIM on the Y channel."""

    name = "derain"
    channels = 3

    def __init__(self, dcfg: dict, seed: int) -> None:
        self.preset = dcfg.get("rain", "mixed")
        if dcfg.get("train_pairs"):
            _, triples = load_rain_set(str(dcfg["train_pairs"]), dcfg.get("layout"), dcfg.get("rainy_half", "left"))
            self.sources = _fingerprints([(n, np.concatenate([r.ravel(), c.ravel()])) for n, r, c in triples])
            self.sampler = RainPatchSampler(pairs=[(r, c) for _, r, c in triples], patch=int(dcfg["patch"]),
                                            batch_size=int(dcfg["batch_size"]), seed=seed)
        else:
            named = load_image_set(dcfg["train"], gray=False)
            self.sources = _fingerprints(named)
            imgs = [im for _, im in named]
            self.sampler = RainPatchSampler(images=imgs, patch=int(dcfg["patch"]), batch_size=int(dcfg["batch_size"]),
                                            preset=self.preset, seed=seed)
        sets = {}
        if dcfg.get("val_pairs"):
            sets[str(dcfg["val_pairs"])] = load_rain_set(str(dcfg["val_pairs"]), dcfg.get("layout"),
                                                         dcfg.get("rainy_half", "left"))[1]
        else:
            sets = {spec: synthetic_rain_set(spec, self.preset) for spec in _val_specs(dcfg)}
        crop = dcfg.get("val_crop")
        self.val_sets = {spec: [(n, _center_crop(r, crop), _center_crop(c, crop)) for n, r, c in triples]
                         for spec, triples in sets.items()}

    def validate(self, model: nn.Module, dev: torch.device) -> dict | None:
        return _validate_sets(self.val_sets, lambda items: evaluate_derain(model, items, dev))

    def first_val_input(self) -> torch.Tensor | None:
        """The first validation image as the model sees it, ``[1, 3, H, W]`` (rainy)."""
        items = next((v for v in self.val_sets.values() if v), None)
        if not items:
            return None
        return torch.from_numpy(items[0][1]).float().div(255.0).permute(2, 0, 1)[None]

    def meta(self) -> dict:
        return {"task": "derain", "gray": False, "rain": self.preset}


TASKS = {"denoise": DenoiseTask, "derain": DerainTask}


def _checkpoints(run: Path) -> list[Path]:
    """Checkpoints of a run, oldest first (ordered by step number, not by name)."""
    return sorted((run / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


# keys that may differ between the legs of a resumed run without changing what is trained
_RESUME_FREE = {("train", "stop_at"), ("train", "threads"), ("train", "dist_timeout"), ("train", "log_every"),
                ("train", "val_every"), ("train", "ckpt_every"), ("train", "keep_ckpts"), ("train", "compact_spikes")}


def _config_diff(a: dict, b: dict, prefix: tuple = ()) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = (*prefix, k)
        if key in _RESUME_FREE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, key)
        elif va != vb:
            out.append(f"{'.'.join(key)}: {va!r} -> {vb!r}")
    return out


# The settings each section reads; anything else is a typo that would otherwise train with a
# default silently (``model`` is checked by the model's constructor, ``distill`` by distill.KEYS).
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "": ("task", "model", "data", "optim", "sched", "loss", "train", "distill"),
    "train": ("steps", "seed", "grad_clip", "log_every", "val_every", "ckpt_every", "keep_ckpts", "threads",
              "init_from", "stop_at", "accum_steps", "amp", "ema", "best", "tensorboard", "compact_spikes",
              "max_bad_steps", "sync_bn", "dist_timeout"),
    "data": ("train", "val", "gray", "patch", "batch_size", "sigma", "val_sigma", "val_crop", "rain",
             "train_pairs", "val_pairs", "layout", "rainy_half"),
    "optim": ("name", "lr", "weight_decay", "betas"),
    "sched": ("warmup", "min_lr"),
    "loss": ("name", "rate_reg"),
}


def _check_keys(cfg: dict) -> None:
    import difflib

    for sect, known in CONFIG_KEYS.items():
        node = cfg if not sect else cfg.get(sect)
        if not isinstance(node, dict):
            continue
        for key in node:
            if key not in known:
                where = f"{sect}.{key}" if sect else key
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ValueError(f"unknown config setting {where!r}; {hint}valid{' in ' + sect if sect else ''}: "
                                 f"{', '.join(known)}")


def _validate_config(cfg: dict) -> None:
    """Catch config mistakes up front, as one-line errors (not tracebacks mid-run)."""
    for sect in ("train", "data", "optim", "sched"):
        if not isinstance(cfg.get(sect), dict):
            raise ValueError(f"config section {sect!r} must be a mapping, got {cfg.get(sect)!r}")
    _check_keys(cfg)
    if not isinstance(cfg.get("model"), dict):
        raise ValueError(f"config section 'model' must be a mapping, got {cfg.get('model')!r}")
    t = cfg["train"]
    for key in ("steps", "log_every", "val_every", "ckpt_every", "keep_ckpts", "accum_steps"):
        v = t.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1 or int(v) != v:
            raise ValueError(f"train.{key} must be a whole number >= 1, got {v!r}")
    for key in ("patch", "batch_size"):
        v = cfg["data"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"data.{key} must be a whole number >= 1, got {v!r}")
    lr = cfg["optim"].get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"optim.lr must be a positive number, got {lr!r}")
    if not isinstance(cfg["optim"].get("name", "adam"), str):
        raise ValueError(f"optim.name must be a string, got {cfg['optim'].get('name')!r}")


def _rewrite_log(path: Path, upto: int) -> None:
    """Drop log records past the resumed checkpoint's step (they belong to the lost tail)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= upto:
            keep.append(line)
    with atomic_output(path) as tmp:
        tmp.write_text("".join(x + "\n" for x in keep))


def _drop_stale_best(run: Path, best, start: int) -> None:
    """On resume: a ``model_best.safetensors`` written after the resumed checkpoint belongs to the
    lost tail of the run. Remove it and forget the best score, so the next validation writes a
    best model of this run's own history again."""
    path = run / "model_best.safetensors"
    if best is None or not path.is_file():
        return
    from .io import read_model_file

    step = (read_model_file(path)[1].get("best") or {}).get("step")
    if step is None or step > start:
        path.unlink()
        best.value = -math.inf if best.mode == "max" else math.inf
        best.step = None


def _init_from_ann(model: nn.Module, path: str, task, dev: torch.device) -> dict:
    """``train.init_from``: start a spiking DnCNN (or a quantisation-aware DnCNN) from a trained
    DnCNN twin (weights copied, thresholds handed over or calibrated on four training batches)."""
    from .io import load_model
    from .models import DnCNN, SpikingDnCNN
    from .models.spiking_dncnn import QuantReLU, init_from_ann

    ann = load_model(path, dev)
    quant_target = isinstance(model, DnCNN) and any(isinstance(m, QuantReLU) for m in model.modules())
    if not (isinstance(model, SpikingDnCNN) or quant_target) or not isinstance(ann, DnCNN):
        raise ValueError(f"train.init_from needs a spiking_dncnn (or a dncnn with quant_T) model and a trained dncnn "
                         f"file; got {type(model).__name__} and {type(ann).__name__} ({path})")
    calib = torch.cat([task.sampler.batch(10**9 + i)[0] for i in range(4)]).to(dev)
    ths = init_from_ann(model, ann, calib)
    return {"path": path, "thresholds": ths}


def _make_distiller(dist_cfg: dict, model: nn.Module, task, dev: torch.device, steps: int):
    """The ``distill:`` section: a frozen ANN teacher from a model file or bundled name."""
    from .distill import Distiller
    from .io import load_model

    if not isinstance(dist_cfg, dict) or not dist_cfg.get("teacher"):
        raise ValueError("config section 'distill' needs a 'teacher' (a trained ANN model file or bundled name)")
    teacher = load_model(str(dist_cfg["teacher"]), dev)
    if is_spiking(teacher):
        raise ValueError(f"distill.teacher must be an ANN; {dist_cfg['teacher']} is a spiking model")
    t_in = teacher.spikeir_info.get("model", {}).get("in_channels")
    if t_in is not None and t_in != task.channels:
        raise ValueError(f"distill.teacher takes {t_in} channel(s) but the {task.name} data has {task.channels}")
    return Distiller(dist_cfg, model, teacher, task.channels, steps)


# Re-evaluating a saved model reproduces its recorded validation PSNR to this many dB on the same
# kind of device. Across CPU/CUDA, or whole vs tiled inference, float32 sums differ in the last
# bits and a few membrane potentials that sit exactly at a threshold flip their spike; on the
# bundled models that moves PSNR by well under 0.01 dB, hence the cross-device default below.
REPRODUCE_TOL_DB = {"same_device": 1e-6, "cross_device": 0.05}


def reproduce(run_dir: str | Path, device: str | None = None, tol_db: float | None = None) -> dict:
    """Re-evaluate ``RUN_DIR/model.safetensors`` on the run's own validation data (from its
    ``config.yaml``, same protocol) and compare with the scores recorded when it was saved.

    Returns ``{"recorded", "measured", "diff_db", "tolerance_db", "ok"}``."""
    from .io import load_model

    run = Path(run_dir)
    for f in ("config.yaml", "model.safetensors"):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run / f} does not exist (is {run} a finished run?)")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    _validate_config(cfg)
    dev = resolve_device(device)
    model = load_model(run / "model.safetensors", dev)
    recorded = model.spikeir_info.get("val")
    if not recorded:
        raise ValueError(f"{run / 'model.safetensors'} records no validation scores to reproduce")
    task = TASKS[cfg.get("task", "denoise")](cfg["data"], int(cfg["train"]["seed"]))
    measured = task.validate(model, dev)
    if measured is None:
        raise ValueError(f"the config of {run} names no validation data")
    measured = measured["mean"]
    trained_on = (json.loads((run / "run.json").read_text()).get("hardware") or {}).get("device") \
        if (run / "run.json").is_file() else None
    same = trained_on is not None and torch.device(trained_on).type == dev.type
    tol = float(tol_db) if tol_db is not None else REPRODUCE_TOL_DB["same_device" if same else "cross_device"]
    diff = measured["psnr"] - recorded["psnr"]
    return {"recorded": recorded, "measured": measured, "diff_db": diff, "tolerance_db": tol,
            "ok": abs(diff) <= tol, "trained_on": trained_on, "device": str(dev)}


def train(
    cfg: dict,
    out_dir: str | Path,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train the model described by ``cfg`` (see :mod:`spikeir.config`) into ``out_dir``.

    ``train.stop_at`` ends the run early after a checkpoint (to split a long run across jobs;
    continue it with ``resume=True``). Returns the final validation result (``evaluate_denoise``
    output) plus ``"steps"``."""
    run = Path(out_dir)
    _validate_config(cfg)
    dist_info, dev = ddp.setup(resolve_device(device), float(cfg["train"].get("dist_timeout", 3600)))
    try:
        return _train(cfg, run, dev, dist_info, resume, progress)
    finally:
        ddp.teardown(dist_info)


def _train(cfg: dict, run: Path, dev: torch.device, dist_info: ddp.DistInfo, resume: bool, progress: bool) -> dict:
    main = dist_info.main
    tcfg, dcfg = cfg["train"], cfg["data"]
    if dist_info.active and int(dcfg["batch_size"]) % dist_info.world:
        raise ValueError(f"data.batch_size {dcfg['batch_size']} (the global batch) must divide evenly over "
                         f"{dist_info.world} processes")
    if tcfg.get("sync_bn") and dev.type != "cuda":
        raise ValueError("train.sync_bn needs CUDA devices (NCCL); on the CPU each process keeps its own "
                         "BatchNorm statistics")
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    existing = _checkpoints(run)
    if existing and not resume:
        raise FileExistsError(f"{run} already holds checkpoints; pass --resume to continue it or choose another --out")
    if (run / "model.safetensors").exists():
        raise FileExistsError(f"{run} already holds a finished run (model.safetensors); choose another --out")
    if resume and not existing:
        raise FileNotFoundError(f"--resume: no checkpoints in {run / 'checkpoints'}")

    seed = int(tcfg["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    if cfg.get("task", "denoise") not in TASKS:
        raise ValueError(f"unknown task {cfg.get('task')!r}; choose one of {sorted(TASKS)}")
    task = TASKS[cfg.get("task", "denoise")](dcfg, seed)
    model_cfg = resolve_model_cfg(cfg["model"])
    model_cfg.setdefault("in_channels", task.channels)
    if model_cfg["in_channels"] != task.channels:
        raise ValueError(f"model in_channels={model_cfg['in_channels']} but the {task.name} data has {task.channels}")
    model = build_model(model_cfg).to(dev)
    spiking = is_spiking(model)

    steps = int(tcfg["steps"])
    distiller = _make_distiller(cfg["distill"], model, task, dev, steps) if cfg.get("distill") else None
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller else [])
    opt = _make_optimizer(params, cfg["optim"])
    loss_name, rate_cfg = _loss_spec(cfg.get("loss", "mse"))
    loss_fn = _loss_fn(loss_name)
    rate_reg = (RateRegulariser(model, float(rate_cfg.get("weight", 0.0)), float(rate_cfg.get("target", 0.0)))
                if rate_cfg else None)
    base_lr = float(cfg["optim"]["lr"])
    warmup, min_lr = int(cfg["sched"].get("warmup", 0)), float(cfg["sched"].get("min_lr", 0.0))

    accum = int(tcfg.get("accum_steps", 1))
    adt = amp_dtype(tcfg.get("amp"), dev)
    compact = tcfg.get("compact_spikes", True)
    if not isinstance(compact, bool):
        raise ValueError(f"train.compact_spikes must be true or false, got {compact!r}")
    scaler = torch.amp.GradScaler("cuda") if adt == torch.float16 else None  # bf16 needs no loss scaling
    best = BestKeeper(tcfg["best"]) if tcfg.get("best") else None
    if best is not None:
        allowed = ["val_psnr", "val_ssim"] + (["val_firing_rate"] if spiking else [])
        allowed += ["val_psnr_ema", "val_ssim_ema"] if tcfg.get("ema") else []
        if best.metric not in allowed:
            need = " (needs train.ema)" if best.metric.endswith("_ema") else ""
            raise ValueError(f"train.best: {best.metric!r} is not a validation metric of this run{need}; "
                             f"choose one of {', '.join(allowed)}")
        if not any(task.val_sets.values()):
            raise ValueError("train.best needs validation data (data.val)")
    if tcfg.get("tensorboard"):
        TensorBoardLog.check()  # fail before the run directory is made

    start = 0
    if tcfg.get("init_from") and not resume:
        log_init = _init_from_ann(model, str(tcfg["init_from"]), task, dev)

    def fresh_model() -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # building the shadow must not shift the run's RNG
            return build_model(model_cfg)

    ema = EMA(model, float(tcfg["ema"]), fresh_model) if tcfg.get("ema") else None
    if resume:
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest
        ck = torch.load(existing[-1], map_location="cpu", weights_only=True)
        diff = _config_diff(ck["config"], cfg)
        if diff:
            raise ValueError(f"--resume with a different config than the run was started with ({'; '.join(diff[:3])})")
        model.load_state_dict(ck["model"])
        if distiller is not None:
            distiller.load_state_dict(ck["distill"])
        opt.load_state_dict(ck["optim"])
        for part, name in ((ema, "ema"), (best, "best"), (scaler, "scaler")):
            if part is not None and name in ck:
                part.load_state_dict(ck[name])
        start = int(ck["step"])
        torch.set_rng_state(ck["rng"]["torch"])
        if main:
            _rewrite_log(run / "log.jsonl", start)
            _drop_stale_best(run, best, start)
    net = ddp.wrap(model, dist_info, dev, bool(tcfg.get("sync_bn")))  # what the steps run; `model` is saved
    log_f = None
    if main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        rec_name = "run.json" if start == 0 else f"run.resume-{start:07d}.json"  # each leg keeps its record
        record = run_record(cfg, task, dev)
        record["processes"] = dist_info.world
        write_json_atomic(run / rec_name, record, overwrite=True)
        log_f = (run / "log.jsonl").open("a")
    tb = None
    try:
        tb = TensorBoardLog(run, purge_step=start or None) if tcfg.get("tensorboard") and main else None

        def log(rec: dict) -> None:
            if log_f is None:  # not rank 0
                return
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            if tb is not None:
                tb.add(rec)

        def checkpoint(step: int) -> None:
            if not main:
                return
            state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                     "rng": {"torch": torch.get_rng_state()}, "config": cfg}
            if distiller is not None:
                state["distill"] = distiller.state_dict()  # the adapters (not exported with the model)
            for part, name in ((ema, "ema"), (best, "best"), (scaler, "scaler")):
                if part is not None:
                    state[name] = part.state_dict()
            atomic_torch_save(state, run / "checkpoints" / f"step_{step:07d}.pt")
            for old in _checkpoints(run)[: -int(tcfg.get("keep_ckpts", 2))]:  # keep_ckpts >= 1 (validated)
                old.unlink()

        def meta(step: int, val: dict | None, **extra) -> dict:
            return {**task.meta(), "steps": step, "train_config": cfg, "val": val, **extra}

        def validate(step: int) -> dict | None:
            if not main:
                return None
            res = task.validate(model, dev)
            if res is None:
                return None
            rec = {"step": step, "val_psnr": res["mean"]["psnr"], "val_ssim": res["mean"]["ssim"],
                   "val_firing_rate": res["mean"]["firing_rate"]}
            if len(res["sets"]) > 1:
                rec["val_sets"] = {k: {"psnr": v["psnr"], "ssim": v["ssim"]} for k, v in res["sets"].items()}
            res_ema = task.validate(ema.shadow, dev) if ema is not None else None
            if res_ema is not None:
                res["ema"] = res_ema["mean"]
                rec.update({"val_psnr_ema": res_ema["mean"]["psnr"], "val_ssim_ema": res_ema["mean"]["ssim"]})
            if adt is not None and spiking:
                flips = spike_flips(model, task.first_val_input().to(dev), adt)
                rec["amp_spike_flips"] = flips["fraction"]
                rec["amp_spikes_flipped"] = flips["flipped"]
            if best is not None and best.improved(rec, step):
                src = ema.shadow if best.uses_ema else model
                save_model(run / "model_best.safetensors", src, model_cfg,
                           **meta(step, res_ema["mean"] if best.uses_ema else res["mean"],
                                  best={"metric": best.metric, "value": best.value, "step": step}))
            log(rec)
            model.train()
            return res

        if start == 0:
            log({"event": "start", "params": sum(p.numel() for p in model.parameters()), "device": str(dev),
                 "model": model_cfg, "spiking": spiking, "processes": dist_info.world,
                 "global_batch": int(dcfg["batch_size"]) * accum,
                 "per_process_batch": int(dcfg["batch_size"]) // dist_info.world})
            if tcfg.get("init_from"):
                log({"event": "init_from", **log_init})
        else:
            log({"event": "resume", "step": start})
        stop_at = min(int(tcfg.get("stop_at") or steps), steps)
        bar = tqdm(range(start, stop_at), initial=start, total=steps, disable=not (progress and main),
                   dynamic_ncols=True, desc=f"train {model_cfg.get('name') or model_cfg['class']}")
        model.train()
        bad, bad_total = 0, 0
        t_last, n_last = time.perf_counter(), start
        val_res = None
        for step in bar:
            lr = lr_at(step, steps, base_lr, warmup, min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            want_log = (step + 1) % int(tcfg["log_every"]) == 0 or step + 1 == steps
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for micro in range(accum):  # gradient accumulation: accum micro-batches per optimiser step
                index = step if accum == 1 else step * accum + micro  # still a pure function of (seed, step)
                noisy, clean = (ddp.shard(t, dist_info).to(dev, non_blocking=True) for t in task.sampler.batch(index))
                terms = None
                last = micro == accum - 1
                # DDP decides in the forward pass whether the backward all-reduces: skip it for all but
                # the last micro-batch, so gradients are averaged over processes once per step
                with net.no_sync() if dist_info.active and not last else nullcontext():
                    with record_firing_rates(model) if want_log and last else nullcontext() as fr_m:
                        if rate_reg is not None:
                            rate_reg.active = True
                        try:
                            with distiller.capture() if distiller else nullcontext(), autocast(dev, adt), \
                                    compact_spike_storage() if compact else nullcontext():
                                out = net(noisy)
                        finally:
                            if rate_reg is not None:
                                rate_reg.active = False
                        out = out.float()
                        loss = loss_fn(out, clean)
                        if distiller is not None:
                            terms = distiller.loss_terms(noisy, out, clean, loss, step, loss_fn)
                            loss = terms.pop("loss")
                        reg = rate_reg.penalty() if rate_reg is not None else None
                        if reg is not None:
                            loss = loss + reg
                    if last:
                        fr = fr_m
                    finite = ddp.all_min(bool(torch.isfinite(loss)), dist_info, dev)  # every process skips together
                    if finite:
                        loss_sum += loss.item()
                        scaled = loss / accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                if not finite:
                    break
            if not finite:
                bad += 1
                bad_total += 1
                opt.zero_grad(set_to_none=True)
                log({"step": step + 1, "event": "nonfinite_loss", "count": bad_total})
                if bad >= int(tcfg.get("max_bad_steps", 10)):
                    raise TrainingError(f"{bad} non-finite losses in a row at step {step + 1}; stopped "
                                        f"(last good checkpoint kept in {run / 'checkpoints'})")
                if step + 1 in (steps, stop_at):  # a skipped last step still ends with a checkpoint
                    checkpoint(step + 1)
                continue
            bad = 0
            if distiller is not None:
                ddp.average_grads(distiller.parameters(), dist_info)
            if scaler is not None:
                scaler.unscale_(opt)  # clip the true gradients
            if tcfg.get("grad_clip"):
                # the student on its own: with one norm over both, the adapters' gradients would shrink
                # a distilled student's steps, and the no-hint baseline has no adapter gradients
                nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
                if distiller is not None and len(distiller.adapters):  # none for output distillation alone
                    nn.utils.clip_grad_norm_(distiller.parameters(), float(tcfg["grad_clip"]))
            stepped = True
            if scaler is not None:
                scale = scaler.get_scale()
                scaler.step(opt)
                scaler.update()
                stepped = scaler.get_scale() >= scale  # the scale drops when the step was skipped (inf grads)
            else:
                opt.step()
            if ema is not None and stepped:
                ema.update(model)
            if want_log:
                with torch.no_grad():
                    mse = ((out.detach().clamp(0, 1) - clean) ** 2).mean().item()
                now = time.perf_counter()
                its = (step + 1 - n_last) / max(now - t_last, 1e-9)
                t_last, n_last = now, step + 1
                rec = {"step": step + 1, "loss": ddp.all_mean(loss_sum / accum, dist_info, dev), "lr": lr,
                       "psnr": 10 * math.log10(1 / max(mse, 1e-12)), "it_s": its}
                if terms is not None:
                    rec["terms"] = {k: float(v) for k, v in terms.items()}
                if reg is not None:
                    rec["rate_reg"] = reg.item()
                if spiking:
                    rec["firing_rate"] = fr.mean
                    rec["layer_rates"] = fr.rates
                log(rec)
                post = {"loss": f"{rec['loss']:.4g}", "psnr": f"{rec['psnr']:.2f}", "it/s": f"{its:.2f}"}
                if spiking:
                    post["rate"] = f"{fr.mean:.3f}"
                bar.set_postfix(post)
            if (step + 1) % int(tcfg["val_every"]) == 0 and step + 1 < steps:
                validate(step + 1)
            if (step + 1) % int(tcfg["ckpt_every"]) == 0 or step + 1 in (steps, stop_at):
                checkpoint(step + 1)
        bar.close()
        if stop_at < steps:
            log({"event": "paused", "step": stop_at})
            ddp.barrier(dist_info)
            return {"steps": stop_at, "paused": True}
        if not main:
            ddp.barrier(dist_info)  # wait for rank 0 to validate and save
            return {"steps": steps}
        val_res = validate(steps) or {}
        if ema is not None:
            save_model(run / "model_ema.safetensors", ema.shadow, model_cfg,
                       **meta(steps, val_res.get("ema"), ema={"decay": ema.decay, "updates": ema.updates}))
        save_model(run / "model.safetensors", model, model_cfg, **meta(steps, val_res.get("mean")))
        end = {"event": "end", "step": steps, "val": val_res.get("mean")}
        if best is not None and best.step is not None:
            end["best"] = {"metric": best.metric, "value": best.value, "step": best.step}
        log(end)
        plot_run(run)
        ddp.barrier(dist_info)
        return {**val_res, "steps": steps}
    finally:
        if log_f is not None:
            log_f.close()  # also when training stops with an error
        if tb is not None:
            tb.close()
