"""Natural images end to end: natural.yaml trains (photos and CIFAR-10 batches on disk) and its report
puts each MI and CMI beside the exact value, with maps against the exact oracle's; cifar10.yaml
trains on a tiny CIFAR-10 in the real on-disk format and its report applies the bound log 10."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.fixtures import write_tiny_cifar10
from tests.integration.test_analyze import FAST, analyze
from tests.integration.test_training import run

# the preset at a test's size: 16x16, two backgrounds per class, a small UNet
SMALL_NATURAL = ["--data.init_args.size", "16", "--model.backbone.init_args.image_size", "16",
                 "--data.init_args.per_class", "2", "--data.init_args.n_train", "64", "--data.init_args.n_val", "16",
                 "--data.init_args.batch_size", "8", "--data.init_args.truth_samples", "2000",
                 "--model.backbone.init_args.block_out_channels", "[8, 16]",
                 "--model.backbone.init_args.norm_num_groups", "4"]
LABELS = ("scene_a", "scene_b", "patch")


@pytest.fixture(scope="module")
def natural_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("natural")
    cli = run(tmp, "natural", *SMALL_NATURAL)
    assert cli.trainer.global_step == 3 and cli.datamodule.input_shape == (3, 16, 16)
    return next((tmp / "logs" / "test").glob("version_*"))


def test_natural_report_puts_every_value_beside_the_exact_one(natural_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    # 8 draws: with 4, an item can draw no log-SNR where the patch is told apart, and its map is 0
    res = analyze("report", str(natural_run), "--out", str(out), *FAST, "--n-draws", "8", "--n-heatmap", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["information"]}
    assert {f"{k}/{v}" for k in ("mi", "cmi") for v in LABELS} <= set(rows)
    for k in ("mi", "cmi"):
        for v in LABELS:
            row = rows[f"{k}/{v}"]
            assert row["truth"] is not None and row["oracle_estimate"] is not None and row["flag"]
            assert 0.0 < row["truth"] < row["bound"] + 0.2  # noisy labels: well inside the label's entropy
    # the patch's information is exactly inside its square; the model's map is compared with the exact one
    h = report["heatmaps"]
    assert h["oracle_mass_in_mask"]["patch"][0] > 0.99
    assert h["oracle_mass_in_mask"]["scene_a"][0] < 0.6
    assert set(h["oracle_correlation"]) == set(LABELS)
    assert all(-1.0 <= r <= 1.0 for r, _ in h["oracle_correlation"].values())
    md = (out / "report.md").read_text()
    assert "Pearson r with the exact map" in md


def test_pid_on_the_natural_labels(natural_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "pid"
    res = analyze("pid", str(natural_run), "--variables", "scene_a", "patch", "--out", str(out),
                  "--n-items", "8", "--n-draws", "4")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["quantity"]: r for r in json.loads((out / "report.json").read_text())["pid"]["rows"]}
    assert set(rows) == {"i1", "i2", "i12", "redundancy", "unique1", "unique2", "synergy"}
    assert all(r["oracle"] is not None for r in rows.values())  # the exact oracle on the same draws


def test_natural_world_from_cifar10_batches(tmp_path: Path) -> None:
    root = write_tiny_cifar10(tmp_path / "cifar", n_per_batch=40)
    cli = run(tmp_path, "natural", *SMALL_NATURAL, "--data.init_args.source", "cifar10",
              "--data.init_args.root", str(root), "--data.init_args.classes", "4")
    world = cli.datamodule.world
    assert cli.trainer.global_step == 3 and world.attributes["scene_a"][:2] == ["airplane", "automobile"]
    gt = cli.datamodule.ground_truth()
    for v in LABELS:
        assert 0.2 * world.entropy(v) < gt.mutual_information[v] < 0.8 * world.entropy(v)


def test_cifar10_yaml_trains_and_reports_with_the_bound(tmp_path: Path) -> None:
    """No exact value on real CIFAR-10, but I(x; class) <= H(class) ~ log 10 and the other checks apply."""
    root = write_tiny_cifar10(tmp_path / "cifar")
    run(tmp_path, "cifar10", "--data.init_args.root", str(root), "--data.init_args.n_val", "10",
        "--data.init_args.batch_size", "4", "--model.backbone.init_args.block_out_channels", "[16, 32]",
        "--model.backbone.init_args.layers_per_block", "1", "--model.backbone.init_args.attention", "false")
    ckpt_dir = next((tmp_path / "logs" / "test").glob("version_*"))
    out = tmp_path / "report"
    res = analyze("report", str(ckpt_dir), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    row = next(r for r in report["information"] if r["name"] == "mi/label")
    assert row["truth"] is None and row["oracle_estimate"] is None
    # 100 training labels drawn uniformly from 10 classes: the plug-in entropy with Miller-Madow
    assert row["bound"] == pytest.approx(math.log(10), abs=0.15)
    assert row["flag"] in ("ok", "model-inconsistent", "exceeds-bound") and row["gap_se"] > 0
    assert "(bound H = " in (out / "report.md").read_text()
