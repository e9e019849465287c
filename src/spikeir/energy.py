r"""Energy accounting measured on the real network: operations, spikes and memory traffic.

:func:`measure` runs a model on images and records, per layer, what the layer actually computed.
Nothing comes from a hand-maintained table: forward hooks on the leaf modules (convolutions,
linear layers, normalisation, neurons, activations, pooling, upsampling, and any other module with
parameters) and a :class:`~torch.overrides.TorchFunctionMode` for the functional operations
written inside ``forward`` methods (the attention's gating multiplies, ``F.interpolate``,
``torch.sigmoid``, residual additions, time means, ...) see the real tensors. Rows of the
second kind are named ``owner/op`` (``encoder_level1.0.attn/mul``; ``model/...`` for the top
level). Element-wise ops are counted per output element, whatever broadcasting did.

Conventions (all counts are per image, averaged over the images)
-----------------------------------------------------------------

* **Time steps.** Stateless layers of a spiking model see ``[T*B, ...]`` (time flattened into
  the batch), so one call covers all ``T`` steps. Images run one at a time (``B = 1``), so a
  layer's ``steps`` is the leading size of its input: ``T`` inside the time loop, ``1`` for
  layers run once per image (SPIDEN's head and tail convolutions, ESDNet's patch embedding whose
  result is reused at every step). Neurons read ``T`` from their ``[T, B, ...]`` input.
* **MACs.** ``macs`` is the dense multiply-accumulate count of *one* step, as an ANN of the
  same shape computes it and as papers report it: a convolution costs
  ``output elements x (C_in / groups) x kH x kW``, a transposed convolution
  ``input elements x (C_out / groups) x kH x kW``, a linear layer ``output elements x
  in_features``, a matmul ``output elements x inner size``. ``dense_macs = macs x steps``.
* **Firing rate and SOPs.** ``input_firing_rate`` is non-zeros / elements of the layer's input
  over all its calls and images (every step included). Synaptic operations follow the paper
  convention ``sops = macs x input_firing_rate x steps = dense_macs x rate``: the rate is
  applied once and ``T`` once. ``sops_exact`` is the exact count of non-zero input x weight
  products (a convolution of the spike mask with a ones kernel, so zero padding at the borders
  is accounted for). For stride-1 layers it is at most ``sops``; for strided layers it can exceed
  it when spikes sit at positions with a larger fan-out. It is reported to show the convention's
  error, not used for energy.
* **Input kinds, measured from the tensors.** ``binary_spikes``: every value is 0 or 1 (an
  all-zero input counts as binary spikes, costing nothing); ``scaled_spikes``: the non-zero
  values are positive and equal within each channel (``V_th * S`` with a per-layer or
  per-channel threshold); ``real``: anything else, including multi-level inputs such as a time
  mean of spikes. Values are judged only on tensors that can carry spikes: outputs of spiking
  neurons and the model's input, followed through layout-only operations (views, reshapes,
  transposes, ``cat``, ``pad``, indexing). Any other tensor is real whatever its values, so a
  pooled attention vector that happens to hold one positive value, or a dead layer's all-zero
  output, is not mistaken for spikes.
* **What an operation costs.** In a spiking model a synaptic layer fed by binary spikes costs
  ``sops`` accumulates (AC). Threshold-scaled spikes are *not* plain accumulates of the stored
  weights: with one value per input channel the scale can be folded into the weights once
  (``w' = V_th * w``) and each event then is an accumulate, so they are costed as ACs by
  default, with a note (``EnergyModel.scaled_spikes_as_ac=False`` prices them as dense MACs).
  A synaptic layer with a real-valued input (the first layer, ESDNet's shortcut convolutions,
  the attention MLPs, a read-out of the spike time-mean) costs ``dense_macs`` MACs, as does
  every synaptic layer of a non-spiking model.
* **Neurons.** Per neuron and step: one add to integrate the input (IF), plus one multiply for
  the LIF leak (and one more for ``decay_input=True``), one compare with the threshold, and one
  subtraction per spike for a soft reset (a hard reset is a select, not counted).
* **BatchNorm.** At inference it folds into the preceding convolution (``fold_bn=True``, the
  default): what remains is one bias add per output element. ``fold_bn=False`` prices it as one
  multiply and one add per element with its own memory traffic.
* **Other element-wise work.** add/sub: one add per output element; mul/div: one multiply;
  ReLU/clamp/max of two tensors: one compare; sigmoid/tanh/exp/softmax/GELU/SiLU: two multiplies
  and one add (a rough figure); mean/sum: one add per input element (plus one multiply per output
  element for a mean); max/min reductions and max pooling: one compare per input element;
  average pooling: one add per input element and one multiply per output element; interpolation
  per output element: nearest 0, linear 2 mul + 1 add, bilinear 4 mul + 3 add, trilinear 8 mul
  + 7 add, bicubic 16 mul + 15 add. Layout operations (view, transpose, cat, pad, expand,
  indexing) are free. Bias additions: one add per output element.
* **Energy model (a), ``ops_45nm``.** Horowitz (ISSCC 2014, 45 nm, 32-bit float): MAC 4.6 pJ,
  AC 0.9 pJ; the element-wise multiply is 3.7 pJ (MAC - AC) and an add or compare 0.9 pJ. The
  ``synaptic`` part alone is the number papers publish; the total adds neurons, BatchNorm and
  the other element-wise work.
* **Energy model (b), ``memory_aware``** (after Lemaire et al., ICONIP 2022). Every access to an
  SRAM holding ``M`` bits costs ``sram_pj_per_bit * M + sram_pj_per_access`` (``1.09e-5 pJ * M +
  13.2 pJ``), on top of the operations of (a). The memories are per layer: its weights
  (``params x weight_bits``), and per image and step its input and output activations
  (``activation_bits`` per value; spikes ``spike_bits``) and its membrane potentials
  (``potential_bits``). Accesses, a deliberately simple streaming model without weight reuse:

  - synaptic layer, MAC: one weight read per MAC, each input element read once, each output
    element written once (partial sums stay in registers);
  - synaptic layer, AC: one weight read per SOP, one read per input spike (an address event),
    and a read + write of the target potential per SOP (event-driven accumulation);
  - neuron: one read of its input current, a read + write of its membrane potential per neuron
    and step, one write per emitted spike;
  - element-wise layer: every input element read, every output element written, one parameter
    read per output element if it has parameters (a folded BatchNorm costs no memory access).

  The activation and potential memories hold one whole step of a layer *for the measured image
  size*, so their per-access cost, and hence this model's energy per pixel, grows with the image
  (Lemaire et al. model small whole images). To model an accelerator that works tile by tile, set
  ``tile_pixels`` (e.g. ``--set tile_pixels=4096`` for 64x64 tiles), or measure on crops.

  All constants are fields of :class:`EnergyModel`; ``ENERGY_PRESETS`` holds the 45 nm float32
  default and the integer figures (32-bit add 0.1 pJ, multiply 3.1 pJ; 8-bit add 0.03 pJ,
  multiply 0.2 pJ).
* **ANN twin.** A spiking model is compared with its ANN twin (:func:`ann_twin`: SpikingDnCNN ->
  DnCNN, ESDNet -> ESDNetANN, same shapes) measured on the same images under the same models,
  where every synaptic layer is a MAC layer. Its weights are random; no count depends on them.
* **Parameters.** ``params`` counts every parameter of the model (12,811,463 for the released
  ESDNet configuration), each layer row the parameters of its own module.
"""

from __future__ import annotations

import argparse
import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .io import atomic_output, write_json_atomic
from .neurons import BaseNeuron, compiled_inference

__all__ = [
    "EnergyModel",
    "ENERGY_PRESETS",
    "LayerStats",
    "EnergyReport",
    "profile",
    "measure",
    "ann_twin",
    "count_parameters",
    "format_report",
    "plot_report",
    "cmd_energy",
    "add_energy_parser",
]

