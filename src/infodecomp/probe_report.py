"""``analyze.py heatmap | compositional | localize | intervene`` for text-to-image runs.

Each probe reads a trained text-conditioned run (a checkpoint or run directory; by default the
model shipped in ``data/shapes_text``), draws held-out captioned scenes from the run's world
(fresh seeds, never the training draws), runs the probe through :mod:`infodecomp.probes`, and
writes a report directory: ``report.json``, PNG figures and a readable ``summary.md``. The
directory is written atomically (see :func:`infodecomp.report.write_atomically`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infodecomp.plotting import close, plot_word_maps
from infodecomp.probes import (
    Edit,
    TextModel,
    change_correlations,
    combine,
    compositional_accuracy,
    intervene,
    localization,
    word_attention_maps,
    word_heatmaps,
)
from infodecomp.analysis.common import AnalysisError, load_run, write_atomically
from infodecomp.tasks.images import COLOURS, SHAPES

PROBES = ("heatmap", "compositional", "localize", "intervene")
SHIPPED = Path(__file__).resolve().parents[2] / "data" / "shapes_text"
HELD_OUT_SEED = 10_000  # the run's data module draws training items from seed 0 and validation from seed 1


@dataclass
class ProbeSettings:
    n_items: int = 200
    n_draws: int = 32
    seed: int = 0
    n_figure: int = 8
    calibration: float = 0.25
    steps: int = 50
    edit: str = "omit"
    n_boot: int = 1000
    max_batch: int = 2048
    progress: bool = True


def word_type(word: str) -> str | None:
    return "colour" if word in COLOURS else "shape" if word in SHAPES else None


@dataclass
class Scenes:
    x: Tensor
    captions: list[str]
    masks: Tensor  # (B, n_objects, H, W)
    world: Any


def held_out_scenes(dm: Any, n: int, seed: int = 0) -> Scenes:
    """``n`` fresh captioned scenes of the run's world, with object masks."""
    world = getattr(dm, "world", None)
    if world is None or not hasattr(world, "word_masks"):
        raise AnalysisError(f"{type(dm).__name__} has no captioned world with object masks (e.g. "
                            "ShapesDataModule with captions: true); these probes need one")
    b = world.sample(n, seed=HELD_OUT_SEED + seed)
    return Scenes(b.x, list(b.captions), b.masks, world)


def load_text_run(path: str | Path | None, config: str | Path | None = None) -> tuple[TextModel, Any, Path, Path]:
    path = SHIPPED if path is None else path
    module, dm, ckpt, cfg = load_run(path, config)
    try:
        model = TextModel.from_module(module)
    except ValueError as err:
        raise AnalysisError(str(err)) from err
    return model, dm, ckpt, cfg


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=120)
    close(fig)
    return path.name


def _mean_se(values: Tensor) -> tuple[float, float]:
    v = values[torch.isfinite(values)].double()
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def _word_masks(scenes: Scenes, maps_words: Sequence[Sequence[str]], positions: Sequence[Sequence[int]]) -> tuple:
    full, known = scenes.world.word_masks(scenes.captions, scenes.masks)
    k_max = max(len(p) for p in positions)
    masks = torch.zeros((len(positions), k_max) + tuple(full.shape[-2:]), dtype=torch.bool)
    has = torch.zeros(len(positions), k_max, dtype=torch.bool)
    for b, pos in enumerate(positions):
        for k, p in enumerate(pos):
            masks[b, k], has[b, k] = full[b, p], known[b, p]
    return masks, has


# ---- the probes --------------------------------------------------------------------------------

