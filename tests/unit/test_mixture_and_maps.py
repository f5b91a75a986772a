"""Acceptance on the exact mixture oracle: MI against Monte-Carlo truth, pixel maps."""

import math

import pytest
import torch

from infodecomp import information_contrasts, mutual_information
from infodecomp.oracles import GaussianMixtureOracle


@pytest.fixture(scope="module")
def mixture() -> GaussianMixtureOracle:
    return GaussianMixtureOracle.overlapping(shape=(4, 4, 4))


@pytest.mark.slow
def test_mixture_mi_within_two_percent_of_monte_carlo_truth(mixture) -> None:
    truth = mixture.mutual_information("label", n=100000, seed=1)
    assert 0.5 < truth.item() < math.log(10) - 0.5, "the classes should overlap"
    x, labels = mixture.sample(8000, seed=2)
    est = mutual_information(mixture, x, labels["label"], n_draws=32)
    assert est.se.item() < 0.006 * truth.item()  # the 2% check below is meaningful
    assert abs(est.item() - truth.item()) < 0.02 * truth.item(), (str(est), str(truth))


def test_mixture_mi_within_three_se_of_monte_carlo_truth(mixture) -> None:
    """The 2% test's path at a quarter of its size (``make test``): within 3 SE."""
    truth = mixture.mutual_information("label", n=20000, seed=1)
    assert 0.5 < truth.item() < math.log(10) - 0.5, "the classes should overlap"
    x, labels = mixture.sample(2000, seed=2)
    est = mutual_information(mixture, x, labels["label"], n_draws=32)
    assert est.se.item() < 0.015 * truth.item()
    assert abs(est.item() - truth.item()) < 3 * math.hypot(est.se.item(), truth.se.item()), (str(est), str(truth))


def test_pixel_maps_are_non_negative_and_sum_to_image_estimate(mixture) -> None:
    x, labels = mixture.sample(32, seed=3)
    kwargs = dict(n_draws=16, seed=5)
    image = mutual_information(mixture, x, labels["label"], reduction="sample", **kwargs)
    pixel = mutual_information(mixture, x, labels["label"], reduction="pixel", **kwargs)
    coord = mutual_information(mixture, x, labels["label"], reduction="coordinate", **kwargs)
    assert pixel.value.shape == (32, 4, 4) and coord.value.shape == (32, 4, 4, 4)
    assert (pixel.value >= 0).all() and (coord.value >= 0).all()
    torch.testing.assert_close(pixel.value.sum(dim=(1, 2)), image.value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(coord.value.sum(dim=1), pixel.value, rtol=1e-5, atol=1e-5)
    assert pixel.se.shape == pixel.value.shape and (pixel.se >= 0).all()
    mean_map = pixel.batch_mean()
    assert mean_map.value.shape == (4, 4)
    torch.testing.assert_close(mean_map.value, pixel.value.mean(0))


def test_k_conditions_share_one_null_and_draws(mixture) -> None:
    x, labels = mixture.sample(16, seed=4)
    k = 4
    conds = {f"class{j}": torch.full((16,), j) for j in range(k)}
    conds["null"] = None
    contrasts = {name: (name, "null") for name in conds if name != "null"}
    calls = []

    def counting(z, logsnr, cond=None):
        calls.append(z.shape[0])
        return mixture(z, logsnr, cond)

    counting.batch_conditions = mixture.batch_conditions
    together = information_contrasts(counting, x, conds, contrasts, n_draws=16, reduction="sample")
    assert sum(calls) == 16 * 16 * (k + 1)  # (K + 1) evaluations per draw, not 2K
    assert all(est.nfe == 16 * (k + 1) for est in together.values())
    assert len(calls) == 1  # one batched forward for all five conditions
    # identical to evaluating each contrast on its own with the same seed
    for j in range(k):
        alone = mutual_information(mixture, x, conds[f"class{j}"], n_draws=16, reduction="sample")
        torch.testing.assert_close(together[f"class{j}"].value, alone.value, rtol=1e-5, atol=1e-6)


def test_cmi_over_labelled_attributes() -> None:
    # four components indexed by two binary attributes; colour is a pure function of the component
    means = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    labels = {"colour": torch.tensor([0, 0, 1, 1]), "shape": torch.tensor([0, 1, 0, 1])}
    mix = GaussianMixtureOracle(means, 0.5, labels=labels)
    truth = mix.mutual_information("colour", given=("shape",), n=200000)
    x, lab = mix.sample(8000, seed=1)
    from infodecomp import conditional_mutual_information

    cmi = conditional_mutual_information(
        mix, x, {"colour": lab["colour"], "shape": lab["shape"]}, {"shape": lab["shape"]}, n_draws=32
    )
    assert abs(cmi.item() - truth.item()) < max(3 * math.hypot(cmi.se.item(), truth.se.item()), 0.01 * truth.item())
