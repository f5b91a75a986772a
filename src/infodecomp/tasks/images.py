"""Image worlds whose distribution, and so whose information content, is known exactly.

Every world here is a finite set of clean images (one per combination of discrete attributes,
or one per dataset image) blurred by isotropic Gaussian pixel noise of standard deviation
``sigma``: a Gaussian mixture with equal weights. :class:`~infodecomp.oracles.GaussianMixtureOracle`
therefore gives exact conditional and marginal denoisers, and ``I(x; attribute)`` or
``I(x; attribute | others)`` follow by Monte Carlo with exact posteriors.

Pixel values lie in ``[-1, 1]`` before noise; the background is ``-1`` (black).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from infodecomp.interface import Estimate
from infodecomp.oracles.mixture import GaussianMixtureOracle

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "magenta": (1.0, -1.0, 1.0),
    "cyan": (-1.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.25, "large": 0.4}
RELATIONS: tuple[str, ...] = ("left of", "above")
MAX_COMPONENTS = 50_000


def _grid_names(grid: int) -> list[str]:
    if grid == 1:
        return ["centre"]
    if grid == 2:
        return ["top left", "top right", "bottom left", "bottom right"]
    if grid == 3:
        rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
        return [f"{r} {c}" for r in rows for c in cols]
    return [f"row {r} column {c}" for r in range(grid) for c in range(grid)]


def shape_mask(shape: str, size: int, centre: tuple[float, float], radius: float) -> Tensor:
    """Boolean ``(size, size)`` mask of one shape, sampled at pixel centres.

    Args:
        shape: ``"circle"``, ``"square"``, ``"triangle"`` or ``"cross"``.
        centre: ``(row, column)`` in pixel units.
        radius: half-extent in pixels.
    """
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    r = coords[:, None] - centre[0]  # (H, 1) rows, downwards
    c = coords[None, :] - centre[1]  # (1, W)
    if shape == "circle":
        mask = r.square() + c.square() <= radius**2
    elif shape == "square":
        half = radius * 0.85
        mask = (r.abs() <= half) & (c.abs() <= half)
    elif shape == "triangle":
        # apex at the top; the half-width grows linearly to the base
        top, bottom = -radius, radius * 0.85
        frac = (r - top) / (bottom - top)
        mask = (r >= top) & (r <= bottom) & (c.abs() <= frac * radius)
    elif shape == "cross":
        arm = radius * 0.35
        mask = ((r.abs() <= arm) & (c.abs() <= radius)) | ((c.abs() <= arm) & (r.abs() <= radius))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return mask.expand(size, size).clone()


@dataclass(frozen=True)
class ShapesBatch:
    """A batch drawn from a shapes world.

    Attributes:
        x: images ``(n, 3, H, W)``.
        labels: ``{attribute: (n,) long}`` plus ``"component"``.
        masks: ``(n, n_objects, H, W)`` bool, the pixels each object covers.
        captions: one template caption per image.
    """

    x: Tensor
    labels: dict[str, Tensor]
    masks: Tensor
    captions: list[str] = field(default_factory=list)


class _MixtureWorld:
    """Shared machinery: components, sampling, oracle and exact information."""

    attributes: dict[str, list[str]]
    means: Tensor  # (M, C, H, W)
    masks: Tensor  # (M, n_objects, H, W)
    component_labels: dict[str, Tensor]
    captions: list[str]
    sigma: float
    confusion: dict[str, Tensor] = {}  # noqa: RUF012 - {attribute: (C_true, C_obs)} for noisy labels; none by default

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def oracle(self) -> GaussianMixtureOracle:
        """The exact conditional/marginal denoiser (conditions: ``{attribute: (B,) long}``)."""
        if self.n_components > MAX_COMPONENTS:
            raise ValueError(
                f"this world has {self.n_components} components; exact denoisers and information are "
                f"only tractable up to {MAX_COMPONENTS} (use fewer attribute values or a smaller grid)"
            )
        if not hasattr(self, "_oracle"):
            self._oracle = GaussianMixtureOracle(
                self.means.flatten(1), self.sigma**2, labels=self.component_labels, shape=self.image_shape,
                confusion=self.confusion,
            )
        return self._oracle

    def sample(self, n: int, seed: int = 0) -> ShapesBatch:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        gen = torch.Generator().manual_seed(seed)
        comp = torch.randint(self.n_components, (n,), generator=gen)
        noise = torch.randn((n,) + self.image_shape, generator=gen, dtype=torch.float64)
        x = (self.means[comp] + self.sigma * noise).to(torch.get_default_dtype())
        labels = {k: v[comp] for k, v in self.component_labels.items()}
        if self.confusion:  # noisy labels: observed through their confusion matrices (the oracle's draw)
            labels = self.oracle().observe(labels, gen)
        labels["component"] = comp
        return ShapesBatch(x=x, labels=labels, masks=self.masks[comp], captions=[self.captions[i] for i in comp])

    def mutual_information(
        self, attribute: str, given: Sequence[str] = (), *, n: int = 20000, seed: int = 0
    ) -> Estimate:
        """Exact ``I(x; attribute | given)`` by Monte Carlo with exact posteriors (SE reported)."""
        return self.oracle().mutual_information(attribute, given, n=n, seed=seed)

    def caption_information(self, *, n: int = 20000, seed: int = 0, batch: int = 4096) -> Estimate:
        """Exact ``I(x; caption) = E[log p(caption | x) - log p(caption)]`` by Monte Carlo with exact
        posteriors (SE reported); ``p(caption | x)`` sums the posteriors of the components that
        carry the caption. What a text-conditioned model's ``I(x; text)`` should come to."""
        oracle = self.oracle()
        groups: dict[str, list[int]] = {}
        for k, caption in enumerate(self.captions):
            groups.setdefault(caption, []).append(k)
        of_component = torch.empty(self.n_components, dtype=torch.long)
        for i, members in enumerate(groups.values()):
            of_component[members] = i

        def by_caption(log_p: Tensor) -> Tensor:  # (..., M) -> (..., number of captions)
            return torch.stack([log_p[..., m].logsumexp(-1) for m in groups.values()], dim=-1)

        log_prior = by_caption(oracle.log_weights.to(torch.float64))
        values = []
        for start in range(0, n, batch):
            x, labels = oracle.sample(min(batch, n - start), seed=seed * 1_000_003 + start)
            joint = oracle.log_prob_components(x)
            post = by_caption(joint - joint.logsumexp(1, keepdim=True))
            c = of_component[labels["component"]]
            values.append(post.gather(1, c[:, None])[:, 0] - log_prior[c])
        v = torch.cat(values)
        return Estimate(value=v.mean(), se=v.std() / math.sqrt(n), nfe=0, logsnr_range=None, reduction="mean",
                        n_samples=n, info={"method": "monte-carlo, exact posterior"})

    def entropy(self, attribute: str) -> float:
        """``H(attribute)`` in nats (attributes are uniform over their values)."""
        return math.log(len(self.attributes[attribute]))


