"""``analyze.py heatmap | compositional | localize | intervene``: the text probes' reports.

Two sources, one set of probes (:mod:`infodecomp.probes.runners`):

* a trained text-conditioned run (a checkpoint or run directory; by default the model shipped
  inside the package, :func:`shipped_text_model`): held-out captioned scenes of the run's world
  (fresh seeds, never the training draws), entry point :func:`run_probe`;
* a local Stable-Diffusion-style pipeline (``--model DIR``), a
  :class:`~infodecomp.interface.TextDenoiser` whose hooks encode images to latents, spread
  latent maps over the image and keep estimates in the scheduler's trained log-SNR range:

  - :func:`heatmap` (``--image IMG --prompt P [--words ...]``): CMI and MI maps of each word;
  - :func:`compositional` (``--aro DIR --aro-set NAME``): ARO accuracy for both scores;
  - :func:`intervene` (``--image IMG --prompt P --word W [--replacement R]``): DDIM inversion in
    latent space, regeneration with the caption and with the edit, change against the maps;
  - :func:`localize` (``--coco DIR --csv FILE``): the paper's COCO-IT localization (CSV
    columns: image id, label, caption, caption without the word, word), dataset-scale through
    Lightning's ``Trainer.predict`` (any number of devices; a distributed sampler shards the
    items, each item's draws depend only on its row, finished items are kept on disk and
    skipped on restart).

Each writes a report directory: ``report.json``, PNG figures and a readable ``summary.md``,
atomically (:func:`infodecomp.analysis.common.write_atomically`; COCO-IT keeps its finished
items instead).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from infodecomp.analysis.common import (
    AnalysisError,
    analysis_run,
    check_output,
    load_run,
    mark_output,
    md_head,
    md_row,
    stop_if_terminated,
    write_atomically,
)
from infodecomp.interface import CaptionedWorld
from infodecomp.probes.runners import (
    PROBES,
    RUNNERS,
    ProbeResult,
    ProbeSettings,
    Scenes,
    localize_maps,
    probe_aro,
    probe_heatmap,
    probe_intervene,
    probe_pid,
)
from infodecomp.probes.text import TextModel

if TYPE_CHECKING:
    from infodecomp.models.stable_diffusion import StableDiffusionModel

#: what run_probe runs: the probes of TextProbeCallback, and the PID of two words (analysis only)
ANALYSES = {**RUNNERS, "pid": probe_pid}
HELD_OUT_SEED = 10_000  # the run's data module draws training items from seed 0 and validation from seed 1


def shipped_text_model() -> Path:
    """The directory of the text-to-image model shipped with the package (``last.ckpt``,
    ``config.yaml``), wherever the package is installed."""
    return Path(str(resources.files("infodecomp") / "assets" / "shapes_text"))


# ---- sources -------------------------------------------------------------------------------------

def held_out_scenes(dm: Any, n: int, seed: int = 0) -> Scenes:
    """``n`` fresh captioned scenes of the run's world, with object masks."""
    world = getattr(dm, "world", None)
    if not isinstance(world, CaptionedWorld):
        raise AnalysisError(f"{type(dm).__name__} has no captioned world with object masks (e.g. "
                            "ShapesDataModule with captions: true); these probes need one")
    b = world.sample(n, seed=HELD_OUT_SEED + seed)
    return Scenes(b.x, list(b.captions), b.masks, world)


def load_text_run(path: str | Path | None, config: str | Path | None = None) -> tuple[TextModel, Any, Path, Path]:
    """A trained text-conditioned run (default: the shipped model) as ``(model, data module,
    checkpoint, config path)``."""
    module, dm, ckpt, cfg = load_run(shipped_text_model() if path is None else path, config)
    try:
        model = TextModel.from_module(module)
    except ValueError as err:
        raise AnalysisError(str(err)) from err
    return model, dm, ckpt, cfg


def load_sd(path: str | Path) -> StableDiffusionModel:
    """A local Stable-Diffusion-style pipeline directory as a text denoiser."""
    from infodecomp.models.stable_diffusion import StableDiffusionModel

    try:
        return StableDiffusionModel(path)
    except ValueError as err:
        raise AnalysisError(str(err)) from err


def _sd_image(model: StableDiffusionModel, path: str | Path) -> Tensor:
    from infodecomp.models.stable_diffusion import load_image

    try:
        return load_image(path, model.image_size())
    except ValueError as err:
        raise AnalysisError(str(err)) from err


# ---- writing -------------------------------------------------------------------------------------

