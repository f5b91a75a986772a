"""``DiffusionMI``: the diffusion estimator of ``I(X; Y)`` and ``I(X; Y | C)`` behind the baselines' ``fit``/``estimate``.

``fit(x, y)`` (or ``fit(x, y, c=c)``) maps each column to Gaussian scores
(:class:`~infodecomp.estimators.baselines.GaussianCopula`, which leaves MI and CMI unchanged),
holds out a test split, and trains a :class:`DiffusionModule` with an MLP backbone to denoise one
side given the other (and ``c``) through a Lightning ``Trainer``. Lightning's ``ModelCheckpoint``
keeps the model with the lowest held-out denoising loss and ``EarlyStopping`` ends training when
that loss no longer improves, so the number of steps follows the sample size; the time budget
bounds the whole fit. The selected model is evaluated on every test item: both estimators with
their SEs, the standard-orthogonal gap, the drift over training (while the held-out loss still
improves; once it has stopped, how far the models trained after the selected one moved the
midpoint of the two estimators), a k-NN estimate from the same samples to check against, the held-out loss's gain over
the linear-Gaussian base with a test of whether the samples' dependence is Gaussian
(:func:`infodecomp.evaluation.canonical_kurtosis_z`), and the flag that these checks give
(:func:`infodecomp.evaluation.verdict`). Nothing about the data needs to be known beyond the
samples; values are in nats.

Example:
    >>> from infodecomp.tasks import get_task
    >>> x, y = get_task("1v1-normal-0.75").sample(12000, seed=0)
    >>> est = DiffusionMI().fit(x, y)
    >>> est.estimate(), est.flag  # ≈ 0.43 nats (truth 0.4133), "ok"
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from infodecomp.estimators.baselines import (
    KSG,
    FrenzelPompe,
    GaussianCopula,
    _as_2d,
    _check_pair,
    _Fitted,
)
from infodecomp.estimators.engine import Term, integrate
from infodecomp.evaluation import (
    InfoRow,
    canonical_kurtosis_z,
    flag_reason,
    mean_and_se,
    midpoint,
    verdict,
)
from infodecomp.lightning.callbacks.mutual_information import MutualInformationCallback
from infodecomp.lightning.data import TensorDataModule
from infodecomp.lightning.module import DiffusionModule
from infodecomp.models import GaussianResidualMLP, MLPBackbone

log = logging.getLogger(__name__)

Preprocess = Literal["copula", "none"]
#: seconds per training step of the default MLP on one CPU thread, evaluations included: a fixed
#: part and a part per sample of the batch (2026-12-06, one thread beside a second fit, 10-d
#: spiral task at 12,000 samples: 47, 39 and 26 steps/s at batch 256, 512 and 1024). The default
#: step budget is the seconds left for training over this.
STEP_SECONDS = (0.0156, 2.24e-5)


def default_batch(n_train: int) -> int:
    """The batch that follows the sample size: ``n_train / 8`` to the nearest power of two, within
    256 to 1024 (256 at 2,000 samples, 1024 from about 6,000). Per sample a larger batch trains
    faster (26,600 samples/s at 1024 against 12,000 at 256), which the spiral tasks, still
    learning when their budget ends, need; below 2,000 samples 256 keeps several batches per epoch."""
    return int(min(1024, max(256, 2 ** round(math.log2(max(n_train, 1) / 8)))))


#: denoiser evaluations per second of the default MLP on one CPU thread (the final evaluation at
#: 50,000 samples: 8333 items x 32 draws x 2 conditions in 7.3 s) and the share of the time budget
#: kept for the k-NN check and the rest: what ``max_seconds`` keeps back from training
EVALS_PER_SECOND = 70_000.0
RESERVE_SHARE = 0.1


@dataclass
class DiffusionConfig:
    """Settings of :class:`DiffusionMI` (defaults: the benchmark's, at most 60 s on one CPU thread).

    Attributes:
        hidden, depth: width and residual blocks of the MLP backbone.
        max_seconds: the time budget of the whole fit. Training (Lightning's ``max_time``) gets
            what is left after the final evaluation of the selected model on the test split
            (estimated at :data:`EVALS_PER_SECOND`: 0.3 s at 2,000 samples, 7.6 s at 50,000),
            the ``still-learning`` check (0.15 s at 2,000 samples, 0.9 s from 6,000) and
            :data:`RESERVE_SHARE` of the budget for the k-NN check.
        batch_size: training batch (``None``: :func:`default_batch` of the training split).
        max_steps: the step budget (``None``: the training seconds over :data:`STEP_SECONDS` at
            the batch used, what one CPU thread trains in that time). Training ends at whichever budget runs
            out first, or earlier when the held-out loss stops improving.
        select: ``"val_loss"``: every ``val_every`` steps the denoising loss of the EMA model on
            ``val_items`` test items (``val_draws`` noise draws each, the same every time) is
            computed; the model with the lowest one is kept, and training stops once it has not
            improved for ``patience`` checks and for half the steps taken (a plateau early in
            training does not stop it). The loss sees both an under-fitted and an over-fitted
            model, so the number of steps follows the sample size: at 2,000 samples training
            stops after 700-2,300 steps, at 50,000 a Gaussian task stops at 1,800 and a spiral
            one is still improving at 4,700. When training stopped on that loss, the last model
            is compared with the selected one by the midpoint of the two estimators on the
            drift's items and draws (``late_drift`` in :meth:`summary`; two evaluations of
            ``eval_items`` x ``eval_draws``), and a rise of more than ``LATE_DRIFT_NATS`` flags
            the estimate ``still-learning``: the network was still learning dependence that the
            held-out loss could not confirm. ``"last"``: the model after the last step.
        evaluations: MI evaluations during training on ``eval_items`` test items with
            ``eval_draws`` draws each (the drift that flags ``not-converged``; bounded, so that a
            time budget buys training rather than evaluation).
        n_draws: ``(alpha, eps)`` draws per test item in the final evaluation (all test items).
        gaussian_base: the network learns the residual of the Gaussian denoiser with the training
            data's moments (:class:`~infodecomp.models.GaussianResidualMLP`) instead of the whole;
            the estimates are corrected for the noise of that fit (:func:`regression_noise_bias`).
            With ``select="val_loss"`` the base's own held-out loss is recorded at step 0, and a
            fit whose best loss gains less than ``BASE_GAIN`` over it on samples whose dependence
            is not Gaussian is flagged ``gaussian-only`` (one validation pass more).
        preprocess: ``"copula"`` (Gaussian scores of each column) or ``"none"`` (the data as given).
        diffuse: which variable the model denoises (``"auto"``: the one with fewer dimensions;
            a condition ``c`` is never diffused).
        train_fraction: share of the samples trained on; the rest is the test split.
        threads: ``torch`` threads while fitting (``None``: leave as is).
        knn_check: the most samples (drawn at random if there are more) on which a KSG estimate
            (k = 3, Gaussian scores of each column; Frenzel-Pompe for ``I(X; Y | C)``) is
            computed beside the model's; the estimate is flagged ``below-baseline`` when it
            finds more information than the tolerance allows. An under-trained model that is
            consistent and no longer moving (the spiral tasks at 200 steps) shows no other sign.
            ``0`` turns the check off. KSG costs O(n^2) in many dimensions: on the 100-d
            Beyond-Normal task it took 6 s on 4000 samples and 80 s on 12,000.
    """

    hidden: int = 128
    depth: int = 3
    batch_size: int | None = None
    max_steps: int | None = None
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
    select: Literal["val_loss", "last"] = "val_loss"
    val_every: int = 100
    patience: int = 6
    val_items: int = 2000
    val_draws: int = 4
    eval_items: int = 1000
    eval_draws: int = 16


class DiffusionMI(_Fitted):
    """Mutual information from a conditional diffusion model trained on the samples.

    After :meth:`fit`, :meth:`estimate` returns the orthogonal estimate on the held-out split
    (``estimator="standard"`` for the other); :attr:`rows` has both with SEs, the gap and the
    drift, and :attr:`flag` says whether to trust it (``ok``, ``model-inconsistent``,
    ``below-baseline``, ``gaussian-only``, ``still-learning``, ``not-converged``). ``estimate(x, y)`` evaluates the trained model on
    new samples.

    ``fit(x, y, c=c)`` estimates ``I(X; Y | C)`` the same way (``summary()["quantity"]`` is
    ``"cmi"``; the k-NN check is Frenzel-Pompe).

    The orthogonal estimator is the default: on the 40 Beyond-Normal tasks its mean error is
    0.049 nats at 2,000 samples and 0.026 at 12,000 (seed 0; the standard one's 0.126 and 0.045),
    with the lower variance (``benchmarks/baselines.py``;
    ``docs/trust.md``).
    """

    name = "diffusion"
    _train_budget: float | None = None  # seconds left for training in the current fit
    _batch: int | None = None  # the training batch of the current fit

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
        if cfg.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {cfg.max_seconds}")
        if cfg.batch_size is not None and cfg.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (or None: it follows the sample size), got {cfg.batch_size}")
        if cfg.evaluations < 1 or self.max_steps < cfg.evaluations:
            raise ValueError(f"need 1 <= evaluations <= max_steps, got {cfg.evaluations} and {self.max_steps}")
        if cfg.select not in ("val_loss", "last"):
            raise ValueError(f"select must be 'val_loss' or 'last', got {cfg.select!r}")
        for name in ("val_every", "val_items", "val_draws", "eval_items", "patience"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.eval_draws < 4 or cfg.n_draws < 4:
            raise ValueError(f"n_draws and eval_draws must be >= 4, got {cfg.n_draws} and {cfg.eval_draws}")
        self.progress = progress
        self.module: DiffusionModule | None = None
        self.rows: dict[str, InfoRow] = {}
        self.history: dict[str, list[float]] = {}
        self.train_seconds = self.eval_seconds = 0.0
        self.steps = self.best_step = 0
        self.kind, self.stopped, self.settled = "mi", "", False
        self.late_drift: tuple[float, float] | None = None
        self.noise_bias = 0.0
        self.base_gain: float | None = None
        self.dependence_z: float | None = None
        self.val_losses: list[tuple[int, float]] = []

    @property
    def max_steps(self) -> int:
        """The step budget: ``config.max_steps``, or what one CPU thread trains in the seconds
        left for training (before a fit: in all of ``max_seconds``) at the batch of the fit
        (before a fit: ``config.batch_size``, else 256)."""
        cfg = self.config
        seconds = self._train_budget if self._train_budget is not None else cfg.max_seconds
        if cfg.max_steps is not None:
            return cfg.max_steps
        batch = self._batch or cfg.batch_size or 256
        return max(cfg.evaluations, round(seconds / (STEP_SECONDS[0] + STEP_SECONDS[1] * batch)))

    def _training_seconds(self, n_test: int, n_conditions: int) -> float:
        """``max_seconds`` less the final evaluation (``n_conditions`` denoiser calls per draw), the
        ``still-learning`` check's two evaluations of the drift's items and the reserve; at least
        a tenth of the budget."""
        cfg = self.config
        draws = n_test * cfg.n_draws + (2 * min(cfg.eval_items, n_test) * cfg.eval_draws if cfg.select == "val_loss" else 0)
        evaluation = draws * n_conditions / EVALS_PER_SECOND
        return max(0.1 * cfg.max_seconds, cfg.max_seconds * (1 - RESERVE_SHARE) - evaluation)

    # ---- preprocessing ------------------------------------------------------------------------
    def _fit_maps(self, *parts: Tensor) -> None:
        copula = self.config.preprocess == "copula"
        self._maps = [GaussianCopula().fit(t) if copula else None for t in parts]

    def _apply(self, x: Tensor, y: Tensor, c: Tensor | None = None) -> tuple[Tensor, ...]:
        """The preprocessed ``(diffused, other[, condition])``."""
        parts = (x, y) if c is None else (x, y, c)
        out = [(t if m is None else m.transform(t)).float() for t, m in zip(parts, self._maps, strict=True)]
        if self._swap:
            out[0], out[1] = out[1], out[0]
        return tuple(out)

    def _conditions(self, parts: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {"y": parts[1]} if len(parts) == 2 else {"y": parts[1], "c": parts[2]}

    # ---- fit / estimate -----------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor, c: Tensor | None = None) -> DiffusionMI:
        """Train on the samples and estimate ``I(X; Y)``, or ``I(X; Y | C)`` when ``c`` is given
        (``(n, d_c)`` samples of the condition, preprocessed like ``x`` and ``y``)."""
        x, y = _check_pair(x, y)
        if c is not None:
            c = _as_2d(c, "c")
            if c.shape[0] != x.shape[0]:
                raise ValueError(f"c must have one row per sample ({x.shape[0]}), got {c.shape[0]}")
        cfg = self.config
        self.kind = "mi" if c is None else "cmi"
        self.settled, self.late_drift = False, None
        gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_train = int(cfg.train_fraction * x.shape[0])
        if n_train < 2 or x.shape[0] - n_train < 2:
            raise ValueError(f"train_fraction {cfg.train_fraction} of {x.shape[0]} samples leaves a split under 2")
        train, test = perm[:n_train], perm[n_train:]
        self._swap = cfg.diffuse == "y" or (cfg.diffuse == "auto" and y.shape[1] < x.shape[1])
        pick = (lambda idx: (x[idx], y[idx])) if c is None else (lambda idx: (x[idx], y[idx], c[idx]))
        self._fit_maps(*pick(train))
        fit_parts, test_parts = self._apply(*pick(train)), self._apply(*pick(test))
        a, ta = fit_parts[0], test_parts[0]
        cond, test_cond = self._conditions(fit_parts), self._conditions(test_parts)
        n_test = ta.shape[0]
        batch = self._batch = min(cfg.batch_size or default_batch(n_train), n_train)
        held_out = cfg.select == "val_loss"
        # the validation set: the test items (what the MI evaluations read), then, for the
        # held-out loss, ``val_draws`` copies of the first ``val_items`` of them (each copy gets
        # its own noise, so the loss averages several draws per item)
        copies = [slice(0, min(cfg.val_items, n_test))] * (cfg.val_draws if held_out else 0)
        stack = lambda t: torch.cat([t] + [t[s] for s in copies])  # noqa: E731
        dm = TensorDataModule((a, cond), (stack(ta), {k: stack(v) for k, v in test_cond.items()}),
                              batch_size=batch, seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        size = {"hidden": cfg.hidden, "depth": cfg.depth}
        widths = {k: v.shape[1] for k, v in cond.items()}
        if cfg.gaussian_base:
            joint = torch.cat([a, *cond.values()], dim=1).double()
            net = GaussianResidualMLP(a.shape[1], widths, joint.mean(0).tolist(),
                                      torch.cov(joint.T).reshape(joint.shape[1], -1).tolist(), **size)
        else:
            net = MLPBackbone(a.shape[1], vector_conditions=widths, **size)
        self.module = DiffusionModule(net, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay,
                                      warmup_steps=cfg.warmup_steps, cond_dropout=cfg.cond_dropout)
        estimators = ("orthogonal", "standard")
        self._train_budget = self._training_seconds(n_test, 2 if c is None else 4)
        # during training: a bounded subset, for the drift (so a time budget buys training). The
        # period rounds up, so a fit that reaches max_steps ends on the last of ``evaluations``
        # evenly spaced checks, as one that runs out of time ends on its own last check: the drift
        # (over the last three) spans the second half of training either way. Rounded down, a fit
        # that reached max_steps added a check a few steps after the last one and its drift
        # spanned only the last quarter, so the flag changed with the machine's speed.
        watch = MutualInformationCallback(every_n_steps=max(1, math.ceil(self.max_steps / cfg.evaluations)),
                                          n_eval=min(cfg.eval_items, n_test), n_draws=cfg.eval_draws,
                                          seed=cfg.seed, variables=["y"], estimators=estimators)
        # after training: every test item, on the selected model
        final = MutualInformationCallback(every_n_steps=0, n_eval=n_test, n_draws=cfg.n_draws, seed=cfg.seed,
                                          variables=["y"], estimators=estimators)
        threads = torch.get_num_threads()
        quiet = {"logger": False, "enable_model_summary": False, "accelerator": cfg.accelerator, "devices": 1}
        with tempfile.TemporaryDirectory(prefix="diffusion-mi-") as root, _quiet():
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            try:
                selection: list[pl.Callback] = []
                val: dict = {"limit_val_batches": 0}
                if held_out:
                    best = ModelCheckpoint(dirpath=root, monitor="val/loss", mode="min", save_top_k=1,
                                           save_weights_only=True, filename="best")
                    selection = [best, _PatientStopping(cfg.patience, cfg.val_every)]
                    val = {"val_check_interval": cfg.val_every, "check_val_every_n_epoch": None}
                    dm.val_dataloader = _after(dm.val_dataloader, n_test)
                losses = _HeldOutLosses()
                selection.append(losses)
                if held_out and cfg.gaussian_base:
                    # the linear-Gaussian base's own held-out loss (its residual starts at zero): the
                    # step-0 record that the network's gain over it is measured from
                    pl.Trainer(callbacks=[losses], enable_checkpointing=False, enable_progress_bar=False,
                               default_root_dir=root, **quiet).validate(self.module, dm, verbose=False)
                trainer = pl.Trainer(
                    max_steps=self.max_steps, max_time={"seconds": self._train_budget}, enable_checkpointing=held_out,
                    enable_progress_bar=self.progress, num_sanity_val_steps=0, gradient_clip_val=1.0,
                    callbacks=[watch, *selection], default_root_dir=root, **val, **quiet,
                )
                pl.seed_everything(cfg.seed, verbose=False)
                start = time.perf_counter()
                trainer.fit(self.module, dm)
                self.train_seconds = time.perf_counter() - start
                self.steps = self.best_step = trainer.global_step
                self.stopped = ("held-out loss" if held_out and selection[1].stopped else
                                "steps" if self.steps >= self.max_steps else "time")
                if held_out and best.best_model_path:
                    state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
                    self.best_step = int(state.get("global_step", self.steps))
                    self.settled = self.steps - self.best_step >= cfg.patience * cfg.val_every
                    # still-learning: the last model against the selected one, by the midpoint of
                    # the two estimators on the drift's items and draws, paired item by item
                    probe = tuple(t[:min(cfg.eval_items, n_test)] for t in test_parts)
                    last = self._midpoints(probe, cfg.eval_draws) if self.settled else None
                    self.module.load_state_dict(state["state_dict"])
                    if last is not None:
                        self.late_drift = mean_and_se(last - self._midpoints(probe, cfg.eval_draws))
                self.val_losses = losses.values
                judge = pl.Trainer(enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=1,
                                   callbacks=[final], default_root_dir=root, **quiet)
                judge.validate(self.module, dm, verbose=False)
                self.eval_seconds = time.perf_counter() - start - self.train_seconds
            finally:
                torch.set_num_threads(threads)
        self.module.eval()
        if self.stopped == "time":
            log.warning("%s: stopped after %d of %d steps (%.0f s of the %.0f s budget for training)", self.name,
                        self.steps, self.max_steps, self._train_budget, cfg.max_seconds)
        pick_rows = lambda table: {r["estimator"]: r for r in table if r["kind"] == self.kind}  # noqa: E731
        drifts = pick_rows(watch.final_rows)
        self.rows = {}
        for estimator, r in pick_rows(final.last_rows).items():
            row = InfoRow(**r)
            # the drift says whether training has settled; when the held-out loss has not improved
            # for ``patience`` checks it has (and the drift of the models after the selected one
            # shows their over-fitting, not the selected model)
            no_drift = self.settled or estimator not in drifts
            row.drift, row.drift_se = (None, None) if no_drift else (drifts[estimator]["drift"], drifts[estimator]["drift_se"])
            row.late_drift, row.late_drift_se = self.late_drift or (None, None)
            self.rows[estimator] = row
        self.history = {k: v for k, v in watch.history.items() if k.startswith(f"{self.kind}/")}
        if cfg.knn_check:
            knn = knn_baseline(x, y, cfg.knn_check, cfg.seed, c)
            for row in self.rows.values():
                row.baseline = knn
        # the Gaussian base's regression, fitted on n_train samples, carries noise that is
        # independent of the test items: it adds to the orthogonal estimate what it takes from
        # the standard one (:func:`regression_noise_bias`)
        # gaussian-only: a network that gained nothing over its Gaussian base on samples whose
        # dependence is not Gaussian has learned only the Gaussian part of it
        self.base_gain = base_gain(self.val_losses) if held_out and cfg.gaussian_base else None
        rest = torch.cat(list(cond.values()), dim=1)
        z = (canonical_kurtosis_z(a, rest)
             if cfg.gaussian_base and n_train > 4 * (a.shape[1] + rest.shape[1]) else math.nan)
        self.dependence_z = z if math.isfinite(z) else None
        for row in self.rows.values():
            row.base_gain, row.dependence_z = self.base_gain, self.dependence_z
        self.noise_bias = regression_noise_bias(a.shape[1], cond["y"].shape[1], cond["c"].shape[1] if "c" in cond else 0,
                                                n_train) if cfg.gaussian_base else 0.0
        for row in self.rows.values():
            row.estimate += self.noise_bias if row.estimator == "standard" else -self.noise_bias
            row.gap = None if row.gap is None else row.gap + 2 * self.noise_bias
        for row in self.rows.values():
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

    def estimate(self, x: Tensor | None = None, y: Tensor | None = None, c: Tensor | None = None,
                 estimator: Literal["orthogonal", "standard"] = "orthogonal") -> float:
        """The fitted estimate (no arguments), or the trained model's on new samples
        (``x``, ``y`` and, for a conditional fit, ``c``)."""
        if self.module is None:
            raise ValueError("DiffusionMI: call fit(x, y) first")
        if x is None and y is None and c is None:
            return self.rows[estimator].estimate
        x, y = self._data(x, y)
        if (c is None) != (self.kind == "mi"):
            raise ValueError("pass c exactly when the model was fitted with c" if c is None else
                             "c was given but the model was fitted without a condition")
        value = self._information(self._apply(x, y, c), (estimator,), self.config.n_draws)[estimator].item()
        return value + (self.noise_bias if estimator == "standard" else -self.noise_bias)

    def _information(self, parts: tuple[Tensor, ...], estimators: Sequence[str], n_draws: int,
                     reduction: Literal["mean", "sample"] = "mean") -> dict[str, Tensor]:
        """The model's MI (CMI when ``parts`` has a condition) of preprocessed ``parts`` by each of
        ``estimators``, all from the same denoiser calls, before the noise-bias correction."""
        parts = tuple(t.to(self.module.device) for t in parts)
        cond = self._conditions(parts)
        conditions = {"cond": cond, "ref": None if self.kind == "mi" else {"c": cond["c"]}}
        terms = {e: Term(e, cond="cond", ref="ref") for e in estimators}
        self.module.eval()
        with torch.no_grad():
            out = integrate(self.module, parts[0], conditions, terms, n_draws=n_draws, seed=self.config.seed,
                            reduction=reduction)
        return {e: v.value for e, v in out.items()}

    def _midpoints(self, parts: tuple[Tensor, ...], n_draws: int) -> Tensor:
        """Per item, the mean of the orthogonal and standard estimates (the noise-bias correction
        cancels in it): what over-fitting noise does not move (:func:`~infodecomp.evaluation.midpoint`)."""
        both = self._information(parts, ("orthogonal", "standard"), n_draws, "sample")
        return (both["orthogonal"].double().cpu() + both["standard"].double().cpu()) / 2

    def summary(self) -> dict:
        """Both estimates with SEs, the checks and the training that produced them (JSON-ready)."""
        o, s = self.rows["orthogonal"], self.rows["standard"]
        mid, mid_se = midpoint(o, s)
        return {"orthogonal": o.estimate, "orthogonal_se": o.se, "standard": s.estimate, "standard_se": s.se,
                "midpoint": mid, "midpoint_se": mid_se,
                "gap": o.gap, "gap_se": o.gap_se, "drift": o.drift, "drift_se": o.drift_se, "baseline": o.baseline, "flag": o.flag,
                "history": self.history.get(o.name),
                "steps": self.steps, "best_step": self.best_step, "stopped": self.stopped, "settled": self.settled,
                "eval_seconds": self.eval_seconds, "quantity": self.kind,
                "noise_bias": self.noise_bias, "val_losses": self.val_losses,
                "base_gain": self.base_gain, "dependence_z": self.dependence_z,
                "late_drift": o.late_drift, "late_drift_se": o.late_drift_se,
                "train_seconds": self.train_seconds, "config": asdict(self.config)}


def regression_noise_bias(d_diffused: int, d_y: int, d_c: int, n_train: int) -> float:
    """How much the noise of a fitted linear-Gaussian denoiser raises its held-out orthogonal
    estimate of ``I(A; Y | C)`` (and lowers the standard one), in nats.

    The Gaussian base regresses the diffused ``A`` (``d_diffused`` dimensions) on its conditions by
    least squares on ``n_train`` samples. Its error ``Delta`` is independent of the test items, so
    it enters the orthogonal estimate as ``+E||D||^2`` and the standard one as ``-E||D||^2``
    (``infodecomp.evaluation.midpoint``). For a mean shift ``delta`` of a Gaussian with
    covariance ``S``, half the integral of ``||eps_hat(+delta) - eps_hat||^2`` over log-SNR is
    ``delta^T S^-1 delta / 2``; the fitted values of nested least-squares models (conditions
    ``(Y, C)`` against ``C``) differ by a projection of rank ``d_y``, whose expected squared
    norm in that metric is ``d_diffused * d_y / (n_train - d_y - d_c - 2)`` (the inverse-Wishart
    mean). Half of it is the bias: 0.77 nats on the 50 + 50-d Beyond-Normal task at
    ``n_train = 1667`` (0.81 ± 0.06 measured there), 0.13 at 10,000 (0.15 measured).
    """
    dof = n_train - d_y - d_c - 2
    if dof <= 0:
        raise ValueError(f"{n_train} training samples cannot fit a regression on {d_y + d_c} condition dimensions")
    return d_diffused * d_y / (2 * dof)


class _PatientStopping(EarlyStopping):
    """Early stopping on the held-out loss whose patience grows with training: it stops once the
    loss has not improved for ``patience`` checks *and* for half of the steps taken so far.

    A fixed patience stops on a plateau: at 12,000 samples of a spiral task the loss sat still
    from step 200 to 800 before the model learned the spiral (stopped at 800, 0.39 nats of 1.02).
    """

    def __init__(self, patience: int, every: int) -> None:
        super().__init__(monitor="val/loss", mode="min", patience=patience)
        self.base, self.every, self.stopped = patience, every, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.patience = max(self.base, trainer.global_step // (2 * self.every))
        super().on_validation_end(trainer, pl_module)
        self.stopped = self.stopped or self.wait_count >= self.patience  # not the time limit's stop


def base_gain(losses: Sequence[tuple[int, float]]) -> float | None:
    """The share by which the best held-out loss after step 0 is below the step-0 loss (the
    linear-Gaussian base's, before any training); ``None`` without both."""
    if len(losses) < 2 or losses[0][0] != 0 or losses[0][1] <= 0:
        return None
    return (losses[0][1] - min(v for _, v in losses[1:])) / losses[0][1]


class _HeldOutLosses(pl.Callback):
    """The held-out denoising loss at each validation, as ``(step, loss)`` (the fit's record)."""

    def __init__(self) -> None:
        self.values: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not trainer.sanity_checking:
            self.values.append((trainer.global_step, float(loss)))


def _after(make: Callable[[], DataLoader], first: int) -> Callable[[], DataLoader]:
    """``make``'s validation loader without its first ``first`` items: the test items the MI
    evaluations read, which precede the copies the held-out loss is computed on."""
    def loader() -> DataLoader:
        full = make()
        return DataLoader(Subset(full.dataset, range(first, len(full.dataset))), batch_size=full.batch_size,
                          shuffle=False, collate_fn=full.collate_fn)
    return loader


def knn_baseline(x: Tensor, y: Tensor, max_samples: int, seed: int = 0, c: Tensor | None = None) -> float:
    """KSG (k = 3; Frenzel-Pompe when ``c`` is given) on the Gaussian scores of each column of at
    most ``max_samples`` of the samples: the cross-check behind the ``below-baseline`` flag (the
    benchmark's ``ksg-copula`` column)."""
    parts = [x, y] if c is None else [x, y, c]
    if x.shape[0] > max_samples:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        parts = [t[keep] for t in parts]
    scores = [GaussianCopula().fit_transform(t) for t in parts]
    return (KSG(k=3) if c is None else FrenzelPompe(k=3)).fit(*scores).estimate()


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
