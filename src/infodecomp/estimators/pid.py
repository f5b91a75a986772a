"""Partial information decomposition (PID) of two conditions, from one denoiser.

Two conditions ``y1``, ``y2`` carry ``I(x; y1, y2) = R + U1 + U2 + S`` about ``x``, with
``I(x; y1) = R + U1`` and ``I(x; y2) = R + U2`` (Williams & Beer 2010): redundancy ``R`` (what
either alone tells), unique information ``U1``, ``U2`` (what only one tells) and synergy ``S``
(what only the pair tells). A redundancy measure fixes the other three atoms. Everything here is
built from the orthogonal information integrands of the estimation core,

    d_k(alpha, eps) = (eps_hat(z | y_k, c) - eps_hat(z | c))^2       per coordinate (k = 1, 2, 12)

with ``c`` the condition given (``None`` for the plain PID, the rest of a prompt for the
conditional PID of Dewan et al., "Diffusion PID", NeurIPS 2024), all four conditions evaluated
on the *same* ``(x, alpha, eps)`` draw in one batched forward. ``I_k = 1/2 ∫ E[sum d_k] d alpha``.

Two redundancy measures:

``"pointwise-min"`` (default)
    ``R = 1/2 ∫ E[ sum_coordinates min(d_1, d_2) ] d alpha``: the minimum-information principle
    applied where the information sits, per coordinate (pixel and channel), per log-SNR and per
    noise draw. Then per coordinate and draw ``U1 = d_1 - min``, ``U2 = d_2 - min`` (both >= 0,
    so ``R``, ``U1``, ``U2`` are non-negative everywhere, maps included) and
    ``S = d_12 - d_1 - d_2 + min``, which *can* be negative: it is reported as it comes, never
    clipped. ``R <= min(I1, I2)`` always. Two labels drawn in different places (the two-bit
    copy) have ``R = 0``: for an exact denoiser ``d_1`` vanishes off the pixels ``y1`` draws.

``"mmi"``
    The minimum-mutual-information measure (Barrett 2015): ``R = min(I1, I2)`` over the whole
    evaluation set, so the weaker condition has no unique information and
    ``S = I12 - max(I1, I2)``. Its maps are the weaker condition's map for ``R``, the difference
    of the two maps for the stronger condition's ``U`` (negative where the weaker one is
    stronger) and ``d_12`` minus the stronger map for ``S``. On the two-bit copy it gives
    ``R = min(I1, I2)`` and ``S = I12 - max(I1, I2)``.

On the three worlds where every PID measure agrees (``y1 = y2``: pure ``R``; ``y2`` independent
and never drawn: pure ``U1``; ``x`` set by ``y1 XOR y2``: pure ``S``) both measures give the
agreed answer for an exact denoiser (``tests/unit/test_pid.py``). Every atom is a linear
combination of integrands taken draw by draw (the engine's ``"sum"`` term), so each comes with
its own paired standard error, and ``R + U1 = I1``, ``R + U2 = I2``, ``R + U1 + U2 + S = I12``
hold exactly, per draw and per pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler
from infodecomp.estimators.engine import Reduction, Term, integrate
from infodecomp.interface import Cond, Denoiser, Estimate

PIDMeasure = Literal["pointwise-min", "mmi"]
PID_MEASURES: tuple[str, ...] = ("pointwise-min", "mmi")
PID_CONDITIONS: tuple[str, ...] = ("both", "first", "second", "base")
ATOMS: tuple[str, ...] = ("redundancy", "unique1", "unique2", "synergy")
INFORMATION: tuple[str, ...] = ("i1", "i2", "i12")


def _orth(cond: str) -> Term:
    return Term("orthogonal", cond=cond, ref="base")


def _sum(*parts: tuple[Term, float]) -> Term:
    return Term("sum", parts=tuple(parts))


def pid_terms(measure: PIDMeasure = "pointwise-min") -> dict[str, Term]:
    """The engine terms one PID pass integrates, over the conditions ``both``, ``first``,
    ``second`` and ``base`` (the information terms, then what the measure needs)."""
    if measure not in PID_MEASURES:
        raise ValueError(f"measure must be one of {PID_MEASURES}, got {measure!r}")
    i1, i2, i12 = _orth("first"), _orth("second"), _orth("both")
    terms = {"i1": i1, "i2": i2, "i12": i12}
    if measure == "pointwise-min":
        r = Term("redundancy", cond="first", ref="base", second="second")
        terms.update(redundancy=r, unique1=_sum((i1, 1.0), (r, -1.0)), unique2=_sum((i2, 1.0), (r, -1.0)),
                     synergy=_sum((i12, 1.0), (i1, -1.0), (i2, -1.0), (r, 1.0)))
    else:
        terms.update({"i2-i1": _sum((i2, 1.0), (i1, -1.0)), "i12-i1": _sum((i12, 1.0), (i1, -1.0)),
                      "i12-i2": _sum((i12, 1.0), (i2, -1.0))})
    return terms


@dataclass
class PIDResult:
    """Atoms and the informations they decompose, all on the same draws.

    Attributes:
        measure: the redundancy measure.
        atoms: ``{"redundancy", "unique1", "unique2", "synergy": Estimate}``.
        information: ``{"i1", "i2", "i12": Estimate}`` (``I(x; y1 | c)``, ``I(x; y2 | c)``,
            ``I(x; y1, y2 | c)``).
        weaker: for ``"mmi"``, which condition (1 or 2) has the smaller information and so sets
            ``R``; ``None`` for ``"pointwise-min"``.
        nfe: denoiser evaluations per data point (the four conditions, every draw).
    """

    measure: str
    atoms: dict[str, Estimate]
    information: dict[str, Estimate]
    weaker: int | None = None
    nfe: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Image-level values and SEs as plain floats (``reduction="mean"`` results)."""
        out: dict[str, Any] = {"measure": self.measure, "weaker": self.weaker, "nfe": self.nfe}
        for name, est in {**self.information, **self.atoms}.items():
            if est.value.numel() != 1:
                raise ValueError("summary() needs image-level estimates (reduction='mean')")
            out[name], out[f"{name}_se"] = float(est.value), float(est.se)
        return out


