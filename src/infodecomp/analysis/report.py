"""``analyze.py report``: the training callbacks, run once by ``Trainer.validate`` with report budgets.

Nothing is computed here that a callback does not compute during training: the report builds
the evaluation callbacks (information table and density, heatmaps, MMSE curves, likelihood,
samples) with the budgets of :class:`ReportSettings`, runs them through Lightning's validation
loop on the checkpoint (any accelerator, any number of devices: items are sharded and gathered,
and draws depend only on each item's index, so 1 and N processes give the same numbers), and
writes what they computed: ``report.json``, their figures and a readable ``report.md``.

The directory is assembled beside the target (:func:`~infodecomp.analysis.common.partial_dir`)
and moved into place at the end. Each finished step is kept there, so a report that was killed
resumes from the steps it had finished when run again with the same settings.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from infodecomp.analysis.common import (
    AnalysisError,
    check_output,
    default_output,
    load_run,
    md_head,
    md_row,
    partial_dir,
    stop_if_terminated,
    write_atomically,
)
from infodecomp.evaluation import (
    DRIFT_SES,
    DRIFT_TOLERANCES,
    GAP_SES,
    SETTLE_EVALS,
    TOLERANCE_ABS,
    TOLERANCE_CAP,
    TOLERANCE_REL,
    InfoRow,
    flag_unsettled,
)

log = logging.getLogger(__name__)


@dataclass
class ReportSettings:
    """Budgets of a report (every number the report uses is here)."""

    n_eval: int = 256  # validation items for the information table and the likelihood
    n_draws: int = 32  # (log-SNR, noise) draws per item
    n_heatmap: int = 64  # items whose per-pixel maps are computed
    n_images: int = 8  # rows of the heatmap figure
    density_points: int = 23  # log-SNRs of the information density curve
    density_items: int = 64
    mmse_points: int = 33
    mmse_items: int = 64
    mmse_eps: int = 4
    sample_rows: int = 4
    sample_steps: int = 50
    seed: int = 0
    samples: bool = True
    pid_variables: tuple[str, ...] = ()  # two conditioning variables: adds the PID step
    pid_given: tuple[str, ...] | str = ()  # variables held fixed, or "rest"
    pid_measure: str = "pointwise-min"
    only: tuple[str, ...] = ()  # run only these steps (default: all)
    # nats: the information and PID steps draw as often as it takes for every MI and CMI to reach
    # this SE over the n_eval items (a pilot of pilot_items x pilot_draws, :func:`plan_draws`),
    # at most max_draws; None: n_draws. info_draws is what the plan chose (or a fixed choice).
    target_se: float | None = None
    pilot_items: int = 64
    pilot_draws: int = 8
    max_draws: int = 256
    info_draws: int | None = None

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def report_callbacks(s: ReportSettings) -> dict[str, Any]:
    """The report's steps: the training callbacks with report budgets, by name."""
    from infodecomp.lightning.callbacks import (
        InfoHeatmapCallback,
        LikelihoodCallback,
        MMSECurveCallback,
        MutualInformationCallback,
        SampleGridCallback,
    )

    info_draws = s.info_draws or s.n_draws
    steps = {
        "information": MutualInformationCallback(every_n_steps=0, n_eval=s.n_eval, n_draws=info_draws, seed=s.seed,
                                                 density_points=s.density_points, density_items=s.density_items),
        "heatmaps": InfoHeatmapCallback(every_n_steps=0, n_eval=s.n_heatmap, n_images=s.n_images, n_draws=s.n_draws,
                                        seed=s.seed),
        "mmse": MMSECurveCallback(every_n_steps=0, n_eval=s.mmse_items, n_points=s.mmse_points, n_eps=s.mmse_eps,
                                  seed=s.seed),
        "likelihood": LikelihoodCallback(every_n_steps=0, n_eval=s.n_eval, n_draws=s.n_draws, seed=s.seed),
    }
    if s.samples:
        steps["samples"] = SampleGridCallback(every_n_steps=0, n_rows=s.sample_rows, per_row=8, steps=s.sample_steps,
                                              seed=s.seed)
    if s.pid_variables:
        from infodecomp.lightning.callbacks import PIDCallback

        steps["pid"] = PIDCallback(every_n_steps=0, n_eval=s.n_eval, n_draws=info_draws, seed=s.seed,
                                   variables=list(s.pid_variables), given=s.pid_given, measure=s.pid_measure,
                                   n_images=s.n_images)
    if s.only:
        unknown = [n for n in s.only if n not in steps]
        if unknown:
            raise AnalysisError(f"unknown report steps {unknown}; expected some of {list(steps)}")
        steps = {n: cb for n, cb in steps.items() if n in s.only}
    return steps


