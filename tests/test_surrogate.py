"""Tests of the surrogate spike functions (spikeir.surrogate)."""

from __future__ import annotations

import math

import pytest
import torch

from spikeir.surrogate import (
    SURROGATES,
    ATan,
    Rectangle,
    Sigmoid,
    Surrogate,
    Triangle,
    make_surrogate,
)

D = torch.float64
ALL = [
    Sigmoid(4.0),
    Sigmoid(1.0),
    ATan(2.0),
    ATan(0.5),
    Triangle(1.0),
    Triangle(3.0),
    Rectangle(1.0),
    Rectangle(2.5),
]


@pytest.mark.parametrize("surr", ALL, ids=repr)
def test_forward_is_heaviside_with_step_at_zero(surr):
    x = torch.tensor([-3.0, -1.0, -1e-12, 0.0, -0.0, 1e-12, 0.5, 7.0], dtype=D)
    assert surr(x).tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert surr(x.float()).dtype == torch.float32
    assert surr(torch.zeros(2, 3)).tolist() == [[1, 1, 1], [1, 1, 1]]


@pytest.mark.parametrize("surr", ALL, ids=repr)
def test_backward_uses_grad(surr):
    x = torch.linspace(-3, 3, 61, dtype=D).requires_grad_(True)
    g = torch.linspace(0.5, 2.0, 61, dtype=D)
    surr(x).backward(g)
    assert torch.equal(x.grad, g * surr.grad(x.detach()))


def _autograd_derivative(prim, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (d,) = torch.autograd.grad(prim(x).sum(), x)
    return d


# points that avoid the kinks of triangle and rectangle for the alphas used
X = torch.linspace(-2.0, 2.0, 401, dtype=D) + 0.00137


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0, 10.0])
def test_sigmoid_grad_is_derivative_of_sigmoid(alpha):
    expected = _autograd_derivative(lambda z: torch.sigmoid(alpha * z), X)
    assert torch.allclose(Sigmoid(alpha).grad(X), expected, atol=1e-13, rtol=1e-12)
    # peak value alpha/4 at 0
    assert float(Sigmoid(alpha).grad(torch.zeros((), dtype=D))) == pytest.approx(alpha / 4)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_atan_grad_is_derivative_of_atan(alpha):
    def prim(z):
        return torch.atan(math.pi / 2 * alpha * z) / math.pi + 0.5

    expected = _autograd_derivative(prim, X)
    assert torch.allclose(ATan(alpha).grad(X), expected, atol=1e-13, rtol=1e-12)
    assert float(ATan(alpha).grad(torch.zeros((), dtype=D))) == pytest.approx(alpha / 2)


def test_triangle_grad_by_hand():
    x = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.1, 0.25, 0.4, 0.5, 0.75], dtype=D)
    # alpha = 2: 2 * max(0, 1 - 2|x|), support |x| < 1/2
    assert Triangle(2.0).grad(x).tolist() == pytest.approx([0, 0, 1.0, 2.0, 1.6, 1.0, 0.4, 0, 0])
    # alpha = 1: max(0, 1 - |x|)
    assert Triangle(1.0).grad(x).tolist() == pytest.approx(
        [0, 0.5, 0.75, 1.0, 0.9, 0.75, 0.6, 0.5, 0.25]
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_triangle_grad_is_derivative_of_its_primitive(alpha):
    # g(x) = 0 below -1/a, 1 above 1/a, and between: 1/2 + a x - sign(x) (a x)^2 / 2
    def prim(z):
        az = torch.clamp(alpha * z, -1.0, 1.0)
        return 0.5 + az - torch.sign(az) * az**2 / 2

    expected = _autograd_derivative(prim, X)
    assert torch.allclose(Triangle(alpha).grad(X), expected, atol=1e-13, rtol=1e-12)


def test_rectangle_grad_by_hand():
    x = torch.tensor([-0.5, -0.3, -0.2, 0.0, 0.2, 0.24, 0.26, 1.0], dtype=D)
    # alpha = 2: 2 on |x| < 1/4, else 0
    assert Rectangle(2.0).grad(x).tolist() == [0, 0, 2, 2, 2, 2, 0, 0]
    # alpha = 1: 1 on |x| < 1/2 (the edge itself excluded)
    assert Rectangle(1.0).grad(x).tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_rectangle_grad_is_derivative_of_its_primitive(alpha):
    expected = _autograd_derivative(lambda z: torch.clamp(alpha * z + 0.5, 0.0, 1.0), X)
    assert torch.allclose(Rectangle(alpha).grad(X), expected, atol=0, rtol=0)


@pytest.mark.parametrize("cls", [Sigmoid, ATan, Triangle, Rectangle])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_grad_integrates_to_one(cls, alpha):
    surr = cls(alpha)
    # integrate over |x| <= 2e4 / alpha (the heavy-tailed ATan leaves ~4 / (pi^2 2e4) outside)
    # with the substitution x = sinh(u) / alpha: fine steps near 0, coarse ones in the tails
    u_max = math.asinh(2e4)
    u = torch.linspace(-u_max, u_max, 40_001, dtype=D)
    x = torch.sinh(u) / alpha
    area = torch.trapezoid(surr.grad(x) * torch.cosh(u) / alpha, u).item()
    assert area == pytest.approx(1.0, abs=1e-3)
    g = surr.grad(x)
    assert torch.all(g >= 0)
    assert torch.allclose(g, surr.grad(-x))  # symmetric


def test_make_surrogate_from_str_dict_instance():
    assert make_surrogate("sigmoid") == Sigmoid(4.0)
    assert make_surrogate("ATan") == ATan(2.0)
    assert make_surrogate("triangle") == Triangle(1.0)
    assert make_surrogate("rectangle") == Rectangle(1.0)
    assert make_surrogate(None) == Sigmoid(4.0)
    s = make_surrogate({"name": "atan", "alpha": 3.5})
    assert type(s) is ATan and s.alpha == 3.5
    assert make_surrogate({"alpha": 2.0}) == Sigmoid(2.0)  # name defaults to sigmoid
    spec = {"name": "Triangle", "alpha": 2.0}
    assert make_surrogate(spec) == Triangle(2.0)
    assert spec == {"name": "Triangle", "alpha": 2.0}  # the caller's dict is not consumed
    inst = Rectangle(0.7)
    assert make_surrogate(inst) is inst
    assert set(SURROGATES) == {"sigmoid", "atan", "triangle", "rectangle"}
    assert all(issubclass(c, Surrogate) for c in SURROGATES.values())


def test_equality_hash_repr():
    assert Sigmoid(4.0) == Sigmoid(4)
    assert Sigmoid(4.0) != Sigmoid(2.0)
    assert Sigmoid(1.0) != Triangle(1.0)
    assert len({Sigmoid(4.0), Sigmoid(4), ATan(2.0)}) == 2
    assert repr(ATan(2.0)) == "ATan(alpha=2)"


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: make_surrogate("relu"), r"unknown surrogate 'relu'"),
        (lambda: make_surrogate({"name": "gauss"}), r"unknown surrogate 'gauss'"),
        (lambda: make_surrogate(3), r"cannot build a surrogate"),
        (lambda: Sigmoid(0.0), r"alpha must be > 0"),
        (lambda: ATan(-1.0), r"alpha must be > 0"),
        (lambda: Triangle(float("nan")), r"alpha must be > 0"),
        (lambda: make_surrogate({"name": "rectangle", "alpha": -2}), r"alpha must be > 0"),
    ],
)
def test_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()
