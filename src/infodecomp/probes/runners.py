"""Whole probes on captioned images: what the training callback logs and the analysis reports write.

Each runner takes a :class:`~infodecomp.interface.TextDenoiser`, images in ``[-1, 1]`` with their
captions (:class:`Scenes`, optionally with object masks and the world that explains them) and
:class:`ProbeSettings`, and returns a :class:`ProbeResult`: JSON-ready values, figures, and the
word maps at the denoiser's own resolution. The model's hooks are the only difference between
a pixel model and a latent pipeline: ``encode_images`` before the probe, ``to_image_resolution``
and ``decode_latents`` after it, ``sampler()`` (its trained log-SNR range) inside it.

Nothing here writes files or knows about runs; :mod:`infodecomp.analysis.probes` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infodecomp.estimators.information import mass_in_mask
from infodecomp.interface import CaptionedWorld, TextDenoiser
from infodecomp.plotting import close, plot_word_maps
from infodecomp.probes.aro import load_aro
from infodecomp.probes.attention import word_attention_maps
from infodecomp.probes.compositional import (
    compositional_accuracy,
    multiple_choice_accuracy,
    score_captions,
)
from infodecomp.probes.interventions import Edit, change_correlations, intervene
from infodecomp.probes.localization import (
    LocalizationResult,
    calibration_split,
    combine,
    localization,
)
from infodecomp.probes.text import caption_words
from infodecomp.probes.words import KINDS, WordMaps, word_heatmaps
from infodecomp.tasks.images import COLOURS, SHAPES

PROBES = ("heatmap", "compositional", "localize", "intervene")
WORD_TYPES = {"colour": COLOURS, "shape": SHAPES}


@dataclass
class ProbeSettings:
    """How much work a probe does.

    Attributes:
        n_items: scenes (or ARO items, COCO-IT rows) probed.
        n_draws: ``(alpha, eps)`` draws per item.
        n_figure: rows shown in figures.
        calibration: share of images that calibrate localization thresholds.
        steps: DDIM steps of inversion and of each regeneration.
        edit: ``"omit"`` a word or ``"swap"`` a colour (interventions on a captioned world).
        words, given, measure: the word pair of the PID probe (names or positions, negative from
            the end), what is given (``"rest"`` of the caption or ``"none"``) and the redundancy
            measure (:mod:`infodecomp.probes.pid`).
        n_boot: bootstrap resamples for correlation standard errors.
        max_batch: most rows per denoiser forward.
        progress: show progress bars.
    """

    n_items: int = 200
    n_draws: int = 32
    seed: int = 0
    n_figure: int = 8
    calibration: float = 0.25
    steps: int = 50
    edit: str = "omit"
    words: tuple[str | int, ...] = ()
    given: str = "rest"
    measure: str = "pointwise-min"
    n_boot: int = 1000
    max_batch: int = 2048
    progress: bool = True


@dataclass
class Scenes:
    """Captioned images ``x: (B, C, H, W)`` in ``[-1, 1]``; with ``masks: (B, n_objects, H, W)``
    and the :class:`~infodecomp.interface.CaptionedWorld` that says which object each word
    describes, where known. ``image_ids`` (default ``0..B-1``) decide the calibration split."""

    x: Tensor
    captions: list[str]
    masks: Tensor | None = None
    world: Any = None
    image_ids: Sequence[int] | None = None

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in self.image_ids] if self.image_ids is not None else list(range(self.x.shape[0]))

    def captioned_world(self) -> CaptionedWorld:
        if self.masks is None or not isinstance(self.world, CaptionedWorld):
            raise ValueError("this probe needs scenes of a captioned world with object masks (e.g. "
                             "ShapesDataModule with captions: true)")
        return self.world


@dataclass
class ProbeResult:
    """What a probe found: JSON-ready ``values``, ``figures`` by file stem, and per-word ``maps``
    ``{kind: (B, K, h, w)}`` at the denoiser's resolution (latent for a latent model)."""

    values: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, Tensor] = field(default_factory=dict)

    def save_figures(self, out: Path, dpi: int = 120) -> dict[str, str]:
        """Write each figure to ``out/<name>.png`` and close it; returns ``{name: file name}``."""
        files = {}
        for name, fig in self.figures.items():
            fig.savefig(out / f"{name}.png", dpi=dpi)
            close(fig)
            files[name] = f"{name}.png"
        self.figures = {}
        return files


def word_type(word: str) -> str | None:
    """``"colour"``, ``"shape"`` or ``None`` for a word of the shapes worlds."""
    return next((t for t, names in WORD_TYPES.items() if word in names), None)


