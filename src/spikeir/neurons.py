r"""Multi-step spiking neurons on sequences ``[T, B, ...]``.

Every call starts from a fresh membrane, so there is no hidden state to reset between batches.
All neurons share one update, written in SpikingJelly's notation (``X`` input current, ``H``
membrane after charging, ``S`` spike, ``V`` membrane after reset, ``V_th`` threshold):

.. math::

    \text{charge (IF):}\quad & H[t] = V[t-1] + X[t] \\
    \text{charge (LIF, decay\_input=True):}\quad & H[t] = V[t-1] + (X[t] - (V[t-1] - V_{reset}))/\tau \\
    \text{charge (LIF, decay\_input=False):}\quad & H[t] = V[t-1] - (V[t-1] - V_{reset})/\tau + X[t] \\
    \text{fire:}\quad & S[t] = \Theta(H[t] - V_{th}) \\
    \text{hard reset:}\quad & V[t] = H[t]\,(1 - S[t]) + V_{reset}\,S[t] \\
    \text{soft reset:}\quad & V[t] = H[t] - V_{th}\,S[t]

``V[-1]`` is ``V_reset`` for a hard reset and 0 for a soft reset (SpikingJelly's initial
state), or ``V_th / 2`` with ``v_init="half"``. The output is ``S[t]``, or ``V_th * S[t]`` with
``scale_output=True`` (the trainable-quantisation IF of Castagnetti et al.). ``Θ`` is the
Heaviside step in the forward pass and a surrogate derivative in the backward pass
(:mod:`spikeir.surrogate`).

Mapping to other libraries:

====================  =====================================  ================================
spikeir               SpikingJelly (activation_based)        snnTorch
====================  =====================================  ================================
``IF``                ``IFNode``                             ``Leaky(beta=1)``
``LIF(tau)``          ``LIFNode(tau)``                       ``Leaky(beta=1-1/tau)`` (for
                                                             ``decay_input=False``)
``ParametricLIF``     ``ParametricLIFNode(init_tau)``        ``Leaky(learn_beta=True)``
``v_reset=None``      ``v_reset=None`` (soft reset)          ``reset_mechanism="subtract"``
``v_reset=0.0``       ``v_reset=0.`` (hard reset)            ``reset_mechanism="zero"``
``detach_reset``      ``detach_reset``                       ``reset_delay`` n/a; detach in
                                                             snnTorch is ``reset_mechanism``
``surrogate``         ``surrogate_function``                 ``spike_grad``
``v_threshold``       ``v_threshold``                        ``threshold``
====================  =====================================  ================================

The implementation is a single autograd function over the whole sequence: the forward keeps only
the charged membrane ``H`` (one tensor the size of the input) and the backward runs the
recurrence in reverse, so training builds no per-step Python graph.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .surrogate import Surrogate, make_surrogate

__all__ = [
    "BaseNeuron",
    "IF",
    "LIF",
    "ParametricLIF",
    "FiringRates",
    "record_firing_rates",
    "compact_spike_storage",
    "compiled_inference",
    "CompiledNeuronError",
    "compiled_inference_enabled",
    "compiled_kernel",
    "compiled_kernel_applies",
    "input_signature",
    "SpikeStorage",
    "reference_loop",
    "NEURONS",
    "make_neuron",
]


@dataclass(frozen=True)
class _Cfg:
    lif: bool
    decay_input: bool
    v_reset: float | None
    detach_reset: bool
    scale_output: bool
    half_init: bool
    surrogate: Surrogate


def _initial_v(x0: torch.Tensor, th: torch.Tensor, cfg: _Cfg) -> torch.Tensor:
    if cfg.half_init:
        return (0.5 * th).expand_as(x0).clone()
    return torch.full_like(x0, 0.0 if cfg.v_reset is None else cfg.v_reset)


def _reset(h: torch.Tensor, s: torch.Tensor, th: torch.Tensor, cfg: _Cfg) -> torch.Tensor:
    if cfg.v_reset is None:
        return h - s * th
    return h * (1.0 - s) + cfg.v_reset * s


def _empty_sequence(x: torch.Tensor) -> torch.Tensor:
    """An empty ``[T, ...]`` tensor laid out as ``x``; for an input repeated over time (stride 0
    on ``T``, where ``empty_like`` falls back to the default layout) each step is laid out as
    ``x[0]``, so that a channels-last input gives channels-last spikes."""
    if x.shape[0] == 1 or x.stride(0) != 0:
        return torch.empty_like(x)
    step = torch.empty_like(x[0])
    return torch.empty_strided(x.shape, (step.numel(),) + step.stride(), dtype=x.dtype, device=x.device)


class _MultiStep(torch.autograd.Function):
    """Whole-sequence neuron: saves ``H`` only, recomputes spikes in backward.

    The loops write into preallocated ``[T, ...]`` buffers and fold the per-step algebra into
    as few passes over memory as possible (``addcmul``, ``where``, dot products for a scalar
    threshold's gradient), since on CPU the neuron is memory-bound."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, th: torch.Tensor, k: torch.Tensor, cfg: _Cfg):  # type: ignore[override]
        vr = 0.0 if cfg.v_reset is None else cfg.v_reset
        kf = float(k)
        v = _initial_v(x[0], th, cfg)
        hs, out = _empty_sequence(x), _empty_sequence(x)
        for t in range(x.shape[0]):
            h = hs[t]
            if not cfg.lif:
                torch.add(v, x[t], out=h)
            elif cfg.decay_input:  # H = V + (X - (V - vr)) k = V (1 - k) + k X + k vr
                torch.add(v * (1.0 - kf), x[t], alpha=kf, out=h)
                if vr:
                    h += kf * vr
            else:  # H = V - (V - vr) k + X = V (1 - k) + X + k vr
                torch.add(x[t], v, alpha=1.0 - kf, out=h)
                if vr:
                    h += kf * vr
            # torch.where / masked_fill are several times slower than arithmetic on CPU builds
            if cfg.scale_output:
                s = (h >= th).to(x.dtype)
                torch.mul(s, th, out=out[t])
            else:  # the comparison cast straight into the output saves a temporary and a pass
                s = out[t]
                s.copy_(h >= th)
            if cfg.v_reset is None:
                v = h - out[t] if cfg.scale_output else h - s * th
            else:  # H (1 - S) + vr S
                v = torch.addcmul(h, h, s, value=-1.0)
                if vr:
                    v.add_(s, alpha=vr)
        ctx.cfg = cfg
        ctx.save_for_backward(hs, th, k)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        hs, th, k = ctx.saved_tensors
        cfg: _Cfg = ctx.cfg
        soft = cfg.v_reset is None
        vr = 0.0 if soft else cfg.v_reset
        need_th, need_k = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        kf = float(k)
        scalar_th = th.dim() == 0
        gx = torch.empty_like(hs)
        gv = torch.zeros_like(hs[0])
        # threshold gradient: a running scalar (dot products) or a per-element buffer
        gth_acc = hs.new_zeros(()) if scalar_th else torch.zeros_like(hs[0])

        def th_add(a: torch.Tensor, b: torch.Tensor, sign: float) -> None:
            nonlocal gth_acc
            if scalar_th:
                gth_acc = gth_acc + sign * torch.dot(a.reshape(-1), b.reshape(-1))
            else:
                gth_acc.addcmul_(a, b, value=sign)

        gk = hs.new_zeros(()) if need_k else None
        v_init = _initial_v(hs[0], th, cfg) if need_k else None
        for t in range(hs.shape[0] - 1, -1, -1):
            h, go = hs[t], grad_out[t]
            s = (h >= th).to(h.dtype)
            sg = cfg.surrogate.grad(h - th)
            if soft:  # V = H - th S
                if cfg.detach_reset:
                    d = go
                    g_s = go * th if cfg.scale_output else go
                elif cfg.scale_output:
                    d = go - gv
                    g_s = d * th
                else:
                    d = None
                    g_s = torch.addcmul(go, gv, th.expand_as(gv) if not scalar_th else th, value=-1.0)
                base = gv
                if need_th:
                    if cfg.scale_output and not cfg.detach_reset:
                        th_add(d, s, 1.0)  # (go - gv) . S
                    else:
                        if cfg.scale_output:
                            th_add(go, s, 1.0)
                        th_add(gv, s, -1.0)
            else:  # V = H (1 - S) + vr S
                g_s = go * th if cfg.scale_output else go
                if not cfg.detach_reset:
                    g_s = torch.addcmul(g_s, gv, vr - h)
                base = torch.addcmul(gv, gv, s, value=-1.0)  # gv (1 - S)
                if need_th and cfg.scale_output:
                    th_add(go, s, 1.0)
            if need_th:
                th_add(g_s, sg, -1.0)
            if not cfg.lif:
                gv = torch.addcmul(base, g_s, sg, out=gx[t])
                continue
            g_h = torch.addcmul(base, g_s, sg)
            if need_k:
                if t > 0:
                    h_prev = hs[t - 1]
                    v_prev = _reset(h_prev, (h_prev >= th).to(h.dtype), th, cfg)
                else:
                    v_prev = v_init
                # dH/dk: decay_input -> X - (V - vr) = (H - V) / k ; else -(V - vr)
                dk = (h - v_prev) / kf if cfg.decay_input else (vr - v_prev)
                gk = gk + torch.dot(g_h.reshape(-1), dk.reshape(-1))
            if cfg.decay_input:
                torch.mul(g_h, kf, out=gx[t])
            else:
                gx[t].copy_(g_h)
            gv = g_h.mul_(1.0 - kf)
        gth_out = None
        if need_th:
            if cfg.half_init:
                th_add(gv, torch.ones_like(gv), 0.5)
            gth_out = gth_acc.reshape(th.shape) if scalar_th else gth_acc.sum_to_size(th.shape)
        gk_out = gk.reshape(k.shape) if need_k else None
        return gx, gth_out, gk_out, None


class BaseNeuron(nn.Module):
    """Common machinery of the multi-step neurons.

    Args:
        v_threshold: initial firing threshold ``V_th`` (> 0).
        v_reset: reset potential for a hard reset; ``None`` selects the soft reset
            (subtract ``V_th``), as in SpikingJelly.
        surrogate: surrogate gradient (name, dict or :class:`~spikeir.surrogate.Surrogate`).
        detach_reset: stop the gradient through ``S`` in the reset equation.
        learn_threshold: make ``V_th`` a trainable parameter.
        threshold_channels: ``None`` for one threshold per layer, or the channel count ``C``
            for one threshold per channel (dimension 1 of each step ``[B, C, ...]``).
        scale_output: emit ``V_th * S`` instead of ``S`` (threshold-scaled spikes).
        v_init: ``None`` for SpikingJelly's initial state, ``"half"`` for ``V_th / 2``.

    Shape: input and output ``[T, B, ...]`` with ``T >= 1``.
    """

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate: str | dict | Surrogate | None = "sigmoid",
        detach_reset: bool = False,
        learn_threshold: bool = False,
        threshold_channels: int | None = None,
        scale_output: bool = False,
        v_init: str | None = None,
    ) -> None:
        super().__init__()
        if not v_threshold > 0:
            raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
        if v_init not in (None, "half"):
            raise ValueError(f"v_init must be None or 'half', got {v_init!r}")
        if threshold_channels is not None and threshold_channels < 1:
            raise ValueError(f"threshold_channels must be >= 1, got {threshold_channels}")
        shape = () if threshold_channels is None else (threshold_channels,)
        if learn_threshold:
            self.v_threshold = nn.Parameter(torch.full(shape, float(v_threshold)))
        else:  # float64 so that a float64 model uses exactly the configured value (0.15 is inexact in fp32)
            self.register_buffer("v_threshold", torch.full(shape, float(v_threshold), dtype=torch.float64))
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate = make_surrogate(surrogate)
        self.detach_reset = bool(detach_reset)
        self.scale_output = bool(scale_output)
        self.v_init = v_init
        self._rate_sinks: list[_RateSink] = []

    # subclasses: whether they leak and their decay factor k = 1/tau as a tensor
    _lif = False
    decay_input = True

    def decay(self) -> torch.Tensor:
        return torch.ones(())

    def threshold(self, ndim: int) -> torch.Tensor:
        """``V_th`` shaped to broadcast against one step ``[B, C, ...]`` of ``ndim`` dims."""
        th = self.v_threshold.clamp(min=1e-6)
        if th.dim() == 0:
            return th
        return th.reshape((-1,) + (1,) * (ndim - 2))

    def _cfg(self) -> _Cfg:
        return _Cfg(
            lif=self._lif,
            decay_input=self.decay_input,
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
            scale_output=self.scale_output,
            half_init=self.v_init == "half",
            surrogate=self.surrogate,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects a sequence [T, B, ...], got shape {tuple(x.shape)}"
            )
        if x.shape[0] < 1:
            raise ValueError(f"{type(self).__name__}: T must be >= 1, got T=0")
        th = self.threshold(x.dim() - 1).to(x.dtype)
        if th.dim() > 0 and x.dim() < 3:
            raise ValueError(
                f"{type(self).__name__} has {th.shape[0]} per-channel thresholds but the input "
                f"{tuple(x.shape)} has no channel dimension (expected [T, B, C, ...])"
            )
        if th.dim() > 0 and x.shape[2] != th.shape[0]:
            raise ValueError(
                f"{type(self).__name__} has {th.shape[0]} per-channel thresholds but the input "
                f"has {x.shape[2]} channels (shape {tuple(x.shape)})"
            )
        k = self.decay().to(device=x.device, dtype=x.dtype)
        if compiled_kernel_applies(x, th, k):
            cfg = self._cfg()
            vr = torch.tensor(0.0 if cfg.v_reset is None else cfg.v_reset, dtype=x.dtype, device=x.device)
            out = _compiled_sequence(cfg, x)(x, th, k, vr)
        else:
            out = _MultiStep.apply(x, th, k, self._cfg())
        store = _spike_store()
        if store is not None and (not self.scale_output or th.dim() == 0):
            store[id(out)] = (weakref.ref(out), out._version, th.detach() if self.scale_output else None)
        if self._rate_sinks:
            n = float(out.numel())
            spikes = float((out != 0).sum())
            for sink in self._rate_sinks:
                sink.add(spikes, n, x.shape[0])
        return out

    def extra_repr(self) -> str:
        th = self.v_threshold
        th_s = f"{th.item():g}" if th.dim() == 0 else f"per-channel[{th.numel()}]"
        reset = "soft" if self.v_reset is None else f"hard(v_reset={self.v_reset:g})"
        learn = ", learnable" if isinstance(th, nn.Parameter) else ""
        return (
            f"v_threshold={th_s}{learn}, reset={reset}, surrogate={self.surrogate}, "
            f"detach_reset={self.detach_reset}, scale_output={self.scale_output}"
        )


