"""Train every data/backbone pairing for a few steps through train.py's CLI (the debug preset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from infodecomp.cli import train_main
from infodecomp.lightning import DictDataset, DiffusionModule, load_module
from infodecomp.models import MLPBackbone
from tests.fixtures import write_caption_folder, write_tiny_cifar10, write_tiny_pretrained_unet

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
DEFAULT = [CONFIGS / "default.yaml"]


def run(tmp_path: Path, experiment: str | None, *extra: str, debug: bool = True):
    logger = json.dumps([{"class_path": "pytorch_lightning.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path / "logs"), "name": "test"}}])
    args = []
    if experiment:
        args += ["--config", str(CONFIGS / "experiment" / f"{experiment}.yaml")]
    if debug:
        args += ["--config", str(CONFIGS / "debug.yaml")]
    args += ["--trainer.logger", logger, *extra]
    return train_main(args, default_config_files=DEFAULT)


SMALL_IMAGES = ["--data.init_args.n_train", "64", "--data.init_args.n_val", "16", "--data.init_args.batch_size", "8"]

PAIRINGS = {
    "shapes-labels": ("shapes", SMALL_IMAGES),
    "digits-labels": ("digits", SMALL_IMAGES),
    "vector-mlp": ("vector", ["--data.init_args.n_train", "256", "--data.init_args.n_val", "64"]),
    "cmi-vector-mlp": ("vector", ["--data.init_args.task", "cmi-gaussian-2-2-2-1.0", "--data.init_args.n_train", "256",
                                  "--data.init_args.n_val", "64", "--model.backbone.init_args.dim", "2",
                                  "--model.backbone.init_args.vector_conditions", '{"y": 2, "c": 2}']),
    "shapes-text": ("shapes_text", SMALL_IMAGES),
    "shapes-labels-stable-target": ("shapes", SMALL_IMAGES + ["--model.stable_target", "16"]),
    "shapes-text-stable-target": ("shapes_text", SMALL_IMAGES + ["--model.stable_target", "16"]),
}


@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
def test_debug_run_of_each_pairing(pairing: str, tmp_path: Path) -> None:
    experiment, extra = PAIRINGS[pairing]
    cli = run(tmp_path, experiment, *extra)
    assert cli.trainer.global_step == 3
    logs = next((tmp_path / "logs" / "test").glob("version_*"))
    assert (logs / "config.yaml").is_file()  # the resolved config is saved with the run
    marker = json.loads((logs / ".infodecomp-output").read_text())  # what train.py made is marked as its own
    assert marker["tool"] == "infodecomp-train" and {"version", "time"} <= set(marker)
    last = logs / "checkpoints" / "last.ckpt"
    module = load_module(last)  # a checkpoint alone rebuilds the model
    assert type(module.backbone) is type(cli.model.backbone)
    x = cli.datamodule.val_set[0]["x"][None]
    logsnr = torch.zeros(1)
    torch.testing.assert_close(module(x, logsnr), cli.model.eval()(x, logsnr))


def test_cifar10_from_a_local_folder(tmp_path: Path) -> None:
    root = write_tiny_cifar10(tmp_path / "cifar")
    cli = run(tmp_path, "cifar10", "--data.init_args.root", str(root), "--data.init_args.n_val", "10",
              "--data.init_args.batch_size", "4", "--model.backbone.init_args.block_out_channels", "[16, 32]",
              "--model.backbone.init_args.layers_per_block", "1", "--model.backbone.init_args.attention", "false")
    assert cli.trainer.global_step == 3 and cli.datamodule.input_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="CIFAR-10 not found under"):
        run(tmp_path, "cifar10", "--data.init_args.root", str(tmp_path / "nowhere"))


def test_caption_folder_with_text_model(tmp_path: Path) -> None:
    root = write_caption_folder(tmp_path / "captions")
    cli = run(tmp_path, "caption_folder", "--data.init_args.root", str(root), "--data.init_args.batch_size", "4",
              "--data.init_args.n_val", "4")
    assert cli.trainer.global_step == 3 and len(cli.datamodule.train_set) == 8


def test_resume_continues_steps_optimizer_and_ema(tmp_path: Path) -> None:
    steps = ["--trainer.limit_train_batches", "10", "--trainer.max_steps"]
    first = run(tmp_path, "vector", *steps, "2", "--data.init_args.n_train", "256")
    last = next((tmp_path / "logs" / "test").glob("version_0")) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 2 and first.model.ema.n_averaged.item() == 2
    resumed = run(tmp_path, "vector", *steps, "5", "--data.init_args.n_train", "256", "--ckpt_path", str(last))
    assert resumed.trainer.global_step == 5
    assert resumed.model.ema.n_averaged.item() == 5  # EMA continued, not restarted
    opt_state = resumed.trainer.optimizers[0].state_dict()["state"]
    assert int(next(iter(opt_state.values()))["step"]) == 5  # AdamW moments continued too


def test_finetune_pretrained_unet(tmp_path: Path) -> None:
    pretrained = write_tiny_pretrained_unet(tmp_path / "pretrained")
    cli = run(tmp_path, "finetune", *SMALL_IMAGES, "--model.backbone.init_args.path", str(pretrained))
    assert cli.trainer.global_step == 3
    from infodecomp.models import DiffusersUNetAdapter

    fresh = DiffusersUNetAdapter(str(pretrained))  # the weights on disk, untouched
    changed = any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), cli.model.backbone.parameters(), strict=True))
    assert changed


def test_unknown_config_key_fails_at_parse_time(tmp_path: Path) -> None:
    from jsonargparse import ArgumentError

    with pytest.raises(ArgumentError, match="learning_rte"):
        run(tmp_path, "vector", "--model.learning_rte", "0.1")
    assert not (tmp_path / "logs").exists()


def test_image_shape_mismatch_fails_at_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data give \(3, 16, 16\), the model takes \(3, 32, 32\)"):
        run(tmp_path, "shapes", *SMALL_IMAGES, "--model.backbone.init_args.image_size", "32")


def test_bad_checkpoints_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        run(tmp_path, "vector", "--ckpt_path", str(garbage))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, foreign)
    with pytest.raises(ValueError, match="not an infodecomp DiffusionModule checkpoint"):
        load_module(foreign)
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_module(tmp_path / "missing.ckpt")


class _NaNData(pl.LightningDataModule):
    def train_dataloader(self):
        x = torch.randn(32, 2)
        x[5:, 0] = float("nan")
        return torch.utils.data.DataLoader(DictDataset(x, {"y": torch.randn(32, 1)}), batch_size=4)


def test_nan_loss_stops_training_naming_the_step() -> None:
    module = DiffusionModule(MLPBackbone(2, vector_conditions={"y": 1}))
    trainer = pl.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(FloatingPointError, match="at step 1 "):
        trainer.fit(module, _NaNData())


@pytest.mark.slow  # long; runs in make test-all
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(CONFIGS / "experiment" / "vector.yaml"),
           "--config", str(CONFIGS / "debug.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
           "--trainer.strategy", "ddp",
           "--data.init_args.n_train", "256", "--trainer.logger",
           json.dumps([{"class_path": "pytorch_lightning.loggers.CSVLogger",
                        "init_args": {"save_dir": str(tmp_path), "name": "ddp"}}])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "last checkpoint:" in out.stdout
    assert torch.load(next(tmp_path.glob("ddp/version_*/checkpoints/last.ckpt")), weights_only=False)["global_step"] == 3


def test_vector_run_with_the_default_callbacks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The default trainer's callbacks on a vector model: maps and sample grids do not apply and
    are skipped with one log line each; the rest run (this crashed before)."""
    logger = json.dumps({"class_path": "pytorch_lightning.loggers.CSVLogger",
                         "init_args": {"save_dir": str(tmp_path / "logs"), "name": "vector"}})
    with caplog.at_level("INFO"):
        cli = train_main(["--config", str(CONFIGS / "experiment" / "vector.yaml"), "--trainer.max_steps", "2",
                          "--trainer.val_check_interval", "2", "--trainer.logger", logger,
                          "--data.init_args.n_train", "512", "--data.init_args.n_val", "64"],
                         default_config_files=DEFAULT)
    assert cli.trainer.global_step == 2
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert sorted(m.split()[0] for m in skipped) == ["InfoHeatmapCallback", "SampleGridCallback"]
    figures = {p.name.rsplit("_step", 1)[0] for p in (tmp_path / "logs" / "vector" / "version_0" / "figures").iterdir()}
    assert figures == {"val_information", "val_information_curves", "val_mmse_curve"}
