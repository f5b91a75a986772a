"""``analyze.py <probe> --model DIR``: the text probes on a local Stable-Diffusion-style pipeline.

* ``heatmap --image IMG --prompt P [--words ...]``: CMI and MI maps of each word, at latent
  resolution and spread over the image;
* ``compositional --aro DIR --aro-set NAME``: ARO accuracy for both scores;
* ``intervene --image IMG --prompt P --word W [--replacement R]``: DDIM inversion in latent
  space, regeneration with the caption and with the edit, change against the word's maps;
* ``localize --coco DIR --csv FILE``: the paper's COCO-IT localization (CSV columns: image
  id, label, caption, caption without the word, word), dataset-scale through Lightning's
  ``Trainer.predict`` (any number of devices; a distributed sampler shards the items, each
  item's draws depend only on its row, finished items are kept on disk and skipped on restart).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infodecomp.probe_report import ProbeSettings, _intervention_figure, _pm, _save
from infodecomp.analysis.common import AnalysisError, write_atomically


def load_sd(path: str | Path) -> Any:
    from infodecomp.models.stable_diffusion import StableDiffusionModel

    try:
        return StableDiffusionModel(path)
    except ValueError as err:
        raise AnalysisError(str(err)) from err


def _image(model: Any, path: str | Path) -> Tensor:
    from infodecomp.models.stable_diffusion import load_image

    try:
        return load_image(path, model.image_size())
    except ValueError as err:
        raise AnalysisError(str(err)) from err


def _figure(image: Tensor, words: Sequence[str], rows: dict[str, Tensor], title: str) -> Any:
    import matplotlib.pyplot as plt

    from infodecomp.plotting import to_image

    fig, axes = plt.subplots(len(rows), len(words) + 1, figsize=(1.8 * (len(words) + 1), 1.9 * len(rows) + 0.3),
                             squeeze=False)
    for i, (name, maps) in enumerate(rows.items()):
        axes[i, 0].imshow(to_image(image))
        axes[i, 0].set_ylabel(name, fontsize=8)
        for j, w in enumerate(words):
            ax = axes[i, j + 1]
            ax.imshow(to_image(image), alpha=0.5)
            heat = maps[j].nan_to_num().numpy()
            ax.imshow(heat, cmap="inferno", alpha=0.7, vmin=0, vmax=max(float(heat.max()), 1e-12))
            ax.set_xlabel(f"{w}\n{heat.sum():.2f} nats", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def _write(out: str | Path, overwrite: bool, compute: Any, summary: Any) -> Path:
    def fill(tmp: Path) -> dict:
        start = time.perf_counter()
        result = compute(tmp)
        result["seconds"] = time.perf_counter() - start
        (tmp / "report.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "summary.md").write_text(summary(result))
        return result

    write_atomically(Path(out), fill, overwrite=overwrite)
    return Path(out)


# ---- heatmap -------------------------------------------------------------------------------------

def heatmap(model_dir: str | Path, image: str | Path, prompt: str, out: str | Path, *, words: Sequence[str] | None = None,
            settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    from infodecomp.models.stable_diffusion import to_image_resolution
    from infodecomp.probes import word_heatmaps

    s = settings or ProbeSettings()
    model = load_sd(model_dir)
    x = _image(model, image)

    def compute(tmp: Path) -> dict:
        try:
            wm = word_heatmaps(model, model.encode_images(x), [prompt], words=words, n_draws=s.n_draws, seed=s.seed,
                               sampler=model.sampler(), max_batch=s.max_batch, progress=s.progress)
        except ValueError as err:
            raise AnalysisError(str(err)) from err
        size = tuple(x.shape[-2:])
        rows = {k.upper(): to_image_resolution(wm.maps(k)[0].cpu(), size) for k in ("cmi", "mi")}
        fig = _figure(x[0], wm.words[0], rows, prompt)
        torch.save({k: wm.maps(k)[0].cpu() for k in ("cmi", "mi")}, tmp / "latent_maps.pt")
        return {"probe": "heatmap", "model": str(model_dir), "image": str(image), "prompt": prompt,
                "words": wm.words[0], "settings": asdict(s), "logsnr_range": [model.trained_range.low, model.trained_range.high],
                "nfe": wm.nfe, "cmi_nats": wm.to_dict()["cmi_nats"][0], "mi_nats": wm.to_dict()["mi_nats"][0],
                "latent_shape": list(model.image_shape), "figures": {"maps": _save(fig, tmp / "word_maps.png")}}

    def summary(r: dict) -> str:
        lines = [f"# heatmap: {r['prompt']!r}", "", f"- model: `{r['model']}`, image `{r['image']}`",
                 f"- {r['settings']['n_draws']} draws, log-SNR range {r['logsnr_range']}", "",
                 "| word | CMI (nats) | MI (nats) |", "|---|---|---|"]
        lines += [f"| {w} | {c:.3f} | {m:.3f} |" for w, c, m in zip(r["words"], r["cmi_nats"], r["mi_nats"], strict=True)]
        return "\n".join(lines + ["", "![maps](word_maps.png)", ""])

    return _write(out, overwrite, compute, summary)


# ---- compositional (ARO) -------------------------------------------------------------------------

def compositional(model_dir: str | Path, aro_root: str | Path, aro_set: str, out: str | Path, *,
                  settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    from infodecomp.probe_report import probe_aro

    s = settings or ProbeSettings()
    model = load_sd(model_dir)

    def compute(tmp: Path) -> dict:
        size = model.image_size()
        result = probe_aro(model, aro_set, Path(aro_root), s, image_shape=(3, size, size),
                           encode=model.encode_images, sampler=model.sampler())
        return {"probe": "compositional", "model": str(model_dir), "settings": asdict(s), **result}

    def summary(r: dict) -> str:
        lines = [f"# compositional: {r['aro_set']} ({r['count']} items, chance {100 * r['chance']:.0f}%)", "",
                 "| score | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_pm(v, r['se'][k], 100, 1)}% |" for k, v in r["accuracy"].items()]
        return "\n".join(lines) + "\n"

    return _write(out, overwrite, compute, summary)


# ---- intervene -----------------------------------------------------------------------------------

def intervene(model_dir: str | Path, image: str | Path, prompt: str, word: str, out: str | Path, *,
              replacement: str | None = None, settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    from infodecomp.diffusion.ddim import ddim_generate, ddim_invert
    from infodecomp.models.stable_diffusion import to_image_resolution
    from infodecomp.probes import word_attention_maps, word_heatmaps
    from infodecomp.probes.interventions import Edit
    from infodecomp.probes.text import caption_words, word_positions

    s = settings or ProbeSettings()
    model = load_sd(model_dir)
    x = _image(model, image)

    def compute(tmp: Path) -> dict:
        try:
            words = caption_words(prompt, model.max_words)
            pos = word_positions(words, [word], prompt)[0]
            edit = Edit(pos, replacement)
            lat = model.encode_images(x)
            r = model.trained_range
            full, edited = model.encode([" ".join(words)]), model.encode([edit.apply(words)])
            z = ddim_invert(model, lat, full, steps=s.steps, low=r.low, high=r.high)
            rec = model.decode_latents(ddim_generate(model, z, full, steps=s.steps, low=r.low, high=r.high))
            new = model.decode_latents(ddim_generate(model, z, edited, steps=s.steps, low=r.low, high=r.high))
            wm = word_heatmaps(model, lat, [prompt], words=[pos], kinds=("cmi",), n_draws=s.n_draws, seed=s.seed,
                               sampler=model.sampler(), max_batch=s.max_batch, progress=s.progress)
            att = word_attention_maps(model, lat, [prompt], words=[pos], seed=s.seed)
        except ValueError as err:
            raise AnalysisError(str(err)) from err
        size = tuple(x.shape[-2:])
        change = (new - rec).abs().sum(1).cpu()
        maps = {"cmi": to_image_resolution(wm.cmi[:, 0].cpu(), size), "attention": to_image_resolution(att[:, 0], size)}
        flat = change.flatten()
        pix = {k: float(torch.corrcoef(torch.stack([v.flatten().nan_to_num(), flat]))[0, 1]) for k, v in maps.items()}
        rows = torch.stack([x.cpu(), rec.cpu(), new.cpu()], 1)
        fig = _intervention_figure(rows, change, maps["cmi"], maps["attention"], [f"{prompt}\n-> {edit.apply(words)}"])
        return {"probe": "intervene", "model": str(model_dir), "image": str(image), "prompt": prompt,
                "edited_prompt": edit.apply(words), "word": word, "settings": asdict(s),
                "pixel_correlation": pix, "mean_change": float(change.mean()),
                "figures": {"interventions": _save(fig, tmp / "interventions.png")}}

    def summary(r: dict) -> str:
        lines = [f"# intervene: {r['prompt']!r} -> {r['edited_prompt']!r}", "", "| map | pixel-level Pearson r |",
                 "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in r["pixel_correlation"].items()]
        return "\n".join(lines + ["", "![interventions](interventions.png)", ""])

    return _write(out, overwrite, compute, summary)


# ---- localize (COCO-IT, dataset scale) -----------------------------------------------------------

COCO_IT_COLUMNS = ("Image ID", "Label", "correct_obj+context", "context", "correct_obj")


def read_coco_it(path: str | Path) -> list[dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise AnalysisError(f"CSV not found: {p}")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COCO_IT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AnalysisError(f"{p} lacks the COCO-IT columns {missing} (expected {list(COCO_IT_COLUMNS)})")
        rows = list(reader)
    if not rows:
        raise AnalysisError(f"{p} has no rows")
    return rows


class CocoMasks:
    """Union of a category's (non-crowd, polygon) instance masks per image, from COCO's instances JSON."""

    def __init__(self, annotations: str | Path) -> None:
        p = Path(annotations)
        if not p.is_file():
            raise AnalysisError(f"COCO annotations not found: {p}")
        data = json.loads(p.read_text())
        self.images = {im["id"]: im for im in data["images"]}
        self.categories = {c["name"]: c["id"] for c in data["categories"]}
        self.by_image: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            self.by_image.setdefault(a["image_id"], []).append(a)

    def mask(self, image_id: int, label: str, size: int) -> Tensor:
        from PIL import Image, ImageDraw

        if image_id not in self.images:
            raise AnalysisError(f"image id {image_id} is not in the COCO annotations")
        if label not in self.categories:
            raise AnalysisError(f"label {label!r} is not a COCO category")
        info = self.images[image_id]
        canvas = Image.new("L", (info["width"], info["height"]), 0)
        draw = ImageDraw.Draw(canvas)
        for a in self.by_image.get(image_id, []):
            if a["category_id"] == self.categories[label] and isinstance(a["segmentation"], list):
                for poly in a["segmentation"]:
                    draw.polygon([tuple(poly[i : i + 2]) for i in range(0, len(poly), 2)], fill=1)
        canvas = canvas.resize((size, size), Image.NEAREST)
        import numpy as np

        return torch.from_numpy(np.asarray(canvas) > 0)


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


class COCOItems(torch.utils.data.Dataset):
    """Rows of a COCO-IT CSV with their image and mask (rows already finished are left out)."""

    def __init__(self, rows: list[dict[str, str]], coco: Path, masks: CocoMasks, size: int, skip: set[int]) -> None:
        self.rows = [(i, r) for i, r in enumerate(rows) if i not in skip]
        self.coco, self.masks, self.size = coco, masks, size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> dict:
        from infodecomp.models.stable_diffusion import load_image

        index, row = self.rows[k]
        image_id = int(row["Image ID"])
        info = self.masks.images.get(image_id)
        if info is None:
            raise AnalysisError(f"row {index}: image id {image_id} is not in the COCO annotations")
        path = self.coco / "val2017" / info["file_name"]
        try:
            img = load_image(path, self.size)[0]
        except ValueError as err:
            raise AnalysisError(f"row {index}: {err}") from err
        return {"index": index, "x": img, "mask": self.masks.mask(image_id, row["Label"], self.size),
                "caption": row["correct_obj+context"].strip(), "context": row["context"].strip(),
                "word": row["correct_obj"].strip(), "image_id": image_id}


def _collate(items: list[dict]) -> dict:
    return {"index": [i["index"] for i in items], "x": torch.stack([i["x"] for i in items]),
            "mask": torch.stack([i["mask"] for i in items]), "caption": [i["caption"] for i in items],
            "context": [i["context"] for i in items], "word": [i["word"] for i in items],
            "image_id": [i["image_id"] for i in items]}


def _localize_module(model: Any, s: ProbeSettings) -> Any:
    import pytorch_lightning as pl

    from infodecomp.estimators import information_contrasts
    from infodecomp.models.stable_diffusion import to_image_resolution
    from infodecomp.probes.attention import token_attention_maps

    class LocalizePredictor(pl.LightningModule):
        """Per item: CMI (caption vs context), MI (word vs empty) and attention maps, at image size."""

        def __init__(self) -> None:
            super().__init__()
            self.sd = model

        def predict_step(self, batch: dict, batch_idx: int) -> dict:
            lat = model.encode_images(batch["x"])
            n = lat.shape[0]
            conds = {"caption": model.encode(batch["caption"]), "context": model.encode(batch["context"]),
                     "word": model.encode(batch["word"]), "empty": model.encode([""] * n)}
            est = information_contrasts(model, lat, conds, {"cmi": ("caption", "context"), "mi": ("word", "empty")},
                                        reduction="pixel", n_draws=s.n_draws, seed=s.seed, sampler=model.sampler(),
                                        sample_ids=batch["index"], max_batch=s.max_batch)
            sets = []
            for cap, word in zip(batch["caption"], batch["word"], strict=True):
                ids = model.tokenizer(cap, add_special_tokens=False)["input_ids"]
                wid = model.tokenizer(word, add_special_tokens=False)["input_ids"]
                start = _find(ids, wid)
                sets.append([[p + 1 for p in range(start, start + len(wid)) if p + 1 < model.max_tokens - 1]]
                            if start >= 0 else [[]])
            att = token_attention_maps(model, lat, batch["caption"], sets, seed=s.seed, sample_ids=batch["index"])
            size = tuple(batch["x"].shape[-2:])
            return {"index": batch["index"], "image_id": batch["image_id"], "mask": batch["mask"].cpu(),
                    "cmi": to_image_resolution(est["cmi"].value.cpu(), size),
                    "mi": to_image_resolution(est["mi"].value.cpu(), size),
                    "attention": to_image_resolution(att[:, 0], size)}

    return LocalizePredictor()


def _item_writer(items_dir: Path) -> Any:
    from pytorch_lightning.callbacks import BasePredictionWriter

    class ItemWriter(BasePredictionWriter):
        """One file per finished item (written to a temporary name, then renamed)."""

        def __init__(self) -> None:
            super().__init__(write_interval="batch")

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,  # noqa: ANN001
                               dataloader_idx=0) -> None:  # noqa: ANN001
            for j, index in enumerate(prediction["index"]):
                item = {k: (v[j].to(torch.float16) if k in ("cmi", "mi", "attention") else v[j])
                        for k, v in prediction.items()}
                tmp = items_dir / f".{index:07d}.pt.tmp{trainer.global_rank}"
                torch.save(item, tmp)
                tmp.rename(items_dir / f"{index:07d}.pt")

    return ItemWriter()


def localize(model_dir: str | Path, coco: str | Path, csv_path: str | Path, out: str | Path, *,
             settings: ProbeSettings | None = None, overwrite: bool = False, devices: int = 1,
             accelerator: str = "auto") -> Path | None:
    """COCO-IT localization at dataset scale; returns the report directory (on rank zero)."""
    import shutil

    import pytorch_lightning as pl

    s = settings or ProbeSettings()
    out = Path(out)
    if (out / "report.json").is_file() and not overwrite:
        raise AnalysisError(f"{out} already holds a finished report; pass --overwrite to replace it")
    rows = read_coco_it(csv_path)[: s.n_items]
    coco = Path(coco)
    masks = CocoMasks(coco / "annotations" / "instances_val2017.json")
    model = load_sd(model_dir)
    items_dir = out / "items"
    if overwrite and out.exists() and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        shutil.rmtree(out)
    items_dir.mkdir(parents=True, exist_ok=True)
    done = {int(p.stem) for p in items_dir.glob("*.pt")}
    dataset = COCOItems(rows, coco, masks, model.image_size(), done)
    start = time.perf_counter()
    if len(dataset):
        trainer = pl.Trainer(accelerator=accelerator, devices=devices,
                             strategy="ddp" if devices > 1 else "auto", logger=False,
                             callbacks=[_item_writer(items_dir)], enable_model_summary=False,
                             enable_progress_bar=s.progress)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=_collate)
        trainer.predict(_localize_module(model, s), dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return None
    files = sorted(items_dir.glob("*.pt"))
    results = [torch.load(f, weights_only=False) for f in files]
    from infodecomp.probes.localization import combine, localization

    maps = {k: torch.stack([r[k].float() for r in results]) for k in ("cmi", "mi", "attention")}
    maps["attention x cmi"] = combine(maps["attention"], maps["cmi"])
    mask = torch.stack([r["mask"] for r in results])
    image_ids = torch.tensor([r["image_id"] for r in results])
    # calibration by image: a fixed share of image ids (hashed), never the test images
    calib = torch.tensor([hash_share(int(i), s.seed) < s.calibration for i in image_ids])
    if calib.all() or not calib.any():
        calib = torch.arange(len(results)) < max(1, round(s.calibration * len(results)))
    res = localization(maps, mask, calibration=calib)
    per_item: dict[str, Any] = {}
    test_rank = torch.cumsum((~calib).long(), 0) - 1  # position of each test item among the test items
    for i, r in enumerate(results):
        per_item[str(int(r["index"]))] = ({"split": "calibration"} if calib[i] else
                                          {"split": "test", **{m: float(v[test_rank[i]]) for m, v in res.per_item.items()}})
    result = {"probe": "localize", "model": str(model_dir), "csv": str(csv_path), "settings": asdict(s),
              "n_items": len(results), "resumed_items": len(done), "seconds_this_run": time.perf_counter() - start,
              "logsnr_range": [model.trained_range.low, model.trained_range.high], **res.to_dict(), "per_item": per_item}
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float))
    lines = [f"# localize: {len(results)} COCO-IT items", "", "| method | mIoU | threshold |", "|---|---|---|"]
    lines += [f"| {m} | {_pm(v, res.se[m])} | {res.thresholds[m]:.2f} |" for m, v in res.miou.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    tmp.rename(out / "report.json")
    return out


def hash_share(image_id: int, seed: int) -> float:
    """A stable number in [0, 1) per image id (assigns images to the calibration split)."""
    from infodecomp.diffusion.sampling import derive_seed

    return derive_seed(seed, image_id, "calibration") / float(1 << 63)


__all__ = ["compositional", "heatmap", "intervene", "localize", "read_coco_it"]
