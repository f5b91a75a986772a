"""The one code path behind every estimator.

Every quantity infodecomp estimates is built from the same step: draw ``(alpha, eps)`` for
each data point, evaluate the denoiser under each needed condition on that *same* draw (one
batched forward where possible), form a per-coordinate integrand, and reduce it to the shape
asked for. :func:`integrate` averages the step over a log-SNR proposal (likelihood, MI, CMI,
their pointwise and per-pixel versions); :func:`evaluate_curve` keeps it on a fixed log-SNR
grid (MMSE curves). Both stream: memory depends on the chunk, not on the number of draws.

Integrands (per coordinate, before the 1/2 and the importance weight):

* ``"error"``       ``(eps - eps_hat[cond])^2``                                   (MMSE)
* ``"nll"``         ``(eps - eps_hat[cond])^2 - (eps - s z)^2``                   (-log p)
* ``"standard"``    ``(eps - eps_hat[ref])^2 - (eps - eps_hat[cond])^2``          (i_s)
* ``"orthogonal"``  ``(eps_hat[cond] - eps_hat[ref])^2``                          (i_o >= 0)
* ``"redundancy"``  ``min((eps_hat[cond] - eps_hat[ref])^2, (eps_hat[second] - eps_hat[ref])^2)``
  per coordinate and draw (the pointwise-minimum redundancy of :mod:`~infodecomp.estimators.pid`)
* ``"sum"``         ``sum_k c_k * integrand(part_k)``, a linear combination of other terms taken
  draw by draw, so its standard error is that of the combination (paired), not a bound

The likelihood integrand uses the standard normal as a control variate: ``s z`` is the
optimal noise prediction for ``x ~ N(0, I)``, whose pointwise integral is known
(``(||x||^2 - d) / 2``), so ``-log p(x) = (d/2) log(2 pi) + ||x||^2 / 2 + (1/2) ∫ E[(eps -
eps_hat)^2 - (eps - s z)^2] d alpha``. This equals the textbook form with ``d sigmoid(alpha)``
in expectation but its integrand vanishes at both ends of the log-SNR axis for every noise
draw, which removes the O(1) per-draw variance that makes the textbook form unusable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from infodecomp.diffusion.channel import add_noise
from infodecomp.diffusion.sampling import LogSNRSampler, derive_seed
from infodecomp.estimators.conditions import (
    check_conditions,
    concat_conditions,
    repeat_condition,
    slice_condition,
)
from infodecomp.interface import Cond, Curve, Denoiser, Estimate, SupportsConditionBatching

if TYPE_CHECKING:
    from infodecomp.estimators.control import NoiseControl

Reduction = Literal["mean", "sample", "pixel", "coordinate"]
REDUCTIONS: tuple[str, ...] = ("mean", "sample", "pixel", "coordinate")
TermKind = Literal["error", "nll", "standard", "orthogonal", "redundancy", "sum"]
TERM_KINDS: tuple[str, ...] = ("error", "nll", "standard", "orthogonal", "redundancy", "sum")


@dataclass(frozen=True)
class Term:
    """One integrand over named conditions (see the module docstring for the formulas).

    Attributes:
        kind: ``"error"``, ``"nll"``, ``"standard"``, ``"orthogonal"``, ``"redundancy"`` or ``"sum"``.
        cond: name of the condition being scored (unused by ``"sum"``).
        ref: name of the reference condition (``"standard"``, ``"orthogonal"``, ``"redundancy"``).
        second: the other scored condition of a ``"redundancy"`` term.
        parts: ``((term, coefficient), ...)`` of a ``"sum"`` term.
    """

    kind: TermKind
    cond: str = ""
    ref: str | None = None
    second: str | None = None
    parts: tuple[tuple[Term, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TERM_KINDS:
            raise ValueError(f"Term kind must be one of {TERM_KINDS}, got {self.kind!r}")
        if self.kind == "sum":
            if not self.parts or not all(isinstance(t, Term) and t.kind != "nll" for t, _ in self.parts):
                raise ValueError("a 'sum' term needs parts=((Term, coefficient), ...) of terms other than 'nll'")
            return
        if self.parts:
            raise ValueError(f"only a 'sum' term has parts, got a {self.kind!r} term with parts")
        if not self.cond:
            raise ValueError(f"a {self.kind!r} term scores a condition: give cond")
        needs_ref = self.kind in ("standard", "orthogonal", "redundancy")
        if needs_ref and self.ref is None:
            raise ValueError(f"a {self.kind!r} term compares two conditions: give ref")
        if not needs_ref and self.ref is not None:
            raise ValueError(f"a {self.kind!r} term takes one condition, got ref={self.ref!r}")
        if (self.kind == "redundancy") != (self.second is not None):
            raise ValueError("a 'redundancy' term, and only it, takes a second scored condition (second=...)")

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "sum":
            return tuple(dict.fromkeys(n for t, _ in self.parts for n in t.names))
        return tuple(n for n in (self.cond, self.second, self.ref) if n is not None)

    @property
    def contrasts(self) -> tuple[tuple[str, str], ...]:
        """The ``(scored, reference)`` pairs this term compares (checked for empty contrasts)."""
        if self.kind == "sum":
            return tuple(dict.fromkeys(p for t, _ in self.parts for p in t.contrasts))
        if self.ref is None:
            return ()
        return tuple((c, self.ref) for c in (self.cond, self.second) if c is not None)


# Rows per forward on a CPU: large batches of images overflow the caches, and a forward over
# 4096 rows of 3x16x16 took 2.4x as long per row as one over 256 on a 2-core CPU
# (benchmarks/scaling.py); GPUs keep the whole ``max_batch``.
CPU_FORWARD_ELEMENTS = 1 << 18


def forward_rows(max_batch: int, x: Tensor) -> int:
    """Rows per denoiser forward: ``max_batch``, or fewer on a CPU (at most
    :data:`CPU_FORWARD_ELEMENTS` input values per forward) where smaller batches run faster."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if x.device.type != "cpu":
        return max_batch
    return max(1, min(max_batch, CPU_FORWARD_ELEMENTS // max(1, x[0].numel())))


# --------------------------------------------------------------------------------------------
# validation


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor shaped (B, *shape), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"x must be shaped (B, *shape) with a batch dimension first, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (B = 0)")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise ValueError(f"x contains {bad} non-finite values (NaN or inf); expected finite data")


def _check_terms(terms: Mapping[str, Term], conditions: Mapping[str, Cond]) -> list[str]:
    if not terms:
        raise ValueError("no terms to estimate")
    needed: list[str] = []
    for name, term in terms.items():
        for cname in term.names:
            if cname not in conditions:
                raise ValueError(
                    f"term {name!r} uses condition {cname!r}, which is not among the given "
                    f"conditions {sorted(conditions)}"
                )
            if cname not in needed:
                needed.append(cname)
        for cond, ref in term.contrasts:
            _check_contrast(term, cond, ref, conditions)
    return needed


def _is_empty_mapping(cond: Cond) -> bool:
    """``{}`` (or mappings holding only ``{}``): a condition with no variable at all."""
    return isinstance(cond, Mapping) and all(_is_empty_mapping(v) for v in cond.values())


def _check_contrast(term: Term, cname: str, rname: str, conditions: Mapping[str, Cond]) -> None:
    """Reject contrasts that are 0 by construction: the scored condition carries no variable."""
    cond, ref = conditions[cname], conditions[rname]
    if _is_empty_mapping(cond):
        raise ValueError(
            f"condition {cname!r} is an empty mapping, expected at least one conditioning "
            f"variable such as {{'y': y}} (the unconditional model is None, as the reference {rname!r})"
        )
    if cond is None and (ref is None or _is_empty_mapping(ref)):
        raise ValueError(
            f"condition {cname!r} is None, expected at least one conditioning variable such as "
            f"{{'y': y}} (the reference {rname!r} is null too, so the information is 0 by construction)"
        )


def _sample_ids(sample_ids: Tensor | Sequence[int] | None, batch: int) -> list[int]:
    if sample_ids is None:
        return list(range(batch))
    ids = [int(i) for i in torch.as_tensor(sample_ids).flatten().tolist()]
    if len(ids) != batch:
        raise ValueError(f"sample_ids has {len(ids)} entries, expected {batch} (the batch size of x)")
    return ids


# --------------------------------------------------------------------------------------------
# the shared step: evaluate every needed condition on the same rows


def _call(denoiser: Denoiser, z: Tensor, logsnr: Tensor, cond: Cond, max_batch: int) -> Tensor:
    """Call the denoiser in row slices of at most ``max_batch``; check what comes back."""
    outs = []
    for start in range(0, z.shape[0], max_batch):
        stop = min(start + max_batch, z.shape[0])
        zi = z[start:stop]
        out = denoiser(zi, logsnr[start:stop], slice_condition(cond, start, stop))
        if not isinstance(out, Tensor) or out.shape != zi.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the denoiser returned {got}, expected a tensor of shape {tuple(zi.shape)} "
                "(the shape of z)"
            )
        if not torch.isfinite(out).all():
            lo, hi = logsnr[start:stop].min().item(), logsnr[start:stop].max().item()
            raise ValueError(
                f"the denoiser returned non-finite values for log-SNR in [{lo:.3g}, {hi:.3g}]"
            )
        outs.append(out)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