def probe_heatmap(model: TextModel, scenes: Scenes, s: ProbeSettings, out: Path) -> dict:
    wm = word_heatmaps(model, scenes.x, scenes.captions, n_draws=s.n_draws, seed=s.seed, max_batch=s.max_batch,
                       progress=s.progress)
    masks, has = _word_masks(scenes, wm.words, wm.positions)
    result: dict[str, Any] = {"nfe_per_image": wm.nfe, "mass_in_mask": {}, "figures": {}}
    shares = {kind: wm.mass_in_masks(masks, kind) for kind in ("cmi", "mi")}
    try:  # the exact denoiser's CMI maps on the same draws, where the world has one
        from infodecomp.probes.oracle import shapes_text_oracle

        exact = word_heatmaps(shapes_text_oracle(scenes.world, model.max_words), scenes.x.double(),
                              scenes.captions, kinds=("cmi",), n_draws=s.n_draws, seed=s.seed)
        shares["oracle cmi"] = exact.mass_in_masks(masks)
    except (ValueError, AttributeError) as err:
        result["oracle_note"] = f"no exact reference: {err}"
    for kind, share in shares.items():
        for t in ("colour", "shape"):
            sel = wm.select(lambda w, t=t: word_type(w) == t) & has
            mean, se = _mean_se(share[sel])
            result["mass_in_mask"][f"{kind}/{t}"] = {"mean": mean, "se": se, "n": int(sel.sum())}
    for kind in ("cmi", "mi"):
        result[f"{kind}_per_word"] = _per_word_totals(wm.words, wm.totals(kind))
    k = min(s.n_figure, scenes.x.shape[0])
    for kind in ("cmi", "mi"):
        fig = plot_word_maps(scenes.x[:k], wm.words[:k], wm.maps(kind)[:k].cpu(), captions=wm.captions[:k],
                             masks=masks[:k], label=kind.upper())
        result["figures"][f"{kind}_maps"] = _save(fig, out / f"word_{kind}_maps.png")
    result["examples"] = wm.to_dict() | {"captions": wm.captions[:k]}
    result["examples"] = {key: v[:k] if isinstance(v, list) else v for key, v in result["examples"].items()}
    return result


def _per_word_totals(words: Sequence[Sequence[str]], totals: Tensor) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for ws, row in zip(words, totals, strict=True):
        for w, v in zip(ws, row, strict=False):
            groups.setdefault(w, []).append(float(v))
    return {w: dict(zip(("mean", "se"), _mean_se(torch.tensor(v)), strict=True)) | {"n": len(v)}
            for w, v in sorted(groups.items())}


def probe_compositional(model: TextModel, scenes: Scenes, s: ProbeSettings, out: Path) -> dict:
    r = compositional_accuracy(model, scenes.x, scenes.captions, n_draws=s.n_draws, seed=s.seed,
                               max_batch=s.max_batch, progress=s.progress)
    d = r.to_dict()
    d["above_chance_in_se"] = {k: {sc: r.above_chance_in_se(k, sc) for sc in r.accuracy[k]} for k in r.accuracy}
    return d


def aro_images(items: Sequence[Any], shape: Sequence[int]) -> Tensor:
    """ARO items' images (cropped, resized to the model's input) in ``[-1, 1]``."""
    import numpy as np

    c, h, w = shape
    if c != 3 or h != w:
        raise AnalysisError(f"ARO images are RGB; the model takes {tuple(shape)}")
    out = []
    for item in items:
        try:
            img = item.load_image(h)
        except ValueError as err:
            raise AnalysisError(str(err)) from err
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(out)


def probe_aro(model: TextModel, name: str, root: Path, s: ProbeSettings, *, image_shape: Sequence[int] | None = None,
              encode: Callable[[Tensor], Tensor] | None = None, sampler: Any = None) -> dict:
    """Accuracy of picking the true caption among an ARO set's candidates, for both scores.

    Images are read at ``image_shape`` (default: the model's input) and passed through
    ``encode`` (e.g. a VAE) when given.
    """
    from infodecomp.probes import load_aro, multiple_choice_accuracy, score_captions

    try:
        items = load_aro(name, root, seed=s.seed, limit=s.n_items)
        x = aro_images(items, image_shape or model.image_shape)
        if encode is not None:
            x = torch.cat([encode(x[i : i + 16]) for i in range(0, len(x), 16)])
        scores = score_captions(model, x, [list(i.captions) for i in items], n_draws=s.n_draws, seed=s.seed,
                                sampler=sampler, max_batch=s.max_batch, progress=s.progress)
    except ValueError as err:
        raise AnalysisError(str(err)) from err
    acc = multiple_choice_accuracy(scores)
    n_cand = len(items[0].captions)
    return {"aro_set": name, "root": str(root), "count": len(items), "candidates": n_cand, "chance": 1 / n_cand,
            "accuracy": {k: v[0] for k, v in acc.items()}, "se": {k: v[1] for k, v in acc.items()}}


