"""Load and convert the authors' released checkpoints (ESDNet) without executing pickled code.

A release ``.pth`` is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
plain containers and refuses any other object; ``.safetensors`` files hold tensors only. The model
configuration is inferred from the tensor names and shapes, then the weights load strictly.

Command line (wired in ``cli.py``): ``spikeir convert esdnet RELEASE.pth -o OUT.safetensors``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .models.esdnet import ESDNet

__all__ = ["load_esdnet_release", "esdnet_config_from_state", "convert_esdnet_release", "cmd_convert"]

_NEST_KEYS = ("state_dict", "model", "params", "params_ema", "net", "model_state_dict", "network")
_ANCHOR = "patch_embed.proj.weight"


def _read(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors has its own error types
            raise ValueError(f"{path} is not a readable safetensors file ({_first_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for foreign objects, RuntimeError/EOFError for corrupt files
        raise ValueError(f"refusing to load {path}: not a plain tensor checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    """One informative line of an error: torch's weights-only refusal names the foreign global."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it references {found.group(1)}, which weights-only loading refuses"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def _state_dict(obj: object, what: str) -> dict[str, torch.Tensor]:
    """The ESDNet state dict inside ``obj``: unnest common wrapper keys, strip ``module.``."""
    for _ in range(4):
        if not isinstance(obj, Mapping) or any(str(k).endswith(_ANCHOR) for k in obj):
            break
        nested = next((obj[k] for k in _NEST_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} is not an ESDNet release checkpoint (holds a {type(obj).__name__}, not a dict)")
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    if _ANCHOR not in state:
        keys = ", ".join(list(state)[:4]) or "none"
        raise ValueError(f"{what} is not an ESDNet release checkpoint (no {_ANCHOR!r}; keys: {keys})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{what} is not an ESDNet release checkpoint ({bad[0]!r} is not a tensor)")
    return state


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(rf"^{prefix}\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pat.match(k))})


def esdnet_config_from_state(state: Mapping[str, torch.Tensor]) -> dict:
    """ESDNet constructor arguments read off a release state dict (names and shapes)."""
    try:
        emb = state[_ANCHOR]
        out = state["output.0.weight"]
        ta = state["encoder_level1.0.attn.ta.sharedMLP.0.weight"]
    except KeyError as e:
        raise ValueError(f"not an ESDNet release checkpoint (missing {e.args[0]!r})") from None
    cfg = {
        "in_channels": int(emb.shape[1]),
        "out_channels": int(out.shape[0]),
        "dim": int(emb.shape[0]),
        "en_num_blocks": [_count(state, f"encoder_level{k}") for k in (1, 2, 3)],
        "de_num_blocks": [_count(state, f"decoder_level{k}") for k in (1, 2, 3)],
        "T": int(ta.shape[1]),  # [max(1, T//4), T, 1, 1, 1]
    }
    if min(cfg["en_num_blocks"] + cfg["de_num_blocks"]) < 1:
        raise ValueError(f"not an ESDNet release checkpoint (a level has no blocks: {cfg})")
    return cfg


def load_esdnet_release(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    device: str | torch.device | None = None,
) -> ESDNet:
    """An :class:`ESDNet` in eval mode holding a released checkpoint's weights.

    Args:
        path_or_state_dict: a ``.pth``/``.pt`` checkpoint (the state dict, possibly nested under
            ``state_dict``/``model``/``params``/``net``, possibly with DataParallel's ``module.``
            prefix), a ``.safetensors`` file, or an in-memory state dict.
        device: where to put the model (default: CPU; ``"auto"`` picks CUDA when available).

    The model is float64 when the checkpoint is, float32 otherwise. Raises ``ValueError`` for
    anything that is not an ESDNet release checkpoint, ``FileNotFoundError`` for a missing file.
    """
    if isinstance(path_or_state_dict, Mapping):
        what, obj = "the state dict", path_or_state_dict
    else:
        what = str(path_or_state_dict)
        obj = _read(Path(path_or_state_dict))
    state = _state_dict(obj, what)
    cfg = esdnet_config_from_state(state)
    model = ESDNet(**cfg)
    if state[_ANCHOR].dtype == torch.float64:
        model = model.double()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"{what} does not match an ESDNet {cfg}: {detail}") from None
    if device is not None:
        from .io import resolve_device

        model = model.to(resolve_device(device))
    return model.eval()


def convert_esdnet_release(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Write a released ESDNet checkpoint ``src`` as a spikeir model file ``dst`` (safetensors,
    loadable with :func:`spikeir.load_model`). Returns the model config written."""
    from .io import save_model

    model = load_esdnet_release(src).float()
    model_cfg = {"name": "esdnet", **model.config}
    save_model(dst, model, model_cfg, task="derain", source=f"ESDNet release: {Path(src).name}")
    return model_cfg


_CONVERTERS = {"esdnet": convert_esdnet_release}


def cmd_convert(args: argparse.Namespace) -> int:
    """``spikeir convert KIND SRC -o OUTPUT [--overwrite]``: ``args.kind``, ``args.src``,
    ``args.output``, ``args.overwrite``."""
    if args.kind not in _CONVERTERS:
        raise ValueError(f"unknown checkpoint kind {args.kind!r}; choose one of {sorted(_CONVERTERS)}")
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file, got {out}")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    cfg = _CONVERTERS[args.kind](args.src, out)
    shown = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    print(f"{args.src} -> {out} ({cfg['name']}: {shown})")
    return 0
