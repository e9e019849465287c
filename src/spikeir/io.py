"""Model files: safetensors weights with the model config in the metadata, written atomically.

A model file is self-describing: ``spikeir`` rebuilds the network from the file alone. Its
metadata key ``"spikeir"`` holds JSON ``{"model": {...config...}, "task": ..., ...}``.
Bundled models live in ``spikeir/pretrained/`` and are loaded by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .models import PRESETS, build_model

__all__ = ["save_model", "read_model_file", "load_model", "bundled_models", "model_card", "PRETRAINED_DIR",
           "resolve_device", "atomic_output", "atomic_torch_save", "write_text_atomic", "write_json_atomic"]

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; anything else is checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only when the block succeeds.

    An exception leaves the old file (if any) untouched and removes the temporary file; a killed
    process leaves the old file untouched and may leave ``.NAME.tmpPID`` beside it.
    With ``overwrite=False`` an existing ``path`` is refused up front (``FileExistsError``)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists (use --overwrite to replace it)")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(path: str | os.PathLike, model: nn.Module, model_cfg: dict, **meta) -> None:
    """Write ``model``'s weights and its config to ``path`` (safetensors) atomically."""
    info = {"model": model_cfg, "spikeir_version": __version__, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={"spikeir": json.dumps(info)})


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> None:
    """Write ``text`` to a temporary file in the same folder, then rename; refuses to replace an
    existing file unless ``overwrite``."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: dict, overwrite: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", overwrite)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and ``spikeir`` metadata of a model file (no code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors model file ({e})") from None
    if "spikeir" not in meta:
        raise ValueError(f"{path} has no spikeir model config in its metadata")
    return state, json.loads(meta["spikeir"])


def bundled_models() -> dict[str, Path]:
    """Bundled, trained models shipped with the package: name -> file."""
    if not PRETRAINED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(PRETRAINED_DIR.glob("*.safetensors"))}


def model_card(name: str) -> dict | None:
    """The model card of a bundled model (``pretrained/NAME.card.json``), or ``None``."""
    path = PRETRAINED_DIR / f"{name}.card.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    allow_untrained: bool = False,
) -> nn.Module:
    """A ready model in eval mode: a bundled name, a ``.safetensors`` path written by
    :func:`save_model`, or (with ``allow_untrained=True``) a preset name with fresh weights.

    The returned module carries ``spikeir_info`` (the file's metadata)."""
    dev = resolve_device(device)
    key = str(name_or_path)
    bundled = bundled_models()
    if key in bundled:
        path: Path | None = bundled[key]
    elif Path(key).suffix == ".safetensors" or Path(key).is_file():
        path = Path(key)
    elif key in PRESETS:
        if not allow_untrained:
            raise ValueError(
                f"{key!r} is a preset without trained weights; train it with `spikeir train` "
                f"or pick a bundled model: {', '.join(bundled) or 'none installed'}"
            )
        path = None
    else:
        names = sorted(set(bundled) | set(PRESETS))
        raise ValueError(f"unknown model {key!r}: not a file, bundled model or preset ({', '.join(names)})")
    if path is None:
        info = {"model": dict(PRESETS[key]), "untrained": True}
        model = build_model(info["model"])
    else:
        state, info = read_model_file(path)
        if not isinstance(info.get("model"), dict):
            raise ValueError(f"{path}: its spikeir metadata has no model config")
        model = build_model(info["model"])
        own = model.state_dict()
        wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]  # in layer order
        if wrong:
            more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
            raise ValueError(f"{path}: weights do not match the model config: {len(wrong)} shape mismatch(es): "
                             f"{'; '.join(wrong[:5])}{more}")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # anything else load_state_dict refuses
            detail = str(e).splitlines()[-1].strip()
            raise ValueError(f"{path}: weights do not match the model config ({detail})") from None
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match the model config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.spikeir_info = info  # type: ignore[attr-defined]
    return model.to(dev).eval()
