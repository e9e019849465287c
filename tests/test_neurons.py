"""Tests of the multi-step spiking neurons (spikeir.neurons).

Expected spike trains below were worked out by hand from the update equations in the module
docstring (charge, fire at ``H >= V_th``, hard or soft reset); the inputs are chosen so that every
membrane value stays clear of the threshold unless a test says otherwise.
"""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import break_torch_compile
from spikeir.neurons import (
    IF,
    LIF,
    NEURONS,
    BaseNeuron,
    ParametricLIF,
    compiled_inference,
    make_neuron,
    record_firing_rates,
    reference_loop,
)
from spikeir.surrogate import ATan, Rectangle, Sigmoid, Triangle

D = torch.float64


def seq(*values: float) -> torch.Tensor:
    """A ``[T, 1]`` float64 sequence from scalars."""
    return torch.tensor(values, dtype=D).reshape(-1, 1)


def run(neuron: BaseNeuron, x: torch.Tensor) -> torch.Tensor:
    return neuron.double()(x)


def sigmoid_grad(alpha: float, z: float) -> float:
    s = 1.0 / (1.0 + math.exp(-alpha * z))
    return alpha * s * (1.0 - s)


# ---------------------------------------------------------------- import / basics


def test_public_imports():
    from spikeir.neurons import IF as IF2
    from spikeir.neurons import LIF as LIF2
    from spikeir.neurons import ParametricLIF as PLIF2

    assert IF2 is IF and LIF2 is LIF and PLIF2 is ParametricLIF
    assert NEURONS == {"if": IF, "lif": LIF, "plif": ParametricLIF}
    assert type(make_neuron("IF")) is IF
    lif = make_neuron("lif", tau=3.0, v_threshold=0.5)
    assert type(lif) is LIF and lif.tau == 3.0 and float(lif.v_threshold) == 0.5
    assert type(make_neuron("plif", init_tau=4.0)) is ParametricLIF


# ---------------------------------------------------------------- hand-computed forward


@pytest.mark.parametrize(
    "kwargs, x, expected",
    [
        # IF, hard reset to 0, th 1: H = .7, 1.4(S), .7, 1.4(S), .7
        (dict(v_reset=0.0), [0.7] * 5, [0, 1, 0, 1, 0]),
        # IF, soft reset: H = .7, 1.4(S) -> .4, 1.1(S) -> .1, .8, 1.5(S)
        (dict(v_reset=None), [0.7] * 5, [0, 1, 1, 0, 1]),
        # IF, hard reset to .25 and V[-1] = .25: H = .65, 1.05(S) -> .25, .65, 1.05(S)
        # (starting from 0 instead would give 0, 0, 1, 0)
        (dict(v_reset=0.25), [0.4] * 4, [0, 1, 0, 1]),
        # IF, soft reset with a negative input in between: .6, 1.2(S)->.2, -.3, .5, 1.4(S)->.4
        (dict(v_reset=None), [0.6, 0.6, -0.5, 0.8, 0.9], [0, 1, 0, 0, 1]),
        # IF, threshold 0.5, hard: .3, .6(S)->0, .3, .6(S)->0
        (dict(v_threshold=0.5), [0.3] * 4, [0, 1, 0, 1]),
    ],
)
def test_if_forward_by_hand(kwargs, x, expected):
    out = run(IF(**kwargs), seq(*x))
    assert out.flatten().tolist() == expected


