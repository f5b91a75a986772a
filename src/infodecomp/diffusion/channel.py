"""The variance-preserving Gaussian channel, parametrised by log-SNR ``alpha`` only.

    z = sqrt(sigmoid(alpha)) * x + sqrt(sigmoid(-alpha)) * eps,   eps ~ N(0, I)
"""

from __future__ import annotations

import torch
from torch import Tensor


def signal_noise_scales(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(a, s) = (sqrt(sigmoid(alpha)), sqrt(sigmoid(-alpha)))``, each shaped like ``logsnr``."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-row ``(B,)`` tensor against ``(B, *shape)``."""
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def add_noise(x0: Tensor, logsnr: Tensor, eps: Tensor) -> Tensor:
    """Sample the channel: ``x0, eps: (B, *shape)``, ``logsnr: (B,)`` -> ``z: (B, *shape)``."""
    a, s = signal_noise_scales(logsnr)
    return _expand(a, x0) * x0 + _expand(s, x0) * eps


def predict_x0(z: Tensor, logsnr: Tensor, eps_hat: Tensor) -> Tensor:
    """Invert the channel given predicted noise: ``x_hat = (z - s * eps_hat) / a``."""
    a, s = signal_noise_scales(logsnr)
    return (z - _expand(s, z) * eps_hat) / _expand(a, z)


def predict_eps(z: Tensor, logsnr: Tensor, x0_hat: Tensor) -> Tensor:
    """Noise implied by a data prediction: ``eps_hat = (z - a * x_hat) / s``."""
    a, s = signal_noise_scales(logsnr)
    return (z - _expand(a, z) * x0_hat) / _expand(s, z)


def gaussian_mmse(logsnr: Tensor, eigvals: Tensor) -> Tensor:
    """Noise-prediction MMSE of a Gaussian with covariance eigenvalues ``eigvals``.

    For ``x ~ N(mu, S)`` each eigen-direction with variance ``lam`` contributes
    ``sigmoid(alpha + log lam)``; the sum over directions is the reference curve against which
    a learned denoiser's MMSE is usually plotted. ``logsnr: (L,)``, ``eigvals: (d,)`` -> ``(L,)``.
    """
    lam = eigvals.clamp_min(torch.finfo(eigvals.dtype).tiny).to(logsnr.dtype)
    return torch.sigmoid(logsnr[:, None] + lam.log()[None, :]).sum(dim=1)
