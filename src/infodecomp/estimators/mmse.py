"""MMSE curves: ``E ||eps - eps_hat(z, alpha | cond)||^2`` on a fixed log-SNR grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from infodecomp.estimators.engine import Reduction, Term, evaluate_curve
from infodecomp.interface import Cond, Curve, Denoiser


def mmse_curves(
    denoiser: Denoiser,
    x: Tensor,
    logsnr: Tensor,
    conditions: Mapping[str, Cond],
    *,
    n_eps: int = 8,
    antithetic: bool = True,
    reduction: Reduction = "mean",
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
) -> dict[str, Curve]:
    """Noise-prediction MMSE at each log-SNR under each named condition (same draws for all).

    Compare with :func:`infodecomp.diffusion.gaussian_mmse` of the data's covariance
    spectrum, the MMSE of the best linear denoiser, which upper-bounds the true MMSE.
    """
    terms = {name: Term("error", name) for name in conditions}
    return evaluate_curve(
        denoiser, x, conditions, terms, logsnr, n_eps=n_eps, antithetic=antithetic,
        reduction=reduction, seed=seed, sample_ids=sample_ids, max_batch=max_batch, progress=progress,
    )


def mmse_curve(
    denoiser: Denoiser,
    x: Tensor,
    logsnr: Tensor,
    cond: Cond = None,
    **kwargs,
) -> Curve:
    """MMSE curve under one condition (``None``: unconditional). See :func:`mmse_curves`."""
    return mmse_curves(denoiser, x, logsnr, {"mmse": cond}, **kwargs)["mmse"]
