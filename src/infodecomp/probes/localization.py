"""Unsupervised localization: from a word's heatmap to a mask, scored by IoU.

Each map is normalised to ``[0, 1]`` by its own maximum and thresholded; the threshold is
chosen to maximise mean IoU on a *calibration* split and then applied unchanged to the test
split (never tuned on the test set). The split is by image (:func:`calibration_split`): all words
of an image fall on the same side, chosen by a stable hash of the image ids. IoU comes from
torchmetrics' binary Jaccard index.
Baselines in the same run: the whole-image mask (its IoU is the object's area fraction),
cross-attention maps, and attention x information (the product of the normalised maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import derive_seed
from infodecomp.probes.text import check_masks

# finer near zero: information maps are peaked, and their best cut often lies below 5% of the peak
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04) + tuple(round(0.05 * i, 2) for i in range(1, 20))


def calibration_split(image_ids: Tensor | Sequence[int], fraction: float, seed: int = 0) -> Tensor:
    """Which items belong to the calibration split, by image: ``(N,)`` bool for ``N`` image ids.

    The distinct images are ranked by a stable hash of ``(seed, image id)`` and the first
    ``round(fraction * images)`` of them (at least one, and never all) calibrate, so every word
    of an image is on one side, the split does not depend on the items' order, on how they were
    sharded or on which finished first, and it is the same on every platform.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"calibration fraction must be in (0, 1), got {fraction}")
    ids = [int(i) for i in image_ids]
    images = sorted(set(ids), key=lambda i: derive_seed(seed, i, "calibration"))
    if len(images) < 2:
        raise ValueError(f"need at least two distinct images to split into calibration and test, got {len(images)}")
    n_calib = min(max(1, round(fraction * len(images))), len(images) - 1)
    chosen = set(images[:n_calib])
    return torch.tensor([i in chosen for i in ids], dtype=torch.bool)


def normalise(maps: Tensor) -> Tensor:
    """Each map ``(..., H, W)`` clipped at 0 and divided by its maximum (all-zero maps stay 0)."""
    m = torch.nan_to_num(maps.float(), nan=0.0).clamp_min(0)
    peak = m.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, m / peak.clamp_min(1e-20), torch.zeros_like(m))


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """Per-item IoU of boolean masks ``(N, H, W)`` (torchmetrics' binary Jaccard index)."""
    from torchmetrics.functional.classification import binary_jaccard_index

    if pred.shape != target.shape:
        raise ValueError(f"predicted masks {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
    return torch.stack([binary_jaccard_index(p.int(), t.int(), zero_division=0.0) for p, t in zip(pred, target,
                                                                                                   strict=True)])


def calibrate_threshold(maps: Tensor, masks: Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> float:
    """The threshold on normalised maps that maximises mean IoU on this (calibration) split."""
    if len(maps) == 0:
        raise ValueError("the calibration split is empty")
    masks = check_masks(masks, maps.shape)
    norm = normalise(maps)
    scores = [float(iou(norm >= t, masks).mean()) for t in thresholds]
    return float(thresholds[max(range(len(scores)), key=scores.__getitem__)])


@dataclass
class LocalizationResult:
    """mIoU per method on the test split, with the calibrated thresholds; ``per_item`` holds the
    test items' IoUs, ``calibration`` which of all items calibrated."""

    miou: dict[str, float]
    se: dict[str, float]
    thresholds: dict[str, float]
    n_calibration: int
    n_test: int
    per_item: dict[str, Tensor] = field(default_factory=dict, repr=False)
    calibration: Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"miou": self.miou, "se": self.se, "thresholds": self.thresholds,
                "n_calibration": self.n_calibration, "n_test": self.n_test}


def localization(
    maps: Mapping[str, Tensor], masks: Tensor, *, calibration: Tensor | Sequence[int] | float = 0.25,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS, seed: int = 0,
) -> LocalizationResult:
    """mIoU of thresholded maps against ground-truth masks, threshold chosen on a calibration split.

    Args:
        maps: ``{method: (N, H, W)}`` heatmaps of the same N (image, word) items.
        masks: ``(N, H, W)`` ground-truth masks.
        calibration: the calibration items (indices or a boolean mask, e.g. from
            :func:`calibration_split` by image), or the fraction of items to calibrate on, each
            item its own image (``seed``); the rest are the test split.

    The whole-image mask is always added as the ``"whole image"`` baseline.
    """
    if not maps:
        raise ValueError("no maps to localize")
    n = masks.shape[0]
    masks = check_masks(masks, next(iter(maps.values())).shape)
    for name, m in maps.items():
        check_masks(masks, m.shape, f"masks for {name!r}")
    if isinstance(calibration, float):
        calib = calibration_split(range(n), calibration, seed)
    else:
        calib = torch.as_tensor(calibration)
        if calib.dtype != torch.bool:
            idx, calib = calib.long(), torch.zeros(n, dtype=torch.bool)
            calib[idx] = True
    if calib.all() or not calib.any():
        raise ValueError("need both calibration and test items")
    test = ~calib
    result = LocalizationResult({}, {}, {}, int(calib.sum()), int(test.sum()), calibration=calib)
    for name, m in {**maps, "whole image": torch.ones_like(masks, dtype=torch.float32)}.items():
        t = calibrate_threshold(m[calib], masks[calib], thresholds) if name != "whole image" else 0.0
        scores = iou(normalise(m[test]) >= t, masks[test])
        result.miou[name] = float(scores.mean())
        result.se[name] = float(scores.std() / max(len(scores), 1) ** 0.5) if len(scores) > 1 else float("nan")
        result.thresholds[name] = t
        result.per_item[name] = scores
    return result


def combine(attention: Tensor, information: Tensor) -> Tensor:
    """Attention x information: the product of the two normalised maps."""
    return normalise(attention) * normalise(information)