class IF(BaseNeuron):
    """Integrate-and-fire: ``H[t] = V[t-1] + X[t]`` (see the module docstring for fire/reset).

    With ``v_reset=None, learn_threshold=True, scale_output=True`` this is the trainable
    quantiser of Castagnetti et al.: over ``T`` steps from a constant current ``I`` it emits
    ``N = clip(floor(T*I/V_th), 0, T)`` spikes whose mean is ``V_th * N / T``.
    """


class LIF(BaseNeuron):
    """Leaky integrate-and-fire with time constant ``tau`` (``>= 1``).

    ``decay_input=True``: ``H = V + (X - (V - V_reset)) / tau``;
    ``decay_input=False``: ``H = V - (V - V_reset) / tau + X`` (ESDNet's neuron:
    ``LIF(tau=2, v_threshold=0.15, v_reset=0, decay_input=False, surrogate=Sigmoid(4))``).
    """

    _lif = True

    def __init__(self, tau: float = 2.0, decay_input: bool = True, **kwargs) -> None:
        if not tau >= 1.0:
            raise ValueError(f"LIF tau must be >= 1, got {tau}")
        super().__init__(**kwargs)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)

    def decay(self) -> torch.Tensor:
        return torch.tensor(1.0 / self.tau, dtype=torch.float64)

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, decay_input={self.decay_input}, " + super().extra_repr()