class ShapesWorld(_MixtureWorld):
    """One coloured shape per image at a grid position, with attribute labels.

    Args:
        size: image side in pixels (16 and 32 are the presets).
        shapes, colours: attribute values (names from :data:`SHAPES` and :data:`COLOURS`).
        grid: positions form a ``grid x grid`` layout of cells.
        sizes: optional object sizes (names from :data:`SIZES`); ``None`` for one size.
        sigma: standard deviation of the isotropic pixel noise.
    """

    def __init__(
        self,
        size: int = 16,
        shapes: Sequence[str] = ("circle", "square", "triangle"),
        colours: Sequence[str] = ("red", "green", "blue"),
        grid: int = 2,
        sizes: Sequence[str] | None = None,
        sigma: float = 0.1,
    ) -> None:
        _check_world_args(size, shapes, colours, sigma)
        if grid < 1 or size // grid < 4:
            raise ValueError(f"grid must be >= 1 with cells of at least 4 pixels, got grid={grid} for size {size}")
        for s in sizes or ():
            if s not in SIZES:
                raise ValueError(f"unknown size {s!r}; expected one of {list(SIZES)}")
        self.size, self.sigma, self.grid = size, float(sigma), grid
        positions = _grid_names(grid)
        self.attributes = {"shape": list(shapes), "colour": list(colours), "position": positions}
        if sizes:
            self.attributes["size"] = list(sizes)
        cell = size / grid
        means, masks, captions = [], [], []
        labels: dict[str, list[int]] = {k: [] for k in self.attributes}
        for combo in itertools.product(*(range(len(v)) for v in self.attributes.values())):
            values = dict(zip(self.attributes, combo, strict=True))
            row, col = divmod(values["position"], grid)
            scale = SIZES[self.attributes["size"][values["size"]]] if sizes else 0.36
            mask = shape_mask(
                self.attributes["shape"][values["shape"]], size, ((row + 0.5) * cell, (col + 0.5) * cell), scale * cell
            )
            rgb = torch.tensor(COLOURS[self.attributes["colour"][values["colour"]]], dtype=torch.float64)
            img = torch.full((3, size, size), -1.0, dtype=torch.float64)
            img[:, mask] = rgb[:, None]
            means.append(img)
            masks.append(mask[None])
            for k, v in values.items():
                labels[k].append(v)
            words = [self.attributes[k][values[k]] for k in ("size", "colour", "shape") if k in values]
            captions.append(f"a {' '.join(words)} at the {positions[values['position']]}")
        self.means = torch.stack(means)
        self.masks = torch.stack(masks)
        self.component_labels = {k: torch.tensor(v) for k, v in labels.items()}
        self.captions = captions


