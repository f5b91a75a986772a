"""The concepts every part of infodecomp speaks: denoisers, conditions and results.

This module imports nothing from the rest of the package, so that models, oracles,
callbacks and probes can all depend on it without cycles.

Conventions (nats throughout):

* ``x`` is a batch of data, shaped ``(B, *shape)``.
* ``logsnr`` is the log signal-to-noise ratio ``alpha`` of the variance-preserving channel
  ``z = sqrt(sigmoid(alpha)) * x + sqrt(sigmoid(-alpha)) * eps``, shaped ``(B,)``.
* A condition is ``None`` (the null condition), a tensor whose first dimension is the
  batch, or a mapping from names to such tensors (e.g. ``{"y": y, "c": c}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Cond = Any
"""A condition: ``None`` (null), a ``Tensor`` with batch first, or ``Mapping[str, Tensor]``."""


@runtime_checkable
class Denoiser(Protocol):
    """Anything that predicts the noise of the VP channel.

    ``eps_hat = denoiser(z, logsnr, cond)`` with ``z: (B, *shape)``, ``logsnr: (B,)`` and a
    condition with batch size ``B`` (or ``None`` for the null condition). The output has the
    shape of ``z``.
    """

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor: ...


@runtime_checkable
class SupportsConditionBatching(Protocol):
    """A denoiser that can evaluate several conditions in one forward pass.

    ``batch_conditions([c1, c2, ...])`` returns one condition for the concatenation of the
    batches of ``c1, c2, ...`` (each of which may be ``None``). Estimators use it to compare
    K alternative conditions on the same draws in a single batched call. Denoisers without it
    still work: conditions that cannot be concatenated are evaluated one forward each.
    """

    def batch_conditions(self, conds: Sequence[Cond], sizes: Sequence[int]) -> Cond: ...


@runtime_checkable
class GroundTruthSource(Protocol):
    """Data that know their exact information: ``ground_truth()`` returns an object with
    ``mutual_information``, ``conditional_mutual_information`` (``{variable: nats}``),
    ``standard_errors`` and ``oracle`` (an exact :class:`Denoiser` or ``None``), or ``None``."""

    def ground_truth(self) -> Any: ...


@runtime_checkable
class EvaluationData(Protocol):
    """What evaluation needs of a data module: a validation set of dict items (``x``, ``cond``
    and optionally ``masks``, ``captions``), the shape of ``x`` and the condition names.

    ``setup("fit")`` fills ``val_set``; :class:`GroundTruthSource` is optional on top.
    """

    val_set: Any

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def setup(self, stage: str) -> None: ...


@runtime_checkable
class CaptionedWorld(Protocol):
    """A world whose captions name objects: ``word_masks(captions, masks)`` gives, for every
    word of every caption, the mask of the object it describes and whether it describes one."""

    def word_masks(self, captions: Sequence[str], masks: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class ConditionEntropySource(Protocol):
    """Data that know the entropy of their finite conditions (the upper bounds of what a model
    can learn about them): ``{"mi": {v: H(v)}, "cmi": {v: H(v | other variables)}}`` in nats."""

    def condition_entropies(self) -> dict[str, dict[str, float]]: ...


def ground_truth_of(data: Any) -> Any:
    """The data's ground truth (see :class:`GroundTruthSource`), or ``None`` if it has none."""
    return data.ground_truth() if isinstance(data, GroundTruthSource) else None


