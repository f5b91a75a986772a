"""Denoising backbones: MLP for vectors, diffusers UNets for labelled and captioned images,
and an adapter for pretrained discrete-time diffusers UNets."""

from infodecomp.models.backbones import (
    Backbone,
    LabelledUNet,
    MLPBackbone,
    TextConditionedUNet,
    WordTokenizer,
    build_backbone,
    describe,
)
from infodecomp.models.pretrained import DiffusersUNetAdapter, logsnr_to_timestep, scheduler_logsnr

__all__ = [
    "Backbone",
    "DiffusersUNetAdapter",
    "LabelledUNet",
    "MLPBackbone",
    "TextConditionedUNet",
    "WordTokenizer",
    "build_backbone",
    "describe",
    "logsnr_to_timestep",
    "scheduler_logsnr",
]
