"""Word-level information heatmaps: which pixels carry information about which word.

For word ``w`` of caption ``c`` (Kong et al., ICLR 2024, §3.3 and Fig. 1):

* CMI map  ``i_o(x; w | c without w)`` per pixel: contrasts the caption with the caption that
  has the word removed, the word's information *in context*;
* MI map   ``i_o(x; w)`` per pixel: the word alone against the empty prompt.

All words of a caption share one set of ``(alpha, eps)`` draws and one evaluation of the
shared conditions (the caption, the empty prompt), so the CMI maps of ``K`` words cost
``(K + 1) * n_draws`` denoiser calls per image instead of ``2 K n_draws`` word by word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.estimators.information import information_contrasts
from infodecomp.interface import TextDenoiser
from infodecomp.probes.text import (
    EMPTY,
    as_text_denoiser,
    caption_words,
    check_inputs,
    check_masks,
    select_positions,
    without_word,
)

KINDS = ("cmi", "mi")


@dataclass
class WordMaps:
    """Per-word information maps of a batch of captioned images.

    Attributes:
        captions: the captions as read (cut to the model's limit).
        words: per image, the words mapped (in order).
        positions: per image, their positions in the caption.
        cmi, mi: ``(B, K, H, W)`` maps (nats per pixel, channels summed); images with fewer
            than ``K`` mapped words have NaN in the unused slots. ``None`` if not computed.
        cmi_se, mi_se: per-pixel standard errors, same shape.
        nfe: denoiser evaluations per image.
    """

    captions: list[str]
    words: list[list[str]]
    positions: list[list[int]]
    cmi: Tensor | None = None
    mi: Tensor | None = None
    cmi_se: Tensor | None = None
    mi_se: Tensor | None = None
    nfe: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def maps(self, kind: str) -> Tensor:
        value = getattr(self, kind, None) if kind in KINDS else None
        if value is None:
            raise ValueError(f"no {kind!r} maps here; computed: {[k for k in KINDS if getattr(self, k) is not None]}")
        return value

    def select(self, predicate: Callable[[str], bool]) -> Tensor:
        """``(B, K)`` boolean: the slots holding a word for which ``predicate(word)`` is true."""
        k_max = max(len(p) for p in self.positions)
        return torch.tensor([[predicate(w) for w in ws] + [False] * (k_max - len(ws)) for ws in self.words],
                            dtype=torch.bool)

    def totals(self, kind: str = "cmi") -> Tensor:
        """Per-image, per-word information (the sum of each map): ``(B, K)``."""
        return self.maps(kind).flatten(2).sum(2)

    def mass_in_masks(self, masks: Tensor, kind: str = "cmi") -> Tensor:
        """Share of each word map inside a per-word mask ``(B, K, H, W)`` (NaN where unused or empty)."""
        maps = self.maps(kind)
        masks = check_masks(masks, maps.shape, "word masks")
        total = maps.clamp_min(0).flatten(2).sum(2)
        inside = (maps.clamp_min(0) * masks).flatten(2).sum(2)
        # a map with (numerically) no information has no location: NaN, left out of averages
        return torch.where(total > 1e-12, inside / total.clamp_min(1e-12), torch.full_like(total, float("nan")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"captions": self.captions, "words": self.words, "positions": self.positions,
                               "nfe_per_image": self.nfe}
        for kind in KINDS:
            if getattr(self, kind) is not None:
                totals = self.totals(kind)
                out[f"{kind}_nats"] = [[float(v) for v in row[: len(w)]] for row, w in zip(totals, self.words,
                                                                                         strict=True)]
        return out


def word_heatmaps(
    model: TextDenoiser | Any,
    x: Tensor,
    captions: Sequence[str],
    *,
    words: Sequence[str | int] | Sequence[Sequence[str | int]] | None = None,
    kinds: Sequence[str] = KINDS,
    estimator: str = "orthogonal",
    n_draws: int = 32,
    seed: int = 0,
    sampler: LogSNRSampler | None = None,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 2048,
    progress: bool = False,
) -> WordMaps:
    """CMI and/or MI maps of words of each caption, all on shared draws.

    Args:
        model: a :class:`~infodecomp.interface.TextDenoiser` (or a text-conditioned ``DiffusionModule``).
        x: the denoiser's inputs ``(B, *model.image_shape)`` (latents for a latent model).
        captions: one caption per image.
        words: which words to map: ``None`` (all), one list for every caption, or one list per
            caption; names (every occurrence) or positions.
        kinds: ``("cmi", "mi")`` or either one.
        sampler: log-SNR sampler (default: the model's own, ``model.sampler()``).

    Maps are at the resolution of ``x``; ``model.to_image_resolution`` spreads them over images.

    Raises:
        ValueError: an empty caption, a word that is not in its caption, wrong shapes.
    """
    model = as_text_denoiser(model)
    check_inputs(model, x)
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds}")
    if isinstance(captions, str) or len(captions) != x.shape[0]:
        raise ValueError(f"expected one caption per image ({x.shape[0]}), got "
                         f"{'a single string' if isinstance(captions, str) else len(captions)}")
    parsed = [caption_words(c, model.max_words) for c in captions]
    positions = select_positions(parsed, captions, words)
    k_max = max(len(p) for p in positions)
    full = [" ".join(ws) for ws in parsed]

    conditions: dict[str, Any] = {"caption": model.encode(full)}
    contrasts: dict[str, tuple[str, str]] = {}
    if "mi" in kinds:
        conditions["empty"] = model.encode([EMPTY] * len(parsed))
    for k in range(k_max):
        if "cmi" in kinds:
            # images with fewer words repeat their caption here (a zero contrast, dropped below)
            conditions[f"without/{k}"] = model.encode(
                [without_word(ws, p[k]) if k < len(p) else f for ws, p, f in zip(parsed, positions, full, strict=True)]
            )
            contrasts[f"cmi/{k}"] = ("caption", f"without/{k}")
        if "mi" in kinds:
            conditions[f"alone/{k}"] = model.encode(
                [ws[p[k]] if k < len(p) else EMPTY for ws, p in zip(parsed, positions, strict=True)]
            )
            contrasts[f"mi/{k}"] = (f"alone/{k}", "empty")
    est = information_contrasts(
        model, x, conditions, contrasts, estimator=estimator, reduction="pixel", sampler=sampler or model.sampler(),
        n_draws=n_draws,
        seed=seed, sample_ids=sample_ids, max_batch=max_batch, progress=progress,
    )
    used = torch.zeros(x.shape[0], k_max, dtype=torch.bool)
    for b, p in enumerate(positions):
        used[b, : len(p)] = True
    out = WordMaps(captions=full, words=[[ws[i] for i in p] for ws, p in zip(parsed, positions, strict=True)],
                   positions=positions, nfe=next(iter(est.values())).nfe,
                   info={"estimator": estimator, "n_draws": n_draws, "seed": seed})
    mask = used.to(x.device)[:, :, None, None]
    for kind in kinds:
        value = torch.stack([est[f"{kind}/{k}"].value for k in range(k_max)], dim=1)
        se = torch.stack([est[f"{kind}/{k}"].se for k in range(k_max)], dim=1)
        nan = torch.full_like(value, float("nan"))
        setattr(out, kind, torch.where(mask, value, nan))
        setattr(out, f"{kind}_se", torch.where(mask, se, nan))
    return out


def word_by_word_cmi(
    model: TextDenoiser | Any, x: Tensor, captions: Sequence[str], *, n_draws: int = 32, seed: int = 0,
    sampler: LogSNRSampler | None = None, max_batch: int = 2048,
) -> Tensor:
    """The same CMI maps computed one word at a time (``2 K n_draws`` calls per image).

    Kept as the baseline of ``benchmarks/word_heatmaps.py``; use :func:`word_heatmaps`.
    """
    model = as_text_denoiser(model)
    sampler = sampler or model.sampler()
    parsed = [caption_words(c, model.max_words) for c in captions]
    k_max = max(len(w) for w in parsed)
    maps = []
    for k in range(k_max):
        full = [" ".join(ws) for ws in parsed]
        drop = [without_word(ws, k) if k < len(ws) else " ".join(ws) for ws in parsed]
        est = information_contrasts(
            model, x, {"caption": model.encode(full), "without": model.encode(drop)}, {"cmi": ("caption", "without")},
            reduction="pixel", sampler=sampler, n_draws=n_draws, seed=seed, max_batch=max_batch,
        )
        maps.append(est["cmi"].value)
    return torch.stack(maps, dim=1)
