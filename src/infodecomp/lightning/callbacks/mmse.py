"""``MMSECurveCallback``: conditional and unconditional MMSE against the Gaussian reference."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from typing_extensions import override

from infodecomp.evaluation import EvalBatch, gaussian_reference, mmse_result
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.plotting import plot_mmse_curves


class MMSECurveCallback(EvaluationCallback):
    """MMSE vs log-SNR as a figure (``val/mmse_curve``) and a table (``val/mmse_table``).

    The Gaussian reference is the MMSE of the best linear denoiser for the evaluation set's
    covariance, an upper bound on the true MMSE; the gap between conditional and
    unconditional curves, integrated, is the information the conditions carry.
    """

    def __init__(self, every_n_steps: int = 500, n_eval: int = 128, n_points: int = 25, logsnr_min: float = -10.0,
                 logsnr_max: float = 10.0, n_eps: int = 4, seed: int = 0) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        if n_points < 2 or not logsnr_min < logsnr_max:
            raise ValueError(f"need n_points >= 2 and logsnr_min < logsnr_max, got {n_points}, [{logsnr_min}, {logsnr_max}]")
        self.grid = torch.linspace(logsnr_min, logsnr_max, n_points)
        self.n_eps = n_eps

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        res = mmse_result(pl_module, batch, self.grid, n_eps=self.n_eps, seed=self.seed,
                          progress=self.show_progress(trainer))
        curves = {k: gather_cat(trainer, v) for k, v in res.curves.items()}  # (N, L) per sample
        reference = gaussian_reference(self.grid, gather_cat(trainer, batch.x.cpu()))  # of all the items
        mean = {k: v.double().mean(0) for k, v in curves.items()}
        se = {k: v.double().std(0) / max(v.shape[0], 1) ** 0.5 for k, v in curves.items()}
        fig = plot_mmse_curves(self.grid, mean, se=se, reference=reference,
                               title=f"MMSE, step {trainer.global_step}")
        self.log_figure(trainer, "val/mmse_curve", fig, what="MMSE curves, conditional and unconditional")
        rows = [[float(a), *(float(mean[k][i]) for k in mean), float(reference[i])]
                for i, a in enumerate(self.grid)]
        self.log_table(trainer, "val/mmse_table", ["logsnr", *mean, "gaussian_reference"], rows)
        self.result = {"mmse": {"logsnr": self.grid.tolist(), **{k: v.tolist() for k, v in mean.items()},
                                "gaussian_reference": reference.tolist()}}