@pytest.mark.parametrize(
    "kwargs, x, expected",
    [
        # decay_input=True, hard to 0, tau 2, th 1: H = V/2 + X/2
        # H = .5, .75, .875, .4375+1 = 1.4375 (S) -> 0, .25
        (dict(tau=2.0, decay_input=True, v_reset=0.0), [1.0, 1.0, 1.0, 2.0, 0.5], [0, 0, 0, 1, 0]),
        # decay_input=True, soft: H = 1.5(S) -> .5, .5+(1.5-.5)/2 = 1.0(S) -> 0, 0, 0
        (dict(tau=2.0, decay_input=True, v_reset=None), [3.0, 1.5, 0.0, 0.0], [1, 1, 0, 0]),
        # same input, hard reset: 1.5(S) -> 0, .75, .375, .1875
        (dict(tau=2.0, decay_input=True, v_reset=0.0), [3.0, 1.5, 0.0, 0.0], [1, 0, 0, 0]),
        # decay_input=False, hard to 0: H = V/2 + X: .6, .3+.8=1.1(S)->0, .2, .1+1=1.1(S)->0, .9
        (dict(tau=2.0, decay_input=False, v_reset=0.0), [0.6, 0.8, 0.2, 1.0, 0.9], [0, 1, 0, 1, 0]),
        # decay_input=False, soft: 1.5(S)->.5, .25+.6=.85, .425+.1=.525, .2625+.75=1.0125(S)
        (dict(tau=2.0, decay_input=False, v_reset=None), [1.5, 0.6, 0.1, 0.75], [1, 0, 0, 1]),
        # same input, hard: 1.5(S)->0, .6, .3+.1=.4, .2+.75=.95
        (dict(tau=2.0, decay_input=False, v_reset=0.0), [1.5, 0.6, 0.1, 0.75], [1, 0, 0, 0]),
        # decay_input=False, tau 4, leak toward v_reset=.5 (V[-1] = .5):
        # H = .75, .75-.0625+.25 = .9375, .9375-.109375+.25 = 1.078125(S)->.5,
        # .5+.5 = 1.0 exactly at threshold -> spikes (Heaviside(0) = 1)
        (dict(tau=4.0, decay_input=False, v_reset=0.5), [0.25, 0.25, 0.25, 0.5], [0, 0, 1, 1]),
        # decay_input=True, tau 4, v_reset=.5: H = V + (X - (V - .5))/4
        # .5 + (1 - 0)/4 = .75, .75 + (1 - .25)/4 = .9375, .9375 + (2 - .4375)/4 = 1.328125(S)->.5
        (dict(tau=4.0, decay_input=True, v_reset=0.5), [1.0, 1.0, 2.0], [0, 0, 1]),
    ],
)
def test_lif_forward_by_hand(kwargs, x, expected):
    out = run(LIF(**kwargs), seq(*x))
    assert out.flatten().tolist() == expected


def test_batch_columns_are_independent():
    # two columns from the IF cases above, run side by side
    x = torch.tensor([[0.7, 0.4], [0.7, 0.4], [0.7, 0.4], [0.7, 0.4]], dtype=D)
    out = run(IF(v_reset=None), x)
    # column 0 soft: .7, 1.4(S)->.4, 1.1(S)->.1, .8 ; column 1: .4, .8, 1.2(S)->.2, .6
    assert out.tolist() == [[0, 0], [1, 0], [1, 1], [0, 0]]


def test_v_init_half_by_hand():
    # IF, soft reset, th 1, V[-1] = .5: H = .85, 1.2(S)->.2, .55, .9, 1.25(S)
    out = run(IF(v_reset=None, v_init="half"), seq(0.35, 0.35, 0.35, 0.35, 0.35))
    assert out.flatten().tolist() == [0, 1, 0, 0, 1]
    # the default start (0) gives .35, .7, 1.05(S)->.05, .4, .75
    out0 = run(IF(v_reset=None), seq(0.35, 0.35, 0.35, 0.35, 0.35))
    assert out0.flatten().tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_plif_at_init_equals_lif(decay_input, v_reset):
    torch.manual_seed(0)
    plif = ParametricLIF(init_tau=2.0, decay_input=decay_input, v_reset=v_reset).double()
    lif = LIF(tau=2.0, decay_input=decay_input, v_reset=v_reset).double()
    assert plif.tau == pytest.approx(2.0, abs=1e-12)
    x = (torch.randn(6, 3, 4, dtype=D) + 0.8).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    out_p, out_l = plif(x), lif(x2)
    assert torch.equal(out_p, out_l)
    assert out_p.sum() > 0 and out_p.sum() < out_p.numel()
    g = torch.randn_like(out_p)
    (out_p * g).sum().backward()
    (out_l * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-12, rtol=0)
    assert plif.w.grad is not None