def plan_draws(module: Any, dm: Any, s: ReportSettings) -> dict[str, Any]:
    """The draws per item that bring every MI and CMI of the information table (orthogonal
    estimator) to ``s.target_se`` over ``s.n_eval`` items: a pilot on the first ``s.pilot_items``
    validation items, estimated twice with ``s.pilot_draws`` draws each (in one pass: the copy of each item draws under an id of its own), splits
    each quantity's variance into the items' spread and the draws' noise
    (:func:`~infodecomp.evaluation.draws_for_se`);
    the largest need, rounded up to a multiple of 4, between 4 and ``s.max_draws``.

    A quantity whose items alone give an SE above the target (its floor) is drawn until it is within
    10% of that floor, with a warning. Every process of a multi-device report computes the same plan
    from the same items and draws.
    Returns ``{"draws", "target_se", "pilot_items", "pilot_draws", "seconds", "quantities":
    {name: {"draws", "floor"}}, "short": [names whose floor is above the target]}``."""
    from infodecomp.evaluation import (
        EvalBatch,
        draws_for_se,
        information_estimates,
        validation_batch,
    )

    if s.target_se is None or not s.target_se > 0:
        raise AnalysisError(f"the target SE must be a positive number of nats, got {s.target_se}")
    start = time.perf_counter()
    module.eval()
    batch = validation_batch(module, dm, min(s.pilot_items, s.n_eval))
    if batch.x.shape[0] < 2:
        raise AnalysisError(f"the draws' plan needs at least 2 validation items, got {batch.x.shape[0]}")
    # both replicates in one pass: each item twice, the copy under an id of its own (so draws of its own)
    n = batch.x.shape[0]
    twice = EvalBatch(torch.cat([batch.x, batch.x]), {k: torch.cat([v, v]) for k, v in batch.cond.items()},
                      torch.cat([batch.sample_ids, batch.sample_ids + PILOT_ID_OFFSET]))
    with torch.no_grad():
        est = information_estimates(module, twice, list(module.condition_spec), reduction="sample",
                                    n_draws=s.pilot_draws, seed=s.seed + 1)
    need, short = {}, []
    for name, e in est.items():
        draws, floor = draws_for_se(e.value[:n], e.value[n:], s.pilot_draws, s.n_eval, s.target_se)
        need[name] = {"draws": draws, "floor": floor}
        if not math.isfinite(draws) or draws > s.max_draws:
            short.append(name)
            # no number of draws reaches the target: draw what brings it within 10% of its floor
            draws, _ = draws_for_se(e.value[:n], e.value[n:], s.pilot_draws, s.n_eval, SHORT_MARGIN * floor) \
                if floor > 0 else (4.0, floor)
        need[name]["use"] = draws
    most = max(v["use"] for v in need.values())
    draws = min(max(4, 4 * math.ceil(most / 4)), s.max_draws) if math.isfinite(most) else s.max_draws
    if short:
        log.warning("draws for a target SE of %g nats: with %d items, %s cannot reach it whatever the draws (the "
                    "items alone give SE %s); using %d draws, which bring them within 10%% of that. More items "
                    "(--n-eval) lower it.", s.target_se, s.n_eval, ", ".join(short),
                    ", ".join(f"{need[n]['floor']:.4f}" for n in short), draws)
    return {"draws": draws, "target_se": s.target_se, "pilot_items": int(batch.x.shape[0]),
            "pilot_draws": s.pilot_draws, "seconds": time.perf_counter() - start,
            "quantities": {k: {"draws": (v["draws"] if math.isfinite(v["draws"]) else None), "floor": v["floor"]}
                           for k, v in need.items()}, "short": short}


