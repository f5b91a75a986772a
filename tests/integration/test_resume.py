"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run,
in the same run directory; a finished run says so; checkpoints are written as the run goes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from infodecomp.cli import main, train_main
from infodecomp.lightning import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# 6 batches per epoch: the kill at step 8 falls in the middle of the second epoch; the run ends
# in the fourth. Stable targets exercise the reference queue, word-free label dropout the
# dropout draws.
MAX_STEPS = 20
KILL_AT = 8


def config(tmp: Path, *, kill: bool) -> Path:
    callbacks = [{"class_path": "infodecomp.lightning.callbacks.MutualInformationCallback",
                  "init_args": {"every_n_steps": 4, "n_eval": 8, "n_draws": 4}},
                 {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 1}}]
    if kill:
        callbacks.append({"class_path": "tests.integration.killer.KillAtStep", "init_args": {"step": KILL_AT}})
    cfg = {"trainer": {"max_steps": MAX_STEPS, "limit_train_batches": None, "val_check_interval": 5,
                       "check_val_every_n_epoch": None, "callbacks": callbacks,
                       "logger": [{"class_path": "pytorch_lightning.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(tmp / "runs"), "name": "vector"}}]},
           "data": {"init_args": {"n_train": 200, "n_val": 32, "batch_size": 32}},
           "model": {"stable_target": 48, "warmup_steps": 4}}
    path = tmp / ("kill.yaml" if kill else "run.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def args(tmp: Path, *, kill: bool = False) -> list[str]:
    return ["--config", str(CONFIGS / "experiment" / "vector.yaml"), "--config", str(CONFIGS / "debug.yaml"),
            "--config", str(config(tmp, kill=kill))]


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    train_main(args(tmp), default_config_files=[CONFIGS / "default.yaml"])
    return tmp / "runs" / "vector" / "version_0"


def test_killed_and_resumed_run_ends_with_the_same_weights(uninterrupted: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, str(ROOT / "train.py"), *args(tmp_path, kill=True)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "runs" / "vector" / "version_0"
    assert checkpoint(run)["global_step"] == KILL_AT  # written as the run went, not only at the end
    assert not list(run.rglob("*.partial")) and not list(run.rglob("*.tmp"))

    cli = train_main([*args(tmp_path), "--ckpt_path", "last"], default_config_files=[CONFIGS / "default.yaml"])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # from configs/trainer/default.yaml
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # the same run directory
    resumed, whole = checkpoint(run), checkpoint(uninterrupted)
    assert resumed["global_step"] == whole["global_step"] == MAX_STEPS
    assert resumed["epoch"] == whole["epoch"]
    assert resumed["loops"]["fit_loop"]["epoch_progress"] == whole["loops"]["fit_loop"]["epoch_progress"]
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    for name, value in whole["state_dict"].items():  # backbone, EMA and its counter
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(resumed["optimizer_states"][0]["state"].values(),
                    whole["optimizer_states"][0]["state"].values(), strict=True):
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=1e-5, atol=1e-8)
    assert resumed["lr_schedulers"] == whole["lr_schedulers"]
    # one metrics file that goes on from where the killed run stopped: every training step once,
    # and the MI logged at the step of the checkpoint (just before the kill) kept, not lost
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (uninterrupted / "metrics.csv").open() as f:
        whole_rows = list(csv.DictReader(f))

    def logged(table: list[dict], key: str) -> list[int]:
        return [int(r["step"]) for r in table if r.get(key)]

    assert logged(rows, "train/loss") == logged(whole_rows, "train/loss") == list(range(MAX_STEPS))
    assert logged(rows, "val/mi/y") == logged(whole_rows, "val/mi/y") == [4, 8, 12, 16, 20]
    for a, b in zip((r for r in rows if r.get("val/mi/y")), (r for r in whole_rows if r.get("val/mi/y")), strict=True):
        assert float(a["val/mi/y"]) == pytest.approx(float(b["val/mi/y"]), rel=1e-4)


def test_a_finished_run_says_so(uninterrupted: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = uninterrupted / "checkpoints" / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    assert main([*args(uninterrupted.parent.parent.parent), "--ckpt_path", str(ckpt)]) == 0
    assert "already reached max_steps=20" in capsys.readouterr().out
    assert ckpt.stat().st_mtime_ns == before


def test_init_from_starts_a_new_run_from_a_finished_runs_weights(uninterrupted: Path, tmp_path: Path) -> None:
    from infodecomp.lightning import export_checkpoint, load_module

    source = export_checkpoint(uninterrupted / "checkpoints" / "last.ckpt", tmp_path / "source.ckpt")
    trained = {k: v for k, v in torch.load(source, weights_only=False)["state_dict"].items() if k.startswith("ema.module.")}
    # learning rate 0: whatever the new run ends with is what it started from
    assert main([*args(tmp_path), "--model.init_from", str(source), "--model.lr", "0", "--trainer.max_steps", "3"]) == 0
    ckpt = checkpoint(tmp_path / "runs" / "vector" / "version_0")
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["init_from"] == str(source)
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 3  # a fresh schedule, not the source's (20 steps)
    for name, value in trained.items():
        torch.testing.assert_close(ckpt["state_dict"][name], value)
        torch.testing.assert_close(ckpt["state_dict"]["backbone." + name[len("ema.module."):]], value)
    # a fresh initialisation differs, so the comparison above can fail
    (tmp_path / "fresh").mkdir()
    fresh = main([*args(tmp_path / "fresh"), "--model.lr", "0", "--trainer.max_steps", "1"])
    other = checkpoint(tmp_path / "fresh" / "runs" / "vector" / "version_0")["state_dict"]
    assert fresh == 0 and any(not torch.equal(other[k], v) for k, v in trained.items())
    # the finished run's weights are its own: loading it does not need the source any more
    source.unlink()
    load_module(tmp_path / "runs" / "vector" / "version_0" / "checkpoints" / "last.ckpt")


def test_resume_points_every_logger_at_the_checkpoints_run(tmp_path: Path) -> None:
    from infodecomp.cli import resume_loggers

    trainer_cfg = {"logger": [
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "outputs/runs", "name": "x"}},
        {"class_path": "infodecomp.lightning.AutoWandbLogger", "init_args": {"save_dir": "outputs/runs"}},
    ]}
    ckpt = {"infodecomp_run": {"loggers": [{"class": "CSVLogger", "name": "x", "version": 3},
                                           {"class": "AutoWandbLogger", "name": "infodecomp", "version": "abc123"}]}}
    resume_loggers(trainer_cfg, ckpt, tmp_path / "x" / "version_3" / "checkpoints" / "last.ckpt")
    assert trainer_cfg["logger"][0]["init_args"]["version"] == 3
    assert trainer_cfg["logger"][1]["init_args"]["id"] == "abc123"  # the same W&B run goes on
    # a checkpoint from before run identities were saved: the version comes from its path
    old = {"logger": [{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "o"}}]}
    resume_loggers(old, {}, tmp_path / "o" / "lightning_logs" / "version_7" / "checkpoints" / "last.ckpt")
    assert old["logger"][0]["init_args"]["version"] == 7
