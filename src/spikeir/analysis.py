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

__all__ = ["code_errors", "quantization_report", "record_neuron_io", "matched_contrast", "bootstrap_ci",
           "rain_spike_effect"]


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
    (``a > V_th``), the firing rate, the bound and the share of elements it covers; for each ``T``
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
                    "bound": None, "in_range": None, "max_quant_in_range": None,
                }
                if "bound" in cat:
                    ok = cat["in_range"]
                    q = cat["quant"].abs()
                    # in_range: the share of elements whose final membrane lies in [0, V_th), where the
                    # bound holds (by the charge balance, so it is not re-checked here)
                    row.update({
                        "bound": float(cat["bound"].mean()),
                        "in_range": float(ok.double().mean()),
                        "max_quant_in_range": float(q[ok].max()) if ok.any() else None,
                    })
                layers.append(row)
            allq = torch.cat([c["quant"] for c in acc.values()])
            alls = torch.cat([c["sat"] for c in acc.values()])
            rate = float(torch.cat([c["rate"] for c in acc.values()]).mean())
            steps = model.T if isinstance(getattr(model, "T", None), int) else None
            sweeps.append({"T": T, "firing_rate": rate, "spikes_per_neuron": rate * steps if steps else None,
                           "quant_rms": _rms(allq), "sat_rms": _rms(alls), "layers": layers})
    finally:
        if own_T is not None:
            model.T = own_T
        model.train(was_training)
    return {"model": type(model).__name__, "sweeps": sweeps,
            "convention": "a = mean input over T, r = V_th * spikes / T; quant = r - clip(a, 0, V_th), "
                          "sat = clip(a, 0, V_th) - relu(a); RMS over all elements; bound = max(V0, V_th - V0) / T "
                          "for soft-reset IF, holding where the final membrane is in [0, V_th)"}


# ----------------------------------------------------------------------------- rain vs background


def _pool_to(m: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Average an ``[H, W]`` map over ``s x s`` cells (zero-padded, image share only) to ``[h, w]``."""
    if s == 1:
        return m[:h, :w]
    F = torch.nn.functional
    H, W = m.shape
    pad = (0, w * s - W, 0, h * s - H)
    num = F.avg_pool2d(F.pad(m[None, None], pad), s)[0, 0]
    den = F.avg_pool2d(F.pad(torch.ones_like(m)[None, None], pad), s)[0, 0]
    return num / den


def matched_contrast(rate: torch.Tensor, mask: torch.Tensor, intensity: torch.Tensor, bins: int = 16) -> dict:
    """Firing rate inside a mask (rain) minus outside it, raw and at matched input intensity.

    ``rate``, ``intensity`` float ``[h, w]``, ``mask`` bool ``[h, w]``. Intensities are cut into
    ``bins`` equal-width bins over ``[0, 1]``; in each bin that holds both rain and background
    pixels, the rain mean minus the background mean, averaged with weights equal to the bin's rain
    pixel count. Rain streaks are bright, so the raw difference mixes rain with brightness; the
    matched one compares rain pixels with background pixels of the same brightness. ``coverage``:
    the share of rain pixels in bins that had background to compare with."""
    rate, intensity = rate.double().flatten(), intensity.double().flatten()
    mask = mask.flatten()
    if not mask.any() or mask.all():
        raise ValueError("the mask must mark some pixels as rain and some as background")
    raw = float(rate[mask].mean() - rate[~mask].mean())
    b = torch.clamp((intensity * bins).long(), 0, bins - 1)
    num, den = 0.0, 0
    for k in range(bins):
        r_in, r_out = rate[mask & (b == k)], rate[~mask & (b == k)]
        if r_in.numel() and r_out.numel():
            num += r_in.numel() * float(r_in.mean() - r_out.mean())
            den += r_in.numel()
    return {"raw": raw, "matched": num / den if den else None, "coverage": den / int(mask.sum()),
            "rate_rain": float(rate[mask].mean()), "rate_background": float(rate[~mask].mean())}


def bootstrap_ci(values: list[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    v = torch.tensor(values, dtype=torch.float64)
    if v.numel() < 2:
        raise ValueError("a bootstrap interval needs at least two values")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (n_boot, v.numel()), generator=g)
    means = v[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


@torch.no_grad()
def rain_spike_effect(model: nn.Module, samples: list[tuple[str, torch.Tensor, torch.Tensor]], bins: int = 16,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """ESDNet's claim with a brightness control. ``samples``: ``(name, rainy [3, H, W] in [0, 1],
    rain mask bool [H, W])``. Per layer: the mean over samples of the raw and intensity-matched
    rain-minus-background firing rate (:func:`matched_contrast`, intensity = BT.601 luma of the
    rainy input), with percentile bootstrap intervals over samples, and a verdict."""
    from .visualize import _valid_map, record_spike_maps

    dev = next(model.parameters()).device
    per_layer: dict[str, list[dict]] = {}
    was_training = model.training
    model.eval()
    try:
        for _, rainy, mask in samples:
            H, W = mask.shape
            luma = (0.299 * rainy[0] + 0.587 * rainy[1] + 0.114 * rainy[2]).double()
            with record_spike_maps(model) as maps:
                model(rainy[None].to(dev))
            for name, m in maps.items():
                r, s = _valid_map(m[0], H, W)
                h, w = r.shape
                mk = _pool_to(mask.double(), s, h, w) >= 0.5
                if mk.any() and not mk.all():
                    per_layer.setdefault(name, []).append(matched_contrast(r, mk, _pool_to(luma, s, h, w), bins))
    finally:
        model.train(was_training)
    layers = []
    for name, rows in per_layer.items():
        raw = [r["raw"] for r in rows]
        matched = [r["matched"] for r in rows if r["matched"] is not None]
        row = {"name": name, "samples": len(rows), "raw": sum(raw) / len(raw),
               "raw_ci": bootstrap_ci(raw, n_boot, seed=seed) if len(raw) > 1 else None,
               "matched": sum(matched) / len(matched) if matched else None,
               "matched_ci": bootstrap_ci(matched, n_boot, seed=seed) if len(matched) > 1 else None,
               "coverage": sum(r["coverage"] for r in rows) / len(rows),
               "rate_rain": sum(r["rate_rain"] for r in rows) / len(rows),
               "rate_background": sum(r["rate_background"] for r in rows) / len(rows)}
        row["verdict"] = _verdict(row)
        layers.append(row)
    return {"layers": layers, "bins": bins, "n_boot": n_boot,
            "convention": "rate = share of channel-steps that spiked at a pixel; raw = mean rate in rain - "
                          "background; matched = the same within input-luma bins, weighted by rain pixels; "
                          "95% percentile bootstrap over samples"}


def _verdict(row: dict) -> str:
    ci, mci = row["raw_ci"], row["matched_ci"]
    if ci is None or mci is None:
        return "too few samples"
    if ci[1] < 0:
        return "rain fires less than background"
    if ci[0] <= 0:
        return "no clear difference (interval includes 0)"
    if mci[0] > 0:
        return "rain fires more, also at matched brightness"
    if mci[1] < 0:
        return "rain fires more only because it is bright"
    return "rain fires more, but brightness alone can explain it"
