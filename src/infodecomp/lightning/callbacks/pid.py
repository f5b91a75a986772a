"""``PIDCallback``: redundant, unique and synergistic information of two conditions during training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from typing_extensions import override

from infodecomp.estimators.pid import ATOMS, INFORMATION, PID_MEASURES, PIDResult, assemble
from infodecomp.evaluation import (
    EvalBatch,
    mass_in_mask,
    mean_and_se,
    pid_estimates,
    pid_from_samples,
)
from infodecomp.interface import ground_truth_of
from infodecomp.lightning.callbacks.base import EvaluationCallback, gather_cat
from infodecomp.lightning.loggers import CURVE_FIELDS, log_curve_charts, publish_final
from infodecomp.plotting import plot_estimate_curves, plot_info_heatmaps

LABELS = {"redundancy": "R", "unique1": "U1", "unique2": "U2", "synergy": "S"}


class PIDCallback(EvaluationCallback):
    """Partial information decomposition of two conditioning variables (:mod:`infodecomp.estimators.pid`).

    Logs ``val/pid/<atom>`` with ``val/pid_se/<atom>`` for ``redundancy``, ``unique1``,
    ``unique2``, ``synergy`` and the informations ``i1``, ``i2``, ``i12`` they decompose; with an
    exact oracle from the data module also ``val/pid_oracle/<atom>`` (same draws) and the paired
    difference ``val/pid_minus_oracle/<atom>`` (the model's error; its SE in the table), and for a
    world that knows its atoms (:class:`~infodecomp.tasks.images.PIDWorld`) ``val/pid_true/<atom>``.
    With object masks, ``val/pid_mass/<atom>/<k>`` is the share of the atom's map inside object
    ``k`` (``val/pid_mass_oracle/<atom>/<k>`` for the oracle). A figure ``val/pid_maps`` (image | R | U1 | U2 | S, model then oracle) and the table
    ``val/pid_table`` go to W&B and to the run directory. With W&B, each evaluation during training
    also logs a chart ``charts/pid/<quantity>`` of the estimate over training (SE band, exact
    value, oracle on the same draws), and the run summary gets ``final/pid/<quantity>`` (with
    ``_se``, ``_true``, ``_oracle``); at the end of training the same curves go to
    ``<run>/figures/val_pid_curves_step*.png``.

    Args:
        variables: the two conditions (default: the model's first two).
        given: conditions held fixed (the conditional PID), or ``"rest"`` for all the others;
            default none (the plain PID against the unconditional model).
        measure: ``"pointwise-min"`` (default) or ``"mmi"``.
        n_draws: ``(alpha, eps)`` draws per item; each costs four conditions, one forward.
        n_images: rows of the map figure.
    """

    needs_conditions = True

    def __init__(self, every_n_steps: int = 500, n_eval: int = 64, n_draws: int = 16, seed: int = 0,
                 variables: Sequence[str] | None = None, given: Sequence[str] | str = (),
                 measure: str = "pointwise-min", n_images: int = 4) -> None:
        super().__init__(every_n_steps, n_eval, seed)
        if measure not in PID_MEASURES:
            raise ValueError(f"measure must be one of {PID_MEASURES}, got {measure!r}")
        if variables is not None and (len(variables) != 2 or variables[0] == variables[1]):
            raise ValueError(f"PIDCallback needs two different variables, got {list(variables)}")
        if n_draws < 4:
            raise ValueError(f"n_draws must be >= 4, got {n_draws}")
        self.variables = list(variables) if variables is not None else None
        self.given: list[str] | str = given if given == "rest" else list(given)
        self.measure, self.n_draws, self.n_images = measure, n_draws, n_images
        self.last: dict[str, Any] = {}
        self.curves: dict[str, dict[str, list]] = {}  # per quantity, its curve over training (CURVE_FIELDS)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.enabled:
            return
        spec = list(pl_module.condition_spec)
        if self.variables is None:
            if len(spec) < 2:
                raise ValueError(f"PIDCallback needs a model with two conditioning variables, this one has {spec}")
            self.variables = spec[:2]
        if self.given == "rest":
            self.given = [v for v in spec if v not in self.variables]
        unknown = [v for v in (*self.variables, *self.given) if v not in spec]
        if unknown:
            raise ValueError(f"PIDCallback variables {unknown} are not model conditions {spec}")
        if set(self.given) & set(self.variables):
            raise ValueError(f"PIDCallback: {self.variables} cannot also be given ({self.given})")

    def _decompose(self, trainer: pl.Trainer, denoiser: Any, batch: EvalBatch, cond: Any,
                   progress: bool) -> tuple[PIDResult, dict[str, torch.Tensor]]:
        raw = pid_estimates(denoiser, batch, *self.variables, given=self.given, measure=self.measure,
                            reduction="pixel", n_draws=self.n_draws, seed=self.seed, cond=cond, progress=progress)
        nfe = next(iter(raw.values())).nfe
        totals = {k: gather_cat(trainer, e.value.flatten(1).sum(1).cpu()) for k, e in raw.items()}
        result = pid_from_samples(totals, self.measure, nfe)
        # the maps follow the gathered choice of weaker condition (mmi), so every process agrees
        maps = assemble(self.measure, raw, weaker=result.weaker)
        return result, {a: maps.atoms[a].value for a in ATOMS}

    @override
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        show = self.show_progress(trainer)
        model, model_maps = self._decompose(trainer, pl_module, batch, None, show)
        gt = ground_truth_of(trainer.datamodule)
        oracle = oracle_maps = None
        names = [*self.variables, *self.given]
        if gt is not None and gt.oracle is not None and batch.oracle_cond and all(v in batch.oracle_cond for v in names):
            oracle_cond = {k: v.to(batch.x.device) for k, v in batch.oracle_cond.items() if k in names}
            oracle, oracle_maps = self._decompose(trainer, gt.oracle, batch, oracle_cond, show)
        world = getattr(trainer.datamodule, "world", None)
        truth = None
        if hasattr(world, "exact_pid") and self.variables == ["y1", "y2"] and not self.given:
            truth = world.exact_pid(self.measure)
        metrics: dict[str, float] = {"val/pid_nfe": model.nfe}
        rows = []
        for name in (*INFORMATION, *ATOMS):
            est = {**model.information, **model.atoms}[name]
            row = {"quantity": name, "estimate": float(est.value), "se": float(est.se)}
            metrics[f"val/pid/{name}"], metrics[f"val/pid_se/{name}"] = row["estimate"], row["se"]
            if oracle is not None:
                o = {**oracle.information, **oracle.atoms}[name]
                row["oracle"] = metrics[f"val/pid_oracle/{name}"] = float(o.value)
                # the model's error, paired on the same items and draws (their Monte-Carlo error is shared)
                d = model.info["per_item"][name] - oracle.info["per_item"][name]
                row["minus_oracle"], row["minus_oracle_se"] = mean_and_se(d)
                metrics[f"val/pid_minus_oracle/{name}"] = row["minus_oracle"]
            if truth is not None:
                row["truth"] = metrics[f"val/pid_true/{name}"] = truth[name]
            rows.append(row)
        mass, oracle_mass = {}, {}
        if batch.masks is not None:
            mass = self._mass(trainer, model_maps, batch.masks)
            oracle_mass = self._mass(trainer, oracle_maps, batch.masks) if oracle_maps else {}
            for atom, per in mass.items():
                for k, (share, _) in per.items():
                    metrics[f"val/pid_mass/{atom}/{k}"] = share
                    if oracle_mass:
                        metrics[f"val/pid_mass_oracle/{atom}/{k}"] = oracle_mass[atom][k][0]
        self.log_scalars(trainer, metrics)
        columns = ["quantity", "estimate", "se", "oracle", "minus_oracle", "minus_oracle_se", "truth"]
        self.log_table(trainer, "val/pid_table", columns, [[r.get(c) for c in columns] for r in rows])
        k = min(self.n_images, batch.x.shape[0])
        fig = plot_info_heatmaps(
            batch.x[:k].cpu(), {LABELS[a]: m[:k].cpu() for a, m in model_maps.items()},
            oracle_maps={LABELS[a]: m[:k].cpu() for a, m in oracle_maps.items()} if oracle_maps else None,
            masks=batch.masks[:k].any(dim=1).cpu() if batch.masks is not None else None,
            titles=batch.captions[:k] if batch.captions else None, shared_scale=True,
        )
        self.log_figure(trainer, "val/pid_maps", fig, what=f"PID maps (R, U1, U2, S) of {' and '.join(self.variables)}"
                        + (f" given {', '.join(self.given)}" if self.given else ""))
        if trainer.state.fn == TrainerFn.FITTING:
            for r in rows:
                curve = self.curves.setdefault(r["quantity"], {k: [] for k in CURVE_FIELDS})
                for k, v in zip(CURVE_FIELDS, (trainer.global_step, r["estimate"], r["se"], r.get("truth"),
                                               r.get("oracle")), strict=True):
                    curve[k].append(v)
            for run in self.wandb_runs(trainer):
                log_curve_charts(run, *self.chart_curves(), step=trainer.global_step)
        self.last = self.result = {"pid": {
            "variables": list(self.variables), "given": list(self.given), "measure": self.measure,
            "weaker": model.weaker, "nfe": model.nfe, "n_draws": self.n_draws,
            "n_eval": int(model.information["i1"].n_samples), "rows": rows, "mass_in_objects": mass,
            "oracle_mass_in_objects": oracle_mass,
        }}

    def chart_curves(self) -> tuple[dict[str, dict[str, list]], dict[str, str]]:
        """Each quantity's curve over training, as ``pid/<quantity>``, and its title."""
        v1, v2 = self.variables or ("y1", "y2")
        names = {"i1": f"I(x; {v1})", "i2": f"I(x; {v2})", "i12": f"I(x; {v1}, {v2})", "redundancy": "redundancy",
                 "unique1": f"unique to {v1}", "unique2": f"unique to {v2}", "synergy": "synergy"}
        given = f" | {', '.join(self.given)}" if self.given else ""
        curves = {f"pid/{q}": c for q, c in self.curves.items()}
        return curves, {f"pid/{q}": f"PID {names.get(q, q)}{given} (nats)" for q in self.curves}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"curves": self.curves}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curves = {q: {k: list(c[k]) for k in CURVE_FIELDS} for q, c in state_dict.get("curves", {}).items()}

    @override
    def finalize(self, trainer: pl.Trainer) -> None:
        """The final atoms in the W&B run summary, and their curves over training as a figure."""
        if not trainer.is_global_zero or not self.last:
            return
        for run in self.wandb_runs(trainer):
            publish_final(run, pid=self.last["pid"]["rows"])
        if self.curves:
            curves, titles = self.chart_curves()
            self.log_figure(trainer, "val/pid_curves", plot_estimate_curves(curves, titles, ncol=4),
                            what="PID estimates over training")

    @staticmethod
    def _mass(trainer: pl.Trainer, maps: dict[str, torch.Tensor], masks: torch.Tensor) -> dict:
        """``{atom: {object k: (mean, SE)}}``: the share of each atom's positive mass inside each
        object, over the (gathered) evaluation set."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for atom, m in maps.items():
            for k in range(masks.shape[1]):
                share = mass_in_mask(m.clamp_min(0), masks[:, k].to(m.device))
                out.setdefault(atom, {})[str(k)] = mean_and_se(gather_cat(trainer, share.cpu()))
        return out
