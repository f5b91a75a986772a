"""Low-variance training targets: Stable Target Field (Xu et al., ICLR 2023).

Denoising regression asks the network for ``E[x | z]`` but shows it one ``x`` per ``z``. Where
the noise is large the posterior over ``x`` is broad and that single target is mostly noise:
for v-prediction the target's spread given ``z`` is ``Var(x | z) / s^2``, the whole data
variance at low SNR. A conditional model pays this once per branch, and the unconditional and
single-label branches (which hold the broadest posteriors) are exactly the ones mutual
information compares.

The stable target replaces ``x`` by a self-normalised posterior mean over a reference set
``{x_j}`` drawn from the data (the example itself included)::

    w_j ∝ exp(-|z - a x_j|^2 / (2 s^2)),      x_target = sum_j w_j x_j,
    eps_target = (z - a x_target) / s.

At high SNR the weights fall on the example itself and the target is the ordinary one; at low
SNR it is close to the posterior mean, so the gradient noise falls with the reference size.
The bias is O(1/R) (Xu et al., Theorem 1). For a conditional model a reference only counts if
its conditions agree with what the example is given, weighted by how likely the training
dropout was to leave the example's conditions from the reference's (see
:func:`infodecomp.models.conditioning.condition_log_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from infodecomp.diffusion.channel import signal_noise_scales


def pad_tokens(ids: Tensor, width: int, pad_id: int = 0) -> Tensor:
    """Right-pad ``(B, L)`` token rows to ``width`` columns."""
    return torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=pad_id)


def stable_target(z: Tensor, logsnr: Tensor, refs: Tensor, match: Tensor | None = None) -> Tensor:
    """The noise target ``eps_target`` of each noisy example (Stable Target Field).

    Args:
        z: ``(B, *shape)`` noisy examples, ``z_i = a_i x_i + s_i eps_i``.
        logsnr: ``(B,)`` their log-SNRs.
        refs: ``(R, *shape)`` clean references; each ``x_i`` must be among them (put the batch
            first), or the target at high SNR is not the example's own noise.
        match: ``(B, R)``, which references may stand in for example ``i``: bool, or float
            log-weights (``-inf``: none; see
            :func:`~infodecomp.models.conditioning.condition_log_weights`). Default: all alike.

    Returns ``(B, *shape)``, in ``z``'s dtype.
    """
    if refs.shape[1:] != z.shape[1:]:
        raise ValueError(f"references have shape {tuple(refs.shape[1:])}, the examples {tuple(z.shape[1:])}")
    if match is not None and match.shape != (z.shape[0], refs.shape[0]):
        raise ValueError(f"match must be {(z.shape[0], refs.shape[0])}, got {tuple(match.shape)}")
    if match is not None and match.dtype == torch.bool:
        match = torch.where(match, 0.0, float("-inf"))
    if match is not None and not torch.isfinite(match).any(1).all():
        rows = torch.nonzero(~torch.isfinite(match).any(1)).flatten().tolist()
        raise ValueError(f"examples {rows} match no reference; each must at least match itself")
    zf, rf = z.flatten(1).double(), refs.flatten(1).double()
    a, s = signal_noise_scales(logsnr.double())
    # -|z - a x_j|^2 / (2 s^2) up to a term constant in j
    logits = (a[:, None] * (zf @ rf.T) - 0.5 * a[:, None] ** 2 * rf.square().sum(1)[None, :]) / s[:, None] ** 2
    if match is not None:
        logits = logits + match.to(logits)
    x_target = torch.softmax(logits, dim=1) @ rf
    eps = (zf - a[:, None] * x_target) / s[:, None]
    return eps.reshape(z.shape).to(z.dtype)


class ReferenceQueue:
    """The most recent ``size`` training examples and their conditions: references for
    :func:`stable_target` at the cost of memory only (no extra data loading or forwards)."""

    def __init__(self, size: int, pad_id: int = 0) -> None:
        if size < 1:
            raise ValueError(f"reference queue size must be positive, got {size}")
        self.size, self.pad_id = size, pad_id
        self.x: Tensor | None = None
        self.cond: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return 0 if self.x is None else self.x.shape[0]

    def with_batch(self, x: Tensor, cond: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """References for this batch: the batch first, then the queue (which is then updated)."""
        x = x.detach()
        cond = {k: v.detach() for k, v in cond.items()}
        if self.x is None or self.x.shape[1:] != x.shape[1:] or self.x.device != x.device or set(self.cond) != set(cond):
            refs, ref_cond = x, cond
        else:
            refs = torch.cat([x, self.x])
            ref_cond = {k: _cat_padded(v, self.cond[k], self.pad_id) for k, v in cond.items()}
        self.x = refs[: self.size]
        self.cond = {k: v[: self.size] for k, v in ref_cond.items()}
        return refs, ref_cond


def _cat_padded(a: Tensor, b: Tensor, pad_id: int) -> Tensor:
    """Concatenate along the batch, right-padding token rows of different widths."""
    if a.ndim == 2 and a.dtype == torch.long and a.shape[1] != b.shape[1]:
        width = max(a.shape[1], b.shape[1])
        a, b = pad_tokens(a, width, pad_id), pad_tokens(b, width, pad_id)
    return torch.cat([a, b])
