"""``TextProbeCallback``: word heatmaps and compositional accuracy of a text model while it trains."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from typing_extensions import override

from infodecomp.evaluation import EvalBatch
from infodecomp.interface import CaptionedWorld, TextDenoiser
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.plotting import plot_word_maps
from infodecomp.probes import TextModel, compositional_accuracy, word_heatmaps
from infodecomp.probes.compositional import shapes_perturbations
from infodecomp.probes.runners import PROBES, mask_shares, word_masks


class TextProbeCallback(EvaluationCallback):
    """Runs text probes on a fixed set of captioned validation images.

    ``heatmap`` logs a figure of every word's CMI map (``val/word_heatmaps``) and, when the
    data module's world knows which object each word describes, the share of colour and shape
    words' maps inside their object (``val/word_mass_in_mask/{colour,shape}``).
    ``compositional`` logs the accuracy of the true caption against attribute swaps, relation
    swaps and shuffles (``val/compositional/<perturbation>/<score>``) on two-object captions.
    ``localize`` logs the mIoU of object words' masks per method (``val/localization/<method>``)
    and ``intervene`` the correlation of the pixel change after omitting a word with its CMI map
    and with attention (``val/intervention/<level>/<map>``); both need a world with object masks
    and are computed by rank zero on the whole evaluation set, so any number of processes logs
    the same values. Defaults: heatmap and compositional (the other two cost more).

    Args:
        probes: any of ``("heatmap", "compositional", "localize", "intervene")``.
        n_images: rows shown in the figure.
        n_draws: ``(alpha, eps)`` draws per item.
    """

    needs_conditions = True

    def __init__(self, every_n_steps: int = 0, n_eval: int = 32, n_images: int = 4, n_draws: int = 16,
                 probes: Sequence[str] = ("heatmap", "compositional"), seed: int = 0) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        bad = [p for p in probes if p not in PROBES]
        if bad or not probes:
            raise ValueError(f"probes must be a non-empty subset of {PROBES}, got {list(probes)}")
        self.probes, self.n_images, self.n_draws = tuple(probes), n_images, n_draws
        self.last: dict[str, float] = {}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.enabled:
            TextModel.from_module(pl_module)  # a clear error for a model without text conditioning

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        if not batch.captions:
            raise ValueError("TextProbeCallback needs captioned validation data (a 'captions' field)")
        model = TextModel.from_module(pl_module)
        world = getattr(trainer.datamodule, "world", None)
        metrics: dict[str, float] = {}
        if "heatmap" in self.probes:
            wm = word_heatmaps(model, batch.x, batch.captions, kinds=("cmi",), n_draws=self.n_draws, seed=self.seed,
                               sample_ids=batch.sample_ids)
            masks = None
            if isinstance(world, CaptionedWorld) and batch.masks is not None:
                masks, has = word_masks(world, wm.captions, batch.masks.cpu(), wm.positions)
                for t, share in mask_shares(wm, masks, has).items():
                    values = gather_cat(trainer, share)
                    values = values[torch.isfinite(values)]
                    if len(values):
                        metrics[f"val/word_mass_in_mask/{t}"] = self.last[t] = float(values.mean())
            k = min(self.n_images, batch.x.shape[0])
            fig = plot_word_maps(batch.x[:k].cpu(), wm.words[:k], wm.cmi[:k].cpu(), captions=wm.captions[:k],
                                 masks=masks[:k] if masks is not None else None)
            self.log_figure(trainer, "val/word_heatmaps", fig, what="CMI maps of each word of " + "; ".join(wm.captions[:k]))
        if "compositional" in self.probes:
            try:
                shapes_perturbations(batch.captions[0], random.Random(0))
            except ValueError:
                pass  # not two-object captions: nothing to perturb
            else:
                r = compositional_accuracy(model, batch.x, batch.captions, n_draws=self.n_draws, seed=self.seed,
                                           sample_ids=batch.sample_ids)
                for kind, per in r.correct.items():
                    for score, c in per.items():
                        values = gather_cat(trainer, torch.tensor(c, dtype=torch.float64))
                        key = f"val/compositional/{kind.replace(' ', '_')}/{score}"
                        metrics[key] = self.last[f"{kind}/{score}"] = float(values.mean())
        if {"localize", "intervene"} & set(self.probes) and trainer.is_global_zero:
            metrics.update(self._rank_zero_probes(trainer, pl_module, model))
        self.log_scalars(trainer, metrics)

    def _rank_zero_probes(self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: TextDenoiser) -> dict:
        from infodecomp.evaluation import validation_batch
        from infodecomp.lightning.callbacks.base import run_dir
        from infodecomp.probes.runners import ProbeSettings, Scenes, probe_intervene, probe_localize

        world = getattr(trainer.datamodule, "world", None)
        if not isinstance(world, CaptionedWorld):
            raise ValueError("the localize and intervene probes need a world with object masks (e.g. "
                             "ShapesDataModule with captions: true)")
        full = validation_batch(pl_module, trainer.datamodule, self.n_eval)  # every item, on rank zero
        scenes = Scenes(full.x, list(full.captions), full.masks, world, image_ids=full.sample_ids.tolist())
        settings = ProbeSettings(n_items=len(scenes.captions), n_draws=self.n_draws, seed=self.seed,
                                 n_figure=self.n_images, steps=25, n_boot=200, progress=False)
        out = run_dir(trainer) / "figures" / f"probes_step{trainer.global_step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        metrics = {}
        if "localize" in self.probes:
            loc = probe_localize(model, scenes, settings)
            loc.save_figures(out)
            for method, value in loc.values["miou"].items():
                metrics[f"val/localization/{method.replace(' ', '_')}"] = self.last[f"miou/{method}"] = value
        if "intervene" in self.probes:
            inter = probe_intervene(model, scenes, settings)
            inter.save_figures(out)
            for level in ("pixel", "image"):
                for name, c in inter.values[level].items():
                    metrics[f"val/intervention/{level}/{name}"] = self.last[f"{level}/{name}"] = c["value"]
        return metrics
