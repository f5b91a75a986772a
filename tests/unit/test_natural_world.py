"""Natural images with exact information: noisy labels in the mixture oracle, the world's sources,
its exact MI against independent computations, and the patch's exact map on natural textures."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from infodecomp.evaluation import EvalBatch, information_estimates, map_correlation, mass_in_mask
from infodecomp.oracles import GaussianMixtureOracle
from infodecomp.tasks.natural import NaturalImageWorld, patch_region, symmetric_confusion
from tests.fixtures import write_image_folder, write_tiny_cifar10


def noisy_and_expanded(seed: int = 0, sigma2: float = 0.3):
    """A noisy-label mixture and the same law written out as one hard-labelled component per
    (component, observed label) pair, weighted by p(label | component): brute force over components."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2
    true, other = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1])
    conf = symmetric_confusion(3, 0.6)
    noisy = GaussianMixtureOracle(means, sigma2, labels={"a": true, "b": other}, confusion={"a": conf})
    expanded = GaussianMixtureOracle(means.repeat_interleave(3, 0), sigma2, weights=conf[true].reshape(-1),
                                     labels={"a": torch.arange(3).repeat(6), "b": other.repeat_interleave(3)})
    return noisy, expanded


def test_noisy_labels_equal_the_expanded_mixture() -> None:
    noisy, expanded = noisy_and_expanded()
    z, alpha = torch.randn(8, 5, dtype=torch.float64), torch.linspace(-4, 4, 8, dtype=torch.float64)
    cond = {"a": torch.tensor([0, 1, 2, -1, 0, 1, 2, -1]), "b": torch.tensor([1, 0, -1, -1, 0, 1, 1, 0])}
    for c in (None, cond, {"a": cond["a"]}):
        torch.testing.assert_close(noisy.denoise(z, alpha, c), expanded.denoise(z, alpha, c))
        torch.testing.assert_close(noisy.log_prob(z, c), expanded.log_prob(z, c))


def test_exact_information_with_noisy_labels_agrees_with_brute_force() -> None:
    """The label-summed (Rao-Blackwell) MI of the noisy oracle against the plain Monte Carlo of the
    expanded one (independent code path), within 3 combined SE; and it has far less variance."""
    noisy, expanded = noisy_and_expanded()
    for given in ((), ("b",)):
        summed = noisy.mutual_information("a", given, n=20000, seed=1)
        drawn = noisy.mutual_information("a", given, n=20000, seed=1, expected=False)
        brute = expanded.mutual_information("a", given, n=20000, seed=2)
        assert summed.info["method"].endswith("summed out") and drawn.info["method"] == brute.info["method"]
        assert abs(summed.item() - brute.item()) < 3 * math.hypot(summed.se.item(), brute.se.item())
        assert summed.se.item() < 0.5 * drawn.se.item()


def test_sampled_labels_follow_the_confusion_matrix() -> None:
    noisy, _ = noisy_and_expanded()
    x, labels = noisy.sample(20000, seed=3)
    true = noisy.labels["a"][labels["component"]]
    agree = (labels["a"] == true).double().mean().item()
    assert abs(agree - 0.6) < 4 * math.sqrt(0.6 * 0.4 / 20000)
    assert torch.equal(labels["b"], noisy.labels["b"][labels["component"]])  # hard labels stay exact


@pytest.fixture(scope="module")
def world() -> NaturalImageWorld:
    return NaturalImageWorld()  # the preset: 32x32 photographs, 4 scene and 4 patch classes


def test_default_world_is_natural_and_every_mi_is_inside_its_entropy(world) -> None:
    assert world.means.shape == (4 * 6 * 4, 3, 32, 32) and world.source == "photos"
    assert world.means.min() >= -1 and world.means.max() <= 1
    # natural images, not flat colours: many distinct values and texture inside each background
    assert world.means.unique().numel() > 200 and world.means.std(dim=(2, 3)).mean() > 0.05
    for a in world.attributes:
        exact = world.mutual_information(a, n=4000, seed=0)
        share = exact.item() / world.entropy(a)
        assert 0.2 < share < 0.8, (a, share)
        # photographs are far apart at sigma 0.1: the exact value is the closed-form limit I(component; label)
        assert exact.item() == pytest.approx(world.separated_information(a), abs=max(4 * exact.se.item(), 1e-3))
        assert exact.se.item() <= 0.01 * exact.item()
    # two raters of one scene: the second says part of what the first does, so CMI < MI
    cmi = world.mutual_information("scene_a", given=("scene_b", "patch"), n=4000, seed=0)
    assert 0.1 < cmi.item() < world.mutual_information("scene_a", n=4000).item() - 0.1