def probe_localize(model: TextModel, scenes: Scenes, s: ProbeSettings, out: Path) -> dict:
    wm = word_heatmaps(model, scenes.x, scenes.captions, n_draws=s.n_draws, seed=s.seed, max_batch=s.max_batch,
                       progress=s.progress)
    att = word_attention_maps(model, scenes.x, scenes.captions, seed=s.seed)
    masks, has = _word_masks(scenes, wm.words, wm.positions)
    n_img = scenes.x.shape[0]
    order = torch.randperm(n_img, generator=torch.Generator().manual_seed(s.seed))
    calib_images = torch.zeros(n_img, dtype=torch.bool)
    calib_images[order[: max(1, round(s.calibration * n_img))]] = True  # split by image: no leakage
    items = has.nonzero()  # (N, 2): image, word slot
    b, k = items[:, 0], items[:, 1]
    maps = {"cmi": wm.cmi[b, k].cpu(), "mi": wm.mi[b, k].cpu(), "attention": att[b, k]}
    maps["attention x cmi"] = combine(maps["attention"], maps["cmi"])
    res = localization(maps, masks[b, k], calibration=calib_images[b])
    d = res.to_dict()
    d["n_images"] = n_img
    d["per_word_type"] = {}
    types = [word_type(wm.words[int(i)][int(j)]) for i, j in items]
    test_types = [t for t, c in zip(types, calib_images[b].tolist(), strict=True) if not c]
    for t in ("colour", "shape"):
        sel = torch.tensor([tt == t for tt in test_types])
        d["per_word_type"][t] = {m: _mean_se(v[sel]) for m, v in res.per_item.items()}
    return d


def probe_intervene(model: TextModel, scenes: Scenes, s: ProbeSettings, out: Path) -> dict:
    if s.edit not in ("omit", "swap"):
        raise AnalysisError(f"--edit must be 'omit' or 'swap', got {s.edit!r}")
    edits, positions = [], []
    colours = [c for c in scenes.world.attributes["colour_1"]]
    for b, caption in enumerate(scenes.captions):
        objs = [i for i, o in enumerate(scenes.world.word_objects(caption)) if o is not None]
        words = caption.split()
        if s.edit == "swap":
            objs = [i for i in objs if words[i] in colours]
        p = objs[b % len(objs)]
        positions.append(p)
        swap = colours[(colours.index(words[p]) + 1) % len(colours)] if s.edit == "swap" else None
        edits.append(Edit(p, swap))
    res = intervene(model, scenes.x, scenes.captions, edits, steps=s.steps)
    wm = word_heatmaps(model, scenes.x, scenes.captions, words=[[p] for p in positions], kinds=("cmi",),
                       n_draws=s.n_draws, seed=s.seed, max_batch=s.max_batch, progress=s.progress)
    att = word_attention_maps(model, scenes.x, scenes.captions, words=None, seed=s.seed)
    att_word = torch.stack([att[b, p] for b, p in enumerate(positions)])
    corr = change_correlations(res["change"].cpu(), {"cmi": wm.cmi[:, 0].cpu(), "attention": att_word},
                               n_boot=s.n_boot, seed=s.seed)
    d = corr.to_dict()
    d["edit"] = s.edit
    k = min(s.n_figure, scenes.x.shape[0])
    rows = torch.stack([scenes.x[:k].cpu(), res["reconstruction"][:k].cpu(), res["edited"][:k].cpu()], 1)
    fig = _intervention_figure(rows, res["change"][:k].cpu(), wm.cmi[:k, 0].cpu(), att_word[:k],
                               [f"{c}\n-> {e.apply(c.split())}" for c, e in zip(scenes.captions[:k], edits[:k],
                                                                                 strict=True)])
    d["figures"] = {"interventions": _save(fig, out / "interventions.png")}
    d["mean_change"] = float(res["change"].mean())
    return d


