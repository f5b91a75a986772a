"""Log-likelihood from a denoiser (Kong, Brekelmans & Ver Steeg, ICLR 2023).

    -log p(x) = (d/2) log(2 pi e) + 1/2 ∫ ( E_eps ||eps - eps_hat(z, alpha)||^2 - d sigmoid(alpha) ) d alpha

exact for the optimal denoiser, pointwise. On a truncated log-SNR range the integral misses
its tails; the range used is reported with every estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.estimators.engine import Reduction, Term, integrate
from infodecomp.interface import Cond, Denoiser, Estimate


def nll(
    denoiser: Denoiser,
    x: Tensor,
    cond: Cond = None,
    *,
    unit: Literal["nats", "bits/dim"] = "nats",
    pixel_scale: float | None = None,
    reduction: Reduction = "mean",
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
) -> Estimate:
    """Negative log-likelihood ``-log p(x | cond)`` of continuous data.

    Args:
        unit: ``"nats"`` (total per data point, or per pixel/coordinate for maps) or
            ``"bits/dim"`` (divided by ``d ln 2``; sample and mean reductions only).
        pixel_scale: if the data were divided by this factor before modelling (127.5 for
            8-bit images mapped to ``[-1, 1]``), add ``d log(pixel_scale)`` so the result is the
            density of the original pixel values (the usual "continuous 8-bit" convention; not
            a discrete likelihood).
    """
    if unit not in ("nats", "bits/dim"):
        raise ValueError(f"unit must be 'nats' or 'bits/dim', got {unit!r}")
    if pixel_scale is not None and not pixel_scale > 0:
        raise ValueError(f"pixel_scale must be > 0, got {pixel_scale}")
    if unit == "bits/dim" and reduction not in ("mean", "sample"):
        raise ValueError(f"bits/dim is defined for reduction 'mean' or 'sample', got {reduction!r}")
    est = integrate(
        denoiser, x, {"cond": cond}, {"nll": Term("nll", "cond")}, sampler=sampler, n_draws=n_draws,
        reduction=reduction, seed=seed, sample_ids=sample_ids, max_batch=max_batch, progress=progress,
    )["nll"]
    d = math.prod(x.shape[1:])
    value = est.value
    if pixel_scale is not None:
        per_entry = {"mean": d, "sample": d, "coordinate": 1}.get(
            reduction, x.shape[1] if x.ndim >= 3 else 1
        )
        value = value + per_entry * math.log(pixel_scale)
    info = dict(est.info, pixel_scale=pixel_scale, dims=d)
    if unit == "bits/dim":
        return replace(est, value=value / (d * math.log(2)), se=est.se / (d * math.log(2)),
                       unit="bits/dim", info=info)
    return replace(est, value=value, info=info)
