"""Mutual information and conditional mutual information from denoisers.

Two estimators of the same quantity (Kong et al., ICLR 2024, eqs. 5-7):

    standard    i_s(x; y) = 1/2 ∫ E_eps[ ||eps - eps_hat(z)||^2 - ||eps - eps_hat(z|y)||^2 ] d alpha
    orthogonal  i_o(x; y) = 1/2 ∫ E_eps[ ||eps_hat(z|y) - eps_hat(z)||^2 ] d alpha

``E_{x,y}[i_s] = E_{x,y}[i_o] = I(X; Y)``. With optimal denoisers ``i_s`` equals
``log p(x|y) - log p(x)`` pointwise; ``i_o`` is non-negative, decomposes into non-negative
per-coordinate terms, and has far lower variance. Conditional MI replaces the null condition
by the conditioning variable: ``I(X; Y | C)`` contrasts ``eps_hat(z|y,c)`` with ``eps_hat(z|c)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler, derive_seed
from infodecomp.estimators.conditions import slice_condition
from infodecomp.estimators.control import NoiseControl, fit_noise_control, principal_directions
from infodecomp.estimators.engine import Reduction, Term, integrate
from infodecomp.interface import Cond, Denoiser, Estimate

InfoEstimator = Literal["orthogonal", "standard"]
INFO_ESTIMATORS: tuple[str, ...] = ("orthogonal", "standard")


def information_contrasts(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    contrasts: Mapping[str, tuple[str, str]],
    *,
    estimator: InfoEstimator = "orthogonal",
    reduction: Reduction = "mean",
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
    control: NoiseControl | bool | None = None,
) -> dict[str, Estimate]:
    """Information of several conditions against references, all on the same draws.

    Each distinct condition is evaluated once per draw, so K words contrasted with one shared
    null cost ``(K + 1) * n_draws`` evaluations per data point, not ``2 * K * n_draws``.

    Args:
        conditions: named conditions, e.g. ``{"caption": c, "no_red": c1, "no_circle": c2}``.
        contrasts: ``{name: (cond, ref)}``; the estimate is ``i(x; cond | ref)``.
        estimator: ``"orthogonal"`` (default, low variance) or ``"standard"``.
        control: a :class:`~infodecomp.estimators.control.NoiseControl` for the orthogonal
            estimator, or ``True`` to fit one on this batch first (:func:`batch_noise_control`):
            unbiased, and far less noise where the conditional and unconditional predictions
            differ nearly linearly in the noise (image-like, Gaussian-like data); it does not
            help where the noise flips a posterior between a few components (docs/benchmarks.md).
        Other arguments as in :func:`infodecomp.estimators.engine.integrate`.

    Example:
        >>> contrasts = {"red": ("caption", "no_red"), "circle": ("caption", "no_circle")}
        >>> maps = information_contrasts(model, x, conds, contrasts, reduction="pixel")
    """
    if estimator not in INFO_ESTIMATORS:
        raise ValueError(f"estimator must be one of {INFO_ESTIMATORS}, got {estimator!r}")
    terms = {}
    for name, pair in contrasts.items():
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(f"contrast {name!r} must be a (cond, ref) pair of condition names, got {pair!r}")
        terms[name] = Term(estimator, cond=pair[0], ref=pair[1])
    if control is not None and control is not False and estimator != "orthogonal":
        raise ValueError(f"the noise control applies to the orthogonal estimator, got estimator={estimator!r}")
    if control is True:
        control = batch_noise_control(denoiser, x, conditions, terms, sampler=sampler, seed=seed, max_batch=max_batch)
    results = integrate(
        denoiser, x, conditions, terms, sampler=sampler, n_draws=n_draws, reduction=reduction,
        seed=seed, sample_ids=sample_ids, max_batch=max_batch, progress=progress,
        control=control or None,
    )
    return results


def batch_noise_control(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    terms: Mapping[str, Term],
    *,
    n_directions: int = 256,
    pilot_items: int = 2,
    pilot_draws: int = 32,
    sampler: LogSNRSampler | None = None,
    seed: int = 0,
    max_batch: int = 4096,
) -> NoiseControl:
    """A :class:`~infodecomp.estimators.control.NoiseControl` fitted on the batch itself: the
    principal directions of all of ``x`` (no denoiser call) and a pilot of its first
    ``pilot_items`` items with ``pilot_draws`` draws each, on a seed of its own (so the estimate
    stays unbiased). It depends on which items are in the batch: to get the same numbers on 1
    and N processes, fit one control on a fixed set and pass it to every process instead."""
    k = min(pilot_items, x.shape[0])
    pilot = {n: slice_condition(c, 0, k) for n, c in conditions.items()}
    return fit_noise_control(
        denoiser, x[:k], pilot, terms, principal_directions(x, n_directions), sampler=sampler,
        n_draws=pilot_draws, seed=derive_seed(seed, "noise-control"), max_batch=max_batch,
    )


def mutual_information(
    denoiser: Denoiser,
    x: Tensor,
    cond: Cond,
    *,
    null: Cond = None,
    estimator: InfoEstimator = "orthogonal",
    reduction: Reduction = "mean",
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
    control: NoiseControl | bool | None = None,
) -> Estimate:
    """``I(X; Y)`` (``reduction="mean"``) or its pointwise / per-pixel decomposition.

    Args:
        denoiser: ``eps_hat(z, logsnr, cond)``.
        x: data ``(B, *shape)``; ``cond`` holds the matching ``y`` (batch ``B``).
        null: the reference condition (default ``None``, the unconditional model).
        control: ``True`` or a fitted :class:`~infodecomp.estimators.control.NoiseControl` (with
            gains for the term ``"mi"``), see :func:`information_contrasts`.

    Example:
        >>> from infodecomp.oracles import JointGaussian
        >>> g = JointGaussian.bivariate(rho=0.75)
        >>> s = g.sample(2000, seed=0)
        >>> mutual_information(g.denoiser("x"), s["x"], {"y": s["y"]})  # ≈ 0.4133 nats
    """
    return information_contrasts(
        denoiser, x, {"cond": cond, "null": null}, {"mi": ("cond", "null")},
        estimator=estimator, reduction=reduction, sampler=sampler, n_draws=n_draws, seed=seed,
        sample_ids=sample_ids, max_batch=max_batch, progress=progress, control=control,
    )["mi"]


def conditional_mutual_information(
    denoiser: Denoiser,
    x: Tensor,
    cond: Cond,
    given: Cond,
    *,
    estimator: InfoEstimator = "orthogonal",
    reduction: Reduction = "mean",
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
    control: NoiseControl | bool | None = None,
) -> Estimate:
    """``I(X; Y | C)``: ``cond`` carries both ``y`` and ``c``, ``given`` carries ``c`` alone.

    For a text-to-image model: ``cond`` is the caption, ``given`` the caption without a word.
    ``control``: as in :func:`information_contrasts` (gains for the term ``"cmi"``).
    """
    return information_contrasts(
        denoiser, x, {"cond": cond, "given": given}, {"cmi": ("cond", "given")},
        estimator=estimator, reduction=reduction, sampler=sampler, n_draws=n_draws, seed=seed,
        sample_ids=sample_ids, max_batch=max_batch, progress=progress, control=control,
    )["cmi"]


def mass_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Fraction of each map's total inside its mask: ``maps, masks: (B, H, W)`` -> ``(B,)``."""
    total = maps.flatten(1).sum(1).clamp_min(1e-12)
    return (maps * masks.to(maps.dtype)).flatten(1).sum(1) / total


def map_correlation(maps: Tensor, reference: Tensor) -> Tensor:
    """Pearson correlation over pixels of each map with its reference (e.g. the exact oracle's):
    ``(B, H, W)`` twice -> ``(B,)``; 0 where either map is constant."""
    a = maps.flatten(1).to(torch.float64)
    b = reference.flatten(1).to(torch.float64)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))
