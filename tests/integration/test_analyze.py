"""analyze.py: a report from a debug run, and clean failures on bad input (exit status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_training import CONFIGS, ROOT, run

FAST = ["--n-eval", "8", "--n-draws", "4", "--n-heatmap", "4", "--no-samples"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    run(tmp, "shapes", "--data.init_args.n_train", "64", "--data.init_args.n_val", "16",
        "--data.init_args.batch_size", "8", "--data.init_args.truth_samples", "2000",
        "--model.backbone.init_args.block_out_channels", "[8, 16]", "--model.backbone.init_args.norm_num_groups", "4")
    return next((tmp / "logs" / "test").glob("version_*"))


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "analyze.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_report_from_a_run_directory(shapes_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = analyze("report", str(shapes_run), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    names = {r["name"] for r in report["information"]}
    expected = {f"{k}/{v}" for k in ("mi", "cmi") for v in ("shape", "colour", "position")}
    assert names == expected | {f"{n}@standard" for n in expected}
    assert {r["estimator"] for r in report["information"]} == {"orthogonal", "standard"}
    row = next(r for r in report["information"] if r["name"] == "mi/colour")
    assert row["truth"] == pytest.approx(1.0986, abs=0.01) and row["oracle_estimate"] is not None
    assert set(report["heatmaps"]["mass_in_mask"]) == {"shape", "colour", "position"}
    md = (out / "report.md").read_text()
    for fig in ("information.png", "density.png", "heatmaps.png", "mmse.png", "mi_history.png"):
        assert f"]({fig})" in md and (out / fig).stat().st_size > 1000
    # refusing to overwrite leaves the report untouched
    before = (out / "report.json").read_bytes()
    again = analyze("report", str(shapes_run), "--out", str(out), *FAST)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (out / "report.json").read_bytes() == before


def test_missing_checkpoint_exits_2(tmp_path: Path) -> None:
    res = analyze("report", str(tmp_path / "nothing_here.ckpt"), *FAST)
    assert res.returncode == 2 and "not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_foreign_checkpoint_exits_2(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}}, bad)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = analyze("report", str(bad), "--out", str(out), *FAST)
    assert res.returncode == 2 and "not an infodecomp DiffusionModule checkpoint" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_mismatched_config_exits_2(shapes_run: Path, tmp_path: Path) -> None:
    res = analyze("report", str(shapes_run), "--config", str(CONFIGS / "debug.yaml"), *FAST)
    assert res.returncode == 2 and "no data section" in res.stderr
    other = tmp_path / "other.yaml"
    text = (shapes_run / "config.yaml").read_text().replace("image_size: 16", "image_size: 32")
    other.write_text(text)
    res = analyze("report", str(shapes_run), "--config", str(other), "--out", str(tmp_path / "r"), *FAST)
    assert res.returncode == 2 and "different model" in res.stderr
    assert not (tmp_path / "r").exists()
