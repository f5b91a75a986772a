"""``LikelihoodCallback``: negative log-likelihood in bits/dim on validation data."""

from __future__ import annotations

import pytorch_lightning as pl
from typing_extensions import override

from infodecomp.evaluation import EvalBatch, mean_and_se, nll_bits_per_dim
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat


class LikelihoodCallback(EvaluationCallback):
    """Log ``val/nll_bpd`` (and ``val/nll_bpd_se``), the continuous density of the modelled
    values under the EMA model, unconditional (``conditional=False``) or given the conditions."""

    def __init__(self, every_n_steps: int = 500, n_eval: int = 256, n_draws: int = 32, conditional: bool = False,
                 seed: int = 0) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        self.n_draws, self.conditional = n_draws, conditional
        self.last: tuple[float, float] | None = None

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        est = nll_bits_per_dim(pl_module, batch, n_draws=self.n_draws, seed=self.seed,
                               cond=batch.cond if self.conditional else None, progress=self.show_progress(trainer))
        self.last = mean_and_se(gather_cat(trainer, est.value))
        self.log_scalars(trainer, {"val/nll_bpd": self.last[0], "val/nll_bpd_se": self.last[1]})
        self.result = {"nll_bpd": {"estimate": self.last[0], "se": self.last[1], "conditional": self.conditional}}
