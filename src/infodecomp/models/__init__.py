"""Denoising backbones: MLP for vectors, diffusers UNets for labelled and captioned images,
an adapter for pretrained discrete-time diffusers UNets, and local Stable-Diffusion pipelines."""

from infodecomp.models.backbones import (
    Backbone,
    GaussianResidualMLP,
    LabelledUNet,
    MLPBackbone,
    TextConditionedUNet,
    WordTokenizer,
    build_backbone,
    describe,
)
from infodecomp.models.pretrained import DiffusersUNetAdapter, logsnr_to_timestep, scheduler_logsnr
from infodecomp.models.stable_diffusion import StableDiffusionModel

__all__ = [
    "Backbone",
    "DiffusersUNetAdapter",
    "GaussianResidualMLP",
    "LabelledUNet",
    "MLPBackbone",
    "StableDiffusionModel",
    "TextConditionedUNet",
    "WordTokenizer",
    "build_backbone",
    "describe",
    "logsnr_to_timestep",
    "scheduler_logsnr",
]
