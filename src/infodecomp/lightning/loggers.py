"""Loggers: W&B that goes offline by itself when no credentials are configured, and a resumed
run's CSV metrics kept whole."""

from __future__ import annotations

import csv
import logging
import netrc
import os
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
        if self._experiment is None and self._save_dir:
            Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        return super().experiment


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
