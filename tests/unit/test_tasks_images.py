"""Image worlds: exact information at two noise levels, masks, captions, digits."""

import math

import pytest
import torch

from infodecomp import conditional_mutual_information, mutual_information
from infodecomp.tasks import DigitsWorld, ShapesWorld, TwoObjectShapesWorld, shape_mask

# (sigma, n images, n_draws) of the 2% check (``make test-all``): the near-deterministic world needs
# many log-SNR draws (its integrand switches sharply), the noisy one many images (its pointwise
# values spread). ``make test`` runs the same path at SMALL size, checked against the estimate's
# own SE instead of 2%.
NOISE_LEVELS = {"near-deterministic": (0.05, 2000, 256), "noisy": (2.0, 16000, 16)}
SMALL = {"near-deterministic": (0.05, 400, 64), "noisy": (2.0, 4000, 16)}


@pytest.mark.slow
@pytest.mark.parametrize("level", sorted(NOISE_LEVELS))
@pytest.mark.parametrize("attribute", ["shape", "colour", "position"])
def test_shapes_oracle_information_matches_exact(level: str, attribute: str) -> None:
    sigma, n, n_draws = NOISE_LEVELS[level]
    world = ShapesWorld(size=16, sigma=sigma)
    exact = world.mutual_information(attribute, n=50000, seed=1)
    h = world.entropy(attribute)
    if level == "near-deterministic":
        assert exact.item() == pytest.approx(h, abs=1e-3)
    else:
        assert exact.item() < 0.96 * h
    batch = world.sample(n, seed=2)
    est = mutual_information(world.oracle(), batch.x, {attribute: batch.labels[attribute]}, n_draws=n_draws)
    assert est.se.item() < 0.008 * exact.item()  # so that the 2% check means something
    assert abs(est.item() - exact.item()) < 0.02 * exact.item(), (str(est), str(exact))


@pytest.mark.parametrize("level", sorted(SMALL))
def test_shapes_oracle_information_matches_exact_small(level: str) -> None:
    """The path of the 2% test above at a fifth of its size: within 3 SE of the exact value."""
    sigma, n, n_draws = SMALL[level]
    world = ShapesWorld(size=16, sigma=sigma)
    exact = world.mutual_information("colour", n=10000, seed=1)
    h = world.entropy("colour")
    if level == "near-deterministic":
        assert exact.item() == pytest.approx(h, abs=1e-3)
    else:
        assert exact.item() < 0.96 * h
    batch = world.sample(n, seed=2)
    est = mutual_information(world.oracle(), batch.x, {"colour": batch.labels["colour"]}, n_draws=n_draws)
    assert est.se.item() < 0.04 * exact.item()  # so that the 3-SE check means something
    assert abs(est.item() - exact.item()) < 3 * math.hypot(est.se.item(), exact.se.item()), (str(est), str(exact))


def test_shapes_conditional_information_given_other_attributes() -> None:
    world = ShapesWorld(size=16, sigma=2.0)
    exact = world.mutual_information("colour", given=("shape", "position"), n=50000, seed=1)
    b = world.sample(4000, seed=3)
    full = {k: b.labels[k] for k in ("colour", "shape", "position")}
    given = {k: b.labels[k] for k in ("shape", "position")}
    est = conditional_mutual_information(world.oracle(), b.x, full, given, n_draws=32)
    assert abs(est.item() - exact.item()) < max(3 * math.hypot(est.se.item(), exact.se.item()), 0.02 * exact.item())


def test_caption_information_is_the_chain_of_attribute_informations() -> None:
    """One caption per component: log p(caption | x) - log p(caption) is, point by point, the sum
    of the attribute terms of the chain rule on the same draws."""
    world = ShapesWorld(size=16, sigma=2.0)  # noisy enough that no term is ~log K
    caption = world.caption_information(n=2000, seed=3)
    chain = [world.mutual_information("shape", n=2000, seed=3),
             world.mutual_information("colour", given=("shape",), n=2000, seed=3),
             world.mutual_information("position", given=("shape", "colour"), n=2000, seed=3)]
    assert caption.item() == pytest.approx(sum(c.item() for c in chain), abs=1e-9)
    assert 0 < caption.item() < math.log(36)
    clear = TwoObjectShapesWorld(size=16, sigma=0.1).caption_information(n=500)
    assert clear.item() == pytest.approx(math.log(162), abs=1e-3)  # every caption told apart: I = H(caption)


def test_masks_cover_exactly_the_drawn_pixels() -> None:
    for world in (ShapesWorld(size=16, sizes=("small", "large")), ShapesWorld(size=32, grid=3, shapes=("circle", "cross")),
                  TwoObjectShapesWorld(size=32)):
        drawn = (world.means != -1.0).any(dim=1)  # (M, H, W): any channel off the background
        assert torch.equal(world.masks.any(dim=1), drawn)
        assert world.masks.sum(dim=(2, 3)).min() > 0  # every object is visible
    two = TwoObjectShapesWorld(size=32)
    assert not (two.masks[:, 0] & two.masks[:, 1]).any()  # objects never overlap