#: a quantity whose items alone keep its SE above the target is drawn to this multiple of that floor
SHORT_MARGIN = 1.1
#: the pilot's second estimate of item ``i`` draws as item ``i + PILOT_ID_OFFSET`` (no real item's id)
PILOT_ID_OFFSET = 1 << 40


def _is_rank_zero() -> bool:
    """Rank zero of a launch (Lightning's DDP launcher sets these for the processes it starts)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def make_report(
    path: str | Path, out: str | Path | None = None, *, config: str | Path | None = None, overwrite: bool = False,
    settings: ReportSettings | None = None, progress: bool = True, wandb: bool = False, accelerator: str = "auto",
    devices: int = 1, name: str = "report",
) -> Path | None:
    """Analyse a run and write its report directory (default ``outputs/reports/<run name>``, or
    ``outputs/<name>/<run name>`` for another ``name``, under the working directory:
    :func:`~infodecomp.analysis.common.default_output`); returns the directory (``None`` on the
    other processes of a multi-device run)."""
    s = settings or ReportSettings()
    module, dm, ckpt, cfg_path = load_run(path, config)
    if s.pid_variables:  # the PID step's variables, checked before anything runs
        spec = list(module.condition_spec)
        given = [] if s.pid_given == "rest" else list(s.pid_given)
        unknown = [v for v in (*s.pid_variables, *given) if v not in spec]
        if unknown or len(set(s.pid_variables)) != 2:
            raise AnalysisError(f"PID needs two different variables among the model's conditions {spec}; "
                                f"got {list(s.pid_variables)}" + (f" given {given}" if given else "")
                                + (f" ({unknown} not among them)" if unknown else ""))
    plan = None
    if s.target_se is not None and s.info_draws is None:
        plan = plan_draws(module, dm, s)
        s = replace(s, info_draws=plan["draws"])
    run = cfg_path.parent
    out = Path(out) if out is not None else default_output("reports" if name == "report" else name, path)
    if not _is_rank_zero():  # another process of a multi-device report: compute, write nothing
        _validate(module, dm, report_callbacks(s), s, None, progress=False, wandb=False, accelerator=accelerator,
                  devices=devices)
        return None
    check_output(out, overwrite)
    stat = ckpt.stat()
    key = hashlib.sha1(f"{s.key()} {ckpt.resolve()} {stat.st_size} {stat.st_mtime_ns}".encode()).hexdigest()[:16]
    tmp = partial_dir(out)
    if tmp.exists():
        saved = tmp / "settings.json"
        if not saved.is_file() or json.loads(saved.read_text()).get("key") != key:
            shutil.rmtree(tmp)  # left by a run of other settings or another checkpoint: start over

    def fill(tmp: Path) -> dict:
        (tmp / "settings.json").write_text(json.dumps({"key": key, **asdict(s), "checkpoint": str(ckpt)}))
        start = time.perf_counter()
        steps = report_callbacks(s)
        done = {name: json.loads(f.read_text()) for name in steps if (f := tmp / "steps" / f"{name}.json").is_file()}
        todo = {name: cb for name, cb in steps.items() if name not in done}
        if done:
            log.warning("resuming the report in %s: %s already done", tmp, ", ".join(done))
        savers: dict[str, StepSaver] = {}
        wb = _validate(module, dm, todo, s, tmp, progress=progress, wandb=wandb, accelerator=accelerator,
                       devices=devices, savers=savers)
        result: dict[str, Any] = {"model": module.hparams["backbone"]["class_path"], "checkpoint": str(ckpt),
                                  "config": str(cfg_path), "devices": devices, "settings": asdict(s),
                                  "figures": {}}
        if plan is not None:
            result["draws_plan"] = plan
        result["step_seconds"] = {}
        for name in steps:
            part = done.get(name) or {"result": todo[name].result, "figures": todo[name].figures,
                                      "seconds": savers[name].seconds if name in savers else None}
            result.update(part["result"])
            result["figures"].update(part["figures"])
            result["step_seconds"][name] = part.get("seconds")
        result.setdefault("n_eval", s.n_eval)
        result.setdefault("n_draws", s.n_draws)
        hist = read_history(run)
        if hist:
            result["history"] = {k: {"steps": v[0], "values": v[1]} for k, v in hist.items()}
            result["figures"]["history"] = _history_figure(hist, dm, tmp / "mi_history.png")
            if result.get("information"):
                result["information"] = _flag_training_drift(result["information"], hist)
        result["seconds"] = time.perf_counter() - start
        if wb is not None:  # what a training run shows on W&B, for the report's numbers
            _publish_wandb(wb.experiment, result, hist)
            wb.experiment.finish()
        (tmp / "report.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "report.md").write_text(render_markdown(result))
        (tmp / "settings.json").unlink()
        shutil.rmtree(tmp / "steps", ignore_errors=True)
        return result

    write_atomically(out, fill, subcommand=name, overwrite=overwrite, keep_partial=True)
    return out


def _validate(module: Any, dm: Any, steps: Mapping[str, Any], s: ReportSettings, tmp: Path | None, *,
              progress: bool, wandb: bool, accelerator: str, devices: int,
              savers: dict[str, StepSaver] | None = None) -> Any:
    """Run the steps' callbacks under ``Trainer.validate``; each finished step is saved in ``tmp``
    with its wall time (``savers``, when given, receives the :class:`StepSaver` of each step).
    Returns the W&B logger (its run still open, for :func:`_publish_wandb`) or ``None``."""
    callbacks: list[pl.Callback] = []
    clock = _StepClock()
    for name, cb in steps.items():
        cb.progress, cb.figure_dir = progress, tmp  # each step shows its own progress bar
        if tmp is not None:
            saver = StepSaver(name, cb, tmp, clock)
            callbacks += [cb, saver]
            if savers is not None:
                savers[name] = saver
        else:
            callbacks.append(cb)
    callbacks.insert(0, clock)
    logger: Any = False
    if wandb and tmp is not None:
        from infodecomp.lightning.loggers import AutoWandbLogger

        logger = AutoWandbLogger(save_dir=str(tmp), project="infodecomp", name="report", job_type="analysis")
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy="ddp" if devices > 1 else "auto",
                         logger=logger, callbacks=callbacks, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, default_root_dir=str(tmp or "."))
    trainer.validate(module, datamodule=dm, verbose=False)
    return logger or None


def _publish_wandb(run: Any, result: Mapping[str, Any], hist: Mapping[str, tuple[list[int], list[float]]]) -> None:
    """The report's final numbers and flags in the run summary, and the charts of the training
    curves (metrics.csv), through the functions a training run uses."""
    from infodecomp.evaluation import quantity_label
    from infodecomp.lightning.loggers import log_curve_charts, publish_final

    publish_final(run, information=result.get("information") or [], pid=(result.get("pid") or {}).get("rows", []))

    def column(key: str, steps: list[int]) -> list[float | None]:  # a curve's values at these steps
        by_step = dict(zip(*hist.get(key, ([], [])), strict=True))
        return [by_step.get(t) for t in steps]

    curves = {}
    for key, (steps, values) in hist.items():
        if (m := re.match(r"^val/(c?mi)/(.+)$", key)):
            kind, v = m.groups()
            curves[f"{kind}/{v}"] = {"step": steps, "estimate": values, "se": column(f"val/{kind}_se/{v}", steps),
                                     "truth": column(f"val/{kind}_true/{v}", steps),
                                     "oracle": column(f"val/{kind}_oracle/{v}", steps)}
    if curves:
        log_curve_charts(run, curves, {n: f"{quantity_label(n)} (nats)" for n in curves},
                         step=max(max(c["step"]) for c in curves.values()))


class _StepClock(pl.Callback):
    """The time at which the previous report step ended (the steps run one after another in
    ``on_validation_end``, in list order; this callback is first, so it starts the clock)."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.mark = time.perf_counter()


