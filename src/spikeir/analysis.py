r"""SPIDEN's conversion-error / sparsity analysis: how well each spiking layer's rate code carries
the real-valued signal it encodes, and what that costs in spikes.

For a neuron driven by ``X[t]`` over ``T`` steps with ``N`` spikes (threshold ``V_th``), the
real-valued signal is the mean input ``a = (1/T) sum_t X[t]`` and the rate code is
``r = V_th N / T`` (what a threshold-scaled spike train averages to). The code's error against
the ReLU of the signal splits in two:

.. math::

    r - \mathrm{relu}(a) = \underbrace{r - \mathrm{clip}(a, 0, V_{th})}_{\text{quantisation error}}
        + \underbrace{\mathrm{clip}(a, 0, V_{th}) - \mathrm{relu}(a)}_{\text{saturation error}}

The saturation error is the part of the signal above ``V_th`` that at most one spike per step
cannot carry. For a soft-reset IF neuron the charge balance ``sum_t X[t] = V_th N + V[T-1] - V[-1]``
gives ``r - a = (V[-1] - V[T-1]) / T``, so whenever the final membrane ends inside
``[0, V_th)`` the quantisation error is bounded: ``|r - a| <= max(V[-1], V_th - V[-1]) / T``, i.e.
``V_th / T`` from a zero membrane and ``V_th / (2T)`` from ``V_th / 2``. A large threshold saturates
less but quantises coarsely (and fires less): SPIDEN's trade-off between conversion error and
activation sparsity. Leaky or hard-reset neurons have no such bound; their errors are reported
with ``bound = None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .neurons import BaseNeuron

__all__ = ["code_errors", "quantization_report", "record_neuron_io"]


def _soft_if(neuron: BaseNeuron) -> bool:
    return neuron.v_reset is None and not neuron._lif


@torch.no_grad()
def code_errors(neuron: BaseNeuron, x: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-element quantities of one neuron's rate code, from its input ``x`` and output ``out``
    (both ``[T, B, ...]``): ``signal`` a, ``code`` r, ``quant`` (r - clip(a, 0, V_th)), ``sat``
    (clip(a, 0, V_th) - relu(a)), ``theta`` (broadcast), and for a soft-reset IF ``v_final`` (the
    membrane after the last step, from the charge balance), ``in_range`` (``0 <= v_final < V_th``)
    and ``bound`` (``max(V[-1], V_th - V[-1]) / T``)."""
    T = x.shape[0]
    x, out = x.double(), out.double()
    theta = neuron.threshold(x.dim() - 1).detach().double().clamp(min=1e-6)
    theta = theta.expand_as(x[0]) if theta.dim() else torch.full_like(x[0], float(theta))
    spikes = (out != 0).double().sum(0)
    a = x.mean(0)
    r = theta * spikes / T
    clipped = torch.minimum(a.clamp(min=0), theta)
    res = {"signal": a, "code": r, "quant": r - clipped, "sat": clipped - a.clamp(min=0), "theta": theta,
           "rate": spikes / T}
    if _soft_if(neuron):
        v0 = 0.5 * theta if neuron.v_init == "half" else torch.zeros_like(theta)
        v_final = v0 + x.sum(0) - theta * spikes
        res["v_final"] = v_final
        res["in_range"] = (v_final >= 0) & (v_final < theta)
        res["bound"] = torch.maximum(v0, theta - v0) / T
    return res


@contextmanager
def record_neuron_io(model: nn.Module) -> Iterator[dict[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """Collect ``(input, output)`` sequences of every neuron, by module name."""
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, BaseNeuron):
            hooks.append(m.register_forward_hook(
                lambda _m, inp, o, name=name: seen.setdefault(name, []).append((inp[0].detach(), o.detach()))))
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt()) if t.numel() else 0.0


@torch.no_grad()
def quantization_report(model: nn.Module, inputs: list[torch.Tensor], T_values: list[int] | None = None) -> dict:
    """Per spiking layer: RMS quantisation and saturation error, the share of saturated elements
    (``a > V_th``), the firing rate, the bound and the share of elements within it; for each ``T``
    in ``T_values`` (the model's own ``T`` when ``None``; other values need a model with a ``T``
    attribute, such as :class:`~spikeir.models.SpikingDnCNN`). ``inputs``: ``[B, C, H, W]`` tensors."""
    neurons = {n: m for n, m in model.named_modules() if isinstance(m, BaseNeuron)}
    if not neurons:
        raise ValueError("the model has no spiking neurons to analyse")
    from .models import SpikingDnCNN

    own_T = getattr(model, "T", None)
    if T_values and any(t != own_T for t in T_values) and not isinstance(model, SpikingDnCNN):
        # other architectures size layers by T (ESDNet's temporal attention), so T is fixed
        raise ValueError(f"T can be varied for a SpikingDnCNN only; analyse {type(model).__name__} "
                         f"at its own T={own_T}")
    was_training = model.training
    model.eval()
    sweeps = []
    try:
        for T in T_values or [own_T]:
            if T is not None:
                if int(T) < 1:
                    raise ValueError(f"T must be >= 1, got {T}")
                model.T = int(T)
            acc: dict[str, dict[str, list[torch.Tensor]]] = {}
            with record_neuron_io(model) as seen:
                for x in inputs:
                    model(x)
            layers = []
            for name, pairs in seen.items():
                parts = [code_errors(neurons[name], xi, oi) for xi, oi in pairs]
                cat = {k: torch.cat([p[k].flatten() for p in parts]) for k in parts[0]}
                acc[name] = cat
                row = {
                    "name": name,
                    "theta_mean": float(cat["theta"].mean()),
                    "firing_rate": float(cat["rate"].mean()),
                    "quant_rms": _rms(cat["quant"]),
                    "sat_rms": _rms(cat["sat"]),
                    "saturated": float((cat["signal"] > cat["theta"]).double().mean()),
                    "bound": None, "within_bound": None, "in_range": None, "max_quant_in_range": None,
                }
                if "bound" in cat:
                    ok = cat["in_range"]
                    q = cat["quant"].abs()
                    row.update({
                        "bound": float(cat["bound"].mean()),
                        "in_range": float(ok.double().mean()),
                        "within_bound": float((q[ok] <= cat["bound"][ok] + 1e-9).double().mean()) if ok.any() else None,
                        "max_quant_in_range": float(q[ok].max()) if ok.any() else None,
                    })
                layers.append(row)
            allq = torch.cat([c["quant"] for c in acc.values()])
            alls = torch.cat([c["sat"] for c in acc.values()])
            rate = float(torch.cat([c["rate"] for c in acc.values()]).mean())
            sweeps.append({"T": T, "firing_rate": rate, "quant_rms": _rms(allq), "sat_rms": _rms(alls),
                           "layers": layers})
    finally:
        if own_T is not None:
            model.T = own_T
        model.train(was_training)
    return {"model": type(model).__name__, "sweeps": sweeps,
            "convention": "a = mean input over T, r = V_th * spikes / T; quant = r - clip(a, 0, V_th), "
                          "sat = clip(a, 0, V_th) - relu(a); RMS over all elements; bound = max(V0, V_th - V0) / T "
                          "for soft-reset IF, holding where the final membrane is in [0, V_th)"}
