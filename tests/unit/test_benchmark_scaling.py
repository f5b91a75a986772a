"""``benchmarks/scaling.py``: the exponent fit, and its measurements at toy size."""

from __future__ import annotations

import math

import pytest

from tests.fixtures import load_benchmark


@pytest.fixture(scope="module")
def scaling():
    return load_benchmark("scaling")


def test_exponent_is_the_slope_of_a_power_law(scaling) -> None:
    sizes = [256.0, 1024.0, 4096.0]
    assert scaling.exponent(sizes, [2e-3 * s**1.25 for s in sizes]) == pytest.approx(1.25)
    assert scaling.exponent(sizes, [0.5, 0.5, 0.5]) == pytest.approx(0.0, abs=1e-12)
    c = scaling.curve("report", "s", [1.0, 2.0, 4.0], [1.0, 1.9, 4.2], "items")
    assert c["ratios"] == pytest.approx([1.0, 1.9, 4.2]) and 0.9 < c["exponent"] < 1.1


def test_attributes_start_with_the_demos(scaling) -> None:
    assert scaling.attributes(3) == {"shape": 3, "colour": 3, "position": 4}
    assert scaling.attributes(1) == {"shape": 3}
    eight = scaling.attributes(8)
    assert len(eight) == 8 and set(eight.values()) == {3, 4}


def test_a_training_step_and_a_report_item_are_timed(scaling) -> None:
    """The measurements themselves, on a toy UNet: positive times that grow with the work."""
    step = scaling.step_seconds(8, 2, (8, 16), steps=2)
    small = scaling.report_seconds_per_item(8, 1, (8, 16), n=2, n_draws=4)
    large = scaling.report_seconds_per_item(8, 4, (8, 16), n=2, n_draws=4)
    assert step > 0 and small > 0 and math.isfinite(large)
    assert large > small  # 2 + 2k conditions per draw: 10 against 4
    assert scaling.forward_seconds_per_row(4, (8, 16), seconds=0.05) > 0