def test_plif_tau_follows_w():
    p = ParametricLIF(init_tau=3.0)
    assert p.tau == pytest.approx(3.0, rel=1e-6)
    assert float(p.decay().detach()) == pytest.approx(1.0 / 3.0, rel=1e-6)
    assert isinstance(p.w, nn.Parameter)


# ---------------------------------------------------------------- thresholds / outputs


@pytest.mark.parametrize("kind", ["if", "lif", "plif"])
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_scale_output_emits_spike_times_threshold(kind, v_reset):
    torch.manual_seed(1)
    x = torch.rand(5, 2, 7, dtype=D) * 1.5
    plain = run(make_neuron(kind, v_threshold=0.75, v_reset=v_reset), x)
    scaled = run(make_neuron(kind, v_threshold=0.75, v_reset=v_reset, scale_output=True), x)
    assert plain.sum() > 0
    assert set(plain.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(scaled, plain * 0.75)


def _per_channel_if(**kwargs) -> IF:
    n = IF(threshold_channels=3, **kwargs).double()
    with torch.no_grad():
        n.v_threshold.copy_(torch.tensor([0.5, 1.0, 2.0]))
    return n


def test_per_channel_threshold_5d():
    n = _per_channel_if()
    x = torch.full((4, 2, 3, 2, 2), 0.6, dtype=D)
    out = n(x)
    # ch0 (th .5): .6(S) every step; ch1 (th 1): .6, 1.2(S), .6, 1.2(S);
    # ch2 (th 2): .6, 1.2, 1.8, 2.4(S)
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=D)
    assert torch.equal(out, expected[:, None, :, None, None].expand_as(out))
    ns = _per_channel_if(scale_output=True)
    th = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    assert torch.equal(ns(x), (expected * th)[:, None, :, None, None].expand_as(out))


def test_per_channel_threshold_3d_linear_layout():
    n = _per_channel_if()
    x = torch.full((4, 5, 3), 0.6, dtype=D)  # [T, B, C]
    out = n(x)
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=D)
    assert torch.equal(out, expected[:, None, :].expand_as(out))


@pytest.mark.parametrize("channels", [None, 3])
def test_learnable_threshold_is_parameter_and_gets_gradient(channels):
    n = IF(
        v_threshold=0.8,
        learn_threshold=True,
        threshold_channels=channels,
        v_reset=None,
        scale_output=True,
    )
    assert isinstance(n.v_threshold, nn.Parameter)
    assert any(p is n.v_threshold for p in n.parameters())
    torch.manual_seed(2)
    x = torch.rand(4, 2, 3, 5, 5) * 1.5
    n(x).sum().backward()
    g = n.v_threshold.grad
    assert g is not None and g.shape == ((3,) if channels else ())
    assert torch.all(g != 0)


def test_fixed_threshold_is_buffer():
    n = IF(v_threshold=0.8, threshold_channels=4)
    assert not isinstance(n.v_threshold, nn.Parameter)
    assert list(n.parameters()) == []
    assert "v_threshold" in dict(n.named_buffers())
    assert n.v_threshold.shape == (4,)