def _evaluate(
    denoiser: Denoiser,
    z: Tensor,
    logsnr: Tensor,
    conds: Mapping[str, Cond],
    max_batch: int,
) -> dict[str, Tensor]:
    """``eps_hat`` under each named condition on the same rows ``z: (R, *shape)``.

    Conditions that are the same object are evaluated once. The rest are concatenated along
    the batch and evaluated together, ``max_batch // R`` conditions per forward, through the
    denoiser's ``batch_conditions`` when it has one, else when they share one structure.
    """
    rows = z.shape[0]
    unique: dict[int, list[str]] = {}
    for name, cond in conds.items():
        unique.setdefault(id(cond), []).append(name)
    groups = [names for names in unique.values()]
    per_forward = max(1, max_batch // rows)
    out: dict[str, Tensor] = {}
    batcher = denoiser if isinstance(denoiser, SupportsConditionBatching) else None

    def assign(names: list[str], eps_hat: Tensor) -> None:
        for n in names:
            out[n] = eps_hat

    pending = list(groups)
    while pending:
        chunk, pending = pending[:per_forward], pending[per_forward:]
        reps = [conds[g[0]] for g in chunk]
        merged: Cond = None
        ok = False
        if len(chunk) > 1:
            if batcher is not None:
                merged, ok = batcher.batch_conditions(reps, [rows] * len(reps)), True
            else:
                ok, merged = concat_conditions(reps)
        if ok:
            k = len(chunk)
            eps_hat = _call(denoiser, z.repeat((k,) + (1,) * (z.ndim - 1)), logsnr.repeat(k), merged, max_batch)
            for i, names in enumerate(chunk):
                assign(names, eps_hat[i * rows : (i + 1) * rows])
        else:
            for names, cond in zip(chunk, reps, strict=True):
                assign(names, _call(denoiser, z, logsnr, cond, max_batch))
    return out


def _integrand(
    term: Term, eps: Tensor, eps_hat: Mapping[str, Tensor], logsnr: Tensor, z: Tensor
) -> Tensor:
    """Per-coordinate integrand ``(R, *shape)`` of one term."""
    if term.kind == "error":
        return (eps - eps_hat[term.cond]).square()
    if term.kind == "nll":
        s = torch.sigmoid(-logsnr).sqrt().reshape((-1,) + (1,) * (eps.ndim - 1))
        return (eps - eps_hat[term.cond]).square() - (eps - s * z).square()
    if term.kind == "standard":
        return (eps - eps_hat[term.ref]).square() - (eps - eps_hat[term.cond]).square()
    if term.kind == "orthogonal":
        return (eps_hat[term.cond] - eps_hat[term.ref]).square()
    if term.kind == "redundancy":
        ref = eps_hat[term.ref]
        return torch.minimum((eps_hat[term.cond] - ref).square(), (eps_hat[term.second] - ref).square())
    if term.kind == "sum":
        total = None
        for part, coef in term.parts:
            v = coef * _integrand(part, eps, eps_hat, logsnr, z)
            total = v if total is None else total + v
        return total
    raise ValueError(f"unknown term kind {term.kind!r}")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-coordinate values ``(R, *shape)`` to ``(R,)``, ``(R, *spatial)`` or ``(R, *shape)``."""
    if reduction in ("mean", "sample"):
        return values.flatten(1).sum(dim=1)
    if reduction == "pixel":
        # channels first, as in (B, C, H, W): sum them; a vector's pixels are its coordinates
        return values.sum(dim=1) if values.ndim >= 3 else values
    if reduction == "coordinate":
        return values
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _offset(term: Term, x: Tensor, reduction: str) -> Tensor | float:
    """What is added after integration: ``(1/2) log(2 pi) + x^2 / 2`` per coordinate for -log p."""
    if term.kind != "nll":
        return 0.0
    per_coord = 0.5 * math.log(2 * math.pi) + 0.5 * x.to(torch.float64).square()
    return _reduce(per_coord, reduction)


def _output_shape(shape: tuple[int, ...], reduction: str) -> tuple[int, ...]:
    if reduction in ("mean", "sample"):
        return ()
    if reduction == "pixel":
        return shape[1:] if len(shape) >= 2 else shape
    return shape


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[callable]:
    """A Rich progress bar of ``total`` steps (on stderr); yields ``advance()``. Off: a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


# --------------------------------------------------------------------------------------------
# integrals over log-SNR


@dataclass
class _Draw:
    """One block of draws: items ``i0..i1-1``, ``nb`` log-SNRs each, ``rows = (i1 - i0) * nb * k_eps``
    rows ordered item, log-SNR, antithetic sign."""

    i0: int
    i1: int
    nb: int
    weight: Tensor  # (S, nb) importance weights 1 / (2 p(alpha)), float64
    eps: Tensor  # (rows, *shape)
    logsnr: Tensor  # (rows,)
    z: Tensor  # (rows, *shape)
    eps_hat: dict[str, Tensor]  # condition name -> (rows, *shape)


def _draws(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    needed: Sequence[str],
    *,
    sampler: LogSNRSampler,
    n_draws: int,
    seed: int,
    sample_ids: Tensor | Sequence[int] | None,
    max_batch: int,
    strata_per_block: int,
    progress: bool,
) -> Iterator[_Draw]:
    """The draws of :func:`integrate`, block by block, with every needed condition evaluated.

    Draws depend only on ``(seed, sample id, block)``, never on the batch or chunk."""
    max_batch = forward_rows(max_batch, x)
    batch, shape = x.shape[0], tuple(x.shape[1:])
    ids = _sample_ids(sample_ids, batch)
    n_alpha = sampler.n_logsnr(n_draws)
    k_eps = sampler.eps_per_logsnr
    block = max(2, strata_per_block - strata_per_block % 2)
    n_distinct = len({id(conditions[n]) for n in needed})
    per_chunk = max(1, max_batch // (block * k_eps * n_distinct))
    shifts = [
        torch.rand(1, generator=torch.Generator().manual_seed(derive_seed(seed, i, "shift")),
                   dtype=torch.float64).item()
        for i in ids
    ] if sampler.scheme == "lattice" else [0.0] * batch
    gen = torch.Generator(device=x.device)
    cpu_gen = torch.Generator()
    blocks = [(j, min(j + block, n_alpha)) for j in range(0, n_alpha, block)]
    chunks = [(i, min(i + per_chunk, batch)) for i in range(0, batch, per_chunk)]
    with torch.no_grad(), progress_bar(progress, len(chunks) * len(blocks), "integrating") as advance:
        for i0, i1 in chunks:
            n_s = i1 - i0
            x_chunk = x[i0:i1]
            row_conds_cache: dict[int, dict[str, Cond]] = {}
            for b_index, (j0, j1) in enumerate(blocks):
                nb = j1 - j0
                u_list, eps_list = [], []
                for i in range(i0, i1):
                    s = derive_seed(seed, ids[i], b_index)
                    cpu_gen.manual_seed(s)
                    u_list.append(sampler.uniforms(cpu_gen, j0, j1, n_alpha, shifts[i]))
                    gen.manual_seed(s)
                    eps_list.append(torch.randn((nb,) + shape, generator=gen, device=x.device, dtype=x.dtype))
                u = torch.stack(u_list)  # (S, nb)
                logsnr64 = sampler.proposal.icdf(u)
                weight = 0.5 * torch.exp(-sampler.proposal.log_prob(logsnr64))  # (S, nb)
                eps = torch.stack(eps_list)  # (S, nb, *shape)
                if k_eps == 2:
                    eps = torch.stack([eps, -eps], dim=2)  # (S, nb, 2, *shape)
                else:
                    eps = eps.unsqueeze(2)  # (S, nb, 1, *shape)
                rows = n_s * nb * k_eps
                eps_rows = eps.reshape((rows,) + shape)
                logsnr_rows = logsnr64.to(device=x.device, dtype=x.dtype).repeat_interleave(k_eps, dim=1).reshape(rows)
                x_rows = x_chunk.repeat_interleave(nb * k_eps, dim=0)
                z = add_noise(x_rows, logsnr_rows, eps_rows)
                rep = nb * k_eps
                if rep not in row_conds_cache:
                    row_conds_cache[rep] = {
                        n: repeat_condition(slice_condition(conditions[n], i0, i1), rep) for n in needed
                    }
                eps_hat = _evaluate(denoiser, z, logsnr_rows, row_conds_cache[rep], max_batch)
                yield _Draw(i0, i1, nb, weight, eps_rows, logsnr_rows, z, eps_hat)
                advance()


def integrate(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    terms: Mapping[str, Term],
    *,
    sampler: LogSNRSampler | None = None,
    n_draws: int = 64,
    reduction: Reduction = "mean",
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    strata_per_block: int = 8,
    progress: bool = False,
    control: NoiseControl | None = None,
) -> dict[str, Estimate]:
    """Estimate ``(1/2) ∫ E_eps[integrand] d alpha`` for each term, on shared draws.

    Args:
        denoiser: ``eps_hat(z, logsnr, cond)``.
        x: data, ``(B, *shape)``.
        conditions: named conditions, each ``None`` or with batch size ``B``.
        terms: named integrands over those conditions.
        sampler: how ``(alpha, eps)`` are drawn; defaults to :class:`LogSNRSampler`.
        n_draws: ``(alpha, eps)`` draws per data point (each costs one evaluation per condition).
        reduction: ``"mean"`` (expectation over the batch), ``"sample"`` (pointwise),
            ``"pixel"`` (per-location map, channels summed) or ``"coordinate"``.
        seed: draws depend only on ``(seed, sample id)``, so results do not depend on batch
            size, chunking or the number of processes.
        sample_ids: stable ids of the data points (defaults to ``0..B-1``); give dataset
            indices when estimating over a sharded dataset.
        max_batch: most rows per denoiser forward (the memory budget; on a CPU fewer, see
            :func:`forward_rows`).
        strata_per_block: log-SNR strata drawn per data point per chunk.
        progress: show a progress bar.
        control: a :class:`~infodecomp.estimators.control.NoiseControl` fitted beforehand; its
            control variate is subtracted from the orthogonal terms it has gains for (unbiased
            for any denoiser, see :mod:`infodecomp.estimators.control`).

    Returns:
        ``{term name: Estimate}``.
    """
    sampler = sampler or LogSNRSampler()
    _check_x(x)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    batch, shape = x.shape[0], tuple(x.shape[1:])
    check_conditions(conditions, batch)
    needed = _check_terms(terms, conditions)
    if control is not None:
        control.check(terms, shape)
    n_alpha = sampler.n_logsnr(n_draws)
    k_eps = sampler.eps_per_logsnr
    paired = sampler.scheme != "iid"
    n_distinct = len({id(conditions[n]) for n in needed})
    out_shape = _output_shape(shape, reduction)
    acc_dtype = torch.float64 if x.device.type in ("cpu", "cuda") else torch.float32
    acc_sum = {n: torch.zeros((batch,) + out_shape, dtype=acc_dtype, device=x.device) for n in terms}
    acc_sq = {n: torch.zeros_like(v) for n, v in acc_sum.items()}
    draws = _draws(denoiser, x, conditions, needed, sampler=sampler, n_draws=n_draws, seed=seed,
                   sample_ids=sample_ids, max_batch=max_batch, strata_per_block=strata_per_block,
                   progress=progress)
    for d in draws:
        n_s, nb = d.i1 - d.i0, d.nb
        w = d.weight.to(device=x.device, dtype=acc_dtype)
        for name, term in terms.items():
            values = _integrand(term, d.eps, d.eps_hat, d.logsnr, d.z)
            if control is not None and name in control.gains:
                values = values - control.variate(name, d.eps, d.logsnr)
            v = _reduce(values, reduction)
            v = v.to(acc_dtype).reshape((n_s, nb, k_eps) + out_shape).mean(dim=2)
            g = v * w.reshape((n_s, nb) + (1,) * len(out_shape))  # (S, nb, *out)
            acc_sum[name][d.i0:d.i1] += g.sum(dim=1)
            if paired:
                pairs = g.reshape((n_s, nb // 2, 2) + out_shape)
                acc_sq[name][d.i0:d.i1] += (pairs[:, :, 0] - pairs[:, :, 1]).square().sum(dim=1)
            else:
                acc_sq[name][d.i0:d.i1] += g.square().sum(dim=1)

    results: dict[str, Estimate] = {}
    nfe = n_draws * n_distinct
    for name, term in terms.items():
        mean = acc_sum[name] / n_alpha
        if paired:
            var = acc_sq[name] / n_alpha**2
        else:
            var = (acc_sq[name] / n_alpha - mean.square()).clamp_min(0) / max(n_alpha - 1, 1)
        value = mean + _offset(term, x, reduction)
        est = Estimate(
            value=value.to(x.dtype),
            se=var.sqrt().to(x.dtype),
            nfe=nfe,
            logsnr_range=sampler.range,
            reduction="sample" if reduction == "mean" else reduction,
            n_samples=batch,
            info={
                "term": term.kind,
                "scheme": sampler.scheme,
                "antithetic": sampler.antithetic,
                "proposal": repr(sampler.proposal),
                "n_draws": n_draws,
                "seed": seed,
                "control": control is not None and name in control.gains,
            },
        )
        results[name] = est.batch_mean() if reduction == "mean" else est
    return results


# --------------------------------------------------------------------------------------------
# curves on a fixed log-SNR grid


def evaluate_curve(
    denoiser: Denoiser,
    x: Tensor,
    conditions: Mapping[str, Cond],
    terms: Mapping[str, Term],
    logsnr: Tensor,
    *,
    n_eps: int = 8,
    antithetic: bool = True,
    reduction: Reduction = "mean",
    seed: int = 0,
    sample_ids: Tensor | Sequence[int] | None = None,
    max_batch: int = 4096,
    progress: bool = False,
) -> dict[str, Curve]:
    """Evaluate ``E_eps[integrand]`` (no 1/2, no weight) at each log-SNR of a fixed grid.

    ``logsnr: (L,)``. Values: ``(L, *out)`` for ``"mean"``, ``(B, L, *out)`` otherwise. The SE of
    a per-sample curve is across noise draws; of a mean curve, across data points.
    """
    _check_x(x)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    logsnr = torch.as_tensor(logsnr, dtype=torch.float64).flatten()
    if logsnr.numel() == 0 or not torch.isfinite(logsnr).all():
        raise ValueError(f"logsnr must be a non-empty 1-D tensor of finite values, got {logsnr}")
    k_eps = 2 if antithetic else 1
    if n_eps < k_eps or n_eps % k_eps:
        raise ValueError(f"n_eps must be a positive multiple of {k_eps} (antithetic={antithetic}), got {n_eps}")
    max_batch = forward_rows(max_batch, x)
    batch, shape = x.shape[0], tuple(x.shape[1:])
    check_conditions(conditions, batch)
    needed = _check_terms(terms, conditions)
    ids = _sample_ids(sample_ids, batch)
    n_distinct = len({id(conditions[n]) for n in needed})
    n_base = n_eps // k_eps
    n_grid = logsnr.numel()
    out_shape = _output_shape(shape, reduction)
    acc_dtype = torch.float64 if x.device.type in ("cpu", "cuda") else torch.float32
    acc_sum = {n: torch.zeros((batch, n_grid) + out_shape, dtype=acc_dtype, device=x.device) for n in terms}
    acc_sq = {n: torch.zeros_like(v) for n, v in acc_sum.items()}
    gen = torch.Generator(device=x.device)
    per_chunk = max(1, max_batch // (n_eps * n_distinct))

    with torch.no_grad(), progress_bar(progress, batch * n_grid, "curve") as advance:
        for i in range(batch):
            conds_i = {n: slice_condition(conditions[n], i, i + 1) for n in needed}
            for l0 in range(0, n_grid, per_chunk):
                l1 = min(l0 + per_chunk, n_grid)
                n_l = l1 - l0
                eps_list = []
                for li in range(l0, l1):
                    gen.manual_seed(derive_seed(seed, ids[i], "curve", li))
                    eps_list.append(torch.randn((n_base,) + shape, generator=gen, device=x.device, dtype=x.dtype))
                eps = torch.stack(eps_list)  # (n_l, n_base, *shape)
                eps = torch.stack([eps, -eps], dim=2) if antithetic else eps.unsqueeze(2)
                rows = n_l * n_eps
                eps_rows = eps.reshape((rows,) + shape)
                logsnr_rows = logsnr[l0:l1].to(device=x.device, dtype=x.dtype).repeat_interleave(n_eps)
                z = add_noise(x[i : i + 1].expand((rows,) + shape), logsnr_rows, eps_rows)
                row_conds = {n: repeat_condition(c, rows) for n, c in conds_i.items()}
                eps_hat = _evaluate(denoiser, z, logsnr_rows, row_conds, max_batch)
                for name, term in terms.items():
                    v = _reduce(_integrand(term, eps_rows, eps_hat, logsnr_rows, z), reduction)
                    v = v.to(acc_dtype).reshape((n_l, n_base, k_eps) + out_shape).mean(dim=2)
                    acc_sum[name][i, l0:l1] = v.sum(dim=1)
                    acc_sq[name][i, l0:l1] = v.square().sum(dim=1)
                advance()

    curves: dict[str, Curve] = {}
    for name, term in terms.items():
        mean = acc_sum[name] / n_base
        var = (acc_sq[name] / n_base - mean.square()).clamp_min(0) / max(n_base - 1, 1)
        value, se = mean, var.sqrt()
        if reduction == "mean":
            if batch > 1:
                value, se = mean.mean(dim=0), mean.std(dim=0, unbiased=True) / math.sqrt(batch)
            else:
                value, se = mean[0], se[0]
        curves[name] = Curve(
            logsnr=logsnr.to(x.dtype),
            value=value.to(x.dtype),
            se=se.to(x.dtype),
            nfe=n_grid * n_eps * n_distinct,
            reduction=reduction,
            n_samples=batch,
            info={"term": term.kind, "n_eps": n_eps, "antithetic": antithetic, "seed": seed},
        )
    return curves
