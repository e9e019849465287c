r"""Deployment: spiking models as NIR graphs (neuromorphic platforms) and as ONNX files (standard runtimes).

Both formats are optional: ``pip install spikeir[export]`` brings ``nir``, ``onnx`` and ``onnxruntime``.
Nothing is silently approximated: a layer a format cannot express is refused with a one-line
:class:`ExportError` naming it.

ONNX (:func:`export_onnx`)
--------------------------
An inference graph: BatchNorm folded into the convolution before it, the ``T`` time steps unrolled
(each neuron becomes ``T`` copies of its charge / fire / reset arithmetic, the operations of
:mod:`spikeir.neurons` in the same order), batch, height and width dynamic. Spikes match PyTorch's
except where a membrane lies within float rounding of its threshold: the folded BatchNorm and
another runtime's convolution code round differently (the README gives measured rates).
Convolutions run on the time-flattened batch ``[T*B, C, H, W]`` as in the PyTorch model. Supported:
:class:`~spikeir.models.SpikingDnCNN`, :class:`~spikeir.models.DnCNN`, :class:`~spikeir.models.ESDNet`
and :class:`~spikeir.models.ESDNetANN`. ESDNet's padding to a multiple of 4 is part of the graph
(reflection; the PyTorch model switches to replication for images smaller than the padding, so the
ONNX graph needs ``H, W >= 4``). ``spikes=True`` adds one output ``spikes.<layer>`` ``[T, B, C, H, W]``
per neuron. The file carries ``spikeir.*`` metadata (model config, ``T``, input range).
The TorchScript-based exporter (``dynamo=False``) is used: it keeps every size symbolic in a few
seconds, while the ``torch.export`` path specialises ESDNet's pad-to-4 arithmetic to the example size.

NIR (:func:`to_nir`, :func:`export_nir`, :func:`load_nir`)
---------------------------------------------------------
For :class:`~spikeir.models.SpikingDnCNN` with IF / LIF / ParametricLIF neurons. NIR graphs have
fixed sizes, so the export takes the image height and width. The graph::

    input (C,H,W) -> 01_head (Conv2d) -> 02_head_neuron -> 03_body_0 (Conv2d, BN folded) -> 04_body_1
                  -> ... -> NN_tail (Conv2d) -> readout (I, r = 1/T) -> output
    input ----------------------------------------------------------> readout

(node names: the spikeir layer names, numbered in layer order).

Conventions (also written into the graph metadata, with ``T`` and ``dt``):

* **Time.** One spikeir step is one step of length ``dt`` (metadata; default ``1e-4`` s, the value
  snnTorch's NIR import and export assume). Nodes are updated once per step, a node's input is the
  sum of its incoming edges, an edge that closes a cycle delivers the previous step's value, and
  every membrane starts at 0.
* **Discretisation.** LIF / LI: forward Euler, ``v <- v + dt/tau * (v_leak - v + r*I)``. IF / I
  (no time constant): ``v <- v + r*I`` per step, the reading snnTorch's importer uses (it asserts
  ``r == 1`` for IF).
* **Time constants.** spikeir's ``LIF(tau)`` (``tau`` in steps, ``k = 1/tau``) is
  ``tau_nir = tau * dt``; ``decay_input=False`` (``H = V - (V - V_reset) k + X``) is ``r = tau``,
  ``decay_input=True`` (``H = V + (X - (V - V_reset)) k``) is ``r = 1``; ``v_leak = V_reset``.
  As snnTorch ``Leaky``: ``beta = 1 - dt/tau_nir = 1 - 1/tau``.
* **Initial membrane.** NIR has none (0). spikeir's ``V[-1]`` (``V_reset`` for a hard reset, 0 for a
  soft one, ``V_th/2`` with ``v_init="half"``) is folded in by measuring every potential of the node
  from it: ``v_threshold``, ``v_reset`` and ``v_leak`` are written minus ``V[-1]``.
* **Reset.** A hard reset (``v_reset=float``) is NIR's own IF / LIF reset to ``v_reset``. NIR 1.0
  has no subtractive reset, so a soft reset (``v_reset=None``: ``V = H - V_th S``) is written as a
  subgraph of NIR primitives: ``membrane`` (I for IF, LI for LIF) -> ``spike`` (Threshold) -> ``reset``
  (Scale, ``-(1-k) V_th / g`` with ``g`` the per-step input gain) -> back into ``membrane``, which the
  cycle rule above delivers one step later: exactly ``H[t+1] = (1-k)(H[t] - V_th S[t]) + g X[t+1]``.
* **Spike condition.** spikeir fires at ``v >= V_th``; NIR (and snnTorch) write ``v > V_th``. They
  differ only when a membrane equals its threshold exactly.
* **Threshold-scaled spikes** (``scale_output=True``, SPIDEN's quantiser) travel as binary spikes;
  ``V_th`` is multiplied into the next convolution's input channels.
* **Encoding and read-out.** Direct encoding: the analog image is the graph input at each of the
  ``T`` steps. The tail convolution (negated) and the input feed the ``readout`` integrator with
  ``r = 1/T``: after step ``T-1`` it holds ``x - tail(mean_t S)``, the restored image. With
  ``readout=False`` the graph ends at ``tail`` and the host computes ``x - mean_t(output[t])``.

snnTorch 1.0.0 imports such graphs (:func:`snntorch.import_nir.import_from_nir`) when they hold
only Conv2d and hard-reset LIF nodes with ``v_leak = 0`` (``readout=False``); it has no I, LI,
Threshold or Scale, maps ``nir.IF`` to a leaky neuron (``beta=0.9``, fixed upstream) and reads LIF
as reset-to-zero whatever ``v_reset`` says. The tests run the other graphs with nirtorch's graph
executor, snnTorch's modules for Conv2d / LIF and the NIR equations for IF, I, LI, Threshold and Scale.
:func:`load_nir` rebuilds a :class:`~spikeir.models.SpikingDnCNN` from a graph of this layout.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .io import atomic_output
from .layers import fold_bn_weights, fold_conv_bn
from .models import DnCNN, ESDNet, ESDNetANN, SpikingDnCNN
from .models.esdnet import FRB, MDA, SRB, Up, _PoolGate, _Seq
from .models.spiking_dncnn import QuantReLU
from .neurons import IF, LIF, BaseNeuron, ParametricLIF

if TYPE_CHECKING:  # optional dependency (spikeir[export])
    import nir

__all__ = ["ExportError", "DEFAULT_DT", "export_module", "export_onnx", "OnnxRunner", "OnnxModel", "nir_refusal",
           "to_nir", "export_nir", "load_nir", "cmd_export"]

DEFAULT_DT = 1e-4
EXPORT_EXTRA = "install spikeir[export] (pip install 'spikeir[export]')"


class ExportError(ValueError):
    """A model or layer that the requested format cannot express (one line, names the layer)."""


def _require(name: str):
    """Import an optional export dependency, or fail with one line saying how to get it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"exporting needs the Python package {name!r}: {EXPORT_EXTRA}") from None


