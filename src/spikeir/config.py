"""YAML run configs: loading, ``--set key.sub=value`` overrides, defaults."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

__all__ = ["load_config", "apply_overrides", "DEFAULTS", "merge"]

DEFAULTS: dict = {
    "task": "denoise",
    "model": {},
    "data": {
        "train": "builtin:train",
        "val": "builtin:val",
        "gray": True,
        "patch": 40,
        "batch_size": 16,
        "sigma": 25.0,
        "val_sigma": 25.0,
        "val_crop": 256,
    },
    "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999]},
    "sched": {"warmup": 100, "min_lr": 1e-6},
    "loss": "mse",
    "train": {
        "steps": 1000,
        "seed": 0,
        "grad_clip": 1.0,
        "log_every": 25,
        "val_every": 250,
        "ckpt_every": 250,
        "keep_ckpts": 2,
        "threads": None,
    },
}


def merge(base: dict, over: dict) -> dict:
    """Recursive dict merge: ``over`` wins; nested dicts are merged, other values replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _number_or(value):
    """YAML 1.1 reads ``2e-4`` (no dot) as a string; users mean a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_number_or(v) for v in value]
    if isinstance(value, dict):
        return {k: _number_or(v) for k, v in value.items()}
    return value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``1e-3``, ``[0, 55]``, ``true``)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set: bad key {key!r}")
        try:
            value = _number_or(yaml.safe_load(raw))
        except yaml.YAMLError as e:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise ValueError(f"--set {key}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """Defaults, then the YAML file, then the overrides."""
    user: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no such config file: {p}")
        try:
            user = _number_or(yaml.safe_load(p.read_text()) or {})
        except yaml.YAMLError as e:
            raise ValueError(f"{p} is not valid YAML: {e}") from None
        if not isinstance(user, dict):
            raise ValueError(f"{p} must hold a mapping at the top level")
    return apply_overrides(merge(DEFAULTS, user), overrides or [])
