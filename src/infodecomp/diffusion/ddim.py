"""Deterministic DDIM (eta = 0) on a uniform log-SNR grid, both directions.

One step from log-SNR ``a`` to ``b``: predict ``x_hat`` and ``eps_hat`` at ``a`` and move to
``z' = sqrt(sigmoid(b)) x_hat + sqrt(sigmoid(-b)) eps_hat``. Run from low to high log-SNR it
samples; run from high to low (starting at the data) it is DDIM inversion, whose end point
regenerates the data when sampled back with the same condition.
"""

from __future__ import annotations

import torch
from torch import Tensor

from infodecomp.interface import Cond, Denoiser


def _scales(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


@torch.no_grad()
def ddim_path(denoiser: Denoiser, z: Tensor, grid: Tensor, cond: Cond = None, *, clamp: float | None = 1.5) -> Tensor:
    """Move ``z`` along the log-SNR ``grid`` (``grid[0]`` is where ``z`` lives now)."""
    n = z.shape[0]
    for i in range(len(grid) - 1):
        a, s = _scales(grid[i])
        eps_hat = denoiser(z, grid[i].expand(n).to(z.dtype), cond)
        x_hat = (z - s * eps_hat) / a
        if clamp is not None:
            x_hat = x_hat.clamp(-clamp, clamp)
            eps_hat = (z - a * x_hat) / s
        a2, s2 = _scales(grid[i + 1])
        z = a2 * x_hat + s2 * eps_hat
    return z


@torch.no_grad()
def predict_clean(denoiser: Denoiser, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
    a, s = _scales(logsnr)
    return (z - s * denoiser(z, logsnr.expand(z.shape[0]).to(z.dtype), cond)) / a


def logsnr_grid(steps: int, low: float, high: float, device: torch.device | str = "cpu") -> Tensor:
    if steps < 1 or not low < high:
        raise ValueError(f"need steps >= 1 and low < high, got steps={steps}, low={low}, high={high}")
    return torch.linspace(low, high, steps + 1, device=device)


def ddim_generate(denoiser: Denoiser, z: Tensor, cond: Cond = None, *, steps: int = 50, low: float = -12.0,
                  high: float = 12.0) -> Tensor:
    """Images from latents ``z`` at log-SNR ``low`` (clamped to ``[-1, 1]``)."""
    grid = logsnr_grid(steps, low, high, z.device)
    z = ddim_path(denoiser, z, grid, cond)
    return predict_clean(denoiser, z, grid[-1], cond).clamp(-1, 1)


def ddim_invert(denoiser: Denoiser, x: Tensor, cond: Cond = None, *, steps: int = 50, low: float = -12.0,
                high: float = 12.0) -> Tensor:
    """The latent at log-SNR ``low`` whose DDIM sample (same grid, same condition) is ``x``."""
    grid = logsnr_grid(steps, low, high, x.device).flip(0)
    a, _ = _scales(grid[0])
    return ddim_path(denoiser, a * x, grid, cond, clamp=None)
