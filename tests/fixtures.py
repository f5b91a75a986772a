"""Tiny artifacts the tests build and save (nothing is downloaded)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np


def write_tiny_cifar10(root: Path, n_per_batch: int = 20) -> Path:
    """Files in CIFAR-10's standard python format (``cifar-10-batches-py``), random pixels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n_per_batch).tolist(),
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)],
        }
        with (base / name).open("wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    with (base / "batches.meta").open("wb") as f:
        pickle.dump(meta, f)
    return root


def write_caption_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    """PNG images and a captions.csv using the shapes-text vocabulary."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    colours, shapes = ("red", "green", "blue"), ("circle", "square", "triangle")
    rows = []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"img_{i}.png")
        rows.append({"file": f"img_{i}.png",
                     "caption": f"a {colours[i % 3]} {shapes[(i // 3) % 3]} left of a {colours[(i + 1) % 3]} square"})
    with (root / "captions.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_tiny_pretrained_unet(root: Path, prediction_type: str = "epsilon", size: int = 16) -> Path:
    """A tiny random ``UNet2DModel`` + ``DDPMScheduler`` saved in a pipeline layout."""
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    unet.save_pretrained(root / "unet")
    sched.save_pretrained(root / "scheduler")
    return root


def write_aro_sets(root: Path, n: int = 6, size: int = 40) -> Path:
    """Tiny ARO sets in their published formats, with captions in the shapes-text vocabulary.

    ``root/vg/``: ``visual_genome_relation.json``, ``visual_genome_attribution.json`` and
    ``images/``; ``root/coco/``: ``coco_karpathy_test.json`` and its images.
    """
    import json

    from PIL import Image

    rng = np.random.default_rng(2)
    vg, coco = root / "vg", root / "coco"
    (vg / "images").mkdir(parents=True, exist_ok=True)
    (coco / "val2014").mkdir(parents=True, exist_ok=True)
    rel, att, karpathy = [], [], []
    for i in range(n):
        img = rng.integers(0, 256, (size + 10, size + 20, 3), dtype=np.uint8)
        Image.fromarray(img).save(vg / "images" / f"{i}.jpg")
        Image.fromarray(img).save(coco / "val2014" / f"COCO_val2014_{i:012d}.jpg")
        box = {"bbox_x": 5, "bbox_y": 3, "bbox_w": size, "bbox_h": size}
        rel.append({"image_id": str(i), "image_path": f"{i}.jpg", **box, "relation_name": "left of",
                    "true_caption": "a red circle left of a blue square",
                    "false_caption": "a blue square left of a red circle"})
        att.append({"image_id": str(i), "image_path": f"{i}.jpg", **box, "attributes": ["red", "blue"],
                    "true_caption": "a red circle left of a blue square",
                    "false_caption": "a blue circle left of a red square"})
        karpathy.append({"image": f"val2014/COCO_val2014_{i:012d}.jpg", "image_id": f"coco_{i}",
                         "caption": ["A red circle left of a blue square.", "a green triangle above a red circle"]})
    (vg / "visual_genome_relation.json").write_text(json.dumps(rel))
    (vg / "visual_genome_attribution.json").write_text(json.dumps(att))
    (coco / "coco_karpathy_test.json").write_text(json.dumps(karpathy))
    return root