class StepSaver(pl.Callback):
    """Keeps a report step's result and wall time once its callback (just before it in the list)
    has run, so that a killed report resumes from the steps it finished."""

    def __init__(self, name: str, callback: Any, tmp: Path, clock: _StepClock | None = None) -> None:
        self.name, self.callback, self.tmp, self.clock = name, callback, tmp, clock
        self.seconds: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.clock is not None:  # this step's wall time: since the previous step (or the start) ended
            now = time.perf_counter()
            self.seconds, self.clock.mark = now - self.clock.mark, now
        if trainer.is_global_zero and self.callback.enabled:
            path = self.tmp / "steps" / f"{self.name}.json"
            path.parent.mkdir(exist_ok=True)
            part = path.with_suffix(".part")
            part.write_text(json.dumps({"result": self.callback.result, "figures": self.callback.figures,
                                        "seconds": self.seconds}, default=float))
            os.replace(part, path)
        # (the steps run after the last validation batch, where Lightning does not act on SIGTERM:
        # without this a terminated report went on to its end)
        stop_if_terminated(trainer, f"the report's {self.name!r} step")


_INFO_CURVE = re.compile(r"^val/c?mi(?:_(?:standard|orthogonal))?(?:_(?:se|true|oracle|drift_se))?/")


def _flag_training_drift(rows: list[dict], hist: Mapping[str, tuple[list[int], list[float]]]) -> list[dict]:
    """The report's rows with the drift of each quantity over the last evaluations of training
    (the callback's curves in ``metrics.csv``), flagged ``not-converged`` where it is still moving."""
    info = [InfoRow(**r) for r in rows]
    keys = {r.name: f"val/{r.kind}/{r.variable}" if "@" not in r.name else f"val/{r.kind}_{r.estimator}/{r.variable}"
            for r in info}
    # the SE the callback logged with the drift at the last evaluation (the drift is the same number)
    drift_se = {}
    for name, key in keys.items():
        kind, _, variable = key.removeprefix("val/").partition("/")
        se_key = f"val/{kind}_drift_se/{variable}"
        if key in hist and se_key in hist and hist[se_key][0][-1] == hist[key][0][-1]:
            drift_se[name] = hist[se_key][1][-1]
    flag_unsettled(info, {name: hist[key][1] for name, key in keys.items() if key in hist}, drift_se=drift_se)
    return [r.to_dict() for r in info]


