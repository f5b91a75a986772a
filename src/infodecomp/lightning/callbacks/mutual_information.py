"""``MutualInformationCallback``: MI and CMI of each conditioning variable during training."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from typing_extensions import override

from infodecomp.evaluation import EvalBatch, information_estimates, summarise
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.plotting import plot_information_bars


class MutualInformationCallback(EvaluationCallback):
    """Log ``I(x; v)`` and ``I(x; v | other variables)`` for each conditioning variable ``v``.

    Keys: ``val/mi/<v>``, ``val/mi_se/<v>``, ``val/cmi/<v>``, ``val/cmi_se/<v>``, ``val/info_nfe``;
    with ground truth from the data module also ``val/mi_true/<v>``, ``val/mi_abs_error/<v>`` and
    ``val/mi_oracle/<v>`` (the exact oracle on the same draws, which separates model error from
    Monte-Carlo error), likewise for ``cmi``. Estimators after the first are computed on the
    same draws at no extra denoiser cost and logged as ``val/mi_<estimator>/<v>`` and so on. At
    the end of training the table goes to the W&B run summary and to ``<run>/tables``.

    Args:
        variables: which conditioning variables (default: all the model takes).
        n_draws: ``(alpha, eps)`` draws per item.
        estimators: ``"orthogonal"`` (the paper's, lowest variance) and/or ``"standard"`` (the
            difference of denoising errors: errors that both predictions share cancel, so it is
            the less biased one for a trained model whose branches are imperfect).
    """

    needs_conditions = True

    def __init__(self, every_n_steps: int = 250, n_eval: int = 256, n_draws: int = 32, seed: int = 0,
                 variables: Sequence[str] | None = None,
                 estimators: Sequence[str] = ("orthogonal", "standard")) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        if n_draws < 4:
            raise ValueError(f"n_draws must be >= 4, got {n_draws}")
        bad = [e for e in estimators if e not in ("orthogonal", "standard")]
        if bad or not estimators or len(set(estimators)) != len(estimators):
            raise ValueError(f"estimators must be distinct names from ('orthogonal', 'standard'), got {list(estimators)}")
        self.estimators = tuple(estimators)
        self.n_draws, self.variables = n_draws, list(variables) if variables else None
        self.final_rows: list[dict] = []
        self.last_rows: list[dict] = []

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
        est = information_estimates(pl_module, batch, self.variables, n_draws=self.n_draws, seed=self.seed,
                                    estimators=self.estimators)
        per_sample = {k: gather_cat(trainer, e.value) for k, e in est.items()}
        gt = trainer.datamodule.ground_truth() if hasattr(trainer.datamodule, "ground_truth") else None
        oracle = None
        if gt is not None and gt.oracle is not None and batch.oracle_cond:
            oracle_cond = {k: v.to(batch.x.device) for k, v in batch.oracle_cond.items() if k in self.variables}
            oracle_est = information_estimates(gt.oracle, batch, self.variables, n_draws=self.n_draws,
                                               seed=self.seed, cond=oracle_cond, estimators=self.estimators)
            oracle = {k: gather_cat(trainer, e.value) for k, e in oracle_est.items()}
        first = next(iter(est.values()))
        rows = summarise(per_sample, first.nfe, truth=gt, oracle=oracle,
                         logsnr_range=(first.logsnr_range.low, first.logsnr_range.high))
        metrics = {"val/info_nfe": first.nfe}
        for r in rows:
            r.estimator = r.name.split("@", 1)[1] if "@" in r.name else self.estimators[0]
            kind = f"{r.kind}_{r.estimator}" if "@" in r.name else r.kind
            metrics[f"val/{kind}/{r.variable}"] = r.estimate
            metrics[f"val/{kind}_se/{r.variable}"] = r.se
            metrics[f"val/{kind}_true/{r.variable}"] = r.truth
            metrics[f"val/{kind}_abs_error/{r.variable}"] = r.abs_error
            metrics[f"val/{kind}_oracle/{r.variable}"] = r.oracle_estimate
        self.log_scalars(trainer, metrics)
        table = [r.to_dict() for r in rows]
        self.log_table(trainer, "val/information_table", list(table[0]),
                       [[v if not isinstance(v, tuple) else list(v) for v in t.values()] for t in table])
        self.log_figure(trainer, "val/information", plot_information_bars(table, title=f"step {trainer.global_step}"))
        self.last_rows = table

    @override
    def finalize(self, trainer: pl.Trainer) -> None:
        """The last table becomes the final one: W&B run summary keys ``final/<kind>/<v>``."""
        self.final_rows = table = self.last_rows
        if not trainer.is_global_zero:
            return
        from pytorch_lightning.loggers import WandbLogger

        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                for r in table:
                    lg.experiment.summary[f"final/{r['name']}"] = r["estimate"]
                    if r.get("truth") is not None:
                        lg.experiment.summary[f"final/{r['name']}_true"] = r["truth"]