# ------------------------------------------------------------------------------ folding


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return fold_bn_weights(conv, bn)
    except ValueError as e:
        raise ExportError(str(e)) from None


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    try:
        return fold_conv_bn(conv, bn)
    except ValueError as e:
        raise ExportError(str(e)) from None


def _fold_children(mods: list[nn.Module]) -> list[nn.Module]:
    """Replace every ``Conv2d, BatchNorm2d`` pair of a module list by one folded convolution."""
    out: list[nn.Module] = []
    i = 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            out.append(_folded_conv(m, nxt))
            i += 2
            continue
        if isinstance(m, nn.BatchNorm2d):
            raise ExportError("a BatchNorm2d that does not follow a convolution cannot be folded")
        out.append(m)
        i += 1
    return out


# ------------------------------------------------------------------------------ ONNX


class _FlatNeuron(nn.Module):
    """A spikeir neuron, inference only, on the time-flattened batch ``[T*B, ...]`` with ``T`` fixed.

    The arithmetic of every step is the one of ``spikeir.neurons._MultiStep.forward`` (same operations
    in the same order), written with plain tensor operations so that the exporters can trace it."""

    def __init__(self, neuron: BaseNeuron, T: int, name: str, sink: list | None = None) -> None:
        super().__init__()
        cfg = neuron._cfg()
        self.T, self.name, self.sink = int(T), name, sink
        self.lif, self.decay_input, self.v_reset = cfg.lif, cfg.decay_input, cfg.v_reset
        self.scale_output, self.half_init = cfg.scale_output, cfg.half_init
        self.register_buffer("th", neuron.threshold(4).detach().to(torch.float32).clone())
        # the neuron casts k to the input dtype before reading it as a Python float
        self.k = float(neuron.decay().detach().to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.unflatten(0, (self.T, -1))
        th, k = self.th, self.k
        vr = 0.0 if self.v_reset is None else self.v_reset
        v: torch.Tensor | float = 0.5 * th if self.half_init else vr
        outs = []
        for t in range(self.T):
            if not self.lif:
                h = v + xs[t]
            elif self.decay_input:
                h = v * (1.0 - k) + xs[t] * k
                if vr:
                    h = h + k * vr
            else:
                h = xs[t] + v * (1.0 - k)
                if vr:
                    h = h + k * vr
            s = (h >= th).to(x.dtype)
            o = s * th if self.scale_output else s
            outs.append(o)
            if self.v_reset is None:
                v = h - o if self.scale_output else h - s * th
            else:
                v = h - h * s
                if vr:
                    v = v + s * vr
        y = torch.stack(outs)
        if self.sink is not None:
            self.sink.append((self.name, y))
        return y.flatten(0, 1)


class _FlatSeq(nn.Sequential):
    """``SeqWrap`` / ESDNet's ``_Seq`` on the flattened batch: neurons already flat, BN folded."""


def _flat_seq(seq: nn.Sequential, T: int, prefix: str, sink: list | None) -> _FlatSeq:
    mods = []
    for name, m in seq.named_children():
        mods.append(_FlatNeuron(m, T, f"{prefix}.{name}", sink) if isinstance(m, BaseNeuron) else m)
    return _FlatSeq(*_fold_children(mods))


class _SpikeOutputs(nn.Module):
    """Base of the export modules: ``forward`` returns the image, then the recorded spikes."""

    def __init__(self, spikes: bool) -> None:
        super().__init__()
        self._sink: list | None = [] if spikes else None
        self.spike_names: list[str] = []

    def _finish(self, image: torch.Tensor):
        if self._sink is None:
            return image
        recorded = list(self._sink)
        self._sink.clear()
        self.spike_names = [n for n, _ in recorded]
        return (image, *[s for _, s in recorded])


class _SpikingDnCNNExport(_SpikeOutputs):
    def __init__(self, m: SpikingDnCNN, spikes: bool) -> None:
        super().__init__(spikes)
        self.T = m.T
        self.head = copy.deepcopy(m.head)
        self.head_neuron = _FlatNeuron(m.head_neuron, m.T, "head_neuron", self._sink)
        body: list[nn.Module] = []
        for name, b in m.body.named_children():
            if isinstance(b, BaseNeuron):
                body.append(_FlatNeuron(b, m.T, f"body.{name}", self._sink))
            else:
                body += _fold_children(list(b.children()))
        self.body = nn.Sequential(*body)
        self.tail = copy.deepcopy(m.tail)

    def forward(self, x: torch.Tensor):
        s = self.body(self.head_neuron(self.head(x).repeat(self.T, 1, 1, 1)))
        return self._finish(x - self.tail(s.unflatten(0, (self.T, -1)).mean(0)))


class _DnCNNExport(_SpikeOutputs):
    def __init__(self, m: DnCNN) -> None:
        super().__init__(False)
        self.net = nn.Sequential(*_fold_children([copy.deepcopy(c) for c in m.net]))

    def forward(self, x: torch.Tensor):
        return x - self.net(x)


class _FlatMDA(nn.Module):
    def __init__(self, mda: MDA, T: int) -> None:
        super().__init__()
        self.mda, self.T = mda, T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mda(x.unflatten(0, (self.T, -1))).flatten(0, 1)


class _ExportPoolGate(nn.Module):
    """ESDNet's squeeze-excitation gate with the global max written as a reduction: the TorchScript
    exporter turns ``adaptive_max_pool3d(x, 1)`` into a MaxPool whose kernel is the traced size."""

    def __init__(self, gate: _PoolGate) -> None:
        super().__init__()
        self.sharedMLP = gate.sharedMLP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.adaptive_avg_pool3d(x, 1)
        mx = x.amax(dim=(2, 3, 4), keepdim=True)  # max is exact in any order: same values as the model's
        return torch.sigmoid(self.sharedMLP(avg) + self.sharedMLP(mx))


class _FlatUp(nn.Module):
    def __init__(self, up: Up, T: int, prefix: str, sink: list | None) -> None:
        super().__init__()
        self.up = _flat_seq(up.up, T, f"{prefix}.up", sink)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class _ESDNetExport(_SpikeOutputs):
    """ESDNet on ``[T*B, C, H, W]`` with a static ``T``, so that the batch stays a free dimension."""

    def __init__(self, m: ESDNet, spikes: bool) -> None:
        super().__init__(spikes)
        self.T = m.T
        net = copy.deepcopy(m)
        for name, mod in list(net.named_modules()):
            for cname, child in list(mod.named_children()):
                path = f"{name}.{cname}" if name else cname
                if isinstance(child, _Seq):
                    setattr(mod, cname, _flat_seq(child, m.T, path, self._sink))
                elif isinstance(child, Up):
                    setattr(mod, cname, _FlatUp(child, m.T, path, self._sink))
                elif isinstance(child, MDA) and isinstance(mod, SRB):
                    setattr(mod, cname, _FlatMDA(child, m.T))
                elif isinstance(child, _PoolGate):
                    setattr(mod, cname, _ExportPoolGate(child))
        self.net = net

    def forward(self, img: torch.Tensor):
        m = self.net
        H, W = img.shape[-2:]
        # always pad (by 0..3 rows/columns): a data-independent graph for every size
        x = F.pad(img, (0, (4 - W % 4) % 4, 0, (4 - H % 4) % 4), mode="reflect")
        x0 = m.patch_embed(x).repeat(self.T, 1, 1, 1)
        e1 = m.encoder_level1(x0)
        e2 = m.encoder_level2(m.down1_2(e1))
        e3 = m.encoder_level3(m.down2_3(e2))
        d3 = m.decoder_level3(e3)
        d2 = m.decoder_level2(m.reduce_chan_level2(torch.cat([m.up3_2(d3), e2], 1)))
        d1 = m.decoder_level1(torch.cat([m.up2_1(d2), e1], 1))
        out = m.output(m.refinement(d1.unflatten(0, (self.T, -1)).mean(0))) + x
        return self._finish(out[..., :H, :W])


_KNOWN_NEURONS = (IF, LIF, ParametricLIF)


def _layout_refusal(model: nn.Module, bases: tuple[type, ...]) -> str | None:
    """Why the exporters' reading of ``model`` could be wrong: a subclass with its own ``forward``
    or a neuron class whose dynamics they do not know."""
    base = next((b for b in bases if isinstance(model, b)), None)
    if base is not None and type(model).forward is not base.forward:
        return f"{type(model).__name__} overrides {base.__name__}.forward; the exporter knows {base.__name__}'s only"
    for name, m in model.named_modules():
        if isinstance(m, BaseNeuron) and type(m) not in _KNOWN_NEURONS:
            return f"{name} ({type(m).__name__}): a neuron class the exporter does not know"
    return None


def export_module(model: nn.Module, spikes: bool = False) -> nn.Module:
    """The network as the ONNX exporter sees it, in eval mode: BatchNorm folded, neurons unrolled
    over ``T`` with plain tensor operations. Its ``forward(x)`` returns the restored image, or with
    ``spikes=True`` the image followed by every neuron's output ``[T, B, C, H, W]`` (names in
    ``.spike_names`` after a call). Raises :class:`ExportError` for unsupported models."""
    why = _layout_refusal(model, (SpikingDnCNN, DnCNN, ESDNet))
    if why:
        raise ExportError(f"cannot export to ONNX: {why}")
    if model.training:
        model = copy.deepcopy(model).eval()
    if isinstance(model, SpikingDnCNN):
        out: nn.Module = _SpikingDnCNNExport(model, spikes)
    elif isinstance(model, DnCNN):
        if spikes:
            raise ExportError("DnCNN is an ANN: it has no spikes to export")
        out = _DnCNNExport(model)
    elif isinstance(model, ESDNet):
        if spikes and isinstance(model, ESDNetANN):
            raise ExportError("ESDNetANN is an ANN: it has no spikes to export")
        out = _ESDNetExport(model, spikes)
    else:
        raise ExportError(f"ONNX export supports SpikingDnCNN, DnCNN, ESDNet and ESDNetANN; "
                          f"{type(model).__name__} is not supported yet")
    return out.eval()


def _model_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ExportError(f"{type(model).__name__} has no convolution to take the image channels from")


def _config(model: nn.Module) -> dict:
    info = getattr(model, "spikeir_info", None) or {}
    return dict(info.get("model") or {"name": type(model).__name__})


def export_onnx(model: nn.Module, path: str | os.PathLike, *, spikes: bool = False, overwrite: bool = False,
                opset: int = 17) -> Path:
    """Write ``model`` as an ONNX inference graph (``T`` unrolled, BN folded, dynamic batch, height
    and width): input ``image`` ``[B, C, H, W]`` (float32, the [0, 1] scale of ``spikeir``),
    output ``restored`` (same shape), plus ``spikes.<layer>`` outputs with ``spikes=True``.
    Written atomically; an existing file is replaced only with ``overwrite``."""
    onnx = _require("onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX output must end in .onnx, got {path}")
    module = export_module(model, spikes).float().cpu()
    C = _model_channels(model)
    # batch 2 and an odd size, so that no dimension is traced as the constant 1 or as a multiple of 4
    example = torch.rand(2, C, 22, 30)
    with torch.no_grad():
        first = module(example)
    names = list(getattr(module, "spike_names", []))
    outputs = ["restored"] + [f"spikes.{n}" for n in names]
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "restored": {0: "batch", 2: "height", 3: "width"}}
    for o in outputs[1:]:
        axes[o] = [1, 3, 4]
    with atomic_output(path, overwrite) as tmp, warnings.catch_warnings():
        # the TorchScript exporter warns about its own deprecation and about traced shape arithmetic
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), dynamo=False, input_names=["image"], output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        T = getattr(model, "T", 1)
        meta = {"spikeir.version": __version__, "spikeir.model": json.dumps(_config(model)),
                "spikeir.T": str(T), "spikeir.input": "image [B, C, H, W] float32 in the [0, 1] scale",
                "spikeir.spike_outputs": json.dumps(outputs[1:])}
        if isinstance(model, ESDNet):
            meta["spikeir.min_size"] = "4"
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "spikeir"
        proto.producer_version = __version__
        onnx.save(proto, str(tmp))
    del first
    return path