# ---------------------------------------------------------------- detach_reset


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_detach_reset_gradient_by_hand_no_spike_at_0(detach, v_reset):
    # IF, th 1, sigmoid(4). x = [.8, .4]: H0 = .8 (no spike, V0 = .8), H1 = 1.2 (spike).
    # d out1 / d x0 = sg(H1 - 1) * dV0/dH0 with
    #   detached:          dV0/dH0 = 1 - S0 = 1
    #   hard, not detached: dV0/dH0 = (1 - S0) - H0 * sg(H0 - 1)
    #   soft, not detached: dV0/dH0 = 1 - th * sg(H0 - 1)
    n = IF(v_reset=v_reset, detach_reset=detach, surrogate=Sigmoid(4.0)).double()
    x = seq(0.8, 0.4).requires_grad_(True)
    out = n(x)
    assert out.flatten().tolist() == [0, 1]
    out[1].sum().backward()
    sg0, sg1 = sigmoid_grad(4, -0.2), sigmoid_grad(4, 0.2)
    if detach:
        expected = sg1
    elif v_reset is None:
        expected = (1 - 1.0 * sg0) * sg1
    else:
        expected = (1 - 0.8 * sg0) * sg1
    assert float(x.grad[0]) == pytest.approx(expected, abs=1e-12)
    assert float(x.grad[1]) == pytest.approx(sg1, abs=1e-12)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_reset_gradient_by_hand_spike_at_0(detach):
    # IF hard reset to 0, th 1, sigmoid(4), x = [1.3, 0.9]: S0 = 1 so V0 = 0, H1 = .9 (no spike).
    # detached: dV0/dH0 = 1 - S0 = 0 -> no gradient from out1 to x0;
    # not detached: dV0/dH0 = -H0 * sg(H0 - 1)
    n = IF(v_reset=0.0, detach_reset=detach, surrogate=Sigmoid(4.0)).double()
    x = seq(1.3, 0.9).requires_grad_(True)
    out = n(x)
    assert out.flatten().tolist() == [1, 0]
    out[1].sum().backward()
    expected = 0.0 if detach else -1.3 * sigmoid_grad(4, 0.3) * sigmoid_grad(4, -0.1)
    assert float(x.grad[0]) == pytest.approx(expected, abs=1e-12)
    if not detach:
        assert float(x.grad[0]) != 0.0


def test_detach_reset_changes_gradient_of_random_sequence():
    torch.manual_seed(3)
    x = torch.rand(6, 4, 8, dtype=D) * 1.2
    grads = []
    for detach in (True, False):
        n = LIF(tau=2.0, v_reset=None, detach_reset=detach).double()
        xi = x.clone().requires_grad_(True)
        n(xi)[-1].sum().backward()
        grads.append(xi.grad)
    assert torch.equal(n(x), LIF(tau=2.0, v_reset=None).double()(x))  # forward unaffected
    assert not torch.allclose(grads[0], grads[1])


# ---------------------------------------------------------------- optimized vs reference


def _cases() -> list:
    cases = []
    kinds = [("if", None), ("lif", True), ("lif", False), ("plif", True), ("plif", False)]
    resets = [None, 0.0, 0.2]
    thr = ["fixed", "learn", "channel"]
    surrogates = [Sigmoid(4.0), ATan(2.0), Triangle(1.0), Rectangle(1.5)]
    for i, ((kind, di), vr, det, sc, tm, vi) in enumerate(
        itertools.product(kinds, resets, [False, True], [False, True], thr, [None, "half"])
    ):
        cases.append(
            pytest.param(
                kind,
                di,
                vr,
                det,
                sc,
                tm,
                vi,
                surrogates[i % 4],
                id=f"{kind}-di{di}-vr{vr}-det{det}-sc{sc}-{tm}-{vi}",
            )
        )
    return cases


@pytest.mark.parametrize("kind, decay_input, v_reset, detach, scale, thr, v_init, surr", _cases())
def test_matches_reference_loop(kind, decay_input, v_reset, detach, scale, thr, v_init, surr):
    kwargs = dict(
        v_threshold=0.6,
        v_reset=v_reset,
        detach_reset=detach,
        scale_output=scale,
        learn_threshold=thr != "fixed",
        threshold_channels=3 if thr == "channel" else None,
        v_init=v_init,
        surrogate=surr,
    )
    if kind == "lif":
        kwargs.update(tau=2.5, decay_input=decay_input)
    elif kind == "plif":
        kwargs.update(init_tau=2.0, decay_input=decay_input)
    n = make_neuron(kind, **kwargs).double()
    with torch.no_grad():
        if thr == "channel":
            n.v_threshold.copy_(torch.tensor([0.4, 0.7, 1.0]))
        if kind == "plif":
            n.w.fill_(0.3)  # tau != init
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, 3, 2, 2, generator=gen, dtype=D) * 0.6 + 0.4
    g = torch.randn(5, 2, 3, 2, 2, generator=gen, dtype=D)
    params = [p for p in n.parameters()]

    xa = x.clone().requires_grad_(True)
    out_a = n(xa)
    grads_a = torch.autograd.grad((out_a * g).sum(), [xa] + params)
    xb = x.clone().requires_grad_(True)
    out_b = reference_loop(n, xb)
    grads_b = torch.autograd.grad((out_b * g).sum(), [xb] + params)

    assert torch.equal(out_a, out_b)
    spikes = (out_a != 0).sum().item()
    assert 0 < spikes < out_a.numel()  # the case exercises both branches
    assert len(grads_a) == 1 + (thr != "fixed") + (kind == "plif")
    for ga, gb in zip(grads_a, grads_b):
        assert ga.shape == gb.shape
        assert torch.allclose(ga, gb, atol=1e-10, rtol=0), (ga - gb).abs().max()
    assert grads_a[0].abs().sum() > 0