def read_history(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (steps, values)}`` of the information curves in metrics.csv: ``val/mi/*``,
    ``val/cmi/*`` and those of the other estimators (``val/mi_standard/*``, ...), with their SEs,
    exact values, oracles and drift SEs (``val/mi_se/*``, ``val/mi_true/*``, ...)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    hist: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k and _INFO_CURVE.match(k) and v not in (None, ""):
                    steps, vals = hist.setdefault(k, ([], []))
                    steps.append(int(row["step"]))
                    vals.append(float(v))
    return hist


def _history_figure(hist: Mapping[str, tuple[list[int], list[float]]], dm: Any, path: Path) -> str:
    from infodecomp.interface import ground_truth_of
    from infodecomp.plotting import close, plot_metric_history

    gt = ground_truth_of(dm)
    truth = {}
    if gt is not None:
        truth = {f"val/mi/{k}": v for k, v in gt.mutual_information.items()}
        truth.update({f"val/cmi/{k}": v for k, v in gt.conditional_mutual_information.items()})
    keys = [k for k in hist if k.startswith("val/mi/")]
    fig = plot_metric_history({k: hist[k][0] for k in keys}, {k: hist[k][1] for k in keys}, truth=truth,
                              title="MI during training")
    fig.savefig(path, dpi=110)
    close(fig)
    return path.name


def render_pid(p: Mapping[str, Any]) -> list[str]:
    """The PID section of a report (:class:`~infodecomp.lightning.callbacks.PIDCallback`'s result)."""
    v1, v2 = p["variables"]
    given = f" | {', '.join(p['given'])}" if p["given"] else ""
    names = {"i1": f"I(x; {v1}{given})", "i2": f"I(x; {v2}{given})", "i12": f"I(x; {v1}, {v2}{given})",
             "redundancy": "R (redundancy)", "unique1": f"U1 (unique to {v1})", "unique2": f"U2 (unique to {v2})",
             "synergy": "S (synergy)"}
    lines = [f"## Partial information decomposition of {v1} and {v2} (nats, measure `{p['measure']}`)", "",
             *md_head(["quantity", "estimate ± SE", "exact oracle, same draws", "model − oracle (paired)",
                       "closed form"])]
    for row in p["rows"]:
        orc = f"{row['oracle']:.4f}" if row.get("oracle") is not None else "—"
        diff = f"{row['minus_oracle']:+.4f} ± {row['minus_oracle_se']:.4f}" if row.get("minus_oracle") is not None else "—"
        exact = f"{row['truth']:.4f}" if row.get("truth") is not None else "—"
        lines.append(md_row([names[row["quantity"]], f"{row['estimate']:.4f} ± {row['se']:.4f}", orc, diff, exact]))
    lines.append("")
    if p.get("mass_in_objects"):
        objects = sorted({k for per in p["mass_in_objects"].values() for k in per})
        lines += md_head(["atom", *(f"map share in object {k}" for k in objects)])
        oracle = p.get("oracle_mass_in_objects") or {}
        for atom, per in p["mass_in_objects"].items():
            cells = [f"{100 * per[k][0]:.1f}% ± {100 * per[k][1]:.1f}"
                     + (f" (oracle {100 * oracle[atom][k][0]:.1f}%)" if atom in oracle else "") for k in objects]
            lines.append(md_row([atom, *cells]))
        lines += ["", "A share is the atom's positive map mass inside the object; an atom that is zero has "
                  "no meaningful share.", ""]
    lines += [f"{p['n_eval']} items, {p['n_draws']} draws each, {p['nfe']} denoiser calls per item (four "
              "conditions per draw, one forward). R + U1 = I1, R + U2 = I2 and R + U1 + U2 + S = I12 hold per "
              "draw and per pixel; S can be negative and is shown as it comes.", ""]
    return lines


def wall_time(r: Mapping[str, Any]) -> str:
    """A report's wall time and that of each of its steps: ``"249 s (information 158 s, ...)"``."""
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in (r.get("step_seconds") or {}).items() if v is not None)
    return f"{r['seconds']:.0f} s" + (f" ({steps})" if steps else "")


def render_markdown(r: Mapping[str, Any]) -> str:
    """A report a person can read, with the figures embedded."""
    figs = r.get("figures", {})

    def image(key: str, alt: str) -> list[str]:
        return [f"![{alt}]({figs[key]})", ""] if key in figs else []

    lines = ["# infodecomp report", "", f"- checkpoint: `{r['checkpoint']}`", f"- model: `{r['model']}`",
             f"- evaluation set: {r['n_eval']} validation items, {r['n_draws']} log-SNR draws each, "
             f"{r.get('devices', 1)} device(s)", ""]
    if r.get("draws_plan"):
        p = r["draws_plan"]
        lines[-1:-1] = [f"- draws from a target SE of {p['target_se']:g} nats: a pilot of {p['pilot_items']} items x "
                        f"2 x {p['pilot_draws']} draws ({p['seconds']:.0f} s) asked for {p['draws']} draws"
                        + (f"; {', '.join(p['short'])} cannot reach the target with these items" if p["short"] else "")]
    if r.get("information"):
        lines += ["## Information per conditioning variable (nats)", "",
                  *md_head(["quantity", "estimator", "estimate ± SE", "exact", "relative error", "oracle, same draws",
                            "standard − orthogonal", "check"])]
        for row in r["information"]:
            exact = f"{row['truth']:.4f}" if row.get("truth") is not None else "—"
            rel = f"{100 * row['rel_error']:.1f}%" if row.get("rel_error") is not None else "—"
            orc = f"{row['oracle_estimate']:.4f} ± {row['oracle_se']:.4f}" if row.get("oracle_estimate") is not None else "—"
            gap = f"{row['gap']:+.4f} ± {row['gap_se']:.4f}" if row.get("gap") is not None else "—"
            bound = f" (bound H = {row['bound']:.3f})" if row.get("bound") is not None else ""
            label = f"I(x; {row['variable']})" if row["kind"] == "mi" else f"I(x; {row['variable']} | rest)"
            lines.append(md_row([label, row["estimator"], f"{row['estimate']:.4f} ± {row['se']:.4f}", exact, rel, orc,
                                 gap, f"{row.get('flag', 'ok')}{bound}"]))
        lines += ["", "The orthogonal estimator adds any disagreement between a trained model's conditional and",
                  "unconditional predictions, errors included; the standard one lets errors of similar size",
                  "cancel. The density plot shows at which noise levels the model gains or loses information",
                  "relative to the exact oracle. The two estimators differ, on average, only through model",
                  "error (their gap has zero mean for a conditional branch that is the conditional expectation),",
                  f"so a gap of more than {GAP_SES:g} SE whose implied error (the gap if positive, under-fit; half of it if",
                  "negative, noise) exceeds the tolerance is flagged `model-inconsistent`; an estimate more than 3 SE",
                  f"and {TOLERANCE_ABS} nats above the condition's entropy (which bounds it) is flagged `exceeds-bound`,",
                  f"and one that moved by more than {DRIFT_TOLERANCES:g} x the tolerance and {DRIFT_SES:.0f} SE (item by item, same draws) over the",
                  f"last {SETTLE_EVALS} evaluations of training is flagged `not-converged`.",
                  f"The gap and the drift count only beyond max({TOLERANCE_ABS} nats, min({100 * TOLERANCE_REL:.0f}% of "
                  f"the estimate, {TOLERANCE_CAP} nats)). None of these checks needs ground truth.",
                  ""]
        lines += image("val/information", "information") + image("val/information_density", "density")
    if r.get("heatmaps"):
        h = r["heatmaps"]
        lines += [f"## Where the information lives ({h['kind'].upper()} maps, {h['n_images']} images)", ""]
        r_exact = h.get("oracle_correlation", {})
        if "mass_in_mask" in h or r_exact:
            mass, oracle_mass = h.get("mass_in_mask", {}), h.get("oracle_mass_in_mask", {})
            head = ["variable"] + (["map mass inside the object (model)", "(exact oracle)"] if mass else [])
            lines += md_head(head + (["Pearson r with the exact map, per image"] if r_exact else []))
            for v in mass or r_exact:
                row = [v]
                if mass:
                    o = oracle_mass.get(v)
                    row += [f"{100 * mass[v][0]:.1f}% ± {100 * mass[v][1]:.1f}", "—" if o is None else f"{100 * o[0]:.1f}%"]
                if r_exact:
                    row.append(f"{r_exact[v][0]:.3f} ± {r_exact[v][1]:.3f}" if v in r_exact else "—")
                lines.append(md_row(row))
            lines.append("")
            if oracle_mass:
                lines += ["A variable is told apart where its possible values would draw different pixels: for",
                          "shape or position that is partly where the object is *not* drawn, so even the exact",
                          "maps keep part of their mass outside the mask. Compare the model with the oracle column.",
                          ""]
        lines += image(f"val/heatmap/{h['kind']}", "heatmaps")
    if r.get("pid"):
        lines += render_pid(r["pid"]) + image("val/pid_maps", "PID maps")
    if "history" in figs:
        lines += ["## MI during training (dashed: exact)", "", f"![history]({figs['history']})", ""]
    if r.get("mmse"):
        lines += ["## MMSE curves", ""] + image("val/mmse_curve", "mmse")
    if r.get("nll_bpd"):
        lines += [f"Negative log-likelihood: {r['nll_bpd']['estimate']:.4f} ± {r['nll_bpd']['se']:.4f} bits/dim "
                  "(continuous density of the modelled values).", ""]
    if "val/samples" in figs:
        lines += ["## Samples (deterministic DDIM on a log-SNR grid)", ""] + image("val/samples", "samples")
    lines.append(f"_Computed in {wall_time(r)}._")
    return "\n".join(lines) + "\n"
