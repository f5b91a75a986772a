"""Text probes end to end: analyze.py subcommands on a tiny trained run, the callback, export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infodecomp.lightning import DiffusionModule, ShapesDataModule, export_checkpoint, load_module
from infodecomp.lightning.callbacks import TextProbeCallback
from infodecomp.models import TextConditionedUNet
from tests.fixtures import write_aro_sets
from tests.integration.test_analyze import analyze
from tests.integration.test_callbacks import fit, last_value, read_metrics
from tests.integration.test_training import run

TINY_TEXT = ["--data.init_args.n_train", "64", "--data.init_args.n_val", "16", "--data.init_args.batch_size", "8",
             "--model.backbone.init_args.block_out_channels", "[8, 16]",
             "--model.backbone.init_args.norm_num_groups", "4", "--model.backbone.init_args.text_dim", "16",
             "--model.backbone.init_args.text_heads", "2", "--model.backbone.init_args.attention_head_dim", "4"]
FAST = ["--n-items", "8", "--n-draws", "4"]
VOCAB = "a above blue circle green left of red square triangle".split()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("textrun")
    run(tmp, "shapes_text", *TINY_TEXT)
    return next((tmp / "logs" / "test").glob("version_*"))


@pytest.mark.parametrize("probe", [pytest.param("heatmap", marks=pytest.mark.slow),
                                   pytest.param("compositional", marks=pytest.mark.slow),
                                   pytest.param("localize", marks=pytest.mark.slow), "intervene"])
def test_each_probe_writes_a_report(probe: str, text_run: Path, tmp_path: Path) -> None:
    out = tmp_path / probe
    extra = ["--steps", "4"] if probe == "intervene" else []
    res = analyze(probe, str(text_run), "--out", str(out), *FAST, *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    summary = (out / "summary.md").read_text()
    assert report["probe"] == probe and report["n_items"] == 8 and f"# {probe} probe" in summary
    if probe == "heatmap":
        assert set(report["mass_in_mask"]) == {f"{k}/{t}" for k in ("cmi", "mi", "oracle cmi")
                                               for t in ("colour", "shape")}
        # the exact denoiser's colour maps lie inside their objects
        assert report["mass_in_mask"]["oracle cmi/colour"]["mean"] > 0.999
        assert report["nfe_per_image"] == (2 * 8 + 2) * 4 or report["nfe_per_image"] == (2 * 7 + 2) * 4
        assert (out / "word_cmi_maps.png").stat().st_size > 5000
    elif probe == "compositional":
        assert set(report["accuracy"]) == {"attribute swap", "relation swap", "word order"}
        assert all(0 <= v["denoising"] <= 1 and report["se"][k]["denoising"] > 0 for k, v in report["accuracy"].items())
    elif probe == "localize":
        assert set(report["miou"]) == {"cmi", "mi", "attention", "attention x cmi", "whole image"}
        assert report["n_calibration"] + report["n_test"] == 32  # four object words per scene
    else:
        assert set(report["pixel"]) == {"cmi", "attention"} and report["image"]["cmi"]["se"] >= 0
        assert (out / "interventions.png").is_file()
    again = analyze(probe, str(text_run), "--out", str(out), *FAST, *extra)
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # long; runs in make test-all
def test_compositional_on_a_local_aro_set(text_run: Path, tmp_path: Path) -> None:
    root = write_aro_sets(tmp_path / "aro")
    out = tmp_path / "aro_report"
    res = analyze("compositional", str(text_run), "--aro", str(root / "vg"), "--aro-set", "vg-attribution",
                  "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["aro_set"] == "vg-attribution" and report["count"] == 6 and report["chance"] == 0.5
    res = analyze("compositional", str(text_run), "--aro", str(root / "coco"), "--aro-set", "coco-order",
                  "--out", str(tmp_path / "coco"), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "coco" / "report.json").read_text())["candidates"] == 4


@pytest.mark.slow  # long; runs in make test-all
def test_probe_errors_exit_2_and_write_nothing(text_run: Path, tmp_path: Path) -> None:
    from tests.integration.test_analyze import shapes_run  # noqa: F401 (fixture reuse is not needed here)

    out = tmp_path / "out"
    res = analyze("heatmap", str(tmp_path / "missing.ckpt"), "--out", str(out), *FAST)
    assert res.returncode == 2 and "not found" in res.stderr and not out.exists()
    label_run = tmp_path / "labels"
    run(label_run, "shapes", "--data.init_args.n_train", "32", "--data.init_args.n_val", "8",
        "--data.init_args.batch_size", "8", "--data.init_args.truth_samples", "500",
        "--model.backbone.init_args.block_out_channels", "[8, 16]", "--model.backbone.init_args.norm_num_groups", "4")
    res = analyze("localize", str(label_run), "--out", str(out), *FAST)
    assert res.returncode == 2 and "text probes need a text-conditioned model" in res.stderr and not out.exists()
    bad_aro = tmp_path / "empty_aro"
    bad_aro.mkdir()
    res = analyze("compositional", str(text_run), "--aro", str(bad_aro), "--out", str(out), *FAST)
    assert res.returncode == 2 and "annotation file not found" in res.stderr and not out.exists()


def test_text_probe_callback_logs_word_mass_and_compositional_accuracy(tmp_path: Path) -> None:
    dm = ShapesDataModule(size=16, captions=True, n_train=32, n_val=8, batch_size=8)
    bb = TextConditionedUNet(image_size=16, vocabulary=VOCAB, max_words=9, text_dim=16, text_layers=1, text_heads=2,
                             block_out_channels=(8, 16), attention_head_dim=4, norm_num_groups=4)
    module = DiffusionModule(bb, cond_dropout=0.1, word_dropout=0.15)
    cb = TextProbeCallback(every_n_steps=0, n_eval=8, n_images=2, n_draws=4,
                           probes=("heatmap", "compositional", "localize", "intervene"))
    trainer = fit(module, dm, [cb], tmp_path, steps=2)
    rows = read_metrics(trainer)
    for key in ("val/word_mass_in_mask/colour", "val/word_mass_in_mask/shape",
                "val/compositional/attribute_swap/denoising", "val/compositional/word_order/orthogonal",
                "val/localization/cmi", "val/localization/whole_image", "val/localization/attention_x_cmi"):
        assert 0 <= last_value(rows, key) <= 1
    for key in ("val/intervention/pixel/cmi", "val/intervention/image/attention"):
        assert -1 <= last_value(rows, key) <= 1
    with pytest.raises(ValueError, match="probes must be a non-empty subset"):
        TextProbeCallback(probes=("sharpness",))
    assert list((Path(trainer.loggers[0].log_dir) / "figures").glob("val_word_heatmaps_step*.png"))


def test_export_keeps_the_ema_model_and_is_smaller(text_run: Path, tmp_path: Path) -> None:
    last = next(text_run.rglob("last.ckpt"))
    small = export_checkpoint(last, tmp_path / "model.ckpt")
    assert small.stat().st_size < 0.6 * last.stat().st_size
    full, slim = load_module(last), load_module(small)
    z, logsnr = torch.randn(2, 3, 16, 16), torch.zeros(2)
    cond = {"text": full.backbone.words.encode(["a red circle left of a blue square"] * 2)}
    torch.testing.assert_close(slim(z, logsnr, cond), full(z, logsnr, cond))


@pytest.mark.slow  # long; runs in make test-all
def test_probe_tables_go_to_wandb_offline(text_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "wb"
    res = analyze("compositional", str(text_run), "--out", str(out), "--wandb", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and b"probe/compositional" in runs[0].read_bytes()


def test_an_installed_package_finds_the_shipped_model(tmp_path: Path) -> None:
    """A regular (non-editable) install carries the shipped model as package data."""
    root = Path(__file__).resolve().parents[2]
    source, site = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):  # a copy: building never touches the checkout
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.rmtree(source)
    code = ("import infodecomp; from infodecomp.analysis.probes import shipped_text_model; "
            "from infodecomp.cli import CONFIGS; "
            "d = shipped_text_model(); print(infodecomp.__file__); print(d); "
            "print((d / 'last.ckpt').is_file(), (d / 'config.yaml').is_file(), (CONFIGS / 'default.yaml').is_file(), "
            "(CONFIGS / 'experiment' / 'shapes.yaml').is_file(), (CONFIGS / 'trainer' / 'default.yaml').is_file())")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    package, shipped, found = res.stdout.strip().splitlines()[-3:]
    assert Path(package).is_relative_to(site) and Path(shipped).is_relative_to(site)
    assert found == "True True True True True"  # the model and the configs travel with the package
    for script, err in (("infodecomp-train", "infodecomp-train: error: config file not found: nope.yaml; presets "
                                             "(--config NAME, from any directory): debug, default, "
                                             "experiment/caption_folder, experiment/cifar10, experiment/digits, "
                                             "experiment/finetune, experiment/natural, experiment/pid, experiment/shapes, "
                                             "experiment/shapes_text, experiment/shapes_unet, experiment/vector"),
                        ("infodecomp-analyze", "infodecomp-analyze: error: config file not found: nope.yaml")):
        args = ["--config", "nope.yaml"] if script == "infodecomp-train" else ["report", ".", "--config", "nope.yaml"]
        res = subprocess.run([str(site / "bin" / script), *args], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120, env=env)
        assert res.returncode == 2 and res.stderr.strip() == err, res.stderr[-2000:]


def test_heatmap_words_restrict_the_maps_or_are_refused(tmp_path: Path, capsys) -> None:
    """On the shipped model, ``--words`` maps only those words (where a caption has them), and a
    word of no held-out caption is an error naming the captions' words."""
    from infodecomp.analysis.cli import main

    out = tmp_path / "zebra"
    assert main(["heatmap", "--words", "zebra", "--n-items", "4", "--n-draws", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("analyze.py: error: --words zebra: not a word of the held-out captions (their words: "
                   f"{' '.join(VOCAB)})")
    assert not out.exists() and not list(tmp_path.iterdir())
    out = tmp_path / "red"
    assert main(["heatmap", "--words", "red", "--n-items", "4", "--n-draws", "4", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["cmi_per_word"]) == set(report["mi_per_word"]) == {"red"}
    words = report["examples"]["words"]
    assert all(set(ws) <= {"red"} for ws in words)
    assert [ws == ["red"] * c.split().count("red") for ws, c in zip(words, report["examples"]["captions"],
                                                                     strict=True)] == [True] * len(words)
    assert report["settings"]["words"] == ["red"]
