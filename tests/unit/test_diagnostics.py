"""The standard-orthogonal gap needs no ground truth: near zero (in SEs) for an exact denoiser,
many SEs for a model whose conditional branch is not the conditional expectation."""

from __future__ import annotations

import torch

from infodecomp.evaluation import GAP_SES, EvalBatch, information_estimates, summarise
from infodecomp.oracles import JointGaussian

N, DRAWS = 2000, 16


def rows_for(denoiser) -> dict:  # noqa: ANN001
    g = JointGaussian.bivariate(rho=0.75)
    s = g.sample(N, seed=0)
    batch = EvalBatch(s["x"], {"y": s["y"]}, torch.arange(N))
    est = information_estimates(denoiser, batch, ["y"], n_draws=DRAWS, seed=0, estimators=("orthogonal", "standard"))
    return {r.name: r for r in summarise({k: e.value for k, e in est.items()}, next(iter(est.values())).nfe)}


def exact():  # noqa: ANN201
    return JointGaussian.bivariate(rho=0.75).denoiser("x")


def test_exact_denoiser_is_not_flagged() -> None:
    rows = rows_for(exact())
    row = rows["mi/y"]
    assert row.gap is not None and row.gap_se > 0
    assert abs(row.gap) < 3 * row.gap_se  # zero mean by the tower property; fixed seed
    assert row.flag == rows["mi/y@standard"].flag == "ok"


def test_an_overshooting_conditional_branch_is_flagged() -> None:
    den = exact()

    def overshoot(z, logsnr, cond=None):  # noqa: ANN001, ANN202
        uncond = den(z, logsnr, None)
        if cond is None:
            return uncond
        return uncond + 1.5 * (den(z, logsnr, cond) - uncond)  # the label's effect, 50% too strong

    row = rows_for(overshoot)["mi/y"]
    assert row.gap < -GAP_SES * row.gap_se and row.flag == "model-inconsistent"


def test_noise_in_the_conditional_branch_is_flagged() -> None:
    den = exact()
    gen = torch.Generator().manual_seed(0)

    def noisy(z, logsnr, cond=None):  # noqa: ANN001, ANN202
        out = den(z, logsnr, cond)
        return out if cond is None else out + 0.3 * torch.randn(out.shape, generator=gen, dtype=out.dtype)

    rows = rows_for(noisy)
    assert rows["mi/y"].flag == rows["mi/y@standard"].flag == "model-inconsistent"
    assert rows["mi/y"].gap < 0  # -E|noise|^2 integrated: the orthogonal estimate counts the noise as information


def test_condition_entropies_bound_each_information() -> None:
    import math

    from infodecomp.lightning import ShapesDataModule

    dm = ShapesDataModule(n_train=3000, n_val=8)
    h = dm.condition_entropies()
    for v, k in (("shape", 3), ("colour", 3), ("position", 4)):
        assert abs(h["mi"][v] - math.log(k)) < 0.01  # uniform labels, plug-in over 3000 items
        assert abs(h["cmi"][v] - math.log(k)) < 0.01  # drawn independently: H(v | rest) = H(v)
    text = ShapesDataModule(n_train=500, n_val=8, captions=True).condition_entropies()
    assert set(text["mi"]) == {"text"} and 0 < text["mi"]["text"] <= math.log(500)


def test_an_estimate_above_its_bound_is_flagged() -> None:
    per_sample = {"mi/y": torch.full((100,), 1.5) + 0.01 * torch.randn(100, generator=torch.Generator().manual_seed(0))}
    (row,) = summarise(per_sample, 8, bounds={"mi": {"y": 1.0986}})
    assert row.bound == 1.0986 and row.flag == "exceeds-bound"
    (ok,) = summarise(per_sample, 8, bounds={"mi": {"y": 1.6}})
    assert ok.flag == "ok"
