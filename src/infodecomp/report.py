"""Post-hoc analysis of a trained run: the same estimators as the callbacks, a larger budget,
and a report directory (``report.json``, PNG figures, ``report.md``).

The report is written into a temporary directory next to the target and moved into place at
the end, so a failure never leaves a half-written report, and an existing report is only
replaced with ``overwrite=True``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infodecomp.analysis.common import analysis_run, load_run, write_atomically
from infodecomp.evaluation import (
    EvalBatch,
    information_density,
    information_estimates,
    mass_in_mask,
    mean_and_se,
    mmse_result,
    nll_bits_per_dim,
    sample_images,
    summarise,
    validation_batch,
)
from infodecomp.lightning.module import DiffusionModule
from infodecomp.plotting import (
    close,
    plot_info_heatmaps,
    plot_information_bars,
    plot_information_density,
    plot_metric_history,
    plot_mmse_curves,
    plot_sample_grid,
)

log = logging.getLogger(__name__)


@dataclass
class ReportSettings:
    n_eval: int = 256
    n_draws: int = 32
    n_heatmap: int = 64
    n_images: int = 8
    mmse_points: int = 33
    seed: int = 0
    samples: bool = True


def _subset(b: EvalBatch, n: int) -> EvalBatch:
    return EvalBatch(b.x[:n], {k: v[:n] for k, v in b.cond.items()}, b.sample_ids[:n],
                     None if b.masks is None else b.masks[:n], None if b.captions is None else b.captions[:n],
                     None if b.oracle_cond is None else {k: v[:n] for k, v in b.oracle_cond.items()})


def read_history(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (steps, values)}`` of the ``val/mi/*`` and ``val/cmi/*`` curves in metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    hist: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k and (k.startswith("val/mi/") or k.startswith("val/cmi/")) and v not in (None, ""):
                    steps, vals = hist.setdefault(k, ([], []))
                    steps.append(int(row["step"]))
                    vals.append(float(v))
    return hist


def make_report(
    path: str | Path, out: str | Path | None = None, *, config: str | Path | None = None, overwrite: bool = False,
    settings: ReportSettings | None = None, progress: bool = True, wandb: bool = False,
) -> Path:
    """Analyse a run and write its report directory; returns the directory."""
    settings = settings or ReportSettings()
    module, dm, ckpt, cfg_path = load_run(path, config)
    run = cfg_path.parent
    out = Path(out) if out is not None else run / "report"

    def fill(tmp: Path) -> dict:
        result = _compute(module, dm, settings, tmp, run, progress)
        result.update({"checkpoint": str(ckpt), "config": str(cfg_path)})
        (tmp / "report.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "report.md").write_text(render_markdown(result))
        return result

    result = write_atomically(out, fill, overwrite=overwrite)
    if wandb:
        log_report_to_wandb(out, result)
    return out


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=110)
    close(fig)
    return path.name


def _compute(module: DiffusionModule, dm: Any, s: ReportSettings, out: Path, run: Path, progress: bool) -> dict:
    start = time.perf_counter()
    module.eval()
    variables = list(module.condition_spec)
    gt = dm.ground_truth() if hasattr(dm, "ground_truth") else None
    batch = validation_batch(module, dm, s.n_eval)
    result: dict[str, Any] = {"model": module.hparams["backbone"]["class_path"], "variables": variables,
                              "n_eval": int(batch.x.shape[0]), "n_draws": s.n_draws, "figures": {}}
    with torch.no_grad():
        if variables:
            both = ("orthogonal", "standard")
            est = information_estimates(module, batch, variables, n_draws=s.n_draws, seed=s.seed, progress=progress,
                                        estimators=both)
            oracle = None
            oracle_cond = ({k: v for k, v in batch.oracle_cond.items() if k in variables}
                           if gt is not None and gt.oracle is not None and batch.oracle_cond else None)
            if oracle_cond:
                o = information_estimates(gt.oracle, batch, variables, n_draws=s.n_draws, seed=s.seed,
                                          cond=oracle_cond, progress=progress, estimators=both)
                oracle = {k: e.value for k, e in o.items()}
            first = next(iter(est.values()))
            rows = [r.to_dict() for r in summarise({k: e.value for k, e in est.items()}, first.nfe, truth=gt,
                                                   oracle=oracle, logsnr_range=(first.logsnr_range.low,
                                                                                first.logsnr_range.high))]
            result["information"] = rows
            result["figures"]["information"] = _save(plot_information_bars(rows, title="Information per variable"),
                                                     out / "information.png")
            db = _subset(batch, min(64, batch.x.shape[0]))
            dgrid = torch.linspace(-10, 12, 23)
            dens = information_density(module, db, variables, dgrid, n_eps=2, seed=s.seed)
            odens = (information_density(gt.oracle, db, variables, dgrid, n_eps=2, seed=s.seed,
                                         cond={k: v[: db.x.shape[0]] for k, v in oracle_cond.items()})
                     if oracle_cond else None)
            result["information_density"] = {"logsnr": dgrid.tolist(), "model": {k: v.tolist() for k, v in dens.items()},
                                              "oracle": {k: v.tolist() for k, v in odens.items()} if odens else None}
            result["figures"]["density"] = _save(plot_information_density(dgrid, dens, odens), out / "density.png")
            if len(module.input_shape) == 3:
                hb = _subset(batch, s.n_heatmap)
                kind = "cmi" if len(variables) > 1 else "mi"
                maps = information_estimates(module, hb, variables, reduction="pixel", n_draws=s.n_draws,
                                             seed=s.seed, progress=progress)
                model_maps = {v: maps[f"{kind}/{v}"].value for v in variables}
                oracle_maps = None
                if oracle_cond:
                    om = information_estimates(gt.oracle, hb, variables, reduction="pixel", n_draws=s.n_draws,
                                               seed=s.seed, cond={k: v[: hb.x.shape[0]] for k, v in oracle_cond.items()},
                                               progress=progress)
                    oracle_maps = {v: om[f"{kind}/{v}"].value for v in variables}
                heat = {"kind": kind, "n_images": int(hb.x.shape[0])}
                if hb.masks is not None:
                    obj = hb.masks.any(dim=1)
                    heat["mass_in_mask"] = {v: mean_and_se(mass_in_mask(m, obj)) for v, m in model_maps.items()}
                    if oracle_maps:
                        heat["oracle_mass_in_mask"] = {v: mean_and_se(mass_in_mask(m, obj)) for v, m in oracle_maps.items()}
                result["heatmaps"] = heat
                k = min(s.n_images, hb.x.shape[0])
                fig = plot_info_heatmaps(hb.x[:k], {v: m[:k] for v, m in model_maps.items()},
                                         oracle_maps={v: m[:k] for v, m in oracle_maps.items()} if oracle_maps else None,
                                         masks=hb.masks[:k].any(dim=1) if hb.masks is not None else None,
                                         titles=hb.captions[:k] if hb.captions else None)
                result["figures"]["heatmaps"] = _save(fig, out / "heatmaps.png")
        grid = torch.linspace(-10, 10, s.mmse_points)
        mb = _subset(batch, min(64, batch.x.shape[0]))
        mm = mmse_result(module, mb, grid, n_eps=4, seed=s.seed)
        result["mmse"] = {"logsnr": grid.tolist(), **{k: v.double().mean(0).tolist() for k, v in mm.curves.items()},
                          "gaussian_reference": mm.gaussian_reference.tolist()}
        result["figures"]["mmse"] = _save(plot_mmse_curves(grid, {k: v.double().mean(0) for k, v in mm.curves.items()},
                                                           reference=mm.gaussian_reference), out / "mmse.png")
        nll = nll_bits_per_dim(module, batch, n_draws=s.n_draws, seed=s.seed)
        result["nll_bpd"] = dict(zip(("estimate", "se"), mean_and_se(nll.value), strict=True))
        if s.samples and len(module.input_shape) == 3:
            rows_img, titles = [], []
            for i in range(min(4, batch.x.shape[0])):
                cond = {k: v[i : i + 1].expand(8, *v.shape[1:]) for k, v in batch.cond.items()}
                rows_img.append(sample_images(module, module.input_shape, cond, 8, seed=s.seed))
                titles.append(batch.captions[i] if batch.captions else f"item {i}")
            result["figures"]["samples"] = _save(plot_sample_grid(torch.cat(rows_img), titles), out / "samples.png")
    hist = read_history(run)
    if hist:
        truth = {}
        if gt is not None:
            truth = {f"val/mi/{k}": v for k, v in gt.mutual_information.items()}
            truth.update({f"val/cmi/{k}": v for k, v in gt.conditional_mutual_information.items()})
        mi_keys = [k for k in hist if k.startswith("val/mi/")]
        fig = plot_metric_history({k: hist[k][0] for k in mi_keys}, {k: hist[k][1] for k in mi_keys},
                                  truth=truth, title="MI during training")
        result["figures"]["history"] = _save(fig, out / "mi_history.png")
        result["history"] = {k: {"steps": v[0], "values": v[1]} for k, v in hist.items()}
    result["seconds"] = time.perf_counter() - start
    return result


def render_markdown(r: Mapping[str, Any]) -> str:
    """A report a person can read, with the figures embedded."""
    lines = ["# infodecomp report", "", f"- checkpoint: `{r['checkpoint']}`", f"- model: `{r['model']}`",
             f"- evaluation set: {r['n_eval']} validation items, {r['n_draws']} log-SNR draws each", ""]
    if r.get("information"):
        lines += ["## Information per conditioning variable (nats)", "",
                  "| quantity | estimator | estimate ± SE | exact | relative error | oracle, same draws |",
                  "|---|---|---|---|---|---|"]
        for row in r["information"]:
            exact = f"{row['truth']:.4f}" if row.get("truth") is not None else "—"
            rel = f"{100 * row['rel_error']:.1f}%" if row.get("rel_error") is not None else "—"
            orc = f"{row['oracle_estimate']:.4f} ± {row['oracle_se']:.4f}" if row.get("oracle_estimate") is not None else "—"
            label = f"I(x; {row['variable']})" if row["kind"] == "mi" else f"I(x; {row['variable']} | rest)"
            lines.append(f"| {label} | {row['estimator']} | {row['estimate']:.4f} ± {row['se']:.4f} | {exact} | {rel} | {orc} |")
        lines += ["", "The orthogonal estimator adds any disagreement between a trained model's conditional and",
                  "unconditional predictions, errors included; the standard one lets errors of similar size",
                  "cancel. The density plot shows at which noise levels the model gains or loses information",
                  "relative to the exact oracle.", "", "![information](information.png)", "",
                  "![density](density.png)", ""]
    if r.get("heatmaps"):
        h = r["heatmaps"]
        lines += [f"## Where the information lives ({h['kind'].upper()} maps, {h['n_images']} images)", ""]
        if "mass_in_mask" in h:
            lines += ["| variable | map mass inside the object (model) | (exact oracle) |", "|---|---|---|"]
            for v, (m, se) in h["mass_in_mask"].items():
                o = h.get("oracle_mass_in_mask", {}).get(v)
                lines.append(f"| {v} | {100 * m:.1f}% ± {100 * se:.1f} | {'—' if o is None else f'{100 * o[0]:.1f}%'} |")
            lines.append("")
            if "oracle_mass_in_mask" in h:
                lines += ["A variable is told apart where its possible values would draw different pixels: for",
                          "shape or position that is partly where the object is *not* drawn, so even the exact",
                          "maps keep part of their mass outside the mask. Compare the model with the oracle column.",
                          ""]
        lines += ["![heatmaps](heatmaps.png)", ""]
    if "history" in r.get("figures", {}):
        lines += ["## MI during training (dashed: exact)", "", "![history](mi_history.png)", ""]
    lines += ["## MMSE curves", "", "![mmse](mmse.png)", "",
              f"Negative log-likelihood: {r['nll_bpd']['estimate']:.4f} ± {r['nll_bpd']['se']:.4f} bits/dim "
              "(continuous density of the modelled values).", ""]
    if "samples" in r.get("figures", {}):
        lines += ["## Samples (deterministic DDIM on a log-SNR grid)", "", "![samples](samples.png)", ""]
    lines.append(f"_Computed in {r['seconds']:.0f} s._")
    return "\n".join(lines) + "\n"


def log_report_to_wandb(out: Path, result: Mapping[str, Any]) -> None:
    """Log the report's tables and figures as a W&B run (offline without credentials)."""
    import wandb

    run = analysis_run(out, "analysis", {"checkpoint": result["checkpoint"]})
    if result.get("information"):
        cols = ["name", "estimate", "se", "truth", "oracle_estimate"]
        run.log({"report/information": wandb.Table(columns=cols, data=[[row.get(c) for c in cols] for row in result["information"]])})
        for row in result["information"]:
            run.summary[f"report/{row['name']}"] = row["estimate"]
    for name, file in result.get("figures", {}).items():
        run.log({f"report/{name}": wandb.Image(str(out / file))})
    run.finish()