# ---------------------------------------------------------------- single-step surrogate


@pytest.mark.parametrize("surr", [Sigmoid(4.0), ATan(2.0), Triangle(1.0), Rectangle(1.5)])
@pytest.mark.parametrize("scale", [False, True])
def test_single_step_backward_is_surrogate(surr, scale):
    th = 0.75
    x = (torch.linspace(-1.5, 2.5, 41, dtype=D) + 0.013).reshape(1, -1).requires_grad_(True)
    n = IF(v_threshold=th, surrogate=surr, scale_output=scale).double()
    out = n(x)
    assert torch.equal(out, (x.detach() >= th).to(D) * (th if scale else 1.0))
    out.backward(torch.ones_like(out))
    expected = surr.grad(x.detach() - th) * (th if scale else 1.0)
    assert torch.allclose(x.grad, expected, atol=1e-14, rtol=0)
    assert x.grad.abs().max() > 0


@pytest.mark.parametrize("surr", [Sigmoid(4.0), ATan(2.0)])
def test_single_step_backward_lif_decay_input(surr):
    # LIF(tau=2, decay_input=True), v_reset=0: H = X/2, d out/d X = sg(X/2 - th) / 2
    th = 0.5
    x = (torch.linspace(-1.0, 3.0, 33, dtype=D) + 0.011).reshape(1, -1).requires_grad_(True)
    n = LIF(tau=2.0, v_threshold=th, surrogate=surr).double()
    n(x).sum().backward()
    expected = surr.grad(x.detach() / 2 - th) / 2
    assert torch.allclose(x.grad, expected, atol=1e-14, rtol=0)


# ---------------------------------------------------------------- ESDNet neuron


def esdnet_neuron() -> LIF:
    return LIF(
        tau=2.0, v_threshold=0.15, v_reset=0.0, decay_input=False, surrogate=Sigmoid(4.0)
    ).double()


def test_esdnet_neuron_sequence_by_hand():
    # H = .5 V + X, S = H >= .15, V = H (1 - S)
    # H: .1, .05+.12 = .17(S)->0, .05, .025+.2 = .225(S)->0, 0, .1, .05+.09 = .14
    x = seq(0.1, 0.12, 0.05, 0.2, 0.0, 0.1, 0.09)
    assert esdnet_neuron()(x).flatten().tolist() == [0, 1, 0, 1, 0, 0, 0]


def test_esdnet_neuron_equations_on_random_input():
    torch.manual_seed(5)
    x = torch.rand(6, 2, 3, 4, 4, dtype=D) * 0.25
    v = torch.zeros_like(x[0])
    expected = []
    for t in range(x.shape[0]):
        h = 0.5 * v + x[t]
        s = (h >= 0.15).to(D)
        v = h * (1 - s)
        expected.append(s)
    out = esdnet_neuron()(x)
    assert torch.equal(out, torch.stack(expected))
    assert 0 < out.sum() < out.numel()


