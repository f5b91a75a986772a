"""The shared engine: reproducibility, chunking invariance, batching, curves, NFE."""

import pytest
import torch

from infodecomp import LogSNRSampler, mmse_curves, mutual_information, nll
from infodecomp.diffusion import gaussian_mmse
from infodecomp.estimators import Term, integrate
from infodecomp.oracles import JointGaussian


@pytest.fixture(scope="module")
def gaussian():
    g = JointGaussian.dense(3, 3, 0.5)
    return g, g.sample(24, seed=0)


def test_results_do_not_depend_on_batching_or_memory_budget(gaussian) -> None:
    g, s = gaussian
    den = g.denoiser("x")
    kwargs = dict(reduction="sample", n_draws=32, seed=9)
    whole = mutual_information(den, s["x"], {"y": s["y"]}, **kwargs)
    tiny = mutual_information(den, s["x"], {"y": s["y"]}, max_batch=7, **kwargs)
    torch.testing.assert_close(whole.value, tiny.value)
    torch.testing.assert_close(whole.se, tiny.se)
    # sharding the data (as DDP does) with stable sample ids reproduces every item
    ids = torch.arange(24)
    parts = [
        mutual_information(den, s["x"][sl], {"y": s["y"][sl]}, sample_ids=ids[sl], **kwargs).value
        for sl in (slice(0, 10), slice(10, 24))
    ]
    torch.testing.assert_close(torch.cat(parts), whole.value)


def test_a_cpu_forward_holds_a_bounded_number_of_input_values() -> None:
    from infodecomp.estimators.engine import CPU_FORWARD_ELEMENTS, forward_rows

    image = torch.zeros(2, 3, 16, 16)
    assert forward_rows(4096, image) == CPU_FORWARD_ELEMENTS // 768 < 4096
    assert forward_rows(100, image) == 100  # a smaller budget is kept
    assert forward_rows(4096, torch.zeros(2, 5)) == 4096  # vectors: the whole budget
    assert forward_rows(4096, torch.zeros(1, 4, 512, 512)) == 1  # never zero rows
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        forward_rows(0, image)


def test_image_results_do_not_depend_on_the_cpu_forward_size() -> None:
    """Images are evaluated in CPU-sized forwards; the draws, and so the numbers, stay the same."""
    from infodecomp.oracles import GaussianMixtureOracle

    mix = GaussianMixtureOracle.overlapping(n_classes=3, dim=768, shape=(3, 16, 16))
    x, labels = mix.sample(6, seed=0)
    kwargs = dict(reduction="sample", n_draws=16, seed=3)
    small = mutual_information(mix, x, labels["label"], max_batch=16, **kwargs)
    default = mutual_information(mix, x, labels["label"], **kwargs)
    torch.testing.assert_close(small.value, default.value)
    torch.testing.assert_close(small.se, default.se)


def test_seed_controls_draws(gaussian) -> None:
    g, s = gaussian
    den = g.denoiser("x")
    a = mutual_information(den, s["x"], {"y": s["y"]}, reduction="sample", n_draws=16, seed=1)
    b = mutual_information(den, s["x"], {"y": s["y"]}, reduction="sample", n_draws=16, seed=1)
    c = mutual_information(den, s["x"], {"y": s["y"]}, reduction="sample", n_draws=16, seed=2)
    torch.testing.assert_close(a.value, b.value)
    assert not torch.allclose(a.value, c.value)


def test_both_estimators_on_shared_draws_in_one_pass(gaussian) -> None:
    g, s = gaussian
    calls = []

    def den(z, logsnr, cond=None):
        calls.append(cond is None)
        return g.denoiser("x")(z, logsnr, cond)

    out = integrate(
        den, s["x"], {"y": {"y": s["y"]}, "null": None},
        {"orth": Term("orthogonal", "y", "null"), "std": Term("standard", "y", "null")},
        n_draws=16, reduction="sample",
    )
    assert set(out) == {"orth", "std"} and out["orth"].nfe == 32
    assert len(calls) == 2  # a None and a mapping cannot be concatenated: one forward each
    alone = mutual_information(g.denoiser("x"), s["x"], {"y": s["y"]}, n_draws=16, reduction="sample")
    torch.testing.assert_close(out["orth"].value, alone.value)


@pytest.mark.parametrize("scheme", ["iid", "stratified", "lattice"])
@pytest.mark.parametrize("antithetic", [False, True])
def test_every_scheme_is_unbiased(scheme: str, antithetic: bool) -> None:
    g = JointGaussian.bivariate(0.75)
    s = g.sample(6000, seed=4)
    sampler = LogSNRSampler(scheme=scheme, antithetic=antithetic)
    est = mutual_information(g.denoiser("x"), s["x"], {"y": s["y"]}, n_draws=16, sampler=sampler)
    truth = g.truncated_mutual_information("x", "y", low=-12, high=12)
    assert abs(est.item() - truth) < 3.5 * est.se.item(), (str(est), truth)


def test_mmse_curves_match_gaussian_closed_form() -> None:
    g = JointGaussian.dense(4, 4, 0.5)
    s = g.sample(4000, seed=1)
    grid = torch.linspace(-6, 6, 7)
    curves = mmse_curves(g.denoiser("x"), s["x"], grid, {"uncond": None, "cond": {"y": s["y"]}}, n_eps=2)
    marg, _ = g.conditional("x", ())
    post, _ = g.conditional("x", ("y",))
    expected_u = gaussian_mmse(grid.double(), marg.eigvals)
    expected_c = gaussian_mmse(grid.double(), post.eigvals)
    for name, expected in (("uncond", expected_u), ("cond", expected_c)):
        c = curves[name]
        assert c.value.shape == (7,) and c.nfe == 7 * 2 * 2
        err = (c.value.double() - expected).abs()
        assert (err < 4 * c.se.double() + 1e-6).all(), (name, err, c.se)
    assert (curves["cond"].value < curves["uncond"].value + 1e-6).all()
    per_sample = mmse_curves(g.denoiser("x"), s["x"][:3], grid, {"u": None}, reduction="pixel", n_eps=4)["u"]
    assert per_sample.value.shape == (3, 7, 4)


def test_nll_reductions_are_consistent(gaussian) -> None:
    g, s = gaussian
    den = g.denoiser("x")
    per_sample = nll(den, s["x"], reduction="sample", n_draws=16)
    per_coord = nll(den, s["x"], reduction="coordinate", n_draws=16)
    torch.testing.assert_close(per_coord.value.sum(1), per_sample.value, rtol=1e-5, atol=1e-5)
    mean = nll(den, s["x"], reduction="mean", n_draws=16)
    torch.testing.assert_close(mean.value, per_sample.value.mean(), rtol=1e-5, atol=1e-5)
