"""Embedding the log-SNR for networks that expect a diffusion "timestep"."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def logsnr_to_time(logsnr: Tensor, scale: float = 4.0) -> Tensor:
    """A smooth monotone map from log-SNR to a timestep in ``(0, 1000)`` (high noise -> large t).

    Diffusers UNets embed a float timestep sinusoidally; feeding them ``1000 sigmoid(-alpha /
    scale)`` keeps every log-SNR of practical interest inside the range their embedding resolves.
    """
    return 1000.0 * torch.sigmoid(-logsnr / scale)


class FourierLogSNREmbedding(nn.Module):
    """``alpha -> MLP([sin(w alpha), cos(w alpha)])`` with geometric frequencies."""

    def __init__(self, dim: int, max_period: float = 64.0, n_freq: int = 16) -> None:
        super().__init__()
        freqs = 2 * math.pi / max_period * 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 4
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, logsnr: Tensor) -> Tensor:
        a = logsnr.float()[:, None]  # (B, 1)
        arg = a * self.freqs[None, :]
        feats = torch.cat([torch.sin(arg), torch.cos(arg), a / 10.0], dim=1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))
