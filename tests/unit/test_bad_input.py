"""Bad input raises ValueError saying what was expected and what was received."""

import pytest
import torch

from infodecomp import (
    LogSNRSampler,
    UniformLogSNR,
    conditional_mutual_information,
    mutual_information,
    nll,
)
from infodecomp.estimators import information_contrasts
from infodecomp.oracles import JointGaussian


@pytest.fixture
def setup():
    g = JointGaussian.bivariate(0.5)
    s = g.sample(8, seed=0)
    return g.denoiser("x"), s


def test_denoiser_returning_wrong_shape(setup) -> None:
    _, s = setup

    def bad(z, logsnr, cond=None):
        return z[:, :0]

    with pytest.raises(ValueError, match=r"returned .*\(\d+, 0\).*expected a tensor of shape \(\d+, 1\)"):
        mutual_information(bad, s["x"], s["y"], n_draws=8)


def test_denoiser_returning_nan(setup) -> None:
    _, s = setup
    with pytest.raises(ValueError, match="non-finite values for log-SNR"):
        nll(lambda z, logsnr, cond=None: z * float("nan"), s["x"], n_draws=8)


def test_nan_in_x(setup) -> None:
    den, s = setup
    x = s["x"].clone()
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        mutual_information(den, x, {"y": s["y"]}, n_draws=8)


def test_inverted_logsnr_range() -> None:
    with pytest.raises(ValueError, match=r"expected low < high, got low=4.0, high=-4.0"):
        LogSNRSampler(proposal=UniformLogSNR(4.0, -4.0))


@pytest.fixture
def quickstart():
    g = JointGaussian.bivariate(rho=0.75)
    return g.denoiser("x"), g.sample(500, seed=0)


def _never_called(z, logsnr, cond=None):
    raise AssertionError("the denoiser must not be called on bad input")


def test_condition_batch_of_wrong_size_names_the_key(quickstart) -> None:
    _, s = quickstart
    with pytest.raises(ValueError, match=r"condition 'y' \(in 'cond'\) has 10 rows, but x has 500"):
        mutual_information(_never_called, s["x"], {"y": s["y"][:10]}, n_draws=8)
    with pytest.raises(ValueError, match=r"condition 'y' \(in 'given'\) has 7 rows, but x has 500"):
        conditional_mutual_information(_never_called, s["x"], {"y": s["y"]}, {"y": s["y"][:7]}, n_draws=8)
    with pytest.raises(ValueError, match=r"condition 'meta.y' \(in 'caption'\) has 10 rows"):
        information_contrasts(_never_called, s["x"], {"caption": {"meta": {"y": s["y"][:10]}}, "null": None},
                              {"i": ("caption", "null")}, n_draws=8)


def test_non_finite_condition_is_caught_before_the_denoiser(quickstart) -> None:
    _, s = quickstart
    y = s["y"].clone()
    y[[1, 7, 9], 0] = float("nan")
    with pytest.raises(ValueError, match=r"condition 'y' \(in 'cond'\) has non-finite values \(NaN or inf\) "
                                         r"in 3 of 500 rows"):
        mutual_information(_never_called, s["x"], {"y": y}, n_draws=8)
    y[1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"condition 'cond' has non-finite values .* in 3 of 500 rows"):
        nll(_never_called, s["x"], y, n_draws=8)


def test_empty_condition_mapping(quickstart) -> None:
    den, s = quickstart
    with pytest.raises(ValueError, match=r"condition 'cond' is an empty mapping, expected at least one conditioning"):
        mutual_information(_never_called, s["x"], {}, n_draws=8)
    with pytest.raises(ValueError, match=r"condition 'cond' is None, expected at least one conditioning"):
        mutual_information(_never_called, s["x"], None, n_draws=8)
    # None (and {}) stay the unconditional model where a null condition is meaningful
    x, y = s["x"][:64], s["y"][:64]
    assert nll(den, x, {}, n_draws=8).value == nll(den, x, None, n_draws=8).value
    assert mutual_information(den, x, {"y": y}, null=None, n_draws=8).value > 0
    assert conditional_mutual_information(den, x, {"y": y}, None, n_draws=8).value > 0


def test_other_bad_arguments(setup) -> None:
    den, s = setup
    with pytest.raises(ValueError, match="reduction must be one of"):
        mutual_information(den, s["x"], {"y": s["y"]}, reduction="median", n_draws=8)
    with pytest.raises(ValueError, match="estimator must be one of"):
        mutual_information(den, s["x"], {"y": s["y"]}, estimator="ksg", n_draws=8)
    with pytest.raises(ValueError, match="batch dimension"):
        mutual_information(den, s["x"][0, 0], {"y": s["y"]}, n_draws=8)
    with pytest.raises(ValueError, match="multiple of 4"):
        mutual_information(den, s["x"], {"y": s["y"]}, n_draws=10)
    with pytest.raises(ValueError, match="floating-point"):
        mutual_information(den, torch.ones(8, 1, dtype=torch.long), {"y": s["y"]}, n_draws=8)
    with pytest.raises(ValueError, match="sample_ids has 3 entries, expected 8"):
        mutual_information(den, s["x"], {"y": s["y"]}, n_draws=8, sample_ids=[0, 1, 2])
    with pytest.raises(ValueError, match="cannot condition 'x' on 'w'"):
        mutual_information(den, s["x"], {"w": s["y"]}, n_draws=8)
    with pytest.raises(ValueError, match="bits/dim is defined"):
        nll(den, s["x"], unit="bits/dim", reduction="pixel", n_draws=8)
