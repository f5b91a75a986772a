"""Compositional understanding, ARO-style: does the model prefer the true caption?

For each image the true caption competes with perturbed ones. Two scores, on the *same*
``(alpha, eps)`` draws for every candidate:

* ``"orthogonal"``: the pointwise orthogonal information ``i_o(x; caption)`` against the empty
  prompt (Kong et al., ICLR 2024); the highest wins;
* ``"denoising"``: the denoising loss ``(1/2) ∫ E ||eps - eps_hat(z|c)||^2 d alpha`` (the
  diffusion classifier of Li et al., ICCV 2023); the lowest wins. On shared draws this ranks
  candidates exactly as the pointwise *standard* information ``i_s(x; c) = L(x|empty) - L(x|c)``
  does, which for an exact denoiser is ``log p(x|c) - log p(x)``: the Bayes classifier.

A caveat measured with the exact denoiser of the two-object shapes world
(``tests/unit/test_probes.py``): ``i_o(x; c)`` measures how much a caption *moves* the
prediction, not how well it fits, and a wrong caption moves it more, so the exact model's
orthogonal score prefers the perturbed caption (accuracy 0% on attribute and relation swaps),
while the denoising score is right every time.

An item is correct when the true caption strictly beats every perturbation of that type;
accuracy per perturbation type is reported with a binomial standard error computed at the
add-one (Laplace) estimate ``(k + 1) / (n + 2)``, so that 0% or 100% accuracy on a small set
does not claim zero uncertainty.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from infodecomp.diffusion.sampling import LogSNRSampler, derive_seed
from infodecomp.estimators.engine import Term, integrate
from infodecomp.interface import TextDenoiser
from infodecomp.probes.text import EMPTY, as_text_denoiser, caption_words, check_inputs

SCORES = ("orthogonal", "denoising")


# ---- perturbations ---------------------------------------------------------------------------

def _retry(words: list[str], shuffle: Callable[[list[str]], list[str]], tries: int = 20) -> str | None:
    """A shuffled order that differs from ``words`` (``None`` if ``tries`` attempts all agree)."""
    for _ in range(tries):
        out = shuffle(words[:])
        if out != words:
            return " ".join(out)
    return None


def shuffle_words(caption: str, rng: random.Random) -> str | None:
    """All words in a random order (``None`` if no order differs)."""
    return _retry(caption.split(), lambda w: rng.sample(w, len(w)))


def shuffle_within_trigrams(caption: str, rng: random.Random) -> str | None:
    """ARO's order perturbation: the words inside each consecutive trigram shuffled."""
    def shuffle(words: list[str]) -> list[str]:
        return [v for i in range(0, len(words), 3) for v in rng.sample(words[i : i + 3], len(words[i : i + 3]))]

    return _retry(caption.split(), shuffle)


def shuffle_trigrams(caption: str, rng: random.Random) -> str | None:
    """ARO's order perturbation: the order of consecutive trigrams shuffled."""
    def shuffle(words: list[str]) -> list[str]:
        tris = [words[i : i + 3] for i in range(0, len(words), 3)]
        return [v for t in rng.sample(tris, len(tris)) for v in t]

    return _retry(caption.split(), shuffle)


def shapes_perturbations(caption: str, rng: random.Random) -> dict[str, str]:
    """Attribute swap, relation swap and word-order shuffle of a two-object shapes caption.

    ``"a red circle left of a blue square"`` ->
    attribute swap ``"a blue circle left of a red square"`` (colours exchanged; shapes when the
    colours agree), relation swap ``"a blue square left of a red circle"`` (the objects
    exchanged), and a random word order. Perturbations identical to the caption are omitted.
    """
    words = caption.split()
    try:
        second = len(words) - 1 - words[::-1].index("a")
    except ValueError as err:
        raise ValueError(f"not a two-object shapes caption: {caption!r}") from err
    if len(words) < 7 or words[0] != "a" or second < 4:
        raise ValueError(f"not a two-object shapes caption: {caption!r}")
    (c1, s1), (c2, s2), relation = words[1:3], words[second + 1 : second + 3], words[3:second]
    out: dict[str, str] = {}
    if c1 != c2:
        out["attribute swap"] = " ".join(["a", c2, s1, *relation, "a", c1, s2])
    elif s1 != s2:
        out["attribute swap"] = " ".join(["a", c1, s2, *relation, "a", c2, s1])
    if (c1, s1) != (c2, s2):
        out["relation swap"] = " ".join(["a", c2, s2, *relation, "a", c1, s1])
    shuffled = shuffle_words(caption, rng)
    if shuffled is not None:
        out["word order"] = shuffled
    return out


# ---- scoring ---------------------------------------------------------------------------------

