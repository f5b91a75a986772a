"""Classical mutual-information estimators, for side-by-side comparison on the same samples.

All share one interface: ``est.fit(x, y)`` then ``est.estimate()`` (on the fitted samples, or
on a held-out split for the neural critics) or ``est.estimate(x, y)`` on new samples. Values
are in nats.

* :class:`KSG`: Kraskov, Stögbauer & Grassberger (2004), estimator 1, max-norm neighbours.
* :class:`GaussianMI`: plug-in MI of the Gaussian with the samples' covariance (equivalently,
  ``-1/2 sum log(1 - rho_i^2)`` over canonical correlations).
* :class:`InfoNCE`: van den Oord et al. (2018); lower bound capped at ``log(batch)``.
* :class:`NWJ`: Nguyen, Wainwright & Jordan (2010), the f-divergence bound MINE-f optimises.
* :class:`FrenzelPompe`: conditional MI ``I(X; Y | C)``, the KSG construction with the
  condition added to every space (Frenzel & Pompe 2007); ``fit(x, y, c)``.

The neural critics train on half of the samples; every ``eval_every`` steps the bound is
evaluated on the other half and the best critic is kept (early stopping on held-out data,
which makes the reported value slightly optimistic but stops the critic from overfitting).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma
from torch import Tensor, nn

log = logging.getLogger(__name__)


@runtime_checkable
class MIEstimator(Protocol):
    name: str

    def fit(self, x: Tensor, y: Tensor) -> MIEstimator: ...

    def estimate(self, x: Tensor | None = None, y: Tensor | None = None) -> float: ...


def _as_2d(t: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(t)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"{name} must be (n, d) or (n,), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 4:
        raise ValueError(f"need at least 4 samples, got {x.shape[0]}")
    return x, y


class GaussianCopula:
    """Per-column map to standard-normal scores through the empirical CDF of fitted samples.

    ``fit`` sorts each column; ``transform`` maps a value to ``Phi^-1`` of its interpolated
    rank ``(r + 1/2) / n``, clipped to the fitted range. Every column map is increasing, so
    mutual information is unchanged (up to the empirical CDF's error), while heavy tails,
    bounded supports and multimodal marginals all become unit-scale Gaussian marginals: what
    a network or a nearest-neighbour search handles best.
    """

    def fit(self, t: Tensor) -> GaussianCopula:
        t = _as_2d(t, "data").double()
        self._sorted = t.sort(dim=0).values.T.contiguous().numpy()  # (d, n)
        n = t.shape[0]
        self._levels = torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(n, dtype=torch.float64) + 0.5) / n).numpy()
        return self

    def transform(self, t: Tensor) -> Tensor:
        t = _as_2d(t, "data").double()
        if t.shape[1] != self._sorted.shape[0]:
            raise ValueError(f"fitted on {self._sorted.shape[0]} columns, got {t.shape[1]}")
        cols = [np.interp(t[:, j].numpy(), self._sorted[j], self._levels) for j in range(t.shape[1])]
        return torch.from_numpy(np.stack(cols, axis=1))

    def fit_transform(self, t: Tensor) -> Tensor:
        return self.fit(t).transform(t)


class _Fitted:
    _x: Tensor | None = None
    _y: Tensor | None = None

    def _data(self, x: Tensor | None, y: Tensor | None) -> tuple[Tensor, Tensor]:
        if x is None and y is None:
            if self._x is None:
                raise ValueError(f"{type(self).__name__}: call fit(x, y) first or pass x and y")
            return self._x, self._y
        if x is None or y is None:
            raise ValueError("pass both x and y, or neither")
        return _check_pair(x, y)


class KSG(_Fitted):
    """Kraskov-Stögbauer-Grassberger estimator 1 with ``k`` neighbours (max-norm).

    ``I = psi(k) + psi(n) - < psi(n_x + 1) + psi(n_y + 1) >`` where ``n_x`` counts points strictly
    closer in ``x`` than the ``k``-th neighbour in the joint space.
    """

    name = "ksg"

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def fit(self, x: Tensor, y: Tensor) -> KSG:
        self._x, self._y = _check_pair(x, y)
        return self

    def estimate(self, x: Tensor | None = None, y: Tensor | None = None) -> float:
        x, y = self._data(x, y)
        xn, yn = x.double().numpy(), y.double().numpy()
        n = xn.shape[0]
        joint = np.concatenate([xn, yn], axis=1)
        dist, _ = cKDTree(joint).query(joint, k=self.k + 1, p=np.inf)
        radius = np.nextafter(dist[:, -1], 0)  # strictly closer than the k-th neighbour
        nx, ny = _neighbour_counts(xn, radius), _neighbour_counts(yn, radius)
        return float(digamma(self.k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


def _neighbour_counts(points: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """How many other points lie strictly within each point's max-norm ``radius``."""
    return cKDTree(points).query_ball_point(points, radius, p=np.inf, return_length=True) - 1


class FrenzelPompe:
    """Conditional mutual information ``I(X; Y | C)`` by k nearest neighbours (max-norm).

    Frenzel & Pompe (2007): the ``k``-th neighbour's distance in the joint space ``(x, y, c)``
    sets each point's radius, and
    ``I = psi(k) - < psi(n_xc + 1) + psi(n_yc + 1) - psi(n_c + 1) >`` with the counts of points
    strictly inside that radius in the spaces ``(x, c)``, ``(y, c)`` and ``c``. Like KSG it
    falls short of the truth in many dimensions. ``fit(x, y, c)`` then ``estimate()``.
    """

    name = "frenzel-pompe"

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._xyc: tuple[Tensor, Tensor, Tensor] | None = None

    def fit(self, x: Tensor, y: Tensor, c: Tensor) -> FrenzelPompe:
        x, y = _check_pair(x, y)
        c = _as_2d(c, "c")
        if c.shape[0] != x.shape[0]:
            raise ValueError(f"c must have one row per sample ({x.shape[0]}), got {c.shape[0]}")
        self._xyc = (x, y, c)
        return self

    def estimate(self) -> float:
        if self._xyc is None:
            raise ValueError("FrenzelPompe: call fit(x, y, c) first")
        xn, yn, cn = (t.double().numpy() for t in self._xyc)
        joint = np.concatenate([xn, yn, cn], axis=1)
        dist, _ = cKDTree(joint).query(joint, k=self.k + 1, p=np.inf)
        radius = np.nextafter(dist[:, -1], 0)  # strictly closer than the k-th neighbour
        n_xc = _neighbour_counts(np.concatenate([xn, cn], axis=1), radius)
        n_yc = _neighbour_counts(np.concatenate([yn, cn], axis=1), radius)
        n_c = _neighbour_counts(cn, radius)
        return float(digamma(self.k) - np.mean(digamma(n_xc + 1) + digamma(n_yc + 1) - digamma(n_c + 1)))


def _expected_logdet_offset(dim: int, n: int) -> float:
    """``E[log det S] - log det Sigma`` for the unbiased sample covariance of ``n`` Gaussian draws."""
    i = np.arange(1, dim + 1)
    return float(np.sum(digamma((n - i) / 2.0)) + dim * math.log(2.0 / (n - 1)))


class GaussianMI(_Fitted):
    """``1/2 [log det S_xx + log det S_yy - log det S]`` of the sample covariance (exact for Gaussians).

    With ``bias_correction`` (default) each log-determinant is corrected by its known
    expectation under Gaussian sampling, ``sum_i psi((n - i) / 2) + d log(2 / (n - 1))``, which
    removes the plug-in estimator's ``~ d_x d_y / 2n`` upward bias in high dimension.
    """

    name = "gaussian"

    def __init__(self, bias_correction: bool = True) -> None:
        self.bias_correction = bias_correction

    def fit(self, x: Tensor, y: Tensor) -> GaussianMI:
        self._x, self._y = _check_pair(x, y)
        return self

    def estimate(self, x: Tensor | None = None, y: Tensor | None = None) -> float:
        x, y = self._data(x, y)
        n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
        if n <= dx + dy + 1:
            raise ValueError(f"the Gaussian estimator needs more samples than dimensions + 1, got n={n}, d={dx + dy}")
        xy = torch.cat([x, y], dim=1).double()
        cov = torch.cov(xy.T).reshape(dx + dy, dx + dy)
        logdet = lambda m: torch.linalg.slogdet(m)[1].item()  # noqa: E731
        mi = 0.5 * (logdet(cov[:dx, :dx]) + logdet(cov[dx:, dx:]) - logdet(cov))
        if self.bias_correction:
            off = _expected_logdet_offset
            mi -= 0.5 * (off(dx, n) + off(dy, n) - off(dx + dy, n))
        return mi


class _Critic(nn.Module):
    """Separable critic ``f(x, y) = g(x) . h(y)`` with MLP encoders, scored on every pair of a batch.

    Separable critics cost ``2n`` network evaluations for ``n^2`` scores, which is what lets the
    neural baselines train on a CPU within their time budget.
    """

    def __init__(self, dim_x: int, dim_y: int, hidden: int, layers: int, embed: int) -> None:
        super().__init__()
        self.g = self._mlp(dim_x, hidden, layers, embed)
        self.h = self._mlp(dim_y, hidden, layers, embed)

    @staticmethod
    def _mlp(dim_in: int, hidden: int, layers: int, dim_out: int) -> nn.Sequential:
        dims = [dim_in] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            mods += [nn.Linear(a, b), nn.ReLU()]
        mods.append(nn.Linear(dims[-1], dim_out))
        return nn.Sequential(*mods)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores ``(n, n)``: entry ``[i, j]`` is ``f(x_i, y_j)``; the diagonal holds the joint pairs."""
        return self.g(x) @ self.h(y).T


def infonce_bound(scores: Tensor) -> Tensor:
    """``mean_i [f_ii - logsumexp_j f_ij] + log n``."""
    n = scores.shape[0]
    return (scores.diagonal() - scores.logsumexp(dim=1)).mean() + math.log(n)


def nwj_bound(scores: Tensor) -> Tensor:
    """``E_p[f] - E_q[exp(f - 1)]`` with the off-diagonal pairs as samples of ``q = p(x)p(y)``."""
    n = scores.shape[0]
    joint = scores.diagonal().mean()
    off = scores.masked_select(~torch.eye(n, dtype=torch.bool, device=scores.device))
    return joint - (off - 1).exp().mean()


@dataclass
class NeuralConfig:
    hidden: int = 128
    layers: int = 2
    embed: int = 32
    batch_size: int = 256
    steps: int = 3000
    lr: float = 1e-3
    train_fraction: float = 0.5
    eval_every: int = 100
    seed: int = 0
    max_seconds: float = 55.0


class _NeuralMI(_Fitted):
    name = "neural"
    bound = staticmethod(infonce_bound)

    def __init__(self, config: NeuralConfig | None = None, progress: bool = False, **overrides) -> None:
        self.config = config or NeuralConfig(**overrides)
        if not 0 < self.config.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {self.config.train_fraction}")
        self.progress = progress
        self.critic: _Critic | None = None
        self.train_seconds = 0.0

    def fit(self, x: Tensor, y: Tensor) -> _NeuralMI:
        x, y = _check_pair(x, y)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_train = int(cfg.train_fraction * x.shape[0])
        train, test = perm[:n_train], perm[n_train:]
        x, y = x.float(), y.float()
        # standardise with training statistics
        self._mx, self._sx = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
        self._my, self._sy = y[train].mean(0), y[train].std(0).clamp_min(1e-8)
        xs, ys = (x - self._mx) / self._sx, (y - self._my) / self._sy
        self._x, self._y = x[test], y[test]
        torch.manual_seed(cfg.seed)
        self.critic = _Critic(x.shape[1], y.shape[1], cfg.hidden, cfg.layers, cfg.embed)
        opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        batch = min(cfg.batch_size, n_train)
        start = time.perf_counter()
        steps = range(cfg.steps)
        bar = None
        if self.progress:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"training {self.name} critic", total=cfg.steps)
        best, best_state, skipped = -math.inf, None, 0
        try:
            for step in steps:
                idx = train[torch.randint(n_train, (batch,), generator=gen)]
                loss = -self.bound(self.critic(xs[idx], ys[idx]))
                opt.zero_grad()
                if torch.isfinite(loss):  # heavy tails can overflow exp(f) in NWJ: skip such a batch
                    loss.backward()
                    opt.step()
                else:
                    skipped += 1
                if bar is not None:
                    bar.advance(task)
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    value = self.estimate()
                    if value > best:
                        best = value
                        best_state = {k: v.clone() for k, v in self.critic.state_dict().items()}
                if time.perf_counter() - start > cfg.max_seconds:
                    log.warning("%s: stopped after %d of %d steps (time budget %.0f s)",
                                self.name, step + 1, cfg.steps, cfg.max_seconds)
                    break
        finally:
            if bar is not None:
                bar.stop()
        if best_state is not None:
            self.critic.load_state_dict(best_state)
        if skipped:
            log.warning("%s: skipped %d batches whose bound was not finite", self.name, skipped)
        self.train_seconds = time.perf_counter() - start
        return self

    @torch.no_grad()
    def estimate(self, x: Tensor | None = None, y: Tensor | None = None) -> float:
        if self.critic is None:
            raise ValueError(f"{type(self).__name__}: call fit(x, y) first")
        x, y = self._data(x, y)
        xs, ys = (x.float() - self._mx) / self._sx, (y.float() - self._my) / self._sy
        batch = min(self.config.batch_size, xs.shape[0])
        values = []
        for start in range(0, xs.shape[0] - batch + 1, batch):
            values.append(self.bound(self.critic(xs[start : start + batch], ys[start : start + batch])).item())
        return float(np.mean(values))


class InfoNCE(_NeuralMI):
    """InfoNCE with an MLP critic (estimate on the held-out split; capped at ``log(batch_size)``)."""

    name = "infonce"
    bound = staticmethod(infonce_bound)


class NWJ(_NeuralMI):
    """NWJ / MINE-f bound with an MLP critic (estimate on the held-out split)."""

    name = "nwj"
    bound = staticmethod(nwj_bound)


BASELINES: dict[str, type] = {"ksg": KSG, "gaussian": GaussianMI, "infonce": InfoNCE, "nwj": NWJ}


def make_baseline(name: str, **kwargs) -> MIEstimator:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name](**kwargs)