class ParametricLIF(BaseNeuron):
    """LIF with a learnable time constant: ``1/tau = sigmoid(w)``, ``w`` initialised so that
    ``tau = init_tau`` (``> 1``), as SpikingJelly's ``ParametricLIFNode``."""

    _lif = True

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, **kwargs) -> None:
        if not init_tau > 1.0:
            raise ValueError(f"ParametricLIF init_tau must be > 1, got {init_tau}")
        super().__init__(**kwargs)
        self.decay_input = bool(decay_input)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def decay(self) -> torch.Tensor:
        return torch.sigmoid(self.w)

    @property
    def tau(self) -> float:
        return float(1.0 / torch.sigmoid(self.w.detach()))

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g} (learnable), decay_input={self.decay_input}, " + super().extra_repr()


NEURONS: dict[str, type[BaseNeuron]] = {"if": IF, "lif": LIF, "plif": ParametricLIF}


def make_neuron(kind: str, **kwargs) -> BaseNeuron:
    """Build a neuron by name (``"if"``, ``"lif"``, ``"plif"``) with keyword arguments."""
    key = kind.lower()
    if key not in NEURONS:
        raise ValueError(f"unknown neuron {kind!r}; choose one of {sorted(NEURONS)}")
    return NEURONS[key](**kwargs)


