"""Helpers on conditions: validate, slice, repeat and concatenate condition pytrees.

A condition is ``None``, a tensor with the batch first, or a mapping from names to such
tensors (or ``None``). Apart from :func:`check_conditions`, which rejects non-finite values,
these helpers never look inside a tensor beyond its first dimension.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from infodecomp.interface import Cond


def condition_batch_size(cond: Cond) -> int | None:
    """Batch size of a condition, or ``None`` for the null condition."""
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        if cond.ndim == 0:
            raise ValueError("a tensor condition needs a batch dimension, got a 0-d tensor")
        return cond.shape[0]
    if isinstance(cond, Mapping):
        sizes = {k: condition_batch_size(v) for k, v in cond.items()}
        found = {s for s in sizes.values() if s is not None}
        if len(found) > 1:
            raise ValueError(f"the fields of a mapping condition disagree on the batch size: {sizes}")
        return found.pop() if found else None
    raise ValueError(
        f"a condition must be None, a Tensor or a mapping of tensors, got {type(cond).__name__}"
    )


def _leaves(cond: Cond, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Tensor | None]]:
    """``(key path, leaf)`` of each leaf of a condition; a bare tensor or ``None`` has the path ``()``."""
    if isinstance(cond, Mapping):
        for k, v in cond.items():
            yield from _leaves(v, (*path, str(k)))
    else:
        yield path, cond


def describe_condition(name: str, path: Sequence[str] = ()) -> str:
    """``condition 'y' (in 'cond')`` for field ``y`` of the named condition ``cond``."""
    if not path:
        return f"condition {name!r}"
    return f"condition {'.'.join(path)!r} (in {name!r})"


def check_conditions(conditions: Mapping[str, Cond], batch_size: int) -> None:
    """Raise ``ValueError`` naming the field of any named condition that is not a tensor with
    ``batch_size`` rows of finite values (``None`` fields are the null condition and pass).

    Only conditions as given by the caller are checked: models that mark a dropped variable
    with NaN do so inside their own code, after this check.
    """
    for name, cond in conditions.items():
        for path, leaf in _leaves(cond):
            if leaf is None:
                continue
            what = describe_condition(name, path)
            if not isinstance(leaf, Tensor):
                raise ValueError(
                    f"{what} is a {type(leaf).__name__}, expected None, a Tensor or a mapping of tensors"
                )
            if leaf.ndim == 0:
                raise ValueError(
                    f"{what} is a 0-d tensor, expected a tensor with one row per data point "
                    f"({batch_size} rows, as x)"
                )
            rows = leaf.shape[0]
            if rows != batch_size:
                raise ValueError(
                    f"{what} has {rows} rows, but x has {batch_size}; expected one condition row "
                    "per data point"
                )
            bad = (~torch.isfinite(leaf)).reshape(rows, -1).any(dim=1).sum().item()
            if bad:
                raise ValueError(
                    f"{what} has non-finite values (NaN or inf) in {bad} of {rows} rows, expected "
                    "finite values (to leave a variable out, omit its key or pass None rather "
                    "than NaN)"
                )


def slice_condition(cond: Cond, start: int, stop: int) -> Cond:
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        return cond[start:stop]
    return {k: slice_condition(v, start, stop) for k, v in cond.items()}


def repeat_condition(cond: Cond, repeats: int) -> Cond:
    """Repeat each batch entry ``repeats`` times consecutively (rows ordered sample-major)."""
    if cond is None or repeats == 1:
        return cond
    if isinstance(cond, Tensor):
        return cond.repeat_interleave(repeats, dim=0)
    return {k: repeat_condition(v, repeats) for k, v in cond.items()}


def concat_conditions(conds: Sequence[Cond]) -> tuple[bool, Cond]:
    """Concatenate conditions along the batch when they share one structure.

    Returns ``(True, merged)`` on success and ``(False, None)`` when the conditions cannot be
    merged without the denoiser's help (a ``None`` among tensors, different mapping keys).
    """
    if all(isinstance(c, Tensor) for c in conds):
        trailing = {tuple(c.shape[1:]) for c in conds}
        dtypes = {c.dtype for c in conds}
        if len(trailing) == 1 and len(dtypes) == 1:
            return True, torch.cat(list(conds), dim=0)
        return False, None
    if all(isinstance(c, Mapping) for c in conds):
        keys = {tuple(sorted(c.keys())) for c in conds}
        if len(keys) != 1:
            return False, None
        merged = {}
        for k in conds[0]:
            ok, value = concat_conditions([c[k] for c in conds])
            if not ok:
                return False, None
            merged[k] = value
        return True, merged
    return False, None