PJ = 1e-12
KINDS = ("binary_spikes", "scaled_spikes", "real")  # ordered: a layer's kind is the "worst" seen


# ----------------------------------------------------------------------------- energy model


@dataclass(frozen=True)
class EnergyModel:
    """Energy constants (picojoules, bits). See the module docstring for how they are used.

    Defaults: 45 nm, 32-bit float (Horowitz, ISSCC 2014) and the SRAM access model of Lemaire
    et al. (ICONIP 2022)."""

    name: str = "fp32-45nm"
    e_mac: float = 4.6  # multiply-accumulate of a MAC layer
    e_ac: float = 0.9  # accumulate (synaptic event) and any element-wise add
    e_mul: float = 3.7  # element-wise multiply (MAC - AC)
    e_cmp: float = 0.9  # compare (threshold, ReLU, max), priced as an add
    sram_pj_per_bit: float = 1.09e-5  # access energy grows with the memory's size in bits ...
    sram_pj_per_access: float = 13.2  # ... on top of this fixed cost per access
    weight_bits: int = 32
    activation_bits: int = 32
    potential_bits: int = 32
    spike_bits: int = 1
    tile_pixels: int = 0  # >0: activation/potential memories hold a tile of this many pixels, not the whole image
    fold_bn: bool = True  # BatchNorm folded into the preceding convolution at inference
    scaled_spikes_as_ac: bool = True  # threshold-scaled spikes: AC with V_th folded into weights

    def sram_pj(self, memory_bits: float) -> float:
        """Energy of one access to an SRAM of ``memory_bits`` bits."""
        return self.sram_pj_per_bit * float(memory_bits) + self.sram_pj_per_access

    def with_overrides(self, items: Sequence[str]) -> EnergyModel:
        """A copy with ``FIELD=VALUE`` overrides (``e_mac=3.2``, ``fold_bn=false``)."""
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise ValueError(f"bad energy-model override {item!r}: use FIELD=VALUE with FIELD one of "
                                 f"{', '.join(types)}")
            t = types[key]
            try:
                if t is bool:
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    changes[key] = low in ("true", "1", "yes")
                else:
                    changes[key] = t(value)
            except ValueError:
                raise ValueError(f"bad value for {key}: {value!r} (expected {t.__name__})") from None
        return replace(self, **changes)


ENERGY_PRESETS: dict[str, EnergyModel] = {
    "fp32-45nm": EnergyModel(),
    "int32-45nm": EnergyModel(name="int32-45nm", e_mac=3.2, e_ac=0.1, e_mul=3.1, e_cmp=0.1),
    "int8-45nm": EnergyModel(name="int8-45nm", e_mac=0.23, e_ac=0.03, e_mul=0.2, e_cmp=0.03, weight_bits=8,
                             activation_bits=8, potential_bits=16),
}


# ----------------------------------------------------------------------------- per-layer record


@dataclass
class LayerStats:
    """What one layer (a module, or one functional op inside a module) computed, per image.

    ``category`` is ``synaptic`` (weights x inputs), ``neuron``, ``norm`` or ``elementwise``;
    ``basis`` is ``mac`` or ``ac`` for synaptic layers once priced. Energies in ``energy_pj``."""

    name: str
    kind: str
    category: str
    params: int = 0
    calls: float = 0.0
    steps: int = 1
    macs: float = 0.0
    dense_macs: float = 0.0
    sops: float = 0.0
    sops_exact: float | None = 0.0
    input_kind: str = "binary_spikes"
    input_elements: float = 0.0
    input_nonzeros: float = 0.0
    read_elements: float = 0.0  # all tensor inputs (memory reads of element-wise layers)
    output_elements: float = 0.0
    output_nonzeros: float = 0.0
    neuron_updates: float = 0.0
    adds: float = 0.0
    muls: float = 0.0
    cmps: float = 0.0
    input_step_elements: int = 0  # per image and step: sizes of the activation memories
    output_step_elements: int = 0
    input_step_pixels: int = 0  # spatial positions per image and step (for EnergyModel.tile_pixels)
    output_step_pixels: int = 0
    basis: str = ""
    energy_pj: dict[str, float] = field(default_factory=dict)
    note: str = ""
    merged: int = 1  # rows merged into this one (display groups)

    @property
    def input_density(self) -> float | None:
        return self.input_nonzeros / self.input_elements if self.input_elements else None

    @property
    def input_firing_rate(self) -> float | None:
        """Non-zero fraction of the input when it is spikes; ``None`` for real-valued inputs."""
        if self.category == "group":
            return self.input_density
        return None if self.input_kind not in KINDS[:2] else self.input_density

    @property
    def output_firing_rate(self) -> float | None:
        """Spikes / (neurons x steps) of a neuron layer; ``None`` for other layers."""
        if self.category != "neuron" or not self.output_elements:
            return None
        return self.output_nonzeros / self.output_elements

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "category": self.category, "params": int(self.params),
            "calls": self.calls, "steps": self.steps, "macs": self.macs, "dense_macs": self.dense_macs,
            "input_kind": self.input_kind, "input_firing_rate": self.input_firing_rate,
            "input_density": self.input_density, "sops": self.sops if self.basis == "ac" else None,
            "sops_exact": self.sops_exact if self.basis == "ac" else None,
            "output_firing_rate": self.output_firing_rate,
            "spikes": self.output_nonzeros if self.category == "neuron" else None,
            "neuron_updates": self.neuron_updates,
            "adds": self.adds, "muls": self.muls, "cmps": self.cmps, "basis": self.basis or None,
            "energy_j": {k: v * PJ for k, v in self.energy_pj.items()}, "note": self.note or None,
        }


def _kind_max(a: str, b: str) -> str:
    return a if KINDS.index(a) >= KINDS.index(b) else b


def _classify(x: torch.Tensor, chan_dim: int = 1) -> tuple[str, int, int]:
    """``(input kind, elements, non-zeros)`` judged from the values alone (see the module docstring)."""
    x = x.detach()
    n = x.numel()
    nnz = int(torch.count_nonzero(x))
    if nnz == 0:
        return "binary_spikes", n, 0
    if not x.is_floating_point():
        return ("binary_spikes" if bool(((x == 0) | (x == 1)).all()) else "real"), n, nnz
    lo, hi = torch.aminmax(x)
    if bool(lo < 0):
        return "real", n, nnz
    nz = x != 0
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    if bool(torch.where(nz, x, inf).amin() == hi):  # a single non-zero value
        return ("binary_spikes" if bool(hi == 1) else "scaled_spikes"), n, nnz
    if x.dim() >= 2:  # one value per channel?
        c = chan_dim % x.dim()
        xm = x.movedim(c, 0).reshape(x.shape[c], -1)
        nzm = nz.movedim(c, 0).reshape(x.shape[c], -1)
        lo_c = torch.where(nzm, xm, inf).amin(1)
        hi_c = xm.amax(1)
        has = nzm.any(1)
        if bool((lo_c[has] == hi_c[has]).all()):
            return "scaled_spikes", n, nnz
    return "real", n, nnz


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _pixels(x: torch.Tensor, chan_dim: int = 1) -> int:
    """Spatial positions of one image and step: the sizes after the channel dimension."""
    lead = 1 if x.dim() >= 5 else 0  # [T, B, C, ...] sequences carry a time axis first
    return int(math.prod(x.shape[lead + chan_dim + 1:])) if x.dim() > lead + chan_dim + 1 else 1


def _steps(x: torch.Tensor) -> int:
    return int(x.shape[0]) if x.dim() >= 1 and x.shape[0] > 0 else 1


# ----------------------------------------------------------------------------- op tables

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_CMP_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Threshold)
_TRANS_ACTS = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Softmax, nn.LogSoftmax, nn.ELU, nn.Mish, nn.Softplus)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
# interpolation: (multiplies, adds) per output element
_INTERP = {"nearest": (0, 0), "nearest-exact": (0, 0), "linear": (2, 1), "bilinear": (4, 3),
           "trilinear": (8, 7), "bicubic": (16, 15)}
