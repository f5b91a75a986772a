"""Draws from a target SE (``draws_for_se``): a pilot that estimates each item twice splits the
items' variance into their spread and the draws' noise, and the plan's draws give the target SE,
on a simulated two-level model and on an exact oracle through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.evaluation import EvalBatch, draws_for_se, information_estimates, mean_and_se
from infodecomp.oracles import JointGaussian


def _replicates(exact: torch.Tensor, draws: int, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Each item's estimate from ``draws`` draws of SD ``noise`` around its exact value."""
    return exact + noise / math.sqrt(draws) * torch.randn(exact.shape, generator=gen, dtype=torch.float64)


def test_the_plan_reaches_the_target_on_a_two_level_model() -> None:
    """Item values spread by 0.2, per-draw noise 1.5, 256 items: SE^2 = (0.04 + 2.25 / D) / 256,
    so a target of 0.02 needs D = 2.25 / (256 * 0.0004 - 0.04) = 35.2. A pilot of 64 items x 2 x 8
    draws finds it within its own error, and 400 repeats at the planned D give the SE it predicts."""
    gen = torch.Generator().manual_seed(0)
    exact = 0.5 + 0.2 * torch.randn(64, generator=gen, dtype=torch.float64)
    draws, floor = draws_for_se(_replicates(exact, 8, 1.5, gen), _replicates(exact, 8, 1.5, gen), 8, 256, 0.02)
    assert floor == pytest.approx(0.2 / 16, rel=0.4)  # sqrt(b / n), b from 64 items
    assert draws == pytest.approx(35.2, rel=0.4)
    d = math.ceil(draws)
    means = torch.stack([_replicates(0.5 + 0.2 * torch.randn(256, generator=gen, dtype=torch.float64), d, 1.5,
                                     gen).mean() for _ in range(400)])
    achieved, predicted = float(means.std()), math.sqrt((0.04 + 2.25 / d) / 256)
    assert achieved == pytest.approx(predicted, rel=0.12)  # an SD from 400 repeats: 3.5% SE
    assert achieved == pytest.approx(0.02, rel=0.4)  # the pilot's own error carries over


def test_a_target_below_the_items_floor_cannot_be_drawn_to() -> None:
    """Items whose exact values spread by 0.2 give, over 64 of them, an SE of at least 0.025 whatever
    the draws: a target of 0.01 returns inf, with the floor; looser targets need fewer draws."""
    gen = torch.Generator().manual_seed(1)
    exact = 0.2 * torch.randn(64, generator=gen, dtype=torch.float64)
    first, second = _replicates(exact, 8, 0.5, gen), _replicates(exact, 8, 0.5, gen)
    draws, floor = draws_for_se(first, second, 8, 64, 0.01)
    assert math.isinf(draws) and floor == pytest.approx(0.025, rel=0.3)
    tighter, _ = draws_for_se(first, second, 8, 64, 0.04)
    looser, _ = draws_for_se(first, second, 8, 64, 0.08)
    assert math.isfinite(tighter) and looser < tighter


@pytest.mark.parametrize("bad", [dict(target_se=0.0), dict(pilot_draws=0), dict(n_items=0),
                                 dict(first=torch.zeros(1), second=torch.zeros(1)), dict(second=torch.zeros(3))])
def test_bad_plans_are_refused(bad: dict) -> None:
    args = dict(first=torch.zeros(4), second=torch.zeros(4), pilot_draws=8, n_items=16, target_se=0.1) | bad
    with pytest.raises(ValueError):
        draws_for_se(**args)


def test_the_plan_holds_for_the_engine_on_an_exact_oracle() -> None:
    """I(x; y) of a 4 x 2 Gaussian (two pairs at correlation 0.8) through its exact denoiser, with
    the engine's paired, stratified draws, planned for 2048 items from 128 items x 2 x 8 draws.
    The items' spread dominates (the default sampler leaves little draw noise), so a target of
    0.03 nats, above the floor of about 0.018, needs the fewest draws, 4, and 2048 other items
    at 4 draws reach it. The engine's own per-item SEs would have said the draws' noise is over
    ten times what the replicates show."""
    g = JointGaussian.paired(4, 2, 2, 0.8)
    den = g.denoiser("x")
    s = g.sample(2048 + 128, seed=4)
    x, y = s["x"], s["y"]
    pilot = EvalBatch(x[:128], {"y": y[:128]}, torch.arange(128))
    first, second = (information_estimates(den, pilot, ["y"], reduction="sample", n_draws=8, seed=k)["mi/y"]
                     for k in (1, 2))
    target = 0.03
    draws, floor = draws_for_se(first.value, second.value, 8, 2048, target)
    assert 0.012 < floor < 0.024 and draws < 4
    replicate_noise = 8 * float((first.value - second.value).var()) / 2
    assert 8 * float(first.se.square().mean()) > 10 * replicate_noise
    run = EvalBatch(x[128:], {"y": y[128:]}, torch.arange(128, 2048 + 128))
    values = information_estimates(den, run, ["y"], reduction="sample", n_draws=4, seed=0)["mi/y"].value
    _, se = mean_and_se(values)
    assert floor * 0.7 < se < target
