"""The Stable-Diffusion adapter on tiny random pipelines built and saved by the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from infodecomp.diffusion.channel import add_noise
from infodecomp.estimators import information_contrasts
from infodecomp.interface import TextDenoiser
from infodecomp.models.pretrained import logsnr_to_timestep
from infodecomp.models.stable_diffusion import StableDiffusionModel, load_image, to_image_resolution
from infodecomp.probes import TextModel, word_heatmaps
from tests.fixtures import write_tiny_sd_pipeline


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def sd(request, tmp_path_factory) -> StableDiffusionModel:
    root = write_tiny_sd_pipeline(tmp_path_factory.mktemp(request.param), request.param)
    return StableDiffusionModel(root, device="cpu")


def test_timesteps_reproduce_the_schedulers_noising(sd: StableDiffusionModel) -> None:
    t = torch.tensor([0, 10, 250, 500, 999])
    logsnr = sd.logsnr_table[t]
    torch.testing.assert_close(logsnr_to_timestep(logsnr, sd.logsnr_table), t.double())
    x, eps = torch.randn(5, 4, 8, 8, dtype=torch.float64), torch.randn(5, 4, 8, 8, dtype=torch.float64)
    theirs = sd.scheduler.add_noise(x, eps, t)
    torch.testing.assert_close(add_noise(x, logsnr, eps), theirs)
    assert sd.trained_range.low == pytest.approx(float(sd.logsnr_table[-1]))
    assert sd.sampler().range.low == pytest.approx(sd.trained_range.low)
    assert sd.sampler().range.high == pytest.approx(sd.trained_range.high)


def test_latent_maps_match_the_core_on_the_raw_unet(sd: StableDiffusionModel) -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    lat = sd.encode_images(x)
    assert lat.shape == (2, 4, 8, 8)
    captions = ["a red cat", "the dog"]
    ours = word_heatmaps(sd, lat, captions, kinds=("cmi",), n_draws=8, sampler=sd.sampler())
    # the model's trained range is the default: the same maps without naming the sampler
    torch.testing.assert_close(word_heatmaps(sd, lat, captions, kinds=("cmi",), n_draws=8).cmi, ours.cmi,
                               equal_nan=True)

    # the same maps, written out by hand on the diffusers parts: same draws through the core
    tok, enc, unet, table = sd.tokenizer, sd.text_encoder, sd.unet_model, sd.logsnr_table

    def embed(prompts: list[str]) -> torch.Tensor:
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        return enc(ids)[0]

    def raw(z, logsnr, cond):  # noqa: ANN001, ANN202
        out = unet(z, logsnr_to_timestep(logsnr, table).float(), encoder_hidden_states=cond).sample
        if sd.prediction_type == "epsilon":
            return out
        a, s = torch.sigmoid(logsnr).sqrt()[:, None, None, None], torch.sigmoid(-logsnr).sqrt()[:, None, None, None]
        return a * out + s * z

    words = [c.split() for c in captions]
    conds = {"caption": embed(captions)}
    contrasts = {}
    for k in range(3):
        conds[f"w{k}"] = embed([" ".join(w[:k] + w[k + 1 :]) if k < len(w) else " ".join(w) for w in words])
        contrasts[k] = ("caption", f"w{k}")
    with torch.no_grad():
        theirs = information_contrasts(raw, lat, conds, contrasts, reduction="pixel", n_draws=8,
                                       sampler=sd.sampler())
    for k in range(3):
        for b in range(2):
            if k < len(words[b]):
                torch.testing.assert_close(ours.cmi[b, k], theirs[k].value[b], rtol=1e-4, atol=1e-6)
    up = sd.to_image_resolution(ours.cmi, (16, 16))
    torch.testing.assert_close(up, to_image_resolution(ours.cmi, (16, 16)), equal_nan=True)
    assert up.shape == (2, 3, 16, 16)
    torch.testing.assert_close(up[0].flatten(1).sum(1), ours.cmi[0].flatten(1).sum(1), rtol=1e-5, atol=1e-7)
    assert torch.isnan(up[1, 2]).all()  # the unused slot stays NaN


def test_the_pipeline_is_a_text_denoiser_without_the_probes(sd: StableDiffusionModel) -> None:
    assert isinstance(sd, TextDenoiser) and not isinstance(sd, TextModel)
    assert sd.unet is sd.unet_model and sd.max_words == sd.max_tokens - 2
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert sd.decode_latents(sd.encode_images(x)).shape == x.shape
    # lower layers never import higher ones: the adapter needs no probe, the targets no model
    code = ("import sys, infodecomp.models.stable_diffusion, infodecomp.diffusion.targets as t; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('infodecomp.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'probes'" not in out and "'models'" in out
    code = "import sys, infodecomp.diffusion.targets; print([m for m in sys.modules if m.startswith('infodecomp.models')])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_multi_token_words_and_prompt_errors(sd: StableDiffusionModel) -> None:
    assert sd.token_positions(["a", "red", "cat"]) == [[1], [2, 3, 4], [5, 6, 7]]  # one token per letter here
    with pytest.raises(ValueError, match=r"cannot encode \['dög'\]"):
        sd.encode(["a red dög"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.encode(["abcdefghijklmnop qrs"])
    assert any("cut from the end: 'op qrs'" in str(w.message) for w in caught)


def test_missing_components_are_named(tmp_path: Path) -> None:
    root = write_tiny_sd_pipeline(tmp_path / "sd")
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ValueError, match="lacks the 'vae' component"):
        StableDiffusionModel(broken, device="cpu")
    (broken / "model_index.json").unlink()
    with pytest.raises(ValueError, match="no model_index.json"):
        StableDiffusionModel(broken, device="cpu")
    with pytest.raises(ValueError, match="model directory not found"):
        StableDiffusionModel(tmp_path / "nowhere", device="cpu")


def test_images_are_checked(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (20, 20)).save(tmp_path / "grey.png")
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="is a 'L' image; an RGB image is needed"):
        load_image(tmp_path / "grey.png", 16)
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "text.png", 16)
    with pytest.raises(ValueError, match="image not found"):
        load_image(tmp_path / "none.png", 16)
    x = load_image(tmp_path / "red.png", 16)
    assert x.shape == (1, 3, 16, 16) and x[0, 0].min() == 1.0 and x[0, 1].max() == -1.0
