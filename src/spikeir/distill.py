"""ANN-to-SNN feature distillation ("Bridge the Gap between SNN and ANN for Image Restoration").

A frozen ANN teacher's intermediate feature maps guide a spiking student. For each hint pair
``teacher_layer -> student_layer`` the student's output there (time-averaged when it is a
sequence ``[T, B, C, H, W]``) goes through a small adapter (1x1 convolution to the teacher's
channels, bilinear resampling when the sizes differ) and is compared with the teacher's by MSE.

The training loss is::

    loss = recon(out, clean) + fft_weight * |  |F(out)| - |F(clean)|  |_1 + w_hint(step) * sum_i H_i
           + w_out(step) * recon(out, teacher(noisy))

    H_i = MSE(A_i(s_i), t_i)                      hint_norm: none
    H_i = MSE(A_i(s_i), t_i) / mean(t_i ** 2)     hint_norm: relative

``relative`` makes each hint scale-free (1 for an adapter that outputs zeros, 0 for a perfect
match), so one ``hint_weight`` means the same against the reconstruction loss whatever the
teacher's feature magnitudes are; raw MSE on un-normalised ReLU features can outweigh the L1
reconstruction loss many times over and pull the student away from its own task.

``recon`` is the run's ``loss`` (L1 in the distillation recipes), ``F`` the 2-D real FFT (amplitudes
compared, so phase-insensitive sharpness errors are penalised), and ``w_hint`` follows
``hint_schedule``: ``constant``, or ``linear``/``cosine`` decay from ``hint_weight`` to 0 at step
``hint_until`` (a whole number >= 1; default: the run's step count, so with steps numbered from 0
the last step's weight is just above 0 and the teacher runs on every step). ``output_weight`` adds
output distillation: the teacher's restored image as a second target, through the run's own
reconstruction loss; its weight ``w_out`` follows the same schedule (0 by default). A denoising
teacher's output is close to the conditional mean of the clean image, a lower-variance target than
the clean patch itself. With ``output_weight > 0`` the ``hints`` may be empty (output distillation
alone). The adapters are trained with the student and are not part of the exported model.

Config section (``distill:``)::

    teacher: runs/dncnn-s25/model.safetensors   # any ANN model file or bundled name
    hints: {net.8: body.5, net.17: body.11}     # teacher module -> student module
    hint_weight: 1.0
    hint_schedule: cosine
    hint_until: null
    hint_norm: none                             # or relative
    fft_weight: 0.05
    output_weight: 0.0                          # teacher output as a second target
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["Distiller", "hint_weight_at", "fft_amplitude_loss", "SCHEDULES", "HINT_NORMS"]

SCHEDULES = ("constant", "linear", "cosine")
KEYS = ("teacher", "hints", "hint_weight", "hint_schedule", "hint_until", "hint_norm", "fft_weight", "output_weight")
HINT_NORMS = ("none", "relative")


def hint_weight_at(step: int, weight: float, schedule: str, until: int) -> float:
    """The hint weight at ``step`` (0-based): constant, or decayed linearly/by cosine to 0 at ``until``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown hint_schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "constant":
        return float(weight)
    p = min(1.0, max(0.0, step / max(1, until)))
    if schedule == "linear":
        return float(weight) * (1.0 - p)
    return float(weight) * 0.5 * (1.0 + math.cos(math.pi * p))


def fft_amplitude_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the 2-D FFT amplitudes (``norm="ortho"``) of two ``[B, C, H, W]`` batches."""
    fa = torch.fft.rfft2(out.float(), norm="ortho").abs()
    fb = torch.fft.rfft2(target.float(), norm="ortho").abs()
    return (fa - fb).abs().mean()


def _number(cfg: dict, key: str, default: float) -> float:
    v = cfg.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"distill.{key} must be a number >= 0, got {v!r}")
    return float(v)


def _modules_by_name(model: nn.Module, names: list[str], who: str) -> dict[str, nn.Module]:
    mods = dict(model.named_modules())
    bad = [n for n in names if n not in mods or n == ""]
    if bad:
        valid = [n for n in mods if n]
        shown = ", ".join(valid[:80]) + (f", ... ({len(valid)} in all)" if len(valid) > 80 else "")
        raise ValueError(f"{who} has no layer named {', '.join(map(repr, bad))}; valid names: {shown}")
    return {n: mods[n] for n in names}


def _as_map(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` -> its time average ``[B, C, H, W]``; a ``[B, C, H, W]`` map as it is."""
    if x.dim() == 5:
        return x.mean(0)
    if x.dim() == 4:
        return x
    raise ValueError(f"hint features must be [B,C,H,W] or [T,B,C,H,W] maps, got shape {tuple(x.shape)}")


