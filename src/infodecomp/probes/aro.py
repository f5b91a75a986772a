"""Loaders for the ARO benchmark (Yuksekgonul et al., ICLR 2023) from local files.

Formats, as published with the benchmark:

* VG-Relation: ``ROOT/visual_genome_relation.json``, a list of items with ``image_path``
  (relative to ``ROOT/images``), ``bbox_x``, ``bbox_y``, ``bbox_w``, ``bbox_h``,
  ``true_caption``, ``false_caption`` and ``relation_name``;
* VG-Attribution: ``ROOT/visual_genome_attribution.json``, the same with ``attributes``
  (two attribute words) instead of ``relation_name``;
* COCO-Order / Flickr-Order: the Karpathy-split caption files (``coco_karpathy_test.json``,
  ``flickr30k_test.json``): a list of ``{"image": relative path, "caption": [captions]}``;
  every caption becomes one item whose false captions are word-order perturbations.

Nothing is downloaded. Images are cropped to the item's box (VG sets) when read.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infodecomp.probes.compositional import shuffle_trigrams, shuffle_within_trigrams, shuffle_words

ARO_SETS = ("vg-relation", "vg-attribution", "coco-order", "flickr-order")
_FILES = {
    "vg-relation": "visual_genome_relation.json",
    "vg-attribution": "visual_genome_attribution.json",
    "coco-order": "coco_karpathy_test.json",
    "flickr-order": "flickr30k_test.json",
}
#: the order perturbations that need no part-of-speech tagger (ARO's noun/adjective shuffles do)
ORDER_PERTURBATIONS: dict[str, Callable[[str, random.Random], str | None]] = {
    "shuffle all words": shuffle_words,
    "shuffle within trigrams": shuffle_within_trigrams,
    "shuffle trigrams": shuffle_trigrams,
}


@dataclass(frozen=True)
class AROItem:
    """One test case: an image (path and optional crop box) and captions, the true one first."""

    image: Path
    captions: tuple[str, ...]
    group: str = ""
    box: tuple[float, float, float, float] | None = None  # x, y, w, h

    def load_image(self, size: int | None = None):  # noqa: ANN201 (PIL image)
        """The RGB image, cropped to ``box`` and resized to ``size`` x ``size`` if given."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.image) as img:
                img.load()
                if img.mode not in ("RGB", "L", "RGBA", "P"):
                    raise ValueError(f"{self.image}: unsupported image mode {img.mode!r}")
                img = img.convert("RGB")
        except FileNotFoundError as err:
            raise ValueError(f"image not found: {self.image}") from err
        except UnidentifiedImageError as err:
            raise ValueError(f"cannot read image {self.image}: not an image file PIL recognises") from err
        if self.box is not None:
            x, y, w, h = self.box
            img = img.crop((x, y, x + w, y + h))
        if size is not None:
            img = img.resize((size, size))
        return img


def _read_json(path: Path) -> list:
    if not path.is_file():
        raise ValueError(f"ARO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return data


def load_aro(name: str, root: str | Path, *, seed: int = 0, limit: int | None = None) -> list[AROItem]:
    """Items of one ARO set stored under ``root`` (see the module docstring for the layout)."""
    if name not in ARO_SETS:
        raise ValueError(f"unknown ARO set {name!r}; expected one of {ARO_SETS}")
    root = Path(root)
    data = _read_json(root / _FILES[name])
    items: list[AROItem] = []
    if name.startswith("vg-"):
        needed = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")
        for i, d in enumerate(data):
            missing = [k for k in needed if k not in d]
            if missing:
                raise ValueError(f"{root / _FILES[name]} item {i} lacks {missing}")
            group = d.get("relation_name") if name == "vg-relation" else "_".join(d.get("attributes", []))
            items.append(AROItem(root / "images" / d["image_path"], (d["true_caption"], d["false_caption"]),
                                 str(group or ""), (d["bbox_x"], d["bbox_y"], d["bbox_w"], d["bbox_h"])))
    else:
        rng = random.Random(seed)
        for i, d in enumerate(data):
            if "image" not in d or "caption" not in d:
                raise ValueError(f"{root / _FILES[name]} item {i} lacks 'image' or 'caption'")
            caps = d["caption"] if isinstance(d["caption"], list) else [d["caption"]]
            for cap in caps:
                cap = " ".join(cap.lower().strip(" .").split())
                false = [f(cap, rng) for f in ORDER_PERTURBATIONS.values()]
                if any(f is None for f in false):
                    continue  # too short to perturb every way
                items.append(AROItem(root / d["image"], (cap, *false), name))
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ValueError(f"no usable items in {root / _FILES[name]}")
    return items
