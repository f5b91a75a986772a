"""Cross-attention maps of a diffusers UNet, aggregated DAAM-style (Tang et al., ACL 2023).

A recording processor wraps each cross-attention layer's own processor (the layer's output is
unchanged) and additionally computes the softmax attention of every image location to every
text token. Maps are averaged over heads, upsampled to the image resolution, and summed over
layers and over the noise levels at which the UNet is run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from infodecomp.diffusion.channel import add_noise
from infodecomp.diffusion.sampling import derive_seed
from infodecomp.interface import TextDenoiser
from infodecomp.probes.text import as_text_denoiser, caption_words, check_inputs, select_positions


class _Recording:
    """Wraps one attention layer's processor and accumulates its cross-attention maps."""

    def __init__(self, inner: Any, store: AttentionStore) -> None:
        self.inner, self.store = inner, store

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, *args, **kwargs) -> Tensor:
        if encoder_hidden_states is not None and self.store.active:
            with torch.no_grad():
                hs = hidden_states
                if hs.ndim == 4:
                    hs = hs.flatten(2).transpose(1, 2)
                ehs = encoder_hidden_states
                if attn.norm_cross:
                    ehs = attn.norm_encoder_hidden_states(ehs)
                query = attn.head_to_batch_dim(attn.to_q(hs))
                key = attn.head_to_batch_dim(attn.to_k(ehs))
                probs = attn.get_attention_scores(query, key, None)  # (B * heads, HW, T)
                self.store.add(probs.reshape(hs.shape[0], attn.heads, hs.shape[1], -1).mean(1))
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


class AttentionStore:
    """Sum of cross-attention maps ``(B, T, H, W)`` over layers and forward passes."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.total: Tensor | None = None
        self.calls = 0
        self.active = True

    def add(self, probs: Tensor) -> None:  # (B, HW, T)
        batch, hw, tokens = probs.shape
        side = int(round(hw**0.5))
        ratio = self.size[1] / self.size[0]
        h = int(round((hw / ratio) ** 0.5)) if side * side != hw else side
        w = hw // h
        maps = probs.transpose(1, 2).reshape(batch, tokens, h, w).float()
        maps = F.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)
        self.total = maps if self.total is None else self.total + maps
        self.calls += 1


def cross_attention_modules(unet: torch.nn.Module) -> list[tuple[str, Any]]:
    from diffusers.models.attention_processor import Attention

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention]


@contextmanager
def record_cross_attention(unet: torch.nn.Module, size: tuple[int, int]) -> Iterator[AttentionStore]:
    """Record every cross-attention layer of ``unet`` while the block runs; restores on exit."""
    layers = cross_attention_modules(unet)
    if not layers:
        raise ValueError(f"{type(unet).__name__} has no cross-attention layers to record")
    store = AttentionStore(size)
    originals = [(m, m.processor) for _, m in layers]
    try:
        for m, proc in originals:
            m.set_processor(_Recording(proc, store))
        yield store
    finally:
        for m, proc in originals:
            m.set_processor(proc)


@torch.no_grad()
def word_attention_maps(
    model: TextDenoiser | Any,
    x: Tensor,
    captions: Sequence[str],
    *,
    words: Sequence[str | int] | Sequence[Sequence[str | int]] | None = None,
    logsnrs: Sequence[float] = (-4.0, -2.0, 0.0, 2.0, 4.0),
    seed: int = 0,
    max_batch: int = 256,
) -> Tensor:
    """Aggregated cross-attention map of each word: ``(B, K, H, W)`` (NaN in unused slots).

    The UNet runs on the images noised at each log-SNR in ``logsnrs`` (fixed noise per image
    from ``seed``) with the full caption, ``max_batch`` images at a time; each word's map sums
    its tokens' maps. ``words`` selects as in :func:`~infodecomp.probes.words.word_heatmaps`; maps
    are at the resolution of ``x`` (the denoiser's inputs).
    """
    model = as_text_denoiser(model)
    check_inputs(model, x)
    parsed = [caption_words(c, model.max_words) for c in captions]
    positions = select_positions(parsed, captions, words)
    token_sets = []
    for ws, pos in zip(parsed, positions, strict=True):
        tokens = model.token_positions(ws)
        token_sets.append([tokens[p] for p in pos])
    return token_attention_maps(model, x, [" ".join(ws) for ws in parsed], token_sets, logsnrs=logsnrs, seed=seed,
                                max_batch=max_batch)


@torch.no_grad()
def token_attention_maps(
    model: TextDenoiser, x: Tensor, prompts: Sequence[str], token_sets: Sequence[Sequence[Sequence[int]]], *,
    logsnrs: Sequence[float] = (-4.0, -2.0, 0.0, 2.0, 4.0), seed: int = 0, max_batch: int = 256,
    sample_ids: Sequence[int] | None = None,
) -> Tensor:
    """Cross-attention maps ``(B, K, H, W)``: for image ``b``, map ``k`` sums encoder positions
    ``token_sets[b][k]`` (an empty set gives NaN). Noise depends on ``(seed, sample id, level)``."""
    if model.unet is None:
        raise ValueError(f"attention maps need the model's diffusers UNet ({type(model).__name__}.unet is None)")
    ids = list(sample_ids) if sample_ids is not None else list(range(x.shape[0]))
    size = tuple(x.shape[-2:])
    parts = []
    for i0 in range(0, x.shape[0], max_batch):  # images in chunks: memory is bounded by max_batch
        xs = x[i0 : i0 + max_batch]
        cond = model.encode(list(prompts[i0 : i0 + max_batch]))
        gen = torch.Generator(device=x.device)
        with record_cross_attention(model.unet, size) as store:
            for j, level in enumerate(logsnrs):
                # each image's noise depends only on (seed, sample id, level): chunking changes nothing
                eps = torch.stack([torch.randn(xs.shape[1:], generator=gen.manual_seed(derive_seed(seed, ids[i0 + i], j)),
                                               device=x.device, dtype=x.dtype) for i in range(xs.shape[0])])
                logsnr = torch.full((xs.shape[0],), float(level), device=x.device, dtype=x.dtype)
                model(add_noise(xs, logsnr, eps), logsnr, cond)
        if store.total is None:
            raise ValueError("no cross-attention was recorded: does the denoiser run model.unet?")
        parts.append((store.total / max(store.calls, 1)).cpu())  # (b, T, H, W)
    total = torch.cat(parts)
    k_max = max((len(t) for t in token_sets), default=0)
    out = torch.full((x.shape[0], k_max) + size, float("nan"))
    for b, sets in enumerate(token_sets):
        for k, tokens in enumerate(sets):
            if tokens:
                out[b, k] = total[b, list(tokens)].sum(0)
    return out