@pytest.mark.parametrize("x0, x1", [(0.1, 0.12), (0.2, 0.12), (0.12, 0.2), (0.3, 0.25)])
def test_esdnet_neuron_gradient_by_hand(x0, x1):
    # H0 = x0, S0 = Θ(H0 - th), V0 = H0 (1 - S0), H1 = V0 / 2 + x1, S1 = Θ(H1 - th)
    # d(S0 + S1)/d x0 = sg(H0 - th) + sg(H1 - th) * 1/2 * ((1 - S0) - H0 sg(H0 - th))
    # d(S0 + S1)/d x1 = sg(H1 - th)
    th = 0.15
    x = seq(x0, x1).requires_grad_(True)
    esdnet_neuron()(x).sum().backward()
    s0 = 1.0 if x0 >= th else 0.0
    h1 = x0 * (1 - s0) / 2 + x1
    sg0, sg1 = sigmoid_grad(4, x0 - th), sigmoid_grad(4, h1 - th)
    expected0 = sg0 + sg1 * 0.5 * ((1 - s0) - x0 * sg0)
    # the neuron stores 0.15 as float32; 1e-7 covers that rounding
    assert float(x.grad[0]) == pytest.approx(expected0, abs=1e-7)
    assert float(x.grad[1]) == pytest.approx(sg1, abs=1e-7)


# ---------------------------------------------------------------- IF as a quantiser


@pytest.mark.parametrize("T", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("theta", [0.5, 0.75, 1.0])
def test_if_quantiser(T, theta):
    # grid of currents avoiding exact multiples of theta/T: u = (j + .317)/37
    u = (np.arange(-5, 37) + 0.317) / 37.0
    currents = torch.tensor(theta * u, dtype=D)
    x = currents.expand(T, -1).clone()
    n = IF(v_reset=None, scale_output=True, v_threshold=theta, learn_threshold=True).double()
    out = n(x).detach()
    assert set(out.unique().tolist()) <= {0.0, theta}
    N = (out != 0).sum(0).numpy()
    assert np.array_equal(N, np.clip(np.floor(T * u), 0, T))
    decoded = out.mean(0).numpy()
    assert np.allclose(decoded, theta * N / T, atol=1e-15, rtol=0)
    inside = (u >= 0) & (u < 1)
    err = theta * u[inside] - decoded[inside]
    assert np.all(err >= 0)  # floor quantiser: never above the input
    assert np.all(np.abs(err) < theta / T)
    assert np.all(decoded[u < 0] == 0)


@pytest.mark.parametrize("T", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("theta", [0.5, 1.0])
def test_if_quantiser_half_init(T, theta):
    u = (np.arange(0, 37) + 0.317) / 37.0  # 0 < u < 1
    x = torch.tensor(theta * u, dtype=D).expand(T, -1).clone()
    n = IF(v_reset=None, scale_output=True, v_threshold=theta, v_init="half").double()
    out = n(x)
    N = (out != 0).sum(0).numpy()
    assert np.array_equal(N, np.clip(np.floor(T * u + 0.5), 0, T))  # rounding quantiser
    decoded = out.mean(0).numpy()
    assert np.all(np.abs(theta * u - decoded) <= theta / (2 * T) + 1e-12)


@pytest.mark.parametrize("T", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("v_init", [None, "half"])
def test_if_quantiser_saturates(T, v_init):
    theta = 0.75
    currents = torch.tensor([0.76, 0.9, 1.2, 3.0, 10.0], dtype=D)
    x = currents.expand(T, -1).clone()
    out = IF(v_reset=None, scale_output=True, v_threshold=theta, v_init=v_init).double()(x)
    decoded = out.mean(0)
    assert torch.equal(decoded, torch.full_like(decoded, theta))
    assert torch.allclose(currents - decoded, currents - theta)  # saturation error I - theta


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: IF()(torch.zeros(3)), r"\[T, B, \.\.\.\]"),
        (lambda: LIF()(torch.tensor(1.0)), r"\[T, B, \.\.\.\]"),
        (lambda: IF()(torch.zeros(0, 2, 3)), r"T must be >= 1"),
        (lambda: LIF(tau=0.5), r"tau must be >= 1"),
        (lambda: LIF(tau=0.0), r"tau must be >= 1"),
        (lambda: LIF(tau=-2.0), r"tau must be >= 1"),
        (lambda: LIF(tau=float("nan")), r"tau must be >= 1"),
        (lambda: ParametricLIF(init_tau=1.0), r"init_tau must be > 1"),
        (lambda: ParametricLIF(init_tau=0.5), r"init_tau must be > 1"),
        (lambda: IF(v_threshold=0.0), r"v_threshold must be > 0"),
        (lambda: LIF(v_threshold=-1.0), r"v_threshold must be > 0"),
        (lambda: IF(v_init="zero"), r"v_init"),
        (lambda: IF(threshold_channels=0), r"threshold_channels"),
        (lambda: make_neuron("izhikevich"), r"unknown neuron 'izhikevich'"),
        (lambda: IF(threshold_channels=3)(torch.zeros(2, 1, 4, 2, 2)), r"3 per-channel thresholds"),
        (lambda: IF(threshold_channels=3)(torch.zeros(2, 1, 5)), r"3 per-channel thresholds"),
        # per-channel thresholds need a channel dimension: [T, B] has none (even if B == C)
        (lambda: IF(threshold_channels=3)(torch.zeros(2, 3)), r"channel"),
        (lambda: IF(surrogate="relu"), r"unknown surrogate 'relu'"),
        (lambda: LIF(surrogate={"name": "sigmoid", "alpha": 0.0}), r"alpha must be > 0"),
        (lambda: IF(surrogate=ATan(-1.0)), r"alpha must be > 0"),
    ],
)
def test_clear_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


