"""A world of natural images whose information is known exactly.

Each image is a real photograph (a background of one of ``classes`` scene classes) with a small
natural-image patch of one of ``patch_classes`` classes pasted at a fixed place, blurred by
isotropic Gaussian pixel noise: a finite Gaussian mixture whose component means are real RGB
images, so :class:`~infodecomp.oracles.GaussianMixtureOracle` gives exact denoisers and exact
information, as for the shapes worlds.

Labels do not saturate. Distinct photographs are far apart, so ``x`` reveals its background and
patch and any label that is a function of them would carry ``H(label)`` (which tests nothing).
Here every label is *noisy*, with a known confusion matrix (right with probability ``keep``,
otherwise one of the other classes uniformly):

* ``scene_a`` and ``scene_b``: two independent raters of the background's scene class.
  ``I(x; scene_a)`` is about ``log C - H(keep row)`` and ``I(x; scene_a | scene_b, patch)`` is
  smaller, because the second rater already said part of it (a non-trivial CMI).
* ``patch``: a rater of the patch's class. The patch is independent of the background and
  its label depends on the patch alone, so the exact per-pixel map of ``patch`` is zero
  outside the patch's square (``masks``), on natural textures.

Sources (all offline): the two photographs scikit-learn ships (``"photos"``, default: scene
classes are the left and right halves of each), CIFAR-10's python batches on disk (``"cifar10"``:
``per_class`` images of each of the first ``classes`` classes, "CIFAR-10 with known ground
truth"), or a local folder with one sub-folder of images per class (``"folder"``).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from infodecomp.tasks.images import _MixtureWorld

SOURCES: tuple[str, ...] = ("photos", "cifar10", "folder")
PLACES: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "centre")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def symmetric_confusion(classes: int, keep: float) -> Tensor:
    """``(C, C)``: the true class with probability ``keep``, each other class with ``(1 - keep) / (C - 1)``."""
    if classes < 2:
        raise ValueError(f"a noisy label needs at least 2 classes, got {classes}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    c = torch.full((classes, classes), (1.0 - keep) / (classes - 1), dtype=torch.float64)
    c.fill_diagonal_(keep)
    return c


def _resize(image: np.ndarray, size: int) -> Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, size, size)`` float64 in ``[-1, 1]`` (centre square, area-averaged)."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(image[top : top + side, left : left + side]).resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.float64)).permute(2, 0, 1) / 127.5 - 1.0


def _photo_images(classes: int, count: int) -> list[list[np.ndarray]]:
    """``count`` square crops from each of ``classes`` scene classes of scikit-learn's two photographs
    (china.jpg and flower.jpg, 427 x 640): class ``2p + h`` is half ``h`` (left, right) of photo ``p``."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    if not 1 <= classes <= 2 * len(photos):
        raise ValueError(f"the photos source has {2 * len(photos)} scene classes, asked for {classes}")
    side = 96  # crops of 96 x 96 pixels: a few objects or a texture each
    out = []
    for c in range(classes):
        photo = photos[c // 2]
        h, w = photo.shape[0], photo.shape[1] // 2
        half = photo[:, (c % 2) * w : (c % 2 + 1) * w]
        k = math.ceil(math.sqrt(count))  # a k x k grid of crop corners over the half, taken in order
        corners = [(int(r), int(q)) for r in np.linspace(0, h - side, k) for q in np.linspace(0, w - side, k)]
        out.append([half[r : r + side, q : q + side] for r, q in corners[:count]])
    return out


def load_cifar10(root: str | Path, *, download: bool = False) -> Any:
    """CIFAR-10's training set from ``root/cifar-10-batches-py`` (torchvision's reader), or a one-line
    ``ValueError`` saying where it was looked for."""
    root = Path(root)
    try:
        return _local_cifar10()(str(root), train=True, download=download)
    except RuntimeError as err:
        raise ValueError(
            f"CIFAR-10 not found under {root} (expected {root / 'cifar-10-batches-py'}); "
            "put the standard python-format batches there or pass --data.init_args.download true"
        ) from err


def _local_cifar10() -> type:
    """torchvision's CIFAR10 that accepts any files in the standard layout (md5 sums are only
    checked when downloading), so subsets and test fixtures in the same format load too."""
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError(f"CIFAR-10 metadata file not found: {path}")
            with path.open("rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return LocalCIFAR10


def _cifar_images(root: str | Path, classes: int, count: int) -> list[list[np.ndarray]]:
    ds = load_cifar10(root)
    targets = np.asarray(ds.targets)
    if not 1 <= classes <= 10:
        raise ValueError(f"CIFAR-10 has 10 classes, asked for {classes}")
    out = []
    for c in range(classes):
        idx = np.flatnonzero(targets == c)[:count]
        if len(idx) < count:
            raise ValueError(f"CIFAR-10 under {root} has {len(idx)} images of class {c}, {count} are needed")
        out.append([ds.data[i] for i in idx])
    return out


def _folder_images(root: str | Path, classes: int, count: int) -> tuple[list[list[np.ndarray]], list[str]]:
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder not found: {root} (expected one sub-folder of images per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) < classes:
        raise ValueError(f"{root} has {len(folders)} class sub-folders, {classes} are needed")
    out, names = [], []
    for folder in folders[:classes]:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < count:
            raise ValueError(f"{folder} has {len(files)} images, {count} are needed")
        images = []
        for f in files[:count]:
            try:
                with Image.open(f) as img:
                    images.append(np.asarray(img.convert("RGB")))
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {f}: {err}") from err
        out.append(images)
        names.append(folder.name)
    return out, names


def patch_region(size: int, patch: int, place: str) -> tuple[int, int]:
    """Top-left corner ``(row, column)`` of the patch square, a margin of ``size // 8`` from the edges."""
    if place not in PLACES:
        raise ValueError(f"place must be one of {PLACES}, got {place!r}")
    margin = size // 8
    far = size - margin - patch
    if place == "centre":
        return (size - patch) // 2, (size - patch) // 2
    return (margin if "top" in place else far), (margin if "left" in place else far)


class NaturalImageWorld(_MixtureWorld):
    """Real photographs with a pasted patch and noisy labels: exact MI, CMI and per-pixel maps.

    Args:
        source: ``"photos"`` (scikit-learn's sample photographs), ``"cifar10"`` (``root`` holds
            ``cifar-10-batches-py``) or ``"folder"`` (``root`` holds one sub-folder per class).
        root: where ``"cifar10"`` and ``"folder"`` read from.
        size: image side in pixels.
        classes: scene classes (at most 4 for ``"photos"``, 10 for ``"cifar10"``).
        per_class: backgrounds of each scene class (mixture components per class).
        patch_classes: classes of the pasted patch (at most ``classes``); patch ``j`` is one
            more image of scene class ``j``, shrunk to ``patch`` pixels.
        patch: side of the pasted square (default ``size // 2``: a quarter of the image).
        place: where the patch sits (:data:`PLACES`).
        keep: probability that each scene rater is right.
        patch_keep: probability that the patch rater is right.
        sigma: standard deviation of the isotropic pixel noise.

    The mixture has ``classes * per_class * patch_classes`` equally likely components.
    """

    def __init__(self, source: str = "photos", root: str | Path | None = None, size: int = 32, classes: int = 4,
                 per_class: int = 6, patch_classes: int = 4, patch: int | None = None, place: str = "top left",
                 keep: float = 0.7, patch_keep: float = 0.75, sigma: float = 0.1) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        if per_class < 1 or not 2 <= patch_classes <= classes:
            raise ValueError(f"need per_class >= 1 and 2 <= patch_classes <= classes, got per_class={per_class}, "
                             f"patch_classes={patch_classes}, classes={classes}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        patch = size // 2 if patch is None else patch
        if not 2 <= patch <= size - 2 * (size // 8):
            raise ValueError(f"patch must be between 2 and {size - 2 * (size // 8)} pixels for size {size}, got {patch}")
        if source != "photos" and root is None:
            raise ValueError(f"source {source!r} needs root (a folder)")
        count = per_class + 1  # the last image of classes < patch_classes becomes a patch
        if source == "photos":
            images, names = _photo_images(classes, count), [f"{p} {h}" for p in ("china", "flower")
                                                            for h in ("left", "right")][:classes]
        elif source == "cifar10":
            images = _cifar_images(root, classes, count)
            names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"][:classes]
        else:
            images, names = _folder_images(root, classes, count)
        self.source, self.size, self.sigma, self.patch_size, self.place = source, size, float(sigma), patch, place
        backgrounds = torch.stack([_resize(im, size) for per in images for im in per[:per_class]])  # (C*N, 3, H, W)
        scene = torch.arange(classes).repeat_interleave(per_class)
        patches = torch.stack([_resize(images[j][per_class], patch) for j in range(patch_classes)])  # (P, 3, p, p)
        row, col = patch_region(size, patch, place)
        region = torch.zeros(size, size, dtype=torch.bool)
        region[row : row + patch, col : col + patch] = True
        means = backgrounds[:, None].repeat(1, patch_classes, 1, 1, 1)  # (C*N, P, 3, H, W)
        means[:, :, :, row : row + patch, col : col + patch] = patches[None]
        self.means = means.flatten(0, 1)
        m = self.means.shape[0]
        self.masks = region[None, None].expand(m, 1, size, size).clone()
        self.region = region
        self.attributes = {"scene_a": names, "scene_b": names, "patch": names[:patch_classes]}
        self.component_labels = {"scene_a": scene.repeat_interleave(patch_classes),
                                 "scene_b": scene.repeat_interleave(patch_classes),
                                 "patch": torch.arange(patch_classes).repeat(classes * per_class)}
        self.confusion = {"scene_a": symmetric_confusion(classes, keep), "scene_b": symmetric_confusion(classes, keep),
                          "patch": symmetric_confusion(patch_classes, patch_keep)}
        self.captions = [f"{names[s]} with a {names[p]} patch" for s, p in
                         zip(self.component_labels["scene_a"].tolist(), self.component_labels["patch"].tolist(),
                             strict=True)]

    def entropy(self, attribute: str) -> float:
        """``H(attribute)`` in nats of the observed (noisy) label."""
        p = self.oracle().label_probabilities(attribute).mean(0)
        return float(-(torch.xlogy(p, p)).sum())

    def separated_information(self, attribute: str) -> float:
        """``I(component; attribute)`` in nats: the limit of ``I(x; attribute)`` as ``sigma -> 0``
        (closed form: ``H(attribute) - H(attribute | component)``)."""
        p_given = self.oracle().label_probabilities(attribute)  # (M, C), components equally likely
        return self.entropy(attribute) + float(torch.xlogy(p_given, p_given).sum(1).mean())
