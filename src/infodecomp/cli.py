"""Command-line entry points built on LightningCLI (YAML configs under ``configs/``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

from infodecomp.lightning.module import DiffusionModule, read_checkpoint

log = logging.getLogger(__name__)


class TrainCLI(LightningCLI):
    """``python train.py [--config FILE ...] [--ckpt_path last.ckpt] [--section.key value ...]``."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume training from this checkpoint (e.g. a run's last.ckpt)")


def find_last_checkpoint(trainer: pl.Trainer) -> Path | None:
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "last_model_path", ""):
            return Path(cb.last_model_path)
    return None


def train_main(args: Sequence[str] | None = None, default_config_files: Sequence[str | Path] = ()) -> TrainCLI:
    """Parse, build and fit; returns the CLI (model, datamodule, trainer) for inspection."""
    cli = TrainCLI(
        DiffusionModule,
        pl.LightningDataModule,
        subclass_mode_data=True,
        run=False,
        args=list(args) if args is not None else None,
        seed_everything_default=0,
        parser_kwargs={"default_config_files": [str(p) for p in default_config_files]},
        save_config_kwargs={"overwrite": True},
    )
    ckpt_path = cli.config.ckpt_path
    if ckpt_path is not None:
        ckpt = read_checkpoint(ckpt_path)  # a clear error for a missing, unreadable or foreign file
        if ckpt["hyper_parameters"]["backbone"] != cli.model.hparams["backbone"]:
            raise ValueError(
                f"{ckpt_path} holds a different model ({ckpt['hyper_parameters']['backbone']['class_path']}"
                f" with other settings) than the one configured; resume with the run's own config"
            )
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)
    last = find_last_checkpoint(cli.trainer)
    if cli.trainer.is_global_zero and last is not None:
        print(f"last checkpoint: {last}")  # noqa: T201 - the CLI's final word to its user
    return cli
