"""Captions as word sequences, and the adapter from in-repo models to the text probes.

Every text probe works on *word positions* of a caption: the CMI map of a word contrasts the
caption with the caption that has that word removed (Kong et al., ICLR 2024, §3.3), so a
caption that uses the same word twice ("a red circle left of a red square") gives each
occurrence its own map. Probes take any :class:`~infodecomp.interface.TextDenoiser`;
:class:`TextModel` is the one for pixel-space denoisers (the in-repo text-conditioned
``DiffusionModule`` and the exact oracles): it turns prompt strings into the model's condition,
says how many words the model reads, which encoder positions hold each word (for attention
maps) and where its UNet is, and keeps the protocol's identity image hooks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from infodecomp.interface import Cond, TextDenoiser

#: the empty prompt, the null condition of text models
EMPTY = ""


def caption_words(caption: str, max_words: int | None = None) -> list[str]:
    """The words of a caption (whitespace-separated), cut to ``max_words`` with a warning.

    Raises:
        ValueError: for an empty caption or one that is not a string.
    """
    if not isinstance(caption, str):
        raise ValueError(f"a caption must be a string, got {type(caption).__name__}: {caption!r}")
    words = caption.split()
    if not words:
        raise ValueError(f"empty caption {caption!r}: the text probes need at least one word")
    if max_words is not None and len(words) > max_words:
        cut = " ".join(words[max_words:])
        warnings.warn(
            f"caption {caption!r} has {len(words)} words but the model reads at most {max_words}; "
            f"cut from the end: {cut!r}", stacklevel=3,
        )
        words = words[:max_words]
    return words


def without_word(words: Sequence[str], position: int) -> str:
    """The caption with the word at ``position`` removed."""
    return " ".join(list(words[:position]) + list(words[position + 1 :]))


def word_positions(words: Sequence[str], wanted: Sequence[str | int] | None, caption: str = "") -> list[int]:
    """Positions of the wanted words (names or positions) in a caption; all words if ``None``.

    A name that occurs several times selects every occurrence.

    Raises:
        ValueError: for a word that is not in the caption or a position out of range.
    """
    if wanted is None:
        return list(range(len(words)))
    if isinstance(wanted, str):
        wanted = [wanted]
    positions: list[int] = []
    for w in wanted:
        if isinstance(w, int) and not isinstance(w, bool):
            if not 0 <= w < len(words):
                raise ValueError(f"word position {w} is out of range for {caption or ' '.join(words)!r} "
                                 f"({len(words)} words)")
            positions.append(w)
            continue
        hits = [i for i, v in enumerate(words) if v == w]
        if not hits:
            raise ValueError(f"word {w!r} is not in the caption {caption or ' '.join(words)!r} "
                             f"(its words: {list(words)})")
        positions.extend(hits)
    return list(dict.fromkeys(positions))


def select_positions(
    parsed: Sequence[Sequence[str]], captions: Sequence[str],
    words: Sequence[str | int] | Sequence[Sequence[str | int]] | None,
) -> list[list[int]]:
    """Positions of the wanted words in each parsed caption.

    ``words``: ``None`` (all words), one list for every caption, or one list per caption; names
    (every occurrence) or positions.
    """
    if words is None or isinstance(words, str) or all(isinstance(w, str | int) for w in words):
        wanted = [words] * len(parsed)
    else:
        if len(words) != len(parsed):
            raise ValueError(f"words: expected one list per caption ({len(parsed)}), got {len(words)}")
        wanted = list(words)
    return [word_positions(ws, w, c) for ws, w, c in zip(parsed, wanted, captions, strict=True)]


class TextModel(TextDenoiser):
    """A pixel-space text-conditioned denoiser as a :class:`~infodecomp.interface.TextDenoiser`.

    Args:
        denoiser: ``eps_hat(z, logsnr, cond)`` (with ``batch_conditions`` if it has one).
        encode: prompts -> the denoiser's condition for those prompts (``""`` is the null).
        max_words: most words the model reads; longer captions are cut with a warning.
        image_shape: ``(C, H, W)`` of the denoiser's input.
        unet: the diffusers UNet the denoiser runs (for cross-attention maps), if any.
        token_positions: words of a caption -> encoder positions of each word.
        word_dropout: the word dropout the model was trained with, if known (the exact oracle of
            its training distribution uses it, :func:`~infodecomp.probes.oracle.shapes_text_oracle`).
    """

    def __init__(
        self,
        denoiser: Callable[..., Tensor],
        encode: Callable[[Sequence[str]], Cond],
        max_words: int,
        image_shape: Sequence[int],
        *,
        unet: torch.nn.Module | None = None,
        token_positions: Callable[[Sequence[str]], list[list[int]]] | None = None,
        word_dropout: float | None = None,
    ) -> None:
        self.word_dropout = word_dropout
        self.denoiser = denoiser
        self._encode = encode
        self.max_words = int(max_words)
        self.image_shape = tuple(image_shape)
        self.unet = unet
        self._token_positions = token_positions
        if hasattr(denoiser, "batch_conditions"):
            self.batch_conditions = denoiser.batch_conditions  # the engine's one-forward hook

    def __call__(self, z: Tensor, logsnr: Tensor, cond: Cond = None) -> Tensor:
        return self.denoiser(z, logsnr, cond)

    def encode(self, prompts: Sequence[str]) -> Cond:
        """The condition for a list of prompts (``""``: the empty prompt)."""
        return self._encode(list(prompts))

    def token_positions(self, words: Sequence[str]) -> list[list[int]]:
        if self._token_positions is None:
            raise ValueError("this model does not say which encoder positions hold each word; "
                             "attention maps need token_positions")
        return self._token_positions(words)

    @classmethod
    def from_module(cls, module: Any) -> TextModel:
        """Adapter for a :class:`~infodecomp.lightning.DiffusionModule` with a text backbone."""
        if isinstance(module, TextModel):
            return module
        backbone = getattr(module, "backbone", None)
        words = getattr(backbone, "words", None)
        if words is None or "text" not in getattr(module, "condition_spec", {}):
            raise ValueError(
                f"text probes need a text-conditioned model (e.g. TextConditionedUNet); this one is "
                f"{type(backbone).__name__} with conditions {list(getattr(module, 'condition_spec', {}))}"
            )

        def encode(prompts: Sequence[str]) -> Mapping[str, Tensor]:
            return {"text": words.encode(prompts).to(module.device)}

        def positions(ws: Sequence[str]) -> list[list[int]]:
            return [[i + 1] for i in range(len(ws))]  # position 0 holds the BOS token

        net = module.ema.module if hasattr(module, "ema") else backbone
        word_dropout = getattr(module, "hparams", {}).get("word_dropout")
        return cls(module, encode, words.max_words, module.input_shape, unet=getattr(net, "unet", None),
                   token_positions=positions, word_dropout=word_dropout)


def as_text_denoiser(model: Any) -> TextDenoiser:
    """``model`` itself if it is a :class:`~infodecomp.interface.TextDenoiser`, else the
    :class:`TextModel` of a text-conditioned ``DiffusionModule`` (a clear error otherwise)."""
    if isinstance(model, TextDenoiser):
        return model
    return TextModel.from_module(model)


def check_inputs(model: TextDenoiser, x: Tensor) -> None:
    """A clear error unless ``x`` is a batch of the denoiser's inputs ``(B, *image_shape)``."""
    shape = tuple(model.image_shape)
    if not isinstance(x, Tensor) or x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected images of shape (B, {', '.join(map(str, shape))}), got {got}")


def check_masks(masks: Tensor, shape: Sequence[int], what: str = "masks") -> Tensor:
    """Boolean masks of shape ``shape``; a clear error otherwise."""
    if not isinstance(masks, Tensor):
        raise ValueError(f"{what} must be a tensor, got {type(masks).__name__}")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"{what} have shape {tuple(masks.shape)}, expected {tuple(shape)} (one mask per map, "
                         "at the map's resolution)")
    return masks.bool()