def reference_loop(neuron: BaseNeuron, x: torch.Tensor) -> torch.Tensor:
    """The same neuron written as a plain per-step loop on autograd (slow, for checks and
    benchmarks): every operation of every step stays in the autograd graph."""
    cfg = neuron._cfg()
    th = neuron.threshold(x.dim() - 1).to(x.dtype)
    k = neuron.decay().to(device=x.device, dtype=x.dtype)
    vr = 0.0 if cfg.v_reset is None else cfg.v_reset
    v = 0.5 * th * torch.ones_like(x[0]) if cfg.half_init else torch.full_like(x[0], vr)
    outs = []
    for t in range(x.shape[0]):
        if not cfg.lif:
            h = v + x[t]
        elif cfg.decay_input:
            h = v + (x[t] - (v - vr)) * k
        else:
            h = v - (v - vr) * k + x[t]
        s = cfg.surrogate(h - th)
        s_r = s.detach() if cfg.detach_reset else s
        v = h - s_r * th if cfg.v_reset is None else h * (1.0 - s_r) + vr * s_r
        outs.append(s * th if cfg.scale_output else s)
    return torch.stack(outs)


# ----------------------------------------------------------------------------- compiled inference

_KERNELS: dict[tuple, Callable[..., torch.Tensor]] = {}


