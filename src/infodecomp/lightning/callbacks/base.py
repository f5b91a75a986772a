"""Shared machinery of the evaluation callbacks: schedule, fixed batch, sharding, logging.

Each callback evaluates a fixed set of validation items (the first ``n_eval``; the same
``(alpha, eps)`` draws every time, from a fixed seed), under ``torch.no_grad`` with the EMA
weights. Under DDP each process takes every ``world_size``-th item, per-sample results are
gathered, and rank zero logs: because draws depend only on the seed and each item's index,
1 and N processes give the same numbers.

The same callbacks are the post-hoc analysis: under ``Trainer.validate`` (what ``analyze.py
report`` runs, on any accelerator and number of devices) each evaluates once, at the end of the
validation loop, keeps what it computed in :attr:`EvaluationCallback.result` and writes its
figures to :attr:`EvaluationCallback.figure_dir` when one is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from infodecomp.evaluation import EvalBatch, validation_batch
from infodecomp.plotting import close

log = logging.getLogger(__name__)


def gather_cat(trainer: pl.Trainer, value: Tensor) -> Tensor:
    """Concatenate a per-sample tensor (first dim) across processes, in rank order."""
    if trainer.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return value
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, value.detach().cpu())
    return torch.cat(parts)


def run_dir(trainer: pl.Trainer) -> Path:
    """Where figures and tables of this run go (the first logger's directory, else the root dir)."""
    for lg in trainer.loggers:
        path = getattr(lg, "log_dir", None) or getattr(lg, "save_dir", None)
        if path:
            return Path(path)
    return Path(trainer.default_root_dir)


class EvaluationCallback(pl.Callback):
    """Base class: evaluate every ``every_n_steps`` training steps and at the end of training.

    Args:
        every_n_steps: evaluation period in optimizer steps (``0``: only at the end).
        n_eval: number of validation items in the fixed evaluation set.
        seed: seed of the Monte-Carlo draws (fixed across evaluations).
    """

    key: str = "eval"

    def __init__(self, every_n_steps: int = 250, n_eval: int = 256, seed: int = 0) -> None:
        super().__init__()
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if n_eval < 2:
            raise ValueError(f"n_eval must be >= 2 (standard errors need two samples), got {n_eval}")
        self.every_n_steps, self.n_eval, self.seed = every_n_steps, n_eval, seed
        self._last_step = -1
        self.result: dict[str, Any] = {}
        self.figures: dict[str, str] = {}
        self.figure_dir: Path | None = None
        self.progress = False

    # ---- the evaluation set -----------------------------------------------------------------
    needs_conditions: bool = False
    needs_images: bool = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None:
            raise ValueError(f"{type(self).__name__} needs a LightningDataModule with a validation set")
        self.enabled = True
        if self.needs_conditions and not pl_module.condition_spec:
            self.skip("the model takes no conditions; nothing to measure")
        elif self.needs_images and len(pl_module.input_shape) != 3:
            self.skip(f"it needs images (C, H, W) and the model takes {tuple(pl_module.input_shape)}")

    def skip(self, reason: str) -> None:
        """Switch this callback off for the run, with one log line (it does not apply to the model)."""
        rank_zero_info(f"{type(self).__name__} skipped: {reason}")
        self.enabled = False

    def eval_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> EvalBatch:
        return validation_batch(pl_module, trainer.datamodule, self.n_eval, rank=trainer.global_rank,
                                world_size=trainer.world_size)

    # ---- schedule ---------------------------------------------------------------------------
    enabled: bool = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = trainer.global_step
        if self.enabled and self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        if trainer.global_step != self._last_step:
            self._run(trainer, pl_module)
        self.finalize(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under ``Trainer.validate`` (post-hoc analysis), evaluate once; during fit, nothing."""
        if self.enabled and trainer.state.fn == TrainerFn.VALIDATING:
            self._run(trainer, pl_module)

    def finalize(self, trainer: pl.Trainer) -> None:
        """Called once at the end of training, after the last evaluation."""

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                self.evaluate(trainer, pl_module, self.eval_batch(trainer, pl_module))
        finally:
            pl_module.train(was_training)

    def show_progress(self, trainer: pl.Trainer) -> bool:
        """Whether this process shows progress (post-hoc analysis sets ``progress``; rank zero)."""
        return self.progress and trainer.is_global_zero

    def status(self, trainer: pl.Trainer, what: str) -> Any:
        """A status line for work that has no progress bar of its own (see :meth:`show_progress`)."""
        if not self.show_progress(trainer):
            return contextlib.nullcontext()
        from rich.console import Console

        return Console(stderr=True).status(f"{type(self).__name__}: {what}", spinner="dots")

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: EvalBatch) -> None:
        raise NotImplementedError

    # ---- logging (rank zero) ----------------------------------------------------------------
    @staticmethod
    def log_scalars(trainer: pl.Trainer, metrics: Mapping[str, float]) -> None:
        if not trainer.is_global_zero:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        for lg in trainer.loggers:
            lg.log_metrics(clean, step=trainer.global_step)

    @staticmethod
    def wandb_runs(trainer: pl.Trainer) -> list[Any]:
        """The W&B runs this process logs to (rank zero's; none elsewhere)."""
        if not trainer.is_global_zero:
            return []
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def log_figure(self, trainer: pl.Trainer, key: str, fig: Any, what: str | None = None) -> Path | None:
        """Save a PNG under ``<run>/figures/`` and send it to W&B / TensorBoard when present; the
        W&B image's caption names the step and ``what`` the figure shows (default: ``key``)."""
        if not trainer.is_global_zero:
            close(fig)
            return None
        if self.figure_dir is not None:
            out = self.figure_dir / f"{key.replace('/', '_')}.png"
        else:
            out = run_dir(trainer) / "figures" / f"{key.replace('/', '_')}_step{trainer.global_step:06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.figures[key] = out.name
        fig.savefig(out, dpi=110)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                caption = f"step {trainer.global_step}: {what or key}"
                lg.experiment.log({key: wandb.Image(str(out), caption=caption), "trainer/global_step": trainer.global_step})
            elif isinstance(lg, TensorBoardLogger):
                lg.experiment.add_figure(key, fig, global_step=trainer.global_step)
        close(fig)
        return out

    def log_table(self, trainer: pl.Trainer, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table to W&B (``wandb.Table``) and, always, as JSON next to the figures."""
        if not trainer.is_global_zero:
            return
        if self.figure_dir is not None:
            out = self.figure_dir / "tables" / f"{key.replace('/', '_')}.json"
        else:
            out = run_dir(trainer) / "tables" / f"{key.replace('/', '_')}_step{trainer.global_step:06d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"columns": columns, "rows": rows}, indent=1))
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_table(key=key, columns=columns, data=rows, step=None)


__all__ = ["CSVLogger", "EvaluationCallback", "gather_cat", "run_dir"]