_TRANSCENDENTAL = (2, 1, 0)  # (muls, adds, cmps) per element: sigmoid & co, a rough figure

# functional ops: name -> (muls, adds, cmps) per output element
_FUNC_ELEMENTWISE: dict[str, tuple[int, int, int]] = {}
for _n in ("add", "add_", "sub", "sub_", "rsub", "__rsub__", "__radd__", "__add__", "__sub__", "__iadd__",
           "__isub__", "neg", "neg_", "__neg__"):
    _FUNC_ELEMENTWISE[_n] = (0, 1, 0)
for _n in ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__rtruediv__",
           "__itruediv__", "true_divide", "reciprocal", "square", "pow", "__pow__"):
    _FUNC_ELEMENTWISE[_n] = (1, 0, 0)
for _n in ("relu", "relu_", "clamp", "clamp_", "clip", "clip_", "maximum", "minimum", "abs", "abs_", "where",
           "threshold", "hardtanh", "relu6", "heaviside", "ge", "gt", "le", "lt"):
    _FUNC_ELEMENTWISE[_n] = (0, 0, 1)
for _n in ("sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "exp_", "softmax", "log_softmax", "gelu", "silu",
           "elu", "softplus", "mish", "log", "sqrt", "rsqrt"):
    _FUNC_ELEMENTWISE[_n] = _TRANSCENDENTAL
_FUNC_REDUCE = {"mean": "mean", "sum": "sum", "max": "max", "min": "max", "amax": "max", "amin": "max",
                "logsumexp": "mean"}
# layout-only ops: spikes stay spikes through them
_LAYOUT = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "movedim",
           "squeeze", "unsqueeze", "contiguous", "clone", "detach", "expand", "expand_as", "repeat", "tile",
           "__getitem__", "narrow", "select", "cat", "concat", "concatenate", "stack", "pad", "chunk", "split",
           "unbind", "flip", "roll", "to", "float", "double", "half", "t"}
