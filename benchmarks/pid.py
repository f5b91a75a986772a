"""PID of two words: the four conditions on one set of draws against each term on its own.

The partial information decomposition needs ``I(x; w1 | c)``, ``I(x; w2 | c)``,
``I(x; w1, w2 | c)`` and the pointwise-minimum redundancy. :func:`infodecomp.probes.word_pid`
evaluates the four conditions it needs (caption, caption without ``w2``, without ``w1``,
without both) once per draw, in one batched forward: ``4 n`` denoiser calls per image. Term by
term, each information contrasts two conditions and the redundancy three: ``9 n`` calls. On the
same seed both give the same atoms (checked here; draws depend only on the seed and the item).
Reported: denoiser calls (counted), wall time (median of alternating repeats) and their ratios.
Goal: no more calls than the four conditions (4 n per image), and faster than term by term.

The model is the shipped shapes-text model when present, otherwise an untrained one of the same
architecture (the cost does not depend on the weights).

Usage:
    python benchmarks/pid.py [--quick] [--json PATH]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from word_heatmaps import Counting, load_model  # noqa: E402

from infodecomp.estimators import Term, integrate  # noqa: E402
from infodecomp.estimators.pid import ATOMS  # noqa: E402
from infodecomp.probes import TextModel, word_pid  # noqa: E402
from infodecomp.tasks.images import TwoObjectShapesWorld  # noqa: E402


def term_by_term(model: TextModel, x: torch.Tensor, conditions: dict[str, list[str]], n_draws: int) -> dict:
    """Each PID term integrated on its own (same seed, so the same draws): the baseline."""
    enc = {k: model.encode(v) for k, v in conditions.items()}
    kw = {"reduction": "pixel", "n_draws": n_draws, "sampler": model.sampler()}

    def one(names: tuple[str, ...], term: Term) -> torch.Tensor:
        return integrate(model, x, {n: enc[n] for n in names}, {"t": term}, **kw)["t"].value

    i1 = one(("first", "base"), Term("orthogonal", "first", "base"))
    i2 = one(("second", "base"), Term("orthogonal", "second", "base"))
    i12 = one(("both", "base"), Term("orthogonal", "both", "base"))
    r = one(("first", "second", "base"), Term("redundancy", "first", "base", second="second"))
    return {"redundancy": r, "unique1": i1 - r, "unique2": i2 - r, "synergy": i12 - i1 - i2 + r}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, draws and repeats")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    n_images, n_draws, repeats = (8, 4, 1) if args.quick else (16, 32, 3)
    torch.manual_seed(0)
    model, source = load_model()
    world = TwoObjectShapesWorld(size=model.image_shape[-1])
    batch = world.sample(n_images, seed=1)
    x, captions, pair = batch.x, batch.captions, (1, 2)  # the first object's colour and shape words

    shared, separate = Counting(model), Counting(model)
    one_pass = word_pid(TextModel(shared, model.encode, model.max_words, model.image_shape), x, captions, pair,
                        n_draws=n_draws)
    by_term = term_by_term(TextModel(separate, model.encode, model.max_words, model.image_shape), x,
                           one_pass.conditions, n_draws)
    same = all(torch.allclose(one_pass.result.atoms[a].value, by_term[a], rtol=1e-4, atol=1e-6) for a in ATOMS)

    times: dict[str, list[float]] = {"one pass": [], "term by term": []}
    for _ in range(repeats):  # alternate so that drifts in machine load hit both alike
        start = time.perf_counter()
        word_pid(model, x, captions, pair, n_draws=n_draws)
        times["one pass"].append(time.perf_counter() - start)
        start = time.perf_counter()
        term_by_term(model, x, one_pass.conditions, n_draws)
        times["term by term"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": source, "n_images": n_images, "n_draws": n_draws, "repeats": repeats, "pair": list(pair),
        "calls_per_image": {"one pass": shared.rows / n_images, "term by term": separate.rows / n_images},
        "calls_expected": {"one pass": 4 * n_draws, "term by term": 9 * n_draws},
        "seconds_median": med, "seconds_all": times,
        "call_ratio": separate.rows / shared.rows, "speedup": med["term by term"] / med["one pass"],
        "identical_atoms": same, "goal_calls_per_image": 4 * n_draws,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"PID of two words, {n_images} images, {n_draws} draws ({source})")
    print(f"{'method':<14} {'calls/image':>12} {'seconds':>9}")
    for name in ("one pass", "term by term"):
        print(f"{name:<14} {result['calls_per_image'][name]:>12.0f} {med[name]:>9.2f}")
    print(f"call ratio {result['call_ratio']:.2f}x, wall-time speedup {result['speedup']:.2f}x; "
          f"one pass uses {result['calls_per_image']['one pass']:.0f} calls per image "
          f"(goal <= {4 * n_draws}); identical atoms: {same}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
