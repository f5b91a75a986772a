"""Text probes: word heatmaps, attention, compositional scoring, localization, interventions.

Correctness is checked against the exact denoiser of the two-object shapes world
(:func:`infodecomp.probes.oracle.shapes_text_oracle`); mechanics on a tiny untrained
text-conditioned UNet.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch

from infodecomp.diffusion.channel import signal_noise_scales
from infodecomp.interface import TextDenoiser
from infodecomp.lightning import DiffusionModule
from infodecomp.models import TextConditionedUNet
from infodecomp.plotting import close as plt_close
from infodecomp.probes import (
    Edit,
    TextModel,
    change_correlations,
    combine,
    compositional_accuracy,
    intervene,
    localization,
    record_cross_attention,
    shapes_perturbations,
    word_attention_maps,
    word_by_word_cmi,
    word_heatmaps,
)
from infodecomp.probes.compositional import binomial_se, shuffle_trigrams, shuffle_within_trigrams
from infodecomp.probes.localization import calibrate_threshold, calibration_split, normalise
from infodecomp.probes.oracle import caption_labels, shapes_text_oracle
from infodecomp.tasks.images import TwoObjectShapesWorld

VOCAB = "a above blue circle green left of red square triangle".split()


@pytest.fixture(scope="module")
def world() -> TwoObjectShapesWorld:
    return TwoObjectShapesWorld(size=16)


@pytest.fixture(scope="module")
def tiny() -> DiffusionModule:
    torch.manual_seed(0)
    bb = TextConditionedUNet(image_size=16, vocabulary=VOCAB, max_words=9, text_dim=16, text_layers=1, text_heads=2,
                             block_out_channels=(8, 16), attention_head_dim=4, norm_num_groups=4)
    return DiffusionModule(backbone=bb, prediction="v").eval()


@pytest.fixture(scope="module")
def oracle(world: TwoObjectShapesWorld) -> TextModel:
    return shapes_text_oracle(world)


def scenes(world: TwoObjectShapesWorld, n: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    b = world.sample(n, seed=seed)
    return b.x.to(dtype), list(b.captions), b.masks


# ---- word heatmaps -------------------------------------------------------------------------

def test_word_maps_shapes_padding_and_cost(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    x, caps, _ = scenes(world, 3)
    caps[1] = "a red circle"  # a shorter caption: its unused slots are NaN
    both = word_heatmaps(tiny, x, caps, n_draws=8)
    k = max(len(c.split()) for c in caps)
    assert both.cmi.shape == both.mi.shape == (3, k, 16, 16)
    assert torch.isnan(both.cmi[1, 3:]).all() and torch.isfinite(both.cmi[1, :3]).all()
    assert (both.cmi[0] >= 0).all() and (both.mi[0] >= 0).all()  # orthogonal maps are non-negative
    assert both.nfe == (2 * k + 2) * 8  # caption, empty prompt, K without-word and K single-word prompts
    cmi_only = word_heatmaps(tiny, x, caps, kinds=("cmi",), n_draws=8)
    assert cmi_only.nfe == (k + 1) * 8 and cmi_only.mi is None
    torch.testing.assert_close(cmi_only.cmi, both.cmi, equal_nan=True)  # same draws whatever else is computed
    assert [len(t) for t in both.to_dict()["cmi_nats"]] == [len(c.split()) for c in caps]


def test_all_at_once_equals_word_by_word_on_the_same_draws(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    x, caps, _ = scenes(world, 2, seed=4)
    shared = word_heatmaps(tiny, x, caps, kinds=("cmi",), n_draws=8, seed=3)
    separate = word_by_word_cmi(tiny, x, caps, n_draws=8, seed=3)
    torch.testing.assert_close(shared.cmi, separate, rtol=1e-4, atol=1e-6)


def test_selected_words_and_repeated_words(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    x, _, _ = scenes(world, 1)
    wm = word_heatmaps(tiny, x, ["a red circle left of a red square"], words=["red", 7], kinds=("cmi",), n_draws=4)
    assert wm.positions == [[1, 6, 7]] and wm.words == [["red", "red", "square"]]


def test_exact_colour_maps_lie_inside_their_object(oracle: TextModel, world: TwoObjectShapesWorld) -> None:
    x, caps, masks = scenes(world, 12, seed=3, dtype=torch.float64)
    wm = word_heatmaps(oracle, x, caps, kinds=("cmi",), n_draws=8)
    word_masks, known = world.word_masks(wm.captions, masks)
    share = wm.mass_in_masks(word_masks)
    colour = known & wm.select(lambda w: w in ("red", "green", "blue"))
    # given everything else, an object's colour is only visible in that object's pixels
    assert colour.sum() == 24 and share[colour].min() > 0.999
    articles = wm.select(lambda w: w == "a")
    # "a" carries no information in this world: its exact CMI map is zero
    assert wm.totals()[articles].abs().max() < 1e-9


def test_bad_input_is_named(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    x, caps, _ = scenes(world, 1)
    with pytest.raises(ValueError, match="word 'purple' is not in the caption"):
        word_heatmaps(tiny, x, caps, words=["purple"], n_draws=4)
    with pytest.raises(ValueError, match="empty caption"):
        word_heatmaps(tiny, x, ["  "], n_draws=4)
    with pytest.raises(ValueError, match="outside the model's vocabulary: \\['dog'\\]"):
        word_heatmaps(tiny, x, ["a red dog"], n_draws=4)
    with pytest.raises(ValueError, match="one caption per image"):
        word_heatmaps(tiny, x, caps * 2, n_draws=4)
    with pytest.raises(ValueError, match="expected images of shape"):
        word_heatmaps(tiny, x[:, :, :8], caps, n_draws=4)
    wm = word_heatmaps(tiny, x, caps, kinds=("cmi",), n_draws=4)
    with pytest.raises(ValueError, match=r"word masks have shape \(1, 8, 8, 8\), expected \(1, 8, 16, 16\)"):
        wm.mass_in_masks(torch.ones(1, 8, 8, 8, dtype=torch.bool))
    long = "a red circle left of a blue square above a green"  # 11 words, the model reads 9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wm = word_heatmaps(tiny, x, [long], kinds=("cmi",), n_draws=4)
    assert any("cut from the end: 'a green'" in str(w.message) for w in caught)
    assert len(wm.words[0]) == 9


def test_in_repo_models_are_text_denoisers_with_identity_hooks(tiny: DiffusionModule,
                                                               oracle: TextModel) -> None:
    model = TextModel.from_module(tiny)
    for m in (model, oracle):
        assert isinstance(m, TextDenoiser)
        assert m.trained_range is None and m.sampler() is None
    x = torch.randn(2, 3, 16, 16)
    assert model.encode_images(x) is x and model.decode_latents(x) is x
    assert model.to_image_resolution(x[:, 0], (16, 16)) is not None
    with pytest.raises(ValueError, match="not at the image size"):
        model.to_image_resolution(x[:, 0], (32, 32))
    assert not isinstance(tiny, TextDenoiser)  # a DiffusionModule goes through the adapter
    # the adapter carries the word dropout the model was trained with (for its exact reference)
    assert model.word_dropout == tiny.hparams.word_dropout == 0.15 and oracle.word_dropout is None


def test_a_label_model_is_refused() -> None:
    from infodecomp.models import LabelledUNet

    m = DiffusionModule(backbone=LabelledUNet(image_size=8, attributes={"shape": 2}, block_out_channels=(8, 8),
                                              norm_num_groups=4))
    with pytest.raises(ValueError, match="text probes need a text-conditioned model"):
        TextModel.from_module(m)


# ---- attention -----------------------------------------------------------------------------

def test_attention_recording_changes_nothing_and_restores(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    x, caps, _ = scenes(world, 2)
    model = TextModel.from_module(tiny)
    cond = model.encode(caps)
    logsnr = torch.zeros(2)
    before = tiny(x, logsnr, cond)
    originals = {n: type(p) for n, p in model.unet.attn_processors.items()}
    with record_cross_attention(model.unet, (16, 16)) as store:
        during = tiny(x, logsnr, cond)
    torch.testing.assert_close(during, before)
    assert {n: type(p) for n, p in model.unet.attn_processors.items()} == originals
    # softmax attention sums to one over tokens at every location of every recorded layer
    torch.testing.assert_close(store.total.sum(1), torch.full((2, 16, 16), float(store.calls)), rtol=1e-4, atol=1e-4)
    maps = word_attention_maps(tiny, x, caps)
    torch.testing.assert_close(word_attention_maps(tiny, x, caps, max_batch=1), maps, equal_nan=True)
    assert maps.shape == (2, 8, 16, 16) and (maps.nan_to_num() >= 0).all()
    assert torch.isfinite(maps[0]).all()  # an 8-word caption fills every slot


# ---- compositional -------------------------------------------------------------------------

def test_shapes_perturbations() -> None:
    rng = random.Random(0)
    p = shapes_perturbations("a red circle left of a blue square", rng)
    assert p["attribute swap"] == "a blue circle left of a red square"
    assert p["relation swap"] == "a blue square left of a red circle"
    assert sorted(p["word order"].split()) == sorted("a red circle left of a blue square".split())
    same_colour = shapes_perturbations("a red circle above a red square", rng)
    assert same_colour["attribute swap"] == "a red square above a red circle"
    assert "attribute swap" not in shapes_perturbations("a red circle above a red circle", rng)
    assert shuffle_within_trigrams("a", rng) is None
    out = shuffle_trigrams("one two three four five six", random.Random(1))
    assert out in {"four five six one two three"}
    with pytest.raises(ValueError, match="not a two-object shapes caption"):
        shapes_perturbations("a red circle", rng)


def test_exact_model_scores_compositions(oracle: TextModel, world: TwoObjectShapesWorld) -> None:
    x, caps, _ = scenes(world, 24, seed=5, dtype=torch.float64)
    r = compositional_accuracy(oracle, x, caps, n_draws=8)
    for kind in ("attribute swap", "relation swap"):
        # the denoising loss (= pointwise standard information) is the Bayes classifier here
        assert r.accuracy[kind]["denoising"] == 1.0
        assert r.above_chance_in_se(kind) > 3
        # the orthogonal score measures how far a caption moves the prediction: wrong ones move it more
        assert r.accuracy[kind]["orthogonal"] == 0.0
    distinct = sum(1 for c in caps if c.split()[1:3] != c.split()[-2:])  # both objects alike: nothing to swap
    assert r.count["attribute swap"] == r.count["relation swap"] == distinct
    assert r.count["word order"] == 24
    assert binomial_se(24, 24) == pytest.approx((1 / 26 * 25 / 26 / 24) ** 0.5)  # never a zero SE


def test_caption_labels(world: TwoObjectShapesWorld) -> None:
    full = caption_labels(world, "a red circle left of a blue square")
    assert full == {"shape_1": 0, "colour_1": 0, "shape_2": 1, "colour_2": 2, "relation": 0}
    dropped = caption_labels(world, "a circle left of a blue square")
    assert dropped["colour_1"] == -1 and dropped["shape_1"] == 0
    assert caption_labels(world, "")["relation"] == -1



def test_word_dropout_oracle_is_the_training_distribution(world: TwoObjectShapesWorld, oracle: TextModel) -> None:
    """The exact denoiser of a model trained with word dropout p: the same as the semantic
    oracle for full captions, the empty prompt and a removed colour word; for "above" removed,
    the prior mean of x is 1 : p between the "above" and the "left of" scene (the semantic
    oracle: 1 : 1). At log-SNR -30 the prediction is the prior mean (z tells nothing)."""
    p = 0.15
    dropped = shapes_text_oracle(world, word_dropout=p)
    assert dropped.word_dropout is None  # what it was trained with is a model's, not the oracle's
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    logsnr = torch.tensor([-3.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    for caption in ("a red circle left of a blue square", "", "a circle above a blue square", "a red circle of a square"):
        prompts = [caption] * 4
        assert torch.allclose(dropped(z, logsnr, dropped.encode(prompts)), oracle(z, logsnr, oracle.encode(prompts)),
                              atol=1e-10), caption
    low = torch.full((1,), -30.0, dtype=torch.float64)
    a, s = signal_noise_scales(low)

    def prior_mean(model: TextModel, caption: str) -> torch.Tensor:
        return (z[:1] - s * model(z[:1], low, model.encode([caption]))) / a

    above, left = prior_mean(oracle, "a red circle above a blue square"), prior_mean(oracle, "a red circle left of a blue square")
    assert torch.allclose(prior_mean(dropped, "a red circle a blue square"), (above + p * left) / (1 + p), atol=1e-5)
    assert torch.allclose(prior_mean(oracle, "a red circle a blue square"), (above + left) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="no caption of the world can leave"):
        shapes_text_oracle(world, word_dropout=0.0)(z[:1], low, {"text": dropped.encode(["a red circle"])["text"]})
    with pytest.raises(ValueError, match=r"word_dropout must be in \[0, 1\)"):
        shapes_text_oracle(world, word_dropout=1.0)
    with pytest.raises(ValueError, match="log_prior must be"):
        world.oracle().denoise(z, logsnr, log_prior=torch.zeros(4, 3))


# ---- localization --------------------------------------------------------------------------

def test_localization_scores_and_calibration() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(40, 8, 8, dtype=torch.bool)
    for i in range(40):
        r, c = divmod(i % 9, 3)
        masks[i, r * 2 : r * 2 + 3, c * 2 : c * 2 + 3] = True
    perfect = masks.float() + 0.1 * torch.rand(40, 8, 8, generator=gen)
    noisy = masks.float() + 0.9 * torch.rand(40, 8, 8, generator=gen)
    res = localization({"perfect": perfect, "noisy": noisy, "both": combine(perfect, noisy)}, masks,
                       calibration=0.25)
    assert res.miou["perfect"] == 1.0
    assert res.miou["whole image"] == pytest.approx(9 / 64)
    assert res.miou["noisy"] < res.miou["perfect"]
    assert res.n_calibration == 10 and res.n_test == 30
    # thresholds come from the calibration items only
    calib = torch.zeros(40, dtype=torch.bool)
    calib[:10] = True
    res2 = localization({"noisy": noisy}, masks, calibration=calib)
    assert res2.thresholds["noisy"] == calibrate_threshold(noisy[:10], masks[:10])
    assert normalise(torch.zeros(1, 2, 2)).sum() == 0
    with pytest.raises(ValueError, match="masks have shape"):
        localization({"m": perfect}, masks[:, :4])
    with pytest.raises(ValueError, match="calibration and test"):
        localization({"m": perfect}, masks, calibration=torch.ones(40, dtype=torch.bool))


def test_calibration_split_is_by_image_stable_and_exact() -> None:
    ids = [7, 7, 3, 3, 3, 11, 20, 20, 42, 5, 5, 9]  # several words per image
    calib = calibration_split(ids, 0.25, seed=0)
    chosen = {i for i, c in zip(ids, calib.tolist(), strict=True) if c}
    assert len(chosen) == round(0.25 * len(set(ids)))  # a share of the images, not of the words
    assert all(c == (i in chosen) for i, c in zip(ids, calib.tolist(), strict=True))  # whole images
    order = [11, 2, 5, 0, 9, 3, 8, 1, 4, 10, 6, 7]
    shuffled = calibration_split([ids[j] for j in order], 0.25, seed=0)
    assert shuffled.tolist() == [bool(calib[j]) for j in order]  # the order of the items does not matter
    assert len({tuple(calibration_split(ids, 0.25, seed=k).tolist()) for k in range(10)}) > 1  # seeds draw anew
    assert calibration_split([1, 2], 0.9).sum() == 1  # never all images
    with pytest.raises(ValueError, match="two distinct images"):
        calibration_split([4, 4], 0.5)


def test_heatmap_runner_on_world_scenes(tiny: DiffusionModule, world: TwoObjectShapesWorld) -> None:
    from infodecomp.probes.runners import ProbeSettings, Scenes, probe_heatmap

    x, caps, masks = scenes(world, 4, seed=3)
    s = ProbeSettings(n_draws=4, n_figure=2, progress=False)
    res = probe_heatmap(TextModel.from_module(tiny), Scenes(x, caps, masks, world), s)
    share = res.values["mass_in_mask"]
    assert set(share) == {f"{k}/{t}" for k in ("cmi", "mi", "oracle cmi") for t in ("colour", "shape")}
    assert share["oracle cmi/colour"]["mean"] > 0.999 and share["oracle cmi/colour"]["n"] == 8
    assert res.maps["cmi"].shape == (4, 8, 16, 16) and set(res.figures) == {"word_cmi_maps", "word_mi_maps"}
    assert res.values["examples"]["words"] == [c.split() for c in caps[:2]]
    for fig in res.figures.values():
        plt_close(fig)


# ---- interventions -------------------------------------------------------------------------

def test_exact_intervention_moves_the_edited_object(oracle: TextModel, world: TwoObjectShapesWorld) -> None:
    x, caps, masks = scenes(world, 6, seed=7, dtype=torch.float64)
    unchanged = intervene(oracle, x, caps, [Edit(1, c.split()[1]) for c in caps], steps=20)
    assert unchanged["change"].abs().max() == 0  # the same caption regenerates the same image
    # omitting the first object's colour changes (almost) only that object's pixels
    res = intervene(oracle, x, caps, [Edit(1)] * 6, steps=20)
    inside = (res["change"] * masks[:, 0]).flatten(1).sum(1) / res["change"].flatten(1).sum(1)
    assert inside.mean() > 0.9
    # reconstruction from the inverted latent is close to the input
    assert (res["reconstruction"] - x.clamp(-1, 1)).abs().mean() < 0.1


def test_change_correlations() -> None:
    gen = torch.Generator().manual_seed(0)
    change = torch.rand(20, 8, 8, generator=gen)
    good = change + 0.1 * torch.rand(20, 8, 8, generator=gen)
    r = change_correlations(change, {"good": good, "random": torch.rand(20, 8, 8, generator=gen)}, n_boot=200)
    assert r.pixel["good"].value > 0.9 > abs(r.pixel["random"].value) + 0.5
    assert 0 < r.pixel["good"].se < 0.05 and r.image["good"].se > 0
    # one image (the Stable-Diffusion probe): its pixel-level r, no SE, no image-level r
    one = change_correlations(change[:1], {"good": good[:1]})
    expected = torch.corrcoef(torch.stack([good[0].flatten(), change[0].flatten()]))[0, 1]
    assert one.pixel["good"].value == pytest.approx(float(expected), rel=1e-5)
    assert math.isnan(one.pixel["good"].se) and math.isnan(one.image["good"].value)
    with pytest.raises(ValueError, match="at least one image"):
        change_correlations(change[:0], {"g": good[:0]})
    with pytest.raises(ValueError, match="maps have shape"):
        change_correlations(change, {"g": good[:, :4]})


def test_the_cli_names_every_probe_and_aro_set() -> None:
    """analyze.py knows the subcommands before importing torch; they must be the probes'."""
    from infodecomp.analysis import cli
    from infodecomp.lightning.callbacks.probes import PROBES as CALLBACK_PROBES
    from infodecomp.probes.aro import ARO_SETS
    from infodecomp.probes.runners import PROBES, RUNNERS

    assert cli.PROBES == PROBES == tuple(RUNNERS) == CALLBACK_PROBES and cli.ARO_SETS == ARO_SETS
