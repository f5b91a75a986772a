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


def condition_matches(
    cond: Mapping[str, Tensor], refs: Mapping[str, Tensor], spec: Mapping[str, tuple[Kind, int]],
    shape: tuple[int, int], device: torch.device | str = "cpu", pad_id: int = 0,
) -> Tensor:
    """``shape = (B, R)`` bool: is reference ``j`` (with full conditions ``refs``) consistent with what
    example ``i`` is given in ``cond`` (after dropout)?

    A variable that ``i`` is not given matches every reference; a given one must be equal
    (labels, vectors) or the same token sequence (text). So the matching references of ``i``
    are samples of ``p(x | what i is given)``, which is what a stable target averages over.
    """
    match = torch.ones(shape, dtype=torch.bool, device=device)
    for name, (kind, _) in spec.items():
        value, ref = cond.get(name), refs.get(name)
        if value is None:
            continue
        if ref is None:
            raise ValueError(f"references carry no {name!r}, which the examples are given")
        if kind == "label":
            given, same = value >= 0, value[:, None] == ref[None, :]
        elif kind == "vector":
            given, same = ~torch.isnan(value).all(1), (value[:, None, :] == ref[None, :, :]).all(-1)
        elif kind == "text":
            width = max(value.shape[1], ref.shape[1])
            value, ref = pad_tokens(value, width, pad_id), pad_tokens(ref, width, pad_id)
            given, same = (value != pad_id).any(1), (value[:, None, :] == ref[None, :, :]).all(-1)
        else:
            raise ValueError(f"unknown condition kind {kind!r}")
        match &= ~given[:, None] | same
    return match
