"""Tiny artifacts the tests build and save (nothing is downloaded)."""

from __future__ import annotations

import csv
import importlib.util
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (``bench_<name>``; its folder on the path)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def write_image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 40) -> Path:
    """One sub-folder of PNG images per class (``class0``, ``class1``, ...): smooth random textures."""
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(folder / f"{i:03d}.png")
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


def write_tiny_sd_pipeline(root: Path, prediction_type: str = "epsilon", image_size: int = 16,
                           max_tokens: int = 16) -> Path:
    """A tiny random Stable-Diffusion pipeline (UNet, VAE, CLIP text encoder and tokenizer, DDPM
    scheduler with SD's scaled-linear betas) built from configs and saved with ``save_pretrained``.

    The tokenizer knows lower-case letters and a few punctuation marks only (each a token, with
    and without the end-of-word mark), so any other character is unknown to it.
    """
    import json

    import torch
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    tok_dir = root / "_tok"
    tok_dir.mkdir(exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz.,'-")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=max_tokens,
                              pad_token="<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=max_tokens, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=image_size)
    unet = UNet2DConditionModel(sample_size=image_size // 2, in_channels=4, out_channels=4,
                                block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type=prediction_type, steps_offset=1, clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root)
    import shutil

    shutil.rmtree(tok_dir)
    return root


def write_tiny_coco(root: Path, n_images: int = 4, size: int = 24) -> Path:
    """COCO-2017-style files: ``val2017/*.jpg``, ``annotations/instances_val2017.json`` (polygon
    masks of one or two objects per image) and a COCO-IT CSV in the paper's release format."""
    import json

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(3)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cats = [{"id": 1, "name": "cat"}, {"id": 18, "name": "dog"}]
    images, anns, rows = [], [], []
    for i in range(n_images):
        image_id = 1000 + i
        img = Image.fromarray(rng.integers(0, 80, (size, size + 8, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(img)
        x0, y0 = int(rng.integers(0, size // 2)), int(rng.integers(0, size // 2))
        poly = [x0, y0, x0 + size // 2, y0, x0 + size // 2, y0 + size // 2, x0, y0 + size // 2]
        draw.polygon([tuple(poly[j : j + 2]) for j in range(0, 8, 2)], fill=(220, 40, 40))
        name = f"{image_id:012d}.jpg"
        img.save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size + 8})
        anns.append({"id": i, "image_id": image_id, "category_id": 1, "segmentation": [poly], "iscrowd": 0})
        anns.append({"id": 100 + i, "image_id": image_id, "category_id": 18, "iscrowd": 1,
                     "segmentation": {"counts": "ab", "size": [size, size + 8]}})  # crowd RLE: left out
        rows.append({"Image ID": image_id, "Label": "cat", "correct_obj+context": "a red cat on a mat.",
                     "context": "a red  on a mat.", "correct_obj": "cat"})
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    with (root / "COCO-IT.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