_FUNC_SYNAPTIC = {"conv1d", "conv2d", "conv3d", "linear", "matmul", "__matmul__", "mm", "bmm"}


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _conv_exact(x: torch.Tensor, w_shape: Sequence[int], groups: int, stride: Any, padding: Any, dilation: Any,
                padding_mode: str = "zeros", reversed_pad: Sequence[int] | None = None) -> float:
    """Exact number of non-zero input x weight products of a convolution."""
    nd = len(w_shape) - 2
    m = (x.detach() != 0).to(torch.float32)
    if m.dim() == nd + 1:
        m = m[None]
    n, c = m.shape[:2]
    m = m.reshape(n, groups, c // groups, *m.shape[2:]).sum(2)
    if padding_mode != "zeros" and reversed_pad is not None:
        m = F.pad(m, list(reversed_pad), mode=padding_mode)
        padding = 0
    ones = torch.ones(groups, 1, *w_shape[2:], device=m.device)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    cnt = conv(m, ones, None, stride, padding, dilation, groups)
    return float(cnt.double().sum()) * (int(w_shape[0]) // groups)


# ----------------------------------------------------------------------------- the recorder


class _Recorder(TorchFunctionMode):
    """Module hooks for the counted leaves + a function mode for ops written in ``forward``."""

    def __init__(self, em: EnergyModel) -> None:
        super().__init__()
        self.em = em
        self.rows: dict[str, LayerStats] = {}
        self.stack: list[str] = []
        self.leaf_depth = 0
        self.handles: list[Any] = []
        self.sources: dict[int, weakref.ref] = {}  # storage pointer -> spike-source tensor

    # --- where spikes can come from
    def mark(self, obj: Any) -> None:
        """Remember tensors that may carry spikes: model inputs and neuron outputs."""
        for t in _tensors(obj):
            self.sources[t.untyped_storage().data_ptr()] = weakref.ref(t)

    def is_source(self, t: torch.Tensor) -> bool:
        """``t`` shares storage with a live spike source (a view of a neuron output, say)."""
        ptr = t.untyped_storage().data_ptr()
        ref = self.sources.get(ptr)
        alive = ref() if ref is not None else None
        return alive is not None and alive.untyped_storage().data_ptr() == ptr

    # --- attaching
    def attach(self, model: nn.Module) -> None:
        for name, mod in model.named_modules():
            counted = _is_counted(mod)

            def pre(m: nn.Module, args: tuple, name: str = name, counted: bool = counted) -> None:
                self.stack.append(name)
                if counted:
                    self.leaf_depth += 1

            def post(m: nn.Module, args: tuple, out: Any, name: str = name, counted: bool = counted) -> None:
                try:
                    if counted and self.leaf_depth == 1:
                        self._record_module(name, m, args, out)
                finally:
                    if counted:
                        self.leaf_depth -= 1
                    self.stack.pop()

            self.handles.append(mod.register_forward_pre_hook(pre))
            self.handles.append(mod.register_forward_hook(post))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _row(self, name: str, kind: str, category: str, params: int = 0) -> LayerStats:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = LayerStats(name=name, kind=kind, category=category, params=params)
        return row

    # --- shared accounting
    def _observe(self, row: LayerStats, x: torch.Tensor, out: torch.Tensor, inputs: list[torch.Tensor],
                 chan_dim: int = 1) -> tuple[int, int, int]:
        """Classify the input and add one call's element counts; returns ``(n, nnz, steps)``."""
        if self.is_source(x):
            kind, n, nnz = _classify(x, chan_dim)
        else:  # not derived from a neuron output or the model input: real, whatever its values
            kind, n, nnz = "real", x.numel(), int(torch.count_nonzero(x))
        steps = _steps(x)
        row.input_kind = kind if not row.calls else _kind_max(row.input_kind, kind)
        row.calls += 1
        row.steps = max(row.steps, steps)
        row.input_elements += n
        row.input_nonzeros += nnz
        row.read_elements += sum(t.numel() for t in inputs)
        row.output_elements += out.numel()
        row.input_step_elements = max(row.input_step_elements, n // steps)
        row.output_step_elements = max(row.output_step_elements, out.numel() // _steps(out))
        row.input_step_pixels = max(row.input_step_pixels, _pixels(x, chan_dim))
        row.output_step_pixels = max(row.output_step_pixels, _pixels(out, chan_dim))
        return n, nnz, steps

    def _synaptic(self, row: LayerStats, x: torch.Tensor, out: torch.Tensor, dense: float,
                  exact: Callable[[], float] | None, chan_dim: int = 1) -> None:
        n, nnz, steps = self._observe(row, x, out, [x], chan_dim)
        row.dense_macs += dense
        row.macs += dense / steps
        row.sops += dense * (nnz / n if n else 0.0)
        if row.sops_exact is not None:
            row.sops_exact = None if exact is None else row.sops_exact + exact()

    def _elementwise(self, row: LayerStats, x: torch.Tensor, out: torch.Tensor, inputs: list[torch.Tensor],
                     per_out: tuple[int, int, int] = (0, 0, 0), per_in: tuple[int, int, int] = (0, 0, 0)) -> None:
        n_in, n_out = x.numel(), out.numel()
        row.muls += per_out[0] * n_out + per_in[0] * n_in
        row.adds += per_out[1] * n_out + per_in[1] * n_in
        row.cmps += per_out[2] * n_out + per_in[2] * n_in
        self._observe(row, x, out, inputs)

    # --- modules
    def _record_module(self, name: str, m: nn.Module, args: tuple, out: Any) -> None:
        ins, outs = _tensors(args), _tensors(out)
        if not ins or not outs:
            return
        name = name or "model"
        x, y = ins[0], outs[0]
        params = sum(p.numel() for p in m.parameters())
        kind = type(m).__name__
        if isinstance(m, BaseNeuron):
            row = self._row(name, kind, "neuron", params)
            self._neuron(row, m, x, y)
            self.mark(y)
        elif isinstance(m, _CONVS):
            row = self._row(name, kind, "synaptic", params)
            ws = m.weight.shape
            dense = float(y.numel() * ws[1] * math.prod(ws[2:]))

            def exact() -> float:
                return _conv_exact(x, ws, m.groups, m.stride, m.padding, m.dilation, m.padding_mode,
                                   getattr(m, "_reversed_padding_repeated_twice", None))

            self._synaptic(row, x, y, dense, exact)
            if m.bias is not None:
                row.adds += y.numel()
        elif isinstance(m, _CONV_T):
            row = self._row(name, kind, "synaptic", params)
            ws = m.weight.shape
            self._synaptic(row, x, y, float(x.numel() * ws[1] * math.prod(ws[2:])), None)
            if m.bias is not None:
                row.adds += y.numel()
        elif isinstance(m, nn.Linear):
            row = self._row(name, kind, "synaptic", params)
            self._synaptic(row, x, y, float(y.numel() * m.in_features),
                           lambda: float(torch.count_nonzero(x)) * m.out_features, chan_dim=-1)
            if m.bias is not None:
                row.adds += y.numel()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            row = self._row(name, kind, "norm", params)
            self._elementwise(row, x, y, [x], per_out=(0, 1, 0) if self.em.fold_bn else (1, 1, 0))
        elif isinstance(m, _NORMS):
            row = self._row(name, kind, "norm", params)
            self._elementwise(row, x, y, [x], per_out=(2, 1, 0), per_in=(1, 2, 0))
        elif isinstance(m, _CMP_ACTS):
            self._elementwise(self._row(name, kind, "elementwise", params), x, y, [x], per_out=(0, 0, 1))
        elif isinstance(m, nn.LeakyReLU | nn.PReLU):
            self._elementwise(self._row(name, kind, "elementwise", params), x, y, [x], per_out=(1, 0, 1))
        elif isinstance(m, _TRANS_ACTS):
            self._elementwise(self._row(name, kind, "elementwise", params), x, y, [x], per_out=_TRANSCENDENTAL)
        elif isinstance(m, nn.Upsample):
            mode = str(m.mode)
            mul, add = _INTERP.get(mode, (1, 1))
            self._elementwise(self._row(name, f"{kind}({mode})", "elementwise", params), x, y, [x],
                              per_out=(mul, add, 0))
        elif isinstance(m, _POOLS):
            row = self._row(name, kind, "elementwise", params)
            if "Max" in kind:
                self._elementwise(row, x, y, [x], per_in=(0, 0, 1))
            else:
                self._elementwise(row, x, y, [x], per_out=(1, 0, 0), per_in=(0, 1, 0))
        else:  # unknown module with parameters: one multiply-add per output element
            row = self._row(name, kind, "elementwise", params)
            row.note = "unknown layer type: estimated as one multiply and one add per output element"
            self._elementwise(row, x, y, ins, per_out=(1, 1, 0))

    def _neuron(self, row: LayerStats, m: BaseNeuron, x: torch.Tensor, y: torch.Tensor) -> None:
        n = float(x.numel())
        spikes = float(torch.count_nonzero(y))
        lif = bool(getattr(m, "_lif", False))
        soft = m.v_reset is None
        row.neuron_updates += n
        row.output_nonzeros += spikes
        row.adds += n + (spikes if soft else 0.0) + (n if lif and not soft and m.v_reset != 0.0 else 0.0)
        row.muls += (n if lif else 0.0) + (n if lif and m.decay_input else 0.0)
        row.cmps += n
        self._observe(row, x, y, [x], chan_dim=2 if x.dim() >= 3 else 1)
        if m.scale_output and not row.note:
            row.note = "emits threshold-scaled spikes V_th*S"

    # --- functional ops
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth == 0:
            name = getattr(func, "__name__", "")
            if name in _LAYOUT:
                ins = _tensors(list(args) + list(kwargs.values()))
                if ins and all(self.is_source(t) for t in ins):
                    self.mark(out)
            elif name in _FUNC_ELEMENTWISE or name in _FUNC_REDUCE or name in _FUNC_SYNAPTIC or name == "interpolate" \
                    or "pool" in name:
                self._record_function(name, args, kwargs, out)
        return out

    def _record_function(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        ins, outs = _tensors(list(args) + list(kwargs.values())), _tensors(out)
        if not ins or not outs:
            return
        x, y = ins[0], outs[0]
        owner = (self.stack[-1] if self.stack else "") or "model"
        op = _op_name(name)
        key = f"{owner}/{op}"
        if name in _FUNC_SYNAPTIC:
            row = self._row(key, op, "synaptic")
            if name.startswith("conv"):
                w = _arg(args, kwargs, 1, "weight")
                groups = int(_arg(args, kwargs, 6, "groups", 1))
                stride, pad, dil = (_arg(args, kwargs, i, k, d) for i, k, d in
                                    ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1)))
                ws = w.shape
                self._synaptic(row, x, y, float(y.numel() * ws[1] * math.prod(ws[2:])),
                               lambda: _conv_exact(x, ws, groups, stride, pad, dil))
                if _arg(args, kwargs, 2, "bias") is not None:
                    row.adds += y.numel()
            elif name == "linear":
                w = _arg(args, kwargs, 1, "weight")
                self._synaptic(row, x, y, float(y.numel() * w.shape[1]),
                               lambda: float(torch.count_nonzero(x)) * w.shape[0], chan_dim=-1)
                if _arg(args, kwargs, 2, "bias") is not None:
                    row.adds += y.numel()
            else:  # matmul family: inner size = last dim of the first operand
                cols = int(y.shape[-1]) if len(ins) > 1 and ins[1].dim() >= 2 and y.dim() >= 1 else 1
                self._synaptic(row, x, y, float(y.numel() * x.shape[-1]), lambda: float(torch.count_nonzero(x)) * cols,
                               chan_dim=-1)
            return
        if name == "interpolate":
            mode = str(_arg(args, kwargs, 3, "mode", "nearest"))
            row = self._row(f"{owner}/interpolate", f"interpolate({mode})", "elementwise")
            if mode == "area":
                self._elementwise(row, x, y, [x], per_out=(1, 0, 0), per_in=(0, 1, 0))
            else:
                mul, add = _INTERP.get(mode, (1, 1))
                self._elementwise(row, x, y, [x], per_out=(mul, add, 0))
            return
        if "pool" in name:
            row = self._row(key, op, "elementwise")
            if "max" in name:
                self._elementwise(row, x, y, [x], per_in=(0, 0, 1))
            else:
                self._elementwise(row, x, y, [x], per_out=(1, 0, 0), per_in=(0, 1, 0))
            return
        row = self._row(key, op, "elementwise")
        if len(ins) > 1:  # describe the largest operand (a gate times a feature map: the map)
            x = max(ins, key=lambda t: t.numel())
        if name in _FUNC_REDUCE:
            red = _FUNC_REDUCE[name]
            if red == "max" and len(ins) > 1 and ins[1].shape == y.shape:  # max(a, b): element-wise
                self._elementwise(row, x, y, ins, per_out=(0, 0, 1))
            elif red == "max":
                self._elementwise(row, x, y, ins, per_in=(0, 0, 1))
            elif red == "mean":
                self._elementwise(row, x, y, ins, per_out=(1, 0, 0), per_in=(0, 1, 0))
            else:
                self._elementwise(row, x, y, ins, per_in=(0, 1, 0))
            return
        self._elementwise(row, x, y, ins, per_out=_FUNC_ELEMENTWISE[name])


def _op_name(name: str) -> str:
    """``__rsub__`` -> ``sub``, ``mul_`` -> ``mul``, ``adaptive_avg_pool3d`` unchanged."""
    if name.startswith("__") and name.endswith("__"):
        core = name[2:-2]
        if core[:1] in ("r", "i") and core[1:] in ("add", "sub", "mul", "truediv", "matmul", "pow"):
            core = core[1:]
        return core
    return name.rstrip("_")


def _is_counted(m: nn.Module) -> bool:
    """Modules measured as one unit by hooks (their insides are not looked at)."""
    known = (BaseNeuron, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.Upsample, nn.LeakyReLU, nn.PReLU)
    known += _CONVS + _CONV_T + _NORMS + _CMP_ACTS + _TRANS_ACTS + _POOLS
    if isinstance(m, known):
        return True
    return any(True for _ in m.parameters(recurse=False)) and not any(True for _ in m.children())


# ----------------------------------------------------------------------------- pricing


def _memory_elements(row: LayerStats, em: EnergyModel) -> tuple[float, float]:
    """Values held by a layer's input and output memories: one whole step of the measured image,
    or one tile of ``em.tile_pixels`` pixels when that is set (and smaller)."""
    def cap(elements: int, pixels: int) -> float:
        if em.tile_pixels > 0 and pixels > em.tile_pixels:
            return elements * em.tile_pixels / pixels
        return float(elements)
    return cap(row.input_step_elements, row.input_step_pixels), cap(row.output_step_elements, row.output_step_pixels)


def _price(row: LayerStats, em: EnergyModel, spiking: bool) -> None:
    """Fill ``row.basis`` and ``row.energy_pj`` (both energy models, with their parts)."""
    syn = 0.0
    ac = False
    if row.category == "synaptic":
        ac = spiking and (row.input_kind == "binary_spikes"
                          or (row.input_kind == "scaled_spikes" and em.scaled_spikes_as_ac))
        row.basis = "ac" if ac else "mac"
        syn = row.sops * em.e_ac if ac else row.dense_macs * em.e_mac
    elem = row.adds * em.e_ac + row.muls * em.e_mul + row.cmps * em.e_cmp
    ops = syn + elem
    in_mem, out_mem = _memory_elements(row, em)
    a_in = em.sram_pj(in_mem * em.activation_bits)
    a_out = em.sram_pj(out_mem * em.activation_bits)
    w_access = em.sram_pj(row.params * em.weight_bits)
    weights = potentials = acts = 0.0
    if row.category == "synaptic":
        weights = (row.sops if ac else row.dense_macs) * w_access
        if ac:
            acts = row.input_nonzeros * em.sram_pj(in_mem * em.spike_bits)
            potentials = 2.0 * row.sops * em.sram_pj(out_mem * em.potential_bits)
        else:
            acts = row.input_elements * a_in + row.output_elements * a_out
    elif row.category == "neuron":
        potentials = 2.0 * row.neuron_updates * em.sram_pj(in_mem * em.potential_bits)
        acts = row.input_elements * a_in + row.output_nonzeros * em.sram_pj(out_mem * em.spike_bits)
    elif not (row.category == "norm" and "BatchNorm" in row.kind and em.fold_bn):
        weights = row.output_elements * w_access if row.params else 0.0
        acts = row.read_elements * a_in + row.output_elements * a_out
    row.energy_pj = {
        "ops_45nm": ops,
        "ops_45nm_synaptic": syn,
        "ops_45nm_neuron": elem if row.category == "neuron" else 0.0,
        "ops_45nm_other": 0.0 if row.category == "neuron" else elem,
        "memory_aware": ops + weights + potentials + acts,
        "memory_weights": weights,
        "memory_potentials": potentials,
        "memory_activations": acts,
    }


# ----------------------------------------------------------------------------- reports


def count_parameters(model: nn.Module) -> int:
    """Every parameter of ``model`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def _sum(rows: Sequence[LayerStats], attr: str) -> float:
    return float(sum(getattr(r, attr) for r in rows))


def _totals(rows: Sequence[LayerStats]) -> dict:
    syn = [r for r in rows if r.category == "synaptic"]
    neu = [r for r in rows if r.category == "neuron"]
    exact = [r.sops_exact for r in syn if r.basis == "ac"]
    updates, spikes = _sum(neu, "neuron_updates"), _sum(neu, "output_nonzeros")

    def e(key: str) -> float:
        return sum(r.energy_pj.get(key, 0.0) for r in rows) * PJ

    return {
        "params": int(_sum(rows, "params")),
        "macs": _sum(syn, "macs"),
        "dense_macs": _sum(syn, "dense_macs"),
        "mac_layer_macs": float(sum(r.dense_macs for r in syn if r.basis == "mac")),
        "sops": float(sum(r.sops for r in syn if r.basis == "ac")),
        "sops_exact": None if any(v is None for v in exact) else float(sum(exact)),  # type: ignore[arg-type]
        "neuron_updates": updates,
        "spikes": spikes,
        "firing_rate": spikes / updates if updates else None,
        "adds": _sum(rows, "adds"), "muls": _sum(rows, "muls"), "cmps": _sum(rows, "cmps"),
        "ops_45nm_j": {"synaptic": e("ops_45nm_synaptic"), "neuron": e("ops_45nm_neuron"),
                       "other": e("ops_45nm_other"), "total": e("ops_45nm")},
        "memory_aware_j": {"ops": e("ops_45nm"), "weights": e("memory_weights"),
                           "potentials": e("memory_potentials"), "activations": e("memory_activations"),
                           "total": e("memory_aware")},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class EnergyReport:
    """Per-layer counts and energies of one model on a set of images (per image, averaged).

    For a spiking model ``ann`` holds the report of its ANN twin (or ``None`` when none is known);
    for a non-spiking model ``ann`` is ``None`` and the model itself is the ANN."""

    model: str
    spiking: bool
    T: int | None
    params: int
    layers: list[LayerStats]
    energy_model: EnergyModel
    images: list[dict] = field(default_factory=list)
    ann: EnergyReport | None = None
    notes: list[str] = field(default_factory=list)
    untrained: bool = False

    @property
    def totals(self) -> dict:
        return _totals(self.layers)

    def priced(self, energy_model: EnergyModel) -> EnergyReport:
        """The same measured counts (and the twin's) priced under another energy model; the
        model is not run again, since no count depends on the prices. ``fold_bn`` is the one
        field that changes what is counted (BatchNorm work), so it must stay the same."""
        if energy_model.fold_bn != self.energy_model.fold_bn:
            raise ValueError("fold_bn changes the counted BatchNorm work, not just its price: measure again")
        layers = [replace(r) for r in self.layers]
        for r in layers:
            _price(r, energy_model, self.spiking)
        rep = replace(self, layers=layers, energy_model=energy_model,
                      ann=None if self.ann is None else self.ann.priced(energy_model))
        rep.notes = _notes(rep)
        return rep

    def energy(self) -> dict:
        """SNN and ANN energies (joules per image) and their ratio under both models."""
        snn = self.totals if self.spiking else None
        ann_rep = self.ann if self.spiking else self
        ann = ann_rep.totals if ann_rep is not None else None
        out = {}
        for key, part in (("ops_45nm", "ops_45nm_j"), ("memory_aware", "memory_aware_j")):
            s = snn[part] if snn else None
            a = ann[part] if ann else None
            d: dict[str, Any] = {"snn_j": s["total"] if s else None, "ann_j": a["total"] if a else None}
            d["snn_over_ann"] = _ratio(d["snn_j"], d["ann_j"])
            if key == "ops_45nm":
                d["snn_synaptic_j"] = s["synaptic"] if s else None
                d["ann_synaptic_j"] = a["synaptic"] if a else None
                d["synaptic_snn_over_ann"] = _ratio(d["snn_synaptic_j"], d["ann_synaptic_j"])
            d["snn_parts_j"], d["ann_parts_j"] = s, a
            out[key] = d
        return out

    def to_dict(self) -> dict:
        d = {
            "model": self.model, "spiking": self.spiking, "T": self.T, "params": int(self.params),
            "untrained": self.untrained, "images": self.images, "energy_model": asdict(self.energy_model),
            "layers": [r.to_dict() for r in self.layers], "totals": self.totals, "energy": self.energy(),
            "notes": list(self.notes),
        }
        if self.ann is not None:
            d["ann"] = {"model": self.ann.model, "params": int(self.ann.params),
                        "layers": [r.to_dict() for r in self.ann.layers], "totals": self.ann.totals}
        return d


def profile(model: nn.Module, inputs: Sequence[torch.Tensor], energy_model: EnergyModel | None = None,
            spiking: bool | None = None) -> list[LayerStats]:
    """Run ``model(x)`` for every ``x`` in ``inputs`` (batch size 1 each) and return its priced
    layer rows, counts averaged over the inputs. ``spiking`` defaults to "has a neuron"."""
    em = energy_model or EnergyModel()
    if spiking is None:
        spiking = any(isinstance(m, BaseNeuron) for m in model.modules())
    if not inputs:
        raise ValueError("no inputs to measure on")
    rec = _Recorder(em)
    was_training = model.training
    model.eval()
    rec.attach(model)
    try:
        # compiled kernels would hide the ops (and modules) they replace from the recorder
        with torch.no_grad(), compiled_inference(False), rec:
            for x in inputs:
                rec.mark(x)  # an event-camera input may be spikes; an image is real by its values
                model(x)
    finally:
        rec.detach()
        model.train(was_training)
    n = float(len(inputs))
    rows = list(rec.rows.values())
    for r in rows:
        for attr in ("calls", "macs", "dense_macs", "sops", "input_elements", "input_nonzeros", "read_elements",
                     "output_elements", "output_nonzeros", "neuron_updates", "adds", "muls", "cmps"):
            setattr(r, attr, getattr(r, attr) / n)
        if r.sops_exact is not None:
            r.sops_exact /= n
        if r.category != "synaptic":
            r.sops_exact = None
        _price(r, em, spiking)
    return rows


def ann_twin(model: nn.Module) -> nn.Module | None:
    """The ANN twin of a known spiking model (same shapes, fresh weights), else ``None``."""
    from .layers import SeqWrap
    from .models import DnCNN, ESDNet, ESDNetANN, SpikingDnCNN

    with torch.random.fork_rng(devices=[]):
        if isinstance(model, SpikingDnCNN):
            depth = 2 + sum(isinstance(m, SeqWrap) for m in model.body)
            bn = any(isinstance(m, nn.BatchNorm2d) for m in model.body.modules())
            return DnCNN(model.head.in_channels, depth, model.head.out_channels, bn)
        if isinstance(model, ESDNet) and model._spiking:
            keys = ("in_channels", "out_channels", "dim", "en_num_blocks", "de_num_blocks")
            return ESDNetANN(**{k: model.config[k] for k in keys})
    return None


def _as_inputs(images: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(images, torch.Tensor):
        images = list(images) if images.dim() == 4 else [images]
    out = []
    for i, item in enumerate(images):
        name, img = item if isinstance(item, tuple) else (f"image{i}", item)
        if isinstance(img, np.ndarray):
            arr = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
            t = torch.from_numpy(np.ascontiguousarray(arr))
            img = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        if img.dim() != 3:
            raise ValueError(f"an image must be [C, H, W], got shape {tuple(img.shape)}")
        out.append((str(name), img.float()))
    if not out:
        raise ValueError("no images to measure on")
    return out


def measure(model: nn.Module, images: Any, energy_model: EnergyModel | None = None, twin: Any = "auto",
            name: str | None = None, untrained: bool = False) -> EnergyReport:
    """Measure ``model`` on ``images`` and, for a spiking model, its ANN twin on the same images.

    ``images``: a tensor ``[C,H,W]`` or ``[N,C,H,W]``, or a sequence of ``[C,H,W]`` tensors, arrays
    (uint8 or float in [0, 1]) or ``(name, image)`` pairs; each runs as a batch of one.
    ``twin``: ``"auto"`` (:func:`ann_twin`), ``None`` (no comparison) or an ANN module."""
    em = energy_model or EnergyModel()
    named = _as_inputs(images)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = [t[None].to(dev) for _, t in named]
    spiking = any(isinstance(m, BaseNeuron) for m in model.modules())
    rows = profile(model, inputs, em, spiking)
    T = getattr(model, "T", None) if spiking else None
    if spiking and not isinstance(T, int):
        T = max((r.steps for r in rows if r.category == "neuron"), default=None)
    report = EnergyReport(
        model=name or type(model).__name__, spiking=spiking, T=T, params=count_parameters(model), layers=rows,
        energy_model=em, images=[{"name": n, "shape": list(t.shape)} for n, t in named], untrained=untrained)
    if spiking:
        tw = ann_twin(model) if isinstance(twin, str) and twin == "auto" else twin
        if tw is not None:
            tw = tw.to(dev)
            report.ann = EnergyReport(
                model=f"{type(tw).__name__} (ANN twin)", spiking=False, T=None, params=count_parameters(tw),
                layers=profile(tw, inputs, em, spiking=False), energy_model=em, images=report.images)
    report.notes = _notes(report)
    return report


def _names(rows: Sequence[LayerStats], limit: int = 4) -> str:
    names = [r.name for r in rows]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _notes(rep: EnergyReport) -> list[str]:
    notes = []
    if rep.untrained:
        notes.append("untrained weights: firing rates are not those of a trained model")
    if not rep.spiking:
        notes.append("the model is an ANN: there is no SNN to compare, every synaptic layer is counted as MACs")
    elif rep.ann is None:
        notes.append("no ANN twin is known for this model: no SNN/ANN ratio")
    syn = [r for r in rep.layers if r.category == "synaptic"]
    if rep.spiking:
        real = [r for r in syn if r.basis == "mac"]
        if real:
            e_all = sum(r.energy_pj["ops_45nm_synaptic"] for r in syn)
            share = 100.0 * sum(r.energy_pj["ops_45nm_synaptic"] for r in real) / e_all if e_all else 0.0
            notes.append(f"hybrid: {len(real)} of {len(syn)} synaptic layers see real-valued (non-spike) inputs and "
                         f"are counted as MACs at {rep.energy_model.e_mac} pJ ({share:.1f}% of the SNN's synaptic "
                         f"energy): {_names(real)}")
        scaled = [r for r in syn if r.input_kind == "scaled_spikes"]
        if scaled and rep.energy_model.scaled_spikes_as_ac:
            notes.append(f"{len(scaled)} synaptic layers receive threshold-scaled spikes (one value per channel): "
                         "counted as accumulates of weights pre-multiplied by V_th (folded per layer), not as "
                         "plain binary-spike ACs; set scaled_spikes_as_ac=false to count them as MACs")
        elif scaled:
            notes.append(f"{len(scaled)} synaptic layers receive threshold-scaled spikes: counted as MACs")
        once = [r for r in syn if r.steps == 1 and rep.T and rep.T > 1]
        if once:
            notes.append(f"{len(once)} synaptic layers run once per image, not at every time step: {_names(once)}")
        t = rep.totals
        if t["sops"] and t["sops_exact"] is not None:
            diff = 100.0 * (1.0 - t["sops_exact"] / t["sops"])
            where = "below" if diff >= 0 else "above"
            notes.append(f"exact SOPs (non-zero inputs x actual fan-out, zero padding excluded) are {abs(diff):.1f}% "
                         f"{where} the dense MACs x rate x T convention used for energy")
    covered = sum(r.params for r in rep.layers)
    if covered != rep.params:
        notes.append(f"{rep.params - covered:,} parameters belong to modules that did not run or are not counted")
    bn = [r for r in rep.layers if "BatchNorm" in r.kind]
    if bn:
        folded = rep.energy_model.fold_bn
        notes.append("BatchNorm folded into the preceding convolution (one bias add per element)" if folded
                     else "BatchNorm counted unfolded (one multiply and one add per element)")
    return notes


# ----------------------------------------------------------------------------- display


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for thr, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= thr:
            return f"{x / thr:.3g}{p}{unit}"
    return f"{x:.3g}{unit}"


def _joules(j: float | None) -> str:
    if j is None:
        return "-"
    for thr, p in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ")):
        if abs(j) >= thr:
            return f"{j / thr:.3g} {p}"
    return f"{j / 1e-12:.3g} pJ"


def _group_key(name: str, depth: int) -> str:
    owner, _, _ = name.partition("/")
    return ".".join(owner.split(".")[:depth])


def _merge(name: str, rows: Sequence[LayerStats]) -> LayerStats:
    if len(rows) == 1:
        return rows[0]
    spike_syn = [r for r in rows if r.category == "synaptic" and r.input_kind != "real"]
    syn = [r for r in rows if r.category == "synaptic"]
    neu = [r for r in rows if r.category == "neuron"]
    kinds = {r.input_kind for r in syn}
    g = LayerStats(name=name, kind=f"[{len(rows)} rows]", category="group", merged=len(rows),
                   params=int(_sum(rows, "params")), steps=max(r.steps for r in rows),
                   macs=_sum(syn, "macs"), dense_macs=_sum(syn, "dense_macs"), sops=_sum(spike_syn, "sops"),
                   input_kind=kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "-"),
                   input_elements=_sum(spike_syn, "input_elements"),
                   input_nonzeros=_sum(spike_syn, "input_nonzeros"),
                   output_elements=_sum(neu, "output_elements"), output_nonzeros=_sum(neu, "output_nonzeros"))
    g.energy_pj = {k: sum(r.energy_pj.get(k, 0.0) for r in rows) for k in rows[0].energy_pj}
    return g


def group_rows(rows: Sequence[LayerStats], depth: int | None = None,
               max_rows: int = 60) -> tuple[list[LayerStats], int]:
    """Rows merged by the first ``depth`` parts of their names (0: none). ``None`` picks the
    deepest grouping with at most ``max_rows`` rows. Returns ``(rows, depth used)``."""
    if depth is None:
        if len(rows) <= max_rows:
            return list(rows), 0
        depth = 1
        while True:
            n = len({_group_key(r.name, depth + 1) for r in rows})
            if n > max_rows or depth >= 12:
                break
            depth += 1
    if depth <= 0:
        return list(rows), 0
    groups: dict[str, list[LayerStats]] = {}
    for r in rows:
        groups.setdefault(_group_key(r.name, depth) or "model", []).append(r)
    return [_merge(k, v) for k, v in groups.items()], depth


def format_report(rep: EnergyReport, group: int | None = None) -> str:
    """The terminal table: one row per layer (or group), totals, SNN/ANN ratios and notes."""
    rows, depth = group_rows(rep.layers, group)
    w = min(44, max(12, max(len(r.name) for r in rows)))
    head = (f"{'layer':<{w}} {'kind':<14} {'params':>10} {'MACs/step':>9} {'T':>2} {'input':<7} {'in-rate':>7} "
            f"{'SOPs':>8} {'out-rate':>8} {'E 45nm':>9} {'E memory':>9}")
    lines = [f"energy of {rep.model} ({'SNN, T=' + str(rep.T) if rep.spiking else 'ANN'}), "
             f"{rep.params:,} parameters, per image, mean over {len(rep.images)} image(s) "
             f"{_shapes(rep.images)}; energy model {rep.energy_model.name}", head, "-" * len(head)]
    short = {"binary_spikes": "binary", "scaled_spikes": "scaled", "real": "real"}
    for r in rows:
        name = r.name if len(r.name) <= w else ".." + r.name[-(w - 2):]
        rate, orate = r.input_firing_rate, r.output_firing_rate
        is_syn = r.category in ("synaptic", "group") and r.macs
        show_sops = r.basis == "ac" or (r.category == "group" and r.sops)
        lines.append(
            f"{name:<{w}} {r.kind[:14]:<14} {r.params:>10,} {_si(r.macs) if is_syn else '-':>9} {r.steps:>2} "
            f"{short.get(r.input_kind, r.input_kind)[:7]:<7} {'-' if rate is None else f'{rate:.3f}':>7} "
            f"{_si(r.sops) if show_sops else '-':>8} {'-' if orate is None else f'{orate:.3f}':>8} "
            f"{_joules(r.energy_pj['ops_45nm'] * PJ):>9} {_joules(r.energy_pj['memory_aware'] * PJ):>9}")
    lines.append("-" * len(head))
    if depth:
        lines.append(f"(rows grouped by the first {depth} part(s) of their names; --group 0 lists every layer)")
    lines += _summary(rep)
    return "\n".join(lines)


def _shapes(images: list[dict]) -> str:
    shapes = sorted({"x".join(str(s) for s in im["shape"][1:]) for im in images})
    return ", ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")


def _summary(rep: EnergyReport) -> list[str]:
    t = rep.totals
    en = rep.energy()
    ann = rep.ann.totals if rep.ann is not None else (None if rep.spiking else t)
    lines = []
    if rep.spiking:
        sx = "" if t["sops_exact"] is None else f" (exact {_si(t['sops_exact'])})"
        rate = t["firing_rate"]
        lines.append(f"SNN: {_si(t['macs'])} MACs/step dense; {_si(t['mac_layer_macs'])} MACs in real-input "
                     f"layers (all steps), {_si(t['sops'])} SOPs{sx}, {_si(t['neuron_updates'])} neuron updates, "
                     f"mean firing rate {'-' if rate is None else f'{rate:.4f}'}")
    if ann is not None:
        lines.append(f"ANN{' twin' if rep.spiking else ''}: {_si(ann['macs'])} MACs, "
                     f"{(rep.ann.params if rep.ann is not None else rep.params):,} parameters")
    lines.append(f"{'per image':<42} {'SNN':>10} {'ANN':>10} {'SNN/ANN':>8}")

    def line(label: str, s: float | None, a: float | None) -> str:
        r = _ratio(s, a)
        return f"{label:<42} {_joules(s):>10} {_joules(a):>10} {'-' if r is None else f'{r:.3f}':>8}"

    o, m = en["ops_45nm"], en["memory_aware"]
    lines.append(line("45 nm ops, synaptic only (as in papers)", o["snn_synaptic_j"], o["ann_synaptic_j"]))
    sp, ap = o["snn_parts_j"], o["ann_parts_j"]
    lines.append(line("  + neurons", sp["neuron"] if sp else None, ap["neuron"] if ap else None))
    lines.append(line("  + BN and other element-wise work", sp["other"] if sp else None, ap["other"] if ap else None))
    lines.append(line("45 nm ops, total", o["snn_j"], o["ann_j"]))
    sm, am = m["snn_parts_j"], m["ann_parts_j"]
    for part in ("weights", "potentials", "activations"):
        lines.append(line(f"  + memory: {part}", sm[part] if sm else None, am[part] if am else None))
    lines.append(line("memory-aware total", m["snn_j"], m["ann_j"]))
    lines += [f"note: {n}" for n in rep.notes]
    return lines


# ----------------------------------------------------------------------------- plot


def _blocks(rows: Sequence[LayerStats]) -> list[LayerStats]:
    """Each synaptic row with the non-synaptic rows that follow it (rows before the first
    synaptic row join the first block)."""
    blocks: list[list[LayerStats]] = []
    for r in rows:
        if r.category == "synaptic" or not blocks:
            blocks.append([r])
        else:
            blocks[-1].append(r)
    label = [next((r.name for r in b if r.category == "synaptic"), b[0].name) for b in blocks]
    return [_merge(name, b) if len(b) > 1 else b[0] for name, b in zip(label, blocks)]


def _paired(rep: EnergyReport, group: int | None) -> tuple[list[str], list[tuple[float, float]],
                                                            list[tuple[float, float]] | None]:
    ann = rep.ann if rep.spiking else None
    rows, depth = group_rows(rep.layers, group, max_rows=40)
    if depth == 0:
        items = _blocks(rep.layers)
        other = _blocks(ann.layers) if ann is not None else None
    else:
        items = rows
        other = group_rows(ann.layers, depth)[0] if ann is not None else None
    labels = [r.name for r in items]
    mine = [(r.energy_pj["ops_45nm"] * PJ, r.energy_pj["memory_aware"] * PJ) for r in items]
    if other is None:
        return labels, mine, None
    theirs = {r.name: (r.energy_pj["ops_45nm"] * PJ, r.energy_pj["memory_aware"] * PJ) for r in other}
    if not set(labels) & set(theirs) and len(other) == len(items):  # different names, same layout
        return labels, mine, [(r.energy_pj["ops_45nm"] * PJ, r.energy_pj["memory_aware"] * PJ) for r in other]
    return labels, mine, [theirs.get(n, (0.0, 0.0)) for n in labels]


def plot_report(rep: EnergyReport, path: str | os.PathLike, group: int | None = None) -> Path:
    """Horizontal bar chart per layer (or group): energy under both models, SNN vs ANN twin.

    Written atomically as PNG with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    labels, mine, theirs = _paired(rep, group)
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    label_w = min(280, 12 + 7 * max(len(s) for s in labels))
    panel_w, bar_h, gap = 340, 13, 8
    row_h = 2 * bar_h + gap
    top = 78
    width = label_w + 2 * panel_w + 40
    height = top + row_h * len(labels) + 30
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    me, other = ("SNN", "ANN twin") if rep.spiking else ("ANN", "")
    col_me, col_other = (31, 119, 180), (160, 160, 160)
    en = rep.energy()
    title = f"{rep.model}: energy per layer, per image ({_shapes(rep.images)})"
    if rep.untrained:
        title += ", untrained weights: firing rates are not those of a trained model"
    d.text((10, 8), title, fill="black", font=font)
    sub = []
    for key, label in (("ops_45nm", "45 nm ops"), ("memory_aware", "memory-aware")):
        e = en[key]
        r = e["snn_over_ann"]
        sub.append(f"{label}: SNN {_joules(e['snn_j'])}, ANN {_joules(e['ann_j'])}"
                   + ("" if r is None else f", SNN/ANN {r:.3f}"))
    d.text((10, 26), "   ".join(sub), fill="black", font=font)
    d.rectangle((10, 46, 22, 56), fill=col_me)
    d.text((26, 44), me, fill="black", font=font)
    if theirs is not None:
        d.rectangle((80, 46, 92, 56), fill=col_other)
        d.text((96, 44), other, fill="black", font=font)
    for p, name in enumerate(("45 nm operations model", "memory-aware model")):
        x0 = label_w + p * (panel_w + 20)
        d.text((x0, 62), name, fill="black", font=font)
        vmax = max([v[p] for v in mine] + ([v[p] for v in theirs] if theirs else []) + [1e-30])
        for i, lab in enumerate(labels):
            y = top + i * row_h
            if p == 0:
                d.text((8, y + 2), lab if len(lab) <= (label_w - 12) // 7 else ".." + lab[-((label_w - 26) // 7):],
                       fill="black", font=font)
            bars = [(mine[i][p], col_me)] + ([(theirs[i][p], col_other)] if theirs else [])
            for j, (v, col) in enumerate(bars):
                yy = y + j * bar_h
                x1 = x0 + int((panel_w - 70) * v / vmax)
                d.rectangle((x0, yy, max(x0 + 1, x1), yy + bar_h - 2), fill=col)
                d.text((x1 + 4, yy - 2), _joules(v), fill=(60, 60, 60), font=font)
        d.line((x0, top - 2, x0, top + row_h * len(labels)), fill="black")
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


# ----------------------------------------------------------------------------- command line


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Center crop to ``h x w``, enlarging first (bicubic) when the image is smaller."""
    from PIL import Image

    H, W = img.shape[:2]
    s = max(h / H, w / W)
    if s > 1:
        img = np.asarray(Image.fromarray(img).resize((max(w, round(W * s)), max(h, round(H * s))), Image.BICUBIC))
        H, W = img.shape[:2]
    y, x = (H - h) // 2, (W - w) // 2
    return img[y:y + h, x:x + w]


def cmd_energy(args: argparse.Namespace) -> int:
    """``spikeir energy``: measure a model, print the table, optionally write JSON and a PNG."""
    from .data import add_test_noise, builtin_images, load_image_set
    from .evaluate import model_in_channels
    from .io import load_model

    em = ENERGY_PRESETS[args.preset].with_overrides(args.set or [])
    if args.size is not None and min(args.size) < 1:
        raise ValueError(f"--size must be positive, got {args.size[0]} {args.size[1]}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError("--max-images must be >= 1")
    for out in (args.json, args.plot):
        if out and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    model = load_model(args.model, args.device, allow_untrained=True)
    info = getattr(model, "spikeir_info", None) or {}
    gray = model_in_channels(model) == 1
    if args.images:
        imgs = load_image_set(args.images, gray=gray)
    else:
        h, w = args.size or (128, 128)
        imgs = [(n, _fit(a, h, w)) for n, a in builtin_images("heldout", gray=gray)]
    imgs = imgs[: args.max_images] if args.max_images else imgs
    sigma = args.sigma
    if sigma is None:
        trained = info.get("sigma") if info.get("task") == "denoise" else 0.0
        if isinstance(trained, (list, tuple)):
            raise ValueError(f"{args.model} was trained for a noise range {trained}; pick one with --sigma")
        sigma = float(trained or 0.0)
    if sigma < 0:
        raise ValueError(f"--sigma must be >= 0, got {sigma}")
    inputs = []
    for n, a in imgs:
        x = add_test_noise(a, sigma, seed=0) if sigma else a.astype(np.float32) / 255.0
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        inputs.append((n, t[None] if t.dim() == 2 else t.permute(2, 0, 1)))
    rep = measure(model, inputs, em, name=str(args.model), untrained=bool(info.get("untrained")))
    if sigma:
        rep.notes.insert(0, f"inputs carry Gaussian noise sigma {sigma:g} (seed 0), as the model was trained")
    print(format_report(rep, args.group))
    if args.json:
        d = rep.to_dict()
        d["images_source"] = str(args.images) if args.images else "builtin:heldout (center-cropped)"
        d["sigma"] = sigma
        write_json_atomic(args.json, d, overwrite=args.overwrite)
        print(f"json: {args.json}")
    if args.plot:
        plot_report(rep, args.plot, args.group)
        print(f"plot: {args.plot}")
    return 0


def add_energy_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``energy`` sub-command to an ``argparse`` sub-parser set."""
    p = subparsers.add_parser(
        "energy", help="count operations, spikes and memory traffic per layer; energy of the SNN and its ANN twin",
        description="Measure a model on images: per-layer parameters, MACs, input kind and firing rate, SOPs, "
        "neuron updates; energy under the 45 nm operation model used in papers and a memory-aware model, "
        "for the SNN and its ANN twin.")
    p.add_argument("--model", required=True, help="bundled model, .safetensors file or preset (e.g. esdnet)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="folder of images (or builtin:NAME), read at full size; "
                     "default: the built-in held-out images center-cropped to 128x128")
    src.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                     help="crop (or enlarge) the built-in held-out images to H x W")
    p.add_argument("--max-images", type=int, help="use at most this many images")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json/--plot files")
    p.add_argument("--sigma", type=float, help="Gaussian noise added to the inputs (default: the sigma a "
                   "denoising model file was trained for, else 0)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a bar chart per layer (PNG)")
    p.add_argument("--group", type=int, metavar="DEPTH",
                   help="merge rows by the first DEPTH parts of their names (0: every layer; default: automatic)")
    p.add_argument("--preset", choices=sorted(ENERGY_PRESETS), default="fp32-45nm", help="energy constants")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an energy constant, e.g. e_mac=3.2, weight_bits=8, fold_bn=false")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_energy)
    return p
