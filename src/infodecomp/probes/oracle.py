"""The exact denoiser of the two-object shapes world, driven by captions.

Reads a caption (possibly with words removed) as the attribute labels it pins down and asks
:class:`~infodecomp.oracles.GaussianMixtureOracle` for the exact conditional denoiser: the
ground truth against which the text probes are checked. Colour and shape words before the
relation describe the first object, those after it the second; a removed word leaves its
attribute unspecified (label ``-1``). Single words without context ("red" alone) are
ambiguous (either object) and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infodecomp.probes.text import TextModel
from infodecomp.tasks.images import RELATIONS, TwoObjectShapesWorld


def caption_labels(world: TwoObjectShapesWorld, caption: str) -> dict[str, int]:
    """Attribute labels a caption pins down (``-1``: unspecified)."""
    words = caption.split()
    labels = {k: -1 for k in world.attributes}
    if not words:
        return labels
    relation_words = {w: r for r in RELATIONS for w in r.split()}
    rel_at = [i for i, w in enumerate(words) if w in relation_words]
    if rel_at:
        rel = relation_words[words[rel_at[0]]]
        if rel in world.attributes["relation"]:
            labels["relation"] = world.attributes["relation"].index(rel)
        segments = (words[: rel_at[0]], words[rel_at[-1] + 1 :])
    else:
        second = [i for i, w in enumerate(words) if w == "a" and i > 0]
        if not second:
            raise ValueError(f"cannot tell which object the words of {caption!r} describe")
        segments = (words[: second[0]], words[second[0] :])
    for obj, seg in enumerate(segments, start=1):
        for w in seg:
            for attr in ("colour", "shape"):
                values = world.attributes[f"{attr}_{obj}"]
                if w in values:
                    labels[f"{attr}_{obj}"] = values.index(w)
    return labels


def shapes_text_oracle(world: TwoObjectShapesWorld, max_words: int = 12) -> TextModel:
    """A :class:`TextModel` around the world's exact mixture denoiser."""
    oracle = world.oracle()

    def encode(prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = [caption_labels(world, p) for p in prompts]
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.long) for k in world.attributes}

    return TextModel(oracle, encode, max_words, world.image_shape)