class CompiledNeuronError(RuntimeError):
    """``torch.compile`` could not build the fused neuron (no C++ compiler, no Triton, ...)."""


def _sequence(x: torch.Tensor, th: torch.Tensor, k: torch.Tensor, vr: torch.Tensor, cfg: _Cfg) -> torch.Tensor:
    """The forward recurrence as plain tensor code (no autograd function), for ``torch.compile``
    to fuse each step's charge, fire and reset into one pass over memory. ``vr`` (``V_reset``, 0
    for a soft reset) is a tensor, not a constant: compiled graphs cached on disk by Inductor are
    then the same for every reset value, and a cached kernel cannot carry another run's value
    (with a Python float here, a kernel compiled for one ``v_reset`` was reused for another)."""
    v = (0.5 * th).expand_as(x[0]) if cfg.half_init else vr.expand_as(x[0])
    outs = []
    for t in range(x.shape[0]):
        if not cfg.lif:
            h = v + x[t]
        elif cfg.decay_input:
            h = v * (1.0 - k) + k * x[t] + k * vr
        else:
            h = x[t] + v * (1.0 - k) + k * vr
        s = (h >= th).to(x.dtype)
        v = h - s * th if cfg.v_reset is None else h * (1.0 - s) + vr * s
        outs.append(s * th if cfg.scale_output else s)
    return torch.stack(outs)


def input_signature(x: torch.Tensor) -> tuple:
    """What makes Dynamo specialise a compiled kernel beyond symbolic sizes: rank, dtype,
    device, a time-repeated input (stride 0 on ``T``), a batch of one (sizes 0 and 1 are
    specialised). Kernels keyed by it get a code object, hence a recompile budget, each."""
    return (x.dim(), x.dtype, x.device.type, x.dim() > 1 and x.stride(0) == 0, x.dim() > 1 and x.shape[1] == 1)