class OnnxRunner:
    """An ONNX Runtime session on the CPU with the ``spikeir`` calling convention:
    ``runner(x)`` takes ``[B, C, H, W]`` (tensor or array) and returns the restored tensor."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such ONNX file: {path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        return torch.from_numpy(self.run(arr)[0])


class OnnxModel(nn.Module):
    """A spikeir model exported to ONNX and run by ONNX Runtime (CPU), usable where spikeir expects
    a model (``restore``, tiled inference): ``forward`` takes and returns ``[B, C, H, W]`` tensors.
    It holds no neurons, so no firing rates are recorded. ``benchmarks/bench_export.py`` measured
    it faster than PyTorch on the CPU for the bundled models."""

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        import tempfile

        _require("onnxruntime")
        self.spikeir_info = dict(getattr(model, "spikeir_info", None) or {"model": _config(model)})
        self.spikeir_info["runtime"] = "onnxruntime"
        # restore() reads the device from the first parameter: ONNX Runtime runs on the CPU
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / "model.onnx")
            self.runner = OnnxRunner(path, threads=threads)  # the session keeps the graph in memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.float()).to(device=x.device, dtype=x.dtype)


# ------------------------------------------------------------------------------ NIR

_NIR_BLOCKERS: dict[type, str] = {
    MDA: "multi-dimensional attention (data-dependent multiplicative gating) has no NIR primitive",
    Up: "bilinear upsampling has no NIR primitive",
    FRB: "a real-valued refinement block (sigmoid gates, products of activations) has no NIR primitive",
    nn.ReLU: "an ANN activation: NIR export is for spiking models (use --format onnx)",
    QuantReLU: "an ANN activation: NIR export is for spiking models (use --format onnx)",
}


def nir_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be written as NIR (naming the first layer that NIR cannot express),
    or ``None`` when it can."""
    for name, m in model.named_modules():
        for cls, why in _NIR_BLOCKERS.items():
            if isinstance(m, cls):
                return f"{name or type(model).__name__} ({type(m).__name__}): {why}"
    if not isinstance(model, SpikingDnCNN):
        return (f"{type(model).__name__}: the NIR exporter knows the SpikingDnCNN layout only "
                f"(a convolution / neuron chain with the residual read-out)")
    return _layout_refusal(model, (SpikingDnCNN,))