class Distiller(nn.Module):
    """Teacher, hooks and adapters for feature distillation into ``student``.

    ``adapters`` are the only trainable parameters here (the teacher is frozen and kept in eval
    mode, so neither its weights nor its BatchNorm statistics change)."""

    def __init__(self, cfg: dict, student: nn.Module, teacher: nn.Module, in_channels: int,
                 total_steps: int) -> None:
        super().__init__()
        unknown = sorted(set(cfg) - set(KEYS))
        if unknown:  # a misspelt weight would otherwise train the baseline without a word
            raise ValueError(f"unknown distill setting(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(KEYS)}")
        hints = cfg.get("hints")
        self.output_weight = _number(cfg, "output_weight", 0.0)
        if hints is None and self.output_weight > 0:
            hints = {}
        if not isinstance(hints, dict) or not (hints or self.output_weight > 0):
            raise ValueError("distill.hints must map teacher layer names to student layer names, "
                             "e.g. {net.8: body.5} (or be empty with distill.output_weight > 0)")
        self.pairs = [(str(t), str(s)) for t, s in hints.items()]
        self.weight = _number(cfg, "hint_weight", 1.0)
        self.schedule = str(cfg.get("hint_schedule", "constant"))
        hint_weight_at(0, self.weight, self.schedule, 1)  # validates the schedule name
        until = _number(cfg, "hint_until", total_steps)
        if until < 1 or until != int(until):  # int() would quietly turn 0.5 into 0, and 0 meant the default
            raise ValueError(f"distill.hint_until must be a number >= 1 (a step), got {cfg.get('hint_until')!r}")
        self.until = int(until)
        self.fft_weight = _number(cfg, "fft_weight", 0.0)
        self.norm = str(cfg.get("hint_norm") or "none")
        if self.norm not in HINT_NORMS:
            raise ValueError(f"unknown distill.hint_norm {self.norm!r}; choose one of {', '.join(HINT_NORMS)}")
        # a plain attribute, not a submodule: the teacher stays out of state_dict and parameters()
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)
        self._t_mods = _modules_by_name(teacher, [t for t, _ in self.pairs], "the teacher")
        self._s_mods = _modules_by_name(student, [s for _, s in self.pairs], "the student")
        self._feats: dict[str, torch.Tensor] = {}
        self._active = False
        for name, mod in {**{f"t:{k}": v for k, v in self._t_mods.items()},
                          **{f"s:{k}": v for k, v in self._s_mods.items()}}.items():
            mod.register_forward_hook(self._hook(name))
        # channel counts from one small dry run of both networks
        dev = next(student.parameters()).device
        was = student.training
        student.eval()
        try:
            with torch.no_grad(), self.capture():
                probe = torch.zeros(1, in_channels, 32, 32, device=dev)
                student(probe)
                teacher(probe)
                shapes = {k: _as_map(v).shape[1] for k, v in self._feats.items()}
        finally:
            student.train(was)
        self.adapters = nn.ModuleList(
            nn.Conv2d(shapes[f"s:{s}"], shapes[f"t:{t}"], 1).to(dev) for t, s in self.pairs)

    def _hook(self, key: str):
        def fn(_m, _i, out):
            if self._active:
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"hint layer {key[2:]!r} does not return a tensor")
                self._feats[key] = out
        return fn

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the hint layers' outputs during the forward passes inside the block."""
        self._feats = {}
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def loss_terms(self, noisy: torch.Tensor, out: torch.Tensor, clean: torch.Tensor,
                   recon: torch.Tensor, step: int, loss_fn=None) -> dict[str, torch.Tensor]:
        """Loss terms for one step; call after the student's forward inside :meth:`capture`.

        ``loss_fn(out, target)`` is the run's reconstruction loss (L1 when not given), used for the
        output term. Returns ``{"loss", "recon", "fft", "hint", "hint_weight", "output",
        "output_weight"}`` (tensors; ``loss`` is the sum that is back-propagated)."""
        s_feats = {k[2:]: v for k, v in self._feats.items() if k.startswith("s:")}
        missing = [s for _, s in self.pairs if s not in s_feats]
        if missing:
            raise ValueError(f"student layer(s) {missing} produced no output in the forward pass")
        w = hint_weight_at(step, self.weight, self.schedule, self.until)
        w_out = hint_weight_at(step, self.output_weight, self.schedule, self.until)
        hint = out.new_zeros(())
        kd = out.new_zeros(())
        # zero weights are the no-distillation baseline: same losses, and the teacher is not run
        pairs = list(zip(self.pairs, self.adapters)) if w != 0.0 else []
        if pairs or w_out != 0.0:
            with torch.no_grad():
                self._active = bool(pairs)
                try:
                    t_out = self.teacher(noisy)
                finally:
                    self._active = False
            if w_out != 0.0:
                kd = (loss_fn or nn.functional.l1_loss)(out, t_out.detach().to(out.dtype))
        for (t, s), adapter in pairs:
            # .float(): under train.amp the captured features are bf16/fp16, the adapters fp32
            tf = _as_map(self._feats[f"t:{t}"]).detach().float()
            sf = adapter(_as_map(s_feats[s]).float())
            if sf.shape[-2:] != tf.shape[-2:]:
                sf = nn.functional.interpolate(sf, size=tf.shape[-2:], mode="bilinear", align_corners=False)
            h = nn.functional.mse_loss(sf, tf)
            if self.norm == "relative":
                h = h / tf.pow(2).mean().clamp_min(1e-12)
            hint = hint + h
        fft = fft_amplitude_loss(out, clean) if self.fft_weight else out.new_zeros(())
        loss = recon + self.fft_weight * fft + w * hint + w_out * kd
        return {"loss": loss, "recon": recon.detach(), "fft": fft.detach(), "hint": hint.detach(),
                "hint_weight": torch.tensor(w), "output": kd.detach(), "output_weight": torch.tensor(w_out)}
