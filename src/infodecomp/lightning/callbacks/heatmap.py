"""``InfoHeatmapCallback``: where in the image the information about each variable lives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
from typing_extensions import override

from infodecomp.evaluation import (
    EvalBatch,
    information_estimates,
    map_correlation,
    mass_in_mask,
    mean_and_se,
)
from infodecomp.interface import ground_truth_of
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.plotting import plot_info_heatmaps


class InfoHeatmapCallback(EvaluationCallback):
    """Per-pixel information maps (channels summed) for each conditioning variable.

    Logs a grid ``image | model map per variable | oracle map per variable`` as
    ``val/heatmap/<kind>`` and, when the data carry object masks, the fraction of each map's
    mass inside the object, ``val/heatmap_mass_in_mask/<v>`` (over the whole evaluation set).
    Where the data module has an exact oracle, its maps on the same draws give the same share
    (``val/heatmap_mass_in_mask_oracle/<v>``) and each image's Pearson correlation between the
    model's map and the exact one, averaged (``val/heatmap_oracle_r/<v>``).

    Args:
        kind: ``"cmi"`` (``I(x; v | other variables)``, default) or ``"mi"``.
        n_images: rows shown in the figure.
        n_draws: ``(alpha, eps)`` draws per item.
    """

    needs_conditions = True
    needs_images = True

    def __init__(self, every_n_steps: int = 500, n_eval: int = 64, n_images: int = 6, n_draws: int = 32,
                 kind: Literal["cmi", "mi"] = "cmi", seed: int = 0, variables: Sequence[str] | None = None) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        if kind not in ("cmi", "mi"):
            raise ValueError(f"kind must be 'cmi' or 'mi', got {kind!r}")
        self.kind, self.n_images, self.n_draws = kind, n_images, n_draws
        self.variables = list(variables) if variables else None
        self.last_mass: dict[str, float] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.enabled:
            return
        if self.variables is None:
            self.variables = list(pl_module.condition_spec)

    def _maps(self, denoiser, batch: EvalBatch, cond=None, progress: bool = False) -> dict:  # noqa: ANN001
        kind = self.kind if len(self.variables) > 1 else "mi"
        est = information_estimates(denoiser, batch, self.variables, reduction="pixel", n_draws=self.n_draws,
                                    seed=self.seed, cond=cond, progress=progress)
        return {v: est[f"{kind}/{v}"].value for v in self.variables}

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        show = self.show_progress(trainer)
        maps = self._maps(pl_module, batch, progress=show)
        gt = ground_truth_of(trainer.datamodule)
        oracle_maps = None
        if gt is not None and gt.oracle is not None and batch.oracle_cond:
            oracle_cond = {k: v.to(batch.x.device) for k, v in batch.oracle_cond.items() if k in self.variables}
            oracle_maps = self._maps(gt.oracle, batch, cond=oracle_cond, progress=show)
        kind = self.kind if len(self.variables) > 1 else "mi"
        n_images = int(gather_cat(trainer, batch.sample_ids.cpu()).shape[0])
        self.result = {"heatmaps": {"kind": kind, "n_images": n_images}}
        metrics = {}
        if batch.masks is not None:
            obj = batch.masks.any(dim=1).to(batch.x.device)  # (B, H, W): every object of the image
            share: dict[str, dict[str, tuple[float, float]]] = {"mass_in_mask": {}, "oracle_mass_in_mask": {}}
            for v, m in maps.items():
                share["mass_in_mask"][v] = mean_and_se(gather_cat(trainer, mass_in_mask(m, obj).cpu()))
                self.last_mass[v] = share["mass_in_mask"][v][0]
                metrics[f"val/heatmap_mass_in_mask/{v}"] = self.last_mass[v]
                if oracle_maps is not None:
                    share["oracle_mass_in_mask"][v] = mean_and_se(
                        gather_cat(trainer, mass_in_mask(oracle_maps[v], obj).cpu()))
                    metrics[f"val/heatmap_mass_in_mask_oracle/{v}"] = share["oracle_mass_in_mask"][v][0]
            self.result["heatmaps"].update({k: v for k, v in share.items() if v})
        if oracle_maps is not None:
            r = {v: mean_and_se(gather_cat(trainer, map_correlation(m, oracle_maps[v]).cpu())) for v, m in maps.items()}
            self.result["heatmaps"]["oracle_correlation"] = r
            metrics.update({f"val/heatmap_oracle_r/{v}": mean for v, (mean, _) in r.items()})
        self.log_scalars(trainer, metrics)
        k = min(self.n_images, batch.x.shape[0])
        fig = plot_info_heatmaps(
            batch.x[:k].cpu(), {v: m[:k].cpu() for v, m in maps.items()},
            oracle_maps={v: m[:k].cpu() for v, m in oracle_maps.items()} if oracle_maps else None,
            masks=batch.masks[:k].any(dim=1).cpu() if batch.masks is not None else None,
            titles=batch.captions[:k] if batch.captions else None,
        )
        self.log_figure(trainer, f"val/heatmap/{self.kind}", fig,
                        what=f"{kind.upper()} maps of " + ", ".join(self.variables) + (" (model, then exact oracle)"
                                                                                      if oracle_maps else ""))
