"""SPIDEN-style spiking DnCNN (Castagnetti et al., 2023) and its ANN twin.

Layout (``depth`` convolutions of ``width`` channels, 3x3, same padding)::

    x [B,C,H,W] -> conv(C->w) -> N -> [conv(w->w) -> BN -> N] x (depth-2) -> conv(w->C) = noise
    output = x - noise

``N`` is a spiking neuron in :class:`SpikingDnCNN` and ReLU in :class:`DnCNN`. The spiking model
uses direct encoding: the first convolution sees the analog image once and its result is fed to
the first neuron at each of the ``T`` steps; the last convolution reads the time average of the
spikes and stays analog. Every layer in between receives spikes only (binary, or scaled by the
layer's threshold with ``scale_output``), so its synaptic operations are accumulates.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import SeqWrap, channels_last_wanted, repeat_time
from ..neurons import make_neuron

__all__ = ["SpikingDnCNN", "DnCNN", "QuantReLU", "init_from_ann", "quantise_error_threshold", "convert_ann",
           "percentile_threshold"]


def _conv(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class SpikingDnCNN(nn.Module):
    """Spiking DnCNN trained with surrogate gradients.

    Args:
        in_channels: 1 for gray, 3 for colour.
        depth: number of convolutions (>= 3); SPIDEN uses 17.
        width: channels of the hidden layers; SPIDEN uses 64.
        T: time steps.
        neuron: ``"if"`` (default), ``"lif"`` or ``"plif"``.
        neuron_kwargs: passed to every neuron. The default is the trainable-quantisation IF of
            the SPIDEN group: soft reset, learnable per-layer threshold, threshold-scaled spikes.
        bn: BatchNorm after every hidden convolution (statistics over time and batch).
        channels_last: keep the hidden activations channels-last in memory (faster
            convolutions on CPU); ``None`` (default): for inference (eval mode) on CPU only.
            Same results up to float rounding; the output has the usual contiguous layout.

    Shape: ``[B, C, H, W] -> [B, C, H, W]`` (any H, W: all convolutions keep the size).
    """

    def __init__(
        self,
        in_channels: int = 1,
        depth: int = 17,
        width: int = 64,
        T: int = 4,
        neuron: str = "if",
        neuron_kwargs: dict | None = None,
        bn: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T
        self.channels_last = channels_last  # a runtime option: not architecture
        kw = {"v_reset": None, "learn_threshold": True, "scale_output": True, "v_threshold": 1.0}
        kw.update(neuron_kwargs or {})
        self.head = _conv(in_channels, width, bias=True)
        self.head_neuron = make_neuron(neuron, **kw)
        body = []
        for _ in range(depth - 2):
            layers = [_conv(width, width, bias=not bn)] + ([nn.BatchNorm2d(width)] if bn else [])
            body += [SeqWrap(*layers), make_neuron(neuron, **kw)]
        self.body = nn.Sequential(*body)
        self.tail = _conv(width, in_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        cl = h.dim() == 4 and channels_last_wanted(self.channels_last, x, self.training)
        if cl:  # set on the head's output: a 1-channel image has no layout to follow
            h = h.contiguous(memory_format=torch.channels_last)
        s = self.body(self.head_neuron(repeat_time(h, self.T)))
        z = s.mean(0)
        if cl:  # a reduction over T returns the default layout
            z = z.contiguous(memory_format=torch.channels_last)
        return (x - self.tail(z)).contiguous()


class QuantReLU(nn.Module):
    """The rate code of a T-step IF neuron, as an ANN activation (quantisation-aware training).

    ``y = V_th / T * clip(floor(x T / V_th + 1/2), 0, T)``: what a soft-reset IF neuron started at
    ``V_th / 2`` emits on average (threshold-scaled spikes) for a constant input ``x`` over ``T``
    steps. Gradients: straight-through inside ``[0, V_th]`` (zero outside); for the learnable
    ``V_th``, ``(floor(u + 1/2) - u) / T`` inside and 1 above (as in LSQ/PACT), ``u = x T / V_th``.
    Trained at ANN cost, a :class:`DnCNN` with these activations hands :func:`init_from_ann`
    weights and thresholds already adapted to a T-level code."""

    def __init__(self, T: int, v_threshold: float = 1.0) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T
        self.v_threshold = nn.Parameter(torch.tensor(float(v_threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        th = self.v_threshold.abs().clamp(min=1e-6)
        u = torch.clamp(x * (self.T / th), 0, self.T)
        u = u + (torch.floor(u + 0.5) - u).detach()  # ties round up, as the neuron does
        return u * (th / self.T)

    def extra_repr(self) -> str:
        return f"T={self.T}, v_threshold={self.v_threshold.item():.4g}"


class DnCNN(nn.Module):
    """The ANN twin of :class:`SpikingDnCNN`: the same layout with ReLU (Zhang et al., 2017).

    ``quant_T``: replace ReLU by :class:`QuantReLU` with ``T = quant_T`` (quantisation-aware
    twin, the starting point for a spiking model with ``T = quant_T``). ``channels_last`` as in
    :class:`SpikingDnCNN`."""

    def __init__(self, in_channels: int = 1, depth: int = 17, width: int = 64, bn: bool = True,
                 quant_T: int | None = None, channels_last: bool | None = None) -> None:
        super().__init__()
        self.channels_last = channels_last  # as SpikingDnCNN's
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if quant_T is None else QuantReLU(int(quant_T))

        layers: list[nn.Module] = [_conv(in_channels, width, bias=True), act()]
        for _ in range(depth - 2):
            layers += [_conv(width, width, bias=not bn)]
            layers += [nn.BatchNorm2d(width)] if bn else []
            layers += [act()]
        layers += [_conv(width, in_channels, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not channels_last_wanted(self.channels_last, x, self.training):
            return x - self.net(x)
        h = self.net[0](x).contiguous(memory_format=torch.channels_last)  # as in SpikingDnCNN
        for m in self.net[1:]:
            h = m(h)
        return (x - h).contiguous()


def quantise_error_threshold(a: torch.Tensor, T: int, candidates: int = 64) -> float:
    """The threshold ``V_th`` whose T-step IF quantiser best reproduces the activations ``a``.

    A soft-reset IF neuron started at ``V_th / 2`` and driven by a constant input ``a`` for ``T``
    steps emits ``floor(a T / V_th + 1/2)`` spikes (clipped to ``[0, T]``); with threshold-scaled spikes
    its time average is ``Q(a) = V_th / T * clip(floor(a T / V_th + 1/2), 0, T)``. A large ``V_th`` clips
    little but quantises coarsely; a small one the reverse (SPIDEN's conversion-error trade-off).
    Returns the candidate (between the 50th and 100th percentile of ``a > 0``) with the least
    ``mean((a - Q(a))^2)``."""
    a = a.detach().flatten().float()
    pos = a[a > 0]
    if pos.numel() == 0:
        return 1.0
    if pos.numel() > 1_000_000:  # quantile() has an input-size limit; a subsample is plenty
        pos = pos[torch.randperm(pos.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    qs = torch.quantile(pos, torch.linspace(0.5, 1.0, candidates))
    best, best_err = float(qs[-1]), float("inf")
    for th in qs.tolist():
        if th <= 0:
            continue
        q = (th / T) * torch.clamp(torch.floor(a * T / th + 0.5), 0, T)
        err = float(((a - q) ** 2).mean())
        if err < best_err:
            best, best_err = th, err
    return best


def percentile_threshold(a: torch.Tensor, percentile: float = 99.9) -> float:
    """The ``percentile``-th percentile of the positive activations ``a``: the robust threshold
    balancing of Rueckauer et al. (2017), which ignores the rare largest activations that plain
    max-normalisation would scale every spike to."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    pos = a.detach().flatten().float()
    pos = pos[pos > 0]
    if pos.numel() == 0:
        return 1.0
    if pos.numel() > 1_000_000:
        pos = pos[torch.randperm(pos.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return max(float(torch.quantile(pos, percentile / 100.0)), 1e-6)


def _parts(m: SpikingDnCNN | DnCNN) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """Convolutions, BatchNorms and activations (neurons, ReLUs or QuantReLUs) in layer order."""
    if isinstance(m, SpikingDnCNN):
        convs = [m.head] + [c for b in m.body if isinstance(b, SeqWrap) for c in b if isinstance(c, nn.Conv2d)]
        bns = [c for b in m.body if isinstance(b, SeqWrap) for c in b if isinstance(c, nn.BatchNorm2d)]
        return convs + [m.tail], bns, [m.head_neuron] + [b for b in m.body if not isinstance(b, SeqWrap)]
    return ([c for c in m.net if isinstance(c, nn.Conv2d)], [c for c in m.net if isinstance(c, nn.BatchNorm2d)],
            [c for c in m.net if isinstance(c, (nn.ReLU, QuantReLU))])


@torch.no_grad()
def init_from_ann(snn: SpikingDnCNN | DnCNN, ann: DnCNN, calib: torch.Tensor, threshold: str = "error",
                  percentile: float = 99.9) -> list[float]:
    """Copy a trained :class:`DnCNN`'s weights into ``snn`` (same depth, width and channels) and
    set each neuron's threshold: a quantisation-aware twin (``quant_T``) hands over its learned
    thresholds; a ReLU twin's are chosen from its activations on ``calib`` ``[B, C, H, W]``, by
    ``threshold="error"`` (:func:`quantise_error_threshold`, the least T-step code error) or
    ``"percentile"`` (:func:`percentile_threshold`). Spike-domain fine-tuning then starts from a
    network whose rate code already approximates the ANN. Returns the thresholds, layer by layer.

    ``snn`` may also be a quantisation-aware :class:`DnCNN` (``quant_T``): a ReLU twin then
    starts its quantisation-aware fine-tuning the same way."""
    convs_a, bns_a, acts_a = _parts(ann)
    convs_s, bns_s, slots = _parts(snn)
    T = snn.T if isinstance(snn, SpikingDnCNN) else next((q.T for q in slots if isinstance(q, QuantReLU)), None)
    if T is None:
        raise ValueError("the target needs thresholds to set: a SpikingDnCNN or a DnCNN with quant_T")
    if len(convs_a) != len(convs_s) or len(bns_a) != len(bns_s):
        raise ValueError(f"ANN and SNN layouts differ ({len(convs_a)} vs {len(convs_s)} convolutions, "
                         f"{len(bns_a)} vs {len(bns_s)} BatchNorms)")
    for src, dst in zip(convs_a + bns_a, convs_s + bns_s):
        sd, dd = src.state_dict(), dst.state_dict()
        if sd.keys() != dd.keys() or any(sd[k].shape != v.shape for k, v in dd.items()):
            raise ValueError(f"ANN layer {src} does not match SNN layer {dst}")
        dst.load_state_dict(sd)
    if all(isinstance(q, QuantReLU) for q in acts_a):
        ths = [float(q.v_threshold.abs().clamp(min=1e-6)) for q in acts_a]
    else:
        acts: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: acts.append(o.detach().clone())) for m in acts_a]
        was_training = ann.training
        ann.eval()
        try:
            ann(calib)
        finally:
            for h in hooks:
                h.remove()
            ann.train(was_training)
        if threshold == "error":
            ths = [quantise_error_threshold(a, T) for a in acts]
        elif threshold == "percentile":
            ths = [percentile_threshold(a, percentile) for a in acts]
        else:
            raise ValueError(f"threshold must be 'error' or 'percentile', got {threshold!r}")
    for slot, th in zip(slots, ths):
        slot.v_threshold.fill_(th)
    return ths


def converted_config(ann: DnCNN, T: int) -> dict:
    """The model config of the spiking twin that :func:`convert_ann` builds for ``ann``."""
    convs, bns, _ = _parts(ann)
    return {"name": "spiking_dncnn", "in_channels": convs[0].in_channels, "depth": len(convs),
            "width": convs[0].out_channels, "T": int(T), "bn": bool(bns), "neuron": "if",
            "neuron_kwargs": {"v_init": "half", "v_reset": None, "scale_output": True}}


@torch.no_grad()
def convert_ann(ann: DnCNN, T: int, calib: torch.Tensor, threshold: str = "percentile",
                percentile: float = 99.9) -> SpikingDnCNN:
    """ANN-to-SNN conversion, the field's baseline: the same weights in IF neurons with soft reset
    (reset by subtraction), membranes started at ``V_th / 2`` and threshold-scaled spikes, so each
    neuron's spike count over ``T`` steps rounds its ANN activation to ``T`` levels; thresholds
    balanced per layer on ``calib`` (``threshold="percentile"``: the ``percentile``-th percentile of
    the layer's positive activations; ``"error"``: the least quantisation error at this ``T``).
    No training: quality rises with ``T`` towards the ANN's. A quantisation-aware twin (``quant_T``)
    brings its own thresholds. Returns the model in eval mode."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    cfg = converted_config(ann, T)
    snn = SpikingDnCNN(**{k: v for k, v in cfg.items() if k != "name"})
    init_from_ann(snn, ann, calib, threshold=threshold, percentile=percentile)
    return snn.eval()
