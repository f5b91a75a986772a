"""Word heatmaps: all words of a caption at once against one word at a time.

Both compute the CMI map of every word of 5-word captions (caption against caption without
the word) with the same number of ``(alpha, eps)`` draws per word, hence the same per-pixel
precision: on the same seed the two give identical maps (checked here, and in
``tests/unit/test_probes.py``). All at once, the K words share the draws and one evaluation of
the caption, ``(K + 1) n`` denoiser calls per image, in batched forwards; word by word costs
``2 K n``. Reported: denoiser calls (counted), wall time (median of alternating repeats) and
their ratios. Goal: at least 2x faster for 5-word captions.

The model is the shipped shapes-text model (``src/infodecomp/assets/shapes_text``) when present, otherwise an
untrained one of the same architecture (the cost does not depend on the weights).

Usage:
    python benchmarks/word_heatmaps.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from infodecomp.probes import TextModel, word_by_word_cmi, word_heatmaps
from infodecomp.tasks.images import TwoObjectShapesWorld

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["red circle left of square", "a green square above triangle", "blue triangle left of circle",
            "a red square above circle"]


class Counting:
    """Wraps a denoiser and counts rows it evaluates (one row = one denoiser call)."""

    def __init__(self, model: TextModel) -> None:
        self.model, self.rows = model, 0
        self.batch_conditions = model.batch_conditions

    def __call__(self, z, logsnr, cond=None):  # noqa: ANN001, ANN204
        self.rows += z.shape[0]
        return self.model(z, logsnr, cond)


def load_model() -> tuple[TextModel, str]:
    from infodecomp.analysis.probes import shipped_text_model
    from infodecomp.lightning import DiffusionModule, load_module
    from infodecomp.models import build_backbone

    shipped = shipped_text_model() / "last.ckpt"
    if shipped.is_file():
        return TextModel.from_module(load_module(shipped)), str(shipped)
    cfg = yaml.safe_load((ROOT / "configs" / "model" / "unet_text.yaml").read_text())
    module = DiffusionModule(build_backbone(cfg["backbone"]), prediction="v").eval()
    return TextModel.from_module(module), "untrained configs/model/unet_text.yaml"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, draws and repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    n_images, n_draws, repeats = (8, 8, 3) if args.quick else (32, 32, 5)
    torch.manual_seed(0)
    model, source = load_model()
    world = TwoObjectShapesWorld(size=model.image_shape[-1])
    x = world.sample(n_images, seed=1).x
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(n_images)]
    k = len(captions[0].split())

    shared = Counting(model)
    separate = Counting(model)
    maps_a = word_heatmaps(TextModel(shared, model.encode, model.max_words, model.image_shape), x, captions,
                           kinds=("cmi",), n_draws=n_draws).cmi
    maps_b = word_by_word_cmi(TextModel(separate, model.encode, model.max_words, model.image_shape), x, captions,
                              n_draws=n_draws)
    same = bool(torch.allclose(maps_a, maps_b, rtol=1e-4, atol=1e-6))

    times: dict[str, list[float]] = {"all at once": [], "word by word": []}
    for _ in range(repeats):  # alternate so that drifts in machine load hit both alike
        start = time.perf_counter()
        word_heatmaps(model, x, captions, kinds=("cmi",), n_draws=n_draws)
        times["all at once"].append(time.perf_counter() - start)
        start = time.perf_counter()
        word_by_word_cmi(model, x, captions, n_draws=n_draws)
        times["word by word"].append(time.perf_counter() - start)
    med = {k_: statistics.median(v) for k_, v in times.items()}
    result = {
        "model": source, "words_per_caption": k, "n_images": n_images, "n_draws": n_draws, "repeats": repeats,
        "calls_per_image": {"all at once": shared.rows / n_images, "word by word": separate.rows / n_images},
        "calls_expected": {"all at once": (k + 1) * n_draws, "word by word": 2 * k * n_draws},
        "seconds_median": med, "seconds_all": times,
        "call_ratio": separate.rows / shared.rows, "speedup": med["word by word"] / med["all at once"],
        "identical_maps": same, "goal_speedup": 2.0,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"{k}-word captions, {n_images} images, {n_draws} draws per word ({source})")
    print(f"{'method':<14} {'calls/image':>12} {'seconds':>9}")
    for name in ("all at once", "word by word"):
        print(f"{name:<14} {result['calls_per_image'][name]:>12.0f} {med[name]:>9.2f}")
    print(f"call ratio {result['call_ratio']:.2f}x, wall-time speedup {result['speedup']:.2f}x "
          f"(goal >= 2x); identical maps: {same}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
