"""train.py answers bad input with one line and exit status 2, and creates nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from infodecomp.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def created(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name not in ("configs", "inputs")
                  and "inputs" not in p.parts)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "configs").symlink_to(CONFIGS)
    (tmp_path / "inputs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_files_named_on_the_command_line_are_checked_before_torch_loads(workdir: Path) -> None:
    for args, message in ((["--config", "nope.yaml"], "config file not found: nope.yaml; presets (--config NAME, "
                                                      "from any directory): debug, default, experiment/caption_folder"),
                          (["--ckpt_path", "missing.ckpt"], "checkpoint not found: missing.ckpt")):
        start = time.perf_counter()
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                             cwd=workdir, env={**os.environ, "WANDB_MODE": "offline"}, timeout=120)
        assert res.returncode == 2 and res.stderr.startswith(f"train.py: error: {message}")
        assert res.stderr.count("\n") == 1
        assert time.perf_counter() - start < 10  # (a LightningCLI start takes ~10 s on 2 cores)
    assert created(workdir) == []


def _foreign(path: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"hidden": 3}}, path)
    return path


CASES = {
    "cifar-root": (["--config", "configs/experiment/cifar10.yaml", "--data.init_args.root", "nowhere"],
                   "CIFAR-10 not found under nowhere"),
    "caption-root": (["--config", "configs/experiment/caption_folder.yaml", "--data.init_args.root", "nowhere"],
                     "captions file not found: nowhere/captions.csv"),
    "batch-size": (["--data.init_args.batch_size", "0"], "batch_size must be >= 1, got 0"),
    "max-steps": (["--trainer.max_steps", "-5"], "trainer.max_steps must be -1 (no limit) or >= 0, got -5"),
    "corrupt-checkpoint": (["--ckpt_path", "inputs/corrupt.ckpt"], "cannot read checkpoint inputs/corrupt.ckpt"),
    "foreign-checkpoint": (["--ckpt_path", "inputs/foreign.ckpt"], "is not an infodecomp DiffusionModule checkpoint"),
    "unknown-option": (["--trainer.max_stepz", "5"], "unrecognized arguments: --trainer.max_stepz"),
    "abbreviated-option": (["--trainer.max_step", "5"], "unrecognized arguments: --trainer.max_step"),
    "caption-no-rows": (["--config", "configs/experiment/caption_folder.yaml", "--data.init_args.root", "inputs/captions"],
                        "inputs/captions/captions.csv has a header and no rows"),
    # found inside fit before: each left an empty W&B offline run behind
    "negative-lr": (["--model.lr", "-1"], "lr must be >= 0, got -1.0"),
    "condition-width": (["--config", "configs/experiment/vector.yaml", "--data.init_args.task", "multinormal-dense-5-5-0.5",
                         "--data.init_args.n_train", "64", "--data.init_args.n_val", "16",
                         "--model.backbone.init_args.dim", "5", "--model.backbone.init_args.vector_conditions", '{"y": 3}'],
                        "data and model disagree on the conditions: vector condition 'y' must be (B, 3), got (1, 5)"),
    "init-from-missing": (["--model.init_from", "inputs/missing.ckpt"], "init_from: checkpoint not found: inputs/missing.ckpt"),
    "init-from-other-model": (["--model.init_from", str(ROOT / "src/infodecomp/assets/shapes_text/last.ckpt")],
                              "holds a TextConditionedUNet; this run's backbone is a LabelledUNet"),
    # position takes 4 values in the shapes world: value 3 would have been read as "not given"
    "label-values": (["--config", "configs/debug.yaml", "--model.backbone.init_args.attributes",
                      '{"shape": 3, "colour": 3, "position": 3}'],
                     "data and model disagree on the conditions: label 'position' takes values 0..3 in the data, "
                     "the model has 3 values (0..2)"),
    "shape-mismatch": (["--config", "configs/experiment/digits.yaml", "--model.backbone.init_args.image_size", "16"],
                       "data and model disagree on the input shape"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_errors_are_one_line(case: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "inputs" / "corrupt.ckpt").write_text("not a checkpoint")
    _foreign(workdir / "inputs" / "foreign.ckpt")
    (workdir / "inputs" / "captions").mkdir()
    (workdir / "inputs" / "captions" / "captions.csv").write_text("file,caption\n")
    args, message = CASES[case]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert created(workdir) == []  # no run directory, no W&B run, not even outputs/


def test_a_run_that_fails_inside_fit_leaves_no_empty_run_directory(workdir: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    callbacks = json.dumps([{"class_path": "infodecomp.lightning.callbacks.MutualInformationCallback",
                             "init_args": {"variables": ["no_such_label"], "n_eval": 4, "n_draws": 4}}])
    args = ["--config", "configs/debug.yaml", "--data.init_args.n_train", "32", "--data.init_args.n_val", "8",
            "--trainer.callbacks", callbacks, "--trainer.logger", json.dumps(
                {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "outputs/runs"}})]
    assert main(args) == 2
    assert "are not model conditions" in capsys.readouterr().err  # raised in the callback's setup, inside fit
    assert not list(workdir.rglob("version_*"))


TINY_VECTOR = ["--config", "configs/experiment/vector.yaml", "--config", "configs/debug.yaml",
               "--data.init_args.n_train", "32", "--data.init_args.n_val", "8"]


def test_a_run_never_writes_over_what_is_there(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A regular file where a run directory goes, and a fresh run into an existing version
    directory (which overwrote its metrics.csv and config.yaml): one line, exit 2, untouched."""
    (workdir / "inputs" / "runs").write_text("my notes\n")
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "inputs/runs"}}
    assert main([*TINY_VECTOR, "--trainer.logger", json.dumps(logger)]) == 2  # (seen before torch loads)
    err = capsys.readouterr().err
    assert err == ("train.py: error: --trainer.logger: output directory inputs/runs cannot be made: "
                   "inputs/runs is a file, not a directory\n")
    logger["init_args"] = {"save_dir": "inputs", "name": "runs"}  # (seen once the logger is built)
    assert main([*TINY_VECTOR, "--trainer.logger", json.dumps(logger)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert errors == ["train.py: error: run directory inputs/runs/version_0 cannot be made: "
                      "inputs/runs is a file, not a directory"], err[-2000:]
    assert (workdir / "inputs" / "runs").read_text() == "my notes\n"

    mine = workdir / "inputs" / "logs" / "vector" / "version_0"
    mine.mkdir(parents=True)
    (mine / "metrics.csv").write_text("mine\n")
    logger["init_args"] = {"save_dir": "inputs/logs", "name": "vector", "version": 0}
    assert main([*TINY_VECTOR, "--trainer.logger", json.dumps(logger)]) == 2
    err = capsys.readouterr().err
    assert "inputs/logs/vector/version_0 already holds files" in err and err.count("train.py: error:") == 1, err[-2000:]
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.csv"] and (mine / "metrics.csv").read_text() == "mine\n"
    assert created(workdir) == []


def test_unlabelled_items_are_not_a_label_mismatch() -> None:
    """A negative label means "not given" (an unlabelled item): the label-range check lets it through."""
    from infodecomp.lightning import DiffusionModule, TensorDataModule
    from infodecomp.models.backbones import MLPBackbone

    x = torch.randn(8, 2)
    labels = torch.tensor([0, 1, -1, 2, -1, 0, 1, 2])
    dm = TensorDataModule((x, {"y": labels}), (x, {"y": labels}))
    model = DiffusionModule(MLPBackbone(dim=2, label_conditions={"y": 3}, hidden=8, depth=1, embed=8))
    model.check_data(dm)  # no error: -1 is "not given", 0..2 within the model's 3 values
    with pytest.raises(ValueError, match=r"label 'y' takes values 0\.\.3 in the data, the model has 3 values"):
        model.check_data(TensorDataModule((x, {"y": labels + (labels == 2)}), (x, {"y": labels})))
