"""``MutualInformationCallback``: MI and CMI of each conditioning variable during training."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

from infodecomp.evaluation import (
    SETTLE_EVALS,
    EvalBatch,
    InfoRow,
    flag_summary,
    flag_unsettled,
    information_density,
    information_estimates,
    quantity_label,
    subset,
    summarise,
)
from infodecomp.interface import ConditionEntropySource, ground_truth_of
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.lightning.loggers import CURVE_FIELDS, log_curve_charts, publish_final
from infodecomp.plotting import (
    plot_estimate_curves,
    plot_information_bars,
    plot_information_density,
)

log = logging.getLogger(__name__)


class MutualInformationCallback(EvaluationCallback):
    """Log ``I(x; v)`` and ``I(x; v | other variables)`` for each conditioning variable ``v``.

    Keys: ``val/mi/<v>``, ``val/mi_se/<v>``, ``val/cmi/<v>``, ``val/cmi_se/<v>``, ``val/info_nfe``;
    with ground truth from the data module also ``val/mi_true/<v>``, ``val/mi_abs_error/<v>`` and
    ``val/mi_oracle/<v>`` (the exact oracle on the same draws, which separates model error from
    Monte-Carlo error), likewise for ``cmi``. Estimators after the first are computed on the
    same draws at no extra denoiser cost and logged as ``val/mi_<estimator>/<v>`` and so on. At
    the end of training the table goes to the W&B run summary and to ``<run>/tables``.

    Checks that need no ground truth go with every estimate (``infodecomp.evaluation``): the
    standard-orthogonal gap ``val/mi_gap/<v>`` with ``val/mi_gap_se/<v>``, the bound
    ``val/mi_bound/<v>`` (the condition's entropy, where it is finite), the drift
    ``val/mi_drift/<v>`` with ``val/mi_drift_se/<v>`` (change over the last three evaluations of
    training, paired item by item), and the verdict in the table's ``flag`` column (``ok``,
    ``model-inconsistent``, ``exceeds-bound``, ``not-converged``), as ``val/mi_flagged/<v>`` (1
    when flagged) and as one warning line per evaluation that flags anything.

    With W&B, each evaluation also logs a chart ``charts/<kind>/<v>`` of the estimate over
    training (SE band, exact value, oracle on the same draws); the run summary gets
    ``final/<kind>/<v>`` (with ``_se``, ``_true``, ``_oracle``) and ``flag/<kind>/<v>``. At the
    end of training the same curves go to ``<run>/figures/val_information_curves_step*.png``.

    Args:
        variables: which conditioning variables (default: all the model takes).
        n_draws: ``(alpha, eps)`` draws per item.
        estimators: ``"orthogonal"`` (the paper's, lowest variance) and/or ``"standard"`` (the
            difference of denoising errors: errors that both predictions share cancel, so it is
            the less biased one for a trained model whose branches are imperfect).
        density_points: also evaluate the information density ``E||eps_hat(z|v) - eps_hat(z)||^2``
            on this many log-SNRs in ``[-10, 12]`` (model, and oracle where there is one), on the
            first ``density_items`` evaluation items (``0``: not at all; a figure
            ``val/information_density`` shows where in noise level a model gains or loses).
    """

    needs_conditions = True

    def __init__(self, every_n_steps: int = 250, n_eval: int = 256, n_draws: int = 32, seed: int = 0,
                 variables: Sequence[str] | None = None,
                 estimators: Sequence[str] = ("orthogonal", "standard"), density_points: int = 0,
                 density_items: int = 64) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        if density_points < 0 or (density_points and (density_points < 2 or density_items < 2)):
            raise ValueError(f"density_points must be 0 or >= 2 with density_items >= 2, got {density_points}, "
                             f"{density_items}")
        self.density_points, self.density_items = density_points, density_items
        if n_draws < 4:
            raise ValueError(f"n_draws must be >= 4, got {n_draws}")
        bad = [e for e in estimators if e not in ("orthogonal", "standard")]
        if bad or not estimators or len(set(estimators)) != len(estimators):
            raise ValueError(f"estimators must be distinct names from ('orthogonal', 'standard'), got {list(estimators)}")
        self.estimators = tuple(estimators)
        self.n_draws, self.variables = n_draws, list(variables) if variables else None
        self.final_rows: list[dict] = []
        self.last_rows: list[dict] = []
        # per quantity: its estimates over training (the drift; DiffusionMI reads them), its curve
        # (CURVE_FIELDS: step, estimate, se, truth, oracle; the charts) and the per-item values of
        # its last SETTLE_EVALS evaluations (the drift's paired SE)
        self.history: dict[str, list[float]] = {}
        self.curves: dict[str, dict[str, list]] = {}
        self.items: dict[str, list[Tensor]] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.enabled:
            return
        spec = pl_module.condition_spec
        if self.variables is None:
            self.variables = list(spec)
        unknown = [v for v in self.variables if v not in spec]
        if unknown or not self.variables:
            raise ValueError(f"MutualInformationCallback variables {unknown or '[]'} are not model conditions {sorted(spec)}")

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        show = self.show_progress(trainer)
        est = information_estimates(pl_module, batch, self.variables, n_draws=self.n_draws, seed=self.seed,
                                    estimators=self.estimators, progress=show)
        per_sample = {k: gather_cat(trainer, e.value) for k, e in est.items()}
        gt = ground_truth_of(trainer.datamodule)
        oracle = oracle_cond = None
        if gt is not None and gt.oracle is not None and batch.oracle_cond:
            oracle_cond = {k: v.to(batch.x.device) for k, v in batch.oracle_cond.items() if k in self.variables}
            oracle_est = information_estimates(gt.oracle, batch, self.variables, n_draws=self.n_draws,
                                               seed=self.seed, cond=oracle_cond, estimators=self.estimators,
                                               progress=show)
            oracle = {k: gather_cat(trainer, e.value) for k, e in oracle_est.items()}
        first = next(iter(est.values()))
        dm = trainer.datamodule
        bounds = dm.condition_entropies() if isinstance(dm, ConditionEntropySource) else None
        rows = summarise(per_sample, first.nfe, truth=gt, oracle=oracle,
                         logsnr_range=(first.logsnr_range.low, first.logsnr_range.high), estimator=self.estimators[0],
                         bounds=bounds)
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:  # the drift of an estimate over training
            self._remember(trainer.global_step, rows, per_sample)
            flag_unsettled(rows, self.history, self.items)
        metrics = {"val/info_nfe": first.nfe}
        for r in rows:
            kind = f"{r.kind}_{r.estimator}" if "@" in r.name else r.kind
            metrics[f"val/{kind}/{r.variable}"] = r.estimate
            metrics[f"val/{kind}_se/{r.variable}"] = r.se
            metrics[f"val/{kind}_true/{r.variable}"] = r.truth
            metrics[f"val/{kind}_abs_error/{r.variable}"] = r.abs_error
            metrics[f"val/{kind}_oracle/{r.variable}"] = r.oracle_estimate
            metrics[f"val/{kind}_flagged/{r.variable}"] = float(r.flag != "ok")
            metrics[f"val/{kind}_drift/{r.variable}"] = r.drift
            metrics[f"val/{kind}_drift_se/{r.variable}"] = r.drift_se
            if "@" not in r.name:  # once per quantity
                metrics[f"val/{r.kind}_gap/{r.variable}"] = r.gap
                metrics[f"val/{r.kind}_gap_se/{r.variable}"] = r.gap_se
                metrics[f"val/{r.kind}_bound/{r.variable}"] = r.bound
        line = flag_summary(rows, trainer.global_step)
        if line and trainer.is_global_zero:
            log.warning(line)
        self.log_scalars(trainer, metrics)
        table = [r.to_dict() for r in rows]
        self.log_table(trainer, "val/information_table", list(table[0]),
                       [[v if not isinstance(v, tuple) else list(v) for v in t.values()] for t in table])
        self.log_figure(trainer, "val/information", plot_information_bars(table, title=f"step {trainer.global_step}"),
                        what="information per variable (" + ", ".join(self.variables) + ")")
        if fitting:
            for run in self.wandb_runs(trainer):
                log_curve_charts(run, *self.chart_curves(), step=trainer.global_step)
        self.last_rows = table
        self.result = {"information": table, "n_eval": int(per_sample[next(iter(per_sample))].shape[0]),
                       "n_draws": self.n_draws, "variables": list(self.variables)}
        if self.density_points:
            self.result["information_density"] = self._density(trainer, pl_module, batch, gt, oracle_cond)

    def _density(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch, gt: Any,
                 oracle_cond: dict | None) -> dict[str, Any]:
        """The information density of the first ``density_items`` items (by dataset index, so
        any number of processes gives the same curves), gathered and averaged."""
        keep = batch.sample_ids < self.density_items
        part = subset(batch, keep)
        grid = torch.linspace(-10, 12, self.density_points)

        def curves(denoiser: Any, cond: dict | None) -> dict[str, Tensor]:
            per = information_density(denoiser, part, self.variables, grid, n_eps=2, seed=self.seed, cond=cond,
                                      reduction="sample")
            return {v: gather_cat(trainer, c.cpu()).double().mean(0) for v, c in per.items()}

        model = curves(pl_module, None)
        oracle = curves(gt.oracle, {k: v[keep.to(v.device)] for k, v in oracle_cond.items()}) if oracle_cond else None
        self.log_figure(trainer, "val/information_density", plot_information_density(grid, model, oracle),
                        what="information density of " + ", ".join(self.variables))
        return {"logsnr": grid.tolist(), "model": {k: v.tolist() for k, v in model.items()},
                "oracle": {k: v.tolist() for k, v in oracle.items()} if oracle else None}

    def _remember(self, step: int, rows: list[InfoRow], per_sample: dict[str, Tensor]) -> None:
        """Add this evaluation to each quantity's curve, and keep its per-item values (the last
        :data:`SETTLE_EVALS` only: ``n_eval`` numbers per quantity, small in a checkpoint)."""
        for r in rows:
            self.history.setdefault(r.name, []).append(r.estimate)
            curve = self.curves.setdefault(r.name, {k: [] for k in CURVE_FIELDS})
            for k, v in zip(CURVE_FIELDS, (step, r.estimate, r.se, r.truth, r.oracle_estimate), strict=True):
                curve[k].append(v)
            self.items[r.name] = [*self.items.get(r.name, []), per_sample[r.name].detach().double().cpu()][-SETTLE_EVALS:]

    def chart_curves(self) -> tuple[dict[str, dict[str, list]], dict[str, str]]:
        """The curves of the first estimator's quantities and their titles (charts and figure)."""
        curves = {n: c for n, c in self.curves.items() if "@" not in n}
        titles = {n: f"{quantity_label(n)} (nats)" for n in curves}
        return curves, titles

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "curves": self.curves, "items": self.items}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a checkpoint from before the curves holds the history alone: the charts start afresh
        self.history = {k: list(v) for k, v in state_dict.get("history", {}).items()}
        self.curves = {n: {k: list(c[k]) for k in CURVE_FIELDS} for n, c in state_dict.get("curves", {}).items()}
        self.items = {k: list(v) for k, v in state_dict.get("items", {}).items()}

    @override
    def finalize(self, trainer: pl.Trainer) -> None:
        """The last table becomes the final one (W&B run summary ``final/...`` and ``flag/...``),
        and the curves over training a figure in ``<run>/figures``."""
        self.final_rows = table = self.last_rows
        if not trainer.is_global_zero:
            return
        for run in self.wandb_runs(trainer):
            publish_final(run, information=table)
        curves, titles = self.chart_curves()
        if curves:
            self.log_figure(trainer, "val/information_curves", plot_estimate_curves(curves, titles),
                            what="estimates over training of " + ", ".join(titles.values()))