def test_samples_carry_labels_masks_and_captions() -> None:
    world = TwoObjectShapesWorld(size=32, sigma=0.1)
    b = world.sample(16, seed=0)
    assert b.x.shape == (16, 3, 32, 32) and b.masks.shape == (16, 2, 32, 32)
    assert set(b.labels) == {"shape_1", "colour_1", "shape_2", "colour_2", "relation", "component"}
    i = 5
    words = b.captions[i].split()
    assert words[1] == world.attributes["colour_1"][b.labels["colour_1"][i]]
    assert words[2] == world.attributes["shape_1"][b.labels["shape_1"][i]]
    assert b.captions[i].endswith(
        f"{world.attributes['colour_2'][b.labels['colour_2'][i]]} {world.attributes['shape_2'][b.labels['shape_2'][i]]}"
    )
    # the clean image is within noise of the sample
    assert (b.x - world.means[b.labels["component"]]).std().item() == pytest.approx(0.1, rel=0.05)
    assert ShapesWorld(size=16).sample(4).captions[0].startswith("a ")


def test_shape_masks_are_distinct_and_centred() -> None:
    masks = {s: shape_mask(s, 16, (8.0, 8.0), 6.0) for s in ("circle", "square", "triangle", "cross")}
    for a in masks:
        for b in masks:
            if a != b:
                assert not torch.equal(masks[a], masks[b])
    rows, cols = masks["circle"].nonzero(as_tuple=True)
    assert rows.double().mean().item() == pytest.approx(7.5, abs=0.01)
    assert cols.double().mean().item() == pytest.approx(7.5, abs=0.01)


@pytest.mark.parametrize("n, n_draws", [pytest.param(3000, 16, marks=pytest.mark.slow), (800, 16)])
def test_digits_world_exact_information(n: int, n_draws: int) -> None:
    world = DigitsWorld(size=8, sigma=0.3)
    assert world.n_components == 1797 and world.image_shape == (1, 8, 8)
    exact = world.mutual_information("digit", n=5000 if n > 1000 else 2000, seed=0)
    assert exact.item() <= world.entropy() + 3 * exact.se.item()
    b = world.sample(n, seed=1)
    est = mutual_information(world.oracle(), b.x, {"digit": b.labels["digit"]}, n_draws=n_draws)
    tolerance = 3 * math.hypot(est.se.item(), exact.se.item())
    assert abs(est.item() - exact.item()) < (max(tolerance, 0.02 * exact.item()) if n > 1000 else tolerance)
    assert DigitsWorld(size=16).image_shape == (1, 16, 16)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ShapesWorld(shapes=("hexagon",)), "unknown shape"),
        (lambda: ShapesWorld(colours=("mauve",)), "unknown colour"),
        (lambda: ShapesWorld(sigma=0.0), "sigma"),
        (lambda: ShapesWorld(size=16, grid=8), "grid"),
        (lambda: TwoObjectShapesWorld(relations=("behind",)), "unknown relation"),
        (lambda: DigitsWorld(size=12), "multiple of 8"),
        (lambda: ShapesWorld().sample(0), "positive integer"),
    ],
)
def test_bad_world_arguments(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_exact_maps_of_the_default_world_put_shape_and_position_partly_outside_the_object() -> None:
    """Where the information lives for the *exact* denoiser of the demo's world (issue 5's 70% goal).

    Colour is read only off the object's own pixels, so its map lies inside the mask. Shape is
    told apart where the candidate shapes differ, which is as much outside the drawn shape as
    inside it, and position also where the object would have been, so no model, however well
    trained, can reach 70% inside the mask for those two.
    """
    from infodecomp.evaluation import mass_in_mask

    world = ShapesWorld(size=16, sigma=0.1)
    b = world.sample(128, seed=4)
    full = {k: b.labels[k] for k in ("shape", "colour", "position")}
    obj = b.masks.any(dim=1)
    share = {}
    for v in full:
        given = {k: t for k, t in full.items() if k != v}
        maps = conditional_mutual_information(world.oracle(), b.x, full, given, reduction="pixel", n_draws=32)
        share[v] = mass_in_mask(maps.value, obj)  # (B, H, W), channels summed as in the heatmaps
    se = {v: float(s.std() / math.sqrt(s.numel())) for v, s in share.items()}
    assert share["colour"].mean() > 0.99
    for v in ("shape", "position"):
        assert share[v].mean() + 3 * se[v] < 0.7, (v, float(share[v].mean()), se[v])
