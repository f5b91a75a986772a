import math

import pytest
import torch

from infodecomp.diffusion import (
    LogSNRSampler,
    TruncatedLogistic,
    UniformLogSNR,
    add_noise,
    fit_logistic_to_data,
    fit_logistic_to_spectrum,
    gaussian_mmse,
    predict_eps,
    predict_x0,
)


def test_channel_round_trip_and_variance_preserving() -> None:
    x = torch.randn(4096, 3, dtype=torch.float64)
    eps = torch.randn_like(x)
    logsnr = torch.linspace(-6, 6, 4096, dtype=torch.float64)
    z = add_noise(x, logsnr, eps)
    torch.testing.assert_close(predict_x0(z, logsnr, eps), x)
    torch.testing.assert_close(predict_eps(z, logsnr, x), eps)
    # unit-variance data stay unit variance at every log-SNR
    z0 = add_noise(x, torch.zeros(4096, dtype=torch.float64), eps)
    assert abs(z0.var().item() - 1.0) < 0.03


@pytest.mark.parametrize(
    "proposal", [TruncatedLogistic(), TruncatedLogistic(1.0, 2.0, 3.0), UniformLogSNR(-5, 9)]
)
def test_proposal_density_normalised_and_icdf_consistent(proposal) -> None:
    low, high = proposal.range.low, proposal.range.high
    grid = torch.linspace(low, high, 200001, dtype=torch.float64)
    mass = torch.trapezoid(proposal.log_prob(grid).exp(), grid).item()
    assert abs(mass - 1.0) < 1e-6
    v = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha = proposal.icdf(v)
    assert alpha[0].item() == pytest.approx(low, abs=1e-9)
    assert alpha[-1].item() == pytest.approx(high, abs=1e-9)
    assert (alpha.diff() > 0).all()
    # the CDF of icdf(v) is v
    for vi in (0.1, 0.5, 0.8):
        a = proposal.icdf(torch.tensor([vi], dtype=torch.float64)).item()
        sub = torch.linspace(low, a, 20001, dtype=torch.float64)
        assert torch.trapezoid(proposal.log_prob(sub).exp(), sub).item() == pytest.approx(vi, abs=1e-6)


def test_default_and_reference_ranges() -> None:
    assert (TruncatedLogistic().range.low, TruncatedLogistic().range.high) == (-12.0, 12.0)
    ref = LogSNRSampler.reference()
    assert (ref.range.low, ref.range.high) == (-5.0, 7.0)
    assert ref.scheme == "iid" and not ref.antithetic


def test_stratified_uniforms_one_per_stratum() -> None:
    sampler = LogSNRSampler(scheme="stratified")
    u = sampler.uniforms(torch.Generator().manual_seed(0), 0, 16, 16, 0.0)
    assert torch.equal(torch.floor(u * 16).long(), torch.arange(16))
    lattice = LogSNRSampler(scheme="lattice").uniforms(torch.Generator(), 0, 8, 8, 0.25)
    torch.testing.assert_close(lattice.diff(), torch.full((7,), 1 / 8, dtype=torch.float64))


def test_fit_to_spectrum_covers_every_step() -> None:
    eig = torch.logspace(-4, 1, 50)
    prop = fit_logistic_to_spectrum(eig, margin=6.0)
    centres = -eig.log()
    assert prop.range.low <= centres.min().item() - 6 + 1e-6
    assert prop.range.high >= centres.max().item() + 6 - 1e-6
    assert prop.loc == pytest.approx(centres.mean().item(), rel=1e-6)
    assert prop.scale >= 2.0
    wide = fit_logistic_to_spectrum(torch.logspace(-8, 8, 50))
    assert wide.scale > 2.0


def test_fit_to_data_matches_spectrum_fit() -> None:
    gen = torch.Generator().manual_seed(0)
    scales = torch.logspace(-2, 0, 8)
    x = torch.randn(20000, 8, generator=gen) * scales
    prop = fit_logistic_to_data(x, min_scale=0.0)
    ref = fit_logistic_to_spectrum(scales.square(), min_scale=0.0)
    assert prop.loc == pytest.approx(ref.loc, abs=0.05)
    assert prop.scale == pytest.approx(ref.scale, rel=0.02)


def test_gaussian_mmse_limits() -> None:
    eig = torch.tensor([1.0, 0.1, 10.0])
    lo, hi = gaussian_mmse(torch.tensor([-30.0, 30.0]), eig)
    assert lo.item() == pytest.approx(0.0, abs=1e-9)
    assert hi.item() == pytest.approx(3.0, abs=1e-9)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: UniformLogSNR(5.0, -5.0), "inverted"),
        (lambda: TruncatedLogistic(scale=-1.0), "scale"),
        (lambda: TruncatedLogistic(clip=0.0), "clip"),
        (lambda: TruncatedLogistic.from_range(3.0, 1.0), "inverted"),
        (lambda: LogSNRSampler(scheme="sobol"), "scheme"),
        (lambda: LogSNRSampler().n_logsnr(6), "multiple of 4"),
        (lambda: fit_logistic_to_spectrum(torch.tensor([-1.0, 1.0])), "non-negative"),
    ],
)
def test_bad_sampler_settings_raise(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_from_range_round_trip() -> None:
    prop = TruncatedLogistic.from_range(-3.0, 9.0)
    assert prop.range.low == pytest.approx(-3.0) and prop.range.high == pytest.approx(9.0)
    assert math.isclose(prop.loc, 3.0)
