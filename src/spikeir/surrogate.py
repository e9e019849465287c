"""Surrogate gradients for the Heaviside spike function.

Forward is always the Heaviside step ``S = 1[x >= 0]`` (as in SpikingJelly, a membrane exactly at
threshold spikes). Backward replaces the Dirac delta by the derivative ``g'(x)`` of a smooth
function ``g``; each class below gives ``g'`` with its sharpness ``alpha``:

================  ============================================  ==============================
class             ``g'(x)``                                     SpikingJelly equivalent
================  ============================================  ==============================
``Sigmoid(a)``    ``a * s * (1 - s)``, ``s = sigmoid(a x)``     ``surrogate.Sigmoid(alpha=a)``
``ATan(a)``       ``(a / 2) / (1 + (pi/2 * a * x)^2)``          ``surrogate.ATan(alpha=a)``
``Triangle(a)``   ``a * max(0, 1 - a |x|)``                     (none; area 1, width 2/a)
``Rectangle(a)``  ``a * 1[|x| < 1 / (2a)]``                     (none; area 1, width 1/a)
================  ============================================  ==============================

Every ``g'`` integrates to 1, so all of them are unbiased estimates of the delta's mass.
The neurons call :meth:`Surrogate.grad` inside their own whole-sequence backward; the
:meth:`Surrogate.__call__` form is an autograd function for use on single tensors.
"""

from __future__ import annotations

import math

import torch


class Surrogate:
    """Base class: Heaviside forward, ``grad(x)`` backward. Subclasses define ``grad``."""

    def __init__(self, alpha: float) -> None:
        if not alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFn.apply(x, self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha:g})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.alpha == other.alpha  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.alpha))


class Sigmoid(Surrogate):
    def __init__(self, alpha: float = 4.0) -> None:
        super().__init__(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1.0 - s)


class ATan(Surrogate):
    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)


class Triangle(Surrogate):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * torch.clamp(1.0 - self.alpha * x.abs(), min=0.0)


class Rectangle(Surrogate):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * (x.abs() < 0.5 / self.alpha).to(x.dtype)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


SURROGATES: dict[str, type[Surrogate]] = {
    "sigmoid": Sigmoid,
    "atan": ATan,
    "triangle": Triangle,
    "rectangle": Rectangle,
}


def make_surrogate(spec: str | Surrogate | dict | None) -> Surrogate:
    """Build a surrogate from a name (``"sigmoid"``), ``{"name": .., "alpha": ..}`` or an instance."""
    if spec is None:
        return Sigmoid()
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, dict):
        spec = dict(spec)
        name = str(spec.pop("name", "sigmoid")).lower()
        if name not in SURROGATES:
            raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
        return SURROGATES[name](**spec)
    raise ValueError(f"cannot build a surrogate from {spec!r}")
