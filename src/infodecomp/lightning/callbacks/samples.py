"""``SampleGridCallback``: generated samples per condition (deterministic DDIM on a log-SNR grid)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from typing_extensions import override

from infodecomp.evaluation import EvalBatch, sample_images, validation_batch
from infodecomp.lightning.callbacks.base import EvaluationCallback
from infodecomp.plotting import plot_sample_grid


class SampleGridCallback(EvaluationCallback):
    """One row of samples per condition of the first ``n_rows`` evaluation items (plus one
    unconditional row), from fixed noise, logged as ``val/samples``."""

    needs_images = True

    def __init__(self, every_n_steps: int = 500, n_rows: int = 4, per_row: int = 8, steps: int = 50,
                 seed: int = 0) -> None:
        super().__init__(every_n_steps, max(n_rows, 2), seed)
        self.n_rows, self.per_row, self.steps = n_rows, per_row, steps

    @override
    def eval_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> EvalBatch:
        return validation_batch(pl_module, trainer.datamodule, self.n_eval)  # rank zero draws them all

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        if not trainer.is_global_zero:
            return
        with self.status(trainer, f"sampling {self.n_rows + 1} rows of {self.per_row}"):
            self._sample(trainer, pl_module, batch)

    def _sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        rows, titles = [], []
        for i in range(min(self.n_rows, batch.x.shape[0])):
            cond = {k: v[i : i + 1].expand(self.per_row, *v.shape[1:]) for k, v in batch.cond.items()}
            rows.append(sample_images(pl_module, pl_module.input_shape, cond, self.per_row, steps=self.steps,
                                      seed=self.seed, device=pl_module.device))
            titles.append(batch.captions[i] if batch.captions else
                          ", ".join(f"{k}={int(v[i])}" for k, v in batch.cond.items() if v.ndim == 1))
        rows.append(sample_images(pl_module, pl_module.input_shape, None, self.per_row, steps=self.steps,
                                  seed=self.seed, device=pl_module.device))
        titles.append("unconditional")
        self.log_figure(trainer, "val/samples", plot_sample_grid(torch.cat(rows).cpu(), titles, ncol=self.per_row),
                        what="samples conditioned on " + "; ".join(titles))