@dataclass
class CompositionalResult:
    """Accuracy per perturbation type and score, with standard errors and per-item outcomes."""

    accuracy: dict[str, dict[str, float]]
    se: dict[str, dict[str, float]]
    count: dict[str, int]
    chance: dict[str, float]
    correct: dict[str, dict[str, list[bool]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "se": self.se, "count": self.count, "chance": self.chance}

    def above_chance_in_se(self, kind: str, score: str = "denoising") -> float:
        se = self.se[kind][score]
        return (self.accuracy[kind][score] - self.chance[kind]) / se if se > 0 else math.inf


def score_captions(
    model: TextDenoiser, x: Tensor, candidates: Sequence[Sequence[str]], *, n_draws: int = 32, seed: int = 0,
    sampler: LogSNRSampler | None = None, sample_ids: Tensor | Sequence[int] | None = None, max_batch: int = 2048,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Scores ``(B, J)`` of J candidate captions per image, on shared draws.

    ``x`` are the denoiser's inputs; ``sampler`` defaults to the model's own.
    Returns ``{"orthogonal": i_o(x; c_j) (higher is better), "denoising": loss (lower is better)}``.
    """
    model = as_text_denoiser(model)
    check_inputs(model, x)
    if len(candidates) != x.shape[0]:
        raise ValueError(f"expected candidate captions for each of the {x.shape[0]} images, got {len(candidates)}")
    n_cand = {len(c) for c in candidates}
    if len(n_cand) != 1 or n_cand.pop() < 2:
        raise ValueError("every image needs the same number (at least 2) of candidate captions")
    j_max = len(candidates[0])
    parsed = [[" ".join(caption_words(c, model.max_words)) for c in cands] for cands in candidates]
    conditions = {"empty": model.encode([EMPTY] * len(parsed))}
    terms = {}
    for j in range(j_max):
        conditions[f"c{j}"] = model.encode([p[j] for p in parsed])
        terms[f"orthogonal/{j}"] = Term("orthogonal", cond=f"c{j}", ref="empty")
        terms[f"denoising/{j}"] = Term("error", cond=f"c{j}")
    est = integrate(model, x, conditions, terms, sampler=sampler or model.sampler(), n_draws=n_draws, reduction="sample", seed=seed,
                    sample_ids=sample_ids, max_batch=max_batch, progress=progress)
    return {s: torch.stack([est[f"{s}/{j}"].value for j in range(j_max)], dim=1) for s in SCORES}


def compositional_accuracy(
    model: TextDenoiser, x: Tensor, captions: Sequence[str],
    perturb: Callable[[str, random.Random], dict[str, str]] = shapes_perturbations,
    *, n_draws: int = 32, seed: int = 0, sampler: LogSNRSampler | None = None,
    sample_ids: Tensor | Sequence[int] | None = None, max_batch: int = 2048, progress: bool = False,
) -> CompositionalResult:
    """Accuracy of the true caption against each perturbation type, for both scores.

    Perturbations and draws depend only on ``(seed, sample id)``, so a sharded evaluation
    gives the same per-item outcomes as one process.
    """
    model = as_text_denoiser(model)
    ids = [int(i) for i in sample_ids] if sample_ids is not None else list(range(len(captions)))
    if len(ids) != len(captions):
        raise ValueError(f"expected one sample id per caption ({len(captions)}), got {len(ids)}")
    perturbed = [perturb(" ".join(caption_words(c, model.max_words)), random.Random(derive_seed(seed, i, "perturb")))
                 for c, i in zip(captions, ids, strict=True)]
    kinds = sorted({k for p in perturbed for k in p})
    if not kinds:
        raise ValueError("no caption could be perturbed")
    result = CompositionalResult({}, {}, {}, {})
    for kind in kinds:
        items = [i for i, p in enumerate(perturbed) if kind in p]
        cands = [[captions[i], perturbed[i][kind]] for i in items]
        scores = score_captions(model, x[items], cands, n_draws=n_draws, seed=seed, sampler=sampler,
                                sample_ids=[ids[i] for i in items], max_batch=max_batch, progress=progress)
        correct = {"orthogonal": scores["orthogonal"][:, 0] > scores["orthogonal"][:, 1],
                   "denoising": scores["denoising"][:, 0] < scores["denoising"][:, 1]}
        result.count[kind] = len(items)
        result.chance[kind] = 0.5
        result.accuracy[kind], result.se[kind], result.correct[kind] = {}, {}, {}
        for s, c in correct.items():
            result.accuracy[kind][s] = float(c.double().mean())
            result.se[kind][s] = binomial_se(int(c.sum()), len(items))
            result.correct[kind][s] = c.tolist()
    return result


def multiple_choice_accuracy(scores: dict[str, Tensor], true_index: int = 0) -> dict[str, tuple[float, float]]:
    """Accuracy (with SE) of picking ``true_index`` among J candidates, per score."""
    out = {}
    for s, v in scores.items():
        pick = v.argmax(1) if s == "orthogonal" else v.argmin(1)
        c = pick == true_index
        out[s] = (float(c.double().mean()), binomial_se(int(c.sum()), len(c)))
    return out


def binomial_se(k: int, n: int) -> float:
    """Standard error of an accuracy ``k / n``, evaluated at ``(k + 1) / (n + 2)``."""
    p = (k + 1) / (n + 2)
    return math.sqrt(p * (1 - p) / n)
