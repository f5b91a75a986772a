"""A progress bar that counts a step-budgeted run in steps."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar``, except that a run budgeted in steps (``max_steps > 0``,
    no ``max_epochs``) counts ``N/max_steps`` steps over one bar for the whole run, described as
    ``Epoch E (steps)``.

    Lightning's own bar counts batches of the current epoch and reads ``Epoch 0/-2 … 300/49`` for
    such a run (``max_epochs`` is -1, the epoch's total is clipped by the steps left when it began).
    """

    def _by_steps(self) -> bool:
        trainer = self.trainer
        return bool(trainer.max_steps and trainer.max_steps > 0 and trainer.max_epochs in (None, -1))

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._by_steps():
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch} (steps)"
        # as Lightning pads it: the same width as the validation bar's, so the bars do not jump
        return f"{text:{len(self.validation_description)}}"

    def _show_step(self) -> None:
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=self.trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # (resets the bar to 0 of the total)
        if self._by_steps():
            self._show_step()
            self.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._by_steps():
            self._show_step()
            self.refresh()


__all__ = ["StepProgressBar"]
