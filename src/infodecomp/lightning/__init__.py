"""Lightning pieces: the diffusion module, data modules, loggers."""

from infodecomp.lightning.checkpoint_io import AtomicCheckpointIO
from infodecomp.lightning.data import (
    CaptionFolderDataModule,
    CIFAR10DataModule,
    DictDataset,
    DigitsDataModule,
    GroundTruth,
    NaturalImagesDataModule,
    PIDWorldDataModule,
    ShapesDataModule,
    TensorDataModule,
    VectorTaskDataModule,
)
from infodecomp.lightning.loggers import AutoWandbLogger
from infodecomp.lightning.module import DiffusionModule, export_checkpoint, load_module
from infodecomp.lightning.progress import StepProgressBar

__all__ = [
    "AtomicCheckpointIO",
    "AutoWandbLogger",
    "CIFAR10DataModule",
    "CaptionFolderDataModule",
    "DictDataset",
    "DigitsDataModule",
    "DiffusionModule",
    "GroundTruth",
    "NaturalImagesDataModule",
    "PIDWorldDataModule",
    "ShapesDataModule",
    "StepProgressBar",
    "TensorDataModule",
    "VectorTaskDataModule",
    "export_checkpoint",
    "load_module",
]