def _total(est: Estimate) -> float:
    """The batch-mean information of an estimate of any reduction."""
    v = est.value
    return float(v) if v.ndim == 0 else float(v.flatten(1).sum(1).mean()) if v.ndim > 1 else float(v.mean())


def _negated(est: Estimate) -> Estimate:
    return replace(est, value=-est.value)


def _zero(like: Estimate) -> Estimate:
    return replace(like, value=torch.zeros_like(like.value), se=torch.zeros_like(like.se),
                   info={**like.info, "term": "zero (mmi: the weaker condition has no unique information)"})


def assemble(measure: PIDMeasure, results: Mapping[str, Estimate], weaker: int | None = None) -> PIDResult:
    """A :class:`PIDResult` from the integrated :func:`pid_terms` (any reduction).

    For ``"mmi"``, ``weaker`` (1 or 2) says which condition sets ``R``; by default the one with
    the smaller batch-mean information here (give it when the batch is one shard of several).
    """
    info = {k: results[k] for k in INFORMATION}
    nfe = results["i1"].nfe
    if measure == "pointwise-min":
        return PIDResult(measure, {a: results[a] for a in ATOMS}, info, None, nfe)
    if weaker is None:
        weaker = 1 if _total(results["i1"]) <= _total(results["i2"]) else 2
    elif weaker not in (1, 2):
        raise ValueError(f"weaker must be 1 or 2, got {weaker!r}")
    if weaker == 1:
        atoms = {"redundancy": results["i1"], "unique1": _zero(results["i1"]), "unique2": results["i2-i1"],
                 "synergy": results["i12-i2"]}
    else:
        atoms = {"redundancy": results["i2"], "unique1": _negated(results["i2-i1"]),
                 "unique2": _zero(results["i2"]), "synergy": results["i12-i1"]}
    return PIDResult(measure, atoms, info, weaker, nfe)


def check_pid_conditions(conditions: Mapping[str, Cond]) -> None:
    """One clear error unless ``conditions`` has exactly the four PID conditions, all distinct."""
    if set(conditions) != set(PID_CONDITIONS):
        raise ValueError(f"PID needs the conditions {list(PID_CONDITIONS)} (y1 and y2 with what is given, y1 "
                         f"with it, y2 with it, and what is given alone), got {sorted(conditions)}")
    for a, b in (("first", "second"), ("first", "base"), ("second", "base")):
        if conditions[a] is conditions[b]:
            raise ValueError(f"PID conditions {a!r} and {b!r} are the same object: the two variables must "
                             "differ from each other and from what is given")


def partial_information(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    *,
    measure: PIDMeasure = "pointwise-min",
    reduction: Reduction = "mean",
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
) -> PIDResult:
    """PID of two conditions about ``x`` (given a third, or nothing), on shared draws.

    Args:
        conditions: ``{"both": (y1, y2, c), "first": (y1, c), "second": (y2, c), "base": c}``
            as the denoiser's conditions (``base`` is ``None`` for the plain PID).
        measure: ``"pointwise-min"`` (default) or ``"mmi"`` (see the module docstring).
        reduction: ``"mean"`` (image level, SE across items), ``"sample"`` or ``"pixel"``
            (maps), as in :func:`~infodecomp.estimators.engine.integrate`.
        Other arguments as in :func:`~infodecomp.estimators.engine.integrate`.

    The cost is one evaluation of each of the four conditions per draw (batched into one
    forward when ``max_batch`` allows), whatever the measure.
    """
    check_pid_conditions(conditions)
    results = integrate(
        denoiser, x, conditions, pid_terms(measure), sampler=sampler, n_draws=n_draws, reduction=reduction,
        seed=seed, sample_ids=sample_ids, max_batch=max_batch, progress=progress,
    )
    return assemble(measure, results)
