"""Invertible per-variable transforms of the "Beyond Normal" suite (Czyż et al., NeurIPS 2023).

Mutual information is invariant under injective maps applied to each variable separately, so
a transformed task keeps its base task's ground truth. Each transform maps ``(n, d_in)`` to
``(n, d_out)`` and has an inverse on its image. Formulas and constants follow the suite's
definitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Transform:
    """A named injective map with its inverse (both on float64 tensors ``(n, d)``)."""

    name: str
    forward: Callable[[Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor]
    dim_out: Callable[[int], int] = lambda d: d

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)


def bisect_inverse(
    fn: Callable[[Tensor], Tensor], y: Tensor, low: float = -10.0, high: float = 10.0, iters: int = 80
) -> Tensor:
    """Invert an increasing elementwise function by bisection on ``[low, high]`` (float64)."""
    lo = torch.full_like(y, low, dtype=torch.float64)
    hi = torch.full_like(y, high, dtype=torch.float64)
    y = y.to(torch.float64)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = fn(mid) < y
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return (lo + hi) / 2


def _normal_cdf(x: Tensor) -> Tensor:
    return torch.special.ndtr(x)


NORMAL_CDF = Transform("normal_cdf", _normal_cdf, torch.special.ndtri)
HALF_CUBE = Transform(
    "half_cube",
    lambda x: x * x.abs().sqrt(),
    lambda y: torch.sign(y) * y.abs().pow(2.0 / 3.0),
)
ASINH = Transform("asinh", torch.asinh, torch.sinh)


def _wiggly_x(x: Tensor) -> Tensor:
    return x + 0.4 * torch.sin(1.0 * x) + 0.2 * torch.sin(1.7 * x + 1) + 0.03 * torch.sin(3.3 * x - 2.5)


def _wiggly_y(x: Tensor) -> Tensor:
    return x - 0.4 * torch.sin(0.4 * x) + 0.17 * torch.sin(1.3 * x + 3.5) + 0.02 * torch.sin(4.3 * x - 2.5)


# both are strictly increasing (derivatives at least 1 - 0.4 - 0.34 - 0.099 > 0 and 1 - 0.16 - 0.221 - 0.086 > 0)
WIGGLY_X = Transform("wiggly", _wiggly_x, lambda y: bisect_inverse(_wiggly_x, y, -50.0, 50.0))
WIGGLY_Y = Transform("wiggly", _wiggly_y, lambda y: bisect_inverse(_wiggly_y, y, -50.0, 50.0))


def _mixture_cdf(weights: tuple[float, ...], means: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    def cdf(x: Tensor) -> Tensor:
        return sum(w * torch.special.ndtr(x - m) for w, m in zip(weights, means, strict=True))

    return cdf


def bimodal(weights: tuple[float, ...], means: tuple[float, ...]) -> Transform:
    """Map a standard normal to a unit-variance Gaussian mixture by ``F_mix^-1(Phi(x))``."""
    cdf = _mixture_cdf(weights, means)
    return Transform(
        "bimodal",
        lambda x: bisect_inverse(cdf, torch.special.ndtr(x), -10.0, 15.0),
        lambda y: torch.special.ndtri(cdf(y)),
    )


BIMODAL_X = bimodal((0.3, 0.7), (0.0, 5.0))
BIMODAL_Y = bimodal((0.5, 0.5), (-1.0, 3.0))


def _rotate(x: Tensor, plane: tuple[int, int], angle: Tensor) -> Tensor:
    """Rotate coordinates ``plane = (i, j)`` of each row by ``angle`` (``exp(angle * A)``, ``A[i,j] = -1, A[j,i] = 1``)."""
    i, j = plane
    out = x.clone()
    cos, sin = torch.cos(angle), torch.sin(angle)
    out[:, i] = cos * x[:, i] - sin * x[:, j]
    out[:, j] = sin * x[:, i] + cos * x[:, j]
    return out


def spiral(plane: tuple[int, int], speed: float) -> Transform:
    """``f(x) = exp(speed * |x|^2 * A) x``: a rotation in ``plane`` by ``speed * |x|^2``.

    Rotations keep the norm, so the inverse rotates back by the same angle.
    """

    def forward(x: Tensor) -> Tensor:
        if x.shape[1] <= max(plane):
            raise ValueError(f"spiral in plane {plane} needs at least {max(plane) + 1} dimensions, got {x.shape[1]}")
        return _rotate(x, plane, speed * x.square().sum(1))

    def inverse(y: Tensor) -> Tensor:
        return _rotate(y, plane, -speed * y.square().sum(1))

    return Transform("spiral", forward, inverse)


def _swissroll(u: Tensor) -> Tensor:
    t = 1.5 * math.pi * (1 + 2 * u[:, 0])
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 21.0


def _swissroll_inverse(p: Tensor) -> Tensor:
    t = 21.0 * p.norm(dim=1)  # |(t cos t, t sin t)| = t for t > 0
    return ((t / (1.5 * math.pi) - 1) / 2)[:, None]


SWISSROLL = Transform("swissroll_x", _swissroll, _swissroll_inverse, dim_out=lambda d: 2)
