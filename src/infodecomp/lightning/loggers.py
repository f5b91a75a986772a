"""Loggers: W&B that goes offline by itself when no credentials are configured, what every W&B
run of infodecomp shows (axes, charts, summary; training and ``analyze.py report --wandb`` alike),
and a resumed run's CSV metrics kept whole."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import Callback
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from typing_extensions import override

log = logging.getLogger(__name__)


def wandb_credentials_available() -> bool:
    """True when an API key is in the environment or in ``~/.netrc`` for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(Path.home() / ".netrc").hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


#: one quantity over training, as the evaluation callbacks keep it: parallel lists, one entry per
#: evaluation (``None`` where a value is unknown, e.g. no exact value for this data)
CURVE_FIELDS = ("step", "estimate", "se", "truth", "oracle")


def prepare_wandb_run(run: Any) -> None:
    """What every infodecomp W&B run declares when it starts: every ``val/*`` quantity plots
    against ``trainer/global_step`` (the x-axis of the charts of :func:`log_curve_charts`), not
    against W&B's own call counter."""
    run.define_metric("trainer/global_step")
    run.define_metric("val/*", step_metric="trainer/global_step")


def curve_chart(curve: Mapping[str, Sequence[Any]], title: str) -> Any:
    """A W&B line chart (built-in ``wandb/lineseries/v0`` spec, so it renders with no setup) of one
    quantity over training steps: the estimate, its SE band (estimate ± 1 SE, two lines), the
    exact value and the exact oracle on the same draws, where known."""
    import wandb

    xs: list[list[float]] = []
    ys: list[list[float]] = []
    keys: list[str] = []

    def series(name: str, values: Sequence[Any]) -> None:
        points = [(s, float(v)) for s, v in zip(curve["step"], values, strict=True) if s is not None and v is not None]
        if points:
            xs.append([p[0] for p in points])
            ys.append([p[1] for p in points])
            keys.append(name)

    est, se = curve["estimate"], curve.get("se") or [None] * len(curve["estimate"])
    series("estimate", est)
    series("estimate - SE", [e - s if e is not None and s is not None else None for e, s in zip(est, se, strict=True)])
    series("estimate + SE", [e + s if e is not None and s is not None else None for e, s in zip(est, se, strict=True)])
    series("exact", curve.get("truth") or [])
    series("exact oracle, same draws", curve.get("oracle") or [])
    return wandb.plot.line_series(xs, ys, keys=keys, title=title, xname="trainer/global_step")


def log_curve_charts(run: Any, curves: Mapping[str, Mapping[str, Sequence[Any]]], titles: Mapping[str, str],
                     step: int) -> None:
    """One chart per quantity, ``charts/<name>`` (e.g. ``charts/mi/shape``), of its whole curve so far:
    logged again at each evaluation, so the run shows the latest curve."""
    charts = {f"charts/{name}": curve_chart(c, titles.get(name, name)) for name, c in curves.items() if c["step"]}
    if charts:
        run.log({**charts, "trainer/global_step": step})


def publish_final(run: Any, information: Sequence[Mapping[str, Any]] = (),
                  pid: Sequence[Mapping[str, Any]] = ()) -> None:
    """The final numbers in the run summary: ``final/<name>`` (estimate), ``final/<name>_se``,
    ``final/<name>_true``, ``final/<name>_oracle`` and the readable flag ``flag/<name>`` (``"ok"``,
    ``"not-converged"``, ...), for information rows (``name`` ``mi/shape``, ...) and PID rows
    (``pid/<quantity>``)."""
    entries = [(r["name"], r["estimate"], r.get("se"), r.get("truth"), r.get("oracle_estimate"), r.get("flag"))
               for r in information]
    entries += [(f"pid/{r['quantity']}", r["estimate"], r.get("se"), r.get("truth"), r.get("oracle"), None)
                for r in pid]
    for name, estimate, se, truth, oracle, flag in entries:
        run.summary[f"final/{name}"] = estimate
        for suffix, value in (("se", se), ("true", truth), ("oracle", oracle)):
            if value is not None:
                run.summary[f"final/{name}_{suffix}"] = value
        if flag is not None:
            run.summary[f"flag/{name}"] = flag


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline (runs land in ``save_dir/wandb``, syncable later with
    ``wandb sync``) when no credentials are configured or ``WANDB_MODE=offline`` is set."""

    def __init__(self, save_dir: str = "outputs/runs", project: str = "infodecomp", name: str | None = None,
                 offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_credentials_available()
        if offline:
            log.info("W&B: no credentials configured, logging offline under %s", save_dir)
        super().__init__(save_dir=save_dir, project=project, name=name, offline=offline, **kwargs)

    @property
    def experiment(self) -> Any:
        # the directory is made when the run starts, not when the logger is configured: a run
        # that fails its input checks leaves nothing behind
        started = self._experiment is None
        if started and self._save_dir:
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        run = super().experiment
        if started and hasattr(run, "define_metric"):
            prepare_wandb_run(run)
        return run


class ContinueCSVMetrics(Callback):
    """Keeps a resumed run's ``metrics.csv`` whole.

    Lightning's CSV logger clears an existing ``metrics.csv`` when it opens a run directory
    again. This callback keeps the rows logged before the checkpoint: the first ``keep_rows``
    (which the checkpoint counted after flushing the loggers), and after them the rows of steps
    before ``resume_step`` (a step's training metrics reach the logger after its checkpoint);
    later rows belong to steps that are trained again. It writes them back, ahead of the new
    rows, when training starts.
    """

    def __init__(self, logger: CSVLogger, keep_rows: int, resume_step: int) -> None:
        self.logger = logger
        self.path = Path(logger.log_dir) / "metrics.csv"
        self.rows: list[dict[str, str]] = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.rows = rows[:keep_rows] + [r for r in rows[keep_rows:] if r.get("step") and int(r["step"]) < resume_step]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        new: list[dict[str, str]] = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                new = list(csv.DictReader(f))
        writer = self.logger.experiment
        fields = sorted({k for r in (*self.rows, *new) for k in r} | set(writer.metrics_keys))
        with self.path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=fields)
            out.writeheader()
            out.writerows([*self.rows, *new])
        writer.metrics_keys = fields  # the logger's next rows go under the merged header
        self.rows = []
