"""Exact denoisers for Gaussian mixtures, conditional on discrete labels.

For ``x ~ sum_k pi_k N(mu_k, S_k)`` observed through the VP channel, the responsibilities are
``r_k(z) ∝ pi_k N(z; a mu_k, a^2 S_k + s^2 I)`` and, because the noise prediction is affine in
the posterior mean, ``eps_hat(z) = sum_k r_k(z) eps_hat_k(z)``. Each component carries
discrete labels (e.g. ``{"class": ...}`` or ``{"shape": ..., "colour": ...}``); conditioning
on labels restricts the sum to matching components, which gives exact conditional and
marginal denoisers from one object. Any finite set of images blurred by isotropic Gaussian
noise is such a mixture.

A label may also be a *noisy* function of the component, observed through a known confusion
matrix ``p(y | true class)``: conditioning then reweights each component by ``p(y | k)``
instead of excluding it, ``pi_k(y) ∝ pi_k p(y | k)``, and ``p(y | x) = sum_k r_k(x) p(y | k)``
(``../shared/DESIGN.md`` §2, "Labels that do not saturate").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from infodecomp.diffusion.channel import signal_noise_scales
from infodecomp.interface import Cond, Estimate
from infodecomp.oracles.gaussian import _check_n

_LOG_2PI = math.log(2 * math.pi)


def isotropic_log_normal(flat: Tensor, a: Tensor, s: Tensor, means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """``log N(z; a m_k, (a^2 v_k + s^2) I)`` ``(R, M)`` for rows ``flat`` ``(R, d)`` of ``z``, and the
    variances ``a^2 v_k + s^2`` ``(R, M)``: the evidence of a noisy image for each component of an
    isotropic mixture (means ``(M, d)``, variances ``(M,)``)."""
    d = flat.shape[1]
    var = a[:, None].square() * variances[None, :] + s[:, None].square()
    sq = (
        flat.square().sum(1, keepdim=True)
        - 2 * a[:, None] * flat @ means.T
        + a[:, None].square() * means.square().sum(1)[None, :]
    ).clamp_min(0)
    return -0.5 * (d * _LOG_2PI + d * var.log() + sq / var), var


def isotropic_residual(flat: Tensor, a: Tensor, resp: Tensor, var: Tensor, means: Tensor) -> Tensor:
    """``sum_k r_k (z - a m_k) / (a^2 v_k + s^2)`` ``(R, d)``: the posterior mean of the noise is ``s``
    times it, and that of ``x`` is ``sum_k r_k m_k + a v_k r_k (...)`` (``resp`` and ``var`` ``(R, M)``)."""
    w = resp / var
    return flat * w.sum(1, keepdim=True) - a[:, None] * (w @ means)


class GaussianMixtureOracle:
    """Exact conditional and marginal denoiser of a labelled Gaussian mixture.

    Args:
        means: ``(M, d)`` component means.
        covs: a float (shared isotropic variance), ``(M,)`` per-component isotropic variances,
            or ``(M, d, d)`` full covariances.
        weights: ``(M,)`` mixture weights (default uniform); normalised internally.
        labels: ``{attribute: (M,) long}`` labels per component, or one ``(M,)`` tensor (named
            ``"label"``). Default: each component is its own class, ``{"label": arange(M)}``.
        shape: event shape of ``x`` (default ``(d,)``).
        confusion: ``{attribute: (C_true, C_obs)}`` row-stochastic matrices for labels observed with
            noise: ``labels[attribute]`` then holds each component's true class, and a condition
            holds the observed label, drawn from row ``labels[attribute][k]``. Observations of
            different attributes are independent given the component.

    Conditions: ``None`` (marginal); a ``(B,)`` long tensor when there is a single attribute;
    or ``{attribute: (B,) long}`` with ``-1`` marking an attribute that is not given.
    """

    def __init__(
        self,
        means: Tensor,
        covs: float | Tensor,
        weights: Tensor | None = None,
        labels: Mapping[str, Tensor] | Tensor | None = None,
        shape: Sequence[int] | None = None,
        confusion: Mapping[str, Tensor] | None = None,
    ) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must be (M, d), got shape {tuple(means.shape)}")
        m, d = means.shape
        self.means = means
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} has {math.prod(self.shape)} entries, means have {d}")
        w = torch.full((m,), 1.0 / m, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be (M,) = ({m},) non-negative with positive sum, got shape {tuple(w.shape)}")
        self.log_weights = (w / w.sum()).log()
        covs_t = torch.as_tensor(covs, dtype=torch.float64)
        if covs_t.ndim == 0:
            covs_t = covs_t.expand(m).clone()
        if covs_t.ndim == 1:
            if covs_t.shape != (m,) or (covs_t <= 0).any():
                raise ValueError(f"isotropic variances must be (M,) = ({m},) and positive, got {tuple(covs_t.shape)}")
            self.isotropic = True
            self.variances = covs_t
        elif covs_t.ndim == 3 and covs_t.shape == (m, d, d):
            self.isotropic = False
            covs_t = (covs_t + covs_t.transpose(1, 2)) / 2
            eigvals, eigvecs = torch.linalg.eigh(covs_t)
            if eigvals.min() <= 0:
                raise ValueError(f"component covariances must be positive definite, smallest eigenvalue {eigvals.min().item():.3g}")
            self.covs = covs_t
            self.eigvals, self.eigvecs = eigvals, eigvecs
        else:
            raise ValueError(f"covs must be a float, (M,) or (M, d, d) = ({m}, {d}, {d}), got shape {tuple(covs_t.shape)}")
        if labels is None:
            labels = {"label": torch.arange(m)}
        elif isinstance(labels, Tensor):
            labels = {"label": labels}
        self.labels = {k: torch.as_tensor(v, dtype=torch.long) for k, v in labels.items()}
        for k, v in self.labels.items():
            if v.shape != (m,):
                raise ValueError(f"labels[{k!r}] must have shape ({m},), got {tuple(v.shape)}")
        self.confusion: dict[str, Tensor] = {}
        for k, c in (confusion or {}).items():
            c = torch.as_tensor(c, dtype=torch.float64)
            if k not in self.labels:
                raise ValueError(f"confusion given for {k!r}, which is not an attribute of {list(self.labels)}")
            classes = int(self.labels[k].max()) + 1
            if c.ndim != 2 or c.shape[0] < classes or (c < 0).any() or not torch.allclose(c.sum(1), torch.ones((), dtype=c.dtype)):
                raise ValueError(f"confusion[{k!r}] must be a ({classes}, C_obs) matrix of non-negative rows summing "
                                 f"to 1, got shape {tuple(c.shape)}")
            self.confusion[k] = c
        self._cast: dict[tuple, dict[str, Tensor]] = {}

    @classmethod
    def overlapping(
        cls, n_classes: int = 10, dim: int = 64, *, mean_scale: float = 0.15, shape: Sequence[int] | None = None,
        seed: int = 0,
    ) -> GaussianMixtureOracle:
        """A test bed: one class per component, close means and differently shaped covariances
        that share a common factor, so the classes overlap (I(x; class) well below log n_classes)."""
        gen = torch.Generator().manual_seed(seed)
        base = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
        means = torch.randn(n_classes, dim, generator=gen, dtype=torch.float64) * mean_scale
        pert = torch.randn(n_classes, dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim) * 0.3
        factors = base + pert
        covs = factors @ factors.transpose(1, 2) * 0.5 + 0.3 * torch.eye(dim, dtype=torch.float64)
        return cls(means, covs, shape=shape)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _params(self, like: Tensor) -> dict[str, Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cast:
            names = ["means", "log_weights"] + (["variances"] if self.isotropic else ["eigvals", "eigvecs"])
            params = {n: getattr(self, n).to(dtype=like.dtype, device=like.device) for n in names}
            params.update({f"label/{k}": v.to(like.device) for k, v in self.labels.items()})
            self._cast[key] = params
        return self._cast[key]

    # ---- conditions -------------------------------------------------------------------------
    def _as_label_dict(self, cond: Cond, rows: int) -> dict[str, Tensor]:
        if cond is None:
            return {}
        if isinstance(cond, Tensor):
            if len(self.labels) != 1:
                raise ValueError(
                    f"a tensor condition is ambiguous with attributes {list(self.labels)}; pass a mapping"
                )
            cond = {next(iter(self.labels)): cond}
        if not isinstance(cond, Mapping):
            raise ValueError(f"condition must be None, a (B,) label tensor or a mapping, got {type(cond).__name__}")
        out = {}
        for k, v in cond.items():
            if k not in self.labels:
                raise ValueError(f"unknown attribute {k!r}; this mixture has {list(self.labels)}")
            if v is None:
                continue
            v = torch.as_tensor(v).reshape(-1)
            if v.shape[0] != rows:
                raise ValueError(f"condition {k!r} has {v.shape[0]} entries, expected {rows}")
            out[k] = v.long()
        return out

    def condition_log_weights(self, cond: Cond, rows: int, device: torch.device | None = None) -> Tensor | None:
        """``(rows, M)`` float64: ``log p(labels | component k)`` for each row's labels, ``-inf`` where a
        component cannot carry them (``None`` when no label is given)."""
        given = self._as_label_dict(cond, rows)
        if not given:
            return None
        out = torch.zeros(rows, self.n_components, dtype=torch.float64, device=device)
        for k, v in given.items():
            v = v.to(device)
            labels = self.labels[k].to(device)
            if k in self.confusion:
                log_c = self.confusion[k].to(device).log()
                if (v >= log_c.shape[1]).any():
                    raise ValueError(f"condition {k!r} has a label >= {log_c.shape[1]}, the number of observed classes")
                term = log_c[labels[None, :], v.clamp_min(0)[:, None]]  # (rows, M)
            else:
                term = torch.zeros(rows, self.n_components, dtype=torch.float64, device=device).masked_fill(
                    v[:, None] != labels[None, :], float("-inf"))
            out += term.masked_fill(v[:, None] < 0, 0.0)
        empty = torch.isinf(out).all(dim=1)
        if empty.any():
            bad = {k: v[empty.nonzero()[0, 0]].item() for k, v in given.items()}
            raise ValueError(f"no mixture component has labels {bad}")
        return out

    def batch_conditions(self, conds: Sequence[Cond], sizes: Sequence[int]) -> Cond:
        """Merge conditions (``None`` included) into one ``{attribute: (sum(sizes),)}`` with -1 for absent."""
        parts = {k: [] for k in self.labels}
        for cond, n in zip(conds, sizes, strict=True):
            given = self._as_label_dict(cond, n)
            for k in self.labels:
                parts[k].append(given[k] if k in given else torch.full((n,), -1, dtype=torch.long))
        return {k: torch.cat([p.to(v[0].device if v else "cpu") for p in v]) for k, v in parts.items()}

    # ---- the denoiser -------------------------------------------------------------------------
    def _component_terms(self, flat: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """log N(z; a mu_k, a^2 S_k + s^2 I) ``(R, M)``, and what eps_hat needs."""
        p = self._params(flat)
        d = self.dim
        if self.isotropic:
            log_n, var = isotropic_log_normal(flat, a, s, p["means"], p["variances"])
            return log_n, var, None
        centred = flat[:, None, :] - a[:, None, None] * p["means"][None]  # (R, M, d)
        proj = torch.einsum("rmd,mde->rme", centred, p["eigvecs"])
        den = a[:, None, None].square() * p["eigvals"][None] + s[:, None, None].square()  # (R, M, d)
        log_n = -0.5 * (d * _LOG_2PI + den.log().sum(-1) + (proj.square() / den).sum(-1))
        return log_n, den, proj

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
        return self.denoise(z, logsnr, cond)

    def denoise(self, z: Tensor, logsnr: Tensor, cond: Cond = None, log_prior: Tensor | None = None) -> Tensor:
        """The exact noise prediction given labels ``cond`` and, optionally, a per-row
        ``(B, M)`` log-weighting of the components (``-inf``: excluded) on top of the mixture
        weights: the denoiser of ``x`` given evidence that bears on the component softly, such
        as a caption with words removed (:mod:`infodecomp.probes.oracle`)."""
        rows = z.shape[0]
        # float64 inside: with sharp responsibilities eps_hat is a difference of large terms, and in
        # float32 its rounding leaves spurious values where the exact answer is zero (a label's map
        # outside the pixels it draws)
        flat = z.reshape(rows, -1).to(torch.float64)
        if flat.shape[1] != self.dim:
            raise ValueError(f"z has {flat.shape[1]} entries per sample, this mixture models {self.dim}")
        a, s = signal_noise_scales(logsnr.to(device=z.device, dtype=torch.float64))
        p = self._params(flat)
        log_n, den, proj = self._component_terms(flat, a, s)
        logits = log_n + p["log_weights"][None, :]
        given = self.condition_log_weights(cond, rows, z.device)
        if given is not None:
            logits = logits + given.to(logits)
        if log_prior is not None:
            if log_prior.shape != (rows, self.n_components):
                raise ValueError(f"log_prior must be (B, M) = ({rows}, {self.n_components}), got {tuple(log_prior.shape)}")
            logits = logits + log_prior.to(logits)
        resp = torch.softmax(logits, dim=1)  # (R, M)
        if self.isotropic:
            eps_hat = s[:, None] * isotropic_residual(flat, a, resp, den, p["means"])
        else:
            coef = resp[:, :, None] * s[:, None, None] * proj / den  # (R, M, d) eigen-coords
            eps_hat = torch.einsum("rme,mde->rd", coef, p["eigvecs"])
        return eps_hat.reshape(z.shape).to(z.dtype)

    # ---- exact densities and information ------------------------------------------------------
    def log_prob_components(self, x: Tensor) -> Tensor:
        """``log pi_k + log N(x; mu_k, S_k)`` for every component, ``(B, M)`` float64."""
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        one = torch.ones(flat.shape[0], dtype=torch.float64)
        log_n, _, _ = self._component_terms(flat, one, torch.zeros_like(one))
        return log_n + self.log_weights.to(log_n.dtype)[None, :]

    def log_prob(self, x: Tensor, cond: Cond = None) -> Tensor:
        """Exact ``log p(x | labels)``, ``(B,)`` float64."""
        joint = self.log_prob_components(x)
        given = self.condition_log_weights(cond, x.shape[0])
        if given is None:
            return joint.logsumexp(1)
        return (joint + given).logsumexp(1) - (self.log_weights[None, :] + given).logsumexp(1)

    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """Draw ``n`` points: ``x: (n, *shape)`` and ``{attribute: (n,)}`` labels (plus ``"component"``)."""
        _check_n(n)
        gen = torch.Generator().manual_seed(seed)
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=gen)
        g = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        if self.isotropic:
            x = self.means[comp] + g * self.variances[comp, None].sqrt()
        else:
            scaled = g * self.eigvals[comp].sqrt()
            x = self.means[comp] + torch.einsum("nde,ne->nd", self.eigvecs[comp], scaled)
        labels = self.observe({k: v[comp] for k, v in self.labels.items()}, gen)
        labels["component"] = comp
        return x.to(torch.get_default_dtype()).reshape((n,) + self.shape), labels

    def pointwise_information(
        self, x: Tensor, labels: Mapping[str, Tensor], attribute: str, given: Sequence[str] = ()
    ) -> Tensor:
        """Exact ``log p(x | a, g) - log p(x | g)`` at each point, ``(B,)`` float64."""
        g = {k: labels[k] for k in given}
        return self.log_prob(x, {**g, attribute: labels[attribute]}) - self.log_prob(x, g or None)

    def observe(self, labels: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
        """Observed labels from true ones: each noisy attribute drawn from its confusion row (in place)."""
        for k, c in self.confusion.items():
            labels[k] = torch.multinomial(c[labels[k]], 1, generator=gen)[:, 0]
        return labels

    def label_probabilities(self, attribute: str) -> Tensor:
        """``(M, C)`` float64: ``p(attribute = j | component k)``, one-hot for labels observed without noise."""
        if attribute in self.confusion:
            return self.confusion[attribute][self.labels[attribute]]
        return torch.nn.functional.one_hot(self.labels[attribute]).to(torch.float64)

    def mutual_information(
        self, attribute: str = "label", given: Sequence[str] = (), *, n: int = 20000, seed: int = 0, batch: int = 4096,
        expected: bool | None = None,
    ) -> Estimate:
        """``I(X; A | G) = E[log p(a | x, g) - log p(a | g)]`` by Monte Carlo with exact posteriors.

        Exact up to the reported Monte-Carlo standard error (no denoiser involved). With
        ``expected`` the label ``a`` is summed out rather than drawn, ``I = E_{x,g}[KL(p(a | x, g) ||
        p(a | g))]`` (Rao-Blackwell): the same mean with far less variance for noisy labels, where
        a drawn ``a`` disagrees with ``x`` at random. Default: summed out when ``a`` or ``g`` is a
        noisy label (``confusion``), drawn otherwise. Cost is ``n * M`` component densities; for very
        many components use smaller ``n``.
        """
        if attribute not in self.labels:
            raise ValueError(f"unknown attribute {attribute!r}; this mixture has {list(self.labels)}")
        if expected is None:
            expected = any(a in self.confusion for a in (attribute, *given))
        p_a = self.label_probabilities(attribute) if expected else None
        values = []
        for start in range(0, n, batch):
            m = min(batch, n - start)
            x, labels = self.sample(m, seed=seed * 1_000_003 + start)
            if p_a is None:
                values.append(self.pointwise_information(x, labels, attribute, given))
                continue
            g = self.condition_log_weights({k: labels[k] for k in given} or None, m)
            g = torch.zeros(m, self.n_components, dtype=torch.float64) if g is None else g
            post = torch.softmax(self.log_prob_components(x) + g, dim=1) @ p_a  # p(a | x, g), (m, C)
            prior = torch.softmax(self.log_weights[None, :] + g, dim=1) @ p_a  # p(a | g)
            values.append(torch.xlogy(post, post).sum(1) - (post * prior.clamp_min(1e-300).log()).sum(1))
        v = torch.cat(values)
        method = "monte-carlo over x, label summed out" if expected else "monte-carlo, exact posterior"
        return Estimate(
            value=v.mean(), se=v.std() / math.sqrt(n), nfe=0, logsnr_range=None,
            reduction="mean", n_samples=n, info={"method": method},
        )