@dataclass(frozen=True)
class LogSNRRange:
    """The log-SNR interval an integral was taken over (always reported with a result)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"log-SNR range must be finite, got [{self.low}, {self.high}]")
        if not self.low < self.high:
            raise ValueError(
                f"log-SNR range is inverted or empty: expected low < high, "
                f"got low={self.low}, high={self.high}"
            )

    def __str__(self) -> str:
        return f"[{self.low:.3g}, {self.high:.3g}]"


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate with its standard error and its cost.

    Attributes:
        value: the estimate. Shape by reduction: ``"mean"`` -> ``()``, ``"sample"`` -> ``(B,)``,
            ``"pixel"`` -> ``(B, *spatial)`` (channels summed), ``"coordinate"`` -> ``(B, *shape)``.
        se: standard error, same shape as ``value``. For ``"mean"`` it is the standard error of
            the expectation over data (spread across samples); otherwise the Monte-Carlo
            standard error of each pointwise estimate.
        nfe: denoiser evaluations spent per data point (all conditions counted).
        logsnr_range: the log-SNR interval integrated over (``None`` for estimates that
            involve no log-SNR integral, e.g. Monte-Carlo ground truth).
        reduction: one of ``"mean"``, ``"sample"``, ``"pixel"``, ``"coordinate"``.
        unit: ``"nats"`` or ``"bits/dim"``.
        n_samples: number of data points the estimate is built from.
        info: free-form metadata (estimator name, sampler settings, ...).
    """

    value: Tensor
    se: Tensor
    nfe: int
    logsnr_range: LogSNRRange | None
    reduction: str
    unit: str = "nats"
    n_samples: int = 1
    info: Mapping[str, Any] = field(default_factory=dict)

    def batch_mean(self) -> Estimate:
        """Average a per-sample result over the batch (SE from the spread across samples)."""
        if self.reduction == "mean":
            return self
        n = self.value.shape[0]
        mean = self.value.mean(dim=0)
        if n > 1:
            se = self.value.std(dim=0, unbiased=True) / math.sqrt(n)
        else:
            se = self.se[0]
        return replace(self, value=mean, se=se, reduction="mean" if mean.ndim == 0 else
                       f"{self.reduction}_mean")

    def item(self) -> float:
        if self.value.numel() != 1:
            raise ValueError(f"item() needs a scalar estimate, got shape {tuple(self.value.shape)}")
        return float(self.value)

    def __float__(self) -> float:
        return self.item()

    def __str__(self) -> str:
        if self.value.numel() == 1:
            head = f"{float(self.value):.4f} ± {float(self.se):.4f} {self.unit}"
        else:
            head = f"{self.reduction} estimate of shape {tuple(self.value.shape)} ({self.unit})"
        where = f", log-SNR {self.logsnr_range}" if self.logsnr_range is not None else ""
        return f"{head} (NFE {self.nfe}/sample{where})"


@dataclass(frozen=True)
class Curve:
    """A quantity evaluated at fixed log-SNRs, e.g. an MMSE curve.

    Attributes:
        logsnr: the grid, ``(L,)``.
        value: ``(L,)`` for ``"mean"``; ``(B, L, ...)`` otherwise.
        se: standard error, shaped like ``value``.
        nfe: denoiser evaluations per data point.
        reduction: as for :class:`Estimate`.
    """

    logsnr: Tensor
    value: Tensor
    se: Tensor
    nfe: int
    reduction: str
    n_samples: int = 1
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def logsnr_range(self) -> LogSNRRange:
        return LogSNRRange(float(self.logsnr.min()), float(self.logsnr.max()) + 1e-12)


def as_tensor_1d(values: Any, name: str) -> Tensor:
    """Convert a float or sequence to a 1-D float tensor (helper for user-facing APIs)."""
    t = torch.as_tensor(values, dtype=torch.get_default_dtype())
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {tuple(t.shape)}")
    return t


@runtime_checkable
class TextDenoiser(Protocol):
    """What the text probes need of a text-conditioned denoiser, pixel or latent.

    ``eps_hat = model(z, logsnr, model.encode(prompts))`` on inputs ``z: (B, *image_shape)``;
    ``encode([""] * B)`` is the empty prompt. ``max_words`` is the most words the model reads,
    ``token_positions(words)`` the encoder positions holding each word of a caption (for
    cross-attention maps), ``unet`` the diffusers UNet the denoiser runs (``None``: no attention
    maps). The hooks below let a latent model (a VAE in front, a discrete scheduler behind) run
    the same probes; their defaults are those of a pixel model trained on every log-SNR, so a
    pixel model inherits them by subclassing this protocol:

    * ``encode_images(x)``: images ``(B, C, H, W)`` in ``[-1, 1]`` -> the denoiser's inputs;
    * ``decode_latents(z)``: the denoiser's (clean) inputs -> images in ``[-1, 1]``;
    * ``to_image_resolution(maps, size)``: per-pixel maps ``(..., h, w)`` of the denoiser's
      inputs spread over images of ``size`` ``(H, W)``, keeping each map's total;
    * ``trained_range``: the :class:`LogSNRRange` the model was trained on, or ``None``;
    * ``sampler()``: the log-SNR sampler estimates should use (an
      ``infodecomp.diffusion.sampling.LogSNRSampler``), or ``None`` for the estimators' default.
    """

    max_words: int
    image_shape: tuple[int, ...]
    unet: Any

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor: ...

    def encode(self, prompts: Sequence[str]) -> Cond: ...

    def token_positions(self, words: Sequence[str]) -> list[list[int]]: ...

    def encode_images(self, x: Tensor) -> Tensor:
        return x

    def decode_latents(self, z: Tensor) -> Tensor:
        return z

    def to_image_resolution(self, maps: Tensor, size: Sequence[int]) -> Tensor:
        if tuple(maps.shape[-2:]) != tuple(size):
            raise ValueError(f"maps of shape {tuple(maps.shape)} are not at the image size {tuple(size)}, and "
                             f"{type(self).__name__} does not resample them")
        return maps

    @property
    def trained_range(self) -> LogSNRRange | None:
        return None

    def sampler(self) -> Any:
        return None