def write_report(out: str | Path, compute: Callable[[Path], dict], *, subcommand: str, overwrite: bool = False,
                 wandb: bool = False) -> Path:
    """Run ``compute(directory)`` (a probe; its input errors are ValueErrors) and write its
    ``report.json`` and ``summary.md`` next to the figures it saved, atomically, as
    ``subcommand``'s output."""
    def fill(tmp: Path) -> dict:
        start = time.perf_counter()
        try:
            with torch.no_grad():
                result = compute(tmp)
        except ValueError as err:
            raise AnalysisError(str(err)) from err
        result["seconds"] = time.perf_counter() - start
        (tmp / "report.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "summary.md").write_text(render_summary(result))
        return result

    out = Path(out)
    result = write_atomically(out, fill, subcommand=subcommand, overwrite=overwrite)
    if wandb:
        log_probe_to_wandb(out, result)
    return out


def _report(probe: str, res: ProbeResult, tmp: Path, s: ProbeSettings, n_items: int, **source: Any) -> dict:
    clash = sorted(set(source) & set(res.values))
    if clash:  # a source field must never hide a result
        raise RuntimeError(f"report fields {clash} are both the source and the {probe} probe's results")
    files = res.save_figures(tmp)
    return {"probe": probe, **source, "settings": asdict(s), "n_items": n_items, **res.values, "figures": files}


def run_probe(
    probe: str, run: str | Path | None = None, out: str | Path | None = None, *, config: str | Path | None = None,
    overwrite: bool = False, settings: ProbeSettings | None = None, wandb: bool = False,
    aro: tuple[str, str | Path] | None = None,
) -> Path:
    """Run one probe on a text-to-image run and write its report directory; returns it.

    ``aro=(set name, root)`` makes the compositional probe score a local ARO set instead of
    held-out scenes of the run's world.
    """
    if probe not in ANALYSES:
        raise AnalysisError(f"unknown probe {probe!r}; expected one of {tuple(ANALYSES)}")
    if aro is not None and probe != "compositional":
        raise AnalysisError("an ARO set is only used by the compositional probe")
    s = settings or ProbeSettings()
    if s.n_items < 4:
        raise AnalysisError(f"need at least 4 items, got {s.n_items}")
    if s.words and probe not in ("heatmap", "pid"):
        raise AnalysisError(f"the {probe} probe takes no words; only heatmap and pid do")
    model, dm, ckpt, cfg = load_text_run(run, config)
    source = {"checkpoint": str(ckpt), "config": str(cfg)}
    scenes = held_out_scenes(dm, s.n_items, s.seed) if aro is None else None
    analysis = ANALYSES[probe]
    if probe == "heatmap" and s.words:  # checked before anything is written
        per_caption = heatmap_words(scenes.captions, s.words, model.max_words)

        def analysis(model: TextModel, scenes: Scenes, s: ProbeSettings) -> ProbeResult:
            return probe_heatmap(model, scenes, s, words=per_caption)

    def compute(tmp: Path) -> dict:
        if aro is not None:
            res = probe_aro(model, aro[0], Path(aro[1]), s)
            return _report(probe, res, tmp, s, res.values["count"], **source)
        return _report(probe, analysis(model, scenes, s), tmp, s, scenes.x.shape[0], **source)

    return write_report(Path(out) if out is not None else Path("outputs") / "probes" / probe, compute,
                        subcommand=probe, overwrite=overwrite, wandb=wandb)


def heatmap_words(captions: Sequence[str], words: Sequence[str | int], max_words: int | None) -> list[list[str]]:
    """Per caption, the wanted words it holds (the held-out captions differ: a colour or shape
    is in some and not in others). AnalysisError naming the captions' words for a word that
    none of them holds, so that ``--words`` either restricts the maps or is refused."""
    from infodecomp.probes.text import caption_words

    parsed = [caption_words(c, max_words) for c in captions]
    vocabulary = sorted({w for ws in parsed for w in ws})
    wanted = [str(w) for w in words]
    unknown = [w for w in wanted if w not in vocabulary]
    if unknown:
        raise AnalysisError(f"--words {' '.join(unknown)}: not a word of the held-out captions (their words: "
                            f"{' '.join(vocabulary)})")
    return [[w for w in wanted if w in ws] for ws in parsed]


# ---- a Stable-Diffusion pipeline (--model) -------------------------------------------------------

def heatmap(model_dir: str | Path, image: str | Path, prompt: str, out: str | Path, *,
            words: Sequence[str | int] | None = None, settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    """Word CMI and MI maps of one image and prompt (maps at latent resolution in ``latent_maps.pt``)."""
    s = settings or ProbeSettings()
    model = load_sd(model_dir)
    x = _sd_image(model, image)

    def compute(tmp: Path) -> dict:
        res = probe_heatmap(model, Scenes(x, [prompt]), s, words=words)
        torch.save({k: v[0] for k, v in res.maps.items()}, tmp / "latent_maps.pt")
        return _report("heatmap", res, tmp, s, 1, model=str(model_dir), image_path=str(image), prompt=prompt,
                       latent_shape=list(model.image_shape))

    return write_report(out, compute, subcommand="heatmap", overwrite=overwrite)


def pid(model_dir: str | Path, image: str | Path, prompt: str, out: str | Path, *,
        settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    """PID of two words of a prompt (``settings.words``) on one image (maps at latent resolution
    in ``latent_maps.pt``)."""
    s = settings or ProbeSettings()
    model = load_sd(model_dir)
    x = _sd_image(model, image)

    def compute(tmp: Path) -> dict:
        res = probe_pid(model, Scenes(x, [prompt]), s)
        torch.save({k: v[0] for k, v in res.maps.items()}, tmp / "latent_maps.pt")
        return _report("pid", res, tmp, s, 1, model=str(model_dir), image_path=str(image), prompt=prompt,
                       latent_shape=list(model.image_shape))

    return write_report(out, compute, subcommand="pid", overwrite=overwrite)


def compositional(model_dir: str | Path, aro_root: str | Path, aro_set: str, out: str | Path, *,
                  settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    """ARO accuracy of the pipeline for both scores."""
    s = settings or ProbeSettings()
    model = load_sd(model_dir)

    def compute(tmp: Path) -> dict:
        size = model.image_size()
        res = probe_aro(model, aro_set, Path(aro_root), s, image_shape=(3, size, size))
        return _report("compositional", res, tmp, s, res.values["count"], model=str(model_dir))

    return write_report(out, compute, subcommand="compositional", overwrite=overwrite)


def intervene(model_dir: str | Path, image: str | Path, prompt: str, word: str, out: str | Path, *,
              replacement: str | None = None, settings: ProbeSettings | None = None, overwrite: bool = False) -> Path:
    """Omit (or replace) ``word`` of ``prompt``, regenerate the image, correlate the change with its maps."""
    from infodecomp.probes.interventions import Edit
    from infodecomp.probes.text import caption_words, word_positions

    s = settings or ProbeSettings()
    model = load_sd(model_dir)
    x = _sd_image(model, image)

    def compute(tmp: Path) -> dict:
        pos = word_positions(caption_words(prompt, model.max_words), [word], prompt)[0]
        res = probe_intervene(model, Scenes(x, [prompt]), s, edits=[Edit(pos, replacement)])
        return _report("intervene", res, tmp, s, 1, model=str(model_dir), image_path=str(image), prompt=prompt,
                       word=word)

    return write_report(out, compute, subcommand="intervene", overwrite=overwrite)


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
        import numpy as np
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


def _localize_module(model: StableDiffusionModel, s: ProbeSettings) -> Any:
    import pytorch_lightning as pl

    from infodecomp.estimators import information_contrasts
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
                    "cmi": model.to_image_resolution(est["cmi"].value.cpu(), size),
                    "mi": model.to_image_resolution(est["mi"].value.cpu(), size),
                    "attention": model.to_image_resolution(att[:, 0], size)}

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
            stop_if_terminated(trainer, "the items written so far")  # (predict never acts on SIGTERM)

    return ItemWriter()


def localize(model_dir: str | Path, coco: str | Path, csv_path: str | Path, out: str | Path, *,
             settings: ProbeSettings | None = None, overwrite: bool = False, devices: int = 1,
             accelerator: str = "auto") -> Path | None:
    """COCO-IT localization at dataset scale; returns the report directory (on rank zero)."""
    import shutil

    import pytorch_lightning as pl

    s = settings or ProbeSettings()
    out = check_output(out, overwrite, resume=True)
    rows = read_coco_it(csv_path)[: s.n_items]
    coco = Path(coco)
    masks = CocoMasks(coco / "annotations" / "instances_val2017.json")
    model = load_sd(model_dir)
    items_dir = out / "items"
    if overwrite and out.exists() and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        shutil.rmtree(out)
    items_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        mark_output(out, "localize")
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
    results = [torch.load(f, weights_only=False) for f in sorted(items_dir.glob("*.pt"))]
    maps = {k: torch.stack([r[k].float() for r in results]) for k in ("cmi", "mi", "attention")}
    image_ids = [int(r["image_id"]) for r in results]
    try:
        res = localize_maps(maps, torch.stack([r["mask"] for r in results]), image_ids, s)
    except ValueError as err:
        raise AnalysisError(str(err)) from err
    calib = res.calibration
    test_rank = torch.cumsum((~calib).long(), 0) - 1  # position of each test item among the test items
    per_item = {str(int(r["index"])): ({"split": "calibration"} if calib[i] else
                                       {"split": "test", **{m: float(v[test_rank[i]]) for m, v in res.per_item.items()}})
                for i, r in enumerate(results)}
    result = {"probe": "localize", "model": str(model_dir), "csv": str(csv_path), "settings": asdict(s),
              "n_items": len(results), "resumed_items": len(done), "seconds": time.perf_counter() - start,
              "logsnr_range": [model.trained_range.low, model.trained_range.high], **res.to_dict(), "per_item": per_item}
    tmp = out / ".report.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float))
    (out / "summary.md").write_text(render_summary(result))
    tmp.rename(out / "report.json")
    return out


# ---- summaries -----------------------------------------------------------------------------------

def _pm(mean: float, se: float, scale: float = 1.0, digits: int = 3) -> str:
    if se != se:  # NaN: a single item has no standard error
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


PID_ROWS = (("i1", "I(x; w1 | c)"), ("i2", "I(x; w2 | c)"), ("i12", "I(x; w1, w2 | c)"), ("redundancy", "R"),
            ("unique1", "U1"), ("unique2", "U2"), ("synergy", "S"))


def render_pid_probe(r: Mapping[str, Any]) -> list[str]:
    """The PID probe's section of ``summary.md``."""
    given = "the rest of the caption" if r["given"] == "rest" else "nothing (c = the empty prompt)"
    lines = [f"## Partial information decomposition of words {r['words'][0]!r} and {r['words'][1]!r} "
             f"(nats; given {given}; measure `{r['measure']}`)", ""]
    has_oracle = "atoms_oracle" in r
    lines += md_head(["quantity", "model", "exact denoiser, same draws", "model − exact"] if has_oracle
                     else ["quantity", "model"])
    for key, label in PID_ROWS:
        m = r["atoms"][key]
        row = [label, _pm(m["mean"], m["se"])]
        if has_oracle:
            o, d = r["atoms_oracle"][key], r["atoms_minus_oracle"][key]
            row += [_pm(o["mean"], o["se"]), _pm(d["mean"], d["se"])]
        lines.append(md_row(row))
    lines.append("")
    if r.get("weaker"):
        lines += [f"The minimum-MI measure takes R from word {r['weaker']}, the one with less information.", ""]
    if "mass_in_word_objects" in r:
        lines += md_head(["atom", "map share inside word 1's object", "inside word 2's object"])
        for a, per in r["mass_in_word_objects"].items():
            cells = [f"{_pm(v['mean'], v['se'], 100, 1)}% ({v['n']})" if v["n"] else "—" for v in per.values()]
            lines.append(md_row([a, *cells]))
        lines.append("")
    lines += [f"Denoiser calls per image: {r['nfe_per_image']} (four conditions per draw, one forward).", ""]
    return lines


def render_summary(r: Mapping[str, Any]) -> str:
    lines = [f"# {r['probe']} probe", ""]
    if "checkpoint" in r:
        lines.append(f"- checkpoint: `{r['checkpoint']}`")
    if "model" in r:
        lines.append(f"- model: `{r['model']}`")
    if "image_path" in r:
        lines.append(f"- image: `{r['image_path']}`, prompt {r['prompt']!r}")
    what = "items" if "model" in r else "held-out scenes"
    lines.append(f"- {r['n_items']} {what}, {r['settings']['n_draws']} log-SNR draws each")
    if "logsnr_range" in r:
        lines.append(f"- log-SNR range {r['logsnr_range']} (the model's trained range)")
    lines.append("")
    p = r["probe"]
    if p == "heatmap":
        if "mass_in_mask" in r:
            lines += ["## Share of each word's map inside its object's mask", "",
                      *md_head(["word type", "CMI map", "MI map", "exact CMI map (same draws)", "words"])]
            for t in ("colour", "shape"):
                c, m = r["mass_in_mask"][f"cmi/{t}"], r["mass_in_mask"][f"mi/{t}"]
                o = r["mass_in_mask"].get(f"oracle cmi/{t}")
                exact = f"{_pm(o['mean'], o['se'], 100, 1)}%" if o else "n/a"
                lines.append(md_row([t, f"{_pm(c['mean'], c['se'], 100, 1)}%", f"{_pm(m['mean'], m['se'], 100, 1)}%",
                                     exact, c["n"]]))
            lines.append("")
        lines += ["## Information of each word (nats, the sum of its map)", "",
                  *md_head(["word", "CMI", "MI", "occurrences"])]
        for w, c in r["cmi_per_word"].items():
            m = r["mi_per_word"][w]
            lines.append(md_row([w, _pm(c["mean"], c["se"]), _pm(m["mean"], m["se"]), c["n"]]))
        lines += ["", f"Denoiser calls per image: {r['nfe_per_image']}.", ""]
    elif p == "compositional" and "aro_set" in r:
        lines += [f"## {r['aro_set']}: accuracy of the true caption among {r['candidates']} (chance "
                  f"{100 * r['chance']:.0f}%)", "", *md_head(["score", "accuracy", "items"])]
        for k, v in r["accuracy"].items():
            lines.append(md_row([k, f"{_pm(v, r['se'][k], 100, 1)}%", r["count"]]))
        lines.append("")
    elif p == "compositional":
        lines += ["## Accuracy of the true caption against each perturbation (chance 50%)", "",
                  *md_head(["perturbation", "orthogonal i_o", "denoising loss (= standard i_s)", "items"])]
        for k, acc in r["accuracy"].items():
            lines.append(md_row([k, f"{_pm(acc['orthogonal'], r['se'][k]['orthogonal'], 100, 1)}%",
                                 f"{_pm(acc['denoising'], r['se'][k]['denoising'], 100, 1)}%", r["count"][k]]))
        lines.append("")
    elif p == "localize":
        lines += [f"## Localization of object words (mIoU, threshold calibrated on {r['n_calibration']} items, "
                  f"tested on {r['n_test']})", "", *md_head(["method", "mIoU", "threshold"])]
        for m, v in r["miou"].items():
            lines.append(md_row([m, _pm(v, r["se"][m]), f"{r['thresholds'][m]:.2f}"]))
        lines.append("")
    elif p == "intervene":
        if len(r["edited_captions"]) == 1:
            lines += [f"Edited prompt: {r['edited_captions'][0]!r}", ""]
        lines += [f"## Pixel change after each edit ({r['edit']} one word) against each map (Pearson r, "
                  "bootstrap SE)", "", *md_head(["map", "pixel level", "image level"])]
        for m in r["pixel"]:
            lines.append(md_row([m, _pm(r["pixel"][m]["value"], r["pixel"][m]["se"]),
                                 _pm(r["image"][m]["value"], r["image"][m]["se"])]))
        lines.append("")
    elif p == "pid":
        lines += render_pid_probe(r)
    else:
        raise ValueError(f"unknown probe {p!r}; expected one of {tuple(ANALYSES)}")
    for name, file in r.get("figures", {}).items():
        lines += [f"![{name}]({file})", ""]
    lines.append(f"_Computed in {r['seconds']:.0f} s._")
    return "\n".join(lines) + "\n"


def log_probe_to_wandb(out: Path, result: Mapping[str, Any]) -> None:
    """Log a probe's tables and figures as a W&B run (offline without credentials)."""
    import wandb

    run = analysis_run(out, f"probe-{result['probe']}", {"checkpoint": result.get("checkpoint"),
                                                         **result["settings"]})
    p = result["probe"]
    if p == "heatmap":
        rows = [[k, v["mean"], v["se"], v["n"]] for k, v in result.get("mass_in_mask", {}).items()]
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
    elif p == "pid":
        rows = [[k, src, result[src][k]["mean"], result[src][k]["se"]] for src in ("atoms", "atoms_oracle")
                if src in result for k in result[src]]
        run.log({"probe/pid": wandb.Table(columns=["quantity", "denoiser", "mean", "se"], data=rows)})
    else:
        raise ValueError(f"unknown probe {p!r}; expected one of {tuple(ANALYSES)}")
    for name, file in result.get("figures", {}).items():
        run.log({f"probe/{name}": wandb.Image(str(out / file))})
    run.finish()


__all__ = ["ANALYSES", "PROBES", "ProbeSettings", "compositional", "heatmap", "intervene", "localize", "pid",
           "read_coco_it", "run_probe", "shipped_text_model"]
