"""Pieces of the training workflow that stand on their own: weight EMA, mixed precision (with
the count of spikes it flips), best-checkpoint keeping and the optional TensorBoard writer.

Each is switched on by one config key (see :mod:`spikeir.train`):

* ``train.ema: 0.999``: :class:`EMA` of the weights, validated and saved beside the raw weights.
* ``train.amp: bf16 | fp16``: autocast for the forward pass (:func:`autocast`); fp16 (CUDA only)
  uses a gradient scaler. At each validation :func:`spike_flips` reports the share of spikes that
  differ from an fp32 forward pass on the same image.
* ``train.best: val_psnr`` (or ``{metric: ..., mode: max|min}``): :class:`BestKeeper`.
* ``train.tensorboard: true``: :class:`TensorBoardLog` (needs the ``tensorboard`` package).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from .neurons import BaseNeuron

__all__ = ["EMA", "autocast", "amp_dtype", "spike_flips", "BestKeeper", "TensorBoardLog"]


class EMA:
    """Exponential moving average of a model's weights.

    After the ``n``-th optimiser step: ``w_ema <- d * w_ema + (1 - d) * w`` with
    ``d = min(decay, (1 + n) / (10 + n))``; the warm-up keeps the average from clinging to the random
    initial weights in short runs. Buffers (BatchNorm statistics, fixed thresholds) are copied,
    not averaged. ``shadow`` is a separate module of the same class, built by ``factory``."""

    def __init__(self, model: nn.Module, decay: float, factory) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema must be a decay in (0, 1), e.g. 0.999; got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow = factory().to(next(model.parameters()).device)
        self.shadow.load_state_dict(model.state_dict())
        self.shadow.eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.shadow.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])


def amp_dtype(name: str | None, device: torch.device) -> torch.dtype | None:
    """``train.amp`` as a dtype: ``None``/``"fp32"`` (off), ``"bf16"`` (CPU or CUDA), ``"fp16"`` (CUDA)."""
    if name in (None, False, "fp32", "none"):
        return None
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("train.amp: bf16 is not supported on this GPU; use fp16")
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise ValueError("train.amp: fp16 autocast needs a CUDA device; use bf16 on the CPU")
        return torch.float16
    raise ValueError(f"train.amp must be bf16, fp16 or fp32, got {name!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for the forward pass, or a no-op when ``dtype`` is ``None``."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def spike_flips(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> dict:
    """Run ``model`` on ``x`` in fp32 and under ``dtype`` autocast; count the spike elements
    (over all neurons, time steps and positions) that differ. Returns ``{"flipped", "spikes_fp32",
    "elements", "fraction"}`` with ``fraction = flipped / elements``. Flips in early layers change
    the inputs of later ones, so this is the end-to-end effect, not a per-layer rounding count."""
    neurons = [m for m in model.modules() if isinstance(m, BaseNeuron)]
    runs: list[list[torch.Tensor]] = [[], []]
    was_training = model.training
    model.eval()
    try:
        for k, ctx in enumerate((nullcontext(), torch.autocast(x.device.type, dtype=dtype))):
            hooks = [n.register_forward_hook(lambda _m, _i, o, k=k: runs[k].append(o.detach() != 0)) for n in neurons]
            try:
                with ctx:
                    model(x)
            finally:
                for h in hooks:
                    h.remove()
    finally:
        model.train(was_training)
    flipped = sum(int((a != b).sum()) for a, b in zip(*runs))
    elements = sum(a.numel() for a in runs[0])
    return {"flipped": flipped, "spikes_fp32": sum(int(a.sum()) for a in runs[0]), "elements": elements,
            "fraction": flipped / max(elements, 1)}


class BestKeeper:
    """Keeps the best model by a logged validation metric (``val_psnr``, ``val_ssim``,
    ``val_psnr_ema``, ...). ``mode`` is ``max`` unless given (``min`` for a rate or a loss)."""

    def __init__(self, spec) -> None:
        if isinstance(spec, str):
            spec = {"metric": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("metric"), str):
            raise ValueError(f"train.best must be a metric name such as val_psnr, or {{metric, mode}}; got {spec!r}")
        self.metric = spec["metric"]
        if not self.metric.startswith("val_"):
            raise ValueError(f"train.best: {self.metric!r} is not a validation metric (val_psnr, val_ssim, ...)")
        self.mode = spec.get("mode", "max")
        if self.mode not in ("max", "min"):
            raise ValueError(f"train.best.mode must be max or min, got {self.mode!r}")
        self.value = -math.inf if self.mode == "max" else math.inf
        self.step: int | None = None

    @property
    def uses_ema(self) -> bool:
        return self.metric.endswith("_ema")

    def improved(self, record: dict, step: int) -> bool:
        """Whether ``record`` (a validation log record) beats the best so far; remembers it if so."""
        if self.metric not in record:
            raise ValueError(f"train.best: no {self.metric!r} in the validation record (has: "
                             f"{', '.join(k for k in record if k.startswith('val_'))})")
        v = float(record[self.metric])
        better = v > self.value if self.mode == "max" else v < self.value
        if better:
            self.value, self.step = v, step
        return better

    def state_dict(self) -> dict:
        return {"value": self.value, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.step = float(state["value"]), state["step"]


class TensorBoardLog:
    """Every numeric value of the run's log records, as TensorBoard scalars in ``RUN/tensorboard``
    (nested keys joined with ``/``). Offline: the event files are only written, never served."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.check()
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, events logged after the checkpoint (a crashed leg's lost tail) are hidden
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    @staticmethod
    def check() -> None:
        try:
            import torch.utils.tensorboard  # noqa: F401  (imports the tensorboard package)
        except ImportError:
            raise ValueError("train.tensorboard needs the tensorboard package (pip install tensorboard)") from None

    def add(self, rec: dict) -> None:
        step = rec.get("step")
        if step is None:
            return
        for tag, v in _flatten(rec):
            if tag != "step":
                self.writer.add_scalar(tag, v, int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _flatten(rec: dict, prefix: str = "") -> list[tuple[str, float]]:
    out = []
    for k, v in rec.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((f"{prefix}{k}", float(v)))
    return out