# ---------------------------------------------------------------- firing rates


def _rate(out: torch.Tensor) -> float:
    return (out != 0).sum().item() / out.numel()


def test_firing_rates_match_outputs():
    torch.manual_seed(6)
    model = nn.Sequential(IF(v_threshold=0.5), LIF(tau=2.0, v_threshold=0.3, scale_output=True))
    xs = [torch.rand(4, 2, 10), torch.rand(4, 3, 10) * 0.5]
    with record_firing_rates(model) as fr:
        for x in xs:
            model(x)
    assert set(fr.rates) == {"0", "1"}
    outs0 = [model[0](x) for x in xs]
    outs1 = [model[1](o) for o in outs0]
    spikes0 = sum((o != 0).sum().item() for o in outs0)
    spikes1 = sum((o != 0).sum().item() for o in outs1)
    n0 = sum(o.numel() for o in outs0)  # neurons x T, summed over passes
    assert fr.rates["0"] == pytest.approx(spikes0 / n0, abs=1e-15)
    assert fr.rates["1"] == pytest.approx(spikes1 / n0, abs=1e-15)
    assert fr.total_spikes == spikes0 + spikes1
    assert fr.mean == pytest.approx((spikes0 + spikes1) / (2 * n0), abs=1e-15)
    assert 0 < fr.rates["0"] < 1 and 0 < fr.rates["1"] < 1
    # hooks are gone: later forwards do not change the numbers
    before = dict(fr.rates)
    model(torch.rand(4, 2, 10) * 3)
    assert fr.rates == before
    assert all(not m._rate_sinks for m in model)


def test_firing_rates_doc_example():
    net = nn.Sequential(IF(v_threshold=1.0))
    with record_firing_rates(net) as fr:
        net(torch.full((4, 1, 3), 0.5))  # .5, 1.0(S), .5, 1.0(S)
    assert fr.rates == {"0": 0.5}


def test_firing_rates_nested_and_two_models():
    torch.manual_seed(7)
    inner = nn.Sequential(nn.Identity(), IF(v_threshold=0.4))
    m1 = nn.Sequential(IF(v_threshold=0.5), inner)
    m2 = IF(v_threshold=0.2)
    x1, x2 = torch.rand(3, 2, 6), torch.rand(3, 2, 6)
    with record_firing_rates(m1) as outer:
        with record_firing_rates(m1) as inner_fr, record_firing_rates(m2) as fr2:
            m1(x1)
            m2(x2)
        m1(x2)  # only the outer recorder sees this pass
    assert set(outer.rates) == {"0", "1.1"}
    assert set(inner_fr.rates) == {"0", "1.1"}
    assert set(fr2.rates) == {"IF"}  # a bare neuron is named by its class
    a1 = m1[0](x1)
    b1 = inner(a1)
    a2 = m1[0](x2)
    b2 = inner(a2)
    assert inner_fr.rates["0"] == pytest.approx(_rate(a1))
    assert inner_fr.rates["1.1"] == pytest.approx(_rate(b1))
    assert outer.rates["0"] == pytest.approx(
        ((a1 != 0).sum() + (a2 != 0).sum()).item() / (2 * a1.numel())
    )
    assert outer.rates["1.1"] == pytest.approx(
        ((b1 != 0).sum() + (b2 != 0).sum()).item() / (2 * b1.numel())
    )
    assert fr2.rates["IF"] == pytest.approx(_rate(m2(x2)))
    assert not m1[0]._rate_sinks and not inner[1]._rate_sinks and not m2._rate_sinks


