"""Exact denoisers and closed-form information for Gaussians.

For ``x ~ N(mu, S)`` observed through the VP channel with ``a = sqrt(sigmoid(alpha))`` and
``s = sqrt(sigmoid(-alpha))``, the posterior mean is ``x_hat = mu + S a (a^2 S + s^2 I)^-1 (z - a mu)``.
In the eigenbasis ``S = V diag(lam) V^T`` the optimal noise prediction is

    eps_hat(z) = V diag( s / (a^2 lam + s^2) ) V^T (z - a mu),

which stays finite as ``s -> 0``. Conditionals of a joint Gaussian are Gaussian with a
covariance that does not depend on the observed value, so one eigendecomposition per set of
observed variables serves every data point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from infodecomp.diffusion.channel import signal_noise_scales
from infodecomp.interface import Cond, LogSNRRange


def check_cov(cov: Tensor, name: str = "cov") -> Tensor:
    """``cov`` as a symmetric float64 matrix, or ``ValueError`` if it is not square, finite and symmetric."""
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(cov.shape)}")
    if not torch.isfinite(cov).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not torch.allclose(cov, cov.T, atol=1e-10, rtol=1e-8):
        raise ValueError(f"{name} must be symmetric")
    return (cov + cov.T) / 2


def gaussian_eps_hat(
    z: Tensor, logsnr: Tensor, mean: Tensor, eigvals: Tensor, eigvecs: Tensor
) -> Tensor:
    """Optimal noise prediction for ``N(mean, V diag(eigvals) V^T)``.

    Args:
        z: ``(R, d)``; logsnr: ``(R,)``; mean: ``(d,)`` or ``(R, d)``; eigvals: ``(d,)``;
        eigvecs: ``(d, d)`` with eigenvectors as columns.

    Returns:
        ``(R, d)``.
    """
    a, s = signal_noise_scales(logsnr)
    centred = z - a[:, None] * mean  # (R, d)
    proj = centred @ eigvecs  # (R, d) eigen-coordinates
    coef = s[:, None] / (a[:, None].square() * eigvals[None, :] + s[:, None].square())
    return (proj * coef) @ eigvecs.T


class GaussianOracle:
    """Exact denoiser of ``x ~ N(mean, cov)``; ``x`` may have any shape with ``prod(shape) = d``.

    Args:
        mean: ``(d,)``.
        cov: ``(d, d)`` symmetric positive semi-definite.
        shape: event shape of ``x`` (defaults to ``(d,)``).
    """

    def __init__(self, mean: Tensor, cov: Tensor, shape: Sequence[int] | None = None) -> None:
        cov = check_cov(cov)
        d = cov.shape[0]
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        if mean.shape != (d,):
            raise ValueError(f"mean must have shape ({d},) to match cov, got {tuple(mean.shape)}")
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} has {math.prod(self.shape)} entries, cov has {d}")
        self.mean = mean
        self.cov = cov
        eigvals, eigvecs = torch.linalg.eigh(cov)
        if eigvals.min() < -1e-8 * max(1.0, eigvals.max().item()):
            raise ValueError(f"cov must be positive semi-definite, smallest eigenvalue {eigvals.min().item():.3g}")
        self.eigvals = eigvals.clamp_min(0)
        self.eigvecs = eigvecs
        self._cast: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = tuple(t.to(dtype=like.dtype, device=like.device)
                                    for t in (self.mean, self.eigvals, self.eigvecs))
        return self._cast[key]

    def eps_hat(self, z: Tensor, logsnr: Tensor, mean: Tensor | None = None) -> Tensor:
        """Noise prediction with an optional per-row mean ``(R, d)`` (same covariance)."""
        mu, lam, vec = self._params(z)
        if mean is not None:
            mu = mean.to(dtype=z.dtype, device=z.device)
        flat = z.reshape(z.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"z has {flat.shape[1]} entries per sample, this oracle models {self.dim}")
        return gaussian_eps_hat(flat, logsnr.to(z.dtype), mu, lam, vec).reshape(z.shape)

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
        if cond is not None:
            raise ValueError(
                "GaussianOracle models one unconditional Gaussian and takes cond=None; "
                "use JointGaussian.denoiser for conditional denoisers"
            )
        return self.eps_hat(z, logsnr)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``, ``x: (B, *shape)`` -> ``(B,)`` (float64)."""
        return _gaussian_log_prob(x.reshape(x.shape[0], -1).to(torch.float64), self.mean, self.cov)

    def entropy(self) -> float:
        return 0.5 * (self.dim * math.log(2 * math.pi * math.e) + torch.logdet(self.cov).item())

    def sample(self, n: int, seed: int = 0) -> Tensor:
        _check_n(n)
        gen = torch.Generator().manual_seed(seed)
        g = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        x = self.mean + (g * self.eigvals.sqrt()) @ self.eigvecs.T
        return x.to(torch.get_default_dtype()).reshape((n,) + self.shape)


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _gauss_legendre(n: int, low: float, high: float) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on ``[low, high]`` (float64)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    half = (high - low) / 2
    return torch.from_numpy(low + half * (nodes + 1)), torch.from_numpy(half * weights)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def _gaussian_log_prob(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``log N(x; mean, cov)`` for ``x: (B, d)``, ``mean: (d,)`` or ``(B, d)``, full-rank ``cov``."""
    chol = torch.linalg.cholesky(cov)
    diff = (x - mean).T  # (d, B)
    sol = torch.linalg.solve_triangular(chol, diff, upper=False)
    d = cov.shape[0]
    return -0.5 * (d * math.log(2 * math.pi) + 2 * chol.diagonal().log().sum() + sol.square().sum(0))


class JointGaussian:
    """Jointly Gaussian named variables, e.g. ``(x, y, c)``, with closed-form information.

    Args:
        cov: joint covariance ``(D, D)``.
        blocks: ordered ``{name: dim}``; the blocks partition ``D``.
        mean: joint mean ``(D,)`` (default zero).

    ``denoiser("x")`` is the exact denoiser of ``x`` whose condition is ``None`` (marginal), a
    tensor (when there is exactly one other variable) or a mapping ``{name: value}`` of any
    subset of the other variables.
    """

    def __init__(self, cov: Tensor, blocks: Mapping[str, int], mean: Tensor | None = None) -> None:
        self.cov = check_cov(cov)
        total = sum(blocks.values())
        if total != self.cov.shape[0]:
            raise ValueError(f"blocks {dict(blocks)} sum to {total}, cov is {self.cov.shape[0]}x{self.cov.shape[0]}")
        self.blocks = dict(blocks)
        self.mean = torch.zeros(total, dtype=torch.float64) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        self._slices: dict[str, slice] = {}
        start = 0
        for name, dim in self.blocks.items():
            self._slices[name] = slice(start, start + dim)
            start += dim
        eig = torch.linalg.eigvalsh(self.cov)
        if eig.min() <= 0:
            raise ValueError(f"cov must be positive definite, smallest eigenvalue {eig.min().item():.3g}")
        self._conditionals: dict[tuple[str, tuple[str, ...]], tuple[GaussianOracle, Tensor]] = {}

    # ---- constructors for the classic cases -------------------------------------------------
    @classmethod
    def bivariate(cls, rho: float) -> JointGaussian:
        """``(x, y)`` scalar standard normals with correlation ``rho``; ``I = -1/2 log(1 - rho^2)``."""
        if not -1 < rho < 1:
            raise ValueError(f"rho must lie in (-1, 1), got {rho}")
        return cls(torch.tensor([[1.0, rho], [rho, 1.0]]), {"x": 1, "y": 1})

    @classmethod
    def dense(cls, dim_x: int, dim_y: int, off_diag: float) -> JointGaussian:
        """Unit variances and the same correlation ``off_diag`` between every pair of coordinates."""
        d = dim_x + dim_y
        cov = torch.full((d, d), float(off_diag), dtype=torch.float64)
        cov.fill_diagonal_(1.0)
        return cls(cov, {"x": dim_x, "y": dim_y})

    @classmethod
    def paired(cls, dim_x: int, dim_y: int, n_pairs: int, rho: float) -> JointGaussian:
        """``n_pairs`` coordinate pairs ``(x_i, y_i)`` with correlation ``rho``; all else independent."""
        if n_pairs > min(dim_x, dim_y):
            raise ValueError(f"n_pairs={n_pairs} exceeds min(dim_x, dim_y)={min(dim_x, dim_y)}")
        cov = torch.eye(dim_x + dim_y, dtype=torch.float64)
        for i in range(n_pairs):
            cov[i, dim_x + i] = cov[dim_x + i, i] = rho
        return cls(cov, {"x": dim_x, "y": dim_y})

    # ---- blocks ---------------------------------------------------------------------------
    def _index(self, names: Sequence[str]) -> Tensor:
        idx = []
        for n in names:
            if n not in self._slices:
                raise ValueError(f"unknown variable {n!r}; this Gaussian has {list(self.blocks)}")
            sl = self._slices[n]
            idx.extend(range(sl.start, sl.stop))
        return torch.tensor(idx, dtype=torch.long)

    def _sub_cov(self, names: Sequence[str]) -> Tensor:
        idx = self._index(names)
        return self.cov[idx][:, idx]

    def _logdet(self, names: Sequence[str]) -> float:
        return torch.logdet(self._sub_cov(names)).item() if names else 0.0

    def mutual_information(self, a: str, b: str, given: Sequence[str] = ()) -> float:
        """Closed form ``I(A; B | G) = 1/2 [log|S_ag| + log|S_bg| - log|S_abg| - log|S_g|]`` (nats)."""
        given = tuple(given)
        if a == b or a in given or b in given:
            raise ValueError(f"variables must be distinct, got a={a!r}, b={b!r}, given={given}")
        return 0.5 * (
            self._logdet((a, *given)) + self._logdet((b, *given))
            - self._logdet((a, b, *given)) - self._logdet(given)
        )

    def sample(self, n: int, seed: int = 0) -> dict[str, Tensor]:
        """Draw ``n`` joint samples: ``{name: (n, dim)}`` in the default float dtype."""
        _check_n(n)
        gen = torch.Generator().manual_seed(seed)
        chol = torch.linalg.cholesky(self.cov)
        joint = self.mean + torch.randn(n, self.cov.shape[0], generator=gen, dtype=torch.float64) @ chol.T
        return {k: joint[:, sl].to(torch.get_default_dtype()) for k, sl in self._slices.items()}

    # ---- conditionals ---------------------------------------------------------------------
    def conditional(self, target: str, given: Sequence[str]) -> tuple[GaussianOracle, Tensor]:
        """``p(target | given)``: an oracle with the conditional covariance, and the regression
        matrix ``R`` such that the conditional mean is ``mu_t + (g - mu_g) @ R.T``."""
        given = tuple(sorted(given))
        key = (target, given)
        if key not in self._conditionals:
            t_idx = self._index([target])
            if given:
                g_idx = self._index(given)
                s_tg = self.cov[t_idx][:, g_idx]
                s_gg = self.cov[g_idx][:, g_idx]
                reg = torch.linalg.solve(s_gg, s_tg.T).T  # (dim_t, dim_g)
                cov = self.cov[t_idx][:, t_idx] - reg @ s_tg.T
            else:
                reg = torch.zeros(len(t_idx), 0, dtype=torch.float64)
                cov = self.cov[t_idx][:, t_idx]
            self._conditionals[key] = (GaussianOracle(self.mean[t_idx], (cov + cov.T) / 2), reg)
        return self._conditionals[key]

    def _parse_cond(self, target: str, cond: Cond) -> dict[str, Tensor]:
        others = [n for n in self.blocks if n != target]
        if cond is None:
            return {}
        if isinstance(cond, Tensor):
            if len(others) != 1:
                raise ValueError(
                    f"a tensor condition is ambiguous with variables {others}; pass a mapping {{name: value}}"
                )
            return {others[0]: cond}
        if isinstance(cond, Mapping):
            observed = {k: v for k, v in cond.items() if v is not None}
            for k in observed:
                if k not in others:
                    raise ValueError(f"cannot condition {target!r} on {k!r}; known variables: {others}")
            return observed
        raise ValueError(f"condition must be None, a tensor or a mapping, got {type(cond).__name__}")

    def _conditional_mean(self, target: str, observed: Mapping[str, Tensor]) -> tuple[GaussianOracle, Tensor | None]:
        names = tuple(sorted(observed))
        oracle, reg = self.conditional(target, names)
        if not names:
            return oracle, None
        g = torch.cat([observed[n].reshape(observed[n].shape[0], -1).to(torch.float64) for n in names], dim=1)
        g_mean = self.mean[self._index(names)]
        return oracle, oracle.mean + (g - g_mean) @ reg.T

    def log_prob(self, target: str, value: Tensor, given: Mapping[str, Tensor] | None = None) -> Tensor:
        """Exact ``log p(target = value | given)``, ``(B,)`` float64."""
        oracle, mean = self._conditional_mean(target, dict(given or {}))
        flat = value.reshape(value.shape[0], -1).to(torch.float64)
        return _gaussian_log_prob(flat, oracle.mean if mean is None else mean, oracle.cov)

    def pointwise_mutual_information(
        self, samples: Mapping[str, Tensor], a: str, b: str, given: Sequence[str] = ()
    ) -> Tensor:
        """Exact ``log p(a | b, g) - log p(a | g)`` at each sample, ``(B,)`` float64."""
        g = {n: samples[n] for n in given}
        return self.log_prob(a, samples[a], {**g, b: samples[b]}) - self.log_prob(a, samples[a], g)

    def truncated_mutual_information(
        self, a: str, b: str, given: Sequence[str] = (), *, low: float, high: float
    ) -> float:
        """``I(A; B | G)`` restricted to log-SNRs in ``[low, high]`` (what a truncated integral targets).

        The expected integrand is ``1/2 [mmse_{a|g}(alpha) - mmse_{a|b,g}(alpha)]`` with Gaussian
        MMSEs ``sum_k sigmoid(alpha + log lam_k)``, whose antiderivative is a softplus, so the
        truncation bias ``I - truncated`` is exact.
        """
        given = tuple(given)
        LogSNRRange(low, high)

        def integral(names: tuple[str, ...]) -> float:
            oracle, _ = self.conditional(a, names)
            log_lam = oracle.eigvals.clamp_min(1e-300).log()
            sp = torch.nn.functional.softplus
            return (sp(high + log_lam) - sp(low + log_lam)).sum().item()

        return 0.5 * (integral(given) - integral((b, *given)))

    def orthogonal_information_exact(
        self,
        samples: Mapping[str, Tensor],
        a: str,
        b: str,
        given: Sequence[str] = (),
        *,
        low: float = -40.0,
        high: float = 40.0,
        n_nodes: int = 800,
    ) -> Tensor:
        """Exact pointwise orthogonal information ``i_o(a; b | g)`` at each sample, ``(B,)`` float64.

        ``1/2 ∫ E_eps ||eps_hat(z | b, g) - eps_hat(z | g)||^2 d alpha`` in closed form over ``eps``
        (both predictions are affine in ``z``) and by Gauss-Legendre quadrature over ``alpha``.
        This is the quantity the orthogonal estimator targets point by point; its mean over
        samples is ``I(A; B | G)``. Cost ``O(n_nodes * d^3)``: meant for small ``d``.
        """
        LogSNRRange(low, high)
        given = tuple(given)
        g = {n: samples[n] for n in given}
        ref, mean_ref = self._conditional_mean(a, g)
        cond, mean_cond = self._conditional_mean(a, {**g, b: samples[b]})
        x = samples[a].reshape(samples[a].shape[0], -1).to(torch.float64)
        mean_ref = ref.mean.expand_as(x) if mean_ref is None else mean_ref
        nodes, weights = _gauss_legendre(n_nodes, low, high)
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for alpha, w in zip(nodes.tolist(), weights.tolist(), strict=True):
            a_, s_ = math.sqrt(_sigmoid(alpha)), math.sqrt(_sigmoid(-alpha))
            m_ref, m_cond = (
                (o.eigvecs * (s_ / (a_**2 * o.eigvals + s_**2))) @ o.eigvecs.T for o in (ref, cond)
            )
            diff = m_cond - m_ref
            mean_d = a_ * (x @ diff.T) - a_ * (mean_cond @ m_cond.T) + a_ * (mean_ref @ m_ref.T)
            total += w * (mean_d.square().sum(1) + s_**2 * diff.square().sum())
        return 0.5 * total

    def denoiser(self, target: str = "x", shape: Sequence[int] | None = None) -> JointGaussianDenoiser:
        """The exact denoiser of ``target`` (see the class docstring for conditions)."""
        self._index([target])
        return JointGaussianDenoiser(self, target, shape)


class JointGaussianDenoiser:
    """Exact ``eps_hat(z, alpha | observed variables)`` of one block of a :class:`JointGaussian`."""

    def __init__(self, joint: JointGaussian, target: str, shape: Sequence[int] | None = None) -> None:
        self.joint = joint
        self.target = target
        self.shape = tuple(shape) if shape is not None else (joint.blocks[target],)

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
        observed = self.joint._parse_cond(self.target, cond)
        oracle, mean = self.joint._conditional_mean(self.target, observed)
        return oracle.eps_hat(z, logsnr, mean)


def exact_orthogonal_density(
    eigvecs: Tensor,
    eigvals_ref: Tensor,
    mean_ref: Tensor,
    eigvals_cond: Tensor,
    mean_cond: Tensor,
    x: Tensor,
    logsnr: Tensor,
    *,
    per_coordinate: bool = False,
) -> Tensor:
    """Exact ``E_eps ||eps_hat_cond(z) - eps_hat_ref(z)||^2`` for two Gaussians sharing eigenvectors.

    Both denoisers are affine in ``z`` with matrices diagonal in the shared eigenbasis, so the
    expectation over ``eps`` is closed form: in eigen-coordinates ``D_k = c_k z_k - e_k mu_k + f_k m_k``
    with ``z = a x + s eps``. Integrating this density over log-SNR gives the exact pointwise
    orthogonal information, against which Monte-Carlo estimators are scored.

    Args:
        eigvecs: ``(d, d)`` shared eigenvectors (columns).
        eigvals_ref, eigvals_cond: ``(d,)``.
        mean_ref, mean_cond: ``(B, d)`` means of the two Gaussians at each data point.
        x: ``(B, d)``.
        logsnr: ``(L,)``.
        per_coordinate: return ``(L, B, d)`` per-coordinate densities instead of ``(L, B)``.
    """
    a, s = signal_noise_scales(logsnr.to(torch.float64))
    a, s = a[:, None, None], s[:, None, None]  # (L, 1, 1)
    to_eig = lambda t: t.to(torch.float64) @ eigvecs  # noqa: E731
    xt, mr, mc = to_eig(x)[None], to_eig(mean_ref)[None], to_eig(mean_cond)[None]  # (1, B, d)
    den_r = a.square() * eigvals_ref + s.square()  # (L, 1, d)
    den_c = a.square() * eigvals_cond + s.square()
    c = s * (1 / den_c - 1 / den_r)  # coefficient of z in D
    m = c * a * xt - s * a * mc / den_c + s * a * mr / den_r  # (L, B, d): mean of D given x
    var = (c * s).square()  # (L, 1, d): variance of D given x
    if not per_coordinate:
        return (m.square() + var).sum(-1)
    vec2 = eigvecs.square()  # (d_pixel, d_eig)
    return (m @ eigvecs.T).square() + var @ vec2.T