def _chain(model: SpikingDnCNN) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d | None, str | None, BaseNeuron | None]]:
    """(conv name, conv, bn, neuron name, neuron) in layer order; the tail has no neuron."""
    out: list = [("head", model.head, None, "head_neuron", model.head_neuron)]
    body = list(model.body.named_children())
    for i in range(0, len(body), 2):
        (cname, seq), (nname, neuron) = body[i], body[i + 1]
        mods = list(seq.children())
        bn = mods[1] if len(mods) > 1 else None
        out.append((f"body_{cname}", mods[0], bn, f"body_{nname}", neuron))
    out.append(("tail", model.tail, None, None, None))
    return out


def _full(value: np.ndarray | float, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=dtype), shape), dtype=dtype)


def _neuron_params(neuron: BaseNeuron) -> dict:
    """spikeir neuron -> the numbers of its NIR form (see the module docstring)."""
    th = neuron.v_threshold.detach().clamp(min=1e-6).to(torch.float32).numpy()
    th_c = th.reshape(-1, 1, 1) if th.ndim else th
    soft = neuron.v_reset is None
    half = neuron.v_init == "half"
    vr = 0.0 if soft else float(neuron.v_reset)
    v0 = 0.5 * th_c if half else np.float32(vr if not soft else 0.0)
    lif = isinstance(neuron, (LIF, ParametricLIF))
    k = float(neuron.decay().detach().to(torch.float32)) if lif else 0.0
    gain = k if (lif and neuron.decay_input) else 1.0
    return {"th": th_c, "v0": v0, "vr": vr, "soft": soft, "half": half, "lif": lif, "k": k, "gain": gain}


