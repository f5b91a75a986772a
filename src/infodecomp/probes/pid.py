"""Partial information decomposition of two words of a caption (:mod:`infodecomp.estimators.pid`).

For words ``w1``, ``w2`` of caption ``c`` the four conditions are, by default (``given="rest"``,
the conditional PID of Dewan et al., NeurIPS 2024, given the rest of the prompt):

* ``both``: the caption; ``first``: the caption without ``w2``; ``second``: without ``w1``;
* ``base``: the caption without either word.

With ``given="none"`` they are the two words together (in caption order), each word alone, and
the empty prompt. All four are evaluated on the same draws in one batched forward, so the
atoms cost ``4 * n_draws`` denoiser calls per image whatever the measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.estimators.pid import PIDResult, partial_information
from infodecomp.interface import TextDenoiser
from infodecomp.probes.text import (
    EMPTY,
    as_text_denoiser,
    caption_words,
    check_inputs,
    word_positions,
)

GIVEN = ("rest", "none")


@dataclass
class WordPID:
    """PID maps of one word pair per image.

    Attributes:
        result: the atoms and informations, per pixel (``reduction="pixel"``: ``(B, H, W)``).
        captions: the captions as read; ``pairs``: the two words of each; ``positions``: theirs.
        conditions: the four prompts of each image, ``{"both": [...], "first": ..., ...}``.
    """

    result: PIDResult
    captions: list[str]
    pairs: list[tuple[str, str]]
    positions: list[tuple[int, int]]
    conditions: dict[str, list[str]]
    info: dict[str, Any] = field(default_factory=dict)

    def totals(self) -> dict[str, Tensor]:
        """Per image, each atom and information summed over its map: ``{name: (B,)}``."""
        return {k: e.value.flatten(1).sum(1) for k, e in {**self.result.information, **self.result.atoms}.items()}


def pair_positions(words: Sequence[str], pair: Sequence[str | int], caption: str) -> tuple[int, int]:
    """Positions of two different words of a caption, by name or position (negative counts from
    the end, as in Python).

    Raises:
        ValueError: not two words, a word not in the caption, or the same word twice.
    """
    if isinstance(pair, str) or len(pair) != 2:
        raise ValueError(f"PID needs exactly two words (names or positions), got {pair!r}")
    resolved = []
    for w in pair:
        if isinstance(w, int) and not isinstance(w, bool) and -len(words) <= w < 0:
            w = w + len(words)
        hits = word_positions(words, [w], caption)
        if len(hits) > 1:
            raise ValueError(f"word {w!r} occurs {len(hits)} times in {caption!r}: give its position instead")
        resolved.append(hits[0])
    if resolved[0] == resolved[1]:
        raise ValueError(f"PID needs two different words, got the same word twice ({words[resolved[0]]!r} at "
                         f"position {resolved[0]} of {caption!r})")
    return resolved[0], resolved[1]


def _drop(words: Sequence[str], positions: Sequence[int]) -> str:
    return " ".join(w for i, w in enumerate(words) if i not in positions)


def word_pid_prompts(caption_words_: Sequence[str], p1: int, p2: int, given: str = "rest") -> dict[str, str]:
    """The four prompts of the PID of the words at ``p1`` and ``p2``."""
    if given not in GIVEN:
        raise ValueError(f"given must be one of {GIVEN}, got {given!r}")
    ws = list(caption_words_)
    if given == "rest":
        return {"both": " ".join(ws), "first": _drop(ws, [p2]), "second": _drop(ws, [p1]), "base": _drop(ws, [p1, p2])}
    lo, hi = sorted((p1, p2))
    return {"both": f"{ws[lo]} {ws[hi]}", "first": ws[p1], "second": ws[p2], "base": EMPTY}


def word_pid(
    model: TextDenoiser | Any,
    x: Tensor,
    captions: Sequence[str],
    words: Sequence[str | int] | Sequence[Sequence[str | int]],
    *,
    given: str = "rest",
    measure: str = "pointwise-min",
    n_draws: int = 32,
    seed: int = 0,
    sampler: LogSNRSampler | None = None,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 2048,
    progress: bool = False,
) -> WordPID:
    """Per-pixel PID of two words of each caption, all four conditions on shared draws.

    Args:
        model: a :class:`~infodecomp.interface.TextDenoiser` (or a text-conditioned ``DiffusionModule``).
        x: the denoiser's inputs ``(B, *model.image_shape)``.
        words: one pair for every caption (e.g. ``("red", "circle")`` or ``(1, -1)``) or one pair
            per caption; names or positions (negative from the end).
        given: ``"rest"`` (the rest of the caption is given: conditional PID) or ``"none"``.
        measure: ``"pointwise-min"`` or ``"mmi"``.
    """
    model = as_text_denoiser(model)
    check_inputs(model, x)
    if isinstance(captions, str) or len(captions) != x.shape[0]:
        raise ValueError(f"expected one caption per image ({x.shape[0]}), got "
                         f"{'a single string' if isinstance(captions, str) else len(captions)}")
    parsed = [caption_words(c, model.max_words) for c in captions]
    one_pair = isinstance(words, str) or (len(words) == 2 and all(isinstance(w, str | int) for w in words))
    pairs_in = [words] * len(parsed) if one_pair else list(words)
    if len(pairs_in) != len(parsed):
        raise ValueError(f"words: expected one pair for every caption or one per caption ({len(parsed)}), "
                         f"got {len(pairs_in)}")
    positions = [pair_positions(ws, p, c) for ws, p, c in zip(parsed, pairs_in, captions, strict=True)]
    prompts = [word_pid_prompts(ws, p1, p2, given) for ws, (p1, p2) in zip(parsed, positions, strict=True)]
    conditions = {k: [p[k] for p in prompts] for k in ("both", "first", "second", "base")}
    result = partial_information(
        model, x, {k: model.encode(v) for k, v in conditions.items()}, measure=measure, reduction="pixel",
        sampler=sampler or model.sampler(), n_draws=n_draws, seed=seed, sample_ids=sample_ids, max_batch=max_batch,
        progress=progress,
    )
    return WordPID(result, [" ".join(ws) for ws in parsed],
                   [(ws[a], ws[b]) for ws, (a, b) in zip(parsed, positions, strict=True)], positions, conditions,
                   info={"given": given, "measure": measure, "n_draws": n_draws, "seed": seed})