def mean_se(values: Tensor) -> tuple[float, float]:
    """Mean and standard error of the finite values (NaN where there are too few)."""
    v = values[torch.isfinite(values)].double()
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def encode_images(model: TextDenoiser, x: Tensor, chunk: int = 16) -> Tensor:
    """The denoiser's inputs for images ``x`` (``model.encode_images``, ``chunk`` at a time)."""
    return torch.cat([model.encode_images(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


# ---- word maps -----------------------------------------------------------------------------------

def word_masks(world: CaptionedWorld, captions: Sequence[str], masks: Tensor,
               positions: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """The mask of the object each mapped word describes, ``(B, K, H, W)``, and whether it
    describes one, ``(B, K)``, for the words at ``positions`` of each caption."""
    full, known = world.word_masks(captions, masks)
    k_max = max(len(p) for p in positions)
    out = torch.zeros((len(positions), k_max) + tuple(full.shape[-2:]), dtype=torch.bool)
    has = torch.zeros(len(positions), k_max, dtype=torch.bool)
    for b, pos in enumerate(positions):
        for k, p in enumerate(pos):
            out[b, k], has[b, k] = full[b, p], known[b, p]
    return out, has


def mask_shares(wm: WordMaps, masks: Tensor, has: Tensor, kind: str = "cmi") -> dict[str, Tensor]:
    """Per word type, the share of each object word's map inside its object's mask (1-D, one
    value per word that describes an object; NaN for a map without information)."""
    share = wm.mass_in_masks(masks.to(wm.maps(kind).device), kind).cpu()
    return {t: share[wm.select(lambda w, names=names: w in names) & has] for t, names in WORD_TYPES.items()}


def _per_word_totals(words: Sequence[Sequence[str]], totals: Tensor) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for ws, row in zip(words, totals, strict=True):
        for w, v in zip(ws, row, strict=False):
            groups.setdefault(w, []).append(float(v))
    return {w: dict(zip(("mean", "se"), mean_se(torch.tensor(v)), strict=True)) | {"n": len(v)}
            for w, v in sorted(groups.items())}


def probe_heatmap(model: TextDenoiser, scenes: Scenes, s: ProbeSettings, *,
                  words: Sequence[str | int] | None = None) -> ProbeResult:
    """CMI and MI maps of the words of each caption (all, or ``words``), their totals per word,
    and, for scenes of a captioned world, the share of each object word's map inside its object
    (next to the exact denoiser's on the same draws, where the world has one)."""
    lat = encode_images(model, scenes.x)
    wm = word_heatmaps(model, lat, scenes.captions, words=words, n_draws=s.n_draws, seed=s.seed,
                       max_batch=s.max_batch, progress=s.progress)
    size = tuple(scenes.x.shape[-2:])
    maps = {kind: model.to_image_resolution(wm.maps(kind).cpu(), size) for kind in KINDS}
    values: dict[str, Any] = {"nfe_per_image": wm.nfe}
    if model.trained_range is not None:
        values["logsnr_range"] = [model.trained_range.low, model.trained_range.high]
    masks = None
    if scenes.masks is not None and isinstance(scenes.world, CaptionedWorld):
        masks, has = word_masks(scenes.world, wm.captions, scenes.masks, wm.positions)
        shares = {kind: mask_shares(wm, masks, has, kind) for kind in KINDS}
        try:  # the exact denoiser's CMI maps on the same draws, where the world has one
            exact = word_heatmaps(_exact_text_model(scenes, model), scenes.x.double(),
                                  scenes.captions, words=words, kinds=("cmi",), n_draws=s.n_draws, seed=s.seed)
            shares["oracle cmi"] = mask_shares(exact, masks, has)
        except (ValueError, AttributeError) as err:
            values["oracle_note"] = f"no exact reference: {err}"
        values["mass_in_mask"] = {f"{kind}/{t}": dict(zip(("mean", "se"), mean_se(v), strict=True)) | {"n": len(v)}
                                  for kind, per in shares.items() for t, v in per.items()}
    for kind in KINDS:
        values[f"{kind}_per_word"] = _per_word_totals(wm.words, wm.totals(kind))
    k = min(s.n_figure, scenes.x.shape[0])
    figures = {f"word_{kind}_maps": plot_word_maps(scenes.x[:k].cpu(), wm.words[:k], maps[kind][:k],
                                                   captions=wm.captions[:k],
                                                   masks=masks[:k] if masks is not None else None, label=kind.upper())
               for kind in KINDS}
    values["examples"] = {key: v[:k] if isinstance(v, list) else v for key, v in wm.to_dict().items()}
    return ProbeResult(values, figures, {kind: wm.maps(kind).cpu() for kind in KINDS})


# ---- partial information decomposition of two words ----------------------------------------------

def _pid_values(totals: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    return {k: dict(zip(("mean", "se"), mean_se(v.cpu()), strict=True)) for k, v in totals.items()}


def probe_pid(model: TextDenoiser, scenes: Scenes, s: ProbeSettings) -> ProbeResult:
    """Redundant, unique and synergistic information of two words of each caption (``s.words``),
    image level (mean and SE over scenes) and per pixel; beside the exact denoiser's atoms on
    the same draws, and the share of each atom's map inside each word's object, where the
    scenes' world has them."""
    from infodecomp.plotting import plot_info_heatmaps
    from infodecomp.probes.pid import word_pid

    if len(s.words) != 2:
        raise ValueError(f"the PID probe needs two words (--words W1 W2, names or positions), got {list(s.words)}")
    lat = encode_images(model, scenes.x)
    wp = word_pid(model, lat, scenes.captions, s.words, given=s.given, measure=s.measure, n_draws=s.n_draws,
                  seed=s.seed, sample_ids=scenes.ids, max_batch=s.max_batch, progress=s.progress)
    size = tuple(scenes.x.shape[-2:])
    labels = {"redundancy": "R", "unique1": "U1", "unique2": "U2", "synergy": "S"}
    maps = {labels[a]: model.to_image_resolution(e.value.cpu(), size) for a, e in wp.result.atoms.items()}
    totals = wp.totals()
    values: dict[str, Any] = {"words": list(s.words), "given": s.given, "measure": s.measure,
                              "weaker": wp.result.weaker, "nfe_per_image": wp.result.nfe,
                              "atoms": _pid_values(totals),
                              "examples": [{"caption": c, "pair": list(p), **{k: float(v[i]) for k, v in totals.items()}}
                                           for i, (c, p) in enumerate(zip(wp.captions, wp.pairs, strict=True))
                                           if i < s.n_figure]}
    oracle_maps = None
    masks = None
    if scenes.masks is not None and isinstance(scenes.world, CaptionedWorld):
        obj, has = word_masks(scenes.world, wp.captions, scenes.masks, [list(p) for p in wp.positions])
        masks = obj.any(dim=1)
        share: dict[str, dict[str, Any]] = {}
        for a, label in labels.items():
            m = maps[label].clamp_min(0)
            total = m.flatten(1).sum(1)
            for k, word in enumerate(("word 1", "word 2")):
                inside = mass_in_mask(m, obj[:, k])
                ok = has[:, k] & (total > 1e-12)
                share.setdefault(a, {})[word] = dict(zip(("mean", "se"), mean_se(inside[ok]), strict=True)) | {
                    "n": int(ok.sum())}
        values["mass_in_word_objects"] = share
        if s.given == "rest":
            try:  # the exact denoiser's atoms on the same draws
                exact = word_pid(_exact_text_model(scenes, model), scenes.x.double(),
                                 scenes.captions, [list(p) for p in wp.positions], given=s.given, measure=s.measure,
                                 n_draws=s.n_draws, seed=s.seed, sample_ids=scenes.ids)
                ex = exact.totals()
                values["atoms_oracle"] = _pid_values(ex)
                values["atoms_minus_oracle"] = _pid_values({k: totals[k].cpu() - ex[k].to(totals[k]) for k in ex})
                oracle_maps = {labels[a]: e.value.cpu().float() for a, e in exact.result.atoms.items()}
            except (ValueError, AttributeError) as err:
                values["oracle_note"] = f"no exact reference: {err}"
    k = min(s.n_figure, scenes.x.shape[0])
    fig = plot_info_heatmaps(scenes.x[:k].cpu(), {n: m[:k] for n, m in maps.items()},
                             oracle_maps={n: m[:k] for n, m in oracle_maps.items()} if oracle_maps else None,
                             masks=masks[:k] if masks is not None else None,
                             titles=[f"{c} [{p[0]} | {p[1]}]" for c, p in zip(wp.captions[:k], wp.pairs[:k], strict=True)],
                             shared_scale=True)
    return ProbeResult(values, {"pid_maps": fig}, {a: e.value.cpu() for a, e in wp.result.atoms.items()})


# ---- compositional -------------------------------------------------------------------------------

def probe_compositional(model: TextDenoiser, scenes: Scenes, s: ProbeSettings) -> ProbeResult:
    """Accuracy of the true two-object caption against attribute swaps, relation swaps and shuffles."""
    r = compositional_accuracy(model, encode_images(model, scenes.x), scenes.captions, n_draws=s.n_draws,
                               seed=s.seed, sample_ids=scenes.ids, max_batch=s.max_batch, progress=s.progress)
    d = r.to_dict()
    d["above_chance_in_se"] = {k: {sc: r.above_chance_in_se(k, sc) for sc in r.accuracy[k]} for k in r.accuracy}
    return ProbeResult(d)


def aro_images(items: Sequence[Any], shape: Sequence[int]) -> Tensor:
    """ARO items' images (cropped, resized to ``shape = (3, H, H)``) in ``[-1, 1]``."""
    import numpy as np

    c, h, w = shape
    if c != 3 or h != w:
        raise ValueError(f"ARO images are square RGB; the model takes {tuple(shape)}")
    out = [torch.from_numpy(np.asarray(item.load_image(h), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
           for item in items]
    return torch.stack(out)


def probe_aro(model: TextDenoiser, name: str, root: Path, s: ProbeSettings, *,
              image_shape: Sequence[int] | None = None) -> ProbeResult:
    """Accuracy of picking the true caption among an ARO set's candidates, for both scores.

    Images are read at ``image_shape`` (default: the denoiser's input shape; a latent model's
    image shape otherwise) and go through ``model.encode_images``.
    """
    items = load_aro(name, root, seed=s.seed, limit=s.n_items)
    x = encode_images(model, aro_images(items, image_shape or model.image_shape))
    scores = score_captions(model, x, [list(i.captions) for i in items], n_draws=s.n_draws, seed=s.seed,
                            max_batch=s.max_batch, progress=s.progress)
    acc = multiple_choice_accuracy(scores)
    n_cand = len(items[0].captions)
    return ProbeResult({"aro_set": name, "root": str(root), "count": len(items), "candidates": n_cand,
                        "chance": 1 / n_cand, "accuracy": {k: v[0] for k, v in acc.items()},
                        "se": {k: v[1] for k, v in acc.items()}})


# ---- localization --------------------------------------------------------------------------------

def localize_maps(maps: dict[str, Tensor], masks: Tensor, image_ids: Sequence[int] | Tensor,
                  s: ProbeSettings) -> LocalizationResult:
    """mIoU of each method's maps ``(N, H, W)`` against the masks ``(N, H, W)`` of N items, with
    attention x CMI added where both exist, thresholds calibrated on a share of the images
    (:func:`~infodecomp.probes.localization.calibration_split`) and scored on the others."""
    maps = dict(maps)
    if "attention" in maps and "cmi" in maps:
        maps["attention x cmi"] = combine(maps["attention"], maps["cmi"])
    calib = calibration_split(image_ids, s.calibration, s.seed)
    return localization(maps, masks, calibration=calib)


def probe_localize(model: TextDenoiser, scenes: Scenes, s: ProbeSettings) -> ProbeResult:
    """Localization of the object words of captioned-world scenes by their CMI, MI and attention maps."""
    world = scenes.captioned_world()
    lat = encode_images(model, scenes.x)
    wm = word_heatmaps(model, lat, scenes.captions, n_draws=s.n_draws, seed=s.seed, max_batch=s.max_batch,
                       progress=s.progress)
    masks, has = word_masks(world, wm.captions, scenes.masks, wm.positions)
    items = has.nonzero()  # (N, 2): image, word slot
    b, k = items[:, 0], items[:, 1]
    size = tuple(scenes.x.shape[-2:])
    maps = {kind: model.to_image_resolution(wm.maps(kind).cpu(), size)[b, k] for kind in KINDS}
    if model.unet is not None:
        att = word_attention_maps(model, lat, scenes.captions, words=wm.positions, seed=s.seed)
        maps["attention"] = model.to_image_resolution(att, size)[b, k]
    ids = torch.tensor(scenes.ids)
    res = localize_maps(maps, masks[b, k], ids[b], s)
    d = res.to_dict()
    d["n_images"] = scenes.x.shape[0]
    test_types = [word_type(wm.words[int(i)][int(j)]) for (i, j), c in zip(items, res.calibration.tolist(),
                                                                          strict=True) if not c]
    d["per_word_type"] = {t: {m: mean_se(v[torch.tensor([tt == t for tt in test_types])])
                              for m, v in res.per_item.items()} for t in WORD_TYPES}
    return ProbeResult(d)


# ---- interventions -------------------------------------------------------------------------------

def world_edits(scenes: Scenes, edit: str) -> list[Edit]:
    """One edit per scene of a captioned world: omit an object word, or swap a colour for the
    next one (``edit = "omit" | "swap"``); the word edited cycles through the caption's."""
    if edit not in ("omit", "swap"):
        raise ValueError(f"edit must be 'omit' or 'swap', got {edit!r}")
    world = scenes.captioned_world()
    colours = list(world.attributes["colour_1"])
    edits = []
    for b, caption in enumerate(scenes.captions):
        words = caption.split()
        objs = [i for i, o in enumerate(world.word_objects(caption)) if o is not None]
        if edit == "swap":
            objs = [i for i in objs if words[i] in colours]
        if not objs:
            raise ValueError(f"caption {caption!r} has no word to {edit}")
        p = objs[b % len(objs)]
        edits.append(Edit(p, colours[(colours.index(words[p]) + 1) % len(colours)] if edit == "swap" else None))
    return edits


def probe_intervene(model: TextDenoiser, scenes: Scenes, s: ProbeSettings, *,
                    edits: Sequence[Edit] | None = None) -> ProbeResult:
    """Edit one word per caption (``edits``, or :func:`world_edits` with ``s.edit``), regenerate
    from the DDIM-inverted latent, and correlate the pixel change with the word's CMI map and
    its cross-attention map (Pearson r per image across pixels, and across images)."""
    if edits is None:
        edits = world_edits(scenes, s.edit)
        edit = s.edit
    else:
        edit = "omit" if all(e.replacement is None for e in edits) else "replace"
    res = intervene(model, scenes.x, scenes.captions, edits, steps=s.steps, progress=s.progress)
    positions = [[e.position] for e in edits]
    wm = word_heatmaps(model, res["latents"], scenes.captions, words=positions, kinds=("cmi",), n_draws=s.n_draws,
                       seed=s.seed, max_batch=s.max_batch, progress=s.progress)
    size = tuple(scenes.x.shape[-2:])
    maps = {"cmi": model.to_image_resolution(wm.cmi[:, 0].cpu(), size)}
    if model.unet is not None:
        att = word_attention_maps(model, res["latents"], scenes.captions, words=positions, seed=s.seed)
        maps["attention"] = model.to_image_resolution(att[:, 0], size)
    change = res["change"].float().cpu()
    d = change_correlations(change, maps, n_boot=s.n_boot, seed=s.seed).to_dict()
    parsed = [caption_words(c, model.max_words) for c in scenes.captions]
    edited = [e.apply(ws) for ws, e in zip(parsed, edits, strict=True)]
    d |= {"edit": edit, "edited_captions": edited, "mean_change": float(change.mean())}
    k = min(s.n_figure, scenes.x.shape[0])
    rows = torch.stack([scenes.x[:k].cpu(), res["reconstruction"][:k].float().cpu(),
                        res["edited"][:k].float().cpu()], 1)
    fig = plot_interventions(rows, change[:k], {m: v[:k] for m, v in maps.items()},
                             [f"{c}\n-> {e}" for c, e in zip(scenes.captions[:k], edited[:k], strict=True)])
    return ProbeResult(d, {"interventions": fig}, {"cmi": wm.cmi[:, 0].cpu()})


def plot_interventions(images: Tensor, change: Tensor, maps: dict[str, Tensor], titles: Sequence[str]) -> Any:
    """Rows of: image | reconstruction | edited (``images: (B, 3, C, H, W)``) | the change
    ``(B, H, W)`` | each map ``(B, H, W)`` of the edited word."""
    import matplotlib.pyplot as plt

    from infodecomp.plotting import to_image

    names = {"cmi": "CMI of word", "attention": "attention"}
    cols = ["image", "reconstruction", "edited", "|change|", *(names.get(m, m) for m in maps)]
    fig, axes = plt.subplots(images.shape[0], len(cols), figsize=(1.5 * len(cols), 1.55 * images.shape[0] + 0.3),
                             squeeze=False)
    for i in range(images.shape[0]):
        panels = [to_image(images[i, 0]), to_image(images[i, 1]), to_image(images[i, 2]), change[i],
                  *(m[i] for m in maps.values())]
        for j, p in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(p if j < 3 else p.nan_to_num().numpy(), cmap=None if j < 3 else "inferno",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        axes[i, 0].set_xlabel(titles[i], fontsize=5)
    fig.tight_layout()
    return fig


RUNNERS = {"heatmap": probe_heatmap, "compositional": probe_compositional, "localize": probe_localize,
           "intervene": probe_intervene}


def _exact_text_model(scenes: Scenes, model: Any) -> Any:
    """The exact denoiser of the scenes' world, reading shortened captions as the model was
    trained to (its word dropout, where it says)."""
    from infodecomp.probes.oracle import shapes_text_oracle

    return shapes_text_oracle(scenes.world, model.max_words, getattr(model, "word_dropout", None))
