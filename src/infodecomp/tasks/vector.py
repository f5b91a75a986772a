"""Vector tasks with known mutual information: the 40 "Beyond Normal" tasks and CMI tasks.

The "Beyond Normal" suite (Czyż, Grabowski, Vogt, Beerenwinkel, Marx, NeurIPS 2023) builds
every task from a base distribution with a closed-form MI (multivariate normal, Student-t,
additive uniform noise) and per-variable injective transforms that keep the MI. Task ids and
ground truths follow the suite. Samples are drawn with torch generators (not bit-identical to
the suite's JAX samples; the distributions are the same).

    >>> from infodecomp.tasks import get_task
    >>> task = get_task("spiral-multinormal-sparse-3-3-2-2.0")
    >>> x, y = task.sample(5000, seed=0)
    >>> task.mutual_information   # 1.0217 nats
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from scipy.special import digamma, gammaln
from torch import Tensor

from infodecomp.oracles.gaussian import JointGaussian, JointGaussianDenoiser
from infodecomp.tasks import transforms as tf

Sampler = Callable[[int, torch.Generator], tuple[Tensor, ...]]


def _check_sample_args(n: int, dtype: torch.dtype, device: torch.device | str) -> torch.device:
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must name a torch device, got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return dev


@dataclass(frozen=True)
class VectorTask:
    """A pair ``(X, Y)`` with known ``I(X; Y)``.

    Attributes:
        id: the task id (as in the "Beyond Normal" suite).
        dim_x, dim_y: dimensions of ``X`` and ``Y``.
        mutual_information: ground truth in nats.
        base_gaussian: the joint Gaussian of the untransformed base, when the base is Gaussian.
    """

    id: str
    dim_x: int
    dim_y: int
    mutual_information: float
    _base: Sampler = field(repr=False)
    transform_x: tf.Transform | None = field(default=None, repr=False)
    transform_y: tf.Transform | None = field(default=None, repr=False)
    base_gaussian: JointGaussian | None = field(default=None, repr=False)

    def sample(
        self, n: int, seed: int = 0, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` pairs: ``x: (n, dim_x)``, ``y: (n, dim_y)``."""
        dev = _check_sample_args(n, dtype, device)
        x, y = self.sample_base(n, seed)
        if self.transform_x is not None:
            x = self.transform_x(x)
        if self.transform_y is not None:
            y = self.transform_y(y)
        return x.to(dtype=dtype, device=dev), y.to(dtype=dtype, device=dev)

    def sample_base(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Untransformed base samples (float64)."""
        gen = torch.Generator().manual_seed(seed)
        return self._base(n, gen)

    def to_base(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Undo the transforms: map task samples back to the base distribution (float64)."""
        x, y = x.to(torch.float64), y.to(torch.float64)
        if self.transform_x is not None:
            x = self.transform_x.inverse(x)
        if self.transform_y is not None:
            y = self.transform_y.inverse(y)
        return x, y

    @property
    def is_gaussian(self) -> bool:
        return self.base_gaussian is not None and self.transform_x is None and self.transform_y is None

    def oracle(self) -> JointGaussianDenoiser:
        """Exact denoiser of ``x`` given ``y`` (condition: ``y`` tensor or ``None``).

        For transformed Gaussian tasks it denoises the base coordinates (``to_base``).
        """
        if self.base_gaussian is None:
            raise ValueError(
                f"task {self.id!r} has a non-Gaussian base; exact denoisers exist only for Gaussian bases"
            )
        return self.base_gaussian.denoiser("x")

    def to_dict(self) -> dict:
        return {"id": self.id, "dim_x": self.dim_x, "dim_y": self.dim_y, "mutual_information": self.mutual_information}


# ---------------------------------------------------------------------------------------------
# base distributions


def _gaussian_sampler(joint: JointGaussian) -> Sampler:
    chol = torch.linalg.cholesky(joint.cov)
    dim_x = joint.blocks["x"]

    def sample(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        xy = torch.randn(n, chol.shape[0], generator=gen, dtype=torch.float64) @ chol.T
        return xy[:, :dim_x], xy[:, dim_x:]

    return sample


def sparse_correlation(dim_x: int, dim_y: int, n_interacting: int = 2, strength: float = 2.0) -> Tensor:
    """The suite's latent-variable "sparse" Gaussian, as a correlation matrix.

    ``X_i = strength * Z_i + E_i``, ``Y_i = strength * Z_i + F_i`` for ``i < n_interacting``;
    other coordinates get independent noise of the same variance. All latents are ``N(0, 1)``.
    """
    var = 1.0 + strength**2
    corr = torch.eye(dim_x + dim_y, dtype=torch.float64)
    for i in range(n_interacting):
        corr[i, dim_x + i] = corr[dim_x + i, i] = strength**2 / var
    return corr


def _student_entropy(k: int, df: float) -> float:
    """Differential entropy of a standard ``k``-dimensional Student-t with ``df`` degrees of freedom."""
    half = 0.5 * (df + k)
    return (
        -gammaln(half) + gammaln(0.5 * df) + 0.5 * k * math.log(df * math.pi)
        + half * (digamma(half) - digamma(0.5 * df))
    )


def student_t_mutual_information(dim_x: int, dim_y: int, df: float) -> float:
    """MI between the two blocks of a Student-t with identity dispersion: ``h(X) + h(Y) - h(X, Y)``.

    (Arellano-Valle, Contreras-Reyes & Genton 2013; computed from the entropies.)
    """
    return _student_entropy(dim_x, df) + _student_entropy(dim_y, df) - _student_entropy(dim_x + dim_y, df)


def _chi2(n: int, df: float, gen: torch.Generator) -> Tensor:
    if float(df).is_integer():
        return torch.randn(n, int(df), generator=gen, dtype=torch.float64).square().sum(1)
    import numpy as np

    seed = int(torch.randint(2**62, (1,), generator=gen))
    return torch.from_numpy(np.random.default_rng(seed).chisquare(df, size=n))


def _student_sampler(dim_x: int, dim_y: int, df: float) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        g = torch.randn(n, dim_x + dim_y, generator=gen, dtype=torch.float64)
        w = _chi2(n, df, gen)
        xy = g / (w / df).sqrt()[:, None]
        return xy[:, :dim_x], xy[:, dim_x:]

    return sample


def _additive_sampler(epsilon: float) -> Sampler:
    def sample(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.rand(n, 1, generator=gen, dtype=torch.float64)
        noise = (2 * torch.rand(n, 1, generator=gen, dtype=torch.float64) - 1) * epsilon
        return x, x + noise

    return sample


def additive_uniform_mutual_information(epsilon: float) -> float:
    """``I(X; X + N)`` with ``X ~ U(0, 1)``, ``N ~ U(-eps, eps)``."""
    return 0.25 / epsilon if epsilon > 0.5 else epsilon - math.log(2 * epsilon)


# ---------------------------------------------------------------------------------------------
# constructors


def gaussian_task(task_id: str, joint: JointGaussian) -> VectorTask:
    return VectorTask(
        task_id, joint.blocks["x"], joint.blocks["y"], joint.mutual_information("x", "y"),
        _gaussian_sampler(joint), base_gaussian=joint,
    )


def bivariate_normal(rho: float = 0.75) -> VectorTask:
    return gaussian_task(f"1v1-normal-{rho}", JointGaussian.bivariate(rho))


def multinormal_dense(dim_x: int, dim_y: int, off_diag: float = 0.5) -> VectorTask:
    return gaussian_task(f"multinormal-dense-{dim_x}-{dim_y}-{off_diag}", JointGaussian.dense(dim_x, dim_y, off_diag))


def multinormal_sparse(dim_x: int, dim_y: int, n_interacting: int = 2, strength: float = 2.0) -> VectorTask:
    joint = JointGaussian(sparse_correlation(dim_x, dim_y, n_interacting, strength), {"x": dim_x, "y": dim_y})
    return gaussian_task(f"multinormal-sparse-{dim_x}-{dim_y}-{n_interacting}-{strength}", joint)


def student_identity(dim_x: int, dim_y: int, df: int) -> VectorTask:
    return VectorTask(
        f"student-identity-{dim_x}-{dim_y}-{df}", dim_x, dim_y,
        student_t_mutual_information(dim_x, dim_y, df), _student_sampler(dim_x, dim_y, df),
    )


def additive_uniform(epsilon: float) -> VectorTask:
    return VectorTask(
        f"1v1-additive-{epsilon}", 1, 1, additive_uniform_mutual_information(epsilon), _additive_sampler(epsilon)
    )


def transformed(
    base: VectorTask, prefix: str, transform_x: tf.Transform | None, transform_y: tf.Transform | None
) -> VectorTask:
    """Apply per-variable transforms after the base task's own (the id gains ``prefix-``)."""

    def chain(first: tf.Transform | None, then: tf.Transform | None) -> tf.Transform | None:
        if then is None:
            return first
        if first is None:
            return then
        return tf.Transform(
            f"{then.name}∘{first.name}", lambda v: then(first(v)), lambda v: first.inverse(then.inverse(v)),
            lambda d: then.dim_out(first.dim_out(d)),
        )

    tx, ty = chain(base.transform_x, transform_x), chain(base.transform_y, transform_y)
    return VectorTask(
        f"{prefix}-{base.id}",
        transform_x.dim_out(base.dim_x) if transform_x else base.dim_x,
        transform_y.dim_out(base.dim_y) if transform_y else base.dim_y,
        base.mutual_information, base._base, tx, ty, base.base_gaussian,
    )


def normal_cdf(base: VectorTask) -> VectorTask:
    return transformed(base, "normal_cdf", tf.NORMAL_CDF, tf.NORMAL_CDF)


def half_cube(base: VectorTask) -> VectorTask:
    return transformed(base, "half_cube", tf.HALF_CUBE, tf.HALF_CUBE)


def asinh(base: VectorTask) -> VectorTask:
    return transformed(base, "asinh", tf.ASINH, tf.ASINH)


def wiggly(base: VectorTask) -> VectorTask:
    return transformed(base, "wiggly", tf.WIGGLY_X, tf.WIGGLY_Y)


def spiral(base: VectorTask) -> VectorTask:
    """Spirals in the (0, 1) plane of ``X`` and the (1, 2) plane of ``Y``, speed ``1/dim`` each."""
    return transformed(base, "spiral", tf.spiral((0, 1), 1.0 / base.dim_x), tf.spiral((1, 2), 1.0 / base.dim_y))


def swissroll_x(base: VectorTask) -> VectorTask:
    if base.dim_x != 1:
        raise ValueError(f"the Swiss-roll embedding takes a 1-d X, got dim_x={base.dim_x}")
    return transformed(base, "swissroll_x", tf.SWISSROLL, None)


def bimodal(rho: float = 0.75) -> VectorTask:
    base = bivariate_normal(rho)
    task = transformed(base, "bimodal", tf.BIMODAL_X, tf.BIMODAL_Y)
    return VectorTask(f"1v1-bimodal-{rho}", 1, 1, task.mutual_information, task._base, task.transform_x,
                      task.transform_y, task.base_gaussian)


def beyond_normal_tasks() -> list[VectorTask]:
    """The 40 tasks of the "Beyond Normal" benchmark, in the suite's order."""
    binormal = bivariate_normal(0.75)
    uniform = normal_cdf(binormal)
    bistudent = student_identity(1, 1, 1)
    tasks = [
        binormal, uniform, additive_uniform(0.1), additive_uniform(0.75), bimodal(0.75),
        wiggly(binormal), half_cube(binormal), bistudent, asinh(bistudent), swissroll_x(uniform),
    ]
    tasks += [multinormal_dense(d, d) for d in (2, 3, 5, 25, 50)]
    tasks += [multinormal_sparse(d, d) for d in (2, 3, 5, 25)]
    tasks += [student_identity(dx, dy, df) for dx, dy, df in ((2, 2, 1), (2, 2, 2), (3, 3, 2), (3, 3, 3), (5, 5, 2), (5, 5, 3))]
    sparse = [multinormal_sparse(d, d) for d in (3, 5, 25)]
    tasks += [normal_cdf(t) for t in sparse]
    tasks += [half_cube(t) for t in sparse]
    tasks += [spiral(t) for t in sparse]
    tasks += [spiral(normal_cdf(t)) for t in sparse]
    tasks += [asinh(student_identity(d, d, df)) for d, df in ((2, 1), (3, 2), (5, 2))]
    return tasks


# ---------------------------------------------------------------------------------------------
# conditional-MI tasks


@dataclass(frozen=True)
class ConditionalTask:
    """A triple ``(X, Y, C)`` with known ``I(X; Y | C)``.

    The Gaussian family: ``C ~ N(0, I)``; ``X_i = beta C_(i mod dim_c) + E_i``;
    ``Y_i = beta C_(i mod dim_c) + strength * E_i + F_i`` for ``i < n_interacting`` and
    ``beta C_(i mod dim_c) + F_i`` otherwise, all noises ``N(0, 1)``. ``C`` explains part of
    the dependence between ``X`` and ``Y`` (so ``I(X; Y) > I(X; Y | C)``); the rest is carried
    by the shared noises. Transformed variants apply one injective map to each of ``X``, ``Y``
    and ``C``, which leaves every (conditional) MI unchanged.
    """

    id: str
    dim_x: int
    dim_y: int
    dim_c: int
    conditional_mutual_information: float
    mutual_information: float
    joint: JointGaussian = field(repr=False)
    transform: tf.Transform | None = field(default=None, repr=False)

    def sample(
        self, n: int, seed: int = 0, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw ``n`` triples ``(x, y, c)``."""
        dev = _check_sample_args(n, dtype, device)
        s = self.joint.sample(n, seed=seed)
        out = []
        for name in ("x", "y", "c"):
            v = s[name].to(torch.float64)
            if self.transform is not None:
                v = self.transform(v)
            out.append(v.to(dtype=dtype, device=dev))
        return tuple(out)

    @property
    def is_gaussian(self) -> bool:
        return self.transform is None

    def oracle(self) -> JointGaussianDenoiser:
        """Exact denoiser of ``x``; conditions ``{"y": ..., "c": ...}`` (base coordinates)."""
        return self.joint.denoiser("x")

    def to_dict(self) -> dict:
        return {
            "id": self.id, "dim_x": self.dim_x, "dim_y": self.dim_y, "dim_c": self.dim_c,
            "conditional_mutual_information": self.conditional_mutual_information,
            "mutual_information": self.mutual_information,
        }


def conditional_gaussian(
    dim_x: int, dim_y: int, dim_c: int, strength: float, *, beta: float = 1.0, n_interacting: int | None = None
) -> ConditionalTask:
    k = min(dim_x, dim_y) if n_interacting is None else n_interacting
    if not 0 < k <= min(dim_x, dim_y):
        raise ValueError(f"n_interacting must be in 1..{min(dim_x, dim_y)}, got {k}")
    # linear model in the latents (c, e, f): rows give each observed variable
    n_lat = dim_c + dim_x + dim_y
    load = torch.zeros(dim_x + dim_y + dim_c, n_lat, dtype=torch.float64)
    for i in range(dim_x):
        load[i, i % dim_c] = beta
        load[i, dim_c + i] = 1.0
    for j in range(dim_y):
        row = dim_x + j
        load[row, j % dim_c] = beta
        load[row, dim_c + dim_x + j] = 1.0
        if j < k:
            load[row, dim_c + j] = strength
    for m in range(dim_c):
        load[dim_x + dim_y + m, m] = 1.0
    joint = JointGaussian(load @ load.T, {"x": dim_x, "y": dim_y, "c": dim_c})
    return ConditionalTask(
        f"cmi-gaussian-{dim_x}-{dim_y}-{dim_c}-{strength}", dim_x, dim_y, dim_c,
        joint.mutual_information("x", "y", ("c",)), joint.mutual_information("x", "y"), joint,
    )


def conditional_tasks() -> list[ConditionalTask]:
    """Conditional-MI tasks at several strengths and dimensions, Gaussian and transformed."""
    gaussian = [
        conditional_gaussian(1, 1, 1, 0.5),
        conditional_gaussian(1, 1, 1, 1.0),
        conditional_gaussian(2, 2, 2, 1.0),
        conditional_gaussian(5, 5, 3, 1.0),
        conditional_gaussian(10, 10, 5, 2.0),
    ]
    out = list(gaussian)
    for t in gaussian[1:4]:
        for transform in (tf.NORMAL_CDF, tf.HALF_CUBE, tf.ASINH):
            out.append(ConditionalTask(
                f"{transform.name}-{t.id}", t.dim_x, t.dim_y, t.dim_c, t.conditional_mutual_information,
                t.mutual_information, t.joint, transform,
            ))
    return out


# ---------------------------------------------------------------------------------------------
# registry


class UnknownTaskError(ValueError, KeyError):
    """An unknown task id (the message names the closest known ids)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _registry() -> dict[str, VectorTask | ConditionalTask]:
    if not hasattr(_registry, "cache"):
        _registry.cache = {t.id: t for t in beyond_normal_tasks() + conditional_tasks()}
    return _registry.cache


def task_ids(kind: str = "all") -> list[str]:
    """Registered ids: ``"beyond_normal"`` (the 40), ``"conditional"`` or ``"all"``."""
    reg = _registry()
    if kind == "all":
        return list(reg)
    if kind == "beyond_normal":
        return [k for k, v in reg.items() if isinstance(v, VectorTask)]
    if kind == "conditional":
        return [k for k, v in reg.items() if isinstance(v, ConditionalTask)]
    raise ValueError(f"kind must be 'all', 'beyond_normal' or 'conditional', got {kind!r}")


def get_task(task_id: str) -> VectorTask | ConditionalTask:
    """Look a task up by id; an unknown id raises an error naming the closest ones."""
    reg = _registry()
    if task_id not in reg:
        close = difflib.get_close_matches(str(task_id), list(reg), n=3, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownTaskError(f"unknown task id {task_id!r}{hint} (see `python -m infodecomp.tasks --list`)")
    return reg[task_id]
