"""Prompt interventions: edit a word, regenerate from the same inverted latent, see what moves.

Following Kong et al. (ICLR 2024, §4.3): invert the image with DDIM under its caption,
regenerate from that latent with the caption (the reconstruction) and with the edited caption
(a word omitted, or swapped for another), and take the per-pixel change between the two. A
map that says where a word's information lives should predict where the image changes when
the word changes; we report the Pearson correlation between the change and the word's CMI map
(per image across pixels, averaged over images; and across images between totals), with
bootstrap standard errors over images, next to the same correlations for attention maps.

A latent model (a :class:`~infodecomp.interface.TextDenoiser` with a VAE) is inverted and
regenerated in its latent space, inside its trained log-SNR range, and the change is measured
between the decoded images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from infodecomp.diffusion.ddim import ddim_generate, ddim_invert
from infodecomp.estimators.engine import progress_bar
from infodecomp.interface import Cond, TextDenoiser
from infodecomp.probes.text import (
    as_text_denoiser,
    caption_words,
    check_inputs,
    without_word,
    word_positions,
)


@dataclass(frozen=True)
class Edit:
    """Omit the word at ``position`` (``replacement=None``) or replace it."""

    position: int
    replacement: str | None = None

    def apply(self, words: Sequence[str]) -> str:
        if self.replacement is None:
            return without_word(words, self.position)
        return " ".join([*words[: self.position], self.replacement, *words[self.position + 1 :]])


class _Ticking:
    """The denoiser, advancing a progress bar at every call."""

    def __init__(self, model: TextDenoiser, advance: Callable[[], None]) -> None:
        self.model, self.advance = model, advance

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
        out = self.model(z, logsnr, cond)
        self.advance()
        return out


@torch.no_grad()
def intervene(
    model: TextDenoiser | object, x: Tensor, captions: Sequence[str], edits: Sequence[Edit], *, steps: int = 50,
    low: float | None = None, high: float | None = None, progress: bool = False,
) -> dict[str, Tensor]:
    """Regenerate each image with its caption and with the edited caption from one inverted latent.

    Args:
        x: images ``(B, C, H, W)`` in ``[-1, 1]``; ``model.encode_images`` makes them the
            denoiser's inputs and ``model.decode_latents`` turns the regenerations back.
        low, high: the DDIM log-SNR grid (default: the model's trained range, else [-12, 12]).

    Returns ``{"latents": the denoiser's inputs, "reconstruction", "edited": (B, C, H, W) images,
    "change": (B, H, W)}``; the change is the absolute difference summed over channels.
    """
    model = as_text_denoiser(model)
    if not (len(captions) == len(edits) == x.shape[0]):
        raise ValueError(f"need one caption and one edit per image: {x.shape[0]} images, {len(captions)} captions, "
                         f"{len(edits)} edits")
    latents = model.encode_images(x)
    check_inputs(model, latents)
    trained = model.trained_range
    low = low if low is not None else trained.low if trained is not None else -12.0
    high = high if high is not None else trained.high if trained is not None else 12.0
    parsed = [caption_words(c, model.max_words) for c in captions]
    for ws, e, c in zip(parsed, edits, captions, strict=True):
        word_positions(ws, [e.position], c)  # range check
    full = model.encode([" ".join(ws) for ws in parsed])
    edited_cond = model.encode([e.apply(ws) for ws, e in zip(parsed, edits, strict=True)])
    with progress_bar(progress, 3 * steps + 2, "DDIM inversion and regeneration") as advance:
        net = _Ticking(model, advance)
        z = ddim_invert(net, latents, full, steps=steps, low=low, high=high)
        rec = model.decode_latents(ddim_generate(net, z, full, steps=steps, low=low, high=high))
        edited = model.decode_latents(ddim_generate(net, z, edited_cond, steps=steps, low=low, high=high))
    return {"latents": latents, "reconstruction": rec, "edited": edited, "change": (edited - rec).abs().sum(1)}


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last dimension."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.square().sum(-1).sqrt() * b.square().sum(-1).sqrt()).clamp_min(1e-20)


@dataclass
class Correlation:
    value: float
    se: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "se": self.se}


@dataclass
class InterventionResult:
    pixel: dict[str, Correlation]
    image: dict[str, Correlation]
    n_images: int
    per_image: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"pixel": {k: v.to_dict() for k, v in self.pixel.items()},
                "image": {k: v.to_dict() for k, v in self.image.items()}, "n_images": self.n_images}


def change_correlations(
    change: Tensor, maps: Mapping[str, Tensor], *, n_boot: int = 1000, seed: int = 0,
) -> InterventionResult:
    """Correlations between the pixel change ``(B, H, W)`` and each method's map ``(B, H, W)``.

    Pixel level: the mean over images of the per-image Pearson correlation across pixels.
    Image level: the Pearson correlation across images of the total change and the map total
    (NaN for fewer than 3 images). Standard errors: bootstrap over images (``n_boot`` resamples,
    fixed ``seed``); NaN for a single image.
    """
    if change.ndim != 3:
        raise ValueError(f"change must be (B, H, W), got {tuple(change.shape)}")
    n = change.shape[0]
    if n < 1:
        raise ValueError("need at least one image to correlate its change with maps")
    gen = torch.Generator().manual_seed(seed)
    boot = torch.randint(n, (n_boot, n), generator=gen)
    flat_change = change.flatten(1).double().cpu()
    total_change = flat_change.sum(1)
    out = InterventionResult({}, {}, n)
    nan = float("nan")
    for name, m in maps.items():
        if m.shape != change.shape:
            raise ValueError(f"{name} maps have shape {tuple(m.shape)}, the change has {tuple(change.shape)}")
        flat = torch.nan_to_num(m.flatten(1).double().cpu())
        per = torch.nan_to_num(_pearson(flat, flat_change))
        out.per_image[name] = per
        out.pixel[name] = Correlation(float(per.mean()), float(per[boot].mean(1).std()) if n > 1 else nan)
        if n < 3:  # a correlation across fewer than three images says nothing
            out.image[name] = Correlation(nan, nan)
            continue
        totals = flat.sum(1)
        r = float(_pearson(totals, total_change))
        rb = torch.nan_to_num(_pearson(totals[boot], total_change[boot]))
        out.image[name] = Correlation(r if math.isfinite(r) else 0.0, float(rb.std()))
    return out
