"""How trained models receive conditions, and how conditions are dropped during training.

A model's condition is a mapping from names to tensors of one of three kinds:

* ``"label"``: ``(B,)`` long; ``-1`` means "not given" (the learned null for that variable).
* ``"vector"``: ``(B, d)`` float; a row of NaN means "not given".
* ``"text"``: ``(B, L)`` long token ids of a word-level tokenizer; dropping a word removes
  its token, an all-padding row is the empty prompt.

A missing key, or ``cond=None``, means every variable is "not given". This is the same
convention the exact mixture oracles use for labels, so trained models and oracles are
called with the same conditions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from infodecomp.diffusion.targets import pad_tokens

Kind = Literal["label", "vector", "text"]


def null_like(kind: Kind, batch: int, width: int, device: torch.device | str, pad_id: int = 0) -> Tensor:
    """The "not given" value of one variable for a batch."""
    if kind == "label":
        return torch.full((batch,), -1, dtype=torch.long, device=device)
    if kind == "vector":
        return torch.full((batch, width), float("nan"), device=device)
    if kind == "text":
        return torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    raise ValueError(f"unknown condition kind {kind!r}")


def complete_condition(
    cond: Mapping[str, Tensor] | None, spec: Mapping[str, tuple[Kind, int]], batch: int,
    device: torch.device | str, pad_id: int = 0,
) -> dict[str, Tensor]:
    """Fill absent variables with their null value; reject unknown names and bad shapes."""
    cond = dict(cond or {})
    for name in cond:
        if name not in spec:
            raise ValueError(f"unknown condition {name!r}; this model is conditioned on {sorted(spec)}")
    out = {}
    for name, (kind, width) in spec.items():
        value = cond.get(name)
        if value is None:
            out[name] = null_like(kind, batch, width, device, pad_id)
            continue
        value = torch.as_tensor(value, device=device)
        if value.shape[0] != batch:
            raise ValueError(f"condition {name!r} has batch size {value.shape[0]}, expected {batch}")
        if kind == "label" and value.ndim != 1:
            raise ValueError(f"label condition {name!r} must be (B,), got {tuple(value.shape)}")
        if kind in ("vector", "text") and (value.ndim != 2 or (kind == "vector" and value.shape[1] != width)):
            raise ValueError(f"{kind} condition {name!r} must be (B, {width if kind == 'vector' else 'L'}), got {tuple(value.shape)}")
        out[name] = value
    return out


def batch_conditions(
    conds: Sequence[Mapping[str, Tensor] | None], sizes: Sequence[int], spec: Mapping[str, tuple[Kind, int]],
    device: torch.device | str, pad_id: int = 0,
) -> dict[str, Tensor]:
    """Concatenate several conditions (``None`` included) along the batch."""
    parts = [complete_condition(c, spec, n, device, pad_id) for c, n in zip(conds, sizes, strict=True)]
    merged = {}
    for name, (kind, _) in spec.items():
        values = [p[name] for p in parts]
        if kind == "text":
            width = max(v.shape[1] for v in values)
            values = [pad_tokens(v, width, pad_id) for v in values]
        merged[name] = torch.cat(values)
    return merged


def drop_conditions(
    cond: Mapping[str, Tensor], spec: Mapping[str, tuple[Kind, int]], p: float, generator: torch.Generator | None = None,
    *, word_p: float = 0.0, pad_id: int = 0, special_ids: Sequence[int] = (),
) -> dict[str, Tensor]:
    """Training-time dropout: each variable of each example is replaced by its null with
    probability ``p``, independently; in text, each word is also removed with probability
    ``word_p`` (so a caption with a word removed is in the training distribution)."""
    out = {}
    for name, (kind, _) in spec.items():
        value = cond.get(name)
        if value is None:
            continue
        batch = value.shape[0]
        drop = torch.rand(batch, generator=generator, device="cpu").to(value.device) < p
        if kind == "label":
            out[name] = torch.where(drop, torch.full_like(value, -1), value)
        elif kind == "vector":
            out[name] = torch.where(drop[:, None], torch.full_like(value, float("nan")), value)
        elif kind == "text":
            ids = value.clone()
            if word_p > 0:
                is_word = ids != pad_id
                for s in special_ids:
                    is_word &= ids != s
                remove = is_word & (torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device) < word_p)
                ids = remove_tokens(ids, remove, pad_id)
            ids[drop] = pad_id
            out[name] = ids
        else:
            raise ValueError(f"unknown condition kind {kind!r}")
    return out


def remove_tokens(ids: Tensor, remove: Tensor, pad_id: int) -> Tensor:
    """Delete the marked tokens of each row, shifting the rest left and padding at the end."""
    keep = ~remove & (ids != pad_id)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first, in order
    shifted = torch.gather(ids, 1, order)
    n_keep = keep.sum(1, keepdim=True)
    positions = torch.arange(ids.shape[1], device=ids.device)[None, :]
    return torch.where(positions < n_keep, shifted, torch.full_like(shifted, pad_id))


def condition_log_weights(
    cond: Mapping[str, Tensor], refs: Mapping[str, Tensor], spec: Mapping[str, tuple[Kind, int]],
    shape: tuple[int, int], device: torch.device | str = "cpu", pad_id: int = 0, *,
    word_p: float = 0.0, special_ids: Sequence[int] = (),
) -> Tensor:
    """``shape = (B, R)`` float64: ``log P(example i is given cond_i | reference j's full
    conditions refs_j)`` under :func:`drop_conditions`, up to a constant per example (``-inf``:
    reference ``j`` cannot have produced what ``i`` is given).

    A variable that ``i`` is not given weighs every reference alike; a given label or vector
    must be equal. A given caption must be what word dropout can leave of the reference's
    caption: its tokens a subsequence of the reference's, weighted by the number of ways to
    delete the other words times ``word_p`` per deleted word (``word_p = 0``: the same token
    sequence). So references weighted this way are importance samples of
    ``p(x | what i is given)``, which is what a stable target averages over.
    """
    logw = torch.zeros(shape, dtype=torch.float64, device=device)
    for name, (kind, _) in spec.items():
        value, ref = cond.get(name), refs.get(name)
        if value is None:
            continue
        if ref is None:
            raise ValueError(f"references carry no {name!r}, which the examples are given")
        if kind == "label":
            given, term = value >= 0, _log_indicator(value[:, None] == ref[None, :])
        elif kind == "vector":
            given, term = ~torch.isnan(value).all(1), _log_indicator((value[:, None, :] == ref[None, :, :]).all(-1))
        elif kind == "text":
            given = (value != pad_id).any(1)
            term = _caption_log_weights(value, ref, pad_id, word_p, special_ids)
        else:
            raise ValueError(f"unknown condition kind {kind!r}")
        logw += torch.where(given[:, None], term, torch.zeros_like(term))
    return logw


def condition_matches(
    cond: Mapping[str, Tensor], refs: Mapping[str, Tensor], spec: Mapping[str, tuple[Kind, int]],
    shape: tuple[int, int], device: torch.device | str = "cpu", pad_id: int = 0,
) -> Tensor:
    """``shape = (B, R)`` bool: is reference ``j`` (with full conditions ``refs``) consistent with
    what example ``i`` is given in ``cond``, with no word dropout (given values must be equal)?
    The support of :func:`condition_log_weights`."""
    return torch.isfinite(condition_log_weights(cond, refs, spec, shape, device, pad_id))


def _log_indicator(same: Tensor) -> Tensor:
    return torch.where(same, 0.0, float("-inf")).to(torch.float64)


def _caption_log_weights(value: Tensor, ref: Tensor, pad_id: int, word_p: float, special_ids: Sequence[int]) -> Tensor:
    """``(B, R)``: log of (ways to delete words of ``ref_j`` leaving ``value_i``) ``* word_p^deleted``.
    Special tokens cannot be deleted; rows are right-padded. Computed once per distinct pair
    of token rows (a training batch holds few distinct captions)."""
    width = max(value.shape[1], ref.shape[1])
    value, ref = pad_tokens(value, width, pad_id), pad_tokens(ref, width, pad_id)
    uv, inv_v = torch.unique(value, dim=0, return_inverse=True)
    ur, inv_r = torch.unique(ref, dim=0, return_inverse=True)
    n_v, n_r = (uv != pad_id).sum(1), (ur != pad_id).sum(1)
    deletable = ur != pad_id
    for s in special_ids:
        deletable &= ur != s
    # ways[i, j, k]: embeddings of the first t tokens of value row i into the first k of ref row j
    ways = torch.cumprod(torch.cat([torch.ones_like(deletable[:, :1]), deletable], 1).double(), 1)
    ways = ways[None].expand(uv.shape[0], -1, -1)
    count = torch.where(n_v[:, None] == 0, ways.gather(2, n_r[None, :, None].expand(uv.shape[0], -1, 1))[..., 0], 0.0)
    for t in range(width):
        same = (uv[:, None, t, None] == ur[None, :, :]).double()  # (V, U, width)
        nxt = [torch.zeros_like(ways[..., 0])]
        for k in range(width):
            nxt.append(deletable[None, :, k].double() * nxt[-1] + same[..., k] * ways[..., k])
        ways = torch.stack(nxt, -1)
        done = n_v[:, None] == t + 1
        count = torch.where(done, ways.gather(2, n_r[None, :, None].expand(uv.shape[0], -1, 1))[..., 0], count)
    extra = (n_r[None, :] - n_v[:, None]).double()
    if word_p > 0:
        logw = count.log() + extra * math.log(word_p)
    else:
        logw = torch.where(extra == 0, count.log(), float("-inf"))
    return logw[inv_v][:, inv_r].to(value.device)
