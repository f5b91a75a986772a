"""A control variate for the noise of orthogonal information estimates.

For an orthogonal term the integrand of one draw is ``||D(eps)||^2`` with
``D = eps_hat(z | cond) - eps_hat(z | ref)`` and ``z = a x + s eps``. Antithetic pairs cancel
the part of it that is odd in ``eps``; what is left at low NFE is the spread of the even part.
For an affine ``D = K eps + b`` (Gaussian data) that part is ``eps^T K^2 eps``, whose variance
``2 tr K^4`` sits in the few directions where ``K`` is large.

Take orthonormal directions ``U`` (``m`` rows), the noise's coordinates ``g = U eps``, its
remainder ``r = eps - U^T g``, and gains ``a(alpha)`` (one per direction and one for the
remainder) fixed before the draw. Then ``o = U^T (a g) + a_r r`` has, under ``eps ~ N(0, I)``,

    E[o_p^2] = sum_k a_k^2 U_kp^2 + a_r^2 (1 - sum_k U_kp^2)

per coordinate ``p``, whatever the denoiser. So ``c(eps) = o^2 - E[o^2]`` has mean zero, and
subtracting it from the integrand leaves every estimate (total, per pixel, per coordinate)
unbiased; it removes variance where ``o`` tracks the part of ``D`` that moves with ``eps``,
i.e. where the Jacobian of ``D`` is nearly diagonal in ``U``. For Gaussian data every ``K(alpha)``
is diagonal in the data's principal directions, so with those as ``U`` the control removes the
noise along them exactly (up to the fitted gains).

:func:`fit_noise_control` fits the gains on a *pilot*: draws with their own seed, independent of
the estimate's. On a grid of log-SNRs, each gain is the kernel-weighted regression (Gaussian
kernel in log-SNR) of the odd part's coordinate ``U_k (D(eps) - D(-eps)) / 2`` on ``g_k``
(Stein's lemma: its slope is the mean of ``U_k J U_k^T`` for any denoiser). The directions are
the data's principal directions (:func:`principal_directions`), or any the caller gives.

The control depends only on the pilot and the directions, so every process that fits it on the
same items gets the same control, and estimates over a sharded dataset stay the same on 1 or N
processes. Its cost is the pilot's evaluations (``pilot_nfe``), paid once per model and reused
for every item estimated with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.interface import Cond, Denoiser


def principal_directions(x: Tensor, n: int | None = None) -> Tensor:
    """The leading principal directions of data ``x: (B, *shape)``: ``(m, *shape)`` orthonormal
    rows, ``m = min(n, B - 1, d)`` (all with ``n=None``), by decreasing variance."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    flat = flat - flat.mean(0, keepdim=True)
    _, sv, vh = torch.linalg.svd(flat, full_matrices=False)
    keep = int((sv > sv[0] * 1e-6).sum()) if sv.numel() else 0
    m = min(keep, flat.shape[1], flat.shape[0] - 1 if flat.shape[0] > 1 else 0)
    if n is not None:
        m = min(m, n)
    if m < 1:
        raise ValueError(f"principal directions need at least 2 distinct data points, got {x.shape[0]}")
    return vh[:m].reshape((m,) + tuple(x.shape[1:]))


@dataclass(frozen=True)
class NoiseControl:
    """Fitted control variate for orthogonal terms (see the module docstring).

    Attributes:
        directions: ``(m, *shape)`` orthonormal directions (rows once flattened).
        logsnr: ``(G,)`` increasing log-SNR grid of the gains.
        gains: ``{term name: (G, m + 1)}`` gains on the grid (the last one for the remainder),
            linearly interpolated in log-SNR and held at the end nodes outside the grid.
        pilot_nfe: denoiser evaluations the pilot cost.
    """

    directions: Tensor
    logsnr: Tensor
    gains: Mapping[str, Tensor]
    pilot_nfe: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        u = self.directions.reshape(self.directions.shape[0], -1).to(torch.float64)
        off = (u @ u.T - torch.eye(u.shape[0], dtype=torch.float64, device=u.device)).abs().max().item()
        if off > 1e-4:  # E[o^2] below holds only for orthonormal directions
            raise ValueError(f"the noise control's directions must be orthonormal rows, got |U U^T - I| up to {off:.3g}")

    def check(self, terms: Mapping, shape: tuple[int, ...]) -> None:
        """Refuse a control that does not fit the terms or the data's shape."""
        if tuple(self.directions.shape[1:]) != tuple(shape):
            raise ValueError(
                f"the noise control's directions are shaped {tuple(self.directions.shape[1:])}, "
                f"expected the data's shape {tuple(shape)}"
            )
        for name in self.gains:
            if name not in terms:
                raise ValueError(f"the noise control has gains for {name!r}, which is not among the terms {sorted(terms)}")
            if terms[name].kind != "orthogonal":
                raise ValueError(
                    f"the noise control applies to orthogonal terms, got a {terms[name].kind!r} term {name!r}"
                )

    @cached_property
    def _basis(self) -> tuple[Tensor, Tensor, Tensor]:
        """``U`` as ``(m, d)`` float64 rows, ``U^2`` and the remainder's diagonal ``1 - sum_k U_kp^2``
        (computed once, not on every block of draws)."""
        u = self.directions.reshape(self.directions.shape[0], -1).to(torch.float64)
        u2 = u.square()
        return u, u2, 1 - u2.sum(0)

    def _gain(self, name: str, logsnr: Tensor) -> Tensor:
        """Gains for each row, ``(R, m + 1)``: linear interpolation on the grid."""
        grid = self.logsnr.to(device=logsnr.device, dtype=torch.float64)
        table = self.gains[name].to(device=logsnr.device, dtype=torch.float64)
        t = logsnr.to(torch.float64).clamp(grid[0], grid[-1])
        hi = torch.searchsorted(grid, t).clamp(1, grid.numel() - 1)
        lo = hi - 1
        frac = ((t - grid[lo]) / (grid[hi] - grid[lo]))[:, None]
        return table[lo] * (1 - frac) + table[hi] * frac

    def variate(self, name: str, eps: Tensor, logsnr: Tensor) -> Tensor:
        """The zero-mean control ``o^2 - E[o^2]`` per coordinate for term ``name``: ``(R, *shape)``."""
        rows, shape = eps.shape[0], tuple(eps.shape[1:])
        u, u2, rest_diag = (t.to(eps.device) for t in self._basis)
        a = self._gain(name, logsnr)  # (R, m + 1)
        a_dir, a_rest = a[:, :-1], a[:, -1:]
        flat = eps.reshape(rows, -1).to(torch.float64)
        g = flat @ u.T  # (R, m)
        o = (a_dir * g) @ u + a_rest * (flat - g @ u)
        mean = a_dir.square() @ u2 + a_rest.square() * rest_diag
        return (o.square() - mean).reshape((rows,) + shape).to(eps.dtype)