class TwoObjectShapesWorld(_MixtureWorld):
    """Two coloured shapes in a spatial relation, with captions like "a red circle left of a blue square".

    For ``"left of"`` the first object sits in the left half and the second in the right half;
    for ``"above"`` in the top and bottom halves. Attributes: ``shape_1``, ``colour_1``,
    ``shape_2``, ``colour_2``, ``relation``; masks are ``(2, H, W)`` per image.
    """

    def __init__(
        self,
        size: int = 32,
        shapes: Sequence[str] = ("circle", "square", "triangle"),
        colours: Sequence[str] = ("red", "green", "blue"),
        relations: Sequence[str] = RELATIONS,
        sigma: float = 0.1,
    ) -> None:
        _check_world_args(size, shapes, colours, sigma)
        for r in relations:
            if r not in RELATIONS:
                raise ValueError(f"unknown relation {r!r}; expected one of {RELATIONS}")
        self.size, self.sigma = size, float(sigma)
        self.attributes = {
            "shape_1": list(shapes), "colour_1": list(colours),
            "shape_2": list(shapes), "colour_2": list(colours), "relation": list(relations),
        }
        half, quarter = size / 2, size / 4
        radius = 0.36 * half
        means, masks, captions = [], [], []
        labels: dict[str, list[int]] = {k: [] for k in self.attributes}
        for combo in itertools.product(*(range(len(v)) for v in self.attributes.values())):
            v = dict(zip(self.attributes, combo, strict=True))
            relation = self.attributes["relation"][v["relation"]]
            centres = (
                [(half, quarter), (half, 3 * quarter)] if relation == "left of" else [(quarter, half), (3 * quarter, half)]
            )
            img = torch.full((3, size, size), -1.0, dtype=torch.float64)
            obj_masks = []
            for i, centre in enumerate(centres, start=1):
                mask = shape_mask(self.attributes[f"shape_{i}"][v[f"shape_{i}"]], size, centre, radius)
                rgb = torch.tensor(COLOURS[self.attributes[f"colour_{i}"][v[f"colour_{i}"]]], dtype=torch.float64)
                img[:, mask] = rgb[:, None]
                obj_masks.append(mask)
            means.append(img)
            masks.append(torch.stack(obj_masks))
            for k, val in v.items():
                labels[k].append(val)
            a = f"{self.attributes['colour_1'][v['colour_1']]} {self.attributes['shape_1'][v['shape_1']]}"
            b = f"{self.attributes['colour_2'][v['colour_2']]} {self.attributes['shape_2'][v['shape_2']]}"
            captions.append(f"a {a} {relation} a {b}")
        self.means = torch.stack(means)
        self.masks = torch.stack(masks)
        self.component_labels = {k: torch.tensor(val) for k, val in labels.items()}
        self.captions = captions

    def word_objects(self, caption: str) -> list[int | None]:
        """For each word of a caption, the object (0 or 1) it describes, or ``None``.

        Colour and shape words before the relation describe the first object, those after it
        the second; articles and relation words describe neither.
        """
        words = caption.split()
        named = set(self.attributes["colour_1"]) | set(self.attributes["shape_1"])
        relation_at = next((i for i, w in enumerate(words) if w in {r.split()[0] for r in RELATIONS}), None)
        if relation_at is None:
            raise ValueError(f"no relation word in {caption!r}; expected one of {RELATIONS}")
        return [None if w not in named else (0 if i < relation_at else 1) for i, w in enumerate(words)]

    def word_masks(self, captions: Sequence[str], masks: Tensor) -> tuple[Tensor, Tensor]:
        """Per-word masks ``(B, K, H, W)`` and which words have one ``(B, K)`` (K: longest caption)."""
        k_max = max(len(c.split()) for c in captions)
        out = torch.zeros((len(captions), k_max) + tuple(masks.shape[-2:]), dtype=torch.bool)
        known = torch.zeros(len(captions), k_max, dtype=torch.bool)
        for b, caption in enumerate(captions):
            for k, obj in enumerate(self.word_objects(caption)):
                if obj is not None:
                    out[b, k], known[b, k] = masks[b, obj], True
        return out, known


