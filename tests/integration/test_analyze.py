"""analyze.py: a report from a debug run, and clean failures on bad input (exit status 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infodecomp.markers import MARKER, write_marker
from tests.integration.test_training import CONFIGS, ROOT, run

FAST = ["--n-eval", "8", "--n-draws", "4", "--n-heatmap", "4", "--no-samples"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    run(tmp, "shapes", "--data.init_args.n_train", "64", "--data.init_args.n_val", "16",
        "--data.init_args.batch_size", "8", "--data.init_args.truth_samples", "2000",
        "--model.backbone.init_args.block_out_channels", "[8, 16]", "--model.backbone.init_args.norm_num_groups", "4")
    return next((tmp / "logs" / "test").glob("version_*"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    # checks without ground truth: the label entropy bounds it (64 training items), the paired gap has an SE
    assert row["bound"] == pytest.approx(1.0986, abs=0.15) and row["gap_se"] > 0
    assert row["flag"] in ("ok", "model-inconsistent", "exceeds-bound")
    assert set(report["heatmaps"]["mass_in_mask"]) == {"shape", "colour", "position"}
    md = (out / "report.md").read_text()
    for fig in ("val_information.png", "val_information_density.png", "val_heatmap_cmi.png", "val_mmse_curve.png",
                "mi_history.png"):
        assert f"]({fig})" in md and (out / fig).stat().st_size > 1000
    assert report["information_density"]["oracle"] is not None and report["nll_bpd"]["se"] > 0
    # the wall time of each step, in report.json, report.md and the last line printed
    steps = report["step_seconds"]
    assert list(steps) == ["information", "heatmaps", "mmse", "likelihood"] and all(t > 0 for t in steps.values())
    assert sum(steps.values()) <= report["seconds"]
    assert "(information " in md.splitlines()[-1]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"report wall time: {report['seconds']:.0f} s (information ") and "likelihood" in last
    assert (out.stat().st_mode & 0o777) == (0o777 & ~_umask())  # ordinary permissions, not mkdtemp's 0700
    assert not list(out.parent.glob(".*"))  # nothing left beside it
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
    out = tmp_path / "out"  # an earlier report, which --overwrite may replace
    out.mkdir()
    write_marker(out, "infodecomp-analyze", subcommand="report")
    (out / "report.json").write_text("earlier")
    res = analyze("report", str(bad), "--out", str(out), "--overwrite", *FAST)  # even when replacing is allowed
    assert res.returncode == 2 and "not an infodecomp DiffusionModule checkpoint" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.json"]
    assert (out / "report.json").read_text() == "earlier"


@pytest.mark.slow  # long; runs in make test-all
def test_mismatched_config_exits_2(shapes_run: Path, tmp_path: Path) -> None:
    res = analyze("report", str(shapes_run), "--config", str(CONFIGS / "debug.yaml"), *FAST)
    assert res.returncode == 2 and "no data section" in res.stderr
    other = tmp_path / "other.yaml"
    text = (shapes_run / "config.yaml").read_text().replace("image_size: 16", "image_size: 32")
    other.write_text(text)
    res = analyze("report", str(shapes_run), "--config", str(other), "--out", str(tmp_path / "r"), *FAST)
    assert res.returncode == 2 and "different model" in res.stderr
    assert not (tmp_path / "r").exists()


def test_bad_input_is_answered_before_torch_loads(tmp_path: Path) -> None:
    start = time.perf_counter()
    res = analyze("report", str(tmp_path / "missing_run"))
    assert res.returncode == 2 and res.stderr.startswith("analyze.py: error: checkpoint or run directory not found")
    assert time.perf_counter() - start < 10  # no model or torch import (the old path took ~15 s)
    res = analyze("heatmap", "--model", str(tmp_path / "no_pipeline"), "--image", "x.png", "--prompt", "a")
    assert res.returncode == 2 and "model directory not found" in res.stderr


def _report_past_its_first_step(run: Path, out: Path) -> subprocess.Popen:
    """``analyze.py report RUN --out OUT`` in the background, once its information step is saved
    (or it ended: the caller checks)."""
    partial = out.parent / f".{out.name}.partial"
    proc = subprocess.Popen([sys.executable, str(ROOT / "analyze.py"), "report", str(run), "--out", str(out), *FAST],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (partial / "steps" / "information.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc


def test_killed_report_resumes_and_leaves_nothing_behind(shapes_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    partial = tmp_path / ".report.partial"
    proc = _report_past_its_first_step(shapes_run, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -9, "the report finished before it could be interrupted"
    assert not out.exists() and partial.is_dir()  # one hidden directory, nothing half-written at --out
    res = analyze("report", str(shapes_run), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already done" in res.stderr and "information" in res.stderr  # it resumed from the finished step
    assert not partial.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    report = json.loads((out / "report.json").read_text())
    assert {r["name"] for r in report["information"]} >= {"mi/shape", "cmi/colour"} and "mmse" in report
    assert report["step_seconds"]["information"] > 0  # the interrupted run's time for the step it finished


def test_terminated_report_stops_after_its_running_step(shapes_run: Path, tmp_path: Path) -> None:
    """SIGTERM (``kill``, a scheduler's limit): Lightning only notes it during the report's steps,
    which used to run on to the end; now the report stops once the running step is saved."""
    out = tmp_path / "report"
    partial = tmp_path / ".report.partial"
    proc = _report_past_its_first_step(shapes_run, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM after the report's" in err and "Traceback" not in err
    steps = {p.stem for p in (partial / "steps").glob("*.json")}
    assert "information" in steps and not {"mmse", "likelihood"} <= steps  # it did not run on to the end
    assert not out.exists()
    res = analyze("report", str(shapes_run), "--out", str(out), *FAST)
    assert res.returncode == 0 and "already done" in res.stderr, res.stderr[-2000:]
    assert (out / "report.json").is_file() and not partial.exists()


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("vector")
    run(tmp, "vector", "--data.init_args.n_train", "256", "--data.init_args.n_val", "64")
    return next((tmp / "logs" / "test").glob("version_*"))


def test_report_of_a_vector_run(vector_run: Path, tmp_path: Path) -> None:
    res = analyze("report", str(vector_run), "--out", str(tmp_path / "r"), *FAST)
    assert res.returncode == 0, res.stderr[-2000:]  # was: "backbone settings differ" (null vs {} in the config)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    row = next(r for r in report["information"] if r["name"] == "mi/y")
    assert row["truth"] == pytest.approx(0.4133, abs=1e-3) and row["oracle_estimate"] is not None
    assert "heatmaps" not in report and "InfoHeatmapCallback skipped" in res.stderr


def test_report_draws_to_a_target_se(vector_run: Path, tmp_path: Path) -> None:
    """``--target-se``: a pilot (64 items x 8 draws) sets the information step's draws, which
    report.json and report.md record; each MI's SE over the 64 items lands within the pilot's
    error of the target (SEs from 64 items carry about 9%; the plan errs toward more draws)."""
    target = 0.02
    res = analyze("report", str(vector_run), "--out", str(tmp_path / "r"), "--n-eval", "64", "--n-draws", "4",
                  "--n-heatmap", "4", "--no-samples", "--target-se", str(target))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    plan = report["draws_plan"]
    assert plan["target_se"] == target and plan["pilot_items"] == 64 and plan["pilot_draws"] == 8
    assert 4 <= plan["draws"] <= 256 and plan["draws"] % 4 == 0 and report["n_draws"] == plan["draws"]
    assert set(plan["quantities"]) == {"mi/y"} and not plan["short"]
    row = next(r for r in report["information"] if r["name"] == "mi/y")
    assert row["se"] <= 1.35 * target
    assert f"asked for {plan['draws']} draws" in (tmp_path / "r" / "report.md").read_text()
    bad = analyze("report", str(vector_run), "--out", str(tmp_path / "bad"), "--target-se", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "analyze.py: error: --target-se must be a positive number " \
        "of nats, got 0.0"
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_two_devices_give_the_same_report(shapes_run: Path, tmp_path: Path) -> None:
    reports = {}
    for devices in (1, 2):
        res = analyze("report", str(shapes_run), "--out", str(tmp_path / f"d{devices}"), *FAST,
                      "--accelerator", "cpu", "--devices", str(devices))
        assert res.returncode == 0, res.stderr[-2000:]
        reports[devices] = json.loads((tmp_path / f"d{devices}" / "report.json").read_text())
    one, two = reports[1], reports[2]
    assert one["n_eval"] == two["n_eval"] == 8
    for a, b in zip(one["information"], two["information"], strict=True):
        assert a["name"] == b["name"]
        assert a["estimate"] == pytest.approx(b["estimate"], rel=1e-5, abs=1e-7)
        assert a["se"] == pytest.approx(b["se"], rel=1e-4, abs=1e-7)
        assert a["oracle_estimate"] == pytest.approx(b["oracle_estimate"], rel=1e-5, abs=1e-7)
    assert one["nll_bpd"]["estimate"] == pytest.approx(two["nll_bpd"]["estimate"], rel=1e-5)
    for v, (m, _) in one["heatmaps"]["mass_in_mask"].items():
        assert m == pytest.approx(two["heatmaps"]["mass_in_mask"][v][0], rel=1e-5)
    for k in ("conditional", "unconditional", "gaussian_reference"):
        assert one["mmse"][k] == pytest.approx(two["mmse"][k], rel=1e-5)


@pytest.mark.slow
def test_report_logs_to_wandb_offline(shapes_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "wb"
    res = analyze("report", str(shapes_run), "--out", str(out), "--wandb", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, sorted(p.name for p in out.iterdir())
    data = runs[0].read_bytes()  # the callbacks' own keys, logged by the same code as in training
    assert b"val/mi/colour" in data and b"val/information" in data and b"val/heatmap/cmi" in data


def test_pid_of_a_labelled_run_and_of_two_words(shapes_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "pid"
    res = analyze("pid", str(shapes_run), "--variables", "shape", "colour", "--given", "position",
                  "--n-items", "8", "--n-draws", "4", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["pid"]["variables"] == ["shape", "colour"] and report["pid"]["given"] == ["position"]
    assert {r["quantity"] for r in report["pid"]["rows"]} == {"i1", "i2", "i12", "redundancy", "unique1",
                                                              "unique2", "synergy"}
    assert "information" not in report  # only the PID step ran
    md = (out / "report.md").read_text()
    assert "Partial information decomposition of shape and colour" in md and (out / "val_pid_maps.png").is_file()
    words = tmp_path / "words"
    res = analyze("pid", "--words", "1", "-1", "--n-items", "4", "--n-draws", "4", "--out", str(words))
    assert res.returncode == 0, res.stderr[-2000:]
    probe = json.loads((words / "report.json").read_text())
    assert set(probe["atoms"]) == set(probe["atoms_oracle"]) and probe["nfe_per_image"] == 16
    assert "## Partial information decomposition of words" in (words / "summary.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["pid", "--n-items", "4"], "either --variables V1 V2"),
    (["pid", "--words", "1", "dog", "--n-items", "4", "--n-draws", "4"], "'dog' is not in the caption"),
    (["pid", "--words", "1", "1", "--n-items", "4", "--n-draws", "4"], "the same word twice"),
    (["pid", "--variables", "y1", "y2", "--n-items", "4"], "needs the run of a labelled model"),
])
def test_pid_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = analyze(*args, "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_pid_variables_not_in_the_model_exit_2(shapes_run: Path, tmp_path: Path) -> None:
    res = analyze("pid", str(shapes_run), "--variables", "shape", "y2", "--n-items", "4", "--n-draws", "4",
                  "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "'y2'" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "out").exists()
