"""``DiffusionMI``: the diffusion estimator of ``I(X; Y)`` behind the baselines' ``fit``/``estimate``.

``fit(x, y)`` maps each column to Gaussian scores (:class:`~infodecomp.estimators.baselines.GaussianCopula`,
which leaves MI unchanged), holds out a test split, trains a :class:`DiffusionModule` with an MLP
backbone to denoise one side given the other through a Lightning ``Trainer`` (a step and a time
budget), and lets the :class:`MutualInformationCallback` evaluate the orthogonal and standard
estimates on the test split a few times during training. The last evaluation is the estimate:
both estimators with their SEs, the standard-orthogonal gap, the drift over training, a k-NN
estimate from the same samples to check against, and the flag that these checks give
(:func:`infodecomp.evaluation.verdict`). Nothing about the data needs to be known beyond the
samples; values are in nats.

Example:
    >>> from infodecomp.tasks import get_task
    >>> x, y = get_task("1v1-normal-0.75").sample(12000, seed=0)
    >>> est = DiffusionMI().fit(x, y)
    >>> est.estimate(), est.flag  # ≈ 0.41 nats (truth 0.4133), "ok"
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

from infodecomp.estimators import mutual_information
from infodecomp.estimators.baselines import KSG, GaussianCopula, _check_pair, _Fitted
from infodecomp.evaluation import InfoRow, flag_reason, midpoint, verdict
from infodecomp.lightning.callbacks.mutual_information import MutualInformationCallback
from infodecomp.lightning.data import TensorDataModule
from infodecomp.lightning.module import DiffusionModule
from infodecomp.models import GaussianResidualMLP, MLPBackbone

log = logging.getLogger(__name__)

Preprocess = Literal["copula", "none"]


@dataclass
class DiffusionConfig:
    """Settings of :class:`DiffusionMI` (defaults: the benchmark's, about 60 s on one CPU thread).

    Attributes:
        hidden, depth: width and residual blocks of the MLP backbone.
        max_steps, max_seconds: training budget (whichever ends first; ``max_seconds`` includes
            the evaluations during training).
        evaluations: how many times the estimate is evaluated during training (the last is the
            result; three or more give the drift that flags ``not-converged``).
        gaussian_base: the network learns the residual of the Gaussian denoiser with the training
            data's moments (:class:`~infodecomp.models.GaussianResidualMLP`) instead of the whole.
        preprocess: ``"copula"`` (Gaussian scores of each column) or ``"none"`` (the data as given).
        diffuse: which variable the model denoises (``"auto"``: the one with fewer dimensions).
        train_fraction: share of the samples trained on; the rest is the test split.
        n_draws: ``(alpha, eps)`` draws per test item in each evaluation.
        threads: ``torch`` threads while fitting (``None``: leave as is).
        knn_check: the most samples (drawn at random if there are more) on which a KSG estimate
            (k = 3, Gaussian scores of each column) is computed beside the model's; the estimate
            is flagged ``below-baseline`` when KSG finds more information than the tolerance
            allows. An under-trained model that is consistent and no longer moving (the spiral
            tasks at 200 steps) shows no other sign. ``0`` turns the check off. KSG costs
            O(n^2) in many dimensions: on the 100-d Beyond-Normal task it took 6 s on 4000
            samples and 80 s on 12,000 (one thread, beside two other jobs on 2 cores).
    """

    hidden: int = 128
    depth: int = 3
    batch_size: int = 256
    max_steps: int = 2400
    max_seconds: float = 60.0
    lr: float = 2e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    warmup_steps: int = 100
    cond_dropout: float = 0.2
    evaluations: int = 4
    n_draws: int = 32
    preprocess: Preprocess = "copula"
    gaussian_base: bool = True
    diffuse: Literal["x", "y", "auto"] = "auto"
    train_fraction: float = 5 / 6
    accelerator: str = "auto"
    seed: int = 0
    threads: int | None = None
    knn_check: int = 4000


class DiffusionMI(_Fitted):
    """Mutual information from a conditional diffusion model trained on the samples.

    After :meth:`fit`, :meth:`estimate` returns the orthogonal estimate on the held-out split
    (``estimator="standard"`` for the other); :attr:`rows` has both with SEs, the gap and the
    drift, and :attr:`flag` says whether to trust it (``ok``, ``model-inconsistent``,
    ``below-baseline``, ``not-converged``). ``estimate(x, y)`` evaluates the trained model on
    new samples.

    The orthogonal estimator is the default: on the 40 Beyond-Normal tasks its mean error is
    0.036 nats against the standard one's 0.055, with the lower variance (``benchmarks/baselines.py``;
    ``docs/trust.md``).
    """

    name = "diffusion"

    def __init__(self, config: DiffusionConfig | None = None, progress: bool = False, **overrides) -> None:
        self.config = config or DiffusionConfig(**overrides)
        cfg = self.config
        if not 0 < cfg.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1), got {cfg.train_fraction}")
        if cfg.preprocess not in ("copula", "none"):
            raise ValueError(f"preprocess must be 'copula' or 'none', got {cfg.preprocess!r}")
        if cfg.diffuse not in ("x", "y", "auto"):
            raise ValueError(f"diffuse must be 'x', 'y' or 'auto', got {cfg.diffuse!r}")
        if cfg.knn_check < 0:
            raise ValueError(f"knn_check must be >= 0 samples (0: off), got {cfg.knn_check}")
        if cfg.evaluations < 1 or cfg.max_steps < cfg.evaluations:
            raise ValueError(f"need 1 <= evaluations <= max_steps, got {cfg.evaluations} and {cfg.max_steps}")
        self.progress = progress
        self.module: DiffusionModule | None = None
        self.rows: dict[str, InfoRow] = {}
        self.history: dict[str, list[float]] = {}
        self.train_seconds = 0.0
        self.steps = 0

    # ---- preprocessing ------------------------------------------------------------------------
    def _fit_maps(self, x: Tensor, y: Tensor) -> None:
        copula = self.config.preprocess == "copula"
        self._maps = [GaussianCopula().fit(x), GaussianCopula().fit(y)] if copula else [None, None]

    def _apply(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = []
        for t, m in zip((x, y), self._maps, strict=True):
            out.append((t if m is None else m.transform(t)).float())
        return (out[1], out[0]) if self._swap else (out[0], out[1])

    # ---- fit / estimate -----------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor) -> DiffusionMI:
        x, y = _check_pair(x, y)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_train = int(cfg.train_fraction * x.shape[0])
        if n_train < 2 or x.shape[0] - n_train < 2:
            raise ValueError(f"train_fraction {cfg.train_fraction} of {x.shape[0]} samples leaves a split under 2")
        train, test = perm[:n_train], perm[n_train:]
        self._swap = cfg.diffuse == "y" or (cfg.diffuse == "auto" and y.shape[1] < x.shape[1])
        self._fit_maps(x[train], y[train])
        (a, b), (ta, tb) = self._apply(x[train], y[train]), self._apply(x[test], y[test])
        dm = TensorDataModule((a, {"y": b}), (ta, {"y": tb}), batch_size=min(cfg.batch_size, n_train), seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        size = {"hidden": cfg.hidden, "depth": cfg.depth}
        if cfg.gaussian_base:
            joint = torch.cat([a, b], dim=1).double()
            net = GaussianResidualMLP(a.shape[1], {"y": b.shape[1]}, joint.mean(0).tolist(),
                                      torch.cov(joint.T).reshape(joint.shape[1], -1).tolist(), **size)
        else:
            net = MLPBackbone(a.shape[1], vector_conditions={"y": b.shape[1]}, **size)
        self.module = DiffusionModule(net, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay,
                                      warmup_steps=cfg.warmup_steps, cond_dropout=cfg.cond_dropout)
        every = max(1, cfg.max_steps // cfg.evaluations)
        callback = MutualInformationCallback(every_n_steps=every, n_eval=ta.shape[0], n_draws=cfg.n_draws,
                                             seed=cfg.seed, estimators=("orthogonal", "standard"))
        threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory(prefix="diffusion-mi-") as root, _quiet():
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            try:
                trainer = pl.Trainer(
                    max_steps=cfg.max_steps, max_time={"seconds": cfg.max_seconds}, accelerator=cfg.accelerator,
                    devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=self.progress,
                    enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                    gradient_clip_val=1.0, callbacks=[callback], default_root_dir=root,
                )
                pl.seed_everything(cfg.seed, verbose=False)
                start = time.perf_counter()
                trainer.fit(self.module, dm)
                self.train_seconds = time.perf_counter() - start
            finally:
                torch.set_num_threads(threads)
        self.module.eval()
        self.steps = trainer.global_step
        if self.steps < cfg.max_steps:
            log.warning("%s: stopped after %d of %d steps (time budget %.0f s)", self.name, self.steps,
                        cfg.max_steps, cfg.max_seconds)
        self.rows = {("orthogonal" if "@" not in r["name"] else r["estimator"]): InfoRow(**r)
                     for r in callback.final_rows}
        self.history = callback.history
        if cfg.knn_check:
            knn = knn_baseline(x, y, cfg.knn_check, cfg.seed)
            for row in self.rows.values():
                row.baseline = knn
                row.flag = verdict(row)
        if self.flag != "ok":
            log.warning("%s: the estimate is flagged %s: %s", self.name, self.flag, flag_reason(self.rows["orthogonal"]))
        return self

    @property
    def knn_estimate(self) -> float | None:
        """The KSG estimate the fitted estimate was checked against (``None``: check off or not fitted)."""
        return self.rows["orthogonal"].baseline if self.rows else None

    @property
    def flag(self) -> str:
        """The checks' verdict on the fitted estimate (``ok`` when none fired)."""
        if not self.rows:
            raise ValueError("DiffusionMI: call fit(x, y) first")
        return self.rows["orthogonal"].flag

    def estimate(self, x: Tensor | None = None, y: Tensor | None = None,
                 estimator: Literal["orthogonal", "standard"] = "orthogonal") -> float:
        if self.module is None:
            raise ValueError("DiffusionMI: call fit(x, y) first")
        if x is None and y is None:
            return self.rows[estimator].estimate
        x, y = self._data(x, y)
        a, b = self._apply(x, y)
        a, b = a.to(self.module.device), b.to(self.module.device)
        with torch.no_grad():
            return mutual_information(self.module, a, {"y": b}, estimator=estimator, n_draws=self.config.n_draws,
                                      seed=self.config.seed).item()

    def summary(self) -> dict:
        """Both estimates with SEs, the checks and the training that produced them (JSON-ready)."""
        o, s = self.rows["orthogonal"], self.rows["standard"]
        mid, mid_se = midpoint(o, s)
        return {"orthogonal": o.estimate, "orthogonal_se": o.se, "standard": s.estimate, "standard_se": s.se,
                "midpoint": mid, "midpoint_se": mid_se,
                "gap": o.gap, "gap_se": o.gap_se, "drift": o.drift, "baseline": o.baseline, "flag": o.flag,
                "history": self.history.get(o.name),
                "steps": self.steps,
                "train_seconds": self.train_seconds, "config": asdict(self.config)}


def knn_baseline(x: Tensor, y: Tensor, max_samples: int, seed: int = 0) -> float:
    """KSG (k = 3) on the Gaussian scores of each column of at most ``max_samples`` of the samples:
    the cross-check behind the ``below-baseline`` flag (the benchmark's ``ksg-copula`` column)."""
    if x.shape[0] > max_samples:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        x, y = x[keep], y[keep]
    return KSG(k=3).fit(GaussianCopula().fit_transform(x), GaussianCopula().fit_transform(y)).estimate()


@contextlib.contextmanager
def _quiet():
    """Lightning's per-fit banners (GPU available, ...) off while fitting."""
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric",
             "infodecomp.lightning.callbacks.mutual_information")  # its per-evaluation flags: one warning at the end
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