def _intervention_figure(images: Tensor, change: Tensor, cmi: Tensor, att: Tensor, titles: Sequence[str]) -> Any:
    import matplotlib.pyplot as plt

    from infodecomp.plotting import to_image

    cols = ["image", "reconstruction", "edited", "|change|", "CMI of word", "attention"]
    fig, axes = plt.subplots(images.shape[0], len(cols), figsize=(1.5 * len(cols), 1.55 * images.shape[0] + 0.3),
                             squeeze=False)
    for i in range(images.shape[0]):
        panels = [to_image(images[i, 0]), to_image(images[i, 1]), to_image(images[i, 2]), change[i], cmi[i], att[i]]
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


_RUNNERS: dict[str, Callable[[TextModel, Scenes, ProbeSettings, Path], dict]] = {
    "heatmap": probe_heatmap, "compositional": probe_compositional, "localize": probe_localize,
    "intervene": probe_intervene,
}


def run_probe(
    probe: str, run: str | Path | None = None, out: str | Path | None = None, *, config: str | Path | None = None,
    overwrite: bool = False, settings: ProbeSettings | None = None, wandb: bool = False,
    aro: tuple[str, str | Path] | None = None,
) -> Path:
    """Run one probe on a text-to-image run and write its report directory; returns it.

    ``aro=(set name, root)`` makes the compositional probe score a local ARO set instead of
    held-out scenes of the run's world.
    """
    if probe not in _RUNNERS:
        raise AnalysisError(f"unknown probe {probe!r}; expected one of {PROBES}")
    s = settings or ProbeSettings()
    if s.n_items < 4:
        raise AnalysisError(f"need at least 4 items, got {s.n_items}")
    model, dm, ckpt, cfg = load_text_run(run, config)
    out = Path(out) if out is not None else Path("outputs") / "probes" / probe

    def fill(tmp: Path) -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            if aro is not None:
                if probe != "compositional":
                    raise AnalysisError("an ARO set is only used by the compositional probe")
                result = probe_aro(model, aro[0], Path(aro[1]), s)
                scenes_n = result["count"]
            else:
                scenes = held_out_scenes(dm, s.n_items, s.seed)
                result = _RUNNERS[probe](model, scenes, s, tmp)
                scenes_n = scenes.x.shape[0]
        result = {"probe": probe, "checkpoint": str(ckpt), "config": str(cfg), "settings": asdict(s),
                  "n_items": scenes_n, **result, "seconds": time.perf_counter() - start}
        (tmp / "report.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "summary.md").write_text(render_summary(result))
        return result

    result = write_atomically(out, fill, overwrite=overwrite)
    if wandb:
        log_probe_to_wandb(out, result)
    return out


# ---- summaries ---------------------------------------------------------------------------------

def _pm(mean: float, se: float, scale: float = 1.0, digits: int = 3) -> str:
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


def render_summary(r: Mapping[str, Any]) -> str:
    lines = [f"# {r['probe']} probe", "", f"- checkpoint: `{r['checkpoint']}`",
             f"- {r['n_items']} held-out scenes, {r['settings']['n_draws']} log-SNR draws each", ""]
    p = r["probe"]
    if p == "heatmap":
        lines += ["## Share of each word's map inside its object's mask", "",
                  "| word type | CMI map | MI map | exact CMI map (same draws) | words |", "|---|---|---|---|---|"]
        for t in ("colour", "shape"):
            c, m = r["mass_in_mask"][f"cmi/{t}"], r["mass_in_mask"][f"mi/{t}"]
            o = r["mass_in_mask"].get(f"oracle cmi/{t}")
            exact = f"{_pm(o['mean'], o['se'], 100, 1)}%" if o else "n/a"
            lines.append(f"| {t} | {_pm(c['mean'], c['se'], 100, 1)}% | {_pm(m['mean'], m['se'], 100, 1)}% | {exact} | "
                         f"{c['n']} |")
        lines += ["", f"Denoiser calls per image: {r['nfe_per_image']}.", ""]
    elif p == "compositional" and "aro_set" in r:
        lines += [f"## {r['aro_set']}: accuracy of the true caption among {r['candidates']} (chance "
                  f"{100 * r['chance']:.0f}%)", "", "| score | accuracy | items |", "|---|---|---|"]
        for k, v in r["accuracy"].items():
            lines.append(f"| {k} | {_pm(v, r['se'][k], 100, 1)}% | {r['count']} |")
        lines.append("")
    elif p == "compositional":
        lines += ["## Accuracy of the true caption against each perturbation (chance 50%)", "",
                  "| perturbation | orthogonal i_o | denoising loss (= standard i_s) | items |", "|---|---|---|---|"]
        for k, acc in r["accuracy"].items():
            lines.append(f"| {k} | {_pm(acc['orthogonal'], r['se'][k]['orthogonal'], 100, 1)}% | "
                         f"{_pm(acc['denoising'], r['se'][k]['denoising'], 100, 1)}% | {r['count'][k]} |")
        lines.append("")
    elif p == "localize":
        lines += [f"## Localization of object words (mIoU, threshold calibrated on {r['n_calibration']} items, "
                  f"tested on {r['n_test']})", "", "| method | mIoU | threshold |", "|---|---|---|"]
        for m, v in r["miou"].items():
            lines.append(f"| {m} | {_pm(v, r['se'][m])} | {r['thresholds'][m]:.2f} |")
        lines.append("")
    elif p == "intervene":
        lines += [f"## Pixel change after each edit ({r['edit']} one word) against each map (Pearson r, "
                  "bootstrap SE)", "", "| map | pixel level | image level |", "|---|---|---|"]
        for m in r["pixel"]:
            lines.append(f"| {m} | {_pm(r['pixel'][m]['value'], r['pixel'][m]['se'])} | "
                         f"{_pm(r['image'][m]['value'], r['image'][m]['se'])} |")
        lines.append("")
    for name, file in r.get("figures", {}).items():
        lines += [f"![{name}]({file})", ""]
    lines.append(f"_Computed in {r['seconds']:.0f} s._")
    return "\n".join(lines) + "\n"


def log_probe_to_wandb(out: Path, result: Mapping[str, Any]) -> None:
    """Log a probe's tables and figures as a W&B run (offline without credentials)."""
    import wandb

    from infodecomp.analysis.common import analysis_run

    run = analysis_run(out, f"probe-{result['probe']}", {"checkpoint": result["checkpoint"], **result["settings"]})
    p = result["probe"]
    if p == "heatmap":
        rows = [[k, v["mean"], v["se"], v["n"]] for k, v in result["mass_in_mask"].items()]
        run.log({"probe/mass_in_mask": wandb.Table(columns=["map/word type", "mean", "se", "n"], data=rows)})
    elif p == "compositional" and "aro_set" in result:
        rows = [[result["aro_set"], k, v, result["se"][k]] for k, v in result["accuracy"].items()]
        run.log({"probe/compositional": wandb.Table(columns=["set", "score", "accuracy", "se"], data=rows)})
    elif p == "compositional":
        rows = [[k, s, result["accuracy"][k][s], result["se"][k][s]] for k in result["accuracy"]
                for s in result["accuracy"][k]]
        run.log({"probe/compositional": wandb.Table(columns=["perturbation", "score", "accuracy", "se"], data=rows)})
    elif p == "localize":
        rows = [[m, v, result["se"][m], result["thresholds"][m]] for m, v in result["miou"].items()]
        run.log({"probe/localization": wandb.Table(columns=["method", "miou", "se", "threshold"], data=rows)})
    elif p == "intervene":
        rows = [[m, lvl, result[lvl][m]["value"], result[lvl][m]["se"]] for lvl in ("pixel", "image")
                for m in result[lvl]]
        run.log({"probe/interventions": wandb.Table(columns=["map", "level", "pearson", "se"], data=rows)})
    for name, file in result.get("figures", {}).items():
        run.log({f"probe/{name}": wandb.Image(str(out / file))})
    run.finish()