PID_WORLDS: tuple[str, ...] = ("redundant", "unique", "synergy", "copy")
PID_COLOURS: tuple[str, str] = ("red", "blue")


class PIDWorld(_MixtureWorld):
    """Two fair binary labels ``y1``, ``y2`` drawn by one or two coloured squares: the partial
    information decomposition of ``I(x; y1, y2)`` is known for every world.

    ``kind``:

    * ``"redundant"``: ``y2 = y1``, which sets the colour of one square (the same attribute named
      twice): pure redundancy, ``R = I(x; y1)``.
    * ``"unique"``: ``y1`` sets the colour; ``y2`` is independent and never drawn: pure unique
      information, ``U1 = I(x; y1)``.
    * ``"synergy"``: the colour is ``y1 XOR y2``, so neither label alone says anything: pure
      synergy, ``S = I(x; y1, y2)``.
    * ``"copy"``: ``y1`` colours a square on the left, ``y2`` one on the right (the two-bit copy,
      like two object words): measures disagree here (:mod:`infodecomp.estimators.pid`).

    The first three are the cases where every PID measure agrees. Colours are red (0) and blue
    (1); masks are ``(n_objects, H, W)``: one square, or the left and right ones for ``"copy"``.
    """

    def __init__(self, kind: str = "synergy", size: int = 16, sigma: float = 0.1) -> None:
        if kind not in PID_WORLDS:
            raise ValueError(f"kind must be one of {PID_WORLDS}, got {kind!r}")
        _check_world_args(size, ("square",), PID_COLOURS, sigma)
        self.kind, self.size, self.sigma = kind, size, float(sigma)
        self.attributes = {"y1": ["0", "1"], "y2": ["0", "1"]}
        half, quarter = size / 2, size / 4
        if kind == "copy":
            squares = [shape_mask("square", size, (half, quarter), 0.3 * half),
                       shape_mask("square", size, (half, 3 * quarter), 0.3 * half)]
        else:
            squares = [shape_mask("square", size, (half, half), 0.3 * size)]
        rgb = [torch.tensor(COLOURS[c], dtype=torch.float64) for c in PID_COLOURS]
        pairs = [(b, b) for b in (0, 1)] if kind == "redundant" else list(itertools.product((0, 1), (0, 1)))
        means, labels, captions = [], {"y1": [], "y2": []}, []
        for y1, y2 in pairs:
            drawn = {"redundant": [y1], "unique": [y1], "synergy": [y1 ^ y2], "copy": [y1, y2]}[kind]
            img = torch.full((3, size, size), -1.0, dtype=torch.float64)
            for mask, bit in zip(squares, drawn, strict=True):
                img[:, mask] = rgb[bit][:, None]
            means.append(img)
            labels["y1"].append(y1)
            labels["y2"].append(y2)
            captions.append(f"y1 {y1} y2 {y2}")
        self.means = torch.stack(means)
        self.masks = torch.stack(squares)[None].expand(len(pairs), -1, -1, -1).clone()
        self.component_labels = {k: torch.tensor(v) for k, v in labels.items()}
        self.captions = captions

    def joint_information(self, *, n: int = 20000, seed: int = 0) -> Estimate:
        """Exact ``I(x; y1, y2) = I(x; y1) + I(x; y2 | y1)`` (chain rule, common draws)."""
        a = self.mutual_information("y1", n=n, seed=seed)
        b = self.mutual_information("y2", given=("y1",), n=n, seed=seed)
        return replace(a, value=a.value + b.value, se=(a.se.square() + b.se.square()).sqrt(),
                       info={**a.info, "method": "chain rule over exact posteriors"})

    def exact_pid(self, measure: str = "pointwise-min", *, n: int = 20000, seed: int = 0) -> dict[str, float]:
        """The closed-form atoms of this world under ``measure``, from exact informations.

        Every measure: ``"redundant"`` has ``R = I1``; ``"unique"`` ``U1 = I1``; ``"synergy"``
        ``S = I12``; the other atoms are 0. The two-bit copy: ``"pointwise-min"`` gives ``R = 0``
        (an exact ``d_1`` vanishes off the left square, ``d_2`` off the right one), so ``U1 = I1``,
        ``U2 = I2``, ``S = I12 - I1 - I2`` (0: independent labels in separate places);
        ``"mmi"`` gives ``R = min(I1, I2)``, ``S = I12 - max(I1, I2)``.
        """
        from infodecomp.estimators.pid import PID_MEASURES

        if measure not in PID_MEASURES:
            raise ValueError(f"measure must be one of {PID_MEASURES}, got {measure!r}")
        i1 = self.mutual_information("y1", n=n, seed=seed).item()
        i2 = self.mutual_information("y2", n=n, seed=seed).item()
        i12 = self.joint_information(n=n, seed=seed).item()
        if self.kind == "copy" and measure == "pointwise-min":
            r = 0.0
        elif self.kind == "redundant":
            r = i1
        else:  # unique, synergy (I2 = 0 or I1 = I2 = 0) and the copy under mmi
            r = min(i1, i2)
        atoms = {"redundancy": r, "unique1": i1 - r, "unique2": i2 - r, "synergy": i12 - i1 - i2 + r}
        if self.kind != "copy":  # the agreed answer: exact zeros where every measure puts none
            keep = {"redundant": "redundancy", "unique": "unique1", "synergy": "synergy"}[self.kind]
            atoms = {k: (v if k == keep else 0.0) for k, v in atoms.items()}
        return {**atoms, "i1": i1, "i2": i2, "i12": i12}

    def atom_masks(self) -> dict[str, int | None]:
        """Which object mask (index into ``masks``) each non-zero atom of ``"pointwise-min"`` should
        fill: the square every atom lives in, or for the copy the left (``U1``) and right (``U2``)."""
        if self.kind == "copy":
            return {"unique1": 0, "unique2": 1}
        return {{"redundant": "redundancy", "unique": "unique1", "synergy": "synergy"}[self.kind]: 0}