def _nir_neuron(nir, neuron: BaseNeuron, shape: tuple[int, int, int], dt: float, label: str):
    p = _neuron_params(neuron)
    th, v0, vr, k = p["th"], p["v0"], p["vr"], p["k"]
    desc = f"spikeir {label}: {neuron.extra_repr()}"
    if p["lif"]:
        # float64, so that tau / dt gives back the step count exactly (snnTorch: beta = 1 - dt / tau)
        tau = _full(dt / k, shape, np.float64)
        r = _full(1.0 if neuron.decay_input else 1.0 / k, shape, np.float64)
        v_leak = _full(vr - v0, shape)
    if not p["soft"]:
        kw = {"v_threshold": _full(th - v0, shape), "v_reset": _full(vr - v0, shape), "metadata": {"spikeir": desc}}
        if p["lif"]:
            return nir.LIF(tau=tau, r=r, v_leak=v_leak, **kw)
        return nir.IF(r=_full(1.0, shape), **kw)
    membrane = nir.LI(tau=tau, r=r, v_leak=v_leak) if p["lif"] else nir.I(r=_full(1.0, shape))
    nodes = {
        "input": nir.Input(input_type={"input": np.array(shape)}),
        "membrane": membrane,
        "spike": nir.Threshold(threshold=_full(th - v0, shape)),
        "reset": nir.Scale(scale=_full(-(1.0 - k) * th / p["gain"], shape)),
        "output": nir.Output(output_type={"output": np.array(shape)}),
    }
    edges = [("input", "membrane"), ("membrane", "spike"), ("spike", "reset"), ("reset", "membrane"),
             ("spike", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spikeir": desc + " (soft reset as a feedback loop)"})


def to_nir(model: nn.Module, height: int, width: int, dt: float = DEFAULT_DT, readout: bool = True) -> nir.NIRGraph:
    """The spiking denoiser as a ``nir.NIRGraph`` for ``height`` x ``width`` images (see the module
    docstring for the graph and its conventions). Raises :class:`ExportError` naming the first
    layer that NIR cannot express."""
    nir = _require("nir")
    why = nir_refusal(model)
    if why:
        raise ExportError(f"cannot export to NIR: {why}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    assert isinstance(model, SpikingDnCNN)
    T = model.T
    C = model.head.in_channels
    nodes: dict = {"input": nir.Input(input_type={"input": np.array([C, height, width])})}
    edges: list[tuple[str, str]] = []
    prev, scale_in = "input", None
    chain = _chain(model)
    # numbered names: a file lists nodes alphabetically, and nirtorch 2.6 mis-wires a neuron subgraph
    # that it meets before its input
    digits = max(2, len(str(2 * len(chain))))
    names = iter(f"{i:0{digits}d}" for i in range(1, 2 * len(chain) + 1))
    chain = [(f"{next(names)}_{c}", conv, bn, None if n is None else f"{next(names)}_{n}", neuron)
             for c, conv, bn, n, neuron in chain]
    tail = chain[-1][0]
    for cname, conv, bn, nname, neuron in chain:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ExportError(f"cannot export to NIR: {cname} uses padding {conv.padding!r} / {conv.padding_mode}")
        w, b = _fold(conv, bn)
        if scale_in is not None:  # threshold-scaled spikes: V_th moves into this layer's input channels
            w = w * torch.from_numpy(scale_in).double().reshape(1, -1, 1, 1)
        if neuron is None and readout:
            w, b = -w, -b
        nodes[cname] = nir.Conv2d(input_shape=(height, width), weight=w.float().numpy(),
                                  stride=tuple(conv.stride), padding=tuple(conv.padding),
                                  dilation=tuple(conv.dilation), groups=conv.groups, bias=b.float().numpy(),
                                  metadata={"spikeir": cname.split("_", 1)[1].replace("_", ".") +
                                            (" + BatchNorm" if bn else "")})
        edges.append((prev, cname))
        prev = cname
        if neuron is None:
            break
        shape = (conv.out_channels, height, width)
        nodes[nname] = _nir_neuron(nir, neuron, shape, dt, nname)
        edges.append((cname, nname))
        prev = nname
        p = _neuron_params(neuron)
        scale_in = np.broadcast_to(p["th"].reshape(-1), (conv.out_channels,)).copy() if neuron.scale_output else None
    out_shape = np.array([C, height, width])
    if readout:
        nodes["readout"] = nir.I(r=_full(1.0 / T, tuple(out_shape)),
                                 metadata={"spikeir": "residual read-out: mean over T of (input - tail)"})
        edges += [(tail, "readout"), ("input", "readout"), ("readout", "output")]
    else:
        edges.append((tail, "output"))
    nodes["output"] = nir.Output(output_type={"output": out_shape})
    meta = {
        "producer": f"spikeir {__version__}",
        "spikeir_model": json.dumps(_config(model)),
        "T": int(T),
        "dt": float(dt),
        "readout": ("integrator 'readout' (r = 1/T) fed by input and the negated tail: the image is its value "
                    "after step T-1" if readout else
                    "none in the graph: image = input - mean over the T steps of output"),
        "input_encoding": "direct: the analog image (C, H, W) is the input at each of the T steps",
        "discretisation": ("steps of length dt; LIF/LI: v += dt/tau*(v_leak - v + r*I); IF/I: v += r*I; "
                           "a cycle's edge delivers the previous step's value; membranes start at 0"),
        "reset": ("IF/LIF nodes: reset to v_reset; soft reset (subtract V_th): subgraph membrane -> spike "
                  "(Threshold) -> reset (Scale) -> membrane"),
        "spike_condition": "v >= threshold in spikeir (NIR writes v > threshold)",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(model: nn.Module, path: str | os.PathLike, height: int, width: int, dt: float = DEFAULT_DT,
               readout: bool = True, overwrite: bool = False) -> Path:
    """Write :func:`to_nir`'s graph to ``path`` (HDF5, ``.nir``) atomically; an existing file is
    replaced only with ``overwrite``."""
    nir = _require("nir")
    if Path(path).suffix != ".nir":
        raise ValueError(f"NIR output must end in .nir, got {path}")
    graph = to_nir(model, height, width, dt, readout)
    with atomic_output(path, overwrite) as tmp:
        nir.write(str(tmp), graph)
    return Path(path)


def _meta_str(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return _meta_str(v.item())
    return str(v)


def _uniform(a: np.ndarray, what: str, per_channel: bool = True) -> np.ndarray:
    """A (C, H, W) parameter array as one value per channel (``[C]``) or one value (``[]``)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a
    flat = a.reshape(a.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise ExportError(f"cannot import NIR: {what} varies within a channel (spikeir has per-layer or "
                          f"per-channel values)")
    per_c = flat[:, 0]
    if np.all(per_c == per_c[0]):
        return np.asarray(per_c[0])
    if not per_channel:
        raise ExportError(f"cannot import NIR: {what} varies across channels")
    return per_c


def _close(a: np.ndarray, b: np.ndarray | float, what: str, name: str) -> None:
    if not np.allclose(a, b, rtol=1e-6, atol=1e-9):
        raise ExportError(f"cannot import NIR: {name}: {what}")


def _parse_neuron(nir, node, name: str, dt: float) -> dict:
    """A NIR neuron node of the layouts :func:`to_nir` writes -> spikeir neuron kind and settings."""
    if isinstance(node, (nir.IF, nir.LIF)):
        th, vr = _uniform(node.v_threshold, "v_threshold"), _uniform(node.v_reset, "v_reset")
        # the NIR membrane starts at 0. spikeir's hard reset starts at V_reset, or at V_th / 2 with
        # v_init="half": the first needs v_reset = 0; otherwise measure potentials from -threshold
        if np.all(vr == 0):
            out = {"soft": False, "v_init": None, "th": th, "v_reset": 0.0}
        else:
            shifted = np.asarray(vr + th)
            if shifted.ndim and not np.allclose(shifted, shifted.flat[0], rtol=1e-6, atol=1e-9):
                raise ExportError(f"cannot import NIR: {name}: v_reset and the initial membrane 0 need per-channel "
                                  f"reset potentials, which spikeir does not have")
            out = {"soft": False, "v_init": "half", "th": 2.0 * th, "v_reset": float(shifted.flat[0])}
        if isinstance(node, nir.IF):
            _close(node.r, 1.0, "IF with r != 1 has no spikeir equivalent", name)
            return {"kind": "if", **out}
        tau = _uniform(node.tau, "tau", per_channel=False) / dt
        r = _uniform(node.r, "r", per_channel=False)
        _close(node.v_leak, node.v_reset, "LIF with v_leak != v_reset has no spikeir equivalent", name)
        decay_input = not np.isclose(r, tau)
        if decay_input:
            _close(r, 1.0, "LIF input gain r must be tau/dt or 1", name)
        return {"kind": "lif", "tau": float(tau), "decay_input": bool(decay_input), **out}
    if isinstance(node, nir.NIRGraph):
        kinds = {type(n).__name__: n for n in node.nodes.values()}
        mem = kinds.get("I") or kinds.get("LI")
        spike, reset = kinds.get("Threshold"), kinds.get("Scale")
        if mem is None or spike is None or reset is None or len(node.nodes) != 5:
            raise ExportError(f"cannot import NIR: {name}: a subgraph that is not a soft-reset neuron")
        th_shift = _uniform(spike.threshold, "threshold")
        fb = _uniform(reset.scale, "reset scale")
        if isinstance(mem, nir.I):
            _close(mem.r, 1.0, "I with r != 1 has no spikeir equivalent", name)
            out = {"kind": "if", "th": -fb}
            k, v_leak = 0.0, None
        else:
            tau = _uniform(mem.tau, "tau", per_channel=False) / dt
            r = _uniform(mem.r, "r", per_channel=False)
            decay_input = not np.isclose(r, tau)
            if decay_input:
                _close(r, 1.0, "LI input gain r must be tau/dt or 1", name)
            k = 1.0 / float(tau)
            gain = k if decay_input else 1.0
            out = {"kind": "lif", "tau": float(tau), "decay_input": bool(decay_input), "th": -fb * gain / (1.0 - k)}
            v_leak = _uniform(mem.v_leak, "v_leak")
        th = np.asarray(out["th"], dtype=np.float64)
        # the initial membrane was folded into the threshold: V[-1] = th - threshold is 0 or th / 2;
        # the threshold node holds V_th exactly (or V_th / 2), the reset scale only up to rounding
        if np.allclose(th_shift, th, rtol=1e-6):
            out["v_init"], out["th"], v0 = None, th_shift, 0.0
        elif np.allclose(th_shift, 0.5 * th, rtol=1e-6):
            out["v_init"], out["th"], v0 = "half", 2.0 * th_shift, th_shift
        else:
            raise ExportError(f"cannot import NIR: {name}: initial membrane other than 0 or V_th/2")
        if v_leak is not None:
            _close(v_leak, -np.asarray(v0), "LI leaks to a potential other than 0", name)
        out.update(soft=True, v_reset=None)
        return out
    raise ExportError(f"cannot import NIR: {name} ({type(node).__name__}) is not a neuron of spikeir's layout")


def load_nir(source: str | os.PathLike | nir.NIRGraph, name: str = "nir") -> SpikingDnCNN:
    """Rebuild a spikeir :class:`~spikeir.models.SpikingDnCNN` (eval mode, BN folded into the
    convolutions, binary spikes with the thresholds moved into the next layer) from a NIR graph
    written by :func:`to_nir` / :func:`export_nir` (a path or a ``nir.NIRGraph``). Its forward
    equals the exported model's up to float rounding. Raises :class:`ExportError` for graphs of
    another layout."""
    nir = _require("nir")
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"no such NIR file: {source}")
        try:
            graph = nir.read(str(source))
        except Exception as e:  # h5py / nir raise many kinds for foreign or broken files
            raise ValueError(f"{source} is not a readable NIR file ({type(e).__name__}: {e})") from None
    else:
        graph = source
    meta = {k: v for k, v in (graph.metadata or {}).items()}
    if "T" not in meta or "dt" not in meta:
        raise ExportError("cannot import NIR: the graph has no T / dt metadata (not written by spikeir)")
    T, dt = int(np.asarray(meta["T"])), float(np.asarray(meta["dt"]))
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    nodes = graph.nodes
    first = [n for n in succ.get("input", []) if isinstance(nodes[n], nir.Conv2d)]
    if len(first) != 1:
        raise ExportError("cannot import NIR: the input does not feed exactly one convolution")
    convs: list = []
    neurons: list = []
    cur = first[0]
    readout = False
    while True:
        node = nodes[cur]
        if not isinstance(node, nir.Conv2d):
            raise ExportError(f"cannot import NIR: expected a convolution at {cur}, found {type(node).__name__}")
        convs.append((cur, node))
        nxt = succ.get(cur, [])
        if len(nxt) != 1:
            raise ExportError(f"cannot import NIR: {cur} does not feed exactly one node")
        after = nodes[nxt[0]]
        if isinstance(after, nir.Output):
            break
        if isinstance(after, nir.I) and nxt[0] in succ.get("input", []):
            readout = True
            _close(after.r, 1.0 / T, "read-out integrator with r != 1/T", nxt[0])
            break
        neurons.append((nxt[0], _parse_neuron(nir, after, nxt[0], dt)))
        cont = succ.get(nxt[0], [])
        if len(cont) != 1:
            raise ExportError(f"cannot import NIR: {nxt[0]} does not feed exactly one node")
        cur = cont[0]
    if len(convs) < 3 or len(neurons) != len(convs) - 1:
        raise ExportError(f"cannot import NIR: {len(convs)} convolutions and {len(neurons)} neuron layers do not "
                          f"make a SpikingDnCNN (at least 3 convolutions, a neuron after all but the last)")
    keys = [(n["kind"], n["soft"], n["v_init"], n.get("tau"), n.get("decay_input")) for _, n in neurons]
    if len(set(keys)) != 1:
        raise ExportError("cannot import NIR: the neuron layers differ in kind, reset, time constant or initial "
                          "membrane (SpikingDnCNN uses one neuron setting)")
    kind, soft, v_init, tau, decay_input = keys[0]
    per_channel = any(np.ndim(n["th"]) > 0 for _, n in neurons)
    width = convs[0][1].weight.shape[0]
    C = convs[0][1].weight.shape[1]
    kw: dict = {"v_reset": None if soft else 0.0, "learn_threshold": False, "scale_output": False,
                "v_init": v_init, "threshold_channels": width if per_channel else None}
    if kind == "lif":
        kw.update(tau=tau, decay_input=decay_input)
    cfg = {"name": "spiking_dncnn", "in_channels": int(C), "depth": len(convs), "width": int(width), "T": T,
           "neuron": kind, "neuron_kwargs": kw, "bn": False}
    model = SpikingDnCNN(in_channels=int(C), depth=len(convs), width=int(width), T=T, neuron=kind,
                         neuron_kwargs=kw, bn=False)
    target_convs = [c for _, c, _, _, _ in _chain(model)]
    target_neurons = [n for _, _, _, _, n in _chain(model) if n is not None]
    with torch.no_grad():
        for (cname, src), dst in zip(convs, target_convs):
            if tuple(src.weight.shape) != tuple(dst.weight.shape):
                raise ExportError(f"cannot import NIR: {cname} has weight {tuple(src.weight.shape)}, expected "
                                  f"{tuple(dst.weight.shape)} (layers of one width)")
            if tuple(np.atleast_1d(src.stride)) not in ((1, 1), (1,)) or tuple(np.atleast_1d(src.dilation)) not in (
                    (1, 1), (1,)) or int(src.groups) != 1:
                raise ExportError(f"cannot import NIR: {cname} has stride/dilation/groups other than 1")
            sign = -1.0 if (readout and dst is model.tail) else 1.0
            dst.weight.copy_(torch.from_numpy(np.asarray(src.weight, dtype=np.float32)) * sign)
            bias = np.asarray(src.bias, dtype=np.float32) * sign
            if dst.bias is not None:
                dst.bias.copy_(torch.from_numpy(bias))
            elif np.any(bias != 0):
                raise ExportError(f"cannot import NIR: {cname} has a bias that SpikingDnCNN's tail does not have")
            if isinstance(src.padding, str):
                raise ExportError(f"cannot import NIR: {cname} has padding {src.padding!r}; spikeir needs numbers")
            pad = tuple(int(p) for p in np.atleast_1d(src.padding))
            dst.padding = pad * 2 if len(pad) == 1 else pad
        for (_, p), dst in zip(neurons, target_neurons):
            th = torch.as_tensor(np.asarray(p["th"], dtype=np.float64))
            dst.v_threshold.copy_(th.expand_as(dst.v_threshold) if th.dim() == 0 else th)
            if not soft:
                dst.v_reset = float(p["v_reset"])
    model.spikeir_info = {"model": cfg, "source": "nir", "nir_metadata": {k: _meta_str(v) for k, v in meta.items()},
                          "name": name}  # type: ignore[attr-defined]
    return model.eval()


# ------------------------------------------------------------------------------ command line


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size takes HEIGHTxWIDTH (e.g. 64x64), got {text!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"--size must be positive, got {text!r}")
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    """``spikeir export MODEL --format onnx|nir -o OUT [--size HxW] [--dt S] [--spikes] [--overwrite]``."""
    from .io import load_model
    from .models import PRESETS

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    model = load_model(args.model, "cpu", allow_untrained=True)
    untrained = bool(model.spikeir_info.get("untrained"))
    if args.format == "nir":
        if args.spikes:
            raise ValueError("--spikes is for ONNX; a NIR graph exposes every neuron already")
        h, w = _parse_size(args.size)
        export_nir(model, out, h, w, dt=args.dt, readout=not args.no_readout, overwrite=args.overwrite)
        detail = f"NIR graph for {h}x{w} images, T={model.T}, dt={args.dt:g} s"
    else:
        if args.no_readout:
            raise ValueError("--no-readout is for NIR")
        export_onnx(model, out, spikes=args.spikes, overwrite=args.overwrite)
        detail = "ONNX, dynamic batch/height/width" + (", spike outputs" if args.spikes else "")
    note = " (untrained preset weights)" if untrained and args.model in PRESETS else ""
    print(f"{args.model}{note} -> {out} ({detail})")
    return 0