def fit_noise_control(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    terms: Mapping,
    directions: Tensor,
    *,
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 1,
    sample_ids: Tensor | Sequence[int] | None = None,
    grid: Tensor | None = None,
    bandwidth: float = 0.5,
    max_batch: int = 4096,
) -> NoiseControl:
    """Fit a :class:`NoiseControl` for the orthogonal ``terms`` on a pilot of ``x``.

    Args:
        x, conditions, terms: as for :func:`~infodecomp.estimators.engine.integrate`: the pilot
            items, a fixed set (the same on every process).
        directions: ``(m, *shape)`` directions, e.g. :func:`principal_directions` of the data
            (orthonormalised here; only their span matters).
        sampler: the log-SNR sampler of the estimates the control is for (antithetic).
        n_draws: pilot draws per item.
        seed: the pilot's seed; keep it different from the estimates' (the control is unbiased
            because its gains do not depend on the estimate's own draws).
        grid: log-SNRs of the gain table (default: 97 nodes over the sampler's range).
        bandwidth: the Gaussian kernel's width in log-SNR.
    """
    from infodecomp.estimators.conditions import check_conditions
    from infodecomp.estimators.engine import _check_terms, _check_x, _draws

    sampler = sampler or LogSNRSampler()
    _check_x(x)
    if not sampler.antithetic:
        raise ValueError("a noise control is fitted for antithetic samplers (antithetic=True)")
    shape = tuple(x.shape[1:])
    if tuple(directions.shape[1:]) != shape:
        raise ValueError(f"directions are shaped {tuple(directions.shape[1:])}, expected the data's shape {shape}")
    orth = {n: t for n, t in terms.items() if t.kind == "orthogonal"}
    if not orth:
        raise ValueError(f"a noise control needs an orthogonal term, got kinds {sorted({t.kind for t in terms.values()})}")
    check_conditions(conditions, x.shape[0])
    needed = _check_terms(orth, conditions)
    q, _ = torch.linalg.qr(directions.reshape(directions.shape[0], -1).to(device=x.device, dtype=torch.float64).T)
    u = q.T
    grid = (torch.linspace(sampler.range.low, sampler.range.high, 97, dtype=torch.float64)
            if grid is None else grid.to(torch.float64).flatten())

    alphas, stats = [], {n: [] for n in orth}
    for d in _draws(denoiser, x, conditions, needed, sampler=sampler, n_draws=n_draws, seed=seed,
                    sample_ids=sample_ids, max_batch=max_batch, strata_per_block=8, progress=False):
        pairs = d.eps.shape[0] // 2
        alphas.append(d.logsnr.reshape(pairs, 2)[:, 0].to(torch.float64).cpu())
        eps = d.eps.reshape(pairs, 2, -1)[:, 0].to(torch.float64)
        g = eps @ u.T
        rest = eps - g @ u
        for name, term in orth.items():
            diff = (d.eps_hat[term.cond] - d.eps_hat[term.ref]).reshape(pairs, 2, -1).to(torch.float64)
            odd = (diff[:, 0] - diff[:, 1]) / 2
            h = odd @ u.T
            # per pair: slope numerators and denominators, directions then the remainder
            num = torch.cat([h * g, (odd * rest).sum(1, keepdim=True)], 1)
            den = torch.cat([g.square(), rest.square().sum(1, keepdim=True)], 1)
            stats[name].append((num.cpu(), den.cpu()))
    alpha = torch.cat(alphas)
    kern = torch.exp(-0.5 * ((grid[:, None] - alpha[None, :]) / bandwidth) ** 2)  # (G, N)
    gains = {}
    for name, parts in stats.items():
        num = torch.cat([p[0] for p in parts])
        den = torch.cat([p[1] for p in parts])
        gains[name] = (kern @ num) / (kern @ den).clamp_min(1e-12)
    n_cond = len({id(conditions[n]) for n in needed})
    return NoiseControl(
        directions=u.reshape((u.shape[0],) + shape).to(x.dtype), logsnr=grid, gains=gains, pilot_nfe=x.shape[0] * n_draws * n_cond,
        info={"n_pilot_items": x.shape[0], "n_draws": n_draws, "bandwidth": bandwidth, "seed": seed},
    )