def _compiled_sequence(cfg: _Cfg, x: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The compiled recurrence for ``cfg``'s graph structure and ``x``'s :func:`input_signature`,
    ``fn(x, th, k, vr)``: configs that differ only in the reset value share one (``vr`` is an
    input)."""
    key = (cfg.lif, cfg.decay_input, cfg.v_reset is None, cfg.scale_output, cfg.half_init, *input_signature(x))
    return compiled_kernel("neuron_sequence", key, lambda x, th, k, vr: _sequence(x, th, k, vr, cfg))


def compiled_kernel(name: str, key: tuple, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``torch.compile(fn, dynamic=True)``, built once per ``(name, key)`` and cached.

    Each entry gets its own code object: Dynamo keeps compiled variants, and its recompile limit,
    per code object, so kernels keyed apart (kinds, :func:`input_signature`) do not share and
    exhaust one budget on a run of mixed shapes. A failure to compile (no C++ compiler, no
    Triton, ...) raises :class:`CompiledNeuronError` with a one-line message naming the device of
    the first argument, the cause chained. For the inference kernels that
    :func:`compiled_inference` switches on (see :func:`compiled_kernel_applies`)."""
    cached = _KERNELS.get((name, *key))
    if cached is not None:
        return cached

    def kernel(*args: torch.Tensor | None) -> torch.Tensor:
        return fn(*args)

    kernel.__code__ = kernel.__code__.replace(co_name=f"{name}_{len(_KERNELS)}")
    compiled = torch.compile(kernel, dynamic=True)

    def run(*args: torch.Tensor | None) -> torch.Tensor:
        try:
            return compiled(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # say so in one line, keep the cause
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CompiledNeuronError(f"compiled inference: torch.compile failed on {args[0].device.type} ({msg}); "
                                      "run without compiled_inference()") from e

    _KERNELS[(name, *key)] = run
    return run


def compiled_kernel_applies(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether an inference kernel from :func:`compiled_kernel` may replace the eager code for
    input ``x``: inside :func:`compiled_inference`, ``x`` in float32 or float64 (a fused kernel
    would keep half precision in float32 between ops), and no gradient needed for ``x`` or any
    of ``others`` (its other inputs and parameters)."""
    return compiled_inference_enabled() and x.dtype in (torch.float32, torch.float64) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in (x, *others)))


def compiled_inference_enabled() -> bool:
    """Whether this thread is inside :func:`compiled_inference` (models check it to pick their
    own compiled inference kernels, e.g. ESDNet's attention)."""
    return getattr(_local, "compiled", False)


@contextmanager
def compiled_inference(enabled: bool = True) -> Iterator[None]:
    """Within this context, neurons that need no gradient run a ``torch.compile``-d version of
    their forward recurrence (one fused pass per step instead of several; 3-9x faster on CPU
    for the neuron alone), and so do models' own inference kernels that check
    :func:`compiled_inference_enabled` (ESDNet's attention and block residual: a few fused
    passes over memory instead of about thirteen). The first call per neuron kind and input
    signature compiles (seconds; needs a C++ compiler on CPU, Triton on CUDA). Spikes equal the
    eager path's except where a membrane lies within float rounding of the threshold (the fused
    kernel may round ``H`` differently). Training (inputs that need gradients) and
    half-precision inputs (which a fused kernel would keep in float32 between steps) always
    take the eager path. New shapes may recompile (sizes are symbolic, but Dynamo specialises
    some, e.g. equal height and width); each kernel kind and :func:`input_signature` has its own
    budget, and past Dynamo's recompile limit a kernel silently runs eager (same results, no
    speed-up)."""
    prev = getattr(_local, "compiled", False)
    _local.compiled = bool(enabled)
    try:
        yield
    finally:
        _local.compiled = prev


# ----------------------------------------------------------------------------- spike storage

_local = threading.local()


def _spike_store() -> dict | None:
    stores = getattr(_local, "stores", None)
    return stores[-1] if stores else None


@dataclass
class SpikeStorage:
    """What :func:`compact_spike_storage` did: spike tensors stored as masks and bytes saved."""

    tensors: int = 0
    bytes_saved: int = 0


@contextmanager
def compact_spike_storage() -> Iterator[SpikeStorage]:
    """Keep the spikes that autograd saves for backward as ``bool`` (1 byte per element).

    A convolution after a neuron saves its input, the spike tensor, for the weight gradient: in
    float32 that is as large as the membrane the neuron itself keeps. Inside this block every
    neuron registers its output (``S``, or ``V_th * S`` with one scalar threshold; per-channel
    scaled outputs are left alone), and any tensor autograd saves that is such an output, or a
    view of one, is stored as the mask ``S != 0`` and rebuilt in backward as ``mask * scale`` --
    bit-exact, so gradients do not change. Wrap the forward pass only (backward may run
    outside). Other saved tensors are untouched; activation checkpointing inside the block
    keeps its own storage rules. Yields a :class:`SpikeStorage` with the count and bytes saved.
    """
    store: dict[int, tuple] = {}
    stats = SpikeStorage()

    def pack(x: torch.Tensor):
        base = x if x._base is None else x._base
        entry = store.get(id(base))
        # the same object, not modified in place since the neuron made it: still 0 or one scale;
        # views that reinterpret the dtype or expand it (a mask larger than the spikes) stay as they are
        if (entry is None or entry[0]() is not base or base._version != entry[1] or x.dtype != base.dtype
                or x.numel() > base.numel()):
            return x
        stats.tensors += 1
        stats.bytes_saved += x.numel() * (x.element_size() - 1)
        return (x != 0, entry[2], x.dtype, entry[0], base._version)

    def unpack(p):
        if isinstance(p, torch.Tensor):
            return p
        mask, scale, dtype, ref, version = p
        base = ref()
        if base is not None and base._version != version:  # what autograd says for a saved tensor
            raise RuntimeError("one of the variables needed for gradient computation has been modified by an "
                               "inplace operation: a spike tensor saved (as bool) by compact_spike_storage")
        # bool * 0-dim float: one pass, the scale's dtype (that of the spikes), exactly 0 or scale
        return mask.to(dtype) if scale is None else mask * scale

    stores = getattr(_local, "stores", None)
    if stores is None:
        stores = _local.stores = []
    stores.append(store)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield stats
    finally:
        for i in range(len(stores) - 1, -1, -1):  # by identity: an empty inner store equals an empty outer one
            if stores[i] is store:
                del stores[i]
                break
        store.clear()


# ----------------------------------------------------------------------------- firing rates


@dataclass(eq=False)  # identity semantics: nested recorders must remove their own sink
class _RateSink:
    spikes: float = 0.0
    elements: float = 0.0
    steps: int = 0

    def add(self, spikes: float, elements: float, T: int) -> None:
        self.spikes += spikes
        self.elements += elements
        self.steps = T

    @property
    def rate(self) -> float:
        return self.spikes / self.elements if self.elements else float("nan")


@dataclass
class FiringRates:
    """Per-layer spike statistics collected by :func:`record_firing_rates`.

    ``rates[name]`` is spikes / (neurons x T) over every forward pass in the block; ``mean`` is
    the spike-weighted mean over all layers (total spikes / total neuron-steps)."""

    sinks: dict[str, _RateSink] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, float]:
        return {name: s.rate for name, s in self.sinks.items()}

    @property
    def mean(self) -> float:
        spikes = sum(s.spikes for s in self.sinks.values())
        elems = sum(s.elements for s in self.sinks.values())
        return spikes / elems if elems else float("nan")

    @property
    def total_spikes(self) -> float:
        return sum(s.spikes for s in self.sinks.values())


@contextmanager
def record_firing_rates(model: nn.Module) -> Iterator[FiringRates]:
    """Collect per-layer firing rates of every neuron in ``model`` during the ``with`` block.

    >>> import torch
    >>> net = torch.nn.Sequential(IF(v_threshold=1.0))
    >>> with record_firing_rates(net) as fr:
    ...     _ = net(torch.full((4, 1, 3), 0.5))
    >>> fr.rates["0"]
    0.5
    """
    result = FiringRates()
    attached: list[tuple[BaseNeuron, _RateSink]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, BaseNeuron):
            sink = _RateSink()
            mod._rate_sinks.append(sink)
            attached.append((mod, sink))
            result.sinks[name or type(mod).__name__] = sink
    try:
        yield result
    finally:
        for mod, sink in attached:
            mod._rate_sinks.remove(sink)