def test_firing_rates_removed_after_exception():
    n = IF()
    with pytest.raises(RuntimeError), record_firing_rates(n):
        raise RuntimeError("boom")
    assert n._rate_sinks == []


# ---------------------------------------------------------------- statelessness


@pytest.mark.parametrize("kind", ["if", "lif", "plif"])
def test_no_state_between_calls(kind):
    torch.manual_seed(8)
    n = make_neuron(kind, v_reset=None, v_threshold=0.5)
    x, other = torch.rand(5, 2, 4), torch.rand(5, 2, 4) * 2
    first = n(x)
    assert torch.equal(n(x), first)
    n(other)
    assert torch.equal(n(x), first)
    # a sequence split in two is not the same as the whole (each call starts fresh)
    assert torch.equal(n(x[:2]), first[:2])


def test_float32_and_shapes():
    n = LIF(tau=2.0)
    x = torch.rand(3, 2, 4, 5, 5)
    out = n(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert n.double()(x.double()).dtype == torch.float64


# ----------------------------------------------------------------------------- compiled inference

needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                               reason="torch.compile on CPU needs a C++ compiler")


@needs_cxx
@pytest.mark.parametrize("make", [
    lambda: LIF(tau=2.0, v_threshold=0.15, v_reset=0.0, decay_input=False),  # ESDNet's
    lambda: IF(v_reset=None, v_threshold=0.5, learn_threshold=True, threshold_channels=3, scale_output=True),
    lambda: LIF(tau=3.0, decay_input=True, v_reset=0.1, v_init="half"),
    lambda: ParametricLIF(init_tau=2.5, decay_input=False, v_reset=-0.1, v_threshold=0.3),
], ids=["lif-hard", "if-soft-scaled-channel", "lif-decay-input-half", "plif-negative-reset"])
def test_compiled_inference_gives_the_eager_spikes(make, monkeypatch):
    import spikeir.neurons as neurons

    calls = []
    real = neurons._compiled_sequence
    monkeypatch.setattr(neurons, "_compiled_sequence", lambda cfg, x: calls.append(cfg) or real(cfg, x))
    neuron = make()
    x = torch.randn(5, 2, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = neuron(x)
        assert not calls  # outside the context: the eager path
        with compiled_inference():
            fused = neuron(x)
    assert calls == [neuron._cfg()]  # inside: the compiled one
    assert eager.abs().sum() > 0 and (eager == 0).any()  # spikes and silences to agree on
    assert torch.equal(fused, eager)


@needs_cxx
def test_compiled_inference_leaves_training_on_the_autograd_path():
    neuron = LIF(tau=2.0, learn_threshold=True)
    x = torch.randn(4, 2, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    neuron(x).sum().backward()
    expect = x.grad.clone(), neuron.v_threshold.grad.clone()
    x.grad = None
    neuron.v_threshold.grad = None
    with compiled_inference():
        neuron(x).sum().backward()
    assert torch.equal(x.grad, expect[0]) and torch.equal(neuron.v_threshold.grad, expect[1])


def test_compiled_inference_failure_is_one_clear_line(monkeypatch):
    import spikeir.neurons as neurons

    break_torch_compile(monkeypatch, OSError("cannot find a C++ compiler\nlong traceback text"))
    with torch.no_grad(), compiled_inference(), pytest.raises(neurons.CompiledNeuronError) as e:
        IF()(torch.rand(2, 1, 3))
    assert str(e.value) == ("compiled inference: torch.compile failed on cpu (cannot find a C++ compiler); "
                            "run without compiled_inference()")
    with torch.no_grad(), compiled_inference():  # half precision never reaches the compiler
        IF()(torch.rand(2, 1, 3, dtype=torch.bfloat16))
