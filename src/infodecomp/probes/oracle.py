"""The exact denoiser of the two-object shapes world, driven by captions.

Reads a caption (possibly with words removed) as the attribute labels it pins down and asks
:class:`~infodecomp.oracles.GaussianMixtureOracle` for the exact conditional denoiser: the
ground truth against which the text probes are checked. Colour and shape words before the
relation describe the first object, those after it the second; a removed word leaves its
attribute unspecified (label ``-1``). Single words without context ("red" alone) are
ambiguous (either object) and are refused.

A model trained with word dropout learns something slightly different for a caption with
words removed: the mixture of the full captions that dropout could have shortened to it,
each weighted by the chance of that deletion (``shapes_text_oracle(..., word_dropout=p)``). The
two agree when a colour or shape word is removed. They differ for the relation: "a red circle
a blue square" (``above`` removed) is one deletion from an "above" caption but two from a
"left of" one, so the trained model's exact answer is 87% "above" at ``p = 0.15``, where the
semantic reading says 50%. Comparing a trained model against its own training distribution
takes the second oracle; the first answers what the words mean.
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


def shapes_text_oracle(world: TwoObjectShapesWorld, max_words: int = 12, word_dropout: float | None = None) -> TextModel:
    """A :class:`TextModel` around the world's exact mixture denoiser.

    ``word_dropout=None`` reads a caption with words removed by what its words say; a
    probability ``p`` gives the exact denoiser of a model trained with that word dropout
    (captions weighted by :func:`~infodecomp.models.conditioning.condition_log_weights`).
    """
    if word_dropout is not None:
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout}")
        return _word_dropout_oracle(world, max_words, word_dropout)
    oracle = world.oracle()

    def encode(prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = [caption_labels(world, p) for p in prompts]
        return {k: torch.tensor([r[k] for r in rows], dtype=torch.long) for k in world.attributes}

    return TextModel(oracle, encode, max_words, world.image_shape)


def _word_dropout_oracle(world: TwoObjectShapesWorld, max_words: int, word_dropout: float) -> TextModel:
    from infodecomp.models.backbones import WordTokenizer
    from infodecomp.models.conditioning import condition_log_weights

    oracle = world.oracle()
    words = WordTokenizer(sorted({w for c in world.captions for w in c.split()}), max_words)
    full = {"text": words.encode(world.captions)}  # one row per mixture component, in order
    spec = {"text": ("text", max_words)}
    known: dict[tuple[int, ...], torch.Tensor] = {}  # caption -> its component weights (a probe asks again every draw)

    def log_prior(ids: torch.Tensor) -> torch.Tensor:
        rows = [tuple(r) for r in ids.tolist()]
        new = sorted(set(rows) - set(known))
        if new:
            w = condition_log_weights({"text": torch.tensor(new)}, full, spec, (len(new), oracle.n_components),
                                      word_p=word_dropout)
            known.update(zip(new, w, strict=True))
        return torch.stack([known[r] for r in rows])

    def denoise(z: torch.Tensor, logsnr: torch.Tensor, cond: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if cond is None:
            return oracle.denoise(z, logsnr)
        ids = cond["text"].to("cpu")
        prior = log_prior(ids)
        if not torch.isfinite(prior).any(1).all():
            row = int((~torch.isfinite(prior).any(1)).nonzero()[0, 0])
            raise ValueError(f"no caption of the world can leave {words.decode(ids[row:row + 1])[0]!r} under "
                             f"word dropout {word_dropout}")
        return oracle.denoise(z, logsnr, log_prior=prior.to(z.device))

    def encode(prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"text": words.encode(prompts)}

    return TextModel(denoise, encode, max_words, world.image_shape)