def test_exact_information_moves_with_overlap_as_brute_force_says() -> None:
    """A small, overlapping instance (8x8, sigma 2): exact MI below the separated limit, and the
    noisy oracle equals brute force over (component, label) pairs."""
    w = NaturalImageWorld(size=8, classes=2, per_class=2, patch_classes=2, patch=3, sigma=2.0)
    o = w.oracle()
    expanded = GaussianMixtureOracle(o.means.repeat_interleave(4, 0), 4.0,
                                     weights=torch.kron(o.confusion["scene_a"][o.labels["scene_a"]],
                                                        torch.ones(1, 2, dtype=torch.float64)).reshape(-1)
                                     * o.confusion["scene_b"][o.labels["scene_b"]].repeat(1, 2).reshape(-1),
                                     labels={"scene_a": torch.arange(2).repeat_interleave(2).repeat(o.n_components),
                                             "scene_b": torch.arange(2).repeat(2 * o.n_components),
                                             "patch": o.labels["patch"].repeat_interleave(4)})
    for given in ((), ("scene_b",)):
        exact = w.mutual_information("scene_a", given, n=20000, seed=0)
        brute = expanded.mutual_information("scene_a", given, n=40000, seed=1)
        assert abs(exact.item() - brute.item()) < 3 * math.hypot(exact.se.item(), brute.se.item()), (given, exact, brute)
    assert w.mutual_information("scene_a", n=4000).item() < 0.8 * w.separated_information("scene_a")


def test_the_patch_label_lives_in_the_patch_square(world) -> None:
    """The exact MI and CMI maps of ``patch`` vanish off its square; the scene labels' do not."""
    oracle = world.oracle()
    b = world.sample(8, seed=5)
    cond = {k: b.labels[k] for k in world.attributes}
    batch = EvalBatch(x=b.x, cond=cond, sample_ids=torch.arange(8), masks=b.masks)
    est = information_estimates(oracle, batch, list(world.attributes), reduction="pixel", n_draws=8, seed=0)
    region = b.masks[:, 0]
    assert region.sum(dim=(1, 2)).eq(16 * 16).all() and region[:, 4:20, 4:20].all()
    for kind in ("mi", "cmi"):
        assert mass_in_mask(est[f"{kind}/patch"].value, region).min() > 0.999
        assert mass_in_mask(est[f"{kind}/scene_a"].value, region).max() < 0.5
    r = map_correlation(est["mi/patch"].value, est["mi/patch"].value * 2 + 1)
    torch.testing.assert_close(r, torch.ones(8, dtype=torch.float64), atol=1e-4, rtol=0)  # float32 maps


def test_folder_and_cifar10_sources(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "imgs", classes=3, per_class=4)
    w = NaturalImageWorld(source="folder", root=folder, size=16, classes=3, per_class=3, patch_classes=2)
    assert w.attributes["scene_a"] == ["class0", "class1", "class2"] and w.n_components == 3 * 3 * 2
    cifar = write_tiny_cifar10(tmp_path / "cifar", n_per_batch=40)
    c = NaturalImageWorld(source="cifar10", root=cifar, classes=3, per_class=2, patch_classes=3)
    assert c.attributes["scene_a"] == ["airplane", "automobile", "bird"] and c.image_shape == (3, 32, 32)
    # the components are CIFAR-10's own pixels (checked against the first airplane of the batches)
    import pickle

    first = pickle.load((cifar / "cifar-10-batches-py" / "data_batch_1").open("rb"), encoding="latin1")
    idx = first["labels"].index(0)
    pixels = torch.tensor(first["data"][idx].reshape(3, 32, 32), dtype=torch.float64) / 127.5 - 1
    outside = ~c.region
    torch.testing.assert_close(c.means[0][:, outside], pixels[:, outside])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"source": "web"}, "source must be one of"),
    ({"source": "folder"}, "needs root"),
    ({"source": "folder", "root": "nowhere"}, "image folder not found"),
    ({"source": "cifar10", "root": "nowhere"}, "CIFAR-10 not found under nowhere"),
    ({"classes": 5}, "at most|scene classes"),
    ({"patch_classes": 5}, "patch_classes <= classes"),
    ({"keep": 0.0}, "keep must be in"),
    ({"place": "middle"}, "place must be one of"),
    ({"patch": 40}, "patch must be between"),
])
def test_bad_settings_say_what_was_expected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NaturalImageWorld(**kwargs)


def test_too_few_images_in_a_folder(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    with pytest.raises(ValueError, match="has 2 images, 4 are needed"):
        NaturalImageWorld(source="folder", root=folder, size=16, classes=2, per_class=3, patch_classes=2)


def test_patch_places() -> None:
    assert patch_region(32, 12, "top left") == (4, 4)
    assert patch_region(32, 12, "bottom right") == (16, 16)
    assert patch_region(32, 12, "centre") == (10, 10)
    w = NaturalImageWorld(size=16, classes=2, per_class=1, patch_classes=2, place="bottom right")
    assert w.region[6:14, 6:14].all() and w.region.sum() == 64
    assert np.isclose(float(w.masks.float().mean()), 64 / 256)


def test_map_correlation_is_pearson_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 5, 4, generator=gen), torch.rand(3, 5, 4, generator=gen)
    r = map_correlation(a, b)
    expected = [np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1] for i in range(3)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(map_correlation(a, -a), -torch.ones(3, dtype=torch.float64))
    assert map_correlation(torch.ones(1, 5, 4), a[:1]).item() == 0.0  # a constant map correlates with nothing