class DigitsWorld(_MixtureWorld):
    """scikit-learn's 1797 8x8 handwritten digits (shipped with the package, no download).

    Pixel values 0..16 are mapped to ``[-1, 1]``, optionally upsampled (nearest neighbour) to
    ``size``; the smoothed empirical distribution (each image blurred by ``N(0, sigma^2 I)``)
    is a 1797-component mixture with the digit as label, so exact denoisers and
    ``I(x; digit)`` are available.
    """

    def __init__(self, size: int = 8, sigma: float = 0.1) -> None:
        if size % 8 or size <= 0:
            raise ValueError(f"size must be a positive multiple of 8, got {size}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float64) / 8.0 - 1.0  # (N, 8, 8)
        factor = size // 8
        images = images.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
        self.size, self.sigma = size, float(sigma)
        self.means = images[:, None]  # (N, 1, H, W)
        self.masks = (self.means > -1.0)  # (N, 1, H, W): the ink
        self.attributes = {"digit": [str(i) for i in range(10)]}
        self.component_labels = {"digit": torch.tensor(digits.target, dtype=torch.long)}
        self.captions = [f"the digit {d}" for d in digits.target.tolist()]

    def entropy(self, attribute: str = "digit") -> float:
        counts = torch.bincount(self.component_labels[attribute]).double()
        p = counts / counts.sum()
        return float(-(p * p.log()).sum())


def _check_world_args(size: int, shapes: Sequence[str], colours: Sequence[str], sigma: float) -> None:
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"unknown shape {s!r}; expected one of {SHAPES}")
    for c in colours:
        if c not in COLOURS:
            raise ValueError(f"unknown colour {c!r}; expected one of {list(COLOURS)}")
    if len(set(shapes)) != len(shapes) or len(set(colours)) != len(colours) or not shapes or not colours:
        raise ValueError(f"shapes and colours must be non-empty and distinct, got {shapes}, {colours}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
