"""analyze.py on tiny random Stable-Diffusion pipelines (eps and v): every subcommand, DDP, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.fixtures import write_aro_sets, write_tiny_coco, write_tiny_sd_pipeline
from tests.integration.test_analyze import analyze

FAST = ["--n-draws", "4"]


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def sd_dir(request, tmp_path_factory) -> Path:
    return write_tiny_sd_pipeline(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return write_tiny_coco(tmp_path_factory.mktemp("coco"))


@pytest.mark.slow  # long; runs in make test-all
def test_every_subcommand_runs(sd_dir: Path, coco: Path, tmp_path: Path) -> None:
    image = str(coco / "val2017" / "000000001000.jpg")
    res = analyze("heatmap", "--model", str(sd_dir), "--image", image, "--prompt", "a red cat on a mat",
                  "--out", str(tmp_path / "h"), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "h" / "report.json").read_text())
    examples = report["examples"]  # the same report as for an in-repo run, from the same probe
    assert examples["words"] == [["a", "red", "cat", "on", "a", "mat"]] and len(examples["cmi_nats"][0]) == 6
    assert report["cmi_per_word"]["a"]["n"] == 2 and report["n_items"] == 1
    assert report["latent_shape"] == [4, 8, 8] and (tmp_path / "h" / "word_cmi_maps.png").is_file()
    assert "# heatmap probe" in (tmp_path / "h" / "summary.md").read_text()
    assert report["logsnr_range"][0] == pytest.approx(-5.364, abs=1e-3)  # the scheduler's trained range
    maps = torch.load(tmp_path / "h" / "latent_maps.pt")
    assert maps["cmi"].shape == (6, 8, 8)

    aro = write_aro_sets(tmp_path / "aro")
    res = analyze("compositional", "--model", str(sd_dir), "--aro", str(aro / "vg"), "--aro-set", "vg-relation",
                  "--out", str(tmp_path / "c"), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "c" / "report.json").read_text())["count"] == 6

    res = analyze("intervene", "--model", str(sd_dir), "--image", image, "--prompt", "a red cat on a mat",
                  "--word", "red", "--replacement", "blue", "--steps", "4", "--out", str(tmp_path / "i"), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "i" / "report.json").read_text())
    assert report["edited_captions"] == ["a blue cat on a mat"] and report["edit"] == "replace"
    assert set(report["pixel"]) == {"cmi", "attention"} and -1 <= report["pixel"]["cmi"]["value"] <= 1
    assert report["image_path"] == image and (tmp_path / "i" / "interventions.png").is_file()
    assert "Edited prompt: 'a blue cat on a mat'" in (tmp_path / "i" / "summary.md").read_text()

    res = analyze("localize", "--model", str(sd_dir), "--coco", str(coco), "--csv", str(coco / "COCO-IT.csv"),
                  "--out", str(tmp_path / "l"), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "l" / "report.json").read_text())
    assert report["n_items"] == 4 and set(report["miou"]) == {"cmi", "mi", "attention", "attention x cmi",
                                                               "whole image"}


@pytest.mark.slow  # long; runs in make test-all
def test_localize_two_processes_match_one_and_resume(coco: Path, tmp_path: Path) -> None:
    sd = write_tiny_sd_pipeline(tmp_path / "sd")
    csv = str(coco / "COCO-IT.csv")
    one = tmp_path / "one"
    # an interrupted run: only the first two rows finished
    res = analyze("localize", "--model", str(sd), "--coco", str(coco), "--csv", csv, "--out", str(one),
                  "--n-items", "2", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    (one / "report.json").unlink()
    first = {p.name: p.stat().st_mtime_ns for p in (one / "items").glob("*.pt")}
    assert sorted(first) == ["0000000.pt", "0000001.pt"]
    res = analyze("localize", "--model", str(sd), "--coco", str(coco), "--csv", csv, "--out", str(one), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((one / "report.json").read_text())
    assert report["resumed_items"] == 2 and report["n_items"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (one / "items").glob("*.pt") if p.name in first} == first

    two = tmp_path / "two"
    res = analyze("localize", "--model", str(sd), "--coco", str(coco), "--csv", csv, "--out", str(two),
                  "--devices", "2", "--accelerator", "cpu", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    for p in sorted((one / "items").glob("*.pt")):
        a, b = torch.load(p, weights_only=False), torch.load(two / "items" / p.name, weights_only=False)
        for k in ("cmi", "mi", "attention"):  # stored in float16
            torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-2, atol=1e-5)
    assert json.loads((two / "report.json").read_text())["miou"] == pytest.approx(report["miou"], abs=1e-3)
    again = analyze("localize", "--model", str(sd), "--coco", str(coco), "--csv", csv, "--out", str(two), *FAST)
    assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.slow  # long; runs in make test-all
def test_bad_input_exits_2_and_writes_nothing(coco: Path, tmp_path: Path) -> None:
    from PIL import Image

    sd = write_tiny_sd_pipeline(tmp_path / "sd")
    image = str(coco / "val2017" / "000000001000.jpg")
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "text_encoder")
    out = tmp_path / "out"
    cases = [
        (["heatmap", "--model", str(broken), "--image", image, "--prompt", "a cat"], "lacks the 'text_encoder'"),
        (["heatmap", "--model", str(sd), "--image", str(tmp_path / "none.jpg"), "--prompt", "a cat"], "not found"),
        (["heatmap", "--model", str(sd), "--image", image, "--prompt", "a cat 42"], "cannot encode ['42']"),
        (["heatmap", "--model", str(sd), "--image", image], "needs --prompt"),
        (["heatmap", "--model", str(sd), "--image", image, "--prompt", "a cat", "--words", "dog"],
         "word 'dog' is not in the caption"),
    ]
    Image.new("L", (16, 16)).save(tmp_path / "grey.png")
    cases.append((["heatmap", "--model", str(sd), "--image", str(tmp_path / "grey.png"), "--prompt", "a cat"],
                  "an RGB image is needed"))
    for args, message in cases:
        res = analyze(*args, "--out", str(out), *FAST)
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
        assert not out.exists()
